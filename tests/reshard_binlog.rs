//! The catch-up stream's binlog reader against real sandbox MariaDB servers: row changes with
//! their GTIDs in commit order, starting positions, concurrent readers, and its refusals.

mod common;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use shardgate::reshard::binlog::{
    gtid_binlog_pos, BinlogError, BinlogReader, ChangeKind, GtidPos, ReaderConfig, Record, TrxGtid,
    Value,
};

/// One primary without replicas, shared by the tests that only write to their own schema.
fn shared() -> &'static common::Sandbox {
    static SB: OnceLock<common::Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster(0))
}

fn config(sb: &common::Sandbox, server_id: u32) -> ReaderConfig {
    let p = sb.primary();
    ReaderConfig::new(&p.host, p.port, "root", "", server_id)
}

async fn root(sb: &common::Sandbox) -> Conn {
    common::connect(&common::root_url(sb.primary().port)).await
}

async fn position(conn: &mut Conn) -> GtidPos {
    gtid_binlog_pos(conn)
        .await
        .expect("read gtid_binlog_pos")
        .expect("parsable position")
}

/// Runs `sql` as one transaction and returns its GTID.
async fn trx(conn: &mut Conn, sql: &str) -> TrxGtid {
    conn.query_drop(sql).await.expect(sql);
    last_gtid(conn).await
}

/// The GTID of this session's last transaction.
async fn last_gtid(conn: &mut Conn) -> TrxGtid {
    let g: String = conn
        .query_first("SELECT @@last_gtid")
        .await
        .expect("last_gtid")
        .expect("a row");
    TrxGtid::parse(&g).expect("one gtid")
}

/// Records of schema `db` (changes and statements) and commits of `ours`, until the commit of
/// `last`; other tests write to the same server meanwhile. A change's transaction is never in
/// the reader's position before its commit is read.
async fn read_until(
    reader: &mut BinlogReader,
    db: &str,
    ours: &[TrxGtid],
    last: TrxGtid,
) -> Vec<Record> {
    read_until_with(reader, db, ours, last, false).await
}

/// `read_until`, optionally cancelling `next` over and over: a call is dropped after it was
/// polled `budget` times without an answer (budget 1, doubled after each drop, back to 1 after
/// each record), so calls die at every await point along the way.
async fn read_until_with(
    reader: &mut BinlogReader,
    db: &str,
    ours: &[TrxGtid],
    last: TrxGtid,
    cancel: bool,
) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut budget = 1u32;
    let mut cancelled = 0u32;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "records within 30 s"
        );
        let r = if cancel {
            match polled(reader, budget).await {
                Some(r) => {
                    budget = 1;
                    r
                }
                None => {
                    cancelled += 1;
                    budget = budget.saturating_mul(2);
                    continue;
                }
            }
        } else {
            tokio::time::timeout_at(deadline, reader.next())
                .await
                .expect("records within 30 s")
        }
        .expect("a record");
        let keep = match &r {
            Record::Change(c) => {
                let pos = GtidPos::parse(&c.gtid.to_string()).expect("gtid");
                assert!(
                    !reader.position().covers(&pos),
                    "{} counted before its commit",
                    c.gtid
                );
                c.table.schema == db
            }
            Record::Statement { schema, .. } => schema == db,
            Record::Commit { gtid, .. } => ours.contains(gtid),
        };
        let done = commit_of(&r) == Some(last);
        if keep {
            out.push(r);
        }
        if done {
            assert!(!cancel || cancelled > 0, "no call was cancelled");
            return out;
        }
    }
}

/// `reader.next()` polled at most `polls` times (yielding to the runtime in between), then
/// dropped: None if it had not finished.
async fn polled(reader: &mut BinlogReader, polls: u32) -> Option<Result<Record, BinlogError>> {
    let mut call = std::pin::pin!(reader.next());
    for _ in 0..polls {
        let poll = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(r) = poll {
            return Some(r);
        }
        tokio::task::yield_now().await;
    }
    None
}

