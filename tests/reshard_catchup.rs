//! The catch-up of a reshard against real MariaDB: s0's rows moving to a new s2 are copied,
//! then writes on s0 (inserts, updates, deletes, primary-key changes into and out of the moving
//! arcs, and changes to rows that stay) are read from s0's binlog and applied to s2. Afterwards
//! verify finds s2 equal to s0 on every moving key, the stream's position is stored on s2, and
//! replaying the whole stream again changes nothing.

mod common;

use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use shardgate::reshard::apply::Applier;
use shardgate::reshard::binlog::{BinlogReader, GtidPos, ReaderConfig, Record};
use shardgate::reshard::copy::{copy_chunk, create_like, Position, Side, TableShape};
use shardgate::reshard::verify::verify_chunk;
use shardgate::shardmap::ring::{key_hash, KeyValue, MovedArc, Ring};

async fn root(port: u16) -> Conn {
    let mut c = common::connect(&common::root_url(port)).await;
    c.query_drop("SET time_zone = '+00:00'").await.expect("tz");
    c
}

fn hash(id: i64) -> u64 {
    let text = id.to_string();
    key_hash(&KeyValue::from_number_text(text.as_bytes()))
}

async fn gtid_pos(c: &mut Conn) -> GtidPos {
    let text: String = c
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .expect("pos")
        .expect("row");
    GtidPos::parse(&text).expect("gtid")
}

