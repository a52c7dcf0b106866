//! Multiplexing with the read/write split on, against a sandbox of its own (primary and two
//! replicas): many clients share few backend connections, yet each keeps its own session state
//! (user variables, sql_mode, time_zone, character set, LAST_INSERT_ID, FOUND_ROWS, temporary
//! tables, named locks, prepared statements). Backend connections are counted where they
//! exist: in each server's PROCESSLIST, read as root.
//!
//! The tests that count connections take `COUNTING` for writing (nothing else runs meanwhile,
//! since PROCESSLIST sees every proxy's connections); the others take it for reading.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use tokio::task::JoinSet;

use common::Sandbox;

static COUNTING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster(2))
}

/// Split on, eventual consistency, `max_connections` per backend server.
fn config(max_connections: usize) -> String {
    format!(
        r#"
[proxy]
workers = 2

[pool]
max_connections = {max_connections}

[routing]
read_write_split = true
consistency = "eventual"
gtid_wait_timeout_ms = 100
max_replica_lag = 10.0

[monitor]
user = "root"
password = ""
interval_ms = 500
connect_timeout_ms = 1000
"#
    )
}

async fn root_primary() -> Conn {
    common::connect(&common::root_url(sandbox().primary().port)).await
}

/// Creates `app.name` on the primary (as root) and waits until the replicas have it.
async fn table(name: &str, ddl: &str) {
    let mut p = root_primary().await;
    p.query_drop(format!("CREATE TABLE app.{name} {ddl}"))
        .await
        .expect("create table");
    common::wait_replicated(sandbox()).await;
}

/// Root connections to every server of the sandbox, with their server ids.
async fn root_conns() -> Vec<(u32, Conn)> {
    let mut out = Vec::new();
    for s in &sandbox().cluster.servers {
        out.push((
            s.server_id,
            common::connect(&common::root_url(s.port)).await,
        ));
    }
    out
}

/// Application connections per server id, now.
async fn app_connections(conns: &mut [(u32, Conn)]) -> BTreeMap<u32, u64> {
    let mut by = BTreeMap::new();
    for (id, c) in conns.iter_mut() {
        by.insert(*id, common::app_connections_on(c).await);
    }
    by
}

