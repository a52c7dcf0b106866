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

/// A proxy whose `blobs` table takes ids from a sequence in the unsharded keyspace `meta`
/// (on shard s0's server), created here.
async fn proxy() -> Conn {
    static PORT: OnceLock<u16> = OnceLock::new();
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
            "[keyspace.app]\nsequence_keyspace = \"meta\"\n\
             [keyspace.app.tables.blobs]\nsequence = \"blobs_seq\"\n\
             [keyspace.meta]\nsharding = \"unsharded\"\n\
             [[keyspace.meta.shards]]\nname = \"m0\"\nprimary = \"127.0.0.1:{s0}\"\n"
        ))
    });
    common::connect(&common::app_url(port, "app")).await
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
    // rewritten for the shards.
    let ff = literal(&[0x41, 0xFF, 0x80, 0x42], true);
    let mut scatter = b"SELECT tag FROM blobs WHERE vb = ".to_vec();
    scatter.extend_from_slice(&ff);
    let mut merged = scatter.clone();
    merged.extend_from_slice(b" ORDER BY tag LIMIT 1, 3");
    for (what, sql) in [("scatter", scatter), ("merge", merged)] {
        let mut got: Vec<String> = c.query(&sql[..]).await.expect(what);
        let mut want: Vec<String> = r.query(&sql[..]).await.expect(what);
        if what == "scatter" {
            got.sort();
            want.sort();
        }
        assert!(!want.is_empty(), "{what}: the reference finds rows");
        assert_eq!(got, want, "{what} read of rows by their bytes");
    }
}