/// Reads s0's stream from `from` and applies it to s2 until it reached `until`.
async fn catch_up(
    port: u16,
    target: &mut Conn,
    shape: &TableShape,
    arcs: &[MovedArc],
    from: &GtidPos,
    until: &GtidPos,
) -> String {
    let mut cfg = ReaderConfig::new("127.0.0.1", port, "root", "", 4242);
    cfg.schemas = vec!["app".into()];
    let mut reader = BinlogReader::start(&cfg, from).await.expect("stream");
    let arcs = arcs.to_vec();
    let mut applier = Applier::new("app s0->s2", vec![shape.clone()], move |h| {
        arcs.iter().any(|a| a.from == 0 && a.contains(h))
    });
    while !reader.position().covers(until) {
        let rec = tokio::time::timeout(std::time::Duration::from_secs(10), reader.next())
            .await
            .expect("the stream stalled")
            .expect("record");
        match rec {
            Record::Change(c) => applier.add(&c).expect("add"),
            Record::Commit { .. } => {
                let pos = reader.position().to_string();
                applier.commit(target, "s2", &pos).await.expect("commit");
            }
            Record::Statement { .. } => {}
        }
    }
    let pos = reader.position().to_string();
    reader.close().await;
    pos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_the_copy_reach_the_new_owner_exactly_once() {
    let sb = common::start_cluster_with(&[
        "--shards",
        "2",
        "--replicas",
        "0",
        "--sharded-table",
        "items:id",
    ]);
    let proxy = sb.admin_proxy("");
    let mut c = common::connect(&common::app_url(proxy.port, "app")).await;
    c.query_drop(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, v VARCHAR(20), n INT, ts TIMESTAMP(3) NULL)",
    )
    .await
    .expect("create");
    for id in 1..=300i64 {
        c.exec_drop(
            "INSERT INTO items (id, v, n, ts) VALUES (?, ?, ?, '2026-12-07 10:00:00.123')",
            (id, format!("v{id}"), id),
        )
        .await
        .expect("insert");
    }
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    let (p0, s2) = (sb.cluster.servers[0].port, added.servers[0].port);
    let old = Ring::new(&["s0", "s1"], 256);
    let new = Ring::new(&["s0", "s1", "s2"], 256);
    let arcs = old.moved_arcs(&new);
    let moving = |id: i64| arcs.iter().any(|a| a.from == 0 && a.contains(hash(id)));
    let owned_by_s0 = |id: i64| old.shard_names()[old.shard_for(hash(id))] == "s0";

    let mut source = root(p0).await;
    let start = gtid_pos(&mut source).await;
    let mut target = root(s2).await;
    Applier::prepare(&mut target, "s2").await.expect("prepare");
    let name = format!("127.0.0.1:{p0}");
    let shape = {
        let mut src = Side {
            conn: &mut source,
            name: &name,
        };
        let mut dst = Side {
            conn: &mut target,
            name: "s2",
        };
        create_like(&mut src, &mut dst, "app", "items")
            .await
            .expect("create like");
        let shape = TableShape::read(src.conn, &name, "app", "items", "id")
            .await
            .expect("shape");
        let mv = |h: u64| arcs.iter().any(|a| a.from == 0 && a.contains(h));
        let mut after: Option<Vec<Value>> = None;
        loop {
            let chunk = copy_chunk(
                &mut src,
                &mut dst,
                &shape,
                after.as_deref(),
                50,
                &mv,
                Position::AtOrBefore,
            )
            .await
            .expect("chunk");
            match chunk.last_key {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        shape
    };

    // Writes on s0 after the copy (as the proxy would send them under the old ring).
    let on_s0: Vec<i64> = (1..=300).filter(|id| owned_by_s0(*id)).collect();
    let moving_rows: Vec<i64> = on_s0.iter().copied().filter(|id| moving(*id)).collect();
    let staying_rows: Vec<i64> = on_s0.iter().copied().filter(|id| !moving(*id)).collect();
    assert!(moving_rows.len() > 20 && staying_rows.len() > 20);
    let new_moving: Vec<i64> = (1000..)
        .filter(|id| owned_by_s0(*id) && moving(*id))
        .take(5)
        .collect();
    let free_staying = (2000..)
        .find(|id| owned_by_s0(*id) && !moving(*id))
        .expect("id");
    let free_moving = (3000..)
        .find(|id| owned_by_s0(*id) && moving(*id))
        .expect("id");
    for id in &new_moving {
        source
            .exec_drop(
                "INSERT INTO app.items (id, v, n) VALUES (?, 'new', 0)",
                (id,),
            )
            .await
            .expect("insert");
    }
    source.query_drop("BEGIN").await.expect("begin");
    for id in &moving_rows[0..5] {
        source
            .exec_drop(
                "UPDATE app.items SET v = 'upd', n = n + 1, ts = NULL WHERE id = ?",
                (id,),
            )
            .await
            .expect("update");
    }
    for id in &moving_rows[5..8] {
        source
            .exec_drop("DELETE FROM app.items WHERE id = ?", (id,))
            .await
            .expect("delete");
    }
    source.query_drop("COMMIT").await.expect("commit");
    // A moving row whose key leaves the moving arcs, and a staying row whose key enters them.
    source
        .exec_drop(
            "UPDATE app.items SET id = ? WHERE id = ?",
            (free_staying, moving_rows[8]),
        )
        .await
        .expect("key out");
    source
        .exec_drop(
            "UPDATE app.items SET id = ? WHERE id = ?",
            (free_moving, staying_rows[0]),
        )
        .await
        .expect("key in");
    source
        .exec_drop(
            "UPDATE app.items SET v = 'stays' WHERE id = ?",
            (staying_rows[1],),
        )
        .await
        .expect("staying update");
    let until = gtid_pos(&mut source).await;

    for round in 0..2 {
        let pos = catch_up(p0, &mut target, &shape, &arcs, &start, &until).await;
        let stored = Applier::stored_position(&mut target, "s2", "app s0->s2")
            .await
            .expect("stored");
        assert_eq!(stored.as_deref(), Some(pos.as_str()), "round {round}");
        // Verify: s2 holds exactly s0's moving rows.
        let mut src = Side {
            conn: &mut source,
            name: &name,
        };
        let mut dst = Side {
            conn: &mut target,
            name: "s2",
        };
        let mv = |h: u64| arcs.iter().any(|a| a.from == 0 && a.contains(h));
        let mut after: Option<Vec<Value>> = None;
        let mut checked = 0;
        loop {
            let c = verify_chunk(&mut src, &mut dst, &shape, after.as_deref(), 40, &mv)
                .await
                .expect("verify");
            assert!(c.is_clean(), "round {round}: {c:?}");
            checked += c.moving_rows;
            match c.last_key {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        let on_s2: u64 = dst
            .conn
            .query_first("SELECT COUNT(*) FROM app.items")
            .await
            .expect("count")
            .expect("row");
        assert_eq!(on_s2 as usize, checked, "nothing but moving rows on s2");
        let v: Option<String> = dst
            .conn
            .exec_first("SELECT v FROM app.items WHERE id = ?", (moving_rows[0],))
            .await
            .expect("read");
        assert_eq!(v.as_deref(), Some("upd"));
        let gone: Option<i64> = dst
            .conn
            .exec_first(
                "SELECT id FROM app.items WHERE id IN (?, ?)",
                (moving_rows[5], moving_rows[8]),
            )
            .await
            .expect("read");
        assert_eq!(gone, None, "deleted, and moved out of the arcs");
        let came: Option<i64> = dst
            .conn
            .exec_first("SELECT id FROM app.items WHERE id = ?", (free_moving,))
            .await
            .expect("read");
        assert_eq!(
            came,
            Some(free_moving),
            "a key that entered the moving arcs"
        );
    }
}
