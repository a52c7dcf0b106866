//! The template datadir: initialised once per mariadbd version with `mariadb-install-db` plus the
//! accounts every sandbox needs, cached, and copied per server so `up` takes seconds.
//!
//! Cached at `$SHARDGATE_CACHE_DIR/mariadb-template-<version>` (default cache dir
//! `$HOME/.cache/shardgate`). The binlog is off while it is built, so every copy starts with an
//! empty GTID state and replicas can replicate from their primary's first binlog.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{io, SandboxError};
use super::server::{self, Target};
use super::sql::Sql;

/// The MariaDB programs the sandbox runs.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub mariadbd: PathBuf,
    pub install_db: PathBuf,
    /// `mariadbd --version`'s version token, e.g. `10.11.19-MariaDB-0+deb12u1`.
    pub version: String,
}

/// Finds `name` on PATH, then in `extra` directories (Debian keeps mariadbd in /usr/sbin, often
/// not on a user's PATH).
pub(crate) fn find(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub(crate) fn find_binaries() -> Result<Binaries, SandboxError> {
    let mariadbd =
        find("mariadbd", &["/usr/sbin", "/usr/local/sbin"]).ok_or(SandboxError::MariadbMissing)?;
    let install_db = find(
        "mariadb-install-db",
        &["/usr/bin", "/usr/sbin", "/usr/local/bin"],
    )
    .ok_or(SandboxError::MariadbMissing)?;
    let out = std::process::Command::new(&mariadbd)
        .arg("--version")
        .output()
        .map_err(io(format!("running {} --version", mariadbd.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = parse_version(&text).ok_or_else(|| SandboxError::Start {
        server: mariadbd.display().to_string(),
        detail: format!("cannot read a version from `--version` output: {text:?}"),
    })?;
    Ok(Binaries {
        mariadbd,
        install_db,
        version,
    })
}

/// The token after "Ver" in `/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for ...`.
fn parse_version(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "Ver")?;
    words.next().map(str::to_string)
}

/// A version string safe as a directory name.
fn sanitize(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `$SHARDGATE_CACHE_DIR`, else `$HOME/.cache/shardgate`, else a temp dir.
fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("SHARDGATE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("shardgate"),
        None => std::env::temp_dir().join("shardgate-cache"),
    }
}

/// The template datadir for the installed mariadbd, building it on first use.
pub async fn ensure_template() -> Result<PathBuf, SandboxError> {
    ensure(&find_binaries()?).await
}

pub(crate) async fn ensure(bins: &Binaries) -> Result<PathBuf, SandboxError> {
    let root = cache_root();
    let template = root.join(format!("mariadb-template-{}", sanitize(&bins.version)));
    if template.is_dir() {
        return Ok(template);
    }
    std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
    let id = format!("{}-{}", std::process::id(), rand::random::<u32>());
    // Built beside its final place and renamed, so a half-built template is never used.
    let tmp = root.join(format!(".building-{id}"));
    let scratch = std::env::temp_dir().join(format!("shardgate-tpl-{id}"));
    tracing::info!(template = %template.display(), "building the MariaDB template datadir (once per version)");
    let built = build(bins, &tmp, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &template) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Lost a race with a concurrent builder: use the winner's template.
        if !template.is_dir() {
            return Err(io(format!(
                "renaming {} to {}",
                tmp.display(),
                template.display()
            ))(e));
        }
    }
    Ok(template)
}

/// Runs mariadb-install-db into `datadir`, then a temporary socket-only server to add accounts.
async fn build(bins: &Binaries, datadir: &Path, scratch: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(scratch).map_err(io(format!("creating {}", scratch.display())))?;
    let label = format!("template datadir {}", datadir.display());
    let mut cmd = tokio::process::Command::new(&bins.install_db);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .args(server::user_flag())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(io(format!("running {}", bins.install_db.display())))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        return Err(SandboxError::Start {
            server: label,
            detail: format!(
                "{} exited with {}:\n{}",
                bins.install_db.display(),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ),
        });
    }

    let socket = scratch.join("s.sock");
    let log = scratch.join("error.log");
    let mut args = vec!["--no-defaults".to_string()];
    args.extend(server::user_flag());
    args.extend([
        format!("--datadir={}", datadir.display()),
        "--skip-networking".into(),
        format!("--socket={}", socket.display()),
        format!("--pid-file={}", scratch.join("mariadbd.pid").display()),
        format!("--log-error={}", log.display()),
        "--innodb-buffer-pool-size=32M".into(),
        "--performance-schema=OFF".into(),
    ]);
    let pid = server::spawn(&bins.mariadbd, &args, &scratch.join("mariadbd.out"))?;
    let result = add_accounts(pid, &socket, &label, &log).await;
    // After SHUTDOWN the server exits by itself; a server still running is killed and the
    // template discarded, since only a clean shutdown leaves a datadir that copies well.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while result.is_ok() && super::process::alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clean = result.is_ok() && !super::process::alive(pid);
    if !clean {
        let _ = super::process::stop(&[(pid, datadir)], Duration::ZERO);
    }
    result?;
    if !clean {
        return Err(SandboxError::Timeout {
            what: format!("{label} (pid {pid}) to shut down"),
            secs: 30,
            detail: format!("; {}", server::log_tail(&log, 20)),
        });
    }
    Ok(())
}

/// Accounts baked into every server. The application user is not: it depends on the options.
const ACCOUNTS: &[&str] = &[
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''",
    "ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY ''",
    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION",
    "CREATE USER IF NOT EXISTS 'root'@'localhost' IDENTIFIED BY ''",
    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'localhost' WITH GRANT OPTION",
    "CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl'",
    "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'",
    "FLUSH PRIVILEGES",
];

async fn add_accounts(
    pid: u32,
    socket: &Path,
    label: &str,
    log: &Path,
) -> Result<(), SandboxError> {
    let limit = server::READY_TIMEOUT;
    server::wait_ready(pid, Target::Socket(socket), label, log, limit).await?;
    let mut c = Sql::socket(socket, label).await?;
    for stmt in ACCOUNTS {
        c.exec(stmt).await?;
    }
    if c.value("SELECT @@log_bin").await? != "0" {
        return Err(SandboxError::Start {
            server: label.to_string(),
            detail: "the binlog is on while building the template".into(),
        });
    }
    // The connection may be cut by the shutdown itself; the caller waits for the pid to exit.
    let _ = c.exec("SHUTDOWN").await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_parsed_and_sanitized() {
        let out = "/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n";
        let v = parse_version(out).expect("version");
        assert_eq!(v, "10.11.19-MariaDB-0+deb12u1");
        assert_eq!(sanitize(&v), "10.11.19-MariaDB-0_deb12u1");
        assert_eq!(parse_version("garbage"), None);
    }
}
