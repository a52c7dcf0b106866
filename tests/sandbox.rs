//! Starts a real 2 x (primary + replica) sandbox from the installed mariadbd and checks what the
//! other tests rely on: app user everywhere, replication within a shard, read-only replicas,
//! semi-sync, a refused second `up`, and a `down` that leaves no process behind. A second,
//! 2 x primary sandbox checks the shard map written for `--sharded-table`/`--reference-table`.
//! A third, `--proxies 2`, checks the sandbox etcd and the proxy configs that share it. A fourth
//! grows a sandbox by one shard (`sandbox add-shard`) and shrinks it again (`remove-shard`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use shardgate::sandbox::{self, Cluster, Role, SandboxError, SandboxOptions};

/// Stops the sandbox even when an assertion fails, so no mariadbd outlives the test.
struct DownOnDrop(PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = sandbox::down(&self.0);
    }
}

async fn connect(cluster: &Cluster, idx: usize) -> Conn {
    let s = &cluster.servers[idx];
    let opts = Opts::from_url(&cluster.dsn(s)).expect("dsn");
    Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("connecting as app to {}: {e}", s.label()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_up_replicates_and_down_stops_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sb");
    let _guard = DownOnDrop(dir.clone());
    let opts = SandboxOptions {
        dir: dir.clone(),
        shards: 2,
        replicas: 1,
        ..Default::default()
    };

    let t = Instant::now();
    let cluster = sandbox::up(&opts).await.expect("sandbox up");
    eprintln!("sandbox up (2 x (1 + 1)) took {:?}", t.elapsed());

    // cluster.json describes exactly what runs.
    let loaded = Cluster::load(&dir).expect("cluster.json");
    let roles: Vec<(String, Role)> = loaded
        .servers
        .iter()
        .map(|s| (s.shard.clone(), s.role.clone()))
        .collect();
    assert_eq!(
        roles,
        [
            ("s0".to_string(), Role::Primary),
            ("s0".to_string(), Role::Replica),
            ("s1".to_string(), Role::Primary),
            ("s1".to_string(), Role::Replica),
        ]
    );
    assert!(loaded.servers.iter().all(|s| s.is_running()));
    let cfg = shardgate::config::Config::load(&dir.join("shardgate.toml")).expect("proxy config");
    assert_eq!(
        cfg.keyspace["app"].shards[0].primary,
        cluster.servers[0].addr()
    );

    // The app user reaches every server, in database `app`, and each has its own server id.
    let mut conns = Vec::new();
    for (idx, s) in cluster.servers.iter().enumerate() {
        let mut c = connect(&cluster, idx).await;
        let id: Option<u32> = c
            .query_first("SELECT @@server_id")
            .await
            .expect("server id");
        assert_eq!(id, Some(s.server_id), "{}", s.label());
        let db: Option<String> = c.query_first("SELECT DATABASE()").await.expect("db");
        assert_eq!(db.as_deref(), Some("app"));
        conns.push(c);
    }

    // A write on s0's primary shows up on s0's replica, not on shard s1.
    write_row(&mut conns[0], "hello").await;
    wait_row(&mut conns[1], "hello", "s0 replica").await;
    let on_s1: Option<i64> = conns[2]
        .query_first(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='app' AND table_name='t'",
        )
        .await
        .expect("s1 tables");
    assert_eq!(on_s1, Some(0));

    // Replicas are read-only; primaries are writable and in semi-sync mode.
    for (idx, c) in conns.iter_mut().enumerate() {
        let ro: Option<i64> = c
            .query_first("SELECT @@read_only")
            .await
            .expect("read_only");
        let want = i64::from(cluster.servers[idx].role == Role::Replica);
        assert_eq!(ro, Some(want), "{}", cluster.servers[idx].label());
    }
    for idx in [0, 2] {
        let row: Option<(String, String)> = conns[idx]
            .query_first("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
            .await
            .expect("semi-sync status");
        assert_eq!(row.map(|r| r.1).as_deref(), Some("ON"));
    }
    for c in conns {
        c.disconnect().await.expect("disconnect");
    }

    // A crashed replica (killed by pid) comes back on its port and resumes replicating.
    let mut cluster = cluster;
    assert!(cluster.kill_server(3).expect("kill"));
    assert!(!cluster.servers[3].is_running());
    cluster.start_server(3).await.expect("restart replica");
    let mut r1 = connect(&cluster, 3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row: Option<mysql_async::Row> =
            r1.query_first("SHOW SLAVE STATUS").await.expect("status");
        let io = row
            .as_ref()
            .and_then(|r| r.get::<String, _>("Slave_IO_Running"));
        if io.as_deref() == Some("Yes") {
            break;
        }
        assert!(Instant::now() < deadline, "replica did not resume: {io:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r1.disconnect().await.expect("disconnect");

    // A second `up` on a running sandbox is refused.
    match sandbox::up(&opts).await {
        Err(SandboxError::AlreadyRunning { .. }) => {}
        other => panic!("second up should be refused, got {other:?}"),
    }

    // `down` stops exactly these servers and removes its files.
    let stopped = sandbox::down(&dir).expect("down");
    assert_eq!(stopped, 4);
    for s in &cluster.servers {
        assert!(!s.is_running(), "{} still running", s.label());
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{}", s.pid)).exists() {
            assert!(Instant::now() < deadline, "pid {} not reaped", s.pid);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!s.datadir.exists());
    }
    assert!(!dir.join("cluster.json").exists());
    assert_eq!(sandbox::down(&dir).expect("second down"), 0);
}

/// `--sharded-table` / `--reference-table` (here through the library): keyspace `app` becomes
/// consistent_hash over every shard, and database `app` exists on every shard's primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_tables_make_app_consistent_hash_over_every_shard() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sb");
    let _guard = DownOnDrop(dir.clone());
    let tables = sandbox::TableLayout {
        sharded: vec![
            "users:id".parse().expect("users:id"),
            "orders:user_id".parse().expect("orders:user_id"),
        ],
        reference: vec!["countries".into()],
    };
    let opts = SandboxOptions {
        dir: dir.clone(),
        shards: 2,
        replicas: 0,
        tables: tables.clone(),
        ..Default::default()
    };
    let cluster = sandbox::up(&opts).await.expect("sandbox up");
    assert_eq!(Cluster::load(&dir).expect("cluster.json").tables, tables);

    let cfg = shardgate::config::Config::load(&dir.join("shardgate.toml")).expect("proxy config");
    let ks = &cfg.keyspace["app"];
    assert_eq!(ks.sharding, shardgate::shardmap::Sharding::ConsistentHash);
    assert_eq!(ks.vnodes, 256);
    let primaries: Vec<String> = ks.shards.iter().map(|s| s.primary.clone()).collect();
    let want: Vec<String> = cluster.servers.iter().map(|s| s.addr()).collect();
    assert_eq!(primaries, want);
    assert_eq!(ks.tables["users"].shard_key.as_deref(), Some("id"));
    assert_eq!(ks.tables["orders"].shard_key.as_deref(), Some("user_id"));
    assert!(ks.tables["countries"].reference);

    for idx in 0..cluster.servers.len() {
        let mut c = connect(&cluster, idx).await;
        let db: Option<String> = c.query_first("SELECT DATABASE()").await.expect("db");
        assert_eq!(
            db.as_deref(),
            Some("app"),
            "{}",
            cluster.servers[idx].label()
        );
        c.disconnect().await.expect("disconnect");
    }

    // Tables named twice are refused before anything starts.
    let mut twice = opts.clone();
    twice.dir = tmp.path().join("other");
    twice.tables.reference.push("users".into());
    match sandbox::up(&twice).await {
        Err(SandboxError::Options(msg)) => assert!(msg.contains("given twice"), "{msg}"),
        other => panic!("duplicate table should be refused, got {other:?}"),
    }
    assert!(!twice.dir.exists());

    assert_eq!(sandbox::down(&dir).expect("down"), 2);
}

/// `shardgate ARGS`; its output, asserting success.
fn shardgate(args: &[&str]) -> String {
    let out = std::process::Command::new(common::bin())
        .args(args)
        .output()
        .expect("run shardgate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "shardgate {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `sandbox up --proxies 2` (through the binary): an etcd that answers, recorded in
/// cluster.json; two valid configs sharing it with their own ports and ids, each serving; etcd
/// survives a stop and restart on the same endpoint; `sandbox down` stops etcd and mariadbd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_with_two_proxies_shares_an_etcd_and_down_stops_it() {
    let sb = common::start_cluster_with(&["--shards", "1", "--replicas", "0", "--proxies", "2"]);
    let etcd = sb.etcd();
    assert!(
        etcd.is_running(),
        "pid {} is etcd on {:?}",
        etcd.pid,
        etcd.data_dir
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", etcd.pid)).expect("cmdline");
    let want = format!("--data-dir={}", sb.dir.join("etcd").display());
    assert!(
        cmdline.split(|b| *b == 0).any(|a| a == want.as_bytes()),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    let health = http_get(etcd.client_port, "/health");
    assert!(health.contains(r#""health":"true""#), "{health}");

    let configs = sb.proxy_configs();
    assert_eq!(
        configs,
        [
            sb.dir.join("shardgate.toml"),
            sb.dir.join("shardgate-2.toml")
        ]
    );
    let mut seen = Vec::new();
    for path in &configs {
        let out = shardgate(&["check", &path.display().to_string()]);
        assert!(out.contains("valid config"), "{out}");
        let cfg = shardgate::config::Config::load(path).expect("config");
        assert_eq!(cfg.topology.store, shardgate::config::StoreKind::Etcd);
        assert_eq!(cfg.topology.endpoints, [etcd.endpoint()]);
        assert_eq!(cfg.topology.prefix, "/shardgate/sandbox");
        assert_eq!(cfg.ha.state_file, None);
        seen.push((
            cfg.proxy.listen.clone(),
            cfg.proxy.admin_listen.clone(),
            cfg.topology.proxy_id.clone(),
        ));
    }
    assert_eq!(seen[0].2.as_deref(), Some("proxy-1"));
    assert_eq!(seen[1].2.as_deref(), Some("proxy-2"));
    let ports: std::collections::HashSet<&String> =
        seen.iter().flat_map(|(l, a, _)| [l, a]).collect();
    assert_eq!(
        ports.len(),
        4,
        "listen and admin ports all differ: {seen:?}"
    );

    // Both proxies start from their configs and serve.
    let proxies = sb.admin_proxies("");
    for p in &proxies {
        let mut c = common::connect(&common::app_url(p.port, "app")).await;
        let one: Option<i64> = c.query_first("SELECT 1").await.expect("select 1");
        assert_eq!(one, Some(1), "proxy on {}", p.port);
        c.disconnect().await.expect("disconnect");
    }
    drop(proxies);
    let d = sb.dir.display().to_string();
    shardgate(&["sandbox", "add-shard", "--dir", &d]);

    // Stopped, etcd stops answering; started again, it is back on the same endpoint.
    sb.etcd_stop();
    assert!(!etcd.is_running() && !etcd.is_healthy());
    // The map the proxies share cannot be checked, so no shard is removed.
    let remove_s1 = ["sandbox", "remove-shard", "--dir", &d, "--shard", "s1"];
    let (ok, _, err) = shardgate_status(&remove_s1);
    assert!(!ok && err.contains("did not answer"), "{err}");
    sb.etcd_start();
    let back = sb.etcd();
    assert_ne!(back.pid, etcd.pid);
    assert_eq!(back.endpoint(), etcd.endpoint());
    assert!(back.is_healthy());
    // etcd's current map (seeded by the proxies) does not name s1.
    let out = shardgate(&remove_s1);
    assert!(out.contains("removed shard s1"), "{out}");

    let primary = sb.cluster.servers[0].clone();
    let out = shardgate(&["sandbox", "down", "--dir", &sb.dir.display().to_string()]);
    assert!(out.contains("stopped 1 servers"), "{out}");
    assert!(!back.is_running(), "etcd pid {} still runs", back.pid);
    assert!(
        !primary.is_running(),
        "mariadbd pid {} still runs",
        primary.pid
    );
    assert!(!sb.dir.join("etcd").exists(), "etcd data removed");
    assert!(configs.iter().all(|c| !c.exists()), "proxy configs removed");
}

/// `GET path` on 127.0.0.1:port over plain HTTP/1.0: the whole answer.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    answer
}

/// etcd refuses to start when an `ETCD_*` variable repeats one of its flags; the sandbox's etcd
/// must not inherit them from whoever runs `sandbox up`.
#[test]
fn sandbox_etcd_starts_despite_etcd_environment_variables() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sb");
    let _guard = DownOnDrop(dir.clone());
    let out = std::process::Command::new(common::bin())
        .args([
            "sandbox",
            "up",
            "--etcd",
            "--shards",
            "1",
            "--replicas",
            "0",
            "--dir",
        ])
        .arg(&dir)
        .env("ETCD_NAME", "someone-else")
        .env("ETCD_DATA_DIR", tmp.path().join("elsewhere"))
        .output()
        .expect("run shardgate sandbox up");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let etcd = Cluster::load(&dir)
        .expect("cluster.json")
        .etcd
        .expect("etcd");
    assert!(etcd.is_running() && etcd.is_healthy());
    assert_eq!(etcd.data_dir, dir.join("etcd"));
    assert_eq!(sandbox::down(&dir).expect("down"), 1);
    assert!(!etcd.is_running());
}

/// `shardgate ARGS`: (success, stdout, stderr).
fn shardgate_status(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::bin())
        .args(args)
        .output()
        .expect("run shardgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Pids of every live mariadbd whose command line names a path under `dir`.
fn mariadbd_under(dir: &std::path::Path) -> Vec<u32> {
    let want = dir.display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&raw);
            text.contains("mariadbd") && text.contains(&want)
        })
        .collect()
}

/// Creates table `t` on `c` with the row `(1, v)`.
async fn write_row(c: &mut Conn, v: &str) {
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .expect("create table");
    c.exec_drop("INSERT INTO t VALUES (1, ?)", (v,))
        .await
        .expect("insert");
}

/// Polls `SELECT v FROM t WHERE id = 1` on `c` until it is `want`.
async fn wait_row(c: &mut Conn, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: Result<Option<String>, _> = c.query_first("SELECT v FROM t WHERE id = 1").await;
        if matches!(&seen, Ok(Some(v)) if v == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: row not replicated: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sandbox add-shard` (through the binary) on a 2 x (primary + replica) sandbox sharded over
/// s0 and s1: shard s2 with a primary and a replica replicating from it (GTID, ROW binlog,
/// semi-sync), the app user and an empty database `app`, recorded in cluster.json, the proxy
/// config untouched, and the `--add` argument printed with its addresses. `remove-shard`
/// refuses shards the map routes to and removes s2; `down` stops a shard added again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_shard_starts_a_replicated_shard_and_down_stops_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("sb");
    let d = dir.display().to_string();
    let _guard = DownOnDrop(dir.clone());
    let opts = SandboxOptions {
        dir: dir.clone(),
        shards: 2,
        replicas: 1,
        tables: sandbox::TableLayout {
            sharded: vec!["users:id".parse().expect("users:id")],
            reference: Vec::new(),
        },
        ..Default::default()
    };
    sandbox::up(&opts).await.expect("sandbox up");
    let config_before = std::fs::read(dir.join("shardgate.toml")).expect("config");

    let t = Instant::now();
    let out = shardgate(&["sandbox", "add-shard", "--dir", &d]);
    eprintln!("add-shard took {:?}:\n{out}", t.elapsed());
    let cluster = Cluster::load(&dir).expect("cluster.json");
    assert_eq!(cluster.shard_names(), ["s0", "s1", "s2"]);
    let primary = cluster.primary("s2").expect("s2 primary").clone();
    let replicas: Vec<_> = cluster.replicas("s2").into_iter().cloned().collect();
    assert_eq!(replicas.len(), 1, "as many replicas as the other shards");
    let replica = &replicas[0];
    assert!(primary.is_running() && replica.is_running());
    let ids: std::collections::HashSet<u32> = cluster.servers.iter().map(|s| s.server_id).collect();
    assert_eq!(ids.len(), 6, "server ids stay distinct");
    for s in [&primary, replica] {
        assert!(out.contains(&format!("127.0.0.1:{}", s.port)), "{out}");
    }
    let add = out
        .split_whitespace()
        .skip_while(|w| *w != "--add")
        .nth(1)
        .expect("an --add argument");
    assert_eq!(add, format!("s2={},{}", primary.addr(), replica.addr()));
    assert_eq!(
        std::fs::read(dir.join("shardgate.toml")).expect("config"),
        config_before,
        "the proxy config is left to resharding"
    );

    // The app user logs in to database `app`, which has no tables yet; same server settings.
    let idx = |s: &sandbox::ServerInfo| {
        cluster
            .servers
            .iter()
            .position(|x| x.datadir == s.datadir)
            .expect("listed")
    };
    let mut p = connect(&cluster, idx(&primary)).await;
    let db: Option<String> = p.query_first("SELECT DATABASE()").await.expect("db");
    assert_eq!(db.as_deref(), Some("app"));
    let tables: Option<i64> = p
        .query_first("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app'")
        .await
        .expect("tables");
    assert_eq!(tables, Some(0));
    let settings: Option<(i64, String, i64, i64)> = p
        .query_first(
            "SELECT @@log_bin, @@binlog_format, @@gtid_strict_mode, @@rpl_semi_sync_master_enabled",
        )
        .await
        .expect("settings");
    assert_eq!(settings, Some((1, "ROW".to_string(), 1, 1)));
    let semi: Option<(String, String)> = p
        .query_first("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
        .await
        .expect("semi-sync status");
    assert_eq!(semi.map(|r| r.1).as_deref(), Some("ON"));

    // Its replica replicates from it by GTID, read-only.
    let mut r = connect(&cluster, idx(replica)).await;
    let status: mysql_async::Row = r
        .query_first("SHOW SLAVE STATUS")
        .await
        .expect("slave status")
        .expect("replication configured");
    let field = |name: &str| status.get::<String, _>(name).unwrap_or_default();
    assert_eq!(field("Master_Port"), primary.port.to_string());
    assert_eq!(field("Using_Gtid"), "Slave_Pos");
    assert_eq!(
        (field("Slave_IO_Running"), field("Slave_SQL_Running")),
        ("Yes".to_string(), "Yes".to_string())
    );
    let ro: Option<i64> = r.query_first("SELECT @@read_only").await.expect("ro");
    assert_eq!(ro, Some(1));
    write_row(&mut p, "on s2").await;
    wait_row(&mut r, "on s2", "s2 replica").await;
    p.disconnect().await.expect("disconnect");
    r.disconnect().await.expect("disconnect");

    // Shards the proxy's map routes to are refused, the last one too; s2 goes.
    for shard in ["s0", "s1"] {
        let (ok, _, err) =
            shardgate_status(&["sandbox", "remove-shard", "--dir", &d, "--shard", shard]);
        assert!(!ok, "removing {shard} must be refused");
        assert!(
            err.contains(&format!("shard {shard} is still in keyspace app"))
                && err.contains("reshard it away first"),
            "{err}"
        );
    }
    let (ok, _, err) = shardgate_status(&["sandbox", "remove-shard", "--dir", &d, "--shard", "s9"]);
    assert!(!ok && err.contains("no shard s9"), "{err}");
    let out = shardgate(&["sandbox", "remove-shard", "--dir", &d, "--shard", "s2"]);
    assert!(out.contains("stopped 2 servers"), "{out}");
    for s in [&primary, replica] {
        assert!(!s.is_running(), "{} still runs", s.label());
        assert!(!s.datadir.exists(), "{} removed", s.datadir.display());
    }
    let after = Cluster::load(&dir).expect("cluster.json");
    assert_eq!(after.shard_names(), ["s0", "s1"]);
    assert!(after.servers.iter().all(|s| s.is_running()));
    assert_eq!(
        std::fs::read(dir.join("shardgate.toml")).expect("config"),
        config_before
    );

    // Added again (the name is free again), it is stopped by `down` with the rest.
    shardgate(&["sandbox", "add-shard", "--dir", &d]);
    let again = Cluster::load(&dir).expect("cluster.json");
    assert_eq!(again.shard_names(), ["s0", "s1", "s2"]);
    let pids: Vec<u32> = again.servers.iter().map(|s| s.pid).collect();
    assert_eq!(mariadbd_under(&dir).len(), 6);
    assert_eq!(sandbox::down(&dir).expect("down"), 6);
    let left = mariadbd_under(&dir);
    assert!(
        left.is_empty(),
        "mariadbd left running: {left:?} (of {pids:?})"
    );
}

/// A server started on a port another sandbox's server holds must not pass for started: that
/// other server answered `SELECT 1` during this one's InnoDB start-up, and a proxy then wrote
/// into the other sandbox (seen twice as a failure of `reshard_faults`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_port_another_sandbox_holds_is_not_taken_for_started() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let _a = DownOnDrop(a_dir.clone());
    let _b = DownOnDrop(b_dir.clone());
    let opts = |dir: &PathBuf| SandboxOptions {
        dir: dir.clone(),
        shards: 1,
        replicas: 0,
        ..Default::default()
    };
    let a = sandbox::up(&opts(&a_dir)).await.expect("sandbox a up");
    let mut b = sandbox::up(&opts(&b_dir)).await.expect("sandbox b up");
    assert!(b.stop_server(0).expect("stop b's server"), "b's server ran");
    b.servers[0].port = a.servers[0].port;
    let r = b.start_server(0).await;
    assert!(
        r.is_err(),
        "b's server was taken for started on a's port ({})",
        a.servers[0].port
    );
    // a's server is untouched, and no process of b's is left behind.
    let mut c = connect(&a, 0).await;
    let dir: Option<String> = c.query_first("SELECT @@datadir").await.expect("datadir");
    let want = std::fs::canonicalize(&a.servers[0].datadir).expect("a's datadir");
    let got = std::fs::canonicalize(dir.expect("a datadir").trim_end_matches('/')).expect("path");
    assert_eq!(got, want);
    let _ = c.disconnect().await;
    assert!(mariadbd_under(&b_dir).is_empty(), "b's server still runs");
}
