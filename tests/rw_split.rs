//! Read/write split against a sandbox of its own (one primary, server id 1, and two replicas,
//! server ids 2 and 3): where each kind of statement runs, proved by `@@server_id` or, for
//! writes, by what the primary itself holds afterwards. Transactions, `autocommit=0`, read-only
//! transactions, routing hints, prepared statements, the spread over replicas, and the two
//! consistency modes. Destructive tests (lag, killed replicas) live in `rw_replica_loss.rs`.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, TxOpts};

use common::Sandbox;

const PRIMARY: u32 = 1;
const REPLICAS: [u32; 2] = [2, 3];

/// The routing sections every proxy of this binary shares; `consistency` and
/// `read_write_split` vary.
fn routing(split: bool, consistency: &str) -> String {
    format!(
        r#"
[proxy]
workers = 2

[routing]
read_write_split = {split}
consistency = "{consistency}"
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

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster(2))
}

/// The proxy with the split on and eventual consistency, shared by most tests.
fn eventual_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| sandbox().keep_proxy(&routing(true, "eventual")))
}

fn ryw_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| sandbox().keep_proxy(&routing(true, "read_your_writes")))
}

fn split_off_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| sandbox().keep_proxy(&routing(false, "eventual")))
}

async fn proxy(port: u16) -> Conn {
    common::connect(&common::app_url(port, "app")).await
}

async fn primary_direct() -> Conn {
    common::connect(&common::app_url(sandbox().primary().port, "app")).await
}

