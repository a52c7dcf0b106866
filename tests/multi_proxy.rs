//! Several proxies, one truth (issue 14): three proxies sharing the sandbox etcd over one
//! shard (a primary and 2 semi-sync replicas). Each test has a sandbox of its own, writers
//! through every proxy recording each acknowledged id, and checks what the servers hold.
//! Tests run one at a time (`SERIAL`): their timings mean little with another test's servers
//! competing for the CPU.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use serde_json::Value;

use common::ha::{
    create_acked, gtid_binlog_pos, ids_on, kill, longest_wait, master_port, port_of, read_only,
    reads_reach_a_replica, root, server_id, start_load, Load, Log, FAST_HA,
};
use common::{AdminProxy, Frozen, Sandbox};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WRITERS: u64 = 3;

impl AdminProxy {
    /// The primary of `app/s0` in the proxy's current shard map.
    async fn primary(&self) -> String {
        let m = self.get_json("/api/v1/shardmap").await;
        m["current"]["keyspace"]["app"]["shards"][0]["primary"]
            .as_str()
            .expect("primary")
            .to_string()
    }

    async fn map_version(&self) -> u64 {
        self.get_json("/api/v1/ha").await["shard_map_version"]
            .as_u64()
            .expect("version")
    }

    /// `store` of `GET /api/v1/topology`.
    async fn store(&self) -> Value {
        self.get_json("/api/v1/topology").await["store"].clone()
    }

