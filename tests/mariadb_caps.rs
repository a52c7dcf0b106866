//! MariaDB's extended capabilities through the proxy, compared with the server directly:
//! extended metadata (a JSON column's definition says `json`, what Node mysql2 reads) on an
//! unsharded and a sharded keyspace, and COM_STMT_BULK_EXECUTE (Connector/J's batches) on both
//! (on a sharded keyspace its rows split between shards). Raw-protocol clients, so each
//! negotiates exactly what it asks for.

mod common;

use std::sync::OnceLock;

use mysql_async::prelude::*;

use common::raw::{Raw, Reply};
use common::Sandbox;
use shardgate::protocol::consts::{cap, ext_cap};
use shardgate::protocol::wire::Reader;

const META: u32 = ext_cap::EXTENDED_METADATA;
const BULK: u32 = ext_cap::STMT_BULK_OPERATIONS;
const CAPS: u32 = cap::MULTI_RESULTS;

fn unsharded() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster(0))
}

fn sharded() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| {
        common::start_cluster_with(&[
            "--shards",
            "2",
            "--replicas",
            "0",
            "--sharded-table",
            "jdocs:id",
            "--sharded-table",
            "bitems:id",
        ])
    })
}

const MONITOR: &str = "[monitor]\ninterval_ms = 200\n";

fn unsharded_proxy() -> u16 {
    static P: OnceLock<u16> = OnceLock::new();
    *P.get_or_init(|| unsharded().keep_proxy(MONITOR))
}

/// Scatter writes allowed, for a bulk UPDATE without its key.
fn sharded_proxy() -> u16 {
    static P: OnceLock<u16> = OnceLock::new();
    *P.get_or_init(|| {
        sharded().keep_proxy(&format!(
            "{MONITOR}[keyspace.app]\nallow_scatter_writes = true\n"
        ))
    })
}

/// The column definitions of `sql`'s result and its rows, for a client with `ext`.
async fn result(port: u16, ext: u32, sql: &str) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, ext).await;
    let replies = c.query(sql).await;
    c.quit().await;
    match replies.into_iter().next() {
        Some(Reply::Rows { columns, rows }) => (columns, rows),
        other => panic!("{sql} on {port}: {other:?}"),
    }
}

fn says_json(def: &[u8]) -> bool {
    def.windows(4).any(|w| w == b"json")
}

/// What the proxy's greeting offers, as a client reads it.
async fn offered(port: u16) -> u32 {
    let (c, hello) = Raw::login(port, "app", "app", CAPS, 0).await;
    c.quit().await;
    assert_eq!(
        hello.caps & cap::LONG_PASSWORD,
        0,
        "a MariaDB greeting (extended capabilities read)"
    );
    hello.ext_caps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_columns_carry_extended_metadata_as_directly() {
    let port = unsharded_proxy();
    let direct = unsharded().primary().port;
    let t = common::unique("jt");
    let mut root = common::connect(&common::root_url(direct)).await;
    root.query_drop(format!(
        "CREATE TABLE app.{t} (id INT PRIMARY KEY, doc JSON)"
    ))
    .await
    .expect("create");
    root.query_drop(format!("INSERT INTO app.{t} VALUES (1, '{{\"a\": 1}}')"))
        .await
        .expect("insert");
    assert_ne!(
        offered(port).await & META,
        0,
        "the proxy offers extended metadata"
    );
    let sql = format!("SELECT id, doc FROM app.{t}");
    let (want_meta, _) = result(direct, META, &sql).await;
    let (want_plain, _) = result(direct, 0, &sql).await;
    assert!(
        says_json(&want_meta[1]) && !says_json(&want_plain[1]),
        "the server marks JSON"
    );
    // Alternating, so connections opened for one kind of client are around for the other.
    for round in 0..2 {
        let (meta, rows) = result(port, META, &sql).await;
        assert_eq!(
            meta, want_meta,
            "round {round}: definitions with extended metadata"
        );
        assert_eq!(rows.len(), 1);
        let (plain, _) = result(port, 0, &sql).await;
        assert_eq!(plain, want_plain, "round {round}: definitions without");
    }
}

/// The sharded table of this sandbox, created through the proxy (on every shard); a client.
async fn jdocs(port: u16) -> mysql_async::Conn {
    let mut app = common::connect(&format!(
        "mysql://app:app@127.0.0.1:{port}/app?prefer_socket=false"
    ))
    .await;
    app.query_drop(
        "CREATE TABLE IF NOT EXISTS jdocs (id INT PRIMARY KEY, tag VARCHAR(10), doc JSON)",
    )
    .await
    .expect("create through the proxy");
    app
}

/// A scatter read merges the shards' rows (ordered by a text column holding digits: the proxy
/// reads from the column definitions that it compares as text) and passes the shards'
/// definitions on: with extended metadata too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_columns_carry_extended_metadata_on_a_sharded_keyspace() {
    let port = sharded_proxy();
    let mut app = jdocs(port).await;
    for id in 1..=12 {
        app.query_drop(format!(
            "INSERT INTO jdocs (id, tag, doc) VALUES ({id}, '{id}', '{{\"n\": {id}}}')"
        ))
        .await
        .expect("insert");
    }
    assert_ne!(
        offered(port).await & META,
        0,
        "the proxy offers extended metadata"
    );
    let shard = sharded().cluster.primary("s0").expect("s0").port;
    let sql = "SELECT tag, doc FROM jdocs ORDER BY tag";
    let (want, _) = result(shard, META, sql).await;
    assert!(says_json(&want[1]), "a shard marks JSON");
    for ext in [META, 0] {
        let (defs, rows) = result(port, ext, sql).await;
        assert_eq!(says_json(&defs[1]), ext != 0, "ext {ext:#x}: {defs:?}");
        if ext != 0 {
            assert_eq!(defs, want, "the shards' definitions");
        }
        let tags: Vec<String> = rows
            .iter()
            .map(|r| {
                let v = Reader::new(r).lenenc_bytes().expect("tag").to_vec();
                String::from_utf8(v).expect("text")
            })
            .collect();
        let mut want_tags: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
        want_tags.sort(); // "1", "10", "11", "12", "2", ...
        assert_eq!(tags, want_tags, "ext {ext:#x}: merged in text order");
    }
}

