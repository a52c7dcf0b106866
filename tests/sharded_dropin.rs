//! A sharded keyspace must behave like one MariaDB for what clients send every day: raw bytes
//! in statements (mysqlclient, DBD::mysql and Connector/J put BLOBs in the query text), and
//! every statement the proxy rewrites compared with what a direct connection stores.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use mysql_async::prelude::*;
use mysql_async::Conn;

use common::Sandbox;

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| {
        common::start_cluster_with(&[
            "--shards",
            "2",
            "--replicas",
            "0",
            "--sharded-table",
            "blobs:id",
            "--sharded-table",
            "users:id",
        ])
    })
}

/// A client of the binary's proxy ([`proxy_port`]).
async fn proxy() -> Conn {
    common::connect(&common::app_url(proxy_port().await, "app")).await
}

static PORT: OnceLock<u16> = OnceLock::new();

/// The binary's proxy, started once: its `blobs` table takes ids from a sequence in the
/// unsharded keyspace `meta` (on shard s0's server), created here, and it runs writes without
/// a key on every shard.
async fn proxy_port() -> u16 {
    let sb = sandbox();
    let s0 = sb.cluster.primary("s0").expect("primary").port;
    if PORT.get().is_none() {
        let mut root = common::connect(&common::root_url(s0)).await;
        root.query_drop("CREATE DATABASE IF NOT EXISTS meta")
            .await
            .expect("meta");
        root.query_drop(
            "CREATE TABLE IF NOT EXISTS meta.blobs_seq (id INT PRIMARY KEY, next_id BIGINT NOT NULL)",
        )
        .await
        .expect("sequence table");
        root.query_drop("INSERT IGNORE INTO meta.blobs_seq VALUES (0, 1000000)")
            .await
            .expect("sequence row");
    }
    let port = *PORT.get_or_init(|| {
        sb.keep_proxy(&format!(
            "[keyspace.app]\nsequence_keyspace = \"meta\"\nallow_scatter_writes = true\n\
             [keyspace.app.tables.blobs]\nsequence = \"blobs_seq\"\n\
             [keyspace.meta]\nsharding = \"unsharded\"\n\
             [[keyspace.meta.shards]]\nname = \"m0\"\nprimary = \"127.0.0.1:{s0}\"\n"
        ))
    });
    port
}

/// A direct connection to shard s0's server, in a database of its own (`refdb`): the reference
/// every statement is also run on.
async fn reference() -> Conn {
    let s0 = sandbox().cluster.primary("s0").expect("primary").port;
    let mut c = common::connect(&common::root_url(s0)).await;
    c.query_drop("CREATE DATABASE IF NOT EXISTS refdb")
        .await
        .expect("refdb");
    c.query_drop("USE refdb").await.expect("use refdb");
    c
}

/// `v` escaped as mysql_real_escape_string does it: the other bytes go into the statement
/// as they are.
fn escaped(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 2);
    for &b in v {
        match b {
            0 => out.extend_from_slice(b"\\0"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' | b'\'' | b'"' => out.extend_from_slice(&[b'\\', b]),
            0x1a => out.extend_from_slice(b"\\Z"),
            _ => out.push(b),
        }
    }
    out
}

/// A string literal of `v`: `_binary'...'` or a plain `'...'`.
fn literal(v: &[u8], binary: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if binary {
        out.extend_from_slice(b"_binary");
    }
    out.push(b'\'');
    out.extend(escaped(v));
    out.push(b'\'');
    out
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02X}")).collect()
}

/// The values every path carries: all 256 byte values, the issue's `41 FF 80 42`, and a
/// 1 MiB pseudo-random blob.
fn values() -> Vec<(&'static str, Vec<u8>)> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..(1 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    vec![
        ("all", (0..=255).collect()),
        ("ff", vec![0x41, 0xFF, 0x80, 0x42]),
        ("big", big),
    ]
}