fn commit_of(r: &Record) -> Option<TrxGtid> {
    match r {
        Record::Commit { gtid, .. } => Some(*gtid),
        _ => None,
    }
}

/// What the test expects of one record: kind, value lists, transaction.
#[derive(Debug, PartialEq)]
enum Want {
    Insert(Vec<Value>, TrxGtid),
    Update(Vec<Value>, Vec<Value>, TrxGtid),
    Delete(Vec<Value>, TrxGtid),
    Commit(TrxGtid),
}

fn simplify(records: Vec<Record>) -> Vec<Want> {
    records
        .into_iter()
        .map(|r| match r {
            Record::Change(c) => match c.kind {
                ChangeKind::Insert { after } => Want::Insert(after, c.gtid),
                ChangeKind::Update { before, after } => Want::Update(before, after, c.gtid),
                ChangeKind::Delete { before } => Want::Delete(before, c.gtid),
            },
            Record::Commit { gtid, timestamp } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs();
                assert!(
                    u64::from(timestamp).abs_diff(now) < 120,
                    "commit time {timestamp} is about now ({now})"
                );
                Want::Commit(gtid)
            }
            Record::Statement { sql, .. } => {
                panic!("unexpected statement {}", String::from_utf8_lossy(&sql))
            }
        })
        .collect()
}

const TABLE: &str = "CREATE TABLE t (id INT PRIMARY KEY, big BIGINT, name VARCHAR(40), \
     data BLOB, maybe INT NULL, at DATETIME, price DECIMAL(10,2), small TINYINT UNSIGNED)";

async fn fresh_schema(conn: &mut Conn, prefix: &str) -> String {
    let db = common::unique(prefix).replace('-', "_");
    conn.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .expect("create db");
    conn.query_drop(format!("USE {db}")).await.expect("use");
    conn.query_drop(TABLE).await.expect("create table");
    db
}

fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

#[tokio::test]
async fn row_changes_arrive_in_commit_order_with_their_gtids() {
    let sb = shared();
    let mut c = root(sb).await;
    let db = fresh_schema(&mut c, "bl_rows").await;
    let from = position(&mut c).await;

    c.exec_drop(
        "INSERT INTO t VALUES (1, 9000000000000, 'héllo', ?, NULL, '2024-02-29 13:45:07', -12.50, 255), \
         (2, -1, '', ?, 7, '1999-12-31 23:59:59', 0.05, 0)",
        (all_bytes(), Vec::<u8>::new()),
    )
    .await
    .expect("insert");
    let g1 = last_gtid(&mut c).await;
    let g2 = trx(
        &mut c,
        "UPDATE t SET name = NULL, price = price * 2, data = 'x' WHERE id = 1",
    )
    .await;
    let g3 = trx(&mut c, "DELETE FROM t WHERE id = 2").await;
    c.query_drop("BEGIN").await.expect("begin");
    c.query_drop("INSERT INTO t (id, big) VALUES (3, 30)")
        .await
        .expect("insert 3");
    c.query_drop("UPDATE t SET big = big + 1 WHERE id = 3")
        .await
        .expect("update 3");
    let g4 = trx(&mut c, "COMMIT").await;
    let ours = [g1, g2, g3, g4];
    assert!(
        g1.seq < g2.seq && g2.seq < g3.seq && g3.seq < g4.seq,
        "{ours:?}"
    );

    let mut reader = BinlogReader::start(&config(sb, 5001), &from)
        .await
        .expect("start");
    let records = read_until(&mut reader, &db, &ours, g4).await;
    let mut cancelled = BinlogReader::start(&config(sb, 5006), &from)
        .await
        .expect("start");
    let again = read_until_with(&mut cancelled, &db, &ours, g4, true).await;
    assert_eq!(again, records, "cancelled calls lose nothing");
    cancelled.close().await;

    let Record::Change(first) = &records[0] else {
        panic!("{:?}", records[0])
    };
    let names: Vec<&str> = first
        .table
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["id", "big", "name", "data", "maybe", "at", "price", "small"]
    );
    assert_eq!(first.table.table, "t");

    use Value::*;
    let row1 = vec![
        Int(1),
        Int(9_000_000_000_000),
        Bytes("héllo".into()),
        Bytes(all_bytes()),
        NULL,
        Date(2024, 2, 29, 13, 45, 7, 0),
        Bytes(b"-12.50".to_vec()),
        UInt(255),
    ];
    let row2 = vec![
        Int(2),
        Int(-1),
        Bytes(vec![]),
        Bytes(vec![]),
        Int(7),
        Date(1999, 12, 31, 23, 59, 59, 0),
        Bytes(b"0.05".to_vec()),
        UInt(0),
    ];
    let mut row1_after = row1.clone();
    row1_after[2] = NULL;
    row1_after[3] = Bytes(b"x".to_vec());
    row1_after[6] = Bytes(b"-25.00".to_vec());
    let row3 = vec![Int(3), Int(30), NULL, NULL, NULL, NULL, NULL, NULL];
    let mut row3_after = row3.clone();
    row3_after[1] = Int(31);

    let want = vec![
        Want::Insert(row1.clone(), g1),
        Want::Insert(row2.clone(), g1),
        Want::Commit(g1),
        Want::Update(row1, row1_after, g2),
        Want::Commit(g2),
        Want::Delete(row2, g3),
        Want::Commit(g3),
        Want::Insert(row3.clone(), g4),
        Want::Update(row3, row3_after, g4),
        Want::Commit(g4),
    ];
    assert_eq!(simplify(records), want);
    assert!(
        reader
            .position()
            .covers(&GtidPos::parse(&g4.to_string()).expect("g4")),
        "position {} includes {g4}",
        reader.position()
    );
    reader.close().await;
}