/// COM_STMT_BULK_EXECUTE of `rows` (id, text) for statement `id`, parameter types sent.
fn bulk_packet(stmt: u32, rows: &[(i64, &str)]) -> Vec<u8> {
    let mut p = vec![0xFA];
    p.extend_from_slice(&stmt.to_le_bytes());
    p.extend_from_slice(&128u16.to_le_bytes()); // SEND_TYPES_TO_SERVER
    p.extend_from_slice(&[0x08, 0, 0xFD, 0]); // LONGLONG, VAR_STRING
    for (id, v) in rows {
        p.push(0); // no indicator: a value follows
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.push(v.len() as u8);
        p.extend_from_slice(v.as_bytes());
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_execute_inserts_every_row_as_directly() {
    let port = unsharded_proxy();
    let direct = unsharded().primary().port;
    let t = common::unique("bulk");
    let mut root = common::connect(&common::root_url(direct)).await;
    root.query_drop(format!(
        "CREATE TABLE app.{t} (id BIGINT PRIMARY KEY, v VARCHAR(20))"
    ))
    .await
    .expect("create");
    assert_ne!(
        offered(port).await & BULK,
        0,
        "the proxy offers bulk operations"
    );
    let insert = format!("INSERT INTO app.{t} (id, v) VALUES (?, ?)");
    for (target, base) in [(direct, 0), (port, 100)] {
        let (mut c, _) = Raw::login(target, "app", "app", CAPS, BULK | META).await;
        let stmt = c.prepare(&insert).await.expect("prepare");
        let rows = [(base + 1, "a"), (base + 2, "b\u{e9}"), (base + 3, "")];
        let replies = c.command(&bulk_packet(stmt, &rows)).await;
        assert_eq!(
            replies,
            vec![Reply::Ok(3)],
            "port {target}: one OK for three rows"
        );
        let unknown = c.command(&bulk_packet(stmt + 1000, &rows)).await;
        assert!(
            matches!(unknown.as_slice(), [Reply::Err(1243, _)]),
            "port {target}: an unknown statement: {unknown:?}"
        );
        c.quit().await;
    }
    let got: Vec<(i64, String)> = root
        .query(format!("SELECT id, v FROM app.{t} ORDER BY id"))
        .await
        .expect("rows");
    let want: Vec<(i64, String)> = [0, 100]
        .iter()
        .flat_map(|b| {
            [
                (b + 1, "a".to_string()),
                (b + 2, "b\u{e9}".into()),
                (b + 3, String::new()),
            ]
        })
        .collect();
    assert_eq!(got, want, "the same rows directly and through the proxy");
}

/// With a sharded keyspace in the map the proxy offers bulk operations too; a statement of one
/// shard (a literal key) gets the client's command as it came; what is not supported there
/// (per-row results, which were not negotiated) or malformed is refused with its own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_execute_is_offered_with_a_sharded_keyspace() {
    let port = sharded_proxy();
    drop(jdocs(port).await);
    assert_ne!(offered(port).await & BULK, 0, "offered");
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, BULK).await;
    let stmt = c
        .prepare("INSERT INTO jdocs (id, tag, doc) VALUES (501, ?, ?)")
        .await
        .expect("prepare");
    let replies = c.command(&bulk_packet(stmt, &[(7, "{}"), (8, "[]")])).await;
    assert!(
        matches!(replies.as_slice(), [Reply::Err(1062, _)]),
        "both rows ran on the key's shard (the second is a duplicate): {replies:?}"
    );
    let stmt = c
        .prepare("INSERT INTO jdocs (id, doc) VALUES (?, ?)")
        .await
        .expect("prepare");
    let mut unit = bulk_packet(stmt, &[(502, "{}")]);
    unit[5] |= 64; // SEND_UNIT_RESULTS
    let replies = c.command(&unit).await;
    assert!(
        matches!(replies.as_slice(), [Reply::Err(1235, _)]),
        "per-row results: {replies:?}"
    );
    let mut null_key = bulk_packet(stmt, &[(504, "{}"), (505, "{}")]);
    let second_row = null_key.len() - 13;
    null_key.splice(second_row..second_row + 9, [1]); // row 2's key: the NULL indicator
    let replies = c.command(&null_key).await;
    assert!(
        matches!(replies.as_slice(), [Reply::Err(1105, m)] if m.contains("row 2")),
        "a NULL key names no shard: {replies:?}"
    );
    let mut cut = bulk_packet(stmt, &[(503, "{}")]);
    cut.truncate(cut.len() - 1);
    let replies = c.command(&cut).await;
    assert!(
        matches!(replies.as_slice(), [Reply::Err(1835, _)]),
        "a row cut short: {replies:?}"
    );
    c.quit().await;
}

