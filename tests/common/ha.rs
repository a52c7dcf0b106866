//! Failure-handling test tools shared by `failover.rs` and `multi_proxy.rs`: writers that
//! record every acknowledged id, readers, and what the servers hold.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;

use super::{AdminProxy, Sandbox};

impl AdminProxy {
    /// The application account on this proxy, database `app`.
    pub fn url(&self) -> String {
        super::app_url(self.port, "app")
    }

    /// `GET path` as JSON; panics naming the call unless it answered 200.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        serde_json::from_slice(&r.body).expect("JSON")
    }
}

/// What a load's clients saw.
#[derive(Default)]
pub struct Log {
    /// Acknowledged ids.
    pub acked: BTreeSet<u64>,
    /// (sent, acknowledged) of every acknowledged insert.
    pub times: Vec<(Instant, Instant)>,
    pub errors: Vec<String>,
    /// (when, server id) of every read answered.
    pub reads: Vec<(Instant, u32)>,
    pub read_errors: Vec<String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Log>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// `writers` writers inserting ids `(tag * 10 + writer) * 1e9 + n` into `app.acked` through
/// `url` (reconnecting after errors, never reusing an id that failed), and `readers` readers
/// asking `@@server_id`.
pub fn start_load(url: &str, tag: u64, writers: u64, readers: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let opts = mysql_async::Opts::from_url(url).expect("url");
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (stop, log, opts) = (stop.clone(), log.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    match Conn::new(opts.clone()).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            log.lock()
                                .expect("log")
                                .errors
                                .push(format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let id = (tag * 10 + w) * 1_000_000_000 + n;
                // The id may or may not have been written if it fails: never reuse it.
                n += 1;
                let sent = Instant::now();
                match c
                    .exec_drop("INSERT INTO acked (id, writer) VALUES (?, ?)", (id, w))
                    .await
                {
                    Ok(()) => {
                        let mut l = log.lock().expect("log");
                        l.acked.insert(id);
                        l.times.push((sent, Instant::now()));
                    }
                    Err(e) => {
                        log.lock()
                            .expect("log")
                            .errors
                            .push(format!("insert {id}: {e}"));
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    for _ in 0..readers {
        let (stop, log, opts) = (stop.clone(), log.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = Conn::new(opts.clone()).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match c.query_first::<u32, _>("SELECT @@server_id").await {
                    Ok(Some(id)) => log.lock().expect("log").reads.push((Instant::now(), id)),
                    Ok(None) => {}
                    Err(e) => {
                        log.lock().expect("log").read_errors.push(e.to_string());
                        conn = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    Load { stop, log, tasks }
}

impl Load {
    pub async fn stop(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        Arc::try_unwrap(self.log)
            .ok()
            .expect("only owner")
            .into_inner()
            .expect("log")
    }

    pub fn acked(&self) -> usize {
        self.log.lock().expect("log").acked.len()
    }

    /// When the first write sent after `since` was acknowledged, if one was yet.
    pub fn first_ack_after(&self, since: Instant) -> Option<Instant> {
        let l = self.log.lock().expect("log");
        l.times
            .iter()
            .filter(|(sent, _)| *sent > since)
            .map(|(_, acked)| *acked)
            .min()
    }
}

/// How long after `since` the first write sent after it was acknowledged (at most 30 s).
pub async fn first_write_after(load: &Load, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(30);
    loop {
        if let Some(t) = load.first_ack_after(since) {
            return t.duration_since(since);
        }
        assert!(
            Instant::now() < deadline,
            "no write succeeded within 30 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest insert acknowledged at or after `after`.
pub fn longest_wait(times: &[(Instant, Instant)], after: Instant) -> Duration {
    times
        .iter()
        .filter(|(_, acked)| *acked >= after)
        .map(|(sent, acked)| acked.duration_since(*sent))
        .max()
        .unwrap_or_default()
}

pub async fn root(port: u16) -> Conn {
    super::connect(&super::root_url(port)).await
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port")
}

/// The ids in `app.acked` on the server at `port`, once it has applied `pos` (for replicas).
pub async fn ids_on(port: u16, pos: Option<&str>) -> BTreeSet<u64> {
    let mut c = root(port).await;
    if let Some(pos) = pos {
        let r: Option<i64> = c
            .exec_first("SELECT MASTER_GTID_WAIT(?, 30)", (pos,))
            .await
            .expect("wait")
            .expect("row");
        assert_eq!(r, Some(0), "server on {port} did not reach {pos}");
    }
    c.query::<u64, _>("SELECT id FROM app.acked")
        .await
        .expect("ids")
        .into_iter()
        .collect()
}

/// A global variable (`@@name`) of the server at `port`.
pub async fn global<T: FromValue + Send + 'static>(port: u16, name: &str) -> Option<T> {
    root(port)
        .await
        .query_first(format!("SELECT @@{name}"))
        .await
        .unwrap_or_else(|e| panic!("@@{name} on {port}: {e}"))
}

pub async fn gtid_binlog_pos(port: u16) -> String {
    global(port, "gtid_binlog_pos").await.expect("row")
}

pub async fn server_id(port: u16) -> u32 {
    global(port, "server_id").await.expect("row")
}

pub async fn read_only(port: u16) -> Option<u8> {
    global(port, "read_only").await
}

/// The port the server at `port` replicates from (`SHOW SLAVE STATUS`), if it is a replica.
pub async fn master_port(port: u16) -> Option<u16> {
    let status: Vec<mysql_async::Row> = root(port)
        .await
        .query("SHOW SLAVE STATUS")
        .await
        .expect("slave status");
    status.first().and_then(|r| r.get("Master_Port"))
}

/// kill -9 of the server with `server_id`; returns once its process is gone.
pub fn kill(sb: &Sandbox, server_id: u32) {
    assert!(
        sb.cluster
            .kill_server(sb.index_of(server_id))
            .expect("kill"),
        "server {server_id} was running"
    );
}

/// Failure handling as fast as a test can bear: primaries checked every 200 ms, declared dead
/// after 1 s (the sandbox's defaults: 500 ms, 2 s). Ends inside `[ha]`, so a caller may
/// append more `[ha]` keys.
pub const FAST_HA: &str = r#"
[ha]
check_interval_ms = 200
failover_after_ms = 1000
failover_buffer_timeout_ms = 8000
"#;

/// Creates `app.acked` (what the loads write) through `proxy` and waits until every replica
/// has it.
pub async fn create_acked(sb: &Sandbox, proxy: &AdminProxy) {
    let mut c = super::connect(&proxy.url()).await;
    c.query_drop("CREATE TABLE acked (id BIGINT PRIMARY KEY, writer INT)")
        .await
        .expect("create");
    super::wait_replicated(sb).await;
}

/// Waits (up to 15 s) until `proxy` sends reads to a replica: until its monitor saw the
/// replicas, reads go to the primary.
pub async fn reads_reach_a_replica(sb: &Sandbox, proxy: &AdminProxy) {
    let mut c = super::connect(&proxy.url()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let primary_id = sb.primary().server_id;
    loop {
        let id: u32 = c
            .query_first("SELECT @@server_id")
            .await
            .expect("read")
            .expect("row");
        if id != primary_id {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reads through proxy {} never reached a replica",
            proxy.port
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
