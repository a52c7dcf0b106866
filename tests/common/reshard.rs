//! Shared by the reshard workflow tests: writers through the proxy that keep a ledger of what
//! was acknowledged, the checks of that ledger against every shard, and the admin calls that
//! drive a workflow.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use serde_json::Value;

use super::AdminProxy;

/// Rows loaded before the writers start (ids 1..=PRELOADED); the writers increment their `n`.
pub const PRELOADED: i64 = 3000;

#[derive(Debug, Default)]
pub struct Ledger {
    /// Ids whose INSERT was acknowledged.
    pub inserted: BTreeSet<i64>,
    /// Ids whose INSERT failed in a way that may or may not have committed.
    pub maybe_inserted: BTreeSet<i64>,
    /// Acknowledged increments per preloaded id, and those whose outcome is unknown.
    pub increments: BTreeMap<i64, i64>,
    pub maybe_increments: BTreeMap<i64, i64>,
    /// Errors by MariaDB error code (0: not a server error).
    pub errors: BTreeMap<u16, (u64, String)>,
    pub ops: u64,
}

pub struct Writers {
    pub ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The longest a single statement waited, in ms (the writers' pause).
    pub longest_ms: Arc<Mutex<u64>>,
}

impl Writers {
    /// `threads` writers on the proxy at `url` (database `app`, table `items`): inserts of new
    /// ids, increments of preloaded ones (prepared), and two-statement transactions.
    pub fn start(urls: &[String], threads: usize) -> Writers {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let longest_ms = Arc::new(Mutex::new(0u64));
        let mut tasks = Vec::new();
        for t in 0..threads {
            let url = urls[t % urls.len()].clone();
            let (ledger, stop, longest) = (ledger.clone(), stop.clone(), longest_ms.clone());
            tasks.push(tokio::spawn(async move {
                writer(t as i64, url, ledger, stop, longest).await
            }));
        }
        Writers {
            ledger,
            stop,
            tasks,
            longest_ms,
        }
    }

    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        let l = std::mem::take(&mut *self.ledger.lock().expect("ledger"));
        l
    }

    /// `stop`, printing the figures, and asserting the writers saw no error MariaDB direct
    /// would not give (see `unexpected_errors`).
    pub async fn stop_expecting_no_errors(self) -> Ledger {
        let longest = *self.longest_ms.lock().expect("longest");
        let ledger = self.stop().await;
        eprintln!(
            "writers: {} operations, {} acknowledged inserts, errors {:?}, longest statement {longest} ms",
            ledger.ops,
            ledger.inserted.len(),
            ledger.errors
        );
        let unexpected = unexpected_errors(&ledger, false);
        assert!(
            unexpected.is_empty(),
            "errors MariaDB direct would not give: {unexpected:?}"
        );
        ledger
    }

    pub fn ops(&self) -> u64 {
        self.ledger.lock().expect("ledger").ops
    }
}

fn note_error(l: &mut Ledger, e: &mysql_async::Error, broken: &Mutex<bool>) {
    let code = match e {
        mysql_async::Error::Server(s) => s.code,
        _ => {
            *broken.lock().expect("broken") = true;
            0
        }
    };
    let entry = l.errors.entry(code).or_insert((0, e.to_string()));
    entry.0 += 1;
}

/// The longest a writer waits for an answer before it calls the proxy hung (a test then
/// fails here instead of waiting for ever).
const HUNG: Duration = Duration::from_secs(90);

async fn answered<T>(sql: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(HUNG, f).await {
        Ok(r) => r,
        Err(_) => panic!("`{sql}` got no answer from the proxy in {HUNG:?}"),
    }
}