/// `(tag, b, vb)` of one row; `vb` gets at most the first 256 bytes.
fn row(id: Option<i64>, tag: &str, v: &[u8], binary: bool) -> Vec<u8> {
    let mut out = b"(".to_vec();
    if let Some(id) = id {
        out.extend_from_slice(format!("{id}, ").as_bytes());
    }
    out.extend_from_slice(format!("'{tag}', ").as_bytes());
    out.extend(literal(v, binary));
    out.extend_from_slice(b", ");
    out.extend(literal(&v[..v.len().min(256)], binary));
    out.push(b')');
    out
}

fn statement(head: &str, rows: &[Vec<u8>], tail: &[u8]) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    out.extend(rows.join(&b", "[..]));
    out.extend_from_slice(tail);
    out
}

/// `tag -> (HEX(b), HEX(vb))` of every row of `blobs`.
async fn stored(c: &mut Conn) -> BTreeMap<String, (String, String)> {
    let rows: Vec<(String, String, String)> = c
        .query("/* shardgate:primary */ SELECT tag, HEX(b), HEX(vb) FROM blobs")
        .await
        .expect("read back");
    rows.into_iter().map(|(t, b, vb)| (t, (b, vb))).collect()
}

/// Every byte value, in BLOB and VARBINARY columns, through every INSERT the proxy rewrites
/// (sequence ids added, rows split across shards, with ON DUPLICATE KEY UPDATE, REPLACE) and
/// the ones it forwards (one shard, prepared), as `_binary'...'` and as plain escaped strings:
/// stored exactly as a direct connection stores them.
#[tokio::test]
async fn blob_bytes_are_stored_as_sent_through_every_insert_rewrite() {
    let mut c = proxy().await;
    let mut r = reference().await;
    let ddl = "CREATE TABLE blobs (id BIGINT PRIMARY KEY, tag VARCHAR(40) NOT NULL UNIQUE, \
               b MEDIUMBLOB, vb VARBINARY(512))";
    c.query_drop(ddl).await.expect("create through the proxy");
    r.query_drop(ddl.replace(
        "id BIGINT PRIMARY KEY",
        "id BIGINT AUTO_INCREMENT PRIMARY KEY",
    ))
    .await
    .expect("create reference");
    let (mut on0, mut on1) = common::ids_by_shard(&mut c, 100, 200, "k").await;
    let mut take = move || {
        let (x, y) = (on0.pop(), on1.pop());
        (x.expect("an id on shard 0"), y.expect("an id on shard 1"))
    };
    let mut statements: Vec<(Vec<u8>, String)> = Vec::new();
    for binary in [true, false] {
        let form = if binary { "bin" } else { "plain" };
        for (name, v) in values() {
            let t = |path: &str| format!("{path}-{form}-{name}");
            // A sequence fills the id; two rows, so that the ids may land on two shards.
            let rows = [
                row(None, &t("seq1"), &v, binary),
                row(None, &t("seq2"), &v, binary),
            ];
            let sql = statement("INSERT INTO blobs (tag, b, vb) VALUES ", &rows, b"");
            statements.push((sql, t("sequence")));
            // Rows for two shards: split by row.
            let (x, y) = take();
            let rows = [
                row(Some(x), &t("split1"), &v, binary),
                row(Some(y), &t("split2"), &v, binary),
            ];
            let sql = statement("INSERT INTO blobs (id, tag, b, vb) VALUES ", &rows, b"");
            statements.push((sql, t("split")));
            // The same rows again: split, each updating its row with bytes in the tail.
            let mut tail = b" ON DUPLICATE KEY UPDATE vb = ".to_vec();
            tail.extend(literal(&[0xFF, 0xFE, 0x00, 0x80], binary));
            tail.extend_from_slice(b", b = VALUES(b)");
            let sql = statement("INSERT INTO blobs (id, tag, b, vb) VALUES ", &rows, &tail);
            statements.push((sql, t("upsert")));
            // REPLACE with rows for two shards.
            let (x, y) = take();
            let rows = [
                row(Some(x), &t("replace1"), &v, binary),
                row(Some(y), &t("replace2"), &v, binary),
            ];
            let sql = statement("REPLACE INTO blobs (id, tag, b, vb) VALUES ", &rows, b"");
            statements.push((sql, t("replace")));
            // Control: one row with its key, forwarded to one shard unchanged.
            let rows = [row(Some(take().0), &t("one"), &v, binary)];
            let sql = statement("INSERT INTO blobs (id, tag, b, vb) VALUES ", &rows, b"");
            statements.push((sql, t("one-shard")));
        }
    }
    for (sql, what) in &statements {
        c.query_drop(&sql[..])
            .await
            .unwrap_or_else(|e| panic!("{what} through the proxy: {e}"));
        // The reference takes its ids from AUTO_INCREMENT where the proxy's come from the
        // sequence; the rows are compared by tag.
        r.query_drop(&sql[..])
            .await
            .unwrap_or_else(|e| panic!("{what} on the reference: {e}"));
    }
    // Prepared, the bytes as parameters (forwarded to the shard of the key parameter).
    for (name, v) in values() {
        let sql = "INSERT INTO blobs (id, tag, b, vb) VALUES (?, ?, ?, ?)";
        let vb = v[..v.len().min(256)].to_vec();
        let params = (take().1, format!("params-{name}"), v.clone(), vb);
        c.exec_drop(sql, params.clone())
            .await
            .expect("prepared through the proxy");
        r.exec_drop(sql, params)
            .await
            .expect("prepared on the reference");
    }

    let got = stored(&mut c).await;
    let want = stored(&mut r).await;
    assert_eq!(
        got.len(),
        want.len(),
        "rows: {:?}",
        got.keys().collect::<Vec<_>>()
    );
    for (tag, (wb, wvb)) in &want {
        let Some((gb, gvb)) = got.get(tag) else {
            panic!("row {tag} missing through the proxy");
        };
        assert!(
            gb == wb && gvb == wvb,
            "row {tag}: stored through the proxy differs from direct\n b: {} bytes, want {}\n vb: {}\n want {}",
            gb.len() / 2,
            wb.len() / 2,
            &gvb[..gvb.len().min(80)],
            &wvb[..wvb.len().min(80)],
        );
    }
    // The direct server stored the `_binary` literals' bytes exactly (so the comparison above
    // is with the client's bytes, not with a shared mistake).
    for (name, v) in values() {
        let (b, vb) = &want[&format!("one-bin-{name}")];
        assert_eq!(*b, hex(&v), "direct b of {name}");
        assert_eq!(*vb, hex(&v[..v.len().min(256)]), "direct vb of {name}");
    }

    // Reads that match the bytes: one scattered to every shard, one merged with its LIMIT
    // rewritten for the shards; as queries, and prepared with the bytes in the statement's
    // text (COM_STMT_PREPARE of raw bytes, which mysql_async cannot send).
    let ff = literal(&[0x41, 0xFF, 0x80, 0x42], true);
    let mut scatter = b"SELECT tag FROM blobs WHERE vb = ".to_vec();
    scatter.extend_from_slice(&ff);
    let mut merged = scatter.clone();
    merged.extend_from_slice(b" ORDER BY tag LIMIT 1, 3");
    let mut raw = raw_client().await;
    for prepared in [false, true] {
        for (what, sql, sorted) in [("scatter", &scatter, false), ("merge", &merged, true)] {
            let mut got: Vec<String> = if prepared {
                let rows = raw_prepared(&mut raw, sql, None).await;
                rows.into_iter()
                    .map(|t| String::from_utf8(t).expect("tag"))
                    .collect()
            } else {
                c.query(&sql[..]).await.expect(what)
            };
            let mut want: Vec<String> = r.query(&sql[..]).await.expect(what);
            if !sorted {
                got.sort();
                want.sort();
            }
            assert!(!want.is_empty(), "{what}: the reference finds rows");
            assert_eq!(got, want, "{what} read (prepared: {prepared}) by the bytes");
        }
    }
    // A prepared INSERT whose key is a parameter and whose bytes are in its text.
    for (name, v) in values() {
        let id = take().0;
        let statement = |key: &str| {
            let mut sql =
                format!("INSERT INTO blobs (id, tag, b, vb) VALUES ({key}, 'ptext-{name}', ")
                    .into_bytes();
            sql.extend(literal(&v, true));
            sql.extend_from_slice(b", ");
            sql.extend(literal(&v[..v.len().min(256)], true));
            sql.push(b')');
            sql
        };
        let affected = raw_prepared(&mut raw, &statement("?"), Some(id)).await;
        assert_eq!(affected, vec![vec![1]], "prepared insert of {name}");
        r.query_drop(&statement(&id.to_string())[..])
            .await
            .expect("reference insert");
    }
    let got = stored(&mut c).await;
    let want = stored(&mut r).await;
    for name in ["all", "ff", "big"] {
        let tag = format!("ptext-{name}");
        assert!(got.contains_key(&tag), "{tag} stored");
        assert!(got.get(&tag) == want.get(&tag), "{tag} stored as sent");
    }
}

