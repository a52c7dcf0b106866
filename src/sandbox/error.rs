//! Why the sandbox could not start, stop or be read: each variant names the server or file.

/// Every sandbox failure, with enough context (server, port, log tail) to act on it.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "mariadbd not found on PATH or in /usr/sbin: install it with `apt-get install mariadb-server`"
    )]
    MariadbMissing,
    #[error(
        "etcd not found on PATH or in /usr/bin: install it with `apt-get install etcd-server`"
    )]
    EtcdMissing,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A server (or the template build) did not come up; `detail` carries its log tail.
    #[error("starting {server} failed: {detail}")]
    Start { server: String, detail: String },
    #[error("{server}: {sql}: {source}")]
    Sql {
        server: String,
        sql: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("timed out after {secs}s waiting for {what}{detail}")]
    Timeout {
        what: String,
        secs: u64,
        detail: String,
    },
    #[error("a sandbox is already running in {dir}; run `shardgate sandbox down --dir {dir}`")]
    AlreadyRunning { dir: String },
    /// `cluster.json` exists but cannot be used.
    #[error("{file}: {msg}")]
    State { file: String, msg: String },
    /// The sandbox is not in a state that allows the command (the message says why).
    #[error("{0}")]
    Refused(String),
    #[error("invalid sandbox options: {0}")]
    Options(String),
    /// A setup task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
    /// A server kept running after SIGKILL (so its datadir is left alone).
    #[error("could not stop {0}")]
    Stop(String),
}

/// Maps an `io::Error` to `SandboxError::Io` saying what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}
