//! MariaDB's extended capabilities through the proxy, compared with the server directly:
//! extended metadata (a JSON column's definition says `json`, what Node mysql2 reads) on an
//! unsharded and a sharded keyspace, and COM_STMT_BULK_EXECUTE (Connector/J's batches) on an
//! unsharded one. Raw-protocol clients, so each negotiates exactly what it asks for.

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
        ])
    })
}

fn proxy_of(sb: &'static Sandbox, slot: &'static OnceLock<u16>) -> u16 {
    *slot.get_or_init(|| sb.keep_proxy("[monitor]\ninterval_ms = 200\n"))
}

fn unsharded_proxy() -> u16 {
    static P: OnceLock<u16> = OnceLock::new();
    proxy_of(unsharded(), &P)
}

fn sharded_proxy() -> u16 {
    static P: OnceLock<u16> = OnceLock::new();
    proxy_of(sharded(), &P)
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

/// With a sharded keyspace in the map the proxy does not offer bulk operations (it would have
/// to split the rows between shards); a client that sends the command anyway is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_execute_is_not_offered_with_a_sharded_keyspace() {
    let port = sharded_proxy();
    drop(jdocs(port).await);
    assert_eq!(offered(port).await & BULK, 0, "not offered");
    let (mut c, _) = Raw::login(port, "app", "app", CAPS, BULK).await;
    let stmt = c
        .prepare("INSERT INTO jdocs (id, doc) VALUES (?, ?)")
        .await
        .expect("prepare");
    let replies = c.command(&bulk_packet(stmt, &[(500, "{}")])).await;
    assert!(
        matches!(replies.as_slice(), [Reply::Err(1047, _)]),
        "refused: {replies:?}"
    );
    c.quit().await;
}