/// What a client sees of a write's OK packet.
fn ok_of(c: &Conn) -> (u64, String, u16) {
    (c.affected_rows(), c.info().into_owned(), c.get_warnings())
}

fn server_error<T: std::fmt::Debug>(r: mysql_async::Result<T>) -> (u16, String, String) {
    match r {
        Err(mysql_async::Error::Server(e)) => (e.code, e.state, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// `users` rows `ids` (name 'k') on the reference server too.
async fn reference_users(r: &mut Conn, ids: &[i64]) {
    r.query_drop("CREATE TABLE IF NOT EXISTS users (id INT PRIMARY KEY, name VARCHAR(40))")
        .await
        .expect("users");
    for id in ids {
        r.query_drop(format!("REPLACE INTO users (id, name) VALUES ({id}, 'k')"))
            .await
            .expect("reference row");
    }
}

/// Node mysql2 binds every JS number as DOUBLE: an integral one is the integer key; one with a
/// fraction names no single key and is refused with the reason.
#[tokio::test]
async fn a_double_shard_key_parameter_routes_as_its_integer() {
    use mysql_async::Value;
    let mut c = proxy().await;
    let (on0, on1) = common::ids_by_shard(&mut c, 5000, 40, "k").await;
    for id in [on0[0], on1[0]] {
        let name: Option<String> = c
            .exec_first(
                "SELECT name FROM users WHERE id = ?",
                (Value::Double(id as f64),),
            )
            .await
            .expect("read by a DOUBLE key");
        assert_eq!(name.as_deref(), Some("k"), "row {id} by {}.0", id);
    }
    for id in [on0[1], on1[1]] {
        c.exec_drop(
            "REPLACE INTO users (id, name) VALUES (?, ?)",
            (Value::Double(id as f64), "dbl"),
        )
        .await
        .expect("write by a DOUBLE key");
        let name: Option<String> = c
            .query_first(format!(
                "/* shardgate:primary */ SELECT name FROM users WHERE id = {id}"
            ))
            .await
            .expect("read back by the integer");
        assert_eq!(name.as_deref(), Some("dbl"), "row {id} on its key's shard");
    }
    let r = c
        .exec_first::<String, _, _>(
            "SELECT name FROM users WHERE id = ?",
            (Value::Double(on0[0] as f64 + 0.5),),
        )
        .await;
    let (code, _, message) = server_error(r);
    assert_eq!(code, 1105);
    assert!(message.contains("fraction"), "{message}");
}

/// Writes on several shards answer with the OK packet one server would send: affected rows,
/// warnings and the info text drivers read ("Rows matched: 3  Changed: 3  Warnings: 0").
#[tokio::test]
async fn a_write_on_several_shards_answers_like_one_server() {
    let mut c = proxy().await;
    let mut r = reference().await;
    let (on0, on1) = common::ids_by_shard(&mut c, 6000, 40, "k").await;
    let (a, b) = (&on0[..4], &on1[..4]);
    reference_users(&mut r, &[a, b].concat()).await;
    for conn in [&mut c, &mut r] {
        conn.query_drop("SET SESSION sql_mode = ''")
            .await
            .expect("not strict");
        // Ids 2 and 3 of each shard are inserted below.
        conn.query_drop(format!(
            "DELETE FROM users WHERE id IN ({}, {}, {}, {})",
            a[2], a[3], b[2], b[3]
        ))
        .await
        .expect("clear");
    }
    let statements = [
        format!(
            "UPDATE users SET name = 'u1' WHERE id IN ({}, {}, {})",
            a[0], a[1], b[0]
        ),
        // Matched, none changed.
        format!(
            "UPDATE users SET name = 'u1' WHERE id IN ({}, {}, {})",
            a[0], a[1], b[0]
        ),
        // A warning per row (data truncated: not strict, below).
        format!(
            "UPDATE users SET name = REPEAT('w', 50) WHERE id IN ({}, {})",
            a[1], b[1]
        ),
        format!(
            "INSERT INTO users (id, name) VALUES ({}, 'x'), ({}, 'y'), ({}, 'z')",
            a[2], b[2], a[3]
        ),
        format!(
            "INSERT INTO users (id, name) VALUES ({}, 'x'), ({}, 'yy') ON DUPLICATE KEY UPDATE name = VALUES(name)",
            a[2], b[2]
        ),
        format!(
            "REPLACE INTO users (id, name) VALUES ({}, 'r'), ({}, 'r'), ({}, 'r')",
            a[2], b[2], b[3]
        ),
        format!("DELETE FROM users WHERE id IN ({}, {})", a[0], b[0]),
    ];
    for sql in &statements {
        c.query_drop(sql).await.expect(sql);
        let got = ok_of(&c);
        r.query_drop(sql).await.expect(sql);
        assert_eq!(got, ok_of(&r), "OK of {sql}");
    }
    // Prepared: the same, run on each shard's connection.
    let sql = "UPDATE users SET name = ? WHERE id IN (?, ?, ?)";
    for name in ["p1", "p1"] {
        let params = (name, a[2], b[2], a[3]);
        c.exec_drop(sql, params).await.expect("prepared update");
        let got = ok_of(&c);
        r.exec_drop(sql, params).await.expect("prepared update");
        assert_eq!(got, ok_of(&r), "OK of prepared {sql} with {name}");
    }
}

/// PyMySQL turns autocommit off at login and SQLAlchemy's `create_all()` then runs DDL: as
/// MariaDB does, the DDL commits the open transaction (on every shard it opened) and runs.
#[tokio::test]
async fn ddl_commits_the_open_transaction_as_mariadb_does() {
    let mut c = proxy().await;
    let mut other = proxy().await;
    let (on0, on1) = common::ids_by_shard(&mut c, 7000, 40, "k").await;
    let name_of =
        |id: i64| format!("/* shardgate:primary */ SELECT name FROM users WHERE id = {id}");
    for (i, set) in ["SET autocommit = 0", "SET @@session.autocommit = OFF"]
        .iter()
        .enumerate()
    {
        c.query_drop(*set).await.expect("autocommit off");
        c.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS ddl_ac{i} (id INT PRIMARY KEY)"
        ))
        .await
        .expect("DDL with autocommit off");
        // A write opens the transaction on its shard; DDL commits it.
        let id = on0[i];
        c.query_drop(format!("UPDATE users SET name = 'ac{i}' WHERE id = {id}"))
            .await
            .expect("write");
        c.query_drop(format!("ALTER TABLE ddl_ac{i} ADD COLUMN v INT"))
            .await
            .expect("DDL in the implicit transaction");
        let seen: Option<String> = other.query_first(name_of(id)).await.expect("read");
        assert_eq!(seen, Some(format!("ac{i}")), "committed by the DDL");
        // Still autocommit off: the next write is in a new transaction, which rolls back.
        c.query_drop(format!(
            "UPDATE users SET name = 'gone' WHERE id = {}",
            on1[i]
        ))
        .await
        .expect("write");
        c.query_drop("ROLLBACK").await.expect("rollback");
        let seen: Option<String> = other.query_first(name_of(on1[i])).await.expect("read");
        assert_eq!(seen.as_deref(), Some("k"), "rolled back");
        c.query_drop("SET autocommit = 1")
            .await
            .expect("autocommit on");
    }
    // An explicit transaction: committed by the DDL too.
    c.query_drop("BEGIN").await.expect("begin");
    c.query_drop(format!(
        "UPDATE users SET name = 'tx' WHERE id = {}",
        on1[3]
    ))
    .await
    .expect("write");
    c.query_drop("DROP TABLE ddl_ac0")
        .await
        .expect("DDL in a transaction");
    let seen: Option<String> = other.query_first(name_of(on1[3])).await.expect("read");
    assert_eq!(seen.as_deref(), Some("tx"), "committed by the DDL");
    // A temporary table commits nothing on MariaDB: still refused inside a transaction, and
    // the transaction stays open.
    c.query_drop("BEGIN").await.expect("begin");
    c.query_drop(format!(
        "UPDATE users SET name = 'tmp' WHERE id = {}",
        on1[3]
    ))
    .await
    .expect("write");
    let r = c.query_drop("CREATE TEMPORARY TABLE tmp_x (id INT)").await;
    assert_eq!(server_error(r).0, 1105);
    c.query_drop("ROLLBACK").await.expect("rollback");
    let seen: Option<String> = other.query_first(name_of(on1[3])).await.expect("read");
    assert_eq!(seen.as_deref(), Some("tx"), "rolled back, not committed");
}

/// A statement nobody can parse gets the server's syntax error (1064, 42000, "near ..."), as
/// on one MariaDB; one only the planner cannot read is still refused, and runs nowhere.
#[tokio::test]
async fn syntax_errors_get_the_servers_error() {
    let mut c = proxy().await;
    let mut r = reference().await;
    reference_users(&mut r, &[]).await;
    common::ids_by_shard(&mut c, 8000, 2, "k").await;
    for sql in [
        "SELEC 1",
        "SELECT * FROM users WHERE",
        "INSERT INTO users (id name) VALUES (1, 'a')",
        "UPDATE users SET WHERE id = 1",
        "SELECT * FROM users WHERE id = 1 ORDER",
    ] {
        let got = server_error(c.query_drop(sql).await);
        let want = server_error(r.query_drop(sql).await);
        assert_eq!(got, want, "{sql}");
        assert_eq!((got.0, got.1.as_str()), (1064, "42000"), "{sql}");
        let got = server_error(c.prep(sql).await);
        assert_eq!(got, want, "prepared {sql}");
    }
    // MariaDB reads it, the planner does not: refused, and the row is not deleted anywhere.
    let sql = "DELETE LOW_PRIORITY QUICK IGNORE FROM users WHERE id = 8000";
    let (code, _, message) = server_error(c.query_drop(sql).await);
    assert_eq!(code, 1105, "{message}");
    let n: Option<i64> = c
        .query_first("/* shardgate:primary */ SELECT COUNT(*) FROM users WHERE id = 8000")
        .await
        .expect("count");
    assert_eq!(n, Some(1), "not run");
}

/// A client that prepares raw statement bytes (mysql_async prepares from `&str` only): the
/// proxy's own backend connection, pointed at the proxy.
async fn raw_client() -> shardgate::backend::BackendConn {
    use shardgate::backend::conn::ConnectParams;
    use shardgate::protocol::consts::cap;
    let addr = format!("127.0.0.1:{}", proxy_port().await);
    shardgate::backend::BackendConn::connect(ConnectParams {
        addr: &addr,
        user: common::USER,
        password: &shardgate::protocol::auth::Secret::Clear(common::PASSWORD.into()),
        key: shardgate::backend::ConnKey {
            framing: cap::DEPRECATE_EOF,
            charset: 45,
            ext: 0,
        },
        db: Some("app"),
        timeout: std::time::Duration::from_secs(10),
    })
    .await
    .expect("raw connection to the proxy")
}

/// Prepares `sql` (raw bytes) and executes it with `param` (a BIGINT, if any); the first
/// column of each row as bytes, or the OK's affected rows as the one row.
async fn raw_prepared(
    c: &mut shardgate::backend::BackendConn,
    sql: &[u8],
    param: Option<i64>,
) -> Vec<Vec<u8>> {
    use bytes::BytesMut;
    use shardgate::protocol::packet::put_packet;
    let stmt = shardgate::backend::prepared::prepare_silently(c, &std::sync::Arc::from(sql))
        .await
        .expect("prepare sent")
        .unwrap_or_else(|e| panic!("prepare refused: {e:?}"));
    let mut body = vec![0x17];
    body.extend_from_slice(&stmt.id.to_le_bytes());
    body.push(0);
    body.extend_from_slice(&1u32.to_le_bytes());
    if let Some(v) = param {
        body.extend_from_slice(&[0, 1, 0x08, 0]);
        body.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = BytesMut::new();
    put_packet(&mut out, 0, &body);
    c.io.write_all(&out).await.expect("execute sent");
    let mut read = async || {
        let f =
            c.io.read_frame(1 << 24)
                .await
                .expect("read")
                .expect("a packet");
        f.payload().to_vec()
    };
    let first: Vec<u8> = read().await;
    match first.as_slice().first() {
        Some(0xFF) => panic!("execute refused: {}", String::from_utf8_lossy(&first)),
        Some(0x00) => return vec![vec![first[1]]],
        _ => {}
    }
    for _ in 0..first[0] {
        read().await;
    }
    let mut rows = Vec::new();
    loop {
        let p: Vec<u8> = read().await;
        if p[0] == 0xFE && p.len() < 0xFF_FFFF {
            return rows;
        }
        // 0x00, a NULL bitmap of one byte (one column), a length-encoded string (< 251 bytes).
        let len = p[2] as usize;
        rows.push(p[3..3 + len].to_vec());
    }
}

/// What a statement leaves for the next one (its warnings, ROW_COUNT()) is read on the shard
/// whose server ran it, as text and prepared: a statement naming no table went to the first
/// shard, which knew nothing of a write on the second.
#[tokio::test]
async fn diagnostics_are_read_where_the_previous_statement_ran() {
    let mut c = proxy().await;
    let (on0, on1) = common::ids_by_shard(&mut c, 7000, 40, "k").await;
    for id in [on0[0], on1[0]] {
        for prepared in [false, true] {
            // A duplicate under IGNORE is a warning (1062), on the row's shard only.
            c.query_drop(format!(
                "INSERT IGNORE INTO users (id, name) VALUES ({id}, 'again')"
            ))
            .await
            .expect("insert ignore");
            let show = "SHOW WARNINGS";
            let warnings: Vec<(String, u16, String)> = match prepared {
                false => c.query(show).await,
                true => c.exec(show, ()).await,
            }
            .expect("show warnings");
            assert_eq!(
                warnings.iter().map(|w| w.1).collect::<Vec<_>>(),
                vec![1062],
                "row {id} (prepared: {prepared}): {warnings:?}"
            );
            let count = "SELECT @@warning_count";
            let n: Option<u64> = match prepared {
                false => c.query_first(count).await,
                true => c.exec_first(count, ()).await,
            }
            .expect("warning count");
            assert_eq!(n, Some(1), "row {id} (prepared: {prepared})");

            c.query_drop(format!(
                "UPDATE users SET name = 'rc{}' WHERE id = {id}",
                prepared as u8
            ))
            .await
            .expect("update");
            let rc = "SELECT ROW_COUNT()";
            let n: Option<i64> = match prepared {
                false => c.query_first(rc).await,
                true => c.exec_first(rc, ()).await,
            }
            .expect("row count");
            assert_eq!(n, Some(1), "row {id} (prepared: {prepared})");
        }
    }
}