/// A bulk parameter: its binary type and value (`None`: the NULL indicator).
#[derive(Clone)]
enum P {
    Int(Option<i64>),
    Bytes(Option<Vec<u8>>),
}

/// COM_STMT_BULK_EXECUTE of `rows` for statement `stmt`, types taken from the first row.
fn bulk_of(stmt: u32, rows: &[Vec<P>]) -> Vec<u8> {
    let mut p = vec![0xFA];
    p.extend_from_slice(&stmt.to_le_bytes());
    p.extend_from_slice(&128u16.to_le_bytes()); // SEND_TYPES_TO_SERVER
    for v in rows.first().map(Vec::as_slice).unwrap_or_default() {
        let ty = match v {
            P::Int(_) => 0x08,   // LONGLONG
            P::Bytes(_) => 0xFC, // BLOB
        };
        p.extend_from_slice(&[ty, 0]);
    }
    for row in rows {
        for v in row {
            match v {
                P::Int(Some(i)) => {
                    p.push(0);
                    p.extend_from_slice(&i.to_le_bytes());
                }
                P::Bytes(Some(b)) => {
                    p.push(0);
                    if b.len() < 251 {
                        p.push(b.len() as u8);
                    } else if b.len() < 1 << 16 {
                        p.push(0xFC);
                        p.extend_from_slice(&(b.len() as u16).to_le_bytes());
                    } else {
                        p.push(0xFD);
                        p.extend_from_slice(&(b.len() as u32).to_le_bytes()[..3]);
                    }
                    p.extend_from_slice(b);
                }
                P::Int(None) | P::Bytes(None) => p.push(1), // the NULL indicator
            }
        }
    }
    p
}

/// Affected rows, insert id, warnings, info text.
type BulkOk = (u64, u64, u16, Vec<u8>);

/// The whole OK packet a bulk got (affected rows, insert id, warnings, info text), or the
/// error code.
async fn bulk_answer(c: &mut Raw, payload: &[u8]) -> Result<BulkOk, u16> {
    use shardgate::protocol::packet::{ok_info_text, parse_err, parse_ok};
    c.send(payload).await;
    let p = c.packet().await;
    if <[u8]>::first(&p) == Some(&0xFF) {
        return Err(parse_err(&p).expect("err").code);
    }
    let ok = parse_ok(&p).expect("an OK");
    Ok((
        ok.affected_rows,
        ok.last_insert_id,
        ok.warnings,
        ok_info_text(&p).to_vec(),
    ))
}

/// Prepares `sql` on `c` and runs `rows` through it in one bulk.
async fn prepared_bulk(c: &mut Raw, sql: &str, rows: &[Vec<P>]) -> Result<BulkOk, u16> {
    let stmt = c.prepare(sql).await.expect("prepare");
    bulk_answer(c, &bulk_of(stmt, rows)).await
}

const BITEMS: &str =
    "(id BIGINT PRIMARY KEY, v VARCHAR(20), n BIGINT NULL, b MEDIUMBLOB, vb VARBINARY(300), \
                      seq BIGINT NOT NULL AUTO_INCREMENT, KEY (seq))";

/// The sharded table `bitems` (created through the proxy, so on every shard), and a table of
/// the same columns on one server directly (`direct`), to compare answers with.
async fn bitems(port: u16) -> (mysql_async::Conn, String) {
    let mut app = common::connect(&format!(
        "mysql://app:app@127.0.0.1:{port}/app?prefer_socket=false"
    ))
    .await;
    app.query_drop(format!("CREATE TABLE IF NOT EXISTS bitems {BITEMS}"))
        .await
        .expect("create through the proxy");
    let direct = common::unique("bdirect");
    let mut root = common::connect(&common::root_url(shard_port("s0"))).await;
    root.query_drop(format!("CREATE TABLE app.{direct} {BITEMS}"))
        .await
        .expect("create directly");
    (app, direct)
}

fn shard_port(shard: &str) -> u16 {
    sharded().cluster.primary(shard).expect("shard").port
}