/// Waits up to 10 s until no server has application connections (proxies of earlier tests
/// gone), so what is counted next belongs to this test.
async fn no_app_connections() {
    let mut conns = root_conns().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let by = app_connections(&mut conns).await;
        if by.values().all(|n| *n == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "application connections left from earlier tests: {by:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts application connections on every server every 50 ms until stopped; the peak per
/// server id.
struct Watcher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<BTreeMap<u32, u64>>,
}

impl Watcher {
    async fn start() -> Watcher {
        let mut conns = root_conns().await;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = BTreeMap::new();
            loop {
                for (id, c) in conns.iter_mut() {
                    // A failed count (a busy server timing out, say) is reported and retried
                    // on a new connection; it does not end the watch.
                    match common::try_app_connections_on(c).await {
                        Ok(n) => {
                            let p = peak.entry(*id).or_insert(0);
                            *p = (*p).max(n);
                        }
                        Err(e) => {
                            println!("watcher: counting on server {id} failed: {e}");
                            let port = sandbox()
                                .cluster
                                .servers
                                .iter()
                                .find(|s| s.server_id == *id)
                                .map(|s| s.port)
                                .expect("server");
                            let opts =
                                mysql_async::Opts::from_url(&common::root_url(port)).expect("url");
                            if let Ok(n) = Conn::new(opts).await {
                                *c = n;
                            }
                        }
                    }
                }
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Watcher { stop, task }
    }

    async fn peak(self) -> BTreeMap<u32, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("watcher")
    }
}

/// A distinct sql_mode per client: the bits of `k` pick flags (0 is the empty mode).
fn sql_mode_for(k: usize) -> String {
    const FLAGS: [&str; 8] = [
        "REAL_AS_FLOAT",
        "PIPES_AS_CONCAT",
        "ANSI_QUOTES",
        "IGNORE_SPACE",
        "NO_UNSIGNED_SUBTRACTION",
        "NO_DIR_IN_CREATE",
        "STRICT_ALL_TABLES",
        "ERROR_FOR_DIVISION_BY_ZERO",
    ];
    FLAGS
        .iter()
        .enumerate()
        .filter(|(i, _)| k & (1 << i) != 0)
        .map(|(_, f)| *f)
        .collect::<Vec<_>>()
        .join(",")
}

/// A distinct time zone offset per client (7-minute steps from -11:40).
fn time_zone_for(k: usize) -> String {
    let m = k as i64 * 7 - 700;
    let sign = if m < 0 { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60)
}

/// `@v, @@sql_mode, @@time_zone, @@character_set_client`.
type StateRow = (Option<i64>, String, String, String);
/// `client, n, s, nul, b` of the prepared inserts' table.
type PsRow = (i64, i64, String, Option<i64>, Vec<u8>);

const CLIENTS: usize = 200;
const STATEMENTS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_keep_their_session_state_on_twenty_connections() {
    let _only = COUNTING.write().await;
    let sb = sandbox();
    let (_proxy, port) = sb.proxy(&config(20));
    let t = common::unique("t_mux");
    table(
        &t,
        "(id INT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL, v INT NOT NULL)",
    )
    .await;

    // What the server itself reports for each client's settings.
    let mut p = root_primary().await;
    let mut expected = Vec::new();
    for k in 0..CLIENTS {
        p.query_drop(format!(
            "SET SESSION sql_mode = '{}', time_zone = '{}'",
            sql_mode_for(k),
            time_zone_for(k)
        ))
        .await
        .expect("set on the primary");
        let canon: Option<(String, String)> = p
            .query_first("SELECT @@sql_mode, @@time_zone")
            .await
            .expect("read back");
        let (mode, tz) = canon.expect("row");
        let cs = if k.is_multiple_of(2) {
            "utf8mb4"
        } else {
            "latin1"
        };
        expected.push((mode, tz, cs.to_string()));
    }
    drop(p);
    no_app_connections().await;
    let watcher = Watcher::start().await;

    let started = Instant::now();
    let statements = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    for (k, (mode, tz, cs)) in expected.into_iter().enumerate() {
        let url = common::app_url(port, "app");
        let (t, statements) = (t.clone(), statements.clone());
        clients.spawn(async move {
            let mut errors: Vec<String> = Vec::new();
            let mut writes = [0u32; 2];
            let mut c = match Conn::new(mysql_async::Opts::from_url(&url).expect("url")).await {
                Ok(c) => c,
                Err(e) => return (k, vec![format!("connect: {e}")], writes),
            };
            let setup = [
                format!("SET SESSION sql_mode = '{}'", sql_mode_for(k)),
                format!("SET time_zone = '{}'", time_zone_for(k)),
                format!("SET @v = {k}"),
                format!("SET NAMES {cs}"),
            ];
            for s in &setup {
                if let Err(e) = c.query_drop(s).await {
                    return (k, vec![format!("{s}: {e}")], writes);
                }
            }
            let mut v = k as i64;
            for j in 0..STATEMENTS - setup.len() {
                if errors.len() >= 5 {
                    break;
                }
                statements.fetch_add(1, Ordering::Relaxed);
                if j == 500 {
                    v = k as i64 + 1000;
                    if let Err(e) = c.query_drop(format!("SET @v = {v}")).await {
                        errors.push(format!("statement {j}: SET @v: {e}"));
                    }
                } else if j % 10 == 3 {
                    let sql = format!("INSERT INTO {t} (client, v) VALUES ({k}, @v)");
                    match c.query_drop(&sql).await {
                        Ok(()) => writes[usize::from(j > 500)] += 1,
                        Err(e) => errors.push(format!("statement {j}: {sql}: {e}")),
                    }
                } else {
                    let got: mysql_async::Result<Option<StateRow>> = c
                        .query_first("SELECT @v, @@sql_mode, @@time_zone, @@character_set_client")
                        .await;
                    match got {
                        Ok(Some(row)) => {
                            let want = (Some(v), mode.clone(), tz.clone(), cs.clone());
                            if row != want {
                                errors.push(format!(
                                    "statement {j}: got {row:?}, this client has {want:?}"
                                ));
                            }
                        }
                        Ok(None) => errors.push(format!("statement {j}: no row")),
                        Err(e) => errors.push(format!("statement {j}: {e}")),
                    }
                }
            }
            let _ = c.disconnect().await;
            (k, errors, writes)
        });
    }
    let mut errors = Vec::new();
    let mut writes = BTreeMap::new();
    while let Some(r) = clients.join_next().await {
        let (k, e, w) = r.expect("client task");
        errors.extend(e.into_iter().map(|e| format!("client {k}: {e}")));
        writes.insert(k, w);
    }
    let took = started.elapsed();
    let peak = watcher.peak().await;
    let n = statements.load(Ordering::Relaxed);
    println!(
        "{CLIENTS} clients, {n} statements in {took:?} ({:.0}/s); peak application \
         connections per server id: {peak:?}; {} errors",
        n as f64 / took.as_secs_f64(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} clients saw wrong session state or errors; first ones:\n{}",
        errors.len(),
        errors
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        peak.values().any(|n| *n > 0),
        "the watcher saw connections: {peak:?}"
    );
    for (id, n) in &peak {
        assert!(
            *n <= 20,
            "server {id} had {n} application connections (pool max 20): {peak:?}"
        );
    }
    // Every write carried its client's @v, whichever backend connection it ran on.
    let mut p = root_primary().await;
    let rows: Vec<(i64, i64, i64, i64)> = p
        .query(format!(
            "SELECT client, COUNT(*), CAST(SUM(v = client) AS SIGNED), \
             CAST(SUM(v = client + 1000) AS SIGNED) FROM app.{t} GROUP BY client ORDER BY client"
        ))
        .await
        .expect("rows");
    let want: Vec<(i64, i64, i64, i64)> = writes
        .iter()
        .map(|(k, [a, b])| (*k as i64, i64::from(a + b), i64::from(*a), i64::from(*b)))
        .collect();
    assert_eq!(
        rows, want,
        "(client, rows, rows with v = @v before/after the change)"
    );
}

/// One of the 2,000: logs in, sets its character set, runs one statement, and is kept idle.
async fn one_idle_client(k: i64, url: &str) -> Result<Conn, String> {
    let mut c = Conn::new(mysql_async::Opts::from_url(url).expect("url"))
        .await
        .map_err(|e| format!("client {k}: connect: {e}"))?;
    c.query_drop("SET NAMES utf8mb4")
        .await
        .map_err(|e| format!("client {k}: SET NAMES: {e}"))?;
    let one: Option<i64> = c
        .query_first(format!("SELECT {k} + 1"))
        .await
        .map_err(|e| format!("client {k}: SELECT: {e}"))?;
    if one != Some(k + 1) {
        return Err(format!("client {k}: SELECT returned {one:?}"));
    }
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_clients_need_few_backend_connections() {
    let _only = COUNTING.write().await;
    let limit = common::raise_fd_limit();
    println!("open files limit: {limit}");
    assert!(
        limit > 2_300,
        "2,000 clients need more than {limit} open files in this process"
    );
    let sb = sandbox();
    no_app_connections().await;
    // Default pool: up to 1,000 connections per server, 64 idle.
    let (_proxy, port) = sb.proxy(&config(1000));
    let watcher = Watcher::start().await;
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(50));
    // After the first failure the rest are skipped: a proxy that does not multiplex would
    // otherwise make each of them wait out its pool timeout.
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for k in 0..2000 {
        let (gate, url, failed) = (gate.clone(), common::app_url(port, "app"), failed.clone());
        tasks.spawn(async move {
            let _g = gate.acquire().await.expect("semaphore");
            if failed.load(Ordering::Relaxed) {
                return Err(None);
            }
            let r = one_idle_client(k, &url).await;
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            r.map_err(Some)
        });
    }
    let mut conns = Vec::new();
    let mut errors = Vec::new();
    let mut skipped = 0;
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(c) => conns.push(c),
            Err(Some(e)) => errors.push(e),
            Err(None) => skipped += 1,
        }
    }
    let connected = started.elapsed();
    assert!(
        errors.is_empty(),
        "{} of 2,000 clients failed ({skipped} more not tried, {} connected); first: {:#?}",
        errors.len(),
        conns.len(),
        &errors[..errors.len().min(10)]
    );
    let peak = watcher.peak().await;

    // All 2,000 idle now: the pools shrink to their idle bound.
    let mut roots = root_conns().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let idle = loop {
        let by = app_connections(&mut roots).await;
        if by.values().all(|n| *n < 100) || Instant::now() > deadline {
            break by;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "2,000 clients connected in {connected:?}; peak application connections per server \
         id while connecting: {peak:?}; with all of them idle: {idle:?}"
    );
    for (id, n) in &idle {
        assert!(
            *n < 100,
            "server {id} holds {n} application connections for 2,000 idle clients"
        );
    }

    // Every idle session still works and kept its character set.
    let mut tasks = JoinSet::new();
    for (k, mut c) in conns.into_iter().enumerate() {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _g = gate.acquire().await.expect("semaphore");
            let cs: mysql_async::Result<Option<String>> =
                c.query_first("SELECT @@character_set_client").await;
            let _ = c.disconnect().await;
            match cs {
                Ok(Some(cs)) if cs == "utf8mb4" => Ok(()),
                other => Err(format!("client {k}: {other:?}")),
            }
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("task") {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "{} idle clients failed afterwards; first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
}

/// Runs `n` clients doing `rounds` small statements each (reads, user variables, session
/// variables), to move backend connections between sessions while a test watches one.
fn churn(port: u16, n: usize, rounds: usize) -> JoinSet<Result<(), String>> {
    let mut set = JoinSet::new();
    for k in 0..n {
        let url = common::app_url(port, "app");
        set.spawn(async move {
            let mut c = Conn::new(mysql_async::Opts::from_url(&url).expect("url"))
                .await
                .map_err(|e| format!("churn {k}: {e}"))?;
            for i in 0..rounds {
                let sql = match i % 3 {
                    0 => format!("SET @churn = {i}"),
                    1 => "SELECT @@server_id".to_string(),
                    _ => format!("SET SESSION wait_timeout = {}", 1000 + i),
                };
                c.query_drop(&sql)
                    .await
                    .map_err(|e| format!("churn {k}: {sql}: {e}"))?;
            }
            let _ = c.disconnect().await;
            Ok(())
        });
    }
    set
}

async fn finish(mut set: JoinSet<Result<(), String>>) {
    while let Some(r) = set.join_next().await {
        r.expect("task").expect("churn client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_insert_id_is_each_clients_own() {
    let _shared = COUNTING.read().await;
    let (_proxy, port) = sandbox().proxy(&config(3));
    let t = common::unique("mux_lid");
    table(
        &t,
        "(id INT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL)",
    )
    .await;
    let mut set = JoinSet::new();
    for k in 0..10i64 {
        let (url, t) = (common::app_url(port, "app"), t.clone());
        set.spawn(async move {
            let mut c = common::connect(&url).await;
            let mut mine = Vec::new();
            for i in 0..30u32 {
                // A few ms each, so that the 32 clients' statements overlap.
                c.exec_drop(
                    format!("INSERT INTO {t} (client) VALUES (? + SLEEP(0.005))"),
                    (k,),
                )
                .await
                .expect("insert");
                let id = c.last_insert_id().expect("OK packet's insert id");
                if i.is_multiple_of(2) {
                    c.query_drop("SELECT @@server_id").await.expect("read");
                }
                let lid: Option<u64> = c
                    .query_first("SELECT LAST_INSERT_ID()")
                    .await
                    .expect("last_insert_id");
                assert_eq!(
                    lid,
                    Some(id),
                    "client {k}, insert {i}: LAST_INSERT_ID() is not this client's id"
                );
                mine.push((id as i64, k));
            }
            mine
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.extend(r.expect("client"));
    }
    ids.sort();
    let mut p = root_primary().await;
    let rows: Vec<(i64, i64)> = p
        .query(format!("SELECT id, client FROM app.{t} ORDER BY id"))
        .await
        .expect("rows");
    assert_eq!(rows, ids, "each id a client was given is its own row");
}

/// A new table `app.<prefix>_...` (id, client, n) holding `k + extra` rows of client k for
/// clients 0 to 9, replicated; its name.
async fn rows_of_ten_clients(prefix: &str, extra: u64) -> String {
    let t = common::unique(prefix);
    let mut p = root_primary().await;
    p.query_drop(format!(
        "CREATE TABLE app.{t} (id INT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL, \
         n INT NOT NULL DEFAULT 0)"
    ))
    .await
    .expect("create");
    for k in 0..10 {
        for _ in 0..k + extra {
            p.query_drop(format!("INSERT INTO app.{t} (client) VALUES ({k})"))
                .await
                .expect("insert");
        }
    }
    common::wait_replicated(sandbox()).await;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_rows_belongs_to_the_select_before_it() {
    let _shared = COUNTING.read().await;
    let (_proxy, port) = sandbox().proxy(&config(3));
    let t = rows_of_ten_clients("mux_fr", 3).await;
    let mut set = JoinSet::new();
    for k in 0..10u64 {
        let (url, t) = (common::app_url(port, "app"), t.clone());
        set.spawn(async move {
            let mut c = common::connect(&url).await;
            for i in 0..20 {
                let first: Option<i64> = c
                    .query_first(format!(
                        "SELECT SQL_CALC_FOUND_ROWS id FROM {t} WHERE client = {k} \
                         ORDER BY id LIMIT 1"
                    ))
                    .await
                    .expect("select");
                assert!(first.is_some(), "client {k}: its rows");
                let found: Option<u64> = c
                    .query_first("SELECT FOUND_ROWS()")
                    .await
                    .expect("found_rows");
                assert_eq!(
                    found,
                    Some(k + 3),
                    "client {k}, round {i}: FOUND_ROWS() after its own LIMIT 1 select"
                );
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_belongs_to_the_write_before_it() {
    let _shared = COUNTING.read().await;
    let (_proxy, port) = sandbox().proxy(&config(3));
    let t = rows_of_ten_clients("mux_rc", 1).await;
    // 10 clients on 3 connections: each UPDATE touches the client's own k + 1 rows.
    let mut set = JoinSet::new();
    for k in 0..10u64 {
        let (url, t) = (common::app_url(port, "app"), t.clone());
        set.spawn(async move {
            let mut c = common::connect(&url).await;
            for i in 0..20 {
                c.query_drop(format!("UPDATE {t} SET n = n + 1 WHERE client = {k}"))
                    .await
                    .expect("update");
                let count: Option<i64> = c
                    .query_first("SELECT ROW_COUNT()")
                    .await
                    .expect("row_count");
                assert_eq!(
                    count,
                    Some(k as i64 + 1),
                    "client {k}, round {i}: ROW_COUNT() after its own UPDATE"
                );
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_stays_with_its_session() {
    let _shared = COUNTING.read().await;
    let (_proxy, port) = sandbox().proxy(&config(3));
    let url = common::app_url(port, "app");
    let tmp = common::unique("tmp_mux");
    let mut a = common::connect(&url).await;
    a.query_drop(format!("CREATE TEMPORARY TABLE {tmp} (x INT)"))
        .await
        .expect("create temporary table");
    a.query_drop(format!("INSERT INTO {tmp} VALUES (1), (2)"))
        .await
        .expect("insert");
    let churn = churn(port, 8, 60);
    for i in 0..30 {
        let n: Option<i64> = a
            .query_first(format!("SELECT COUNT(*) FROM {tmp}"))
            .await
            .unwrap_or_else(|e| panic!("read {i} of the temporary table: {e}"));
        assert_eq!(n, Some(2), "read {i}");
        a.query_drop(format!("SET @a_round = {i}"))
            .await
            .expect("set");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    finish(churn).await;
    let mut b = common::connect(&url).await;
    for _ in 0..10 {
        let other = b.query_drop(format!("SELECT COUNT(*) FROM {tmp}")).await;
        match other {
            Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1146, "{e}"),
            other => panic!("another session sees the temporary table: {other:?}"),
        }
    }
    a.query_drop(format!("INSERT INTO {tmp} VALUES (3)"))
        .await
        .expect("insert");
    let n: Option<i64> = a
        .query_first(format!("SELECT COUNT(*) FROM {tmp}"))
        .await
        .expect("count");
    assert_eq!(n, Some(3));
    a.query_drop(format!("DROP TEMPORARY TABLE {tmp}"))
        .await
        .expect("drop");
    assert!(a.query_drop(format!("SELECT * FROM {tmp}")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_lock_is_held_by_its_session_until_released() {
    let _shared = COUNTING.read().await;
    let (_proxy, port) = sandbox().proxy(&config(3));
    let url = common::app_url(port, "app");
    let lk = common::unique("lk");
    let mut a = common::connect(&url).await;
    let mut b = common::connect(&url).await;
    let got: Option<i64> = a
        .query_first(format!("SELECT GET_LOCK('{lk}', 0)"))
        .await
        .expect("get_lock");
    assert_eq!(got, Some(1), "A takes the lock");
    let churn = churn(port, 8, 60);
    for i in 0..20 {
        let free: Option<i64> = b
            .query_first(format!("SELECT IS_FREE_LOCK('{lk}')"))
            .await
            .expect("is_free_lock");
        assert_eq!(free, Some(0), "round {i}: B sees A's lock held");
        a.query_drop("SELECT @@server_id").await.expect("A reads");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other: Option<i64> = b
        .query_first(format!("SELECT GET_LOCK('{lk}', 0)"))
        .await
        .expect("get_lock by B");
    assert_eq!(other, Some(0), "B cannot take A's lock");
    finish(churn).await;
    let released: Option<Option<i64>> = a
        .query_first(format!("SELECT RELEASE_LOCK('{lk}')"))
        .await
        .expect("release_lock");
    assert_eq!(released, Some(Some(1)), "A releases the lock it holds");
    let free: Option<i64> = b
        .query_first(format!("SELECT IS_FREE_LOCK('{lk}')"))
        .await
        .expect("is_free_lock");
    assert_eq!(free, Some(1), "free once A released it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_of_100_clients_on_a_pool_of_20() {
    let _shared = COUNTING.read().await;
    let (_proxy, port) = sandbox().proxy(&config(20));
    let t = common::unique("mux_ps");
    table(
        &t,
        "(id INT AUTO_INCREMENT PRIMARY KEY, client INT, n BIGINT, s VARCHAR(100), \
         nul INT NULL, b BLOB)",
    )
    .await;
    let blob = |k: usize, j: usize| -> Vec<u8> {
        let len = (k * 37 + j * 101) % 3000 + 1;
        (0..len).map(|i| ((i + k) % 256) as u8).collect()
    };
    let text = |k: usize, j: usize| format!("c{k}-{j}-é'\"\\");
    let mut set = JoinSet::new();
    for k in 0..100usize {
        let (url, t) = (common::app_url(port, "app"), t.clone());
        set.spawn(async move {
            let mut c = common::connect(&url).await;
            let mut servers = BTreeMap::new();
            let own = format!("SELECT ? * {k}, CONCAT(?, '-{k}'), ? IS NULL, LENGTH(?)");
            let insert = format!("INSERT INTO {t} (client, n, s, nul, b) VALUES (?, ?, ?, ?, ?)");
            for j in 0..20 {
                let n = (k * 1000 + j) as i64;
                let (s, b) = (text(k, j), blob(k, j));
                type Shared = (i64, String, Option<i64>, Vec<u8>, u32);
                let row: Option<Shared> = c
                    .exec_first(
                        "SELECT ?, ?, ?, ?, @@server_id",
                        (n, s.clone(), Value::NULL, b.clone()),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("client {k}: shared statement: {e}"));
                let (rn, rs, rnull, rb, sid) = row.expect("row");
                assert_eq!((rn, &rs, rnull, &rb), (n, &s, None, &b), "client {k}, {j}");
                *servers.entry(sid).or_insert(0u32) += 1;
                let row: Option<(i64, String, i64, i64)> = c
                    .exec_first(&own, (n, s.clone(), Option::<i64>::None, b.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("client {k}: own statement: {e}"));
                assert_eq!(
                    row,
                    Some((n * k as i64, format!("{s}-{k}"), 1, b.len() as i64)),
                    "client {k}, {j}"
                );
                if j.is_multiple_of(4) {
                    c.exec_drop(&insert, (k as i64, n, s, Option::<i64>::None, b))
                        .await
                        .unwrap_or_else(|e| panic!("client {k}: insert: {e}"));
                    assert_eq!(c.affected_rows(), 1);
                }
            }
            servers
        });
    }
    let mut servers = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        for (id, n) in r.expect("client") {
            *servers.entry(id).or_insert(0u32) += n;
        }
    }
    println!("shared prepared read by server id: {servers:?}");
    assert_eq!(servers.get(&1), None, "prepared reads stay off the primary");
    let mut p = root_primary().await;
    let rows: Vec<PsRow> = p
        .query(format!(
            "SELECT client, n, s, nul, b FROM app.{t} ORDER BY client, n"
        ))
        .await
        .expect("rows");
    let mut want = Vec::new();
    for k in 0..100usize {
        for j in (0..20).step_by(4) {
            want.push((
                k as i64,
                (k * 1000 + j) as i64,
                text(k, j),
                None,
                blob(k, j),
            ));
        }
    }
    assert_eq!(rows.len(), want.len(), "one row per prepared insert");
    assert!(rows == want, "rows written by prepared inserts differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_does_not_leak_to_the_next_client_of_a_connection() {
    let _shared = COUNTING.read().await;
    // One connection per server: every client's statements share it.
    let (_proxy, port) = sandbox().proxy(&config(1));
    let t = common::unique("mux_leak");
    table(&t, "(id INT PRIMARY KEY)").await;
    let mut p = root_primary().await;
    let defaults: Option<(String, String)> = p
        .query_first("SELECT @@GLOBAL.sql_mode, @@GLOBAL.time_zone")
        .await
        .expect("defaults");
    let (mode, tz) = defaults.expect("row");
    let url = common::app_url(port, "app");
    let mut a = common::connect(&url).await;
    let mut b = common::connect(&url).await;
    for sql in [
        "SET autocommit = 0",
        "SET @leak = 'a'",
        "SET SESSION sql_mode = 'ANSI_QUOTES'",
        "SET time_zone = '+05:00'",
        "SELECT 1",
        "COMMIT",
    ] {
        a.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("A: {sql}: {e}"));
    }
    for round in 0..3 {
        b.query_drop(format!("INSERT INTO {t} VALUES ({round})"))
            .await
            .expect("B inserts");
        let committed: Option<i64> = p
            .query_first(format!("SELECT COUNT(*) FROM app.{t} WHERE id = {round}"))
            .await
            .expect("count");
        assert_eq!(
            committed,
            Some(1),
            "B's INSERT is committed (A's autocommit=0 did not leak to B)"
        );
        type Seen = (Option<String>, String, String, i64);
        for target in ["/* shardgate:primary */", ""] {
            let seen: Option<Seen> = b
                .query_first(format!(
                    "{target} SELECT @leak, @@sql_mode, @@time_zone, @@autocommit"
                ))
                .await
                .expect("B reads its session");
            assert_eq!(
                seen,
                Some((None, mode.clone(), tz.clone(), 1)),
                "round {round} {target}: B sees none of A's session state"
            );
        }
        let seen: Option<(Option<String>, String, String, i64)> = a
            .query_first("SELECT @leak, @@sql_mode, @@time_zone, @@autocommit")
            .await
            .expect("A reads its session");
        assert_eq!(
            seen,
            Some((Some("a".into()), "ANSI_QUOTES".into(), "+05:00".into(), 0)),
            "round {round}: A keeps its own session state"
        );
        a.query_drop("COMMIT")
            .await
            .expect("A ends its transaction");
    }
}

/// Client A opens a transaction and writes; meanwhile ten other clients write in autocommit
/// mode through the same small pool; A rolls back. None of the others' rows may be lost (they
/// would be if a statement of theirs had run inside A's transaction). `hinted`: A also sends a
/// replica-hinted read inside its transaction.
async fn others_never_join_an_open_transaction(hinted: bool) {
    let (_proxy, port) = sandbox().proxy(&config(2));
    let t = common::unique("mux_tx");
    table(&t, "(id INT PRIMARY KEY, who VARCHAR(10))").await;
    let url = common::app_url(port, "app");
    let mut a = common::connect(&url).await;
    a.query_drop("BEGIN").await.expect("begin");
    a.query_drop(format!("INSERT INTO {t} VALUES (0, 'a')"))
        .await
        .expect("A inserts");
    if hinted {
        a.query_drop("/* shardgate:replica */ SELECT @@server_id")
            .await
            .expect("hinted read");
    }
    let mut others = JoinSet::new();
    for k in 1..=10 {
        let (url, t) = (url.clone(), t.clone());
        others.spawn(async move {
            let mut c = common::connect(&url).await;
            for i in 0..5 {
                c.query_drop(format!("INSERT INTO {t} VALUES ({}, 'other')", k * 100 + i))
                    .await
                    .expect("other client inserts");
            }
        });
    }
    while let Some(r) = others.join_next().await {
        r.expect("other client");
    }
    let own: Option<(i64, i64)> = a
        .query_first(format!(
            "SELECT @@in_transaction, COUNT(*) FROM {t} WHERE who = 'a'"
        ))
        .await
        .expect("A reads");
    a.query_drop("ROLLBACK").await.expect("rollback");
    let mut p = root_primary().await;
    let rows: Option<(i64, i64)> = p
        .query_first(format!(
            "SELECT CAST(SUM(who = 'a') AS SIGNED), CAST(SUM(who = 'other') AS SIGNED) \
             FROM app.{t}"
        ))
        .await
        .expect("count");
    assert_eq!(
        rows,
        Some((0, 50)),
        "(A's rows, others' rows) after A's ROLLBACK: others' autocommit writes must all \
         be kept"
    );
    assert_eq!(
        own,
        Some((1, 1)),
        "A's transaction stayed open with its row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clients_never_join_an_open_transaction() {
    let _shared = COUNTING.read().await;
    others_never_join_an_open_transaction(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clients_never_join_a_transaction_that_made_a_hinted_read() {
    let _shared = COUNTING.read().await;
    others_never_join_an_open_transaction(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_variables_assigned_by_reads_stay_with_their_session() {
    let _shared = COUNTING.read().await;
    let (_proxy, port) = sandbox().proxy(&config(3));
    let url = common::app_url(port, "app");
    let mut set = JoinSet::new();
    for k in 0..6i64 {
        let url = url.clone();
        set.spawn(async move {
            let mut c = common::connect(&url).await;
            // Assignments inside reads, not SET: the proxy must still keep them.
            let a: Option<i64> = c
                .query_first(format!("SELECT @a := {k} * 10 + 1"))
                .await
                .expect("select with assignment");
            assert_eq!(a, Some(k * 10 + 1));
            c.query_drop(format!("SELECT {k} * 10 + 2 INTO @b"))
                .await
                .expect("select into");
            c.query_drop(format!("SET @c = (SELECT {k} * 10 + 3)"))
                .await
                .expect("set from subquery");
            for i in 0..30 {
                let got: Option<(Option<i64>, Option<i64>, Option<i64>)> = c
                    .query_first("SELECT @a, @b, @c")
                    .await
                    .expect("read variables");
                assert_eq!(
                    got,
                    Some((Some(k * 10 + 1), Some(k * 10 + 2), Some(k * 10 + 3))),
                    "client {k}, read {i}"
                );
                c.query_drop("SELECT @@server_id")
                    .await
                    .expect("other read");
            }
        });
    }
    let churn = churn(port, 6, 60);
    while let Some(r) = set.join_next().await {
        r.expect("client");
    }
    finish(churn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_keeps_its_character_set_on_a_shared_connection() {
    let _shared = COUNTING.read().await;
    // One connection per server, so the two clients' statements alternate on it.
    let (_proxy, port) = sandbox().proxy(&config(1));
    let url = common::app_url(port, "app");
    let mut latin = common::connect(&url).await;
    let mut utf8 = common::connect(&url).await;
    latin
        .query_drop("SET NAMES latin1")
        .await
        .expect("set names");
    utf8.query_drop("SET NAMES utf8mb4")
        .await
        .expect("set names");
    // mysql_async sends 'é' as the UTF-8 bytes C3 A9: a latin1 connection reads them as two
    // characters (Ã©), which convert to four UTF-8 bytes; a utf8mb4 connection reads one.
    let sql = "SELECT HEX(CONVERT('é' USING utf8mb4)), @@character_set_connection";
    for i in 0..20 {
        let l: Option<(String, String)> = latin.query_first(sql).await.expect("latin1 client");
        assert_eq!(
            l,
            Some(("C383C2A9".into(), "latin1".into())),
            "latin1 client, round {i}"
        );
        let u: Option<(String, String)> = utf8.query_first(sql).await.expect("utf8mb4 client");
        assert_eq!(
            u,
            Some(("C3A9".into(), "utf8mb4".into())),
            "utf8mb4 client, round {i}"
        );
    }
}

/// The pool does not churn under a load above `max_idle`: a connection given back is kept
/// while it was used within `idle_timeout_ms`, so 32 clients writing through a pool that keeps
/// 2 idle connections open about 32 server connections in all, not one per statement (the
/// primary's `Connections` counter says how many were opened).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_above_max_idle_does_not_churn_connections() {
    let _only = COUNTING.write().await;
    let sb = sandbox();
    let t = common::unique("t_churn");
    table(
        &t,
        "(id INT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL)",
    )
    .await;
    let extra = config(64).replace(
        "[pool]\nmax_connections = 64\n",
        "[pool]\nmax_connections = 64\nmax_idle = 2\nidle_timeout_ms = 10000\n",
    );
    assert!(extra.contains("max_idle = 2"), "{extra}");
    let (_proxy, port) = sb.proxy(&extra);
    let before = primary_status("Connections").await;
    let clients = 32u64;
    // A few ms each, so that the 32 clients' statements overlap.
    let insert = format!("INSERT INTO {t} (client) VALUES (? + SLEEP(0.005))");
    run_clients(port, &insert, clients, 40).await;
    // Our own two root connections count too.
    let grew = primary_status("Connections").await - before;
    println!("server connections opened: {grew}");
    assert!(
        grew <= clients + 8,
        "{grew} server connections opened for {clients} clients ({} statements)",
        clients * 40
    );
}

/// `clients` concurrent clients, each executing the prepared `sql` `per_client` times with its
/// own number as the parameter.
async fn run_clients(port: u16, sql: &str, clients: u64, per_client: u64) {
    let mut set = JoinSet::new();
    for k in 0..clients {
        let (url, sql) = (common::app_url(port, "app"), sql.to_string());
        set.spawn(async move {
            let mut c = common::connect(&url).await;
            for _ in 0..per_client {
                c.exec_drop(&sql, (k,))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            let _ = c.disconnect().await;
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("client");
    }
}

/// The primary's value of a global status counter.
async fn primary_status(name: &str) -> u64 {
    let mut root = root_primary().await;
    let row: Option<(String, u64)> = root
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await
        .expect("status");
    let _ = root.disconnect().await;
    row.unwrap_or_else(|| panic!("no status {name}")).1
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_preparing_a_known_text_are_answered_by_the_proxy() {
    let _only = COUNTING.write().await;
    let sb = sandbox();
    let t = common::unique("t_prep");
    table(
        &t,
        "(id INT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL)",
    )
    .await;
    let (_proxy, port) = sb.proxy(&config(8));
    let before = primary_status("Com_stmt_prepare").await;
    let clients = 16;
    for k in 0..clients {
        // A new client each time, as an application's pool opening connections: its prepare
        // is a text the proxy's pooled connection already holds.
        let mut c = common::connect(&common::app_url(port, "app")).await;
        c.exec_drop(format!("INSERT INTO {t} (client) VALUES (?)"), (k,))
            .await
            .expect("insert");
        let _ = c.disconnect().await;
    }
    let prepared = primary_status("Com_stmt_prepare").await - before;
    println!("server prepares for {clients} client prepares: {prepared}");
    assert!(
        prepared <= 3,
        "{prepared} server prepares for {clients} clients preparing one text"
    );
    let mut root = root_primary().await;
    let n: Option<u64> = root
        .query_first(format!("SELECT COUNT(DISTINCT client) FROM app.{t}"))
        .await
        .expect("count");
    assert_eq!(n, Some(clients));
}

#[tokio::test(flavor = "multi_thread")]
async fn ddl_through_the_proxy_renews_kept_prepare_replies() {
    let _shared = COUNTING.read().await;
    let sb = sandbox();
    let t = common::unique("t_prep_ddl");
    table(&t, "(id INT PRIMARY KEY, a INT)").await;
    let (_proxy, port) = sb.proxy(&config(8));
    let url = common::app_url(port, "app");
    let sql = format!("SELECT * FROM {t} WHERE id = ?");
    let columns = |sql: String| {
        let url = url.clone();
        async move {
            let mut c = common::connect(&url).await;
            let stmt = c.prep(sql).await.expect("prepare");
            let n = stmt.columns().len();
            let _ = c.disconnect().await;
            n
        }
    };
    assert_eq!(columns(sql.clone()).await, 2);
    // Answered from the kept reply.
    assert_eq!(columns(sql.clone()).await, 2);
    let mut c = common::connect(&url).await;
    c.query_drop(format!("ALTER TABLE {t} ADD COLUMN b INT"))
        .await
        .expect("alter");
    common::wait_replicated(sb).await;
    c.exec_drop(format!("INSERT INTO {t} VALUES (?, ?, ?)"), (1, 2, 3))
        .await
        .expect("insert");
    let _ = c.disconnect().await;
    assert_eq!(columns(sql.clone()).await, 3, "a stale reply was given");
    // Errors are never kept: each client gets the server's.
    for _ in 0..2 {
        let mut c = common::connect(&url).await;
        let e = c
            .prep(format!("SELECT nope FROM {t} WHERE id = ?"))
            .await
            .expect_err("unknown column");
        assert!(e.to_string().contains("1054"), "{e}");
        let _ = c.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_pool_hands_connections_over_without_reopening_them() {
    let _only = COUNTING.write().await;
    let sb = sandbox();
    let t = common::unique("t_full");
    table(
        &t,
        "(id INT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL)",
    )
    .await;
    // Far more clients than connections: most statements wait for one given back.
    let (_proxy, port) = sb.proxy(&config(4));
    let before = primary_status("Connections").await;
    let clients = 64u64;
    let per_client = 50;
    let insert = format!("INSERT INTO {t} (client) VALUES (?)");
    run_clients(port, &insert, clients, per_client).await;
    // Our own two root connections count too.
    let grew = primary_status("Connections").await - before;
    println!("server connections opened with max_connections = 4: {grew}");
    assert!(
        grew <= 4 + 4,
        "{grew} server connections opened by a pool of 4 for {clients} clients"
    );
    let mut root = root_primary().await;
    let n: Option<u64> = root
        .query_first(format!("SELECT COUNT(*) FROM app.{t}"))
        .await
        .expect("count");
    assert_eq!(n, Some(clients * per_client));
}
