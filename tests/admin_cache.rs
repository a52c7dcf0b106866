//! The admin API and the `shardgate cache` commands against a real proxy over a sandbox of
//! their own (1 shard: primary + 1 replica): the token guard, Prometheus `/metrics`, the
//! result cache's stats and flushing, through HTTP and through the CLI as a user runs it.
//! Each test starts its own proxy, so its counters are the test's alone.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use mysql_async::prelude::*;
use serde_json::Value;
use shardgate::admin::client::{Client, Response};

use common::Sandbox;

/// Caches every read for a minute.
const CACHE_ON: &str = "[[cache.rules]]\nttl_ms = 60000\n";

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster(1))
}

/// A proxy of the test's own, with `extra` config.
type Proxy = common::AdminProxy;

impl Proxy {
    fn start(extra: &str) -> Proxy {
        sandbox().admin_proxy(extra)
    }

    async fn stats(&self) -> Value {
        let r = self.get("/api/v1/cache").await;
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).expect("stats are JSON")
    }

    async fn conn(&self) -> mysql_async::Conn {
        common::connect(&common::app_url(self.port, "app")).await
    }
}

/// A table `app.<unique>` with a few rows, created through `proxy` and replicated.
async fn table(proxy: &Proxy) -> String {
    let name = common::unique("cached");
    let mut c = proxy.conn().await;
    c.query_drop(format!(
        "CREATE TABLE {name} (id INT PRIMARY KEY, v VARCHAR(20))"
    ))
    .await
    .expect("create");
    c.query_drop(format!("INSERT INTO {name} VALUES (1, 'one'), (2, 'two')"))
        .await
        .expect("insert");
    common::wait_replicated(sandbox()).await;
    name
}

/// Reads row 1 of `table` through a fresh session, as a cacheable read.
async fn read(proxy: &Proxy, table: &str) {
    let mut c = proxy.conn().await;
    let v: Option<String> = c
        .query_first(format!("SELECT v FROM {table} WHERE id = 1"))
        .await
        .expect("select");
    assert_eq!(v.as_deref(), Some("one"));
}

fn field(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {stats}"))
}

fn error_of(r: &Response) -> String {
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("error body {:?} is not JSON: {e}", r.text()));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {v}"))
        .to_string()
}

/// Checks `text` is Prometheus text exposition (0.0.4) and returns each sample's value by
/// `name{labels}`: every non-comment line is `name[{labels}] value [timestamp]` with a float
/// value, and every `# TYPE` line names a known type.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let is_name = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let float = |s: &str| match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse::<f64>().ok().filter(|v| v.is_finite()),
    };
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.first() == Some(&"TYPE") {
                assert_eq!(words.len(), 3, "TYPE line: {line}");
                assert!(is_name(words[1]), "TYPE line names no metric: {line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&words[2]),
                    "unknown type: {line}"
                );
            } else if words.first() == Some(&"HELP") {
                assert!(words.len() >= 2 && is_name(words[1]), "HELP line: {line}");
            }
            continue;
        }
        let (series, rest) = match line.find('{') {
            Some(open) => {
                let close = line
                    .rfind('}')
                    .unwrap_or_else(|| panic!("unclosed: {line}"));
                assert!(is_name(&line[..open]), "bad metric name: {line}");
                let labels = &line[open + 1..close];
                for pair in labels.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label {pair:?}: {line}"));
                    assert!(is_name(k), "bad label name {k:?}: {line}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "unquoted label value: {line}"
                    );
                }
                (&line[..=close], &line[close + 1..])
            }
            None => {
                let (name, rest) = line
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("no value: {line}"));
                assert!(is_name(name), "bad metric name: {line}");
                (name, rest)
            }
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(float)
            .unwrap_or_else(|| panic!("value is not a float: {line}"));
        if let Some(ts) = fields.next() {
            assert!(ts.parse::<i64>().is_ok(), "bad timestamp: {line}");
        }
        assert!(fields.next().is_none(), "trailing text: {line}");
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn metric(proxy: &Proxy, name: &str) -> f64 {
    let r = proxy.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let samples = parse_prometheus(&r.text());
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from:\n{}", r.text()))
}

#[tokio::test]
async fn healthz_is_open_and_everything_else_needs_the_token() {
    let proxy = Proxy::start(CACHE_ON);
    let anonymous = Client::new(proxy.admin.clone(), None);
    let r = anonymous
        .send("GET", "/healthz", None)
        .await
        .expect("healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    for path in ["/api/v1/cache", "/metrics", "/no/such/path"] {
        let r = anonymous.send("GET", path, None).await.expect("request");
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(
            error_of(&r).contains("Authorization: Bearer"),
            "{}",
            r.text()
        );
    }
    let wrong = Client::new(proxy.admin.clone(), Some(format!("{}x", proxy.token)));
    let r = wrong
        .send("GET", "/api/v1/cache", None)
        .await
        .expect("request");
    assert_eq!(r.status, 401);
    assert_eq!(error_of(&r), "wrong admin token");
    let r = wrong
        .send("POST", "/api/v1/cache/flush", None)
        .await
        .expect("request");
    assert_eq!(r.status, 401);

    let stats = proxy.stats().await;
    assert_eq!(stats["enabled"], Value::Bool(true), "{stats}");
    for key in [
        "bytes",
        "entries",
        "max_bytes",
        "hits",
        "misses",
        "evictions",
        "invalidations",
    ] {
        field(&stats, key);
    }
    assert_eq!(field(&stats, "max_bytes"), 64 << 20);

    let r = proxy.get("/api/v1/nothing").await;
    assert_eq!(r.status, 404);
    assert!(error_of(&r).contains("/api/v1/nothing"), "{}", r.text());
    let r = proxy.post("/api/v1/cache", None).await;
    assert_eq!(r.status, 405);
    error_of(&r);
}