/// `sql`'s rows on each shard's primary, read directly.
async fn on_shards<T: FromRow + Send + 'static>(sql: &str) -> Vec<Vec<T>> {
    let mut all = Vec::new();
    for shard in ["s0", "s1"] {
        let mut c = common::connect(&common::root_url(shard_port(shard))).await;
        all.push(c.query(sql).await.expect("read a shard"));
    }
    all
}

fn row(id: i64, v: &str, n: Option<i64>) -> Vec<P> {
    vec![P::Int(Some(id)), P::Bytes(Some(v.into())), P::Int(n)]
}

/// A bulk INSERT whose rows belong to both shards: every row is stored on its own shard (a
/// point read through the proxy, routed by the key, finds it), NULL indicators arrive as NULL,
/// and the client gets the OK a single server gives (rows, first generated id, text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_insert_splits_its_rows_between_shards() {
    let port = sharded_proxy();
    let (mut app, direct) = bitems(port).await;
    let ids: Vec<i64> = (1000..1012).collect();
    let rows: Vec<Vec<P>> = ids
        .iter()
        .map(|&i| row(i, &format!("r{i}"), (i % 3 != 0).then_some(i * 10)))
        .collect();
    // Each shard's generated ids far from the other's: LAST_INSERT_ID() tells them apart.
    for (shard, next) in [("s0", 1_000_000), ("s1", 5_000_000)] {
        common::connect(&common::root_url(shard_port(shard)))
            .await
            .query_drop(format!("ALTER TABLE app.bitems AUTO_INCREMENT = {next}"))
            .await
            .expect("alter");
    }
    let mut answers = Vec::new();
    let mut last_ids = Vec::new();
    for (target, table) in [(shard_port("s0"), direct.as_str()), (port, "bitems")] {
        let (mut c, _) = Raw::login(target, "app", "app", CAPS, BULK).await;
        let sql = format!("INSERT INTO {table} (id, v, n) VALUES (?, ?, ?)");
        answers.push(prepared_bulk(&mut c, &sql, &rows).await);
        last_ids.push(c.query("SELECT LAST_INSERT_ID()").await);
        c.quit().await;
    }
    let (want, got) = match (&answers[0], &answers[1]) {
        (Ok(w), Ok(g)) => (w.clone(), g.clone()),
        _ => panic!("{answers:?}"),
    };
    assert_eq!(want.0, 12, "directly");
    // The insert id is the first row's generated one (`seq`); the shared table's counters
    // are not the fresh direct table's, so each is checked against its own row.
    let (first_seq_direct, first_seq): (Option<u64>, Option<u64>) = (
        common::connect(&common::root_url(shard_port("s0")))
            .await
            .query_first(format!("SELECT seq FROM app.{direct} WHERE id = 1000"))
            .await
            .expect("read"),
        app.query_first("SELECT seq FROM bitems WHERE id = 1000")
            .await
            .expect("read"),
    );
    assert_eq!(
        Some(want.1),
        first_seq_direct,
        "directly: the first row's id"
    );
    assert_eq!(
        Some(got.1),
        first_seq,
        "through the proxy: the first row's id"
    );
    let last_id = |replies: &[Reply]| -> Option<u64> {
        let Some(Reply::Rows { rows, .. }) = replies.first() else {
            return None;
        };
        let v = Reader::new(rows.first()?).lenenc_bytes().ok()?;
        std::str::from_utf8(v).ok()?.parse().ok()
    };
    assert_eq!(
        last_id(&last_ids[0]),
        Some(want.1),
        "LAST_INSERT_ID() directly"
    );
    assert_eq!(
        last_id(&last_ids[1]),
        Some(got.1),
        "LAST_INSERT_ID() through the proxy"
    );
    let text = |a: &BulkOk| (a.0, a.2, String::from_utf8_lossy(&a.3).into_owned());
    assert_eq!(
        text(&got),
        text(&want),
        "rows, warnings and info text as directly"
    );
    let per_shard: Vec<Vec<(i64, String, Option<i64>)>> =
        on_shards("SELECT id, v, n FROM app.bitems WHERE id BETWEEN 1000 AND 1011 ORDER BY id")
            .await;
    assert!(
        per_shard.iter().all(|s| !s.is_empty()),
        "rows on both shards: {per_shard:?}"
    );
    let mut stored: Vec<_> = per_shard.concat();
    stored.sort();
    let want: Vec<(i64, String, Option<i64>)> = ids
        .iter()
        .map(|&i| (i, format!("r{i}"), (i % 3 != 0).then_some(i * 10)))
        .collect();
    assert_eq!(stored, want, "every row once, NULLs as NULL");
    for &i in &ids {
        let found: Option<i64> = app
            .exec_first("SELECT id FROM bitems WHERE id = ?", (i,))
            .await
            .expect("point read");
        assert_eq!(found, Some(i), "row {i} is on the shard its key names");
    }
}

