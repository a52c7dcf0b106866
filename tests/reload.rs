//! Config reload under load, per-shape query statistics and query metrics, against a sandbox
//! of its own (a primary and 2 replicas; the proxy's config names only the first replica).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use serde_json::Value;

use common::FAST_SPLIT as CONFIG;

const CLIENTS: usize = 50;

fn shards(primary: &str, replicas: &[String]) -> String {
    let list: Vec<String> = replicas.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[[keyspace.app.shards]]\nname = \"s0\"\nprimary = \"{primary}\"\nreplicas = [{}]\n",
        list.join(", ")
    )
}

/// Rewrites the shard list of `config` in place (as an operator edits the file).
fn write_shards(config: &Path, primary: &str, replicas: &[String]) {
    let text = std::fs::read_to_string(config).expect("config");
    let mut cfg: toml::Table = toml::from_str(&text).expect("config parses");
    let new: toml::Table = toml::from_str(&shards(primary, replicas)).expect("shards");
    let app = cfg
        .get_mut("keyspace")
        .and_then(|k| k.get_mut("app"))
        .and_then(|a| a.as_table_mut())
        .expect("keyspace app");
    app.insert("shards".into(), new["keyspace"]["app"]["shards"].clone());
    std::fs::write(config, toml::to_string(&cfg).expect("toml")).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_adds_a_replica_under_load_and_a_bad_one_changes_nothing() {
    let sb = common::start_cluster(2);
    let primary = sb.primary().addr();
    let replicas: Vec<String> = sb.replicas().iter().map(|r| r.addr()).collect();
    let new_id = sb.replicas()[1].server_id;
    let proxy = sb.admin_proxy(&format!("{CONFIG}\n{}", shards(&primary, &replicas[..1])));
    let config = proxy.config.clone();
    let url = common::app_url(proxy.port, "app");
    let client = proxy.client();

    // 50 clients read all along; every answer's server id is counted, every error kept.
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen: Arc<Mutex<BTreeMap<u32, u64>>> = Arc::default();
    let reads = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, errors, seen, reads, url) = (
            stop.clone(),
            errors.clone(),
            seen.clone(),
            reads.clone(),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = common::connect(&url).await;
            while !stop.load(Ordering::Relaxed) {
                match c.query_first::<u32, _>("SELECT @@server_id").await {
                    Ok(Some(id)) => {
                        *seen.lock().expect("seen").entry(id).or_default() += 1;
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => errors.lock().expect("errors").push("no row".into()),
                    Err(e) => errors.lock().expect("errors").push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !seen.lock().expect("seen").contains_key(&new_id),
        "the second replica is not in the config yet"
    );

    // The file gains the second replica; `shardgate reload` applies it.
    write_shards(&config, &primary, &replicas);
    let out = proxy.cli(&["reload"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reload failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("new servers: {}", replicas[1])),
        "{text}"
    );
    let reloaded = Instant::now();
    loop {
        if seen.lock().expect("seen").contains_key(&new_id) {
            break;
        }
        assert!(
            reloaded.elapsed() < Duration::from_secs(10),
            "reads never reached the added replica: {:?}",
            seen.lock().expect("seen")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "added replica served reads {} ms after the reload",
        reloaded.elapsed().as_millis()
    );

    // An invalid file is refused with the reason; the running config stays.
    let version = {
        let r = client
            .call("GET", "/api/v1/shardmap", None)
            .await
            .expect("shardmap");
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        v["version"].clone()
    };
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{good}\n[[[ not toml")).expect("write");
    let r = client
        .send("POST", "/api/v1/config/reload", None)
        .await
        .expect("reload");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error_message()
            .contains("not reloaded, the running config stays"),
        "{}",
        r.text()
    );
    // A broken password line is refused without echoing the password.
    std::fs::write(
        &config,
        format!("{good}\n[[users]]\nname = \"leak\"\npassword = \"pw-not-for-http\" junk\n"),
    )
    .expect("write");
    let r = client
        .send("POST", "/api/v1/config/reload", None)
        .await
        .expect("reload");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!r.text().contains("pw-not-for-http"), "{}", r.text());
    assert!(r.error_message().contains("secret key"), "{}", r.text());
    // A file that moves the primary to a replica is refused too.
    std::fs::write(&config, &good).expect("write");
    write_shards(&config, &replicas[0], std::slice::from_ref(&primary));
    let r = client
        .send("POST", "/api/v1/config/reload", None)
        .await
        .expect("reload");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.error_message().contains("live primary"), "{}", r.text());
    std::fs::write(&config, &good).expect("write");

    let before = reads.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("reader");
    }
    assert!(reads.load(Ordering::Relaxed) > before, "reads went on");
    let errors: Vec<String> = errors.lock().expect("errors").clone();
    assert!(
        errors.is_empty(),
        "client errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    let r = client
        .call("GET", "/api/v1/shardmap", None)
        .await
        .expect("shardmap");
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["version"], version, "refused reloads published nothing");
    println!(
        "{} reads by {CLIENTS} clients, 0 errors; by server id: {:?}",
        reads.load(Ordering::Relaxed),
        seen.lock().expect("seen")
    );

    // The statistics saw the readers' statement shape, and the metrics their route.
    let r = client
        .call("GET", "/api/v1/queries?sort=count&limit=5", None)
        .await
        .expect("queries");
    let q: Value = serde_json::from_slice(&r.body).expect("json");
    let top = &q["queries"][0];
    // Shapes are shown normalised (lower case, literals as ?).
    assert_eq!(top["text"], "select @@server_id", "{q}");
    assert!(
        top["count"].as_u64().unwrap_or(0) >= reads.load(Ordering::Relaxed),
        "{q}"
    );
    assert_eq!(top["errors"], 0, "{q}");
    assert_eq!(top["shards_avg"], 1.0, "{q}");
    assert!(top["p99_ms"].as_f64().unwrap_or(-1.0) > 0.0, "{q}");
    let r = client
        .send("GET", "/api/v1/queries?sort=nonsense", None)
        .await
        .expect("queries");
    assert_eq!(r.status, 400);
    let out = proxy.cli(&["queries", "--sort", "count", "--limit", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("select @@server_id"), "{text}");
    let r = client.call("GET", "/metrics", None).await.expect("metrics");
    let metrics = r.text();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("shardgate_queries_total{")
                && l.contains("role=\"replica\"")
                && l.contains("kind=\"read\"")
        })
        .unwrap_or_else(|| panic!("no replica read counter in:\n{metrics}"));
    let n: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(n > 0.0, "{line}");
    // Pool gauges: the replicas the readers used hold connections.
    let idle_or_busy = metrics
        .lines()
        .filter(|l| l.starts_with("shardgate_pool_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(idle_or_busy > 0.0, "no pool gauge above 0 in:\n{metrics}");
    assert!(
        metrics.contains("shardgate_pool_max_connections{"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_statements_are_logged_by_shape_without_their_literals() {
    let sb = common::start_cluster(1);
    let proxy = sb.admin_proxy(&CONFIG.replace("workers = 2", "workers = 2\nslow_query_ms = 150"));
    let config = proxy.config.clone();
    let port = proxy.port;
    let mut c = common::connect(&common::app_url(port, "app")).await;
    let _: Option<i64> = c
        .query_first("SELECT SLEEP(0.3) + 4242")
        .await
        .expect("slow statement");
    let _: Option<i64> = c.query_first("SELECT 1717").await.expect("fast statement");
    let log_path = config.with_extension("log");
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains("slow query")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no slow-query line in:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains("select sleep(?) + ?"), "{line}");
    assert!(!line.contains("4242"), "literals reached the log: {line}");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(
        log.matches("slow query").count(),
        1,
        "only the slow one:\n{log}"
    );
}