#[tokio::test]
async fn a_mid_position_yields_only_later_transactions() {
    let sb = shared();
    let mut c = root(sb).await;
    let db = fresh_schema(&mut c, "bl_mid").await;
    let before = trx(&mut c, "INSERT INTO t (id) VALUES (1)").await;
    let mid = position(&mut c).await;
    let after = trx(&mut c, "INSERT INTO t (id) VALUES (2)").await;
    // A DDL statement is a transaction of its own, passed on as text.
    let ddl = trx(&mut c, "CREATE TABLE u (id INT PRIMARY KEY)").await;
    let last = trx(&mut c, "DELETE FROM t WHERE id = 1").await;

    let mut reader = BinlogReader::start(&config(sb, 5002), &mid)
        .await
        .expect("start");
    let records = read_until(&mut reader, &db, &[before, after, ddl, last], last).await;
    let Record::Change(c2) = &records[0] else {
        panic!("{records:?}")
    };
    assert_eq!(c2.gtid, after);
    assert_eq!(
        c2.kind,
        ChangeKind::Insert {
            after: vec![
                Value::Int(2),
                Value::NULL,
                Value::NULL,
                Value::NULL,
                Value::NULL,
                Value::NULL,
                Value::NULL,
                Value::NULL
            ]
        }
    );
    assert_eq!(commit_of(&records[1]), Some(after));
    match &records[2] {
        Record::Statement { gtid, sql, .. } => {
            assert_eq!(*gtid, ddl);
            assert!(String::from_utf8_lossy(sql).contains("CREATE TABLE u"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(commit_of(&records[3]), Some(ddl));
    let Record::Change(c4) = &records[4] else {
        panic!("{records:?}")
    };
    assert!(matches!(c4.kind, ChangeKind::Delete { .. }) && c4.gtid == last);
    assert_eq!(commit_of(&records[5]), Some(last));
    assert_eq!(records.len(), 6, "{records:?}");
    assert!(
        !records.iter().any(|r| commit_of(r) == Some(before)),
        "the transaction at the start position is not repeated"
    );
    reader.close().await;
}

#[tokio::test]
async fn two_readers_with_their_own_server_ids_stream_at_once() {
    let sb = shared();
    let mut c = root(sb).await;
    let db = fresh_schema(&mut c, "bl_two").await;
    let from = position(&mut c).await;
    let mut a = BinlogReader::start(&config(sb, 5003), &from)
        .await
        .expect("a");
    let mut b = BinlogReader::start(&config(sb, 5004), &from)
        .await
        .expect("b");
    for id in 1..=2 {
        let g = trx(&mut c, &format!("INSERT INTO t (id) VALUES ({id})")).await;
        for r in [&mut a, &mut b] {
            let got = simplify(read_until(r, &db, &[g], g).await);
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(matches!(&got[0], Want::Insert(v, gg) if v[0] == Value::Int(id) && *gg == g));
        }
    }
    a.close().await;
    b.close().await;
}

/// Every value the stream yields can be written back as it is: rows of many column types
/// (written under a non-UTC time zone), replayed as prepared INSERTs into a copy of the table
/// from a `time_zone = '+00:00'` session, read back identical.
#[tokio::test]
async fn values_replay_into_an_identical_copy() {
    let sb = shared();
    let mut c = root(sb).await;
    let db = common::unique("bl_types").replace('-', "_");
    let columns = "id INT PRIMARY KEY, ts TIMESTAMP(2) NULL, d DATE, tm TIME(3), y YEAR, \
         e ENUM('a','b','c'), st SET('x','y','z'), ub BIGINT UNSIGNED, um MEDIUMINT UNSIGNED, \
         j JSON, f FLOAT, db DOUBLE, bits BIT(10), ch CHAR(5), dec30 DECIMAL(30,10), \
         vb VARBINARY(20), txt TEXT";
    c.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .expect("db");
    c.query_drop(format!("USE {db}")).await.expect("use");
    c.query_drop(format!("CREATE TABLE src ({columns})"))
        .await
        .expect("src");
    c.query_drop(format!("CREATE TABLE copy ({columns})"))
        .await
        .expect("copy");
    let from = position(&mut c).await;
    c.query_drop("SET time_zone = '+05:30'").await.expect("tz");
    c.query_drop(
        "INSERT INTO src VALUES \
         (1, '2024-02-29 13:45:07.25', '2024-02-29', '-838:59:58.5', 2155, 'c', 'x,z', \
          18446744073709551615, 16777215, '{\"k\": [1, \"é\"]}', -1.5, 2.718281828459045, \
          b'1010101011', 'ab', -12345678901234567890.0123456789, x'00ff7f', 'naïve'), \
         (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
          NULL, NULL), \
         (3, '1970-01-01 05:30:01', '1000-01-01', '00:00:00', 1901, 'a', '', 0, 0, '[]', 0, \
          -0.0, b'0', '', 0, x'', '')",
    )
    .await
    .expect("insert");
    let last = last_gtid(&mut c).await;

    let mut reader = BinlogReader::start(&config(sb, 5008), &from)
        .await
        .expect("start");
    let records = read_until(&mut reader, &db, &[last], last).await;
    reader.close().await;
    let mut w = root(sb).await;
    w.query_drop(format!("USE {db}")).await.expect("use");
    w.query_drop("SET time_zone = '+00:00'").await.expect("utc");
    let mut inserted = 0;
    for r in records {
        if let Record::Change(ch) = r {
            let ChangeKind::Insert { after } = ch.kind else {
                panic!("{:?}", ch.kind)
            };
            let marks = vec!["?"; after.len()].join(", ");
            w.exec_drop(format!("INSERT INTO copy VALUES ({marks})"), after)
                .await
                .expect("replay");
            inserted += 1;
        }
    }
    assert_eq!(inserted, 3);
    for tz in ["'+00:00'", "'+05:30'"] {
        c.query_drop(format!("SET time_zone = {tz}"))
            .await
            .expect("tz");
        let a: Vec<mysql_async::Row> = c.query("SELECT * FROM src ORDER BY id").await.expect("src");
        let b: Vec<mysql_async::Row> = c
            .query("SELECT * FROM copy ORDER BY id")
            .await
            .expect("copy");
        let text = |rows: Vec<mysql_async::Row>| -> Vec<Vec<Value>> {
            rows.into_iter().map(|r| r.unwrap()).collect()
        };
        assert_eq!(text(b), text(a), "time zone {tz}");
    }
}

/// The sandbox's replication account may stream but not read information_schema's columns of
/// the tables: without column names in the row events, it is told what to grant.
#[tokio::test]
async fn a_user_without_select_is_told_what_to_grant() {
    let sb = shared();
    let mut c = root(sb).await;
    let db = fresh_schema(&mut c, "bl_repl").await;
    let from = position(&mut c).await;
    let g = trx(&mut c, "INSERT INTO t (id) VALUES (1)").await;
    let p = sb.primary();
    let mut cfg = ReaderConfig::new(&p.host, p.port, "repl", "repl", 5007);
    cfg.schemas = vec![db.clone()];
    let mut reader = BinlogReader::start(&cfg, &from).await.expect("start");
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(15), reader.next())
            .await
            .expect("within 15 s")
        {
            Ok(r) => assert_ne!(commit_of(&r), Some(g), "{g} read without names"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, BinlogError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("grant it SELECT"), "{err}");
}

/// A server id already streaming is taken over by the newcomer: the first reader's stream
/// ends with an error instead of silently stopping.
#[tokio::test]
async fn a_duplicate_server_id_ends_the_older_stream() {
    let sb = shared();
    let mut c = root(sb).await;
    let from = position(&mut c).await;
    let mut old = BinlogReader::start(&config(sb, 5005), &from)
        .await
        .expect("old");
    let _new = BinlogReader::start(&config(sb, 5005), &from)
        .await
        .expect("new");
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(15), old.next())
            .await
            .expect("the old stream ends within 15 s")
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, BinlogError::ConnectionLost { .. }), "{err}");
}

