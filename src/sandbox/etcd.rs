//! The sandbox's etcd: one member on 127.0.0.1 with its data in `DIR/etcd` and its output in
//! `DIR/etcd.log`, started detached like the servers so it outlives the command that started
//! it. It is only ever signalled when `/proc/PID/cmdline` shows `etcd --data-dir=DIR/etcd`.
//!
//! Blocking (std networking, short sleeps): `up` runs it on a blocking thread, tests call it
//! directly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::{io, SandboxError};
use super::{free_ports, process, server, template};

/// The data dir's name inside the sandbox dir.
pub const DATA_DIR: &str = "etcd";
/// etcd's output, inside the sandbox dir.
pub const LOG: &str = "etcd.log";
/// How long etcd may take to elect itself and answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Per `/health` request.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// A running (or recorded) sandbox etcd, as `cluster.json` keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Etcd {
    pub pid: u32,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
}

impl Etcd {
    /// Starts a fresh etcd for the sandbox in `dir` (an empty `DIR/etcd`, free ports) and
    /// returns once it is healthy. Refuses if an etcd already runs on that data dir.
    pub fn start(dir: &Path) -> Result<Etcd, SandboxError> {
        let data_dir = dir.join(DATA_DIR);
        refuse_running(dir, &data_dir)?;
        clear(&data_dir)?;
        // A fresh start begins a fresh log, so a failure's log tail is this start's.
        let log = dir.join(LOG);
        std::fs::write(&log, b"").map_err(io(format!("creating {}", log.display())))?;
        let mut attempt = 0;
        loop {
            let ports = free_ports(2).map_err(io("finding free ports for etcd"))?;
            match launch(dir, ports[0], ports[1]) {
                // Another process took a port between `free_ports` and etcd's bind.
                Err(SandboxError::Start { detail, .. })
                    if attempt < 3 && detail.contains("address already in use") =>
                {
                    attempt += 1;
                    tracing::warn!("etcd port taken, retrying on other ports");
                    clear(&data_dir)?;
                }
                other => return other,
            }
        }
    }

    /// Starts etcd again on the same ports and data as before a stop (the data dir is created
    /// if missing), and returns once it is healthy.
    pub fn start_at(dir: &Path, client_port: u16, peer_port: u16) -> Result<Etcd, SandboxError> {
        refuse_running(dir, &dir.join(DATA_DIR))?;
        launch(dir, client_port, peer_port)
    }

    /// Stops this etcd: SIGTERM, up to `grace` (zero: SIGKILL at once, as a crash), then
    /// SIGKILL. False if it was not running.
    pub fn stop(&self, grace: Duration) -> Result<bool, SandboxError> {
        if !self.is_running() {
            return Ok(false);
        }
        process::stop_checked(&[self.pid], grace)
            .map(|n| n > 0)
            .map_err(|_| SandboxError::Stop(self.label()))
    }

    /// True if the recorded pid is still an etcd on this data dir.
    pub fn is_running(&self) -> bool {
        process::is_etcd_on(self.pid, &self.data_dir)
    }

    /// `127.0.0.1:PORT`, as `[topology] endpoints` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// One `GET /health`: true when etcd answers `{"health":"true"}` (it has a leader).
    pub fn is_healthy(&self) -> bool {
        health(self.client_port).unwrap_or(false)
    }

    /// How errors name it.
    pub fn label(&self) -> String {
        format!("etcd {} (pid {})", self.endpoint(), self.pid)
    }
}

fn refuse_running(dir: &Path, data_dir: &Path) -> Result<(), SandboxError> {
    match process::find_etcd_on(data_dir) {
        Some(pid) => Err(SandboxError::Start {
            server: format!("etcd in {}", data_dir.display()),
            detail: format!(
                "etcd pid {pid} already runs on it; run `shardgate sandbox down --dir {}`",
                dir.display()
            ),
        }),
        None => Ok(()),
    }
}

