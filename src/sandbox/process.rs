//! Pid checks and signals. A pid is only ever signalled when `/proc/<pid>/cmdline` shows a
//! `mariadbd` on the expected datadir, so a reused pid (or the system MariaDB) is never touched.

use std::path::Path;
use std::time::{Duration, Instant};

/// True if `pid` is a live (not zombie) `mariadbd` serving `datadir`.
pub(crate) fn is_mariadbd_on(pid: u32, datadir: &Path) -> bool {
    if pid == 0 || !alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(raw) => cmdline_matches(&raw, datadir),
        Err(_) => false,
    }
}

/// The NUL-separated command line names mariadbd and has `--datadir=<datadir>` as an argument.
pub(crate) fn cmdline_matches(raw: &[u8], datadir: &Path) -> bool {
    let want = format!("--datadir={}", datadir.display());
    let mut args = raw.split(|b| *b == 0).map(String::from_utf8_lossy);
    let is_mariadbd = args.next().is_some_and(|a| a.contains("mariadbd"));
    is_mariadbd && args.any(|a| a == want)
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
    if running.is_empty() {
        return Ok(0);
    }
    let sig = if grace.is_zero() {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    running.iter().for_each(|p| signal(*p, sig));
    let left = wait_exit(&running, grace);
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
        assert!(!alive(u32::MAX - 1));
    }
}