    /// Events of `kind` this proxy recorded.
    async fn events_of(&self, kind: &str) -> Vec<Value> {
        let e = self.get_json("/api/v1/events").await;
        e["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }
}

/// A sandbox with 3 proxies sharing its etcd, each started with `extra`, and `app.acked`
/// replicated everywhere; returns once every proxy sees the 3 live proxies and sends reads
/// to a replica.
async fn setup(extra: &str) -> (Sandbox, Vec<AdminProxy>) {
    let sb = common::start_cluster_with(&["--shards", "1", "--replicas", "2", "--proxies", "3"]);
    let proxies = sb.admin_proxies(&format!("{}\n{extra}", common::FAST_SPLIT));
    ready(&sb, &proxies).await;
    (sb, proxies)
}

async fn ready(sb: &Sandbox, proxies: &[AdminProxy]) {
    create_acked(sb, &proxies[0]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for p in proxies {
        reads_reach_a_replica(sb, p).await;
        loop {
            let store = p.store().await;
            let live = store["proxies"].as_array().map_or(0, Vec::len);
            if store["up"] == true && live == proxies.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "proxy {} does not see the {} proxies: store {store}",
                p.port,
                proxies.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits (up to `within`) until every proxy in `proxies` names the same primary other than
/// `old`, and returns it.
async fn converged_primary(proxies: &[&AdminProxy], old: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for p in proxies {
            seen.push(p.primary().await);
        }
        if seen[0] != old && seen.iter().all(|s| *s == seen[0]) {
            return seen[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "proxies did not agree on a new primary within {within:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes one row with `id` through each proxy and asserts it landed on `primary` (and that
/// the proxy's primary-hinted read is answered by it).
async fn writes_land_on(proxies: &[&AdminProxy], primary: &str, base: u64) {
    let primary_id = server_id(port_of(primary)).await;
    for (i, p) in proxies.iter().enumerate() {
        let id = base + i as u64;
        let mut c = common::connect(&p.url()).await;
        c.exec_drop("INSERT INTO acked (id, writer) VALUES (?, 90)", (id,))
            .await
            .unwrap_or_else(|e| panic!("insert through proxy {}: {e}", p.port));
        let answered: Option<u32> = c
            .query_first("/* shardgate:primary */ SELECT @@server_id")
            .await
            .expect("primary read");
        assert_eq!(answered, Some(primary_id), "proxy {} primary", p.port);
        assert!(
            ids_on(port_of(primary), None).await.contains(&id),
            "the write through proxy {} is not on {primary}",
            p.port
        );
    }
}

/// A load (`WRITERS` writers, a reader) through each proxy, tagged 1, 2, ...
fn loads_through(proxies: &[AdminProxy]) -> Vec<Load> {
    proxies
        .iter()
        .zip(1..)
        .map(|(p, tag)| start_load(&p.url(), tag, WRITERS, 1))
        .collect()
}

async fn stop_all(loads: Vec<Load>) -> Vec<Log> {
    let mut logs = Vec::new();
    for l in loads {
        logs.push(l.stop().await);
    }
    logs
}

/// No client of any proxy saw an error, and each proxy answered reads.
fn no_client_errors(proxies: &[AdminProxy], logs: &[Log]) {
    for (p, l) in proxies.iter().zip(logs) {
        let first: Vec<_> = l.errors.iter().take(5).collect();
        assert!(
            first.is_empty(),
            "client errors through proxy {}: {first:?}",
            p.port
        );
        assert!(
            l.read_errors.is_empty(),
            "proxy {}: {:?}",
            p.port,
            l.read_errors
        );
        assert!(!l.reads.is_empty(), "proxy {}: no read answered", p.port);
    }
}

/// Waits (up to `within`) until every proxy's `store.up` is `up`.
async fn store_up_everywhere(proxies: &[AdminProxy], up: bool, within: Duration) {
    let deadline = Instant::now() + within;
    for p in proxies {
        while p.store().await["up"] != up {
            assert!(
                Instant::now() < deadline,
                "proxy {} did not see the store up = {up} within {within:?}",
                p.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The `done` events (an operation ended well) of all `proxies`.
async fn done_events(proxies: &[&AdminProxy]) -> Vec<Value> {
    let mut done = Vec::new();
    for p in proxies {
        done.extend(p.events_of("done").await);
    }
    done
}

/// How long the promoter held statements (its step "statements released after N ms").
async fn held_ms(proxies: &[&AdminProxy]) -> u64 {
    let mut held = Vec::new();
    for p in proxies {
        for e in p.events_of("step").await {
            let m = e["message"].as_str().unwrap_or_default();
            if let Some(ms) = m
                .strip_prefix("statements released after ")
                .and_then(|r| r.strip_suffix(" ms"))
            {
                held.push(ms.parse::<u64>().expect("ms"));
            }
        }
    }
    assert_eq!(held.len(), 1, "one hold released: {held:?}");
    held[0]
}

/// After a failover to `primary`: writes through every proxy land on it, it holds every
/// acknowledged write, and the other replica is a read_only replica of it holding them too.
async fn failed_over_to(sb: &Sandbox, proxies: &[&AdminProxy], primary: &str, logs: &[Log]) {
    writes_land_on(proxies, primary, 95_000_000_000).await;
    let acked = union_acked(logs);
    assert_none_missing(&acked, &ids_on(port_of(primary), None).await, primary);
    let other = sb
        .replicas()
        .into_iter()
        .find(|r| r.addr() != primary)
        .expect("the other replica")
        .clone();
    assert_eq!(
        master_port(other.port).await,
        Some(port_of(primary)),
        "the other replica replicates from the new primary"
    );
    assert_eq!(
        read_only(other.port).await,
        Some(1),
        "{} read_only",
        other.addr()
    );
    let pos = gtid_binlog_pos(port_of(primary)).await;
    assert_none_missing(&acked, &ids_on(other.port, Some(&pos)).await, &other.addr());
}

fn union_acked(logs: &[Log]) -> BTreeSet<u64> {
    logs.iter().flat_map(|l| l.acked.iter().copied()).collect()
}

fn assert_none_missing(acked: &BTreeSet<u64>, present: &BTreeSet<u64>, on: &str) {
    let missing: Vec<_> = acked.difference(present).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged ids missing on {on}, e.g. {missing:?}",
        acked.difference(present).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_proxies_promote_once_and_all_write_to_the_new_primary() {
    let _serial = SERIAL.lock().await;
    // The sandbox's own detection settings (checks every 500 ms, dead after 2 s): the time to
    // recover printed below is what a default setup gets.
    let (sb, proxies) = setup("").await;
    let old = sb.primary().clone();
    let version = proxies[0].map_version().await;
    let loads = loads_through(&proxies);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (l, p) in loads.iter().zip(&proxies) {
        assert!(
            l.acked() > 0,
            "no insert through proxy {} before the kill",
            p.port
        );
    }
    kill(&sb, old.server_id);
    let killed_at = Instant::now();

    // Until every proxy's writers got a write through again (at most 30 s).
    let deadline = killed_at + Duration::from_secs(30);
    let mut recovered: Vec<Option<Duration>> = vec![None; loads.len()];
    while recovered.iter().any(Option::is_none) {
        for (r, l) in recovered.iter_mut().zip(&loads) {
            if r.is_none() {
                *r = l.first_ack_after(killed_at).map(|t| t - killed_at);
            }
        }
        assert!(
            Instant::now() < deadline,
            "writes did not recover within 30 s on every proxy: {recovered:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = stop_all(loads).await;
    let times: Vec<Duration> = recovered.into_iter().flatten().collect();
    let max = times.iter().max().copied().unwrap_or_default();
    for ((t, p), l) in times.iter().zip(&proxies).zip(&logs) {
        eprintln!(
            "proxy {}: first acknowledged write {} ms after kill -9 of the primary \
             ({} acknowledged, {} failed)",
            p.port,
            t.as_millis(),
            l.acked.len(),
            l.errors.len()
        );
    }
    eprintln!(
        "3 proxies, default detection (500 ms checks, dead after 2 s): every proxy writing \
         again {} ms after the kill (max)",
        max.as_millis()
    );

    // The issue's bar is 3 s (measured 2.4-2.8 s here); a loaded machine adds to detection,
    // so only a gross regression fails the test.
    assert!(
        max < Duration::from_secs(5),
        "writes failed for {max:?} after the kill"
    );
    let all: Vec<&AdminProxy> = proxies.iter().collect();
    let primary = converged_primary(&all, &old.addr(), Duration::from_secs(10)).await;
    for p in &proxies {
        assert_eq!(p.map_version().await, version + 1, "proxy {}", p.port);
    }
    let done = done_events(&all).await;
    assert_eq!(done.len(), 1, "one promotion among the proxies: {done:?}");
    // The other proxies' writers wait for the new map, sending nothing: the coordinated hold
    // must not wait for them to drain (they would drain only once it ends).
    let held = held_ms(&all).await;
    eprintln!("statements held {held} ms during the promotion");
    assert!(
        held < 1000,
        "the failover held statements {held} ms: it waited for the other proxies' drain"
    );
    failed_over_to(&sb, &all, &primary, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_promoter_mid_failover_never_leaves_two_writable_primaries() {
    let _serial = SERIAL.lock().await;
    let sb = common::start_cluster_with(&["--shards", "1", "--replicas", "2", "--proxies", "3"]);
    let configs = sb.proxy_configs();
    let base = format!("{}\n{FAST_HA}", common::FAST_SPLIT);
    // Only the first proxy fails over, and it stops for good once the chosen replica is
    // writable, before publishing the map.
    let mut promoter =
        sb.admin_proxy_from_env(&configs[0], &base, &[("SHARDGATE_TEST_STOP", "promoting")]);
    let followers: Vec<AdminProxy> = configs[1..]
        .iter()
        .map(|c| sb.admin_proxy_from(c, &format!("{base}auto_failover = false\n")))
        .collect();
    let mut all = vec![promoter];
    all.extend(followers);
    ready(&sb, &all).await;
    promoter = all.remove(0);
    let followers = all;
    for f in &followers {
        assert_eq!(f.get_json("/api/v1/ha").await["auto_failover"], false);
    }

    let old = sb.primary().clone();
    let replicas: Vec<_> = sb.replicas().into_iter().cloned().collect();
    let mut loads = vec![start_load(&promoter.url(), 1, WRITERS, 1)];
    for (f, tag) in followers.iter().zip(2..) {
        loads.push(start_load(&f.url(), tag, WRITERS, 1));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every 100 ms: how many of the live servers (the replicas) take writes.
    let sampling = Arc::new(AtomicBool::new(true));
    let most_writable = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (sampling, most) = (sampling.clone(), most_writable.clone());
        let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
        tokio::spawn(async move {
            let mut conns = Vec::new();
            for p in &ports {
                conns.push(root(*p).await);
            }
            let mut samples = 0u64;
            while sampling.load(Ordering::Relaxed) {
                let mut writable = 0;
                for c in &mut conns {
                    let ro: Option<u8> = c
                        .query_first("SELECT @@read_only")
                        .await
                        .expect("read_only of a live replica");
                    if ro == Some(0) {
                        writable += 1;
                    }
                }
                most.fetch_max(writable, Ordering::SeqCst);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };

    kill(&sb, old.server_id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !promoter.log_text().contains("SHARDGATE_TEST_STOP") {
        assert!(
            Instant::now() < deadline,
            "the promoter never reached the stop point; log:\n{}",
            promoter.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut writable = Vec::new();
    for r in &replicas {
        if read_only(r.port).await == Some(0) {
            writable.push(r.addr());
        }
    }
    assert_eq!(writable.len(), 1, "one replica made writable: {writable:?}");
    let chosen = writable[0].clone();
    // Nothing published yet: the followers still name the dead primary.
    for f in &followers {
        assert_eq!(
            f.primary().await,
            old.addr(),
            "published before the stop point"
        );
    }
    let _ = promoter.guard.0.kill();
    let _ = promoter.guard.0.wait();
    let proxy_killed = Instant::now();

    let live: Vec<&AdminProxy> = followers.iter().collect();
    let primary = converged_primary(&live, &old.addr(), Duration::from_secs(15)).await;
    eprintln!(
        "the followers published {primary} {} ms after the promoter was killed",
        proxy_killed.elapsed().as_millis()
    );
    assert_eq!(
        primary, chosen,
        "the replica made writable is the one published"
    );
    // The writers recover through the followers.
    let since = Instant::now();
    let deadline = since + Duration::from_secs(10);
    for l in &loads[1..] {
        while l.first_ack_after(since).is_none() {
            assert!(
                Instant::now() < deadline,
                "no write after the map was published"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.expect("sampler");
    let logs = stop_all(loads).await;
    assert!(samples > 20, "only {samples} samples of read_only");
    assert_eq!(
        most_writable.load(Ordering::SeqCst),
        1,
        "two live servers were writable at once"
    );
    let finished = done_events(&live).await;
    assert_eq!(finished.len(), 1, "one follower finished it: {finished:?}");
    let how = finished[0]["message"].as_str().unwrap_or_default();
    assert!(how.contains("failover finished"), "{how}");
    failed_over_to(&sb, &live, &primary, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_etcd_every_proxy_serves_and_decides_nothing_then_converges() {
    let _serial = SERIAL.lock().await;
    let (sb, proxies) = setup(FAST_HA).await;
    let old = sb.primary().clone();
    sb.etcd_stop();
    let stopped = Instant::now();
    store_up_everywhere(&proxies, false, Duration::from_secs(15)).await;
    eprintln!(
        "every proxy saw etcd down {} ms after it stopped",
        stopped.elapsed().as_millis()
    );

    // Reads and writes go on through every proxy.
    let loads = loads_through(&proxies);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (p, l) in proxies.iter().zip(&loads) {
        let r = p.get("/readyz").await;
        assert_eq!(r.status, 200, "readyz of {}: {}", p.port, r.text());
        assert!(r.text().contains("topology_store"), "{}", r.text());
        let r = p
            .post("/api/v1/failover", Some(r#"{"shard":"app/s0"}"#))
            .await;
        assert_eq!(r.status, 409, "failover without etcd: {}", r.text());
        assert!(
            r.error_message()
                .contains("the topology store (etcd) is unreachable"),
            "{}",
            r.text()
        );
        let target = sb.replicas()[0].addr();
        let body = format!(r#"{{"shard":"app/s0","to":"{target}"}}"#);
        let r = p.post("/api/v1/failover", Some(&body)).await;
        assert_eq!(r.status, 409, "switchover without etcd: {}", r.text());
        let metrics = p.get("/metrics").await.text();
        assert!(
            metrics.contains("shardgate_topology_store_up 0"),
            "{metrics}"
        );
        assert!(l.acked() > 100, "proxy {}: {} writes", p.port, l.acked());
    }
    let logs = stop_all(loads).await;
    no_client_errors(&proxies, &logs);
    for p in &proxies {
        assert_eq!(p.primary().await, old.addr(), "nothing was decided");
    }
    assert_none_missing(
        &union_acked(&logs),
        &ids_on(old.port, None).await,
        &old.addr(),
    );

    // etcd back: every proxy's store is up again, and a switchover through one reaches all.
    sb.etcd_start();
    let restarted = Instant::now();
    store_up_everywhere(&proxies, true, Duration::from_secs(20)).await;
    eprintln!(
        "every proxy saw etcd up {} ms after it started",
        restarted.elapsed().as_millis()
    );
    let version = proxies[1].map_version().await;
    let target = sb.replicas()[1].addr();
    let body = format!(r#"{{"shard":"app/s0","to":"{target}"}}"#);
    let r = proxies[1].post("/api/v1/failover", Some(&body)).await;
    assert_eq!(
        r.status,
        200,
        "switchover after etcd came back: {}",
        r.text()
    );
    let all: Vec<&AdminProxy> = proxies.iter().collect();
    let primary = converged_primary(&all, &old.addr(), Duration::from_secs(10)).await;
    assert_eq!(primary, target);
    for p in &proxies {
        assert_eq!(p.map_version().await, version + 1, "proxy {}", p.port);
        let metrics = p.get("/metrics").await.text();
        assert!(
            metrics.contains("shardgate_topology_store_up 1"),
            "{metrics}"
        );
        let r = p.get("/readyz").await;
        assert!(!r.text().contains("topology_store"), "{}", r.text());
    }
    writes_land_on(&all, &primary, 95_000_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_with_three_proxies_under_load_fails_no_statement() {
    let _serial = SERIAL.lock().await;
    let (sb, proxies) = setup(FAST_HA).await;
    let old = sb.primary().clone();
    let target = sb.replicas()[1].addr();
    let version = proxies[0].map_version().await;
    let loads = loads_through(&proxies);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let out = proxies[0].cli(&["failover", "--shard", "app/s0", "--to", &target]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "switchover failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("switchover of app/s0 done"), "{text}");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let logs = stop_all(loads).await;
    for (p, l) in proxies.iter().zip(&logs) {
        let longest = longest_wait(&l.times, started);
        eprintln!(
            "proxy {}: {} inserts acknowledged, {} errors, {} reads, longest insert after the \
             switchover started {} ms",
            p.port,
            l.acked.len(),
            l.errors.len(),
            l.reads.len(),
            longest.as_millis()
        );
        assert!(
            l.times.iter().any(|(s, _)| *s > started + took),
            "proxy {}: no write after the switchover",
            p.port
        );
    }
    eprintln!("switchover took {} ms", took.as_millis());
    no_client_errors(&proxies, &logs);

    let all: Vec<&AdminProxy> = proxies.iter().collect();
    let primary = converged_primary(&all, &old.addr(), Duration::from_secs(10)).await;
    assert_eq!(primary, target);
    for p in &proxies {
        assert_eq!(p.map_version().await, version + 1, "proxy {}", p.port);
    }
    writes_land_on(&all, &primary, 95_000_000_000).await;
    let acked = union_acked(&logs);
    let pos = gtid_binlog_pos(port_of(&primary)).await;
    assert_none_missing(&acked, &ids_on(port_of(&primary), None).await, &primary);
    for port in [old.port, sb.replicas()[0].port] {
        assert_none_missing(&acked, &ids_on(port, Some(&pos)).await, &port.to_string());
    }
    assert_eq!(
        read_only(old.port).await,
        Some(1),
        "the old primary is read_only"
    );
    assert_eq!(master_port(old.port).await, Some(port_of(&primary)));
}

/// The ids of the live proxies `p` sees.
async fn live_ids(p: &AdminProxy) -> Vec<String> {
    p.store().await["proxies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_proxy_is_not_waited_for_beyond_its_lease_and_catches_up_when_it_thaws() {
    let _serial = SERIAL.lock().await;
    let (sb, proxies) = setup(FAST_HA).await;
    let (a, b, c) = (&proxies[0], &proxies[1], &proxies[2]);
    let c_id = c.store().await["proxy_id"]
        .as_str()
        .expect("proxy_id")
        .to_string();
    let old = sb.primary().clone();
    let target = sb.replicas()[1].addr();
    let version = a.map_version().await;
    let loads = loads_through(&proxies[..2]);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let frozen = Frozen::stop(c);
    let started = Instant::now();
    let body = format!(r#"{{"shard":"app/s0","to":"{target}"}}"#);
    let r = a.post("/api/v1/failover", Some(&body)).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "switchover with C frozen: {}", r.text());
    let report: Value = serde_json::from_str(&r.text()).expect("report");
    let live_after = live_ids(a).await;
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    eprintln!(
        "switchover with proxy {c_id} frozen: {} ms (held {} ms); live proxies right after: \
         {live_after:?}; steps: {steps:#?}",
        took.as_millis(),
        report["held_ms"]
    );
    assert_eq!(report["new_primary"], target.as_str(), "{report}");
    // The lease TTL (2 s) bounds the wait for C, plus the drain (2 s) and some margin.
    assert!(
        took < Duration::from_secs(6),
        "the switchover took {took:?} with a frozen proxy"
    );
    // Either the hold gave up on C (a step names it), or C's lease expired first and it was no
    // longer a member; a frozen C cannot have come back since.
    let warned = steps
        .iter()
        .any(|s| s.contains("did not acknowledge the hold") && s.contains(&c_id));
    assert!(
        warned || !live_after.contains(&c_id),
        "C neither named as missing nor gone from the members: {live_after:?} {steps:?}"
    );

    let ab: Vec<&AdminProxy> = vec![a, b];
    let primary = converged_primary(&ab, &old.addr(), Duration::from_secs(10)).await;
    assert_eq!(primary, target);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let logs = stop_all(loads).await;
    for (p, l) in ab.iter().zip(&logs) {
        assert!(
            l.times.iter().any(|(s, _)| *s > started + took),
            "proxy {}: no write after the switchover",
            p.port
        );
    }
    no_client_errors(&proxies[..2], &logs);
    writes_land_on(&ab, &primary, 95_000_000_000).await;
    assert_none_missing(
        &union_acked(&logs),
        &ids_on(port_of(&primary), None).await,
        &primary,
    );

    // Thawed, C follows the map it missed and registers again under a new lease.
    drop(frozen);
    let thawed = Instant::now();
    let deadline = thawed + Duration::from_secs(5);
    loop {
        let topo = c.get_json("/api/v1/topology").await;
        let up = topo["store"]["up"] == true;
        let caught_up = topo["version"].as_u64() == Some(version + 1);
        let listed = live_ids(a).await.contains(&c_id) && live_ids(c).await.contains(&c_id);
        if up && caught_up && listed && c.primary().await == target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "C did not catch up within 5 s of SIGCONT: up {up}, version {} (want {}), listed \
             {listed}",
            topo["version"],
            version + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "C caught up {} ms after SIGCONT",
        thawed.elapsed().as_millis()
    );
    // A hold C saw only after it ended must not hold C's statements.
    let wrote = Instant::now();
    writes_land_on(&[c], &target, 96_000_000_000).await;
    let write_took = wrote.elapsed();
    eprintln!("a write through C took {} ms", write_took.as_millis());
    assert!(
        write_took < Duration::from_secs(2),
        "a write through C took {write_took:?} after it caught up; its holds: {:?}",
        c.events_of("hold").await
    );
}