/// Refusals and failures on a server of its own (they purge binlogs, change binlog_format and
/// stop the server process).
#[tokio::test]
async fn refusals_and_dead_streams() {
    let sb = common::start_cluster(0);
    let mut c = root(&sb).await;
    let _db = fresh_schema(&mut c, "bl_own").await;
    trx(&mut c, "INSERT INTO t (id) VALUES (1)").await;
    let old = position(&mut c).await;
    trx(&mut c, "INSERT INTO t (id) VALUES (2)").await;

    // Not ROW: refused with what to change.
    c.query_drop("SET GLOBAL binlog_format = 'MIXED'")
        .await
        .expect("mixed");
    let err = BinlogReader::start(&config(&sb, 6001), &old)
        .await
        .err()
        .expect("refused");
    c.query_drop("SET GLOBAL binlog_format = 'ROW'")
        .await
        .expect("row");
    assert!(matches!(err, BinlogError::NotRowFormat { .. }), "{err}");
    assert!(err.to_string().contains("set binlog_format=ROW"), "{err}");

    // Purged: the transactions after `old` are in a purged file.
    c.query_drop("FLUSH BINARY LOGS").await.expect("flush");
    let (file, _pos): (String, u64) = {
        let row: mysql_async::Row = c
            .query_first("SHOW MASTER STATUS")
            .await
            .expect("status")
            .expect("a row");
        (row.get(0).expect("file"), row.get(1).expect("position"))
    };
    // A file whose transactions InnoDB has not checkpointed yet is kept (with a warning):
    // purge until only the new file is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        c.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
            .await
            .expect("purge");
        let logs: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.expect("logs");
        if logs.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} binlogs left",
            logs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let err = BinlogReader::start(&config(&sb, 6002), &old)
        .await
        .err()
        .expect("purged");
    assert!(matches!(err, BinlogError::Purged { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("purged past the needed position {old}")),
        "{err}"
    );

    // Heartbeats keep an idle stream alive; a stopped server is found dead.
    let mut cfg = config(&sb, 6003);
    cfg.heartbeat = Duration::from_millis(200);
    cfg.dead_after = Duration::from_millis(2500);
    let now = position(&mut c).await;
    let mut reader = BinlogReader::start(&cfg, &now).await.expect("start");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .is_err(),
        "an idle stream neither yields nor fails"
    );
    let pid = sb.primary().pid as libc::pid_t;
    // SAFETY: signals the sandbox's own mariadbd by pid; resumed right after.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let got = tokio::time::timeout(Duration::from_secs(10), reader.next()).await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let err = got.expect("fails within 10 s").expect_err("an error");
    assert!(matches!(err, BinlogError::Stalled { .. }), "{err}");

    // A killed dump thread is a lost connection.
    let mut reader = BinlogReader::start(&config(&sb, 6004), &now)
        .await
        .expect("start");
    let ids: Vec<u64> = c
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
        .await
        .expect("processlist");
    assert!(!ids.is_empty());
    for id in ids {
        let _ = c.query_drop(format!("KILL {id}")).await;
    }
    let err = tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .expect("fails within 10 s")
        .expect_err("an error");
    assert!(matches!(err, BinlogError::ConnectionLost { .. }), "{err}");
}

