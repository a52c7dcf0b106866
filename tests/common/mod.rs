//! One sandbox cluster and one proxy process per test binary, shared by its tests.
//!
//! Both are started on first use through the real `shardgate` binary (as a user would) and
//! stopped when the test process exits (atexit), so parallel tests share them cheaply.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use shardgate::sandbox::Cluster;

pub const USER: &str = "app";
pub const PASSWORD: &str = "app";
/// The proxy's max_allowed_packet in tests: room for the 20 MiB BLOB round trip.
pub const MAX_PACKET: usize = 48 << 20;
/// The proxy's handshake timeout in tests.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 1500;

pub struct Env {
    pub dir: PathBuf,
    pub cluster: Cluster,
    /// 127.0.0.1 port of the proxy.
    pub proxy_port: u16,
    pub proxy_pid: u32,
}

static ENV: OnceLock<Env> = OnceLock::new();
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());
static SANDBOX_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn cleanup() {
    if let Ok(mut kids) = CHILDREN.lock() {
        for c in kids.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    if let Ok(dir) = SANDBOX_DIR.lock() {
        if let Some(d) = dir.as_ref() {
            let _ = shardgate::sandbox::down(d);
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shardgate")
}

/// The shared sandbox (1 shard: primary + 1 replica) and proxy, started on first call.
pub fn env() -> &'static Env {
    ENV.get_or_init(start)
}

fn start() -> Env {
    let dir = std::env::temp_dir().join(format!("shardgate-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    *SANDBOX_DIR.lock().expect("lock") = Some(dir.clone());
    // SAFETY: registering a plain extern "C" function with libc's atexit.
    unsafe {
        libc::atexit(cleanup);
    }
    let out = Command::new(bin())
        .args(["sandbox", "up", "--shards", "1", "--replicas", "1", "--dir"])
        .arg(&dir)
        .output()
        .expect("run shardgate sandbox up");
    assert!(
        out.status.success(),
        "sandbox up failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster = Cluster::load(&dir).expect("cluster.json");
    let cfg_path = dir.join("shardgate.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let cfg = cfg
        .replace(
            "handshake_timeout_ms = 10000",
            &format!("handshake_timeout_ms = {HANDSHAKE_TIMEOUT_MS}"),
        )
        .replace(
            "max_allowed_packet = 67108864",
            &format!("max_allowed_packet = {MAX_PACKET}"),
        );
    let test_cfg = dir.join("test-proxy.toml");
    std::fs::write(&test_cfg, cfg).expect("write test config");
    let (child, port) = spawn_proxy(&test_cfg);
    let pid = child.id();
    CHILDREN.lock().expect("lock").push(child);
    Env {
        dir,
        cluster,
        proxy_port: port,
        proxy_pid: pid,
    }
}

/// A proxy process a test started for itself; stopped when dropped, even if the test fails.
pub struct ProxyProcess(pub Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `shardgate serve` on `config` and waits until it accepts connections.
pub fn spawn_proxy(config: &Path) -> (Child, u16) {
    let text = std::fs::read_to_string(config).expect("config");
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|r| r.trim_end_matches('"').parse().ok())
        .expect("listen port in config");
    let log = std::fs::File::create(config.with_extension("log")).expect("log file");
    let child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn shardgate serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "proxy did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

impl Env {
    pub fn proxy_url(&self, db: &str) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{db}",
            self.proxy_port
        )
    }

    pub fn primary_port(&self) -> u16 {
        self.cluster.primary("s0").expect("primary").port
    }

    pub fn direct_url(&self, db: &str) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{db}",
            self.primary_port()
        )
    }

    /// Resident memory of the proxy process (VmRSS, VmHWM) in KiB.
    pub fn proxy_memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proxy_pid))
            .expect("proxy is running");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Whether the proxy process is still alive.
    pub fn proxy_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.proxy_pid)).exists()
    }
}

/// A unique name for a test's own table or database, so parallel tests never collide.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Runs `cmd` with piped stdio, writing each chunk of `input` to its stdin after its delay (as
/// a person types) while draining its output on threads, so large inputs or outputs cannot
/// deadlock on a pipe. Kills it past `deadline`; returns its output and whether it was killed.
pub fn run_child(
    cmd: &mut Command,
    input: Vec<(Duration, Vec<u8>)>,
    deadline: Duration,
) -> (std::process::Output, bool) {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        for (delay, chunk) in input {
            std::thread::sleep(delay);
            if stdin.write_all(&chunk).and_then(|_| stdin.flush()).is_err() {
                break;
            }
        }
    });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let until = Instant::now() + deadline;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (status, false);
        }
        if Instant::now() > until {
            let _ = child.kill();
            break (child.wait().expect("wait for killed child"), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = feeder.join();
    let output = std::process::Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    (output, timed_out)
}
