//! The copy phase of a reshard against real MariaDB: 2 shards grow to 3 (`add_shard`), and
//! every row whose key the new ring gives to s2 is copied there from s0 and s1, byte for byte
//! (every byte value in a BLOB, DECIMAL, DATETIME(6), DOUBLE, NULL, a generated column), in
//! chunks each read from a consistent snapshot with its GTID position; nothing else moves, and
//! copying again changes nothing.

mod common;

use std::collections::BTreeMap;

use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use shardgate::reshard::copy::{copy_chunk, create_like, Position, Side, TableShape};
use shardgate::reshard::verify::verify_chunk;
use shardgate::shardmap::ring::Ring;

async fn root(port: u16) -> Conn {
    common::connect(&common::root_url(port)).await
}

/// Every row of `app.items` on `port`, by id, as the binary protocol returns it.
async fn rows(port: u16) -> BTreeMap<i64, Vec<Value>> {
    let mut c = root(port).await;
    let rows: Vec<Row> = c
        .exec(
            "SELECT id, v, d, at, x, blob_col, doubled FROM app.items",
            (),
        )
        .await
        .expect("rows");
    rows.into_iter()
        .map(|r| {
            let v = r.unwrap();
            let id = match &v[0] {
                Value::Int(i) => *i,
                other => panic!("id {other:?}"),
            };
            (id, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_rows_are_copied_to_the_new_shard_exactly_and_idempotently() {
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
        "CREATE TABLE items (id BIGINT PRIMARY KEY, v VARCHAR(20), d DECIMAL(12,4), \
         at DATETIME(6), x DOUBLE, blob_col BLOB, doubled BIGINT AS (id * 2) VIRTUAL)",
    )
    .await
    .expect("create");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    for id in 1..=600i64 {
        let blob = if id % 7 == 0 {
            Value::NULL
        } else {
            Value::Bytes(
                all_bytes
                    .iter()
                    .cycle()
                    .skip(id as usize)
                    .take(300)
                    .copied()
                    .collect(),
            )
        };
        c.exec_drop(
            "INSERT INTO items (id, v, d, at, x, blob_col) VALUES (?, ?, ?, ?, ?, ?)",
            (
                id,
                format!("v{id}"),
                Value::Bytes(format!("{id}.{:04}", id % 10_000).into_bytes()),
                Value::Date(
                    2026,
                    12,
                    7,
                    10,
                    (id % 60) as u8,
                    3,
                    (id * 997 % 1_000_000) as u32,
                ),
                id as f64 / 3.0,
                blob,
            ),
        )
        .await
        .expect("insert");
    }
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    let s2 = added.servers[0].port;
    let (p0, p1) = (sb.cluster.servers[0].port, sb.cluster.servers[1].port);
    let before = [rows(p0).await, rows(p1).await];
    assert_eq!(before[0].len() + before[1].len(), 600);

    let old = Ring::new(&["s0", "s1"], 256);
    let new = Ring::new(&["s0", "s1", "s2"], 256);
    let arcs = old.moved_arcs(&new);
    let mut target = root(s2).await;
    let mut positions = Vec::new();
    for round in 0..2 {
        for (from, port) in [(0usize, p0), (1, p1)] {
            let mut source = root(port).await;
            let name = format!("127.0.0.1:{port}");
            let mut src = Side {
                conn: &mut source,
                name: &name,
            };
            let mut dst = Side {
                conn: &mut target,
                name: "s2",
            };
            let created = create_like(&mut src, &mut dst, "app", "items")
                .await
                .expect("create like");
            assert_eq!(created, round == 0 && from == 0, "created once");
            let shape = TableShape::read(src.conn, &name, "app", "items", "id")
                .await
                .expect("shape");
            assert!(
                !shape.columns.iter().any(|c| c == "doubled"),
                "generated: left out"
            );
            let moves = |h: u64| arcs.iter().any(|a| a.from == from && a.contains(h));
            let mut after: Option<Vec<Value>> = None;
            let (mut read, mut chunks) = (0, 0);
            loop {
                // Both ways of reporting the position: exact in the first round, cheap in the
                // second.
                let position = if round == 0 {
                    Position::Exact
                } else {
                    Position::AtOrBefore
                };
                let chunk = copy_chunk(
                    &mut src,
                    &mut dst,
                    &shape,
                    after.as_deref(),
                    64,
                    &moves,
                    position,
                )
                .await
                .expect("chunk");
                read += chunk.read;
                chunks += 1;
                positions.push(chunk.position.clone());
                match chunk.last_key {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
            assert_eq!(read, before[from].len(), "every row of {name} read once");
            assert!(chunks > 3, "in chunks of 64: {chunks}");
        }
        // Exactly the rows the new ring gives to s2, as they are on their source.
        let copied = rows(s2).await;
        let mut want = BTreeMap::new();
        for side in &before {
            for (id, v) in side {
                let text = id.to_string();
                let h = shardgate::shardmap::ring::key_hash(
                    &shardgate::shardmap::ring::KeyValue::from_number_text(text.as_bytes()),
                );
                if new.shard_names()[new.shard_for(h)] == "s2" {
                    want.insert(*id, v.clone());
                }
            }
        }
        assert!(want.len() > 100, "about a third moves: {}", want.len());
        assert_eq!(copied.len(), want.len(), "round {round}");
        for (id, v) in &want {
            assert_eq!(copied.get(id), Some(v), "row {id} differs on s2");
        }
    }
    // The sources are untouched by the copy.
    assert_eq!([rows(p0).await, rows(p1).await], before);
    // Verify finds nothing after the copy, then each kind of difference once introduced.
    let verify_all = |port: u16, from: usize| {
        let arcs = arcs.clone();
        async move {
            let mut source = root(port).await;
            let mut target = root(s2).await;
            let name = format!("127.0.0.1:{port}");
            let mut src = Side {
                conn: &mut source,
                name: &name,
            };
            let mut dst = Side {
                conn: &mut target,
                name: "s2",
            };
            let shape = TableShape::read(src.conn, &name, "app", "items", "id")
                .await
                .expect("shape");
            let moves = |h: u64| arcs.iter().any(|a| a.from == from && a.contains(h));
            let (mut after, mut found) =
                (None::<Vec<Value>>, (0, Vec::new(), Vec::new(), Vec::new()));
            loop {
                let c = verify_chunk(&mut src, &mut dst, &shape, after.as_deref(), 50, &moves)
                    .await
                    .expect("verify");
                found.0 += c.moving_rows;
                found.1.extend(c.missing);
                found.2.extend(c.extra);
                found.3.extend(c.different);
                match c.last_key {
                    Some(k) => after = Some(k),
                    None => return found,
                }
            }
        }
    };
    let (n0, m, e, d) = verify_all(p0, 0).await;
    let (n1, m1, e1, d1) = verify_all(p1, 1).await;
    assert_eq!(n0 + n1, rows(s2).await.len(), "every copied row checked");
    assert!(
        m.is_empty() && e.is_empty() && d.is_empty(),
        "{m:?} {e:?} {d:?}"
    );
    assert!(
        m1.is_empty() && e1.is_empty() && d1.is_empty(),
        "{m1:?} {e1:?} {d1:?}"
    );
    let moved_from_s0: Vec<i64> = rows(s2)
        .await
        .keys()
        .copied()
        .filter(|id| before[0].contains_key(id))
        .collect();
    let (gone, changed) = (moved_from_s0[0], moved_from_s0[1]);
    let mut t = root(s2).await;
    t.exec_drop("DELETE FROM app.items WHERE id = ?", (gone,))
        .await
        .expect("delete");
    t.exec_drop(
        "UPDATE app.items SET v = 'changed' WHERE id = ?",
        (changed,),
    )
    .await
    .expect("update");
    // A row deleted on the source whose delete never reached the target.
    let deleted = moved_from_s0[2];
    root(p0)
        .await
        .exec_drop("DELETE FROM app.items WHERE id = ?", (deleted,))
        .await
        .expect("delete on the source");
    // And a moving key past the source's last one, on the target only.
    let beyond = (1_000_000i64..)
        .find(|id| {
            let text = id.to_string();
            let h = shardgate::shardmap::ring::key_hash(
                &shardgate::shardmap::ring::KeyValue::from_number_text(text.as_bytes()),
            );
            arcs.iter().any(|a| a.from == 0 && a.contains(h))
        })
        .expect("a key moving from s0");
    t.exec_drop(
        "INSERT INTO app.items (id, v) VALUES (?, 'beyond')",
        (beyond,),
    )
    .await
    .expect("beyond");
    let (_, m, mut e, d) = verify_all(p0, 0).await;
    e.sort();
    let mut want_extra = vec![deleted.to_string(), beyond.to_string()];
    want_extra.sort();
    assert_eq!(m, vec![gone.to_string()], "missing");
    assert_eq!(d, vec![changed.to_string()], "different");
    assert_eq!(e, want_extra, "extra");

    // Each chunk's position is a GTID position of its source.
    assert!(positions
        .iter()
        .all(|p| !p.is_empty() && p.split(',').all(|g| g.split('-').count() == 3)));
}
