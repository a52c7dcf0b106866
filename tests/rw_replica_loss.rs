//! Replicas that fall behind or die, against a sandbox of its own (primary server id 1,
//! replicas 2 and 3) with the health monitor checking every 200 ms: replication stopped, a
//! replica past its keyspace's lag limit, both replicas killed. Every test changes the cluster
//! and asserts where reads go, so they run one at a time (`SERIAL`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;

use common::Sandbox;

const PRIMARY: u32 = 1;
const REPLICAS: [u32; 2] = [2, 3];

const CONFIG: &str = r#"
[proxy]
workers = 2

[routing]
read_write_split = true
consistency = "eventual"
gtid_wait_timeout_ms = 100
max_replica_lag = 10.0

[monitor]
user = "root"
password = ""
interval_ms = 200
connect_timeout_ms = 1000
"#;

/// One test at a time: each stops or kills replicas.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster(2))
}

async fn sid(c: &mut Conn) -> mysql_async::Result<u32> {
    Ok(c.query_first::<u32, _>("SELECT @@server_id")
        .await?
        .expect("a row"))
}

/// Reads through `c` until `want` holds for the last `window` server ids in a row, or panics
/// after `limit`. Returns how long it took.
async fn reads_until(
    c: &mut Conn,
    limit: Duration,
    window: usize,
    what: &str,
    want: impl Fn(u32) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut run = 0;
    let mut seen = BTreeMap::new();
    loop {
        let id = sid(c).await.expect("read through the proxy");
        *seen.entry(id).or_insert(0u32) += 1;
        run = if want(id) { run + 1 } else { 0 };
        if run >= window {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not reached within {limit:?} (reads by server id meanwhile: {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until every replica has answered at least once (the monitor found them healthy).
async fn both_replicas_in_use(c: &mut Conn, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    let mut seen = BTreeMap::new();
    while !REPLICAS.iter().all(|r| seen.contains_key(r)) {
        assert!(
            start.elapsed() < limit,
            "{what}: reads did not reach both replicas within {limit:?} (seen: {seen:?})"
        );
        let id = sid(c).await.expect("read through the proxy");
        *seen.entry(id).or_insert(0u32) += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// Restarts replication's SQL thread on a replica when dropped, so a failed assertion does not
/// leave it stopped for the next test.
struct SqlThreadGuard(u16);

impl Drop for SqlThreadGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb")
            .args(["-h127.0.0.1", "-uroot", "-e", "START SLAVE SQL_THREAD"])
            .arg(format!("-P{}", self.0))
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_is_skipped_until_it_catches_up() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox();
    let (_proxy, port) = sb.proxy(CONFIG);
    let mut c = common::connect(&common::app_url(port, "app")).await;
    both_replicas_in_use(&mut c, Duration::from_secs(10), "at start").await;

    let (lagging, healthy, t, mut p) = lag_setup(sb, "lag").await;

    let mut r = common::connect(&common::root_url(lagging.port)).await;
    let _guard = SqlThreadGuard(lagging.port);
    r.query_drop("STOP SLAVE SQL_THREAD").await.expect("stop");
    // Changes it will not apply meanwhile: it really falls behind.
    for i in 0..5 {
        p.query_drop(format!("INSERT INTO {t} VALUES ({i})"))
            .await
            .expect("insert on the primary");
    }
    let took = reads_until(
        &mut c,
        Duration::from_secs(3),
        40,
        "after STOP SLAVE SQL_THREAD on server 2, 40 reads in a row on server 3",
        |id| id == healthy,
    )
    .await;
    println!(
        "replica {} stopped applying: reads left it after {took:?}",
        lagging.server_id
    );
    let mut after = BTreeMap::new();
    for _ in 0..200 {
        *after
            .entry(sid(&mut c).await.expect("read"))
            .or_insert(0u32) += 1;
    }
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        vec![healthy],
        "while replica {} lags, reads go to the other replica only",
        lagging.server_id
    );
    // A new client too.
    let mut fresh = common::connect(&common::app_url(port, "app")).await;
    for _ in 0..20 {
        assert_eq!(sid(&mut fresh).await.expect("read"), healthy);
    }
    let n: Option<i64> = fresh
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .expect("count");
    assert_eq!(n, Some(5), "reads see the rows the lagging replica lacks");

    r.query_drop("START SLAVE SQL_THREAD").await.expect("start");
    let back = reads_until(
        &mut c,
        Duration::from_secs(10),
        1,
        "after START SLAVE SQL_THREAD, reads on server 2 again",
        |id| id == lagging.server_id,
    )
    .await;
    println!(
        "replica {} applying again: reads back after {back:?}",
        lagging.server_id
    );
    let mut again = BTreeMap::new();
    for _ in 0..100 {
        *again
            .entry(sid(&mut c).await.expect("read"))
            .or_insert(0u32) += 1;
    }
    assert_eq!(again.get(&PRIMARY), None, "{again:?}");
    assert!(again.len() == 2, "both replicas in use again: {again:?}");
}

/// What concurrent readers saw: (when the read started, server id or error).
type Log = Arc<Mutex<Vec<(Instant, Result<u32, String>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_losing_every_replica() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox();
    let config = sb.proxy_config(CONFIG);
    let (child, port) = common::spawn_proxy_checked(&config);
    let _proxy = common::ProxyProcess(child);
    let url = common::app_url(port, "app");
    let mut c = common::connect(&url).await;
    both_replicas_in_use(&mut c, Duration::from_secs(10), "at start").await;

    let stop = Arc::new(AtomicBool::new(false));
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    // Four clients reading in a loop on one connection each, and one that reconnects for
    // every few reads (new sessions during the loss must work as well).
    for k in 0..5 {
        let (stop, log, url) = (stop.clone(), log.clone(), url.clone());
        readers.push(tokio::spawn(async move {
            let mut c = common::connect(&url).await;
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if k == 4 && i.is_multiple_of(5) {
                    c = match Conn::new(mysql_async::Opts::from_url(&url).expect("url")).await {
                        Ok(c) => c,
                        Err(e) => {
                            log.lock()
                                .unwrap()
                                .push((Instant::now(), Err(format!("connect: {e}"))));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                }
                i += 1;
                let started = Instant::now();
                let r = sid(&mut c).await.map_err(|e| e.to_string());
                let failed = r.is_err();
                log.lock().unwrap().push((started, r));
                if failed {
                    // The connection may be gone; carry on with a new one.
                    match Conn::new(mysql_async::Opts::from_url(&url).expect("url")).await {
                        Ok(n) => c = n,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ids: Vec<usize> = REPLICAS.iter().map(|r| sb.index_of(*r)).collect();
    let cluster = sb.cluster.clone();
    let kill_ids = ids.clone();
    tokio::task::spawn_blocking(move || {
        for i in kill_ids {
            assert!(cluster.kill_server(i).expect("kill"), "replica was running");
        }
    })
    .await
    .expect("kill replicas");
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader task");
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    let errors: Vec<_> = log
        .iter()
        .filter_map(|(t, r)| {
            r.as_ref().err().map(|e| {
                format!(
                    "{:?} after the kill: {e}",
                    t.saturating_duration_since(killed)
                )
            })
        })
        .collect();
    let after: Vec<u32> = log
        .iter()
        .filter(|(t, _)| *t >= killed)
        .filter_map(|(_, r)| r.as_ref().ok().copied())
        .collect();
    let mut by = BTreeMap::new();
    for id in &after {
        *by.entry(*id).or_insert(0u32) += 1;
    }
    println!(
        "{} reads in all, {} started after both replicas were killed: by server {by:?}; \
         {} errors",
        log.len(),
        after.len(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "clients saw errors while the replicas died: {errors:#?}"
    );
    assert!(after.len() > 100, "readers kept reading: {}", after.len());
    assert_eq!(
        by.keys().copied().collect::<Vec<_>>(),
        vec![PRIMARY],
        "with both replicas dead every read is answered by the primary"
    );
    // And the operator is told, once.
    let proxy_log = std::fs::read_to_string(config.with_extension("log")).expect("proxy log");
    let said = proxy_log
        .matches("no healthy replica within the lag limit: reads go to the primary")
        .count();
    assert_eq!(said, 1, "one log line for the fallback:\n{proxy_log}");

    // Bring them back; the proxy returns to them once the monitor sees them healthy.
    let mut cluster = sb.cluster.clone();
    for i in ids {
        cluster.start_server(i).await.expect("restart replica");
    }
    common::wait_replicated(sb).await;
    let back = both_replicas_in_use(
        &mut c,
        Duration::from_secs(15),
        "after restarting both replicas",
    )
    .await;
    println!("replicas restarted: reads on both again after {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_past_its_keyspaces_lag_limit_is_skipped() {
    let _serial = SERIAL.lock().await;
    let sb = sandbox();
    // The keyspace allows 1 s of lag; the [routing] default stays 10 s.
    let strict_cfg = format!("{CONFIG}\n[keyspace.app]\nmax_replica_lag = 1.0\n");
    let (_strict, strict_port) = sb.proxy(&strict_cfg);
    let (_lenient, lenient_port) = sb.proxy(CONFIG);
    let mut strict = common::connect(&common::app_url(strict_port, "app")).await;
    let mut lenient = common::connect(&common::app_url(lenient_port, "app")).await;
    both_replicas_in_use(
        &mut strict,
        Duration::from_secs(10),
        "strict proxy at start",
    )
    .await;
    both_replicas_in_use(
        &mut lenient,
        Duration::from_secs(10),
        "lenient proxy at start",
    )
    .await;

    let (lagging, healthy, t, mut p) = lag_setup(sb, "lagged").await;

    // The replica keeps replicating but cannot commit: its SQL thread waits on the lock, so
    // Seconds_Behind_Master grows by a second every second.
    let mut r = common::connect(&common::root_url(lagging.port)).await;
    r.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .expect("lock the replica");
    p.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .expect("insert on the primary");
    let written = Instant::now();
    reads_until(
        &mut strict,
        Duration::from_secs(6),
        40,
        "replica 2 more than 1 s behind: 40 reads in a row on server 3 (keyspace limit 1 s)",
        |id| id == healthy,
    )
    .await;
    println!(
        "replica {} behind: the 1 s keyspace limit moved reads off it {:?} after the write",
        lagging.server_id,
        written.elapsed()
    );
    let mut seen = BTreeMap::new();
    for _ in 0..60 {
        *seen
            .entry(sid(&mut lenient).await.expect("read"))
            .or_insert(0u32) += 1;
    }
    let lag_now = written.elapsed();
    println!("lenient proxy (limit 10 s) with the replica {lag_now:?} behind: {seen:?}");
    assert!(
        lag_now < Duration::from_secs(8),
        "the check came too late to mean anything"
    );
    assert!(
        seen.contains_key(&lagging.server_id),
        "with the default 10 s limit the replica {lag_now:?} behind still serves reads: {seen:?}"
    );
    for _ in 0..100 {
        assert_eq!(
            sid(&mut strict).await.expect("read"),
            healthy,
            "the 1 s keyspace limit keeps reads off the lagging replica"
        );
    }

    r.query_drop("UNLOCK TABLES").await.expect("unlock");
    let back = reads_until(
        &mut strict,
        Duration::from_secs(10),
        1,
        "replica 2 caught up: reads on it again",
        |id| id == lagging.server_id,
    )
    .await;
    println!("replica caught up: reads back on it after {back:?}");
}

/// The replica a lag test holds back, the other one's server id, a fresh table both replicas
/// have, and a connection to the primary.
async fn lag_setup(
    sb: &common::Sandbox,
    prefix: &str,
) -> (
    shardgate::sandbox::ServerInfo,
    u32,
    String,
    mysql_async::Conn,
) {
    let lagging = sb.replicas()[0].clone();
    let healthy = sb.replicas()[1].server_id;
    let t = common::unique(prefix);
    let mut p = common::connect(&common::app_url(sb.primary().port, "app")).await;
    p.query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .expect("create");
    common::wait_replicated(sb).await;
    (lagging, healthy, t, p)
}