/// Column names come from the table map when the server logs them (binlog_row_metadata=FULL),
/// describing the row as written even after an ALTER; without them the reader asks
/// information_schema and refuses rows that no longer match the table. A schema filter skips
/// other schemas' rows undecoded.
#[tokio::test]
async fn table_map_names_survive_an_alter_that_information_schema_cannot() {
    let sb = common::start_cluster(0);
    let mut c = root(&sb).await;
    let db = fresh_schema(&mut c, "bl_meta").await;
    let before_plain = position(&mut c).await;
    let plain = trx(&mut c, "INSERT INTO t (id, small) VALUES (1, 200)").await;
    let before_full = position(&mut c).await;
    c.query_drop("SET GLOBAL binlog_row_metadata = 'FULL'")
        .await
        .expect("full metadata");
    let mut c2 = root(&sb).await;
    c2.query_drop(format!("USE {db}")).await.expect("use");
    let full = trx(&mut c2, "INSERT INTO t (id, small) VALUES (2, 255)").await;
    c2.query_drop("ALTER TABLE t ADD COLUMN extra INT")
        .await
        .expect("alter");
    let last = trx(&mut c2, "INSERT INTO t (id) VALUES (3)").await;

    let mut reader = BinlogReader::start(&config(&sb, 7001), &before_full)
        .await
        .expect("start");
    let records = read_until(&mut reader, &db, &[full], full).await;
    let Record::Change(ch) = &records[0] else {
        panic!("{records:?}")
    };
    let names: Vec<&str> = ch.table.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["id", "big", "name", "data", "maybe", "at", "price", "small"]
    );
    assert!(ch.table.columns[7].unsigned);
    let ChangeKind::Insert { after } = &ch.kind else {
        panic!("{ch:?}")
    };
    assert_eq!(after[0], Value::Int(2));
    assert_eq!(after[7], Value::UInt(255));
    reader.close().await;

    // The NO_LOG row of 8 columns against today's 9 columns: refused, not misread.
    let mut reader = BinlogReader::start(&config(&sb, 7002), &before_plain)
        .await
        .expect("start");
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(15), reader.next())
            .await
            .expect("within 15 s")
        {
            Ok(Record::Commit { gtid, .. }) if gtid == plain => panic!("row of {plain} read"),
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, BinlogError::Schema { .. }), "{err}");
    assert!(err.to_string().contains("altered"), "{err}");

    // Filtered to another schema, the same stream passes every commit and no change.
    let mut cfg = config(&sb, 7003);
    cfg.schemas = vec!["no_such_schema".into()];
    let mut reader = BinlogReader::start(&cfg, &before_plain)
        .await
        .expect("start");
    let mut commits = Vec::new();
    while commits.last() != Some(&last) {
        let r = tokio::time::timeout(Duration::from_secs(15), reader.next())
            .await
            .expect("within 15 s")
            .expect("a record");
        assert!(!matches!(r, Record::Change(_)), "{r:?}");
        commits.extend(commit_of(&r));
    }
    assert_eq!(commits.first(), Some(&plain));
    assert!(commits.contains(&full));
}