/// A bulk UPDATE and a bulk DELETE by key: each row on its shard, affected rows summed as
/// one server counts them (a row that matches nothing counts nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_update_and_delete_by_key_as_directly() {
    let port = sharded_proxy();
    let (_app, direct) = bitems(port).await;
    let ids: Vec<i64> = (2000..2010).collect();
    let mut answers = Vec::new();
    for (target, table) in [(shard_port("s0"), direct.as_str()), (port, "bitems")] {
        let (mut c, _) = Raw::login(target, "app", "app", CAPS, BULK).await;
        let rows: Vec<Vec<P>> = ids.iter().map(|&i| row(i, "old", Some(i))).collect();
        let sql = format!("INSERT INTO {table} (id, v, n) VALUES (?, ?, ?)");
        prepared_bulk(&mut c, &sql, &rows).await.expect("insert");
        // 2009 twice (changed once), 2999 matches nothing, one NULL value.
        let mut keys = ids.clone();
        keys.extend([2009, 2999]);
        let rows: Vec<Vec<P>> = keys
            .iter()
            .map(|&i| {
                let n = (i != 2001).then_some(-i);
                vec![P::Bytes(Some(b"new".to_vec())), P::Int(n), P::Int(Some(i))]
            })
            .collect();
        let sql = format!("UPDATE {table} SET v = ?, n = ? WHERE id = ?");
        let updated = prepared_bulk(&mut c, &sql, &rows).await;
        let rows: Vec<Vec<P>> = [2000, 2003, 2004, 2007, 2999]
            .iter()
            .map(|&i| vec![P::Int(Some(i))])
            .collect();
        let sql = format!("DELETE FROM {table} WHERE id = ?");
        let deleted = prepared_bulk(&mut c, &sql, &rows).await;
        answers.push((updated, deleted));
        c.quit().await;
    }
    assert_eq!(
        answers[0].0.as_ref().map(|a| a.0),
        Ok(10),
        "directly: {answers:?}"
    );
    assert_eq!(answers[0].1.as_ref().map(|a| a.0), Ok(4), "directly");
    assert_eq!(answers[1], answers[0], "through the proxy as directly");
    let mut stored: Vec<(i64, String, Option<i64>)> =
        on_shards("SELECT id, v, n FROM app.bitems WHERE id BETWEEN 2000 AND 2999")
            .await
            .concat();
    stored.sort();
    let want: Vec<(i64, String, Option<i64>)> = ids
        .iter()
        .filter(|i| ![2000, 2003, 2004, 2007].contains(*i))
        .map(|&i| (i, "new".to_string(), (i != 2001).then_some(-i)))
        .collect();
    assert_eq!(stored, want);
}

/// A duplicate key among a bulk's rows: the error a single server gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_duplicate_key_gives_the_servers_error() {
    let port = sharded_proxy();
    let (_app, direct) = bitems(port).await;
    let keys = [3000, 3001, 3002, 3000, 3003];
    for (target, table) in [(shard_port("s0"), direct.as_str()), (port, "bitems")] {
        let (mut c, _) = Raw::login(target, "app", "app", CAPS, BULK).await;
        let rows: Vec<Vec<P>> = keys.iter().map(|&i| row(i, "d", None)).collect();
        let sql = format!("INSERT INTO {table} (id, v, n) VALUES (?, ?, ?)");
        let r = prepared_bulk(&mut c, &sql, &rows).await;
        assert_eq!(r, Err(1062), "port {target}: duplicate entry");
        c.quit().await;
    }
}

/// id, BLOB, VARBINARY.
type BlobRow = (i64, Vec<u8>, Vec<u8>);

/// Every byte value in BLOB and VARBINARY parameters of a bulk split between shards arrives
/// as sent (the rows are cut from the client's bytes, never re-encoded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_blob_bytes_arrive_intact_on_every_shard() {
    let port = sharded_proxy();
    drop(bitems(port).await);
    let all: Vec<u8> = (0..=255u8).collect();
    let ids: Vec<i64> = (4000..4008).collect();
    let value = |i: i64| -> Vec<u8> {
        let mut v = all.clone();
        v.rotate_left(i as usize % 256);
        v
    };
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, BULK).await;
    let rows: Vec<Vec<P>> = ids
        .iter()
        .map(|&i| {
            vec![
                P::Int(Some(i)),
                P::Bytes(Some(value(i))),
                P::Bytes(Some(value(i + 1))),
            ]
        })
        .collect();
    let sql = "INSERT INTO bitems (id, b, vb) VALUES (?, ?, ?)";
    let r = prepared_bulk(&mut c, sql, &rows).await;
    assert_eq!(r.map(|a| a.0), Ok(8));
    c.quit().await;
    let per_shard: Vec<Vec<BlobRow>> =
        on_shards("SELECT id, b, vb FROM app.bitems WHERE id BETWEEN 4000 AND 4007").await;
    assert!(per_shard.iter().all(|s| !s.is_empty()), "both shards");
    let mut stored = per_shard.concat();
    stored.sort();
    let want: Vec<_> = ids.iter().map(|&i| (i, value(i), value(i + 1))).collect();
    assert_eq!(stored, want, "the bytes as sent");
}

