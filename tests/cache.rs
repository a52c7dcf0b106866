//! The result cache against a real cluster: hits leave the servers alone (their `Com_select`
//! does not move), writes through the proxy are never followed by a stale read, entries
//! expire, identical concurrent misses run once, and transactions bypass the cache.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::Conn;

use common::Sandbox;

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster_with(&["--shards", "1", "--replicas", "1"]))
}

/// The monitor stays quiet (its `SELECT 1` would count as a select) and reads go to the
/// replica without read-your-writes probes, so `Com_select` counts only the cache's misses.
const QUIET: &str = "[monitor]\ninterval_ms = 600000\n[routing]\nconsistency = \"eventual\"\n";

fn proxy_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        sandbox().keep_proxy(&format!(
            "{QUIET}[[cache.rules]]\nkeyspace = \"app\"\nttl_ms = 60000\n"
        ))
    })
}

async fn proxy() -> Conn {
    common::connect(&common::app_url(proxy_port(), "app")).await
}

/// `Com_select` counts every server's selects: the tests of this binary take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads `Com_select` (and prepared executes) summed over every server of the sandbox, on
/// connections opened once (a driver's own selects at login would count).
struct Selects(Vec<Conn>);

impl Selects {
    async fn open() -> Selects {
        let mut conns = Vec::new();
        for s in &sandbox().cluster.servers {
            conns.push(common::connect(&common::root_url(s.port)).await);
        }
        Selects(conns)
    }

    async fn now(&mut self) -> u64 {
        let mut total = 0;
        for c in &mut self.0 {
            let rows: Vec<(String, u64)> = c
                .query(
                    "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select', 'Com_stmt_execute')",
                )
                .await
                .expect("status");
            total += rows.iter().map(|(_, v)| v).sum::<u64>();
        }
        total
    }
}

async fn table(c: &mut Conn, prefix: &str, rows: usize) -> String {
    let t = common::unique(prefix);
    c.query_drop(format!(
        "CREATE TABLE {t} (id INT PRIMARY KEY, v VARCHAR(40), n INT)"
    ))
    .await
    .expect("create");
    let values: Vec<String> = (1..=rows).map(|i| format!("({i}, 'v{i}', {i})")).collect();
    c.query_drop(format!("INSERT INTO {t} VALUES {}", values.join(", ")))
        .await
        .expect("rows");
    common::wait_replicated(sandbox()).await;
    t
}

#[tokio::test]
async fn a_repeated_read_is_served_from_the_cache() {
    let _turn = SERIAL.lock().await;
    let mut selects = Selects::open().await;
    let mut c = proxy().await;
    let t = table(&mut c, "hit", 10).await;
    let sql = format!("SELECT v FROM {t} WHERE id = 3");
    let first: Option<String> = c.query_first(&sql).await.expect("miss");
    // (Connected first: a driver's login queries are selects too.)
    let mut other = proxy().await;
    let before = selects.now().await;
    for _ in 0..50 {
        let again: Option<String> = c.query_first(&sql).await.expect("hit");
        assert_eq!(again, first);
    }
    // Another client, same user and database: the same entry.
    let theirs: Option<String> = other.query_first(&sql).await.expect("hit");
    assert_eq!(theirs.as_deref(), Some("v3"));
    assert_eq!(
        selects.now().await,
        before,
        "51 reads, no select on any server"
    );
    // Prepared: the first execute fills, the rest hit.
    let stmt = format!("SELECT v, n FROM {t} WHERE id = ?");
    let p1: Option<(String, i64)> = c.exec_first(&stmt, (4,)).await.expect("execute");
    let after_fill = selects.now().await;
    for _ in 0..20 {
        let p: Option<(String, i64)> = c.exec_first(&stmt, (4,)).await.expect("execute");
        assert_eq!(p, p1);
    }
    let after_hits = selects.now().await;
    assert_eq!(after_hits, after_fill, "20 executes served from the cache");
    let other_value: Option<(String, i64)> = c.exec_first(&stmt, (5,)).await.expect("execute");
    assert_eq!(other_value, Some(("v5".to_string(), 5)));
    assert!(
        selects.now().await > after_hits,
        "a new parameter value ran"
    );
}

