//! Online resharding end to end against real MariaDB: 2 -> 3 -> 2 shards while 8 writers
//! insert and increment through the proxy. After each cutover the proxy routes the moved keys
//! to their new owner; after each `complete` no row is on two shards; the ledger of what the
//! writers were told holds: every acknowledged insert exists exactly once, on its owner under
//! the final ring, and every counter equals its acknowledged increments.

mod common;

use std::time::Duration;

use common::reshard::{self as rs, Writers};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_to_three_to_two_shards_while_writers_write() {
    let sb = common::start_cluster_with(&[
        "--shards",
        "2",
        "--replicas",
        "1",
        "--sharded-table",
        "items:id",
    ]);
    let proxy = sb.admin_proxy("");
    let url = common::app_url(proxy.port, "app");
    rs::load(&url).await;
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    let primaries = |with_s2: bool| {
        let mut v: Vec<(String, u16)> = ["s0", "s1"]
            .iter()
            .map(|s| (s.to_string(), sb.cluster.primary(s).expect("primary").port))
            .collect();
        if with_s2 {
            v.push(("s2".into(), added.servers[0].port));
        }
        v
    };

    let writers = Writers::start(std::slice::from_ref(&url), 8);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2 -> 3.
    let attempt = rs::run_to_switched(
        &proxy,
        json!({"keyspace": "app", "add": added.add_arg()}),
        2000,
    )
    .await;
    eprintln!("cutover to 3 shards: {attempt:#}");
    let s = rs::status(&proxy).await;
    assert_eq!(rs::phase(&s), "switched", "{s:#}");
    assert!(
        s["rows_copied"].as_u64().unwrap_or(0) > 0,
        "rows copied: {s:#}"
    );
    // Writes after the cutover go to the new owner (and the reverse stream copies them back).
    let before = writers.ops();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        writers.ops() > before + 50,
        "writers stalled after the cutover"
    );
    rs::post(
        &proxy,
        "/api/v1/reshard/complete",
        json!({"keyspace": "app"}),
    )
    .await;
    rs::wait_status(&proxy, Duration::from_secs(120), |s| {
        rs::phase(s) == "completed"
    })
    .await;
    let mid = writers.ledger.lock().expect("ledger").inserted.len();
    eprintln!("3 shards: {mid} acknowledged inserts so far");

    // 3 -> 2.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempt =
        rs::run_to_switched(&proxy, json!({"keyspace": "app", "remove": "s2"}), 2000).await;
    eprintln!("cutover back to 2 shards: {attempt:#}");
    rs::post(
        &proxy,
        "/api/v1/reshard/complete",
        json!({"keyspace": "app"}),
    )
    .await;
    rs::wait_status(&proxy, Duration::from_secs(120), |s| {
        rs::phase(s) == "completed"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = writers.stop_expecting_no_errors().await;
    rs::check_ledger(&ledger, &primaries(true), &["s0", "s1"]).await;
    // s2 holds nothing of the keyspace any more.
    let rows = rs::rows_by_shard(&primaries(true)).await;
    assert!(rows.values().all(|(s, _)| s != "s2"), "rows left on s2");
}