/// `SELECT`-like statement whose first column is a server id.
async fn sid(c: &mut Conn, sql: &str) -> u32 {
    c.query_first::<u32, _>(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Waits (up to 10 s: the monitor's first checks) until plain reads through `c` have reached
/// every replica, so the assertions that follow do not race the proxy's start-up.
async fn warm_up(c: &mut Conn) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = BTreeMap::new();
    while !REPLICAS.iter().all(|r| seen.contains_key(r)) {
        assert!(
            Instant::now() < deadline,
            "plain reads did not reach both replicas within 10 s of the proxy starting \
             (server ids seen: {seen:?})"
        );
        *seen
            .entry(sid(c, "SELECT @@server_id").await)
            .or_insert(0u32) += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `name` on the primary directly with `ddl` (column list) and waits until both
/// replicas have it.
async fn table(name: &str, ddl: &str) {
    let mut p = primary_direct().await;
    p.query_drop(format!("CREATE TABLE {name} {ddl}"))
        .await
        .expect("create table on the primary");
    common::wait_replicated(sandbox()).await;
}

#[tokio::test]
async fn plain_reads_go_to_replicas_locking_reads_and_writes_to_the_primary() {
    let mut c = proxy(eventual_port()).await;
    warm_up(&mut c).await;
    let t = common::unique("rw_route");
    table(
        &t,
        "(id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(20), sid INT)",
    )
    .await;
    let mut p = primary_direct().await;
    p.query_drop(format!("INSERT INTO {t} (tag, sid) VALUES ('seed', 0)"))
        .await
        .expect("seed");
    common::wait_replicated(sandbox()).await;

    for sql in [
        "SELECT @@server_id".to_string(),
        "select @@server_id".to_string(),
        format!("SELECT @@server_id FROM {t} WHERE tag = 'seed'"),
        format!("(SELECT @@server_id FROM {t} LIMIT 1)"),
        "SELECT @@server_id /* FOR UPDATE in a comment */".to_string(),
    ] {
        for _ in 0..10 {
            let id = sid(&mut c, &sql).await;
            assert!(
                REPLICAS.contains(&id),
                "plain read `{sql}` ran on server {id}, not a replica"
            );
        }
    }

    for sql in [
        format!("SELECT @@server_id FROM {t} LIMIT 1 FOR UPDATE"),
        format!("SELECT @@server_id FROM {t} LIMIT 1 LOCK IN SHARE MODE"),
        "SELECT @@server_id FROM DUAL FOR UPDATE".to_string(),
        "select @@server_id from dual lock in share mode".to_string(),
    ] {
        for _ in 0..5 {
            assert_eq!(
                sid(&mut c, &sql).await,
                PRIMARY,
                "locking read `{sql}` must run on the primary"
            );
        }
    }

    let lock = common::unique("rw_lock");
    let got: Option<(i64, u32)> = c
        .query_first(format!("SELECT GET_LOCK('{lock}', 1), @@server_id"))
        .await
        .expect("get_lock");
    assert_eq!(got, Some((1, PRIMARY)), "GET_LOCK must run on the primary");
    let released: Option<Option<i64>> = c
        .query_first(format!("SELECT RELEASE_LOCK('{lock}')"))
        .await
        .expect("release_lock");
    println!("RELEASE_LOCK after GET_LOCK through the proxy: {released:?}");

    // Writes of every shape: where they ran shows in the rows the primary holds afterwards.
    c.query_drop(format!(
        "INSERT INTO {t} (tag, sid) VALUES ('values', @@server_id)"
    ))
    .await
    .expect("insert values");
    c.query_drop(format!(
        "INSERT INTO {t} (tag, sid) SELECT 'select', @@server_id"
    ))
    .await
    .expect("insert select");
    c.query_drop(format!(
        "UPDATE {t} SET sid = @@server_id * 10 WHERE tag = 'seed'"
    ))
    .await
    .expect("update");
    c.query_drop(format!(
        "REPLACE INTO {t} (id, tag, sid) VALUES (100, 'replace', @@server_id)"
    ))
    .await
    .expect("replace");
    c.query_drop(format!(
        "INSERT INTO {t} (tag, sid) VALUES ('doomed', 0); \
         DELETE FROM {t} WHERE tag = 'doomed' AND @@server_id = {PRIMARY}"
    ))
    .await
    .expect("multi-statement insert + delete");
    let t2 = common::unique("rw_ddl");
    c.query_drop(format!("CREATE TABLE {t2} (sid INT)"))
        .await
        .expect("create table through the proxy");
    c.query_drop(format!("INSERT INTO {t2} SELECT @@server_id"))
        .await
        .expect("insert into new table");

    let rows: Vec<(String, i64)> = p
        .query(format!("SELECT tag, sid FROM {t} ORDER BY id"))
        .await
        .expect("rows on the primary");
    assert_eq!(
        rows,
        vec![
            ("seed".to_string(), 10),
            ("values".to_string(), 1),
            ("select".to_string(), 1),
            ("replace".to_string(), 1),
        ],
        "every write ran on the primary (a write run on a replica is missing here or \
         carries its server id)"
    );
    let ddl: Vec<i64> = p
        .query(format!("SELECT sid FROM {t2}"))
        .await
        .expect("the table created through the proxy exists on the primary");
    assert_eq!(ddl, vec![1]);
}

#[tokio::test]
async fn transactions_run_on_the_primary_and_see_their_own_writes() {
    let mut c = proxy(eventual_port()).await;
    warm_up(&mut c).await;
    let t = common::unique("rw_tx");
    table(&t, "(id INT PRIMARY KEY, v INT)").await;

    for begin in ["BEGIN", "START TRANSACTION", "begin work"] {
        c.query_drop(begin).await.expect("begin");
        assert_eq!(sid(&mut c, "SELECT @@server_id").await, PRIMARY, "{begin}");
        c.query_drop(format!("DELETE FROM {t}"))
            .await
            .expect("delete");
        c.query_drop(format!("INSERT INTO {t} VALUES (1, 11), (2, 22)"))
            .await
            .expect("insert");
        let seen: Option<(i64, u32)> = c
            .query_first(format!("SELECT SUM(v), @@server_id FROM {t}"))
            .await
            .expect("read own writes");
        assert_eq!(
            seen,
            Some((33, PRIMARY)),
            "after `{begin}` the transaction's read must run on the primary and see its \
             uncommitted rows"
        );
        for _ in 0..5 {
            assert_eq!(sid(&mut c, "SELECT @@server_id").await, PRIMARY, "{begin}");
        }
        let in_tx: Option<i64> = c.query_first("SELECT @@in_transaction").await.expect("q");
        assert_eq!(in_tx, Some(1), "still inside the transaction");
        c.query_drop("ROLLBACK").await.expect("rollback");
        // Back to normal: plain reads leave the primary at once.
        for _ in 0..10 {
            let id = sid(&mut c, "SELECT @@server_id").await;
            assert!(
                REPLICAS.contains(&id),
                "read after ROLLBACK of `{begin}` ran on {id}"
            );
        }
    }

    c.query_drop("START TRANSACTION").await.expect("begin");
    c.query_drop(format!("INSERT INTO {t} VALUES (3, 33)"))
        .await
        .expect("insert");
    assert_eq!(sid(&mut c, "SELECT @@server_id").await, PRIMARY);
    c.query_drop("COMMIT").await.expect("commit");
    let mut p = primary_direct().await;
    let rows: Vec<(i64, i64)> = p
        .query(format!("SELECT id, v FROM {t} ORDER BY id"))
        .await
        .expect("primary rows");
    assert_eq!(
        rows,
        vec![(3, 33)],
        "rolled back rows gone, committed row kept"
    );
    for _ in 0..10 {
        let id = sid(&mut c, "SELECT @@server_id").await;
        assert!(REPLICAS.contains(&id), "read after COMMIT ran on {id}");
    }

    // mysql_async's own transaction API (START TRANSACTION with options, then COMMIT).
    let mut tx = c
        .start_transaction(TxOpts::default())
        .await
        .expect("start_transaction");
    let inside: Option<(u32, i64)> = tx
        .query_first(format!("SELECT @@server_id, COUNT(*) FROM {t}"))
        .await
        .expect("read in tx");
    assert_eq!(inside, Some((PRIMARY, 1)));
    tx.query_drop(format!("INSERT INTO {t} VALUES (4, 44)"))
        .await
        .expect("insert in tx");
    let inside: Option<(u32, i64)> = tx
        .query_first(format!("SELECT @@server_id, COUNT(*) FROM {t}"))
        .await
        .expect("read in tx");
    assert_eq!(inside, Some((PRIMARY, 2)), "own uncommitted insert visible");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn autocommit_off_keeps_every_statement_on_the_primary() {
    let mut c = proxy(eventual_port()).await;
    warm_up(&mut c).await;
    let t = common::unique("rw_ac");
    table(&t, "(id INT PRIMARY KEY)").await;

    c.query_drop("SET autocommit = 0")
        .await
        .expect("autocommit off");
    for _ in 0..10 {
        assert_eq!(
            sid(&mut c, "SELECT @@server_id").await,
            PRIMARY,
            "autocommit=0: reads belong to the open transaction"
        );
    }
    c.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .expect("insert");
    let n: Option<(i64, u32)> = c
        .query_first(format!("SELECT COUNT(*), @@server_id FROM {t}"))
        .await
        .expect("count");
    assert_eq!(
        n,
        Some((1, PRIMARY)),
        "uncommitted row visible to its session"
    );
    c.query_drop("COMMIT").await.expect("commit");
    for _ in 0..10 {
        assert_eq!(
            sid(&mut c, "SELECT @@server_id").await,
            PRIMARY,
            "autocommit=0 after COMMIT: the next statement opens a new transaction"
        );
    }
    c.query_drop("SET autocommit = 1")
        .await
        .expect("autocommit on");
    for _ in 0..10 {
        let id = sid(&mut c, "SELECT @@server_id").await;
        assert!(
            REPLICAS.contains(&id),
            "read after SET autocommit=1 ran on {id}"
        );
    }
    // The other spelling.
    c.query_drop("SET @@session.autocommit = OFF")
        .await
        .expect("autocommit off");
    assert_eq!(sid(&mut c, "SELECT @@server_id").await, PRIMARY);
    c.query_drop("ROLLBACK").await.expect("rollback");
    c.query_drop("SET autocommit = ON")
        .await
        .expect("autocommit on");
    let id = sid(&mut c, "SELECT @@server_id").await;
    assert!(
        REPLICAS.contains(&id),
        "read after autocommit=ON ran on {id}"
    );
}

#[tokio::test]
async fn read_only_transactions_stay_on_one_replica() {
    let mut c = proxy(eventual_port()).await;
    warm_up(&mut c).await;
    let t = common::unique("rw_ro");
    table(&t, "(id INT PRIMARY KEY)").await;
    let mut used = BTreeMap::new();
    for round in 0..10 {
        c.query_drop("START TRANSACTION READ ONLY")
            .await
            .expect("start read only");
        let first = sid(&mut c, "SELECT @@server_id").await;
        assert!(
            REPLICAS.contains(&first),
            "round {round}: a read-only transaction ran on {first}, not a replica"
        );
        *used.entry(first).or_insert(0) += 1;
        for _ in 0..10 {
            let id = sid(
                &mut c,
                &format!("SELECT @@server_id FROM {t} UNION SELECT @@server_id"),
            )
            .await;
            assert_eq!(id, first, "round {round}: one transaction, one server");
        }
        let state: Option<(i64, u32)> = c
            .query_first("SELECT @@in_transaction, @@server_id")
            .await
            .expect("in_transaction");
        assert_eq!(
            state,
            Some((1, first)),
            "round {round}: the replica really holds the open transaction"
        );
        c.query_drop("COMMIT").await.expect("commit");
        for _ in 0..3 {
            let id = sid(&mut c, "SELECT @@server_id").await;
            assert!(REPLICAS.contains(&id), "read after COMMIT ran on {id}");
        }
        c.query_drop(format!("INSERT INTO {t} VALUES ({round})"))
            .await
            .expect("write after the read-only transaction");
    }
    println!("read-only transactions per replica: {used:?}");
    let mut p = primary_direct().await;
    let n: Option<i64> = p
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .expect("count");
    assert_eq!(
        n,
        Some(10),
        "writes after each read-only transaction reached the primary"
    );
}

#[tokio::test]
async fn hints_override_routing() {
    let mut c = proxy(eventual_port()).await;
    warm_up(&mut c).await;
    for _ in 0..10 {
        assert_eq!(
            sid(&mut c, "/* shardgate:primary */ SELECT @@server_id").await,
            PRIMARY,
            "primary hint on a plain read"
        );
    }
    for _ in 0..10 {
        let id = sid(
            &mut c,
            "/* shardgate:replica */ SELECT @@server_id FROM DUAL FOR UPDATE",
        )
        .await;
        assert!(
            REPLICAS.contains(&id),
            "replica hint on a locking read ran on {id}"
        );
    }
    let t = common::unique("rw_hint");
    table(&t, "(id INT PRIMARY KEY)").await;
    c.query_drop("BEGIN").await.expect("begin");
    assert_eq!(sid(&mut c, "SELECT @@server_id").await, PRIMARY);
    c.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .expect("insert in the transaction");
    for _ in 0..5 {
        let id = sid(&mut c, "/* shardgate:replica */ SELECT @@server_id").await;
        assert!(
            REPLICAS.contains(&id),
            "replica hint inside a transaction ran on {id}"
        );
    }
    assert_eq!(
        sid(&mut c, "SELECT @@server_id").await,
        PRIMARY,
        "after a replica-hinted read, the transaction's next statement stays on the primary"
    );
    let state: Option<(i64, i64)> = c
        .query_first(format!("SELECT @@in_transaction, COUNT(*) FROM {t}"))
        .await
        .expect("q");
    assert_eq!(
        state,
        Some((1, 1)),
        "the transaction and its uncommitted row survive the hinted reads"
    );
    c.query_drop("ROLLBACK").await.expect("rollback");
    let mut p = primary_direct().await;
    let n: Option<i64> = p
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .expect("count");
    assert_eq!(n, Some(0), "ROLLBACK undid the transaction's insert");
}

#[tokio::test]
async fn reads_spread_over_both_replicas() {
    let mut c = proxy(eventual_port()).await;
    warm_up(&mut c).await;
    let n = 300;
    let mut by = BTreeMap::new();
    for _ in 0..n {
        *by.entry(sid(&mut c, "SELECT @@server_id").await)
            .or_insert(0u32) += 1;
    }
    println!("{n} reads from one client: {by:?}");
    assert_eq!(by.get(&PRIMARY), None, "no plain read on the primary");
    for r in REPLICAS {
        let got = by.get(&r).copied().unwrap_or(0);
        assert!(
            got * 5 >= n,
            "replica {r} served {got} of {n} reads (< 20%): {by:?}"
        );
    }
}

#[tokio::test]
async fn prepared_reads_use_replicas_and_prepared_writes_the_primary() {
    let mut c = proxy(eventual_port()).await;
    warm_up(&mut c).await;
    let t = common::unique("rw_ps");
    table(
        &t,
        "(id INT AUTO_INCREMENT PRIMARY KEY, tag VARCHAR(20), sid INT)",
    )
    .await;
    let read = c
        .prep("SELECT @@server_id, ? + 1")
        .await
        .expect("prepare read");
    let mut by = BTreeMap::new();
    for i in 0..200i64 {
        let row: Option<(u32, i64)> = c.exec_first(&read, (i,)).await.expect("exec read");
        let (id, v) = row.expect("row");
        assert_eq!(v, i + 1, "parameter bound");
        *by.entry(id).or_insert(0u32) += 1;
    }
    println!("200 executions of a prepared read: {by:?}");
    assert_eq!(
        by.get(&PRIMARY),
        None,
        "prepared reads stay off the primary"
    );
    for r in REPLICAS {
        assert!(
            by.get(&r).copied().unwrap_or(0) > 0,
            "prepared reads never reached replica {r}: {by:?}"
        );
    }
    let write = c
        .prep(format!(
            "INSERT INTO {t} (tag, sid) VALUES (?, @@server_id)"
        ))
        .await
        .expect("prepare insert");
    for i in 0..20 {
        c.exec_drop(&write, (format!("ps{i}"),))
            .await
            .expect("exec insert");
        assert_eq!(c.affected_rows(), 1);
    }
    let locking = c
        .prep("SELECT @@server_id FROM DUAL FOR UPDATE")
        .await
        .expect("prepare locking read");
    for _ in 0..5 {
        let id: Option<u32> = c.exec_first(&locking, ()).await.expect("exec");
        assert_eq!(id, Some(PRIMARY), "prepared locking read on the primary");
    }
    c.close(read).await.expect("close");
    let mut p = primary_direct().await;
    let rows: Vec<(i64, i64)> = p
        .query(format!("SELECT COUNT(*), SUM(sid = {PRIMARY}) FROM {t}"))
        .await
        .expect("rows on the primary");
    assert_eq!(
        rows,
        vec![(20, 20)],
        "every prepared insert ran on the primary"
    );
}

/// `INSERT (i, ...)` then at once `SELECT ... WHERE id = i` on the same connection, `n` times:
/// returns (misses, reads by server id). Panics on a wrong value or an error.
async fn write_then_read(port: u16, n: i64) -> (u32, BTreeMap<u32, u32>) {
    let mut c = proxy(port).await;
    warm_up(&mut c).await;
    let t = common::unique("rw_ryw");
    table(&t, "(id INT PRIMARY KEY, v BIGINT)").await;
    let mut misses = 0;
    let mut by = BTreeMap::new();
    // Where each read ran, as runs of (server id or 0 for a miss, count): printed to show
    // patterns (a stretch on the primary, say).
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for i in 0..n {
        c.query_drop(format!("INSERT INTO {t} (id, v) VALUES ({i}, {})", i * 7))
            .await
            .unwrap_or_else(|e| panic!("insert {i}: {e}"));
        let row: Option<(i64, u32)> = c
            .query_first(format!("SELECT v, @@server_id FROM {t} WHERE id = {i}"))
            .await
            .unwrap_or_else(|e| panic!("select {i}: {e}"));
        let at = match row {
            Some((v, id)) => {
                assert_eq!(v, i * 7, "row {i} read back with a wrong value");
                *by.entry(id).or_insert(0) += 1;
                id
            }
            None => {
                misses += 1;
                0
            }
        };
        match runs.last_mut() {
            Some((id, k)) if *id == at => *k += 1,
            _ => runs.push((at, 1)),
        }
    }
    let primary_runs: Vec<_> = runs.iter().filter(|(id, _)| *id == PRIMARY).collect();
    println!(
        "port {port}: {} runs; runs on the primary (server, length): {primary_runs:?}",
        runs.len()
    );
    (misses, by)
}

#[tokio::test]
async fn read_your_writes_never_misses_and_still_uses_replicas() {
    let n = 1000;
    let (misses, by) = write_then_read(ryw_port(), n).await;
    let on_replicas: u32 = REPLICAS.iter().filter_map(|r| by.get(r)).sum();
    println!(
        "read_your_writes: {n} write-then-read pairs, {misses} misses, reads by server {by:?}, \
         {:.1}% on replicas",
        100.0 * f64::from(on_replicas) / n as f64
    );
    assert_eq!(
        misses, 0,
        "read_your_writes missed a row it had just written"
    );
    assert!(
        f64::from(on_replicas) >= 0.01 * n as f64,
        "read_your_writes sent (almost) every read after a write to the primary: {by:?}"
    );
}

#[tokio::test]
async fn eventual_reads_right_after_writes_go_to_replicas() {
    let n = 1000;
    let (misses, by) = write_then_read(eventual_port(), n).await;
    println!(
        "eventual: {n} write-then-read pairs, {misses} misses ({:.1}%), reads by server {by:?}",
        100.0 * f64::from(misses) / n as f64
    );
    assert_eq!(
        by.get(&PRIMARY),
        None,
        "eventual consistency: reads after writes still go to replicas"
    );
}

#[tokio::test]
async fn split_off_sends_everything_to_the_primary() {
    let mut c = proxy(split_off_port()).await;
    // Give the monitor time to have found the replicas healthy: they must still be unused.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..50 {
        assert_eq!(
            sid(&mut c, "SELECT @@server_id").await,
            PRIMARY,
            "read_write_split = false: every read on the primary"
        );
    }
    let ps: Option<u32> = c
        .exec_first("SELECT @@server_id + ?", (0,))
        .await
        .expect("prepared");
    assert_eq!(ps, Some(PRIMARY));
}
