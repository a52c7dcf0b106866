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

pub mod ha;
pub mod raw;
pub mod reshard;

pub const USER: &str = "app";
/// A proxy config fragment for sandboxes of a test's own: 2 workers, the split on with
/// eventual consistency, servers checked every 200 ms as root.
pub const FAST_SPLIT: &str = r#"
[proxy]
workers = 2

[routing]
read_write_split = true
consistency = "eventual"
max_replica_lag = 30.0

[monitor]
user = "root"
password = ""
interval_ms = 200
connect_timeout_ms = 500
"#;
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

/// The proxy binary under test; `SHARDGATE_TEST_BIN` names another build (an older one, to
/// see a new test fail before its fix).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SHARDGATE_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardgate").to_string())
    })
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
    let cluster = sandbox_up(&dir, &["--shards", "1", "--replicas", "1"]);
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

/// `shardgate sandbox up ARGS --dir DIR`, as a user runs it; the cluster it wrote.
fn sandbox_up(dir: &Path, args: &[&str]) -> Cluster {
    let out = Command::new(bin())
        .args(["sandbox", "up"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run shardgate sandbox up");
    assert!(
        out.status.success(),
        "sandbox up failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Cluster::load(dir).expect("cluster.json")
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
    spawn_proxy_checked(config)
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

// ---------------------------------------------------------------------------------------------
// Sandboxes of their own (read/write split, replica loss, multiplexing): a cluster with more
// replicas than the shared one, and proxies over it with extra config sections.

/// A sandbox cluster a test binary started for itself (`start_cluster`), torn down at exit.
pub struct Sandbox {
    pub dir: PathBuf,
    /// As `sandbox up` wrote it; `start_server` on a clone records new pids in `cluster.json`,
    /// which is what the teardown reads.
    pub cluster: Cluster,
}

static EXTRA_SANDBOXES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static EXTRA_CLEANUP: std::sync::Once = std::sync::Once::new();

extern "C" fn cleanup_extra() {
    if let Ok(mut kids) = CHILDREN.lock() {
        for c in kids.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    if let Ok(dirs) = EXTRA_SANDBOXES.lock() {
        for d in dirs.iter() {
            keep_logs(d);
            let _ = shardgate::sandbox::down(d);
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// With `SHARDGATE_TEST_LOGS=DIR` set, copies the proxies' logs of sandbox `d` (`*.log`), their
/// configs and each server's error log (as `<server dir>.error.log`) to `DIR/<sandbox name>/`
/// before the sandbox is removed.
fn keep_logs(d: &Path) {
    let Some(to) = std::env::var_os("SHARDGATE_TEST_LOGS") else {
        return;
    };
    let to = PathBuf::from(to).join(d.file_name().unwrap_or_default());
    let _ = std::fs::create_dir_all(&to);
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        let server_log = p.join("error.log");
        if server_log.is_file() {
            let name = format!("{}.error.log", e.file_name().to_string_lossy());
            let _ = std::fs::copy(&server_log, to.join(name));
        }
        if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("log") | Some("toml")
        ) {
            let _ = std::fs::copy(&p, to.join(e.file_name()));
        }
    }
}

/// Starts `shardgate sandbox up --shards 1 --replicas N` in a fresh temp dir and registers its
/// teardown (and that of every proxy given to `keep_proxy`) at process exit.
pub fn start_cluster(replicas: usize) -> Sandbox {
    start_cluster_with(&["--shards", "1", "--replicas", &replicas.to_string()])
}

/// A separate sandbox started with `args` for `shardgate sandbox up` (besides `--dir`).
pub fn start_cluster_with(args: &[&str]) -> Sandbox {
    EXTRA_CLEANUP.call_once(|| {
        // SAFETY: registering a plain extern "C" function with libc's atexit.
        unsafe {
            libc::atexit(cleanup_extra);
        }
    });
    let dir = std::env::temp_dir().join(unique("shardgate-rw"));
    let _ = std::fs::remove_dir_all(&dir);
    EXTRA_SANDBOXES.lock().expect("lock").push(dir.clone());
    let cluster = sandbox_up(&dir, args);
    Sandbox { dir, cluster }
}

/// Merges `extra` into `base` key by key (tables recursively; anything else replaced).
fn merge_toml(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge_toml(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Starts `shardgate serve` on `config` like `spawn_proxy`, but fails at once with the proxy's
/// log if it exits before listening (a config key it does not know yet, say). Its log level is
/// `SHARDGATE_TEST_RUST_LOG` (default `info`).
pub fn spawn_proxy_checked(config: &Path) -> (Child, u16) {
    spawn_proxy_with_env(config, &[])
}

/// `spawn_proxy_checked` with extra environment variables for the proxy (such as
/// `SHARDGATE_TEST_STOP`).
pub fn spawn_proxy_with_env(config: &Path, vars: &[(&str, &str)]) -> (Child, u16) {
    let text = std::fs::read_to_string(config).expect("config");
    let port: u16 = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|r| r.trim_end_matches('"').parse().ok())
        .expect("listen port in config");
    let log_path = config.with_extension("log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("SHARDGATE_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn shardgate serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "proxy on {} exited ({status}) before listening; log {}:\n{}",
                config.display(),
                log_path.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "proxy did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

impl Sandbox {
    /// Writes a proxy config for this sandbox: the generated `shardgate.toml` with free listen
    /// ports and `extra` (TOML text, e.g. a `[routing]` section) merged over it, section by
    /// section and key by key. Returns its path.
    pub fn proxy_config(&self, extra: &str) -> PathBuf {
        self.proxy_config_from(&self.dir.join("shardgate.toml"), extra)
    }

    /// `proxy_config` over another generated config (one of `proxy_configs()`, so the new
    /// config keeps that proxy's `[topology]`, its `proxy_id` included).
    pub fn proxy_config_from(&self, base: &Path, extra: &str) -> PathBuf {
        let base = std::fs::read_to_string(base).expect("config");
        let mut cfg: toml::Table = toml::from_str(&base).expect("generated config parses");
        let extra: toml::Table = toml::from_str(extra).expect("extra config parses");
        merge_toml(&mut cfg, extra);
        let port = shardgate::sandbox::free_port().expect("port");
        let admin = shardgate::sandbox::free_port().expect("port");
        let mut listen = toml::Table::new();
        listen.insert("listen".into(), format!("127.0.0.1:{port}").into());
        listen.insert("admin_listen".into(), format!("127.0.0.1:{admin}").into());
        let mut over = toml::Table::new();
        over.insert("proxy".into(), toml::Value::Table(listen));
        merge_toml(&mut cfg, over);
        let path = self.dir.join(format!("proxy-{port}.toml"));
        std::fs::write(&path, toml::to_string(&cfg).expect("serialise config"))
            .expect("write config");
        path
    }

    /// A proxy over this sandbox with `extra` config, stopped when the guard drops.
    pub fn proxy(&self, extra: &str) -> (ProxyProcess, u16) {
        let (child, port) = spawn_proxy_checked(&self.proxy_config(extra));
        (ProxyProcess(child), port)
    }

    /// A proxy over this sandbox with `extra` config, as `proxy`, and how to reach its admin
    /// API: (guard, MySQL port, admin `host:port`, admin token).
    pub fn proxy_with_admin(&self, extra: &str) -> (ProxyProcess, u16, String, String) {
        let config = self.proxy_config(extra);
        let (admin, token) = admin_of(&config);
        let (child, port) = spawn_proxy_checked(&config);
        (ProxyProcess(child), port, admin, token)
    }

    /// A proxy over this sandbox with `extra` config that lives until the process exits (for
    /// proxies shared by a binary's tests through a `OnceLock`). Returns its port.
    pub fn keep_proxy(&self, extra: &str) -> u16 {
        let (child, port) = spawn_proxy_checked(&self.proxy_config(extra));
        CHILDREN.lock().expect("lock").push(child);
        port
    }

    pub fn primary(&self) -> &shardgate::sandbox::ServerInfo {
        self.cluster.primary("s0").expect("primary")
    }

    pub fn replicas(&self) -> Vec<&shardgate::sandbox::ServerInfo> {
        self.cluster.replicas("s0")
    }

    /// Index in `cluster.servers` (what `kill_server` / `start_server` take) of a server id.
    pub fn index_of(&self, server_id: u32) -> usize {
        self.cluster
            .servers
            .iter()
            .position(|s| s.server_id == server_id)
            .expect("server id in cluster")
    }
}

// ---------------------------------------------------------------------------------------------
// Several proxies sharing the sandbox etcd (`start_cluster_with(&[.., "--proxies", "N"])`).

impl Sandbox {
    /// The configs `sandbox up --proxies N` wrote: `shardgate.toml`, `shardgate-2.toml`, ...
    pub fn proxy_configs(&self) -> Vec<PathBuf> {
        self.cluster.proxy_configs()
    }

    /// The sandbox etcd as `cluster.json` records it now (`etcd_start` changes its pid).
    pub fn etcd(&self) -> shardgate::sandbox::Etcd {
        Cluster::load(&self.dir)
            .expect("cluster.json")
            .etcd
            .expect("a sandbox started with --proxies N or --etcd")
    }

    /// `127.0.0.1:PORT` of the sandbox etcd.
    pub fn etcd_endpoint(&self) -> String {
        self.etcd().endpoint()
    }

    /// Stops the sandbox etcd cleanly (SIGTERM, up to 10 s); its data and ports stay for
    /// `etcd_start`.
    pub fn etcd_stop(&self) {
        let stopped = self
            .etcd()
            .stop(Duration::from_secs(10))
            .expect("stop etcd");
        assert!(stopped, "etcd was not running");
    }

    /// Kills the sandbox etcd with SIGKILL, as a crash would.
    pub fn etcd_kill(&self) {
        let killed = self.etcd().stop(Duration::ZERO).expect("kill etcd");
        assert!(killed, "etcd was not running");
    }

    /// Starts the sandbox etcd again on the same ports and data, waits until it is healthy and
    /// records its pid in `cluster.json` (for the teardown). Does nothing if it runs.
    pub fn etcd_start(&self) {
        let mut cluster = Cluster::load(&self.dir).expect("cluster.json");
        cluster.start_etcd().expect("start etcd");
    }

    /// A proxy per generated config (`proxy_configs()`), each with `extra` merged over it and
    /// fresh ports, stopped when dropped.
    pub fn admin_proxies(&self, extra: &str) -> Vec<AdminProxy> {
        self.proxy_configs()
            .iter()
            .map(|base| self.admin_proxy_from(base, extra))
            .collect()
    }

    /// A proxy over generated config `base` with `extra`, as `admin_proxy`.
    pub fn admin_proxy_from(&self, base: &Path, extra: &str) -> AdminProxy {
        self.admin_proxy_from_env(base, extra, &[])
    }

    /// `admin_proxy_from` with extra environment variables for the proxy process.
    pub fn admin_proxy_from_env(
        &self,
        base: &Path,
        extra: &str,
        vars: &[(&str, &str)],
    ) -> AdminProxy {
        let config = self.proxy_config_from(base, extra);
        let (admin, token) = admin_of(&config);
        let (child, port) = spawn_proxy_with_env(&config, vars);
        AdminProxy {
            guard: ProxyProcess(child),
            port,
            config,
            admin,
            token,
        }
    }
}

/// A proxy process stopped with SIGSTOP; sent SIGCONT when dropped, so that a failing test
/// never leaves it frozen (declare it after the proxy: it is dropped first).
pub struct Frozen(i32);

impl Frozen {
    pub fn stop(p: &AdminProxy) -> Frozen {
        let pid = i32::try_from(p.guard.0.id()).expect("pid");
        // SAFETY: kill(2) on a child process this test started and still owns.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as in `stop`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A proxy over a test's sandbox with its admin API (`Sandbox::admin_proxy`): its guard,
/// MySQL port, config file, admin address and token.
pub struct AdminProxy {
    pub guard: ProxyProcess,
    pub port: u16,
    pub config: PathBuf,
    pub admin: String,
    pub token: String,
}

impl Sandbox {
    /// A proxy over this sandbox with `extra` config, stopped when dropped.
    pub fn admin_proxy(&self, extra: &str) -> AdminProxy {
        self.admin_proxy_from(&self.dir.join("shardgate.toml"), extra)
    }
}

impl AdminProxy {
    /// An admin client with the proxy's token.
    pub fn client(&self) -> shardgate::admin::client::Client {
        shardgate::admin::client::Client::new(self.admin.clone(), Some(self.token.clone()))
    }

    /// `GET path` with the token; panics naming the call if no answer came.
    pub async fn get(&self, path: &str) -> shardgate::admin::client::Response {
        self.client()
            .send("GET", path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST path` with the token and `body`; panics naming the call if no answer came.
    pub async fn post(&self, path: &str, body: Option<&str>) -> shardgate::admin::client::Response {
        self.client()
            .send("POST", path, body.map(str::as_bytes))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// `shardgate ARGS --config <this proxy's config>`, as a user runs it.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run shardgate")
    }
}

/// The admin address (`proxy.admin_listen`) and token (`proxy.admin_token`, empty if unset)
/// of the proxy config at `config`.
pub fn admin_of(config: &Path) -> (String, String) {
    let text = std::fs::read_to_string(config).expect("config");
    let cfg: toml::Table = toml::from_str(&text).expect("config parses");
    let proxy = cfg.get("proxy").and_then(|p| p.as_table());
    let key = |k: &str| {
        proxy
            .and_then(|p| p.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    (key("admin_listen"), key("admin_token"))
}

impl Env {
    /// The shared proxy's admin address and token.
    pub fn admin(&self) -> (String, String) {
        admin_of(&self.dir.join("test-proxy.toml"))
    }
}

/// `mysql://app:app@127.0.0.1:PORT/DB?prefer_socket=false`: the application account on a
/// proxy or a server, staying on TCP.
pub fn app_url(port: u16, db: &str) -> String {
    format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{port}/{db}?prefer_socket=false")
}

/// `root` (empty password) on a sandbox server, over TCP: for what the application account
/// should not do or see (replication control, the whole PROCESSLIST).
pub fn root_url(port: u16) -> String {
    format!("mysql://root@127.0.0.1:{port}/?prefer_socket=false")
}

/// Raises this process's soft open-files limit to its hard limit (children such as a proxy
/// spawned afterwards inherit it). Returns the new soft limit.
pub fn raise_fd_limit() -> libc::rlim_t {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl),
            0,
            "getrlimit"
        );
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0, "setrlimit");
        }
    }
    rl.rlim_cur
}

/// Connects with mysql_async to `url`, naming it in the panic if that fails.
pub async fn connect(url: &str) -> mysql_async::Conn {
    let opts = mysql_async::Opts::from_url(url).expect("url");
    mysql_async::Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Waits until every replica of `sb` has applied everything its primary has binlogged so far
/// (`MASTER_GTID_WAIT`, up to 20 s), so tables set up on the primary can be read anywhere.
pub async fn wait_replicated(sb: &Sandbox) {
    use mysql_async::prelude::Queryable;
    let mut p = connect(&root_url(sb.primary().port)).await;
    let pos: String = p
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("gtid_binlog_pos")
        .expect("row");
    for r in sb.replicas() {
        let mut c = connect(&root_url(r.port)).await;
        let waited: Option<i64> = c
            .exec_first("SELECT MASTER_GTID_WAIT(?, 20)", (pos.clone(),))
            .await
            .expect("master_gtid_wait")
            .expect("row");
        assert_eq!(
            waited,
            Some(0),
            "replica {} did not reach {pos} within 20 s",
            r.label()
        );
    }
}

/// Connections the application account has open on the server `c` (a root connection, so it
/// sees the whole PROCESSLIST) is connected to: what proxies' pools hold there.
pub async fn app_connections_on(c: &mut mysql_async::Conn) -> u64 {
    try_app_connections_on(c).await.expect("processlist")
}

/// `app_connections_on`, passing errors on.
pub async fn try_app_connections_on(c: &mut mysql_async::Conn) -> mysql_async::Result<u64> {
    use mysql_async::prelude::Queryable;
    let n: Option<u64> = c
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{USER}'"
        ))
        .await?;
    Ok(n.unwrap_or(0))
}

/// Waits until every replica of the shared sandbox has applied everything its primary has
/// written. The proxy sends reads to replicas, so a test comparing what another session
/// reads (or what a direct connection reads) with what it just wrote waits for this first,
/// as an application reading its writes from another connection would have to.
pub fn wait_env_replicated() {
    let env = env();
    let mysql = |port: u16, sql: &str| -> String {
        let out = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "root"])
            .args(["--batch", "--skip-column-names", "-e", sql])
            .output()
            .expect("run mariadb");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let primary = env.cluster.primary("s0").expect("primary").port;
    let pos = mysql(primary, "SELECT @@gtid_binlog_pos");
    for r in env.cluster.replicas("s0") {
        let waited = mysql(r.port, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"));
        assert_eq!(
            waited, "0",
            "replica {} did not catch up with {pos}",
            r.port
        );
    }
}

/// Ids `base..base + n` of the sharded `users` table (rows written with `name`), by the shard
/// that stores them (two lists), told apart by the server that answers for each.
pub async fn ids_by_shard(
    c: &mut mysql_async::Conn,
    base: i64,
    n: i64,
    name: &str,
) -> (Vec<i64>, Vec<i64>) {
    use mysql_async::prelude::Queryable;
    c.query_drop("CREATE TABLE IF NOT EXISTS users (id INT PRIMARY KEY, name VARCHAR(40))")
        .await
        .expect("users");
    let mut by_server: std::collections::BTreeMap<u32, Vec<i64>> = Default::default();
    for id in base..base + n {
        c.query_drop(format!(
            "REPLACE INTO users (id, name) VALUES ({id}, '{name}')"
        ))
        .await
        .expect("insert");
        let sid: Option<u32> = c
            .query_first(format!(
                "/* shardgate:primary */ SELECT @@server_id FROM users WHERE id = {id}"
            ))
            .await
            .expect("where");
        by_server
            .entry(sid.expect("row found"))
            .or_default()
            .push(id);
    }
    let mut lists = by_server.into_values();
    match (lists.next(), lists.next()) {
        (Some(x), Some(y)) => (x, y),
        other => panic!("ids on both shards: {other:?}"),
    }
}

/// The server's `Created_tmp_disk_tables`: on-disk temporary tables it built so far (MariaDB
/// 10.11 crashed building some for information_schema queries under load, so the proxy's own
/// queries must build none).
pub async fn disk_tmp_tables(c: &mut mysql_async::Conn) -> u64 {
    use mysql_async::prelude::Queryable;
    let row: Option<(String, u64)> = c
        .query_first("SHOW GLOBAL STATUS LIKE 'Created_tmp_disk_tables'")
        .await
        .expect("status");
    row.expect("Created_tmp_disk_tables").1
}