#[tokio::test]
async fn an_unset_token_keeps_the_admin_api_closed() {
    let proxy = Proxy::start("[proxy]\nadmin_token = \"\"\n");
    let client = Client::new(proxy.admin.clone(), Some("anything".into()));
    let r = client.send("GET", "/healthz", None).await.expect("healthz");
    assert_eq!(r.status, 200);
    let r = client
        .send("GET", "/api/v1/cache", None)
        .await
        .expect("request");
    assert_eq!(r.status, 401);
    assert!(
        error_of(&r).contains("set proxy.admin_token"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_cache_hits() {
    let proxy = Proxy::start(CACHE_ON);
    let r = proxy.get("/metrics").await;
    assert!(
        r.text()
            .contains("# TYPE shardgate_cache_hits_total counter"),
        "{}",
        r.text()
    );
    let t = table(&proxy).await;
    read(&proxy, &t).await;
    read(&proxy, &t).await;
    let hits = metric(&proxy, "shardgate_cache_hits_total").await;
    assert!(hits >= 1.0, "hits {hits}");
    assert!(metric(&proxy, "shardgate_cache_misses_total").await >= 1.0);
    read(&proxy, &t).await;
    read(&proxy, &t).await;
    let more = metric(&proxy, "shardgate_cache_hits_total").await;
    assert_eq!(more, hits + 2.0);
    assert_eq!(field(&proxy.stats().await, "hits") as f64, more);
    assert!(metric(&proxy, "shardgate_cache_bytes").await > 0.0);
    assert!(metric(&proxy, "shardgate_cache_entries").await >= 1.0);
    let r = proxy.post("/api/v1/cache/flush", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(metric(&proxy, "shardgate_cache_bytes").await, 0.0);
    assert_eq!(metric(&proxy, "shardgate_cache_entries").await, 0.0);
}

#[tokio::test]
async fn flushing_through_the_api_empties_the_cache() {
    let proxy = Proxy::start(CACHE_ON);
    let t = table(&proxy).await;
    read(&proxy, &t).await;
    read(&proxy, &t).await;
    let before = proxy.stats().await;
    assert!(field(&before, "entries") >= 1, "{before}");
    assert!(field(&before, "bytes") > 0, "{before}");
    assert!(field(&before, "hits") >= 1, "{before}");

    let r = proxy.post("/api/v1/cache/flush", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"flushed":"all"}"#);
    let after = proxy.stats().await;
    assert_eq!(field(&after, "entries"), 0, "{after}");
    read(&proxy, &t).await;
    let misses = field(&proxy.stats().await, "misses");
    assert_eq!(misses, field(&after, "misses") + 1);

    // One table, by body and by query string: the next read of it is a miss again.
    let qualified = format!("app.{t}");
    for (path, body) in [
        (
            "/api/v1/cache/flush".to_string(),
            Some(format!(r#"{{"table":"{}"}}"#, qualified.to_uppercase())),
        ),
        (format!("/api/v1/cache/flush?table={qualified}"), None),
    ] {
        read(&proxy, &t).await;
        let hits = field(&proxy.stats().await, "hits");
        let r = proxy.post(&path, body.as_deref()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let answer: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(answer["flushed"], Value::String(qualified.clone()));
        let misses = field(&proxy.stats().await, "misses");
        read(&proxy, &t).await;
        let now = proxy.stats().await;
        assert_eq!(field(&now, "misses"), misses + 1, "{now}");
        assert_eq!(field(&now, "hits"), hits, "{now}");
    }

    let r = proxy
        .post("/api/v1/cache/flush", Some(r#"{"table":"no_db"}"#))
        .await;
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("db.table"), "{}", r.text());
}

#[tokio::test]
async fn the_cli_reads_stats_and_flushes() {
    let proxy = Proxy::start(CACHE_ON);
    let t = table(&proxy).await;
    read(&proxy, &t).await;
    read(&proxy, &t).await;

    let out = proxy.cli(&["cache", "stats", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let stats: Value = serde_json::from_slice(&out.stdout).expect("stats --json prints JSON");
    assert!(field(&stats, "entries") >= 1, "{stats}");
    assert!(field(&stats, "hits") >= 1, "{stats}");

    let out = proxy.cli(&["cache", "stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("result cache  on"), "{text}");
    assert!(text.contains("hit ratio"), "{text}");

    let out = proxy.cli(&["cache", "flush"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "flushed every cached result\n"
    );
    let after = proxy.stats().await;
    assert_eq!(field(&after, "entries"), 0, "{after}");
    read(&proxy, &t).await;
    assert_eq!(
        field(&proxy.stats().await, "misses"),
        field(&after, "misses") + 1
    );

    let table_arg = format!("app.{t}");
    let out = proxy.cli(&["cache", "flush", "--table", &table_arg, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout).expect("flush --json prints JSON");
    assert_eq!(answer["flushed"], Value::String(table_arg));
}

#[tokio::test]
async fn the_cli_fails_with_the_servers_message() {
    let proxy = Proxy::start(CACHE_ON);
    let out = Command::new(common::bin())
        .args([
            "cache",
            "stats",
            "--admin",
            &proxy.admin,
            "--token",
            "wrong",
        ])
        .output()
        .expect("run shardgate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("401") && err.contains("wrong admin token"),
        "{err}"
    );

    // The config's token can be overridden too.
    let out = proxy.cli(&["cache", "flush", "--token", "wrong"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong admin token"));

    let closed = shardgate::sandbox::free_port().expect("port").to_string();
    let out = Command::new(common::bin())
        .args(["cache", "stats", "--token", "x", "--admin"])
        .arg(format!("127.0.0.1:{closed}"))
        .output()
        .expect("run shardgate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[tokio::test]
async fn with_the_cache_off_flushing_is_a_conflict() {
    let proxy = Proxy::start("");
    let stats = proxy.stats().await;
    assert_eq!(stats["enabled"], Value::Bool(false), "{stats}");
    let r = proxy.post("/api/v1/cache/flush", None).await;
    assert_eq!(r.status, 409);
    assert_eq!(error_of(&r), "the result cache is off (no [[cache.rules]])");
    let out = proxy.cli(&["cache", "flush"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("409") && err.contains("the result cache is off"),
        "{err}"
    );
    let out = proxy.cli(&["cache", "stats"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("off"));
}

#[test]
fn a_taken_admin_port_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let config = sandbox().proxy_config("");
    let text = std::fs::read_to_string(&config).expect("config");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("admin_listen = ") {
                format!("admin_listen = \"{addr}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&config, text).expect("write");
    let (out, killed) = common::run_child(
        Command::new(common::bin())
            .args(["serve", "--config"])
            .arg(&config),
        Vec::new(),
        Duration::from_secs(20),
    );
    assert!(!killed, "the proxy kept running with its admin port taken");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on proxy.admin_listen {addr}")),
        "{err}"
    );
}

/// `Sandbox::proxy_with_admin` hands out the sandbox's generated token and a working address.
#[tokio::test]
async fn sandbox_proxies_come_with_a_random_admin_token() {
    let (_guard, port, admin, token) = sandbox().proxy_with_admin("");
    assert!(port > 0);
    assert_eq!(token.len(), 32, "{token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    let r = Client::new(admin, Some(token))
        .send("GET", "/api/v1/cache", None)
        .await
        .expect("stats");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// 100 MiB of distinct results through a cache capped at 10 MiB: entries are evicted and the
/// cache never holds more than the cap (the proxy's memory stays near it too).
#[tokio::test]
async fn a_hundred_mib_of_results_stay_under_a_ten_mib_cap() {
    let proxy = Proxy::start(
        "[cache]\nmax_bytes = 10485760\nmax_entry_bytes = 1048576\n[[cache.rules]]\nttl_ms = 600000\n",
    );
    let t = table(&proxy).await;
    let mut c = proxy.conn().await;
    let mut sent = 0usize;
    let mut highest = 0u64;
    for i in 0..1000 {
        // ~100 KiB each, every one distinct.
        let row: Option<(String, i64)> = c
            .query_first(format!(
                "SELECT REPEAT(v, 35000), {i} FROM {t} WHERE id = 2"
            ))
            .await
            .expect("big read");
        let (pad, k) = row.expect("a row");
        assert_eq!(k, i);
        sent += pad.len();
        if i % 100 == 99 {
            let bytes = proxy.stats().await["bytes"].as_u64().expect("bytes");
            highest = highest.max(bytes);
        }
    }
    let stats = proxy.stats().await;
    let bytes = stats["bytes"].as_u64().expect("bytes");
    let entries = stats["entries"].as_u64().expect("entries");
    let evictions = stats["evictions"].as_u64().expect("evictions");
    println!(
        "{} MiB of results: cache {bytes} bytes in {entries} entries (highest seen {highest}), {evictions} evictions",
        sent >> 20
    );
    assert!(sent >= 100 << 20, "sent {sent} bytes");
    assert!(
        highest.max(bytes) <= 10 << 20,
        "cache over its cap: {highest} / {bytes}"
    );
    assert!(entries > 50, "the cache kept what fits: {entries}");
    assert!(
        evictions > 500,
        "evicted to stay under the cap: {evictions}"
    );
    let rss = proxy_rss_kib(&proxy);
    println!("proxy VmRSS {} MiB", rss >> 10);
}

/// The proxy process's resident memory, from the process listening on its MySQL port.
fn proxy_rss_kib(proxy: &Proxy) -> u64 {
    let pid = proxy.guard.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