/// Removes a data dir; a missing one is fine.
fn clear(data_dir: &Path) -> Result<(), SandboxError> {
    match std::fs::remove_dir_all(data_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("removing {}", data_dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Spawns etcd on these ports and waits until healthy; kills it again if it never gets there.
fn launch(dir: &Path, client_port: u16, peer_port: u16) -> Result<Etcd, SandboxError> {
    let bin =
        template::find("etcd", &["/usr/bin", "/usr/local/bin"]).ok_or(SandboxError::EtcdMissing)?;
    let mut etcd = Etcd {
        pid: 0,
        client_port,
        peer_port,
        data_dir: dir.join(DATA_DIR),
    };
    let log = dir.join(LOG);
    // etcd also reads ETCD_* variables and refuses to start when one repeats a flag given here.
    etcd.pid = server::spawn_without_env(&bin, &args(&etcd), &log, "ETCD_")?;
    match wait_healthy(&etcd, &log) {
        Ok(()) => Ok(etcd),
        Err(e) => {
            let _ = etcd.stop(Duration::ZERO);
            Err(e)
        }
    }
}

/// One member on 127.0.0.1. Every flag is `--name=value`, so the cmdline check can find
/// `--data-dir=DIR` as one argument. The cluster flags only matter on a fresh data dir; a
/// restart reads its membership from the WAL.
pub(crate) fn args(e: &Etcd) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", e.client_port);
    let peer = format!("http://127.0.0.1:{}", e.peer_port);
    vec![
        "--name=sandbox".into(),
        format!("--data-dir={}", e.data_dir.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=sandbox={peer}"),
        "--initial-cluster-state=new".into(),
        "--initial-cluster-token=shardgate-sandbox".into(),
        // Fast elections so tests that stop and restart etcd wait about a second, not ten.
        "--heartbeat-interval=100".into(),
        "--election-timeout=1000".into(),
        // Keep an hour of revisions: watchers that reconnect resume from a recent revision.
        "--auto-compaction-mode=periodic".into(),
        "--auto-compaction-retention=1h".into(),
        "--logger=zap".into(),
        "--log-outputs=stderr".into(),
    ]
}

/// Polls `/health` until it says true, etcd dies, or [`READY_TIMEOUT`] passes; errors carry the
/// tail of `log`.
fn wait_healthy(e: &Etcd, log: &Path) -> Result<(), SandboxError> {
    let start = Instant::now();
    loop {
        if !process::alive(e.pid) {
            return Err(SandboxError::Start {
                server: e.label(),
                detail: format!("etcd exited; {}", server::log_tail(log, 20)),
            });
        }
        let last = match health(e.client_port) {
            Ok(true) => return Ok(()),
            Ok(false) => "health is not true yet".to_string(),
            Err(err) => err,
        };
        if start.elapsed() >= READY_TIMEOUT {
            return Err(SandboxError::Timeout {
                what: format!("{} to report healthy", e.label()),
                secs: READY_TIMEOUT.as_secs(),
                detail: format!(" (last: {last}); {}", server::log_tail(log, 20)),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /health` over plain HTTP/1.0: Ok(true) for `"health":"true"`, Ok(false) for another
/// answer, Err naming why nothing usable came back.
fn health(port: u16) -> Result<bool, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(PROBE_TIMEOUT)))
        .and_then(|_| s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    // HTTP/1.0: etcd closes the connection after the answer.
    s.take(64 << 10)
        .read_to_end(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(is_healthy_answer(&answer))
}

/// An HTTP answer whose body says `"health":"true"` (spaces allowed around the colon).
fn is_healthy_answer(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    head.starts_with("HTTP/1.") && head.contains(" 200 ") && compact.contains(r#""health":"true""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Etcd {
        Etcd {
            pid: 0,
            client_port: 4100,
            peer_port: 4101,
            data_dir: "/sb/etcd".into(),
        }
    }

    #[test]
    fn args_name_data_dir_and_ports_as_single_arguments() {
        let e = sample();
        let args = args(&e);
        assert!(args.contains(&"--data-dir=/sb/etcd".to_string()));
        assert!(args.contains(&"--listen-client-urls=http://127.0.0.1:4100".to_string()));
        assert!(args.contains(&"--initial-cluster=sandbox=http://127.0.0.1:4101".to_string()));
        // What `is_etcd_on` looks for is what the sandbox passes.
        let mut cmdline = b"/usr/bin/etcd\0".to_vec();
        for a in &args {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        assert!(process::etcd_cmdline_matches(&cmdline, &e.data_dir));
        assert_eq!(e.endpoint(), "127.0.0.1:4100");
    }

    #[test]
    fn health_answers_are_read_strictly() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"health\":\"true\",\"reason\":\"\"}";
        assert!(is_healthy_answer(ok));
        let spaced = b"HTTP/1.1 200 OK\r\n\r\n{\"health\": \"true\"}";
        assert!(is_healthy_answer(spaced));
        let no_leader = b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"health\":\"false\"}";
        assert!(!is_healthy_answer(no_leader));
        assert!(!is_healthy_answer(
            b"HTTP/1.0 200 OK\r\n\r\n{\"health\":\"false\"}"
        ));
        assert!(!is_healthy_answer(b"{\"health\":\"true\"}"));
        assert!(!is_healthy_answer(b""));
    }

    #[test]
    fn a_recorded_etcd_that_is_not_running_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = sample();
        e.data_dir = dir.path().join(DATA_DIR);
        // Our own pid is alive but not etcd on that dir: never signalled.
        e.pid = std::process::id();
        assert!(!e.is_running());
        assert!(!e.stop(Duration::ZERO).expect("stop"));
        assert!(!e.is_healthy(), "nothing listens on a sample port");
    }

    /// `etcdctl ARGS` (v3 API) against `e`; its stdout.
    fn etcdctl(e: &Etcd, args: &[&str]) -> String {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", e.endpoint()))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn starts_answers_stops_and_restarts_on_the_same_ports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Etcd::start(dir.path()).expect("etcd starts");
        assert!(e.is_running() && e.is_healthy());
        assert_eq!(e.data_dir, dir.path().join(DATA_DIR));
        let again = Etcd::start_at(dir.path(), e.client_port, e.peer_port).unwrap_err();
        assert!(again.to_string().contains("already runs"), "{again}");
        etcdctl(&e, &["put", "/shardgate/test/k", "v1"]);
        assert!(e.stop(Duration::from_secs(5)).expect("stop"));
        assert!(!e.is_running() && !e.is_healthy());
        assert!(e.data_dir.join("member").is_dir(), "data survives a stop");

        let back = Etcd::start_at(dir.path(), e.client_port, e.peer_port).expect("restart");
        assert_ne!(back.pid, e.pid);
        assert_eq!(back.endpoint(), e.endpoint());
        assert!(back.is_healthy());
        let got = etcdctl(&back, &["get", "--print-value-only", "/shardgate/test/k"]);
        assert_eq!(
            got.trim(),
            "v1",
            "a key written before the stop is there after it"
        );
        assert!(back.stop(Duration::ZERO).expect("kill"));
        assert!(!back.is_running());
    }
}
