//! One mariadbd process: its command line, spawning it detached, and waiting until it answers.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{Role, ServerInfo};
use super::error::{io, SandboxError};
use super::process;
use super::sql::Sql;

/// How long a server may take to accept connections before `up` gives up.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// mariadbd refuses to run as root unless told to, and sessions here run as root.
pub(crate) fn user_flag() -> Option<String> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    (unsafe { libc::geteuid() } == 0).then(|| "--user=root".to_string())
}

/// The full command line of a sandbox server (`--no-defaults` first, so no my.cnf leaks in).
pub(crate) fn instance_args(info: &ServerInfo) -> Vec<String> {
    let d = info.datadir.display();
    let mut args = vec!["--no-defaults".to_string()];
    args.extend(user_flag());
    args.extend([
        format!("--datadir={d}"),
        format!("--port={}", info.port),
        "--bind-address=127.0.0.1".into(),
        format!("--socket={}", info.socket.display()),
        format!("--pid-file={d}/mariadbd.pid"),
        format!("--log-error={}", error_log(info).display()),
        format!("--server-id={}", info.server_id),
        "--log-bin=mysql-bin".into(),
        "--relay-log=relay-bin".into(),
        "--binlog-format=ROW".into(),
        "--log-slave-updates".into(),
        "--gtid-strict-mode=1".into(),
        // Both sides on every server, so a promoted replica is a semi-sync primary at once.
        "--rpl-semi-sync-master-enabled=1".into(),
        "--rpl-semi-sync-slave-enabled=1".into(),
        // Ten seconds without a replica's ack before falling back to asynchronous replication
        // (where a failover can lose acknowledged writes): a busy machine must not get there.
        "--rpl-semi-sync-master-timeout=10000".into(),
        // A server with no semi-sync replica connected (every replica, whose own semi-sync
        // master side is on for promotion) commits without waiting: otherwise a replica's
        // applier would stall a full timeout before semi-sync switched itself off.
        "--rpl-semi-sync-master-wait-no-slave=OFF".into(),
        // Lossless: a transaction is acknowledged by a replica before it commits here, so a
        // crashed primary holds nothing the replicas lack but unacknowledged transactions,
        // which it truncates on restart (semi-sync slave role on at startup), letting it rejoin.
        "--rpl-semi-sync-master-wait-point=AFTER_SYNC".into(),
        "--report-host=127.0.0.1".into(),
        format!("--report-port={}", info.port),
        "--skip-name-resolve".into(),
        "--max-connections=3000".into(),
        "--max-allowed-packet=1G".into(),
        "--innodb-buffer-pool-size=32M".into(),
        "--innodb-flush-log-at-trx-commit=2".into(),
        "--sync-binlog=0".into(),
        "--performance-schema=OFF".into(),
        "--character-set-server=utf8mb4".into(),
        "--collation-server=utf8mb4_general_ci".into(),
        "--event-scheduler=OFF".into(),
    ]);
    if info.role == Role::Replica {
        args.push("--read-only=1".into());
    }
    args
}

pub(crate) fn error_log(info: &ServerInfo) -> PathBuf {
    info.datadir.join("error.log")
}

/// Starts `bin` detached (own session, stdin null, output appended to `out_log`) so it outlives
/// the caller and is stopped later by pid. A thread reaps it if it exits while we still run.
pub(crate) fn spawn(bin: &Path, args: &[String], out_log: &Path) -> Result<u32, SandboxError> {
    spawn_without_env(bin, args, out_log, "")
}

/// [`spawn`], with every environment variable whose name starts with `drop_prefix` removed
/// (none when empty).
pub(crate) fn spawn_without_env(
    bin: &Path,
    args: &[String],
    out_log: &Path,
    drop_prefix: &str,
) -> Result<u32, SandboxError> {
    let what = || {
        format!(
            "starting {} (output in {})",
            bin.display(),
            out_log.display()
        )
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out_log)
        .map_err(io(format!("creating {}", out_log.display())))?;
    let err = out.try_clone().map_err(io(what()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    if !drop_prefix.is_empty() {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with(drop_prefix) {
                cmd.env_remove(name);
            }
        }
    }
    // SAFETY: setsid(2) is async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io(what()))?;
    let pid = child.id();
    // If the thread cannot start, the exited server stays a zombie, which `process::alive` treats as dead.
    let _ = std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || child.wait());
    Ok(pid)
}