/// Inside a transaction: a bulk whose rows are all on one shard joins it (ROLLBACK undoes
/// it); one spanning shards is refused under `multi_shard_transactions = "refuse"`, as a
/// split multi-row INSERT is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_in_a_transaction_joins_it() {
    let port = sharded_proxy();
    let (mut app, _) = bitems(port).await;
    // Which shard each key belongs to: seeded through the proxy, read from the shards.
    let ids: Vec<i64> = (5000..5010).collect();
    for &i in &ids {
        app.exec_drop("INSERT INTO bitems (id, v) VALUES (?, 'seed')", (i,))
            .await
            .expect("seed");
    }
    let per_shard: Vec<Vec<i64>> =
        on_shards("SELECT id FROM app.bitems WHERE id BETWEEN 5000 AND 5009 ORDER BY id").await;
    for &i in &ids {
        app.exec_drop("DELETE FROM bitems WHERE id = ?", (i,))
            .await
            .expect("clean");
    }
    let (one, other) = (&per_shard[0], &per_shard[1]);
    assert!(!one.is_empty() && !other.is_empty(), "{per_shard:?}");
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, BULK).await;
    let stmt = c
        .prepare("INSERT INTO bitems (id, v) VALUES (?, ?)")
        .await
        .expect("prepare");
    let rows_of = |ids: &[i64]| -> Vec<Vec<P>> {
        ids.iter()
            .map(|&i| vec![P::Int(Some(i)), P::Bytes(Some(b"t".to_vec()))])
            .collect()
    };
    assert_eq!(c.query("BEGIN").await, vec![Reply::Ok(0)]);
    let r = bulk_answer(&mut c, &bulk_of(stmt, &rows_of(one))).await;
    assert_eq!(r.map(|a| a.0), Ok(one.len() as u64), "one shard's rows");
    let both = [one[0], other[0]];
    let r = bulk_answer(&mut c, &bulk_of(stmt, &rows_of(&both))).await;
    assert_eq!(
        r,
        Err(1105),
        "rows of two shards in a transaction are refused"
    );
    assert_eq!(c.query("ROLLBACK").await, vec![Reply::Ok(0)]);
    c.quit().await;
    let left: Vec<Vec<i64>> =
        on_shards("SELECT id FROM app.bitems WHERE id BETWEEN 5000 AND 5009").await;
    assert_eq!(left.concat(), Vec::<i64>::new(), "rolled back");
}

/// A bulk UPDATE without its key (scatter writes allowed) runs every row on every shard: the
/// affected rows one server counts. A bulk of a read of several shards gets the error MariaDB
/// gives a bulk of a statement with a result set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_scatter_update_runs_every_row_on_every_shard() {
    let port = sharded_proxy();
    let (_app, direct) = bitems(port).await;
    let ids: Vec<i64> = (6000..6012).collect();
    let mut answers = Vec::new();
    for (target, table) in [(shard_port("s0"), direct.as_str()), (port, "bitems")] {
        let (mut c, _) = Raw::login(target, "app", "app", CAPS, BULK).await;
        let rows: Vec<Vec<P>> = ids
            .iter()
            .map(|&i| row(i, &format!("g{}", i % 3), Some(i)))
            .collect();
        let sql = format!("INSERT INTO {table} (id, v, n) VALUES (?, ?, ?)");
        prepared_bulk(&mut c, &sql, &rows).await.expect("insert");
        let sql = format!("UPDATE {table} SET n = ? WHERE v = ? AND id BETWEEN 6000 AND 6011");
        let rows: Vec<Vec<P>> = ["g0", "g2", "none"]
            .iter()
            .map(|g| vec![P::Int(Some(7)), P::Bytes(Some(g.as_bytes().to_vec()))])
            .collect();
        let updated = prepared_bulk(&mut c, &sql, &rows).await;
        let sql = format!("SELECT id FROM {table} WHERE v = ?");
        let read = prepared_bulk(
            &mut c,
            &sql,
            &rows[..1]
                .iter()
                .map(|r| r[1..].to_vec())
                .collect::<Vec<_>>(),
        )
        .await;
        answers.push((updated, read));
        c.quit().await;
    }
    let (direct_update, direct_read) = &answers[0];
    assert_eq!(direct_update.as_ref().map(|a| a.0), Ok(8), "directly");
    let (update, read) = &answers[1];
    let rows_and_text = |a: &Result<BulkOk, u16>| a.clone().map(|a| (a.0, a.3));
    assert_eq!(
        rows_and_text(update),
        rows_and_text(direct_update),
        "as directly"
    );
    assert_eq!(direct_read, &Err(1295), "MariaDB refuses a bulk read");
    assert_eq!(read, direct_read, "so does the proxy");
    let stored: Vec<Vec<(i64, Option<i64>)>> =
        on_shards("SELECT id, n FROM app.bitems WHERE id BETWEEN 6000 AND 6011").await;
    let mut stored = stored.concat();
    stored.sort();
    let want: Vec<(i64, Option<i64>)> = ids
        .iter()
        .map(|&i| (i, Some(if i % 3 == 1 { i } else { 7 })))
        .collect();
    assert_eq!(stored, want);
}

