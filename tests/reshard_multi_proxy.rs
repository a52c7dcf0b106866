//! Online resharding with two proxies sharing etcd: 2 -> 3 shards driven through proxy 1's
//! admin API while 8 writers (4 on each proxy) insert and increment. The cutover holds the
//! keyspace on both proxies; afterwards proxy 2 serves the new map, routes moved keys to s2
//! and shows the workflow proxy 1 coordinates. Then back to 2 shards, coordinated by proxy 2.
//! The writers' ledger holds on the final ring and nothing is left on s2.

mod common;

use std::time::{Duration, Instant};

use common::reshard::{self as rs, Writers};
use common::{AdminProxy, Frozen};
use mysql_async::prelude::*;
use serde_json::{json, Value};

/// `store.proxy_id` of `GET /api/v1/topology`.
async fn proxy_id(p: &AdminProxy) -> String {
    p.get_json("/api/v1/topology").await["store"]["proxy_id"]
        .as_str()
        .expect("proxy_id")
        .to_string()
}

/// Waits until `p` sees `n` live proxies in etcd.
async fn sees_proxies(p: &AdminProxy, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let store = p.get_json("/api/v1/topology").await["store"].clone();
        if store["up"] == true && store["proxies"].as_array().map_or(0, Vec::len) == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxy {} does not see {n} proxies: {store}",
            p.port
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shard names of keyspace `app` in `p`'s current shard map.
async fn app_shards(p: &AdminProxy) -> Vec<String> {
    let m = p.get_json("/api/v1/shardmap").await;
    m["current"]["keyspace"]["app"]["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("no app shards in {m:#}"))
        .iter()
        .map(|s| s["name"].as_str().expect("shard name").to_string())
        .collect()
}

/// Proxy 2's status of the workflow, which proxy 1 runs.
async fn remote_status(p: &AdminProxy) -> Value {
    let r = p.get("/api/v1/reshard/status?keyspace=app").await;
    assert_eq!(
        r.status,
        200,
        "status on proxy {} (not the coordinator): {}",
        p.port,
        r.text()
    );
    serde_json::from_slice(&r.body).expect("status json")
}

/// A sandbox of 2 shards (`items` sharded by id) and 2 proxies sharing etcd with a lease of
/// `lease_secs`, each seeing the other.
async fn two_proxies(lease_secs: u64) -> (common::Sandbox, AdminProxy, AdminProxy) {
    let sb = common::start_cluster_with(&[
        "--shards",
        "2",
        "--replicas",
        "0",
        "--proxies",
        "2",
        "--sharded-table",
        "items:id",
    ]);
    let configs = sb.proxy_configs();
    assert_eq!(configs.len(), 2, "{configs:?}");
    let lease = format!("[topology]\nlease_ttl_secs = {lease_secs}\n");
    let p1 = sb.admin_proxy_from(&configs[0], &lease);
    let p2 = sb.admin_proxy_from(&configs[1], &lease);
    sees_proxies(&p1, 2).await;
    sees_proxies(&p2, 2).await;
    (sb, p1, p2)
}

/// An id the 3-shard ring gives to s2, above every writer's ids.
fn id_owned_by_s2() -> i64 {
    let ring = shardgate::shardmap::ring::Ring::new(&["s0", "s1", "s2"], 256);
    (900_000_000..)
        .find(|id| ring.shard_names()[ring.shard_for(rs::hash(*id))] == "s2")
        .expect("an id on s2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_to_three_to_two_shards_with_two_proxies() {
    // The product's default lease (the sandbox's 2 s makes failover tests quick): under a
    // loaded CI machine a 2 s lease can lapse, and the proxy would then hold the keyspace
    // until it has read the map again (see the README's Status).
    let (sb, p1, p2) = two_proxies(5).await;
    let coordinator = proxy_id(&p1).await;
    assert_ne!(coordinator, proxy_id(&p2).await);

    let url1 = common::app_url(p1.port, "app");
    let url2 = common::app_url(p2.port, "app");
    rs::load(&url1).await;
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    let mut primaries: Vec<(String, u16)> = ["s0", "s1"]
        .iter()
        .map(|s| (s.to_string(), sb.cluster.primary(s).expect("primary").port))
        .collect();
    primaries.push(("s2".into(), added.servers[0].port));

    let writers = Writers::start(&[url1.clone(), url2.clone()], 8);
    tokio::time::sleep(Duration::from_secs(1)).await;

    rs::post(
        &p1,
        "/api/v1/reshard/start",
        json!({"keyspace": "app", "add": added.add_arg()}),
    )
    .await;
    rs::wait_status(&p1, Duration::from_secs(180), |s| rs::phase(s) == "running").await;
    // Proxy 2 shows the workflow from etcd: proxy 1 runs it.
    let s = remote_status(&p2).await;
    assert_eq!(s["coordinator"], coordinator.as_str(), "{s:#}");
    assert_eq!(rs::phase(&s), "running", "{s:#}");
    assert_eq!(s["keyspace"], "app", "{s:#}");
    rs::verify_clean(&p1).await;
    let attempt = rs::cutover(&p1, "/api/v1/reshard/cutover", 2000).await;
    eprintln!("cutover to 3 shards: {attempt:#}");

    // Proxy 2 applied the new map from its watch.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shards = app_shards(&p2).await;
        if shards.iter().any(|s| s == "s2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy 2 still serves {shards:?} after the cutover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = remote_status(&p2).await;
    assert_eq!(rs::phase(&s), "switched", "{s:#}");
    assert_eq!(s["coordinator"], coordinator.as_str(), "{s:#}");
    assert_eq!(
        s["rows_copied"],
        rs::status(&p1).await["rows_copied"],
        "proxy 2's figures: {s:#}"
    );

    // A key that moved to s2, written through proxy 2, lands on s2 (and proxy 2's hold was
    // released: the statement does not wait).
    let probe = id_owned_by_s2();
    let mut c = common::connect(&url2).await;
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(5),
        c.query_drop(format!(
            "INSERT INTO items (id, n, w) VALUES ({probe}, 0, 99)"
        )),
    )
    .await
    .expect("the insert through proxy 2 waited 5 s")
    .expect("insert through proxy 2");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the insert through proxy 2 waited {:?}",
        started.elapsed()
    );
    let mut s2 = common::connect(&common::root_url(added.servers[0].port)).await;
    let on_s2: Option<i64> = s2
        .query_first(format!("SELECT id FROM app.items WHERE id = {probe}"))
        .await
        .expect("read s2");
    assert_eq!(on_s2, Some(probe), "the write through proxy 2 is not on s2");
    c.query_drop(format!("DELETE FROM items WHERE id = {probe}"))
        .await
        .expect("delete the probe");
    let _ = c.disconnect().await;
    let _ = s2.disconnect().await;

    // Writes after the cutover go on through both proxies.
    let before = writers.ops();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        writers.ops() > before + 50,
        "writers stalled after the cutover"
    );
    rs::post(&p1, "/api/v1/reshard/complete", json!({"keyspace": "app"})).await;
    rs::wait_status(&p1, Duration::from_secs(120), |s| {
        rs::phase(s) == "completed"
    })
    .await;
    let s = remote_status(&p2).await;
    assert_eq!(rs::phase(&s), "completed", "{s:#}");

    // And back to two shards, driven from proxy 2 this time: either proxy can coordinate.
    let attempt = rs::run_to_switched(&p2, json!({"keyspace": "app", "remove": "s2"}), 2000).await;
    eprintln!("cutover back to 2 shards: {attempt:#}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app_shards(&p1).await.iter().any(|s| s == "s2") {
        assert!(
            Instant::now() < deadline,
            "proxy 1 still routes to s2 after the cutover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rs::post(&p2, "/api/v1/reshard/complete", json!({"keyspace": "app"})).await;
    rs::wait_status(&p2, Duration::from_secs(120), |s| {
        rs::phase(s) == "completed"
    })
    .await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = writers.stop_expecting_no_errors().await;
    rs::check_ledger(&ledger, &primaries, &["s0", "s1"]).await;
    let rows = rs::rows_by_shard(&primaries).await;
    assert!(rows.values().all(|(s, _)| s != "s2"), "rows left on s2");
}

/// A proxy frozen longer than its etcd lease counts as gone, so a cutover switches without
/// its hold. When it thaws, a write it reads at once (sent while it was frozen) to a key the
/// cutover moved must not reach the key's old owner: while a workflow may switch a keyspace,
/// the proxy serves it only under a current lease and after reading the map under that lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_whose_lease_lapsed_during_a_cutover_rereads_the_map_first() {
    let (sb, p1, p2) = two_proxies(2).await;
    let url1 = common::app_url(p1.port, "app");
    let url2 = common::app_url(p2.port, "app");
    rs::load(&url1).await;
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    rs::post(
        &p1,
        "/api/v1/reshard/start",
        json!({"keyspace": "app", "add": added.add_arg()}),
    )
    .await;
    rs::wait_status(&p1, Duration::from_secs(180), |s| rs::phase(s) == "running").await;
    rs::verify_clean(&p1).await;
    // Proxy 2 reads the workflows from etcd every second.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let probe = id_owned_by_s2();
    let mut c = common::connect(&url2).await;
    c.query_drop("SELECT 1").await.expect("proxy 2 answers");
    let frozen = Frozen::stop(&p2);
    sees_proxies(&p1, 1).await;
    let attempt = rs::cutover(&p1, "/api/v1/reshard/cutover", 2000).await;
    assert_eq!(attempt["outcome"], "switched", "{attempt:#}");
    let write = tokio::spawn(async move {
        let r = c
            .query_drop(format!(
                "INSERT INTO items (id, n, w) VALUES ({probe}, 0, 98)"
            ))
            .await;
        (c, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(frozen);
    let (mut c, r) = tokio::time::timeout(Duration::from_secs(60), write)
        .await
        .expect("the write through the thawed proxy got no answer")
        .expect("task");
    r.expect("the write through the thawed proxy");

    let on = |port: u16| async move {
        let mut db = common::connect(&common::root_url(port)).await;
        let n: Option<i64> = db
            .query_first(format!("SELECT COUNT(*) FROM app.items WHERE id = {probe}"))
            .await
            .expect("count");
        let _ = db.disconnect().await;
        n.unwrap_or(0)
    };
    // Written to its old owner instead, it would never reach s2: the forward stream ended at
    // the cutover. (The old owner may hold a copy: the reverse stream brings s2's writes back
    // until `complete`.)
    assert_eq!(
        on(added.servers[0].port).await,
        1,
        "not on s2, its owner under the map published while proxy 2 was frozen"
    );
    c.query_drop(format!("DELETE FROM items WHERE id = {probe}"))
        .await
        .expect("clean");
    let _ = c.disconnect().await;
}

/// The status of `p`'s workflow on `app` (its own runner's, else etcd's).
async fn coordinator_seen_by(p: &AdminProxy) -> String {
    let s = rs::status(p).await;
    s["coordinator"].as_str().unwrap_or_default().to_string()
}

/// A workflow has one coordinator at a time, under a lock bound to its etcd lease: when the
/// coordinating proxy is frozen past its lease, the other proxy takes the workflow over from
/// its stored state (its streams go on there); the frozen one, thawed, gives the workflow up
/// instead of writing beside it. The workflow then switches and completes from the new
/// coordinator, and the writers' ledger holds on the final ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_proxy_takes_a_workflow_over_when_its_coordinator_is_gone() {
    let (sb, p1, p2) = two_proxies(2).await;
    let (id1, id2) = (proxy_id(&p1).await, proxy_id(&p2).await);
    let url2 = common::app_url(p2.port, "app");
    rs::load(&url2).await;
    let added = shardgate::sandbox::add_shard(&sb.dir)
        .await
        .expect("add shard");
    let mut primaries: Vec<(String, u16)> = ["s0", "s1"]
        .iter()
        .map(|s| (s.to_string(), sb.cluster.primary(s).expect("primary").port))
        .collect();
    primaries.push(("s2".into(), added.servers[0].port));
    let writers = Writers::start(std::slice::from_ref(&url2), 4);

    rs::post(
        &p1,
        "/api/v1/reshard/start",
        json!({"keyspace": "app", "add": added.add_arg()}),
    )
    .await;
    rs::wait_status(&p1, Duration::from_secs(180), |s| rs::phase(s) == "running").await;
    assert_eq!(coordinator_seen_by(&p2).await, id1);
    // A command sent to the proxy that does not coordinate names the one that does.
    let r = p2
        .post(
            "/api/v1/reshard/verify",
            Some(&json!({"keyspace": "app"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains(&id1), "{}", r.text());

    let frozen = Frozen::stop(&p1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while coordinator_seen_by(&p2).await != id2 {
        assert!(
            Instant::now() < deadline,
            "proxy 2 did not take the workflow over: {:#}",
            rs::status(&p2).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rs::wait_status(&p2, Duration::from_secs(60), |s| {
        rs::phase(s) == "running"
            && s["streams"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["state"] == "running"))
    })
    .await;
    drop(frozen);
    // Thawed, proxy 1 finds the lock taken and gives the workflow up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while coordinator_seen_by(&p1).await != id2 {
        assert!(
            Instant::now() < deadline,
            "proxy 1 still runs the workflow after the takeover: {:#}",
            rs::status(&p1).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    rs::verify_clean(&p2).await;
    let attempt = rs::cutover(&p2, "/api/v1/reshard/cutover", 2000).await;
    assert_eq!(attempt["outcome"], "switched", "{attempt:#}");
    rs::post(&p2, "/api/v1/reshard/complete", json!({"keyspace": "app"})).await;
    rs::wait_status(&p2, Duration::from_secs(120), |s| {
        rs::phase(s) == "completed"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ledger = writers.stop_expecting_no_errors().await;
    rs::check_ledger(&ledger, &primaries, &["s0", "s1", "s2"]).await;
}