/// Where to knock to see whether a server is up.
pub(crate) enum Target<'a> {
    /// A port, and the datadir of the server that must be the one answering there.
    Tcp(u16, &'a Path),
    Socket(&'a Path),
}

/// Whether `answered` (a server's `@@datadir`) is `datadir`.
fn same_datadir(answered: &str, datadir: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(Path::new(answered.trim_end_matches('/'))) == canon(datadir)
}

/// Polls until the server answers as root, it dies, or `limit` passes; errors carry the tail of
/// `log`. Over TCP the answer must come from the server of the expected datadir: another
/// sandbox's server on the same port (taken between `free_port` and this server's bind, which
/// then fails) once passed for this one, and a proxy then wrote into the other sandbox.
pub(crate) async fn wait_ready(
    pid: u32,
    target: Target<'_>,
    label: &str,
    log: &Path,
    limit: Duration,
) -> Result<(), SandboxError> {
    let start = Instant::now();
    loop {
        if !process::alive(pid) {
            return Err(SandboxError::Start {
                server: label.to_string(),
                detail: format!("mariadbd (pid {pid}) exited; {}", log_tail(log, 20)),
            });
        }
        let conn = match target {
            Target::Tcp(port, _) => Sql::tcp(port, "root", "", label).await,
            Target::Socket(path) => Sql::socket(path, label).await,
        };
        let last = match conn {
            Ok(mut c) => {
                let r = c.value("SELECT @@datadir").await;
                c.close().await;
                match (r, &target) {
                    (Ok(dir), Target::Tcp(_, want)) if !same_datadir(&dir, want) => {
                        SandboxError::Start {
                            server: label.to_string(),
                            detail: format!("another server ({dir}) answers on its port"),
                        }
                    }
                    (Ok(_), _) => return Ok(()),
                    (Err(e), _) => e,
                }
            }
            Err(e) => e,
        };
        if start.elapsed() >= limit {
            return Err(SandboxError::Timeout {
                what: format!("{label} (pid {pid}) to accept connections"),
                secs: limit.as_secs(),
                detail: format!(" (last error: {last}); {}", log_tail(log, 20)),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Spawns the server unless `info.pid` is already set, then waits for it. When `may_move_port`
/// and another process grabbed the port between `free_port` and mariadbd's bind, it retries on a
/// new port (updating `info`).
pub(crate) async fn start(
    bin: &Path,
    info: &mut ServerInfo,
    may_move_port: bool,
) -> Result<(), SandboxError> {
    let mut attempt = 0;
    loop {
        if info.pid == 0 {
            info.pid = spawn(
                bin,
                &instance_args(info),
                &info.datadir.join("mariadbd.out"),
            )?;
        }
        let label = info.label();
        let log = error_log(info);
        match wait_ready(
            info.pid,
            Target::Tcp(info.port, &info.datadir),
            &label,
            &log,
            READY_TIMEOUT,
        )
        .await
        {
            Err(SandboxError::Start { detail, .. })
                if may_move_port && attempt < 3 && detail.contains("Bind on TCP/IP port") =>
            {
                attempt += 1;
                tracing::warn!(server = %label, "port taken, retrying on another port");
                info.port = super::free_port().map_err(io("finding a free port"))?;
                info.pid = 0;
            }
            other => return other,
        }
    }
}

/// The last `n` lines of a log file, introduced by its path (or why it could not be read).
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(raw) => {
            let text = String::from_utf8_lossy(&raw);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(n)..].join("\n");
            format!("last lines of {}:\n{tail}", path.display())
        }
        Err(e) => format!("no log at {}: {e}", path.display()),
    }
}

/// Recursive copy of a (stopped) datadir.
pub(crate) fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            copy_sparse(&entry.path(), &to)?;
        }
    }
    Ok(())
}

/// Copies a file leaving all-zero blocks as holes: a fresh datadir is ~114 MB, almost all of it
/// the zeroed redo log, so this turns seconds of writing per server into milliseconds.
fn copy_sparse(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    const BLOCK: usize = 64 << 10;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut from = std::fs::File::open(src)?;
    let mut to = std::fs::File::create(dst)?;
    let mut buf = vec![0u8; BLOCK];
    let mut len = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // Slice equality on u8 is a memcmp, fast even in debug builds.
        if buf[..n] == ZEROS[..n] {
            to.seek(SeekFrom::Current(n as i64))?;
        } else {
            to.write_all(&buf[..n])?;
        }
        len += n as u64;
    }
    to.set_len(len)?;
    to.set_permissions(from.metadata()?.permissions())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(role: Role) -> ServerInfo {
        ServerInfo {
            shard: "s0".into(),
            role,
            host: "127.0.0.1".into(),
            port: 4000,
            pid: 0,
            datadir: "/sb/s0-replica1".into(),
            socket: "/sb/s0-replica1.sock".into(),
            server_id: 2,
        }
    }

    #[test]
    fn replicas_are_read_only_and_args_name_the_datadir() {
        let args = instance_args(&info(Role::Replica));
        assert_eq!(args[0], "--no-defaults");
        assert!(args.contains(&"--datadir=/sb/s0-replica1".to_string()));
        assert!(args.contains(&"--read-only=1".to_string()));
        assert!(args.contains(&"--server-id=2".to_string()));
        assert!(!instance_args(&info(Role::Primary)).contains(&"--read-only=1".to_string()));
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("e.log");
        std::fs::write(&p, "a\nb\nc\n").expect("write");
        assert!(log_tail(&p, 2).ends_with("b\nc"));
        assert!(log_tail(&dir.path().join("none"), 2).contains("no log at"));
    }

    #[test]
    fn sparse_copy_keeps_content_and_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        let mut data = vec![0u8; 300_000];
        data[70_000] = 7;
        data[299_999] = 9;
        std::fs::write(src.join("sub/f"), &data).expect("write");
        std::fs::write(src.join("zeros"), vec![0u8; 200_000]).expect("write");
        copy_dir(&src, &dir.path().join("dst")).expect("copy");
        assert_eq!(
            std::fs::read(dir.path().join("dst/sub/f")).expect("read"),
            data
        );
        assert_eq!(
            std::fs::read(dir.path().join("dst/zeros")).expect("read"),
            vec![0u8; 200_000]
        );
    }
}
