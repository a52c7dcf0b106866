//! Pid checks and signals. A pid is only ever signalled when `/proc/<pid>/cmdline` shows a
//! `mariadbd` on the expected datadir (or an `etcd` on the expected data dir), so a reused pid,
//! the system MariaDB or another etcd is never touched.

use std::path::Path;
use std::time::{Duration, Instant};

/// True if `pid` is a live (not zombie) `mariadbd` serving `datadir`.
pub(crate) fn is_mariadbd_on(pid: u32, datadir: &Path) -> bool {
    live_cmdline(pid).is_some_and(|raw| cmdline_matches(&raw, datadir))
}

/// True if `pid` is a live (not zombie) `etcd` keeping its data in `data_dir`.
pub(crate) fn is_etcd_on(pid: u32, data_dir: &Path) -> bool {
    live_cmdline(pid).is_some_and(|raw| etcd_cmdline_matches(&raw, data_dir))
}

/// Any live `etcd` on `data_dir`, whoever started it (a sandbox whose cluster.json was lost).
pub(crate) fn find_etcd_on(data_dir: &Path) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| is_etcd_on(*pid, data_dir))
}

/// The NUL-separated command line of a live process.
fn live_cmdline(pid: u32) -> Option<Vec<u8>> {
    if pid == 0 || !alive(pid) {
        return None;
    }
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

/// The NUL-separated command line names mariadbd and has `--datadir=<datadir>` as an argument.
pub(crate) fn cmdline_matches(raw: &[u8], datadir: &Path) -> bool {
    let want = format!("--datadir={}", datadir.display());
    let mut args = raw.split(|b| *b == 0).map(String::from_utf8_lossy);
    let is_mariadbd = args.next().is_some_and(|a| a.contains("mariadbd"));
    is_mariadbd && args.any(|a| a == want)
}

/// The command line's program is `etcd` itself (not `etcdctl`, not a script naming it) and it
/// has `--data-dir=<data_dir>` as an argument.
pub(crate) fn etcd_cmdline_matches(raw: &[u8], data_dir: &Path) -> bool {
    let want = format!("--data-dir={}", data_dir.display());
    let mut args = raw.split(|b| *b == 0).map(String::from_utf8_lossy);
    let is_etcd = args
        .next()
        .is_some_and(|a| Path::new(a.as_ref()).file_name() == Some("etcd".as_ref()));
    is_etcd && args.any(|a| a == want)
}

/// The process exists and is not a zombie waiting to be reaped.
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: "pid (comm) S ..."; comm may contain spaces and parentheses, so split at the last ')'.
    match stat.rsplit_once(')') {
        Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z') | Some('X')),
        None => false,
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid was checked just before.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Stops the given `(pid, datadir)` servers: SIGTERM (a clean shutdown), wait up to `grace`,
/// then SIGKILL. Returns how many were running, or the ones still alive after SIGKILL.
pub(crate) fn stop(servers: &[(u32, &Path)], grace: Duration) -> Result<usize, Vec<u32>> {
    let running: Vec<u32> = servers
        .iter()
        .filter(|(pid, dir)| is_mariadbd_on(*pid, dir))
        .map(|(pid, _)| *pid)
        .collect();
    stop_checked(&running, grace)
}

/// Stops `running`, pids the caller has just checked are its own processes: SIGTERM, wait up
/// to `grace` (SIGKILL at once when zero), then SIGKILL.
pub(crate) fn stop_checked(running: &[u32], grace: Duration) -> Result<usize, Vec<u32>> {
    if running.is_empty() {
        return Ok(0);
    }
    let sig = if grace.is_zero() {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    running.iter().for_each(|p| signal(*p, sig));
    let left = wait_exit(running, grace);
    if left.is_empty() {
        return Ok(running.len());
    }
    left.iter().for_each(|p| signal(*p, libc::SIGKILL));
    let left = wait_exit(&left, Duration::from_secs(5));
    if left.is_empty() {
        Ok(running.len())
    } else {
        Err(left)
    }
}

/// Polls until every pid has exited or `limit` passes; returns the survivors.
fn wait_exit(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_must_name_mariadbd_and_the_datadir() {
        let dir = Path::new("/tmp/sb/s0-primary");
        let ok = b"/usr/sbin/mariadbd\0--no-defaults\0--datadir=/tmp/sb/s0-primary\0";
        assert!(cmdline_matches(ok, dir));
        let other_dir = b"/usr/sbin/mariadbd\0--datadir=/tmp/sb/s0-primary2\0";
        assert!(!cmdline_matches(other_dir, dir));
        let not_mariadbd = b"/bin/sleep\0--datadir=/tmp/sb/s0-primary\0";
        assert!(!cmdline_matches(not_mariadbd, dir));
        assert!(!cmdline_matches(b"/usr/sbin/mariadbd\0", dir));
    }

    #[test]
    fn own_process_is_alive_and_not_mariadbd() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(!is_mariadbd_on(me, Path::new("/")));
        assert!(!is_etcd_on(me, Path::new("/")));
        assert!(!alive(u32::MAX - 1));
    }

    #[test]
    fn etcd_cmdline_must_be_etcd_on_that_data_dir() {
        let dir = Path::new("/tmp/sb/etcd");
        let ok = b"/usr/bin/etcd\0--name=sandbox\0--data-dir=/tmp/sb/etcd\0";
        assert!(etcd_cmdline_matches(ok, dir));
        assert!(etcd_cmdline_matches(
            b"etcd\0--data-dir=/tmp/sb/etcd\0",
            dir
        ));
        let other_dir = b"/usr/bin/etcd\0--data-dir=/tmp/sb/etcd2\0";
        assert!(!etcd_cmdline_matches(other_dir, dir));
        // The system etcd: no --data-dir flag at all (its data dir comes from the environment).
        assert!(!etcd_cmdline_matches(b"/usr/bin/etcd\0", dir));
        let etcdctl = b"/usr/bin/etcdctl\0--data-dir=/tmp/sb/etcd\0";
        assert!(!etcd_cmdline_matches(etcdctl, dir));
        let mariadbd = b"/usr/sbin/mariadbd\0--data-dir=/tmp/sb/etcd\0";
        assert!(!etcd_cmdline_matches(mariadbd, dir));
        // A space-separated flag value is a different argument: only `--data-dir=DIR` counts.
        let split = b"/usr/bin/etcd\0--data-dir\0/tmp/sb/etcd\0";
        assert!(!etcd_cmdline_matches(split, dir));
        assert!(find_etcd_on(Path::new("/nonexistent/shardgate/etcd")).is_none());
    }
}