async fn writer(
    t: i64,
    url: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    longest: Arc<Mutex<u64>>,
) {
    let mut conn = super::connect(&url).await;
    // Set by `note_error` on a lost connection.
    let broken = Arc::new(Mutex::new(false));
    let mut k: i64 = 0;
    let mut rng = (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    while !stop.load(Ordering::SeqCst) {
        if std::mem::take(&mut *broken.lock().expect("broken")) {
            // The proxy went away (a fault test killed it): reconnect once it is back. Bounded:
            // while nothing listens on the proxy's port, a connect can be given that very port
            // as its source and connect to itself, then wait forever for a greeting (the
            // writers hung after the workflow completed, twice in ten runs).
            let opts = mysql_async::Opts::from_url(&url).expect("url");
            match tokio::time::timeout(Duration::from_secs(5), mysql_async::Conn::new(opts)).await {
                Ok(Ok(c)) => conn = c,
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        k += 1;
        let started = Instant::now();
        let choice = next() % 10;
        let id = 1 + (next() % PRELOADED as u64) as i64;
        match choice {
            0..=3 => {
                let new_id = 10_000_000 * (t + 1) + k;
                let sql = format!("INSERT INTO items (id, n, w) VALUES ({new_id}, 0, {t})");
                let r = answered(&sql, conn.query_drop(&sql)).await;
                let mut l = ledger.lock().expect("ledger");
                match r {
                    Ok(()) => {
                        l.inserted.insert(new_id);
                    }
                    Err(e) => {
                        l.maybe_inserted.insert(new_id);
                        note_error(&mut l, &e, &broken);
                    }
                }
            }
            4..=7 => {
                let sql = "UPDATE items SET n = n + 1 WHERE id = ?";
                let r = answered(sql, conn.exec_drop(sql, (id,))).await;
                let mut l = ledger.lock().expect("ledger");
                match r {
                    Ok(()) => *l.increments.entry(id).or_default() += 1,
                    Err(e) => {
                        *l.maybe_increments.entry(id).or_default() += 1;
                        note_error(&mut l, &e, &broken);
                    }
                }
            }
            _ => {
                // A transaction: two increments of one key, committed together or not at all.
                let mut failed = None;
                for sql in [
                    "BEGIN".to_string(),
                    format!("UPDATE items SET n = n + 1 WHERE id = {id}"),
                    format!("UPDATE items SET n = n + 1 WHERE id = {id}"),
                ] {
                    if let Err(e) = answered(&sql, conn.query_drop(&sql)).await {
                        failed = Some(e);
                        break;
                    }
                }
                match failed {
                    Some(e) => {
                        let _ = answered("ROLLBACK", conn.query_drop("ROLLBACK")).await;
                        note_error(&mut ledger.lock().expect("ledger"), &e, &broken);
                    }
                    None => {
                        let r = answered("COMMIT", conn.query_drop("COMMIT")).await;
                        let mut l = ledger.lock().expect("ledger");
                        match r {
                            Ok(()) => *l.increments.entry(id).or_default() += 2,
                            Err(e) => {
                                *l.maybe_increments.entry(id).or_default() += 2;
                                note_error(&mut l, &e, &broken);
                            }
                        }
                    }
                }
            }
        }
        let ms = started.elapsed().as_millis() as u64;
        {
            let mut m = longest.lock().expect("longest");
            *m = (*m).max(ms);
        }
        ledger.lock().expect("ledger").ops += 1;
    }
    let _ = conn.disconnect().await;
}

/// Creates `items` through the proxy and loads ids 1..=PRELOADED.
pub async fn load(url: &str) {
    let mut c = super::connect(url).await;
    c.query_drop(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, n INT NOT NULL, w INT, \
         pad VARBINARY(16) DEFAULT X'00FF80')",
    )
    .await
    .expect("create items");
    let ids: Vec<i64> = (1..=PRELOADED).collect();
    for chunk in ids.chunks(500) {
        let values: Vec<String> = chunk.iter().map(|i| format!("({i}, 0, -1)")).collect();
        c.query_drop(format!(
            "INSERT INTO items (id, n, w) VALUES {}",
            values.join(",")
        ))
        .await
        .expect("preload");
    }
    let _ = c.disconnect().await;
}

/// The ring hash of an integer key, as the proxy routes it.
pub fn hash(id: i64) -> u64 {
    use shardgate::shardmap::ring::{key_hash, KeyValue};
    let text = id.to_string();
    key_hash(&KeyValue::from_number_text(text.as_bytes()))
}

/// Every row of `items` on every shard primary: id -> (shard, n), panicking on an id found on
/// two shards.
pub async fn rows_by_shard(primaries: &[(String, u16)]) -> BTreeMap<i64, (String, i64)> {
    let mut out: BTreeMap<i64, (String, i64)> = BTreeMap::new();
    for (name, port) in primaries {
        let mut c = super::connect(&super::root_url(*port)).await;
        let rows: Vec<(i64, i64)> = c
            .query("SELECT id, n FROM app.items")
            .await
            .unwrap_or_else(|e| panic!("reading {name}: {e}"));
        for (id, n) in rows {
            if let Some((other, _)) = out.insert(id, (name.clone(), n)) {
                panic!("id {id} is on both {other} and {name}");
            }
        }
        let _ = c.disconnect().await;
    }
    out
}

/// The ledger against the shards: every acknowledged insert exactly once, on its owner under
/// `ring` (shard names in ring order); every increment counted.
pub async fn check_ledger(l: &Ledger, primaries: &[(String, u16)], ring: &[&str]) {
    let rows = rows_by_shard(primaries).await;
    let ring = shardgate::shardmap::ring::Ring::new(ring, 256);
    let mut misplaced = Vec::new();
    for (id, (shard, _)) in &rows {
        let owner = &ring.shard_names()[ring.shard_for(hash(*id))];
        if owner != shard {
            misplaced.push(format!("{id} on {shard}, owner {owner}"));
        }
    }
    assert!(
        misplaced.is_empty(),
        "{} rows off their owner, e.g. {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(10)]
    );
    let missing: Vec<&i64> = l
        .inserted
        .iter()
        .filter(|id| !rows.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged inserts missing (of {}), e.g. {:?}",
        missing.len(),
        l.inserted.len(),
        &missing[..missing.len().min(10)]
    );
    for id in 1..=PRELOADED {
        assert!(rows.contains_key(&id), "preloaded id {id} missing");
    }
    let mut wrong = Vec::new();
    for id in 1..=PRELOADED {
        let n = rows.get(&id).map_or(0, |r| r.1);
        let acked = l.increments.get(&id).copied().unwrap_or(0);
        let maybe = l.maybe_increments.get(&id).copied().unwrap_or(0);
        if n < acked || n > acked + maybe {
            wrong.push(format!(
                "id {id}: n={n}, acknowledged {acked}, unknown {maybe}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} counters differ from the acknowledged increments, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    for id in rows.keys().filter(|id| **id > PRELOADED) {
        assert!(
            l.inserted.contains(id) || l.maybe_inserted.contains(id),
            "row {id} was never written"
        );
    }
}

/// Errors the writers saw that MariaDB direct would not give: anything but a deadlock (1213,
/// which a direct server gives too and drivers retry), and lost connections when `killed`
/// (a test killed the proxy).
pub fn unexpected_errors(l: &Ledger, killed: bool) -> Vec<String> {
    l.errors
        .iter()
        .filter(|(code, _)| **code != 1213 && !(killed && **code == 0))
        .map(|(code, (n, msg))| format!("{n} x {code}: {msg}"))
        .collect()
}

// ---- driving a workflow through the admin API ----

pub async fn status(p: &AdminProxy) -> Value {
    let r = p.get("/api/v1/reshard/status?keyspace=app").await;
    assert_eq!(r.status, 200, "status: {}", r.text());
    serde_json::from_slice(&r.body).expect("status json")
}

pub async fn post(p: &AdminProxy, path: &str, body: Value) -> Value {
    let r = p.post(path, Some(&body.to_string())).await;
    assert_eq!(r.status, 200, "POST {path}: {}", r.text());
    serde_json::from_slice(&r.body).expect("json")
}

/// Waits until `done(status)` holds (at most `limit`), returning the last status.
pub async fn wait_status(p: &AdminProxy, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(p).await;
        if done(&s) {
            return s;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(p.config.with_extension("log")).unwrap_or_default();
            // A panic's message, else the last lines.
            let lines: Vec<&str> = log.lines().collect();
            let from = lines
                .iter()
                .position(|l| l.contains("panicked"))
                .unwrap_or(lines.len().saturating_sub(40));
            let tail: Vec<&str> = lines[from..].iter().take(40).copied().collect();
            panic!(
                "timed out waiting; last status: {s:#}\nproxy log (end):\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn phase(s: &Value) -> &str {
    s["phase"].as_str().unwrap_or_default()
}

/// Starts, waits for the copy, verifies (until clean), cuts over (retrying an aborted
/// attempt), returning the switched attempt.
pub async fn run_to_switched(p: &AdminProxy, start: Value, max_pause_ms: u64) -> Value {
    post(p, "/api/v1/reshard/start", start).await;
    wait_status(p, Duration::from_secs(180), |s| phase(s) == "running").await;
    verify_clean(p).await;
    cutover(p, "/api/v1/reshard/cutover", max_pause_ms).await
}

pub async fn verify_clean(p: &AdminProxy) {
    post(
        p,
        "/api/v1/reshard/verify",
        serde_json::json!({"keyspace": "app"}),
    )
    .await;
    let s = wait_status(p, Duration::from_secs(120), |s| {
        s["verify"]["state"]
            .as_str()
            .is_some_and(|v| v != "running")
    })
    .await;
    assert_eq!(s["verify"]["state"], "clean", "verify: {:#}", s["verify"]);
}

/// Cutover (or rollback) until switched, at most 5 attempts.
pub async fn cutover(p: &AdminProxy, path: &str, max_pause_ms: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..5 {
        // The streams must be running and close behind: wait for that first.
        wait_status(p, Duration::from_secs(60), |s| {
            s["streams"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["state"] == "running"))
        })
        .await;
        let r = p
            .post(
                path,
                Some(
                    &serde_json::json!({"keyspace": "app", "max_pause_ms": max_pause_ms})
                        .to_string(),
                ),
            )
            .await;
        if r.status == 409 {
            // Not ready yet (a stream not caught up): try again shortly.
            last = Value::String(r.text());
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        last = serde_json::from_slice(&r.body).expect("attempt");
        if last["outcome"] == "switched" {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{path} never switched; last attempt: {last:#}");
}
