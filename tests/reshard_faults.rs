//! Online resharding when things go wrong, against real MariaDB with writers through the
//! proxy: the proxy stopped (a test-only exit at a step, or kill -9) during the copy, the
//! catch-up and each cutover step resumes and ends fully switched or fully not; a cutover whose
//! catch-up cannot finish in its budget aborts and succeeds on retry; a rollback after the
//! cutover keeps the writes made after it; `reshard start` refuses what the catch-up cannot
//! follow, and a purged binlog stops the workflow with a message saying so.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::reshard::{self as rs, Writers};
use common::{AdminProxy, ProxyProcess};
use mysql_async::prelude::*;
use serde_json::json;

/// A proxy on `config` (same ports every time), exiting at `stop` if given.
fn spawn(config: &Path, stop: Option<&str>) -> AdminProxy {
    let vars: Vec<(&str, &str)> = stop
        .map(|s| vec![("SHARDGATE_TEST_RESHARD_STOP", s)])
        .unwrap_or_default();
    let (admin, token) = common::admin_of(config);
    let (child, port) = common::spawn_proxy_with_env(config, &vars);
    AdminProxy {
        guard: ProxyProcess(child),
        port,
        config: config.to_path_buf(),
        admin,
        token,
    }
}

/// Waits until the proxy exits by itself (at its test stop).
fn wait_exit(p: &mut AdminProxy) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = p.guard.0.try_wait() {
            assert_eq!(status.code(), Some(86), "exit at the test stop");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not stop at its step"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A POST whose answer may never come (the proxy stops while running it).
async fn post_and_lose(p: &AdminProxy, path: &str, body: serde_json::Value) {
    let _ = p
        .client()
        .send("POST", path, Some(body.to_string().as_bytes()))
        .await;
}

fn last_attempt(s: &serde_json::Value) -> serde_json::Value {
    s["cutovers"]
        .as_array()
        .and_then(|a| a.last().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_stopped_at_any_step_resumes_and_ends_switched_or_not() {
    let sb = common::start_cluster_with(&[
        "--shards",
        "2",
        "--replicas",
        "0",
        "--sharded-table",
        "items:id",
    ]);
    let config = sb.proxy_config("");
    let mut p = spawn(&config, Some("copying"));
    let url = common::app_url(p.port, "app");
    rs::load(&url).await;
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    let writers = Writers::start(std::slice::from_ref(&url), 4);

    // During the copy: the proxy stops after the first chunk; at restart the copy goes on from
    // the last copied key.
    rs::post(
        &p,
        "/api/v1/reshard/start",
        json!({"keyspace": "app", "add": added.add_arg()}),
    )
    .await;
    wait_exit(&mut p);
    let p = spawn(&config, None);
    rs::wait_status(&p, Duration::from_secs(120), |s| rs::phase(s) == "running").await;
    rs::verify_clean(&p).await;

    // During the catch-up: kill -9.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(p);
    // At each cutover step before the publication: not switched at restart.
    for step in ["drained", "caught_up", "publishing"] {
        let mut p = spawn(&config, Some(step));
        rs::wait_status(&p, Duration::from_secs(60), |s| {
            s["streams"].as_array().is_some_and(|a| {
                a.iter()
                    .filter(|x| x["direction"] == "forward")
                    .all(|x| x["state"] == "running")
            })
        })
        .await;
        post_and_lose(
            &p,
            "/api/v1/reshard/cutover",
            json!({"keyspace": "app", "max_pause_ms": 3000}),
        )
        .await;
        wait_exit(&mut p);
        let p = spawn(&config, None);
        let s = rs::status(&p).await;
        assert_eq!(rs::phase(&s), "running", "stopped at {step}: {s:#}");
        assert_eq!(
            last_attempt(&s)["outcome"],
            "aborted",
            "stopped at {step}: {s:#}"
        );
        drop(p);
    }
    // Right after the publication: switched at restart, the reverse streams running.
    let mut p = spawn(&config, Some("published"));
    rs::wait_status(&p, Duration::from_secs(60), |s| {
        s["streams"].as_array().is_some_and(|a| {
            a.iter()
                .filter(|x| x["direction"] == "forward")
                .all(|x| x["state"] == "running")
        })
    })
    .await;
    post_and_lose(
        &p,
        "/api/v1/reshard/cutover",
        json!({"keyspace": "app", "max_pause_ms": 3000}),
    )
    .await;
    wait_exit(&mut p);
    let p = spawn(&config, None);
    let s = rs::status(&p).await;
    assert_eq!(rs::phase(&s), "switched", "{s:#}");
    assert_eq!(last_attempt(&s)["outcome"], "switched", "{s:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    rs::post(&p, "/api/v1/reshard/complete", json!({"keyspace": "app"})).await;
    rs::wait_status(&p, Duration::from_secs(120), |s| {
        rs::phase(s) == "completed"
    })
    .await;
    let ledger = writers.stop().await;
    eprintln!(
        "writers: {} operations, {} acknowledged inserts, errors {:?}",
        ledger.ops,
        ledger.inserted.len(),
        ledger.errors
    );
    assert!(
        rs::unexpected_errors(&ledger, true).is_empty(),
        "{:?}",
        rs::unexpected_errors(&ledger, true)
    );
    let primaries = vec![
        ("s0".to_string(), sb.cluster.primary("s0").expect("s0").port),
        ("s1".to_string(), sb.cluster.primary("s1").expect("s1").port),
        ("s2".to_string(), added.servers[0].port),
    ];
    rs::check_ledger(&ledger, &primaries, &["s0", "s1", "s2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_catch_up_aborts_the_cutover_and_a_rollback_keeps_later_writes() {
    let sb = common::start_cluster_with(&[
        "--shards",
        "2",
        "--replicas",
        "0",
        "--sharded-table",
        "items:id",
    ]);
    let p = sb.admin_proxy("");
    let url = common::app_url(p.port, "app");
    rs::load(&url).await;
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    let writers = Writers::start(std::slice::from_ref(&url), 4);
    rs::post(
        &p,
        "/api/v1/reshard/start",
        json!({"keyspace": "app", "add": added.add_arg()}),
    )
    .await;
    rs::wait_status(&p, Duration::from_secs(120), |s| rs::phase(s) == "running").await;
    rs::verify_clean(&p).await;

    // The new shard made slow: its table locked, the catch-up cannot apply anything.
    let mut lock = common::connect(&common::root_url(added.servers[0].port)).await;
    lock.query_drop("LOCK TABLES app.items WRITE")
        .await
        .expect("lock");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = writers.ops();
    let r = p
        .post(
            "/api/v1/reshard/cutover",
            Some(&json!({"keyspace": "app", "max_pause_ms": 300}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let attempt: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(attempt["outcome"], "aborted", "{attempt:#}");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap_or_default()
            .contains("catch-up"),
        "{attempt:#}"
    );
    assert!(
        attempt["pause_ms"].as_u64().unwrap_or(u64::MAX) < 1000,
        "{attempt:#}"
    );
    assert_eq!(rs::phase(&rs::status(&p).await), "running");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        writers.ops() > before,
        "the writers went on after the abort"
    );
    lock.query_drop("UNLOCK TABLES").await.expect("unlock");
    drop(lock);

    // The retry switches.
    rs::cutover(&p, "/api/v1/reshard/cutover", 2000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Rolled back: the writes made on the new owner since the cutover reached the old ones.
    let attempt = rs::cutover(&p, "/api/v1/reshard/rollback", 2000).await;
    eprintln!("rollback: {attempt:#}");
    assert_eq!(rs::phase(&rs::status(&p).await), "rolled_back");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ledger = writers.stop().await;
    eprintln!(
        "writers: {} operations, {} acknowledged inserts, errors {:?}",
        ledger.ops,
        ledger.inserted.len(),
        ledger.errors
    );
    assert!(
        rs::unexpected_errors(&ledger, false).is_empty(),
        "{:?}",
        rs::unexpected_errors(&ledger, false)
    );
    // The copies leave the new shard.
    let mut s2 = common::connect(&common::root_url(added.servers[0].port)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: u64 = s2
            .query_first("SELECT COUNT(*) FROM app.items")
            .await
            .expect("count")
            .expect("row");
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} copied rows stay on s2");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let primaries = vec![
        ("s0".to_string(), sb.cluster.primary("s0").expect("s0").port),
        ("s1".to_string(), sb.cluster.primary("s1").expect("s1").port),
    ];
    rs::check_ledger(&ledger, &primaries, &["s0", "s1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_what_the_catch_up_cannot_follow_and_a_purged_binlog_stops_it() {
    let sb = common::start_cluster_with(&[
        "--shards",
        "2",
        "--replicas",
        "0",
        "--sharded-table",
        "items:id",
    ]);
    let config = sb.proxy_config("");
    let p = spawn(&config, None);
    let url = common::app_url(p.port, "app");
    rs::load(&url).await;
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    let start = json!({"keyspace": "app", "add": added.add_arg()}).to_string();
    let s0 = sb.cluster.primary("s0").expect("s0").port;
    let mut root0 = common::connect(&common::root_url(s0)).await;

    // A table without a primary key.
    root0
        .query_drop("CREATE TABLE app.nopk (a INT)")
        .await
        .expect("nopk");
    let r = p.post("/api/v1/reshard/start", Some(&start)).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("nopk") && r.text().contains("primary key"),
        "{}",
        r.text()
    );
    root0.query_drop("DROP TABLE app.nopk").await.expect("drop");

    // A source that does not log rows.
    root0
        .query_drop("SET GLOBAL binlog_format = 'STATEMENT'")
        .await
        .expect("statement");
    let r = p.post("/api/v1/reshard/start", Some(&start)).await;
    root0
        .query_drop("SET GLOBAL binlog_format = 'ROW'")
        .await
        .expect("row");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("binlog_format"), "{}", r.text());
    drop(p);

    // The binlog the catch-up needs purged while the proxy was down.
    let mut p = spawn(&config, Some("copied"));
    rs::post(
        &p,
        "/api/v1/reshard/start",
        serde_json::from_str(&start).expect("json"),
    )
    .await;
    wait_exit(&mut p);
    root0
        .query_drop("INSERT INTO app.items (id, n, w) VALUES (99999999, 0, 0)")
        .await
        .expect("write");
    root0.query_drop("FLUSH BINARY LOGS").await.expect("flush");
    let file: String = root0
        .query_first::<mysql_async::Row, _>("SHOW MASTER STATUS")
        .await
        .expect("status")
        .and_then(|r| r.get::<String, _>(0))
        .expect("file");
    // MariaDB keeps a file until its binlog checkpoint is written: purge until it is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        root0
            .query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
            .await
            .expect("purge");
        let logs: Vec<mysql_async::Row> = root0.query("SHOW BINARY LOGS").await.expect("logs");
        if logs.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the old binlogs stay");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let p = spawn(&config, None);
    let s = rs::wait_status(&p, Duration::from_secs(60), |s| rs::phase(s) == "failed").await;
    assert!(
        s["error"].as_str().unwrap_or_default().contains("purged"),
        "{s:#}"
    );
}