#[tokio::test]
async fn a_write_through_the_proxy_is_seen_by_the_next_read_every_time() {
    let _turn = SERIAL.lock().await;
    let mut c = proxy().await;
    let t = table(&mut c, "inval", 4).await;
    let read = format!("SELECT n FROM {t} WHERE id = 1");
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    // Readers keep the entry hot (and refill it) the whole time.
    let mut readers = Vec::new();
    for _ in 0..6 {
        let (stop, reads, read) = (stop.clone(), reads.clone(), read.clone());
        readers.push(tokio::spawn(async move {
            let mut r = proxy().await;
            while !stop.load(Ordering::Relaxed) {
                let _: Option<i64> = r.query_first(&read).await.expect("reader");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut stale = 0;
    for i in 0..1000i64 {
        c.query_drop(format!("UPDATE {t} SET n = {i} WHERE id = 1"))
            .await
            .expect("update");
        let seen: Option<i64> = c.query_first(&read).await.expect("read");
        if seen != Some(i) {
            stale += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader task");
    }
    println!(
        "1000 update-then-read pairs with {} concurrent reads: {stale} stale",
        reads.load(Ordering::Relaxed)
    );
    assert_eq!(stale, 0);
    assert!(
        reads.load(Ordering::Relaxed) > 1000,
        "the readers ran alongside"
    );
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let _turn = SERIAL.lock().await;
    let mut selects = Selects::open().await;
    let (_p, port) = sandbox().proxy(&format!("{QUIET}[[cache.rules]]\nttl_ms = 400\n"));
    let mut c = common::connect(&common::app_url(port, "app")).await;
    let t = table(&mut c, "ttl", 3).await;
    let sql = format!("SELECT v FROM {t} WHERE id = 2");
    let _: Option<String> = c.query_first(&sql).await.expect("fill");
    let before = selects.now().await;
    let _: Option<String> = c.query_first(&sql).await.expect("hit");
    assert_eq!(selects.now().await, before, "served from the cache");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let _: Option<String> = c.query_first(&sql).await.expect("expired");
    assert_eq!(selects.now().await, before + 1, "ran again after the TTL");
}

#[tokio::test]
async fn concurrent_identical_misses_run_once() {
    let _turn = SERIAL.lock().await;
    let mut selects = Selects::open().await;
    let mut c = proxy().await;
    let t = table(&mut c, "flight", 1500).await;
    // Slow enough (a self-join) that all clients ask while the first still runs.
    let sql = format!("SELECT COUNT(*) FROM {t} a JOIN {t} b ON a.n < b.n");
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(proxy().await);
    }
    let before = selects.now().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(clients.len()));
    let mut tasks = Vec::new();
    for mut client in clients {
        let (barrier, sql) = (barrier.clone(), sql.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let n: Option<i64> = client.query_first(&sql).await.expect("count");
            n
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let want = Some(1500 * 1499 / 2);
    assert!(answers.iter().all(|a| *a == want), "{answers:?}");
    assert_eq!(
        selects.now().await - before,
        1,
        "100 identical misses sent one query"
    );
}

#[tokio::test]
async fn reads_inside_a_transaction_never_come_from_the_cache() {
    let _turn = SERIAL.lock().await;
    let mut selects = Selects::open().await;
    let mut c = proxy().await;
    let t = table(&mut c, "txn", 3).await;
    let sql = format!("SELECT v FROM {t} WHERE id = 1");
    let cached: Option<String> = c.query_first(&sql).await.expect("fill");
    assert_eq!(cached.as_deref(), Some("v1"));
    c.query_drop("BEGIN").await.expect("begin");
    c.query_drop(format!("UPDATE {t} SET v = 'mine' WHERE id = 1"))
        .await
        .expect("update in the transaction");
    let before = selects.now().await;
    let inside: Option<String> = c.query_first(&sql).await.expect("read inside");
    assert_eq!(inside.as_deref(), Some("mine"), "its own uncommitted write");
    assert_eq!(selects.now().await, before + 1, "ran on the server");
    // Another session still gets the committed value (from the cache or a server).
    let mut other = proxy().await;
    let outside: Option<String> = other.query_first(&sql).await.expect("outside");
    assert_eq!(outside.as_deref(), Some("v1"));
    c.query_drop("ROLLBACK").await.expect("rollback");
    // Non-deterministic reads and locking reads are not cached either.
    for sql in [
        format!("SELECT v, NOW() FROM {t} WHERE id = 2"),
        format!("SELECT v, RAND() FROM {t} WHERE id = 2"),
        format!("SELECT v FROM {t} WHERE id = 2 FOR UPDATE"),
    ] {
        let _: Vec<mysql_async::Row> = c.query(&sql).await.expect("first");
        let before = selects.now().await;
        let _: Vec<mysql_async::Row> = c.query(&sql).await.expect("second");
        assert_eq!(selects.now().await, before + 1, "{sql} ran again");
    }
}

/// libmysqlclient (sysbench) sends parameter types with the first execute only: when that
/// execute is a hit, the proxy must still remember them for the misses that follow.
#[tokio::test]
async fn sysbench_point_selects_through_the_cache_run_without_errors() {
    let _turn = SERIAL.lock().await;
    let sysbench = |command: &str, extra: &[&str]| -> String {
        let mut cmd = std::process::Command::new("sysbench");
        cmd.arg("oltp_point_select")
            .arg("--db-driver=mysql")
            .arg("--mysql-host=127.0.0.1")
            .arg(format!("--mysql-port={}", proxy_port()))
            .arg(format!("--mysql-user={}", common::USER))
            .arg(format!("--mysql-password={}", common::PASSWORD))
            .arg("--mysql-db=app")
            .arg("--tables=1")
            .arg("--table-size=2000")
            .args(extra)
            .arg(command);
        let (out, killed) = common::run_child(&mut cmd, Vec::new(), Duration::from_secs(120));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !killed && out.status.success(),
            "sysbench {command}:\n{text}"
        );
        text
    };
    sysbench("cleanup", &[]);
    sysbench("prepare", &[]);
    common::wait_replicated(sandbox()).await;
    let mut selects = Selects::open().await;
    let before = selects.now().await;
    let report = sysbench(
        "run",
        &[
            "--threads=4",
            "--time=5",
            "--rand-type=pareto",
            "--report-interval=0",
        ],
    );
    let ran = selects.now().await - before;
    let queries: u64 = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("queries:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("queries in the report");
    println!("{queries} point selects, {ran} reached a server");
    assert!(
        report.contains("ignored errors:                      0"),
        "{report}"
    );
    assert!(queries > 100, "{report}");
    assert!(ran * 2 < queries, "most were hits: {ran} of {queries} ran");
    sysbench("cleanup", &[]);
}