/// A bulk `INSERT ... RETURNING` answers with a result set: of one shard it is forwarded; split
/// between shards (results the proxy would have to merge) it is refused, and the session and
/// its server connections stay in step (the next statements get their own answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_returning_split_between_shards_is_refused_cleanly() {
    let port = sharded_proxy();
    drop(bitems(port).await);
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, BULK).await;
    let stmt = c
        .prepare("INSERT INTO bitems (id, v) VALUES (?, ?) RETURNING id")
        .await
        .expect("prepare");
    let rows: Vec<Vec<P>> = (7000..7008)
        .map(|i| vec![P::Int(Some(i)), P::Bytes(Some(b"r".to_vec()))])
        .collect();
    refused(c.command(&bulk_of(stmt, &rows)).await);
    in_step(&mut c).await;
    let stored: Vec<Vec<i64>> =
        on_shards("SELECT id FROM app.bitems WHERE id BETWEEN 7000 AND 7007").await;
    assert_eq!(stored.concat(), Vec::<i64>::new(), "nothing ran");
    // Rows of one shard: the shard's own answer, its result set (binary rows), passed on.
    let one = stored_shard_of(port, 7100..7120).await;
    let rows: Vec<Vec<P>> = one
        .iter()
        .map(|&i| vec![P::Int(Some(i)), P::Bytes(Some(b"r".to_vec()))])
        .collect();
    let replies = c.command(&bulk_of(stmt, &rows)).await;
    let want: Vec<Vec<u8>> = one
        .iter()
        .map(|i| {
            let mut r = vec![0, 0]; // binary row header, NULL bitmap
            r.extend_from_slice(&i.to_le_bytes());
            r
        })
        .collect();
    assert!(
        matches!(replies.as_slice(), [Reply::Rows { rows, .. }] if rows == &want),
        "the returned ids: {replies:?}"
    );
    c.quit().await;
}

fn refused(replies: Vec<Reply>) {
    assert!(
        matches!(replies.as_slice(), [Reply::Err(1235, _)]),
        "refused: {replies:?}"
    );
}

/// The session's next statements get their own answers (no result left over on a server
/// connection).
async fn in_step(c: &mut Raw) {
    for _ in 0..2 {
        let r = c.query("SELECT 41 + 1").await;
        assert!(
            matches!(r.as_slice(), [Reply::Rows { rows, .. }] if rows == &vec![b"\x0242".to_vec()]),
            "the next statement's own answer: {r:?}"
        );
    }
}

/// Keys in `range` that s0 owns (seeded through the proxy, read from s0, deleted again).
async fn stored_shard_of(port: u16, range: std::ops::Range<i64>) -> Vec<i64> {
    let mut app = common::connect(&format!(
        "mysql://app:app@127.0.0.1:{port}/app?prefer_socket=false"
    ))
    .await;
    for i in range.clone() {
        app.exec_drop("INSERT INTO bitems (id, v) VALUES (?, 'seed')", (i,))
            .await
            .expect("seed");
    }
    let sql = format!(
        "SELECT id FROM app.bitems WHERE id BETWEEN {} AND {} ORDER BY id",
        range.start,
        range.end - 1
    );
    let on_s0: Vec<i64> = on_shards(&sql).await.swap_remove(0);
    for i in range {
        app.exec_drop("DELETE FROM bitems WHERE id = ?", (i,))
            .await
            .expect("clean");
    }
    on_s0
}

/// MariaDB's RETURNING on a write the proxy runs shard by shard (a split INSERT, a scatter
/// DELETE, text or prepared) is refused before anything runs, and the session stays in step.
/// Before: the client got OK(0) and its next statement another command's result set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_on_a_write_of_several_shards_is_refused_cleanly() {
    let port = sharded_proxy();
    let (mut app, _) = bitems(port).await;
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, 0).await;
    let values: Vec<String> = (7300..7310).map(|i| format!("({i}, 'x')")).collect();
    let insert = format!(
        "INSERT INTO bitems (id, v) VALUES {} RETURNING id",
        values.join(", ")
    );
    refused(c.query(&insert).await);
    in_step(&mut c).await;
    c.quit().await;
    let stored: Vec<Vec<i64>> =
        on_shards("SELECT id FROM app.bitems WHERE id BETWEEN 7300 AND 7309").await;
    assert_eq!(stored.concat(), Vec::<i64>::new(), "nothing ran");
    app.query_drop("INSERT INTO bitems (id, v) VALUES (7320, 'del'), (7321, 'del'), (7322, 'del')")
        .await
        .expect("insert");
    let r = app
        .exec_iter("DELETE FROM bitems WHERE v = ? RETURNING id", ("del",))
        .await
        .map(drop);
    assert!(
        matches!(&r, Err(mysql_async::Error::Server(e)) if e.code == 1235),
        "a prepared scatter DELETE ... RETURNING: {r:?}"
    );
    let left: Vec<i64> = app
        .query("SELECT id FROM bitems WHERE v = 'del' ORDER BY id")
        .await
        .expect("read");
    assert_eq!(left, vec![7320, 7321, 7322], "nothing deleted");
}

/// COM_STMT_EXECUTE of statement `stmt` with (LONGLONG id, VAR_STRING v, `n`), where `n` is
/// TINY `Some(1)` bytes or LONGLONG; `types`: whether the types are sent.
fn execute_packet(stmt: u32, id: i64, v: &str, n: &[u8], types: bool) -> Vec<u8> {
    let mut p = vec![0x17];
    p.extend_from_slice(&stmt.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&1u32.to_le_bytes());
    p.push(0); // NULL bitmap
    p.push(u8::from(types));
    if types {
        let n_type = if n.len() == 1 { 0x01 } else { 0x08 };
        p.extend_from_slice(&[0x08, 0, 0xFD, 0, n_type, 0]);
    }
    p.extend_from_slice(&id.to_le_bytes());
    p.push(v.len() as u8);
    p.extend_from_slice(v.as_bytes());
    p.extend_from_slice(n);
    p
}

/// A bulk binds its parameter types as an execute does: an execute after it that does not
/// send types again means the bulk's, also on a shard's connection that never saw the bulk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_after_a_bulk_reads_the_bulks_types() {
    let port = sharded_proxy();
    drop(bitems(port).await);
    let on_s0 = stored_shard_of(port, 8000..8020).await;
    let on_s1: Vec<i64> = (8000..8020).filter(|i| !on_s0.contains(i)).collect();
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, BULK).await;
    let stmt = c
        .prepare("INSERT INTO bitems (id, v, n) VALUES (?, ?, ?)")
        .await
        .expect("prepare");
    // LONGLONG n, on s0.
    let r = c
        .command(&execute_packet(
            stmt,
            on_s0[0],
            "a",
            &7i64.to_le_bytes(),
            true,
        ))
        .await;
    assert_eq!(r, vec![Reply::Ok(1)]);
    // TINY n, rows on s0 only.
    let mut bulk = vec![0xFA];
    bulk.extend_from_slice(&stmt.to_le_bytes());
    bulk.extend_from_slice(&128u16.to_le_bytes());
    bulk.extend_from_slice(&[0x08, 0, 0xFD, 0, 0x01, 0]);
    bulk.push(0);
    bulk.extend_from_slice(&on_s0[1].to_le_bytes());
    bulk.extend_from_slice(&[0, 1, b'b', 0, 8]);
    assert_eq!(c.command(&bulk).await, vec![Reply::Ok(1)]);
    // No types: the bulk's (TINY), on s1, whose connection has not seen this statement.
    let r = c
        .command(&execute_packet(stmt, on_s1[0], "c", &[9], false))
        .await;
    assert_eq!(r, vec![Reply::Ok(1)], "the bulk's types");
    c.quit().await;
    let mut stored: Vec<(i64, Option<i64>)> = on_shards(&format!(
        "SELECT id, n FROM app.bitems WHERE id IN ({}, {}, {})",
        on_s0[0], on_s0[1], on_s1[0]
    ))
    .await
    .concat();
    stored.sort();
    let mut want = vec![
        (on_s0[0], Some(7)),
        (on_s0[1], Some(8)),
        (on_s1[0], Some(9)),
    ];
    want.sort();
    assert_eq!(stored, want);
}

/// A bulk of more than 16 MiB (several physical packets from the client) split between
/// shards: every row's BLOB stored intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_over_16_mib_splits_intact() {
    let port = sharded_proxy();
    drop(bitems(port).await);
    let ids: Vec<i64> = (9000..9018).collect();
    let value = |i: i64| -> Vec<u8> {
        (0..(1usize << 20) + 7)
            .map(|k| (k as i64 * 31 + i) as u8)
            .collect()
    };
    let rows: Vec<Vec<P>> = ids
        .iter()
        .map(|&i| vec![P::Int(Some(i)), P::Bytes(Some(value(i)))])
        .collect();
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, BULK).await;
    let stmt = c
        .prepare("INSERT INTO bitems (id, b) VALUES (?, ?)")
        .await
        .expect("prepare");
    let packet = bulk_of(stmt, &rows);
    assert!(packet.len() > 1 << 24, "over one physical packet");
    let r = bulk_answer(&mut c, &packet).await;
    assert_eq!(r.map(|a| a.0), Ok(18));
    in_step(&mut c).await;
    c.quit().await;
    let per_shard: Vec<Vec<(i64, Vec<u8>)>> =
        on_shards("SELECT id, b FROM app.bitems WHERE id BETWEEN 9000 AND 9017").await;
    assert!(per_shard.iter().all(|s| !s.is_empty()), "both shards");
    let mut stored = per_shard.concat();
    stored.sort();
    assert_eq!(stored.len(), ids.len());
    for ((id, b), &want) in stored.iter().zip(&ids) {
        assert_eq!(*id, want);
        assert!(*b == value(want), "row {id}: the bytes as sent");
    }
}
