//! Whether each backend server can take traffic, and how far behind each replica is.
//!
//! The data plane reads this on every statement, so it is plain atomics behind `Arc`s: no locks,
//! no awaits. A monitor thread (`spawn_monitor`) writes it, checking every server each interval
//! on its own current-thread runtime so the per-core proxy workers never run control-plane work.
//! The data plane may also `mark_down` a server whose connection just failed, so reads stop going
//! there before the next check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout, MissedTickBehavior};

use crate::config::MonitorSection;
use crate::shardmap::ShardMap;

/// `lag_ms` value meaning "not known" (never checked, NULL, not replicating, unreachable).
const LAG_UNKNOWN: u64 = u64::MAX;

/// One server's last known state. Relaxed atomics throughout: each field is a separate fact,
/// and a reader acting on a value one check old is no worse than acting just before the check.
#[derive(Debug)]
pub struct ServerHealth {
    addr: Arc<str>,
    /// Changes when failover promotes it or a former primary rejoins.
    is_replica: AtomicBool,
    weight: u32,
    up: AtomicBool,
    replicating: AtomicBool,
    lag_ms: AtomicU64,
    outstanding: AtomicU32,
    /// Bumped by `mark_down`, so a check that was already running when the data plane saw a
    /// failure cannot mark the server up again; only a check started afterwards can.
    down_epoch: AtomicU64,
}

impl ServerHealth {
    /// Primaries start up (optimistic: the data plane has nowhere else to send writes), replicas
    /// start ineligible until their first check says they replicate and how far behind they are.
    pub(crate) fn new(addr: &str, is_replica: bool, weight: u32) -> Self {
        ServerHealth {
            addr: Arc::from(addr),
            is_replica: AtomicBool::new(is_replica),
            weight: weight.max(1),
            up: AtomicBool::new(!is_replica),
            replicating: AtomicBool::new(false),
            lag_ms: AtomicU64::new(LAG_UNKNOWN),
            outstanding: AtomicU32::new(0),
            down_epoch: AtomicU64::new(0),
        }
    }

    /// `host:port`, as in the shard map.
    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    pub fn is_replica(&self) -> bool {
        self.is_replica.load(Ordering::Relaxed)
    }

    /// Checks it as a replica (`SHOW SLAVE STATUS`) or as a primary (`SELECT 1`) from the next
    /// check on; a promoted replica is up at once, so writes need not wait for a check.
    pub fn set_replica(&self, replica: bool) {
        if self.is_replica.swap(replica, Ordering::Relaxed) != replica && !replica {
            self.up.store(true, Ordering::Relaxed);
        }
    }

    /// The replica's relative share of reads (1 for primaries).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The last check succeeded and nothing marked the server down since.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A replica whose IO and SQL threads both ran at the last check.
    pub fn replicating(&self) -> bool {
        self.replicating.load(Ordering::Relaxed)
    }

    /// A replica's `Seconds_Behind_Master` at the last check; None if unknown, NULL or not
    /// replicating.
    pub fn lag(&self) -> Option<Duration> {
        match self.lag_ms.load(Ordering::Relaxed) {
            LAG_UNKNOWN => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The data plane saw a connection to this server fail: no reads go here until a check that
    /// starts after this call succeeds.
    pub fn mark_down(&self) {
        self.down_epoch.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(server = %self.addr, "server marked down after a failed connection");
            metrics::gauge!("shardgate_server_up", "server" => Arc::clone(&self.addr)).set(0.0);
            metrics::counter!("shardgate_server_marked_down_total", "server" => Arc::clone(&self.addr))
                .increment(1);
        }
    }

    /// Statements running on this server now (those holding an `Outstanding` guard).
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a statement as running here until the returned guard is dropped.
    pub fn start_query(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding {
            server: Arc::clone(self),
        }
    }

    fn set_lag(&self, lag: Option<Duration>) {
        let ms = lag.map_or(LAG_UNKNOWN, |d| {
            u64::try_from(d.as_millis()).map_or(LAG_UNKNOWN - 1, |ms| ms.min(LAG_UNKNOWN - 1))
        });
        self.lag_ms.store(ms, Ordering::Relaxed);
    }

    /// Records a finished check. `epoch` is `down_epoch` from before the check started.
    pub(crate) fn record(&self, epoch: u64, check: &Check) {
        match check {
            Check::Failed(_) => {
                self.up.store(false, Ordering::Relaxed);
                self.replicating.store(false, Ordering::Relaxed);
                self.set_lag(None);
            }
            Check::Primary => self.set_up_unless_marked(epoch),
            Check::Replica(status) => {
                self.replicating
                    .store(status.replicating, Ordering::Relaxed);
                self.set_lag(status.lag);
                self.set_up_unless_marked(epoch);
            }
        }
    }

    fn set_up_unless_marked(&self, epoch: u64) {
        if self.down_epoch.load(Ordering::Relaxed) == epoch {
            self.up.store(true, Ordering::Relaxed);
        }
    }

    /// A replica reads may go to (ignoring lag limits, which are per keyspace).
    fn usable(&self) -> bool {
        self.is_up() && (!self.is_replica() || (self.replicating() && self.lag().is_some()))
    }
}

/// Holds one unit of a server's `outstanding` count; dropping it gives the unit back.
#[derive(Debug)]
pub struct Outstanding {
    server: Arc<ServerHealth>,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.server.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every server of a shard map, by address. Servers can be added later (a config reload
/// naming a new replica); the monitor starts checking them at once.
#[derive(Debug)]
pub struct Health {
    inner: arc_swap::ArcSwap<Servers>,
    /// Serialises `add`s (readers never wait).
    adding: std::sync::Mutex<()>,
    /// Wakes the monitor to start checking added servers.
    added: tokio::sync::Notify,
}

#[derive(Debug, Default, Clone)]
struct Servers {
    list: Vec<Arc<ServerHealth>>,
    by_addr: HashMap<Arc<str>, Arc<ServerHealth>>,
}

impl Health {
    /// One entry per distinct address among all primaries and replicas of `map`. A server shared
    /// by several keyspaces has one entry (validation guarantees it has one role and weight).
    pub fn new(map: &ShardMap) -> Arc<Health> {
        let health = Health {
            inner: arc_swap::ArcSwap::from_pointee(Servers::default()),
            adding: std::sync::Mutex::new(()),
            added: tokio::sync::Notify::new(),
        };
        health.add_map(map);
        Arc::new(health)
    }

    /// Adds the servers of `map` not known yet; returns their addresses.
    pub fn add_map(&self, map: &ShardMap) -> Vec<String> {
        let _g = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Servers::clone(&self.inner.load());
        let mut added = Vec::new();
        for ks in map.keyspace.values() {
            for shard in &ks.shards {
                let servers = std::iter::once((&shard.primary, false, 1))
                    .chain(shard.replicas.iter().map(|r| (&r.addr, true, r.weight)));
                for (addr, is_replica, weight) in servers {
                    if next.by_addr.contains_key(addr.as_str()) {
                        continue;
                    }
                    let s = Arc::new(ServerHealth::new(addr, is_replica, weight));
                    next.by_addr.insert(Arc::clone(&s.addr), Arc::clone(&s));
                    next.list.push(s);
                    added.push(addr.clone());
                }
            }
        }
        if !added.is_empty() {
            self.inner.store(Arc::new(next));
            self.added.notify_one();
        }
        added
    }

    pub fn get(&self, addr: &str) -> Option<Arc<ServerHealth>> {
        self.inner.load().by_addr.get(addr).cloned()
    }

    /// Every server, primaries and replicas, in the order they became known.
    pub fn servers(&self) -> Vec<Arc<ServerHealth>> {
        self.inner.load().list.clone()
    }
}

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("building the server monitor's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("starting the server monitor thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The running monitor. Dropping it (or `stop()`) ends the checks and joins the thread, which
/// takes at most a few hundred milliseconds (closing its connections politely).
#[derive(Debug)]
pub struct MonitorHandle {
    /// Dropping the sender is the stop signal every check task listens for.
    stop: Option<watch::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MonitorHandle {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the server monitor thread panicked");
            }
        }
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts checking every server of `health` each `monitor.interval_ms`, the first check at once.
/// If the thread cannot start, says so in the log and returns an idle handle: primaries then
/// stay up and replicas ineligible, so reads go to primaries rather than to unchecked replicas.
pub fn spawn_monitor(health: Arc<Health>, monitor: MonitorSection) -> MonitorHandle {
    try_spawn_monitor(health, monitor).unwrap_or_else(|e| {
        tracing::error!("{e}: replicas will not be used for reads");
        MonitorHandle {
            stop: None,
            thread: None,
        }
    })
}

/// `spawn_monitor`, for callers that want the failure as an error.
pub fn try_spawn_monitor(
    health: Arc<Health>,
    monitor: MonitorSection,
) -> Result<MonitorHandle, MonitorError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MonitorError::Runtime)?;
    let (tx, rx) = watch::channel(());
    let thread = std::thread::Builder::new()
        .name("shardgate-monitor".into())
        .spawn(move || runtime.block_on(run(health, Arc::new(monitor), rx)))
        .map_err(MonitorError::Thread)?;
    Ok(MonitorHandle {
        stop: Some(tx),
        thread: Some(thread),
    })
}

async fn run(health: Arc<Health>, cfg: Arc<MonitorSection>, stop: watch::Receiver<()>) {
    let mut tasks = JoinSet::new();
    let mut watched: std::collections::HashSet<Arc<str>> = Default::default();
    let mut stopped = stop.clone();
    loop {
        for server in health.servers() {
            if watched.insert(Arc::clone(server.addr())) {
                tasks.spawn(watch_server(server, Arc::clone(&cfg), stop.clone()));
            }
        }
        tokio::select! {
            _ = health.added.notified() => {}
            _ = stopped.changed() => break,
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    tracing::error!("a server check task failed: {e}");
                }
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!("a server check task failed: {e}");
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    /// A primary answered `SELECT 1`.
    Primary,
    /// A replica answered `SHOW SLAVE STATUS`.
    Replica(ReplicaStatus),
    /// Connecting or the query failed or timed out.
    Failed(String),
}

/// A replica's replication state, from one `SHOW SLAVE STATUS` row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplicaStatus {
    pub replicating: bool,
    pub lag: Option<Duration>,
    /// Why the replica is unusable, for the log; None when it replicates with a known lag.
    pub problem: Option<String>,
}

/// A result row's column by name, as text; None when NULL or absent.
pub(crate) type Columns<'a> = &'a dyn Fn(&str) -> Option<String>;

impl ReplicaStatus {
    /// Reads the row through `col` (a column's text, None when NULL or absent); no row means
    /// replication was never configured on this server.
    pub(crate) fn from_columns(row: Option<Columns>) -> Self {
        let Some(col) = row else {
            return ReplicaStatus {
                replicating: false,
                lag: None,
                problem: Some("SHOW SLAVE STATUS is empty: replication is not configured".into()),
            };
        };
        let io = col("Slave_IO_Running").unwrap_or_default();
        let sql = col("Slave_SQL_Running").unwrap_or_default();
        let replicating = io == "Yes" && sql == "Yes";
        // NULL while a thread is stopped or the IO thread is (re)connecting.
        let lag = col("Seconds_Behind_Master")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .filter(|_| replicating);
        let problem = if !replicating {
            let mut p = format!("Slave_IO_Running={io} Slave_SQL_Running={sql}");
            for key in ["Last_IO_Error", "Last_SQL_Error"] {
                if let Some(e) = col(key).filter(|e| !e.is_empty()) {
                    p.push_str(&format!(" {key}={e:?}"));
                }
            }
            Some(p)
        } else if lag.is_none() {
            Some("Seconds_Behind_Master is NULL".into())
        } else {
            None
        };
        ReplicaStatus {
            replicating,
            lag,
            problem,
        }
    }
}

/// What the log last said about a server, so it speaks only on changes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Said {
    Usable,
    Unusable,
    Down,
}

/// Checks one server every interval until the stop signal.
async fn watch_server(
    server: Arc<ServerHealth>,
    cfg: Arc<MonitorSection>,
    mut stop: watch::Receiver<()>,
) {
    let mut conn: Option<Conn> = None;
    let mut said: Option<Said> = None;
    let mut ticks = tokio::time::interval(cfg.interval());
    // A check slower than the interval delays the next rather than bunching them up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticks.tick() => {}
        }
        let epoch = server.down_epoch.load(Ordering::Relaxed);
        let check = tokio::select! {
            _ = stop.changed() => {
                // Interrupted mid-command: the connection's state is unknown, just drop it.
                conn = None;
                break;
            }
            check = check(&server, &mut conn, &cfg) => check,
        };
        let was_up = server.is_up();
        server.record(epoch, &check);
        said = log_change(&server, &check, was_up, said);
        publish_metrics(&server);
    }
    if let Some(c) = conn {
        let _ = timeout(Duration::from_millis(200), c.disconnect()).await;
    }
}

/// One check on a kept connection, (re)connecting first if there is none. The connection is
/// dropped after any error but a server's own error reply, which leaves it usable.
async fn check(server: &ServerHealth, conn: &mut Option<Conn>, cfg: &MonitorSection) -> Check {
    let c = match conn {
        Some(c) => c,
        None => match connect(&server.addr, cfg).await {
            Ok(c) => conn.insert(c),
            Err(e) => return Check::Failed(e),
        },
    };
    let query = async {
        if server.is_replica() {
            let rows: Vec<Row> = c.query("SHOW SLAVE STATUS").await?;
            let get = |name: &str| match rows.first()?.get_opt::<Option<String>, _>(name) {
                Some(Ok(v)) => v,
                _ => None,
            };
            let row: Option<Columns> = rows.first().map(|_| &get as _);
            Ok(Check::Replica(ReplicaStatus::from_columns(row)))
        } else {
            c.query_drop("SELECT 1").await.map(|()| Check::Primary)
        }
    };
    let result = timeout(cfg.interval(), query).await;
    match result {
        Ok(Ok(check)) => check,
        Ok(Err(e)) => {
            if !matches!(e, mysql_async::Error::Server(_)) {
                *conn = None;
            }
            Check::Failed(e.to_string())
        }
        Err(_) => {
            *conn = None;
            Check::Failed(format!("no answer within {} ms", cfg.interval_ms))
        }
    }
}

async fn connect(addr: &str, cfg: &MonitorSection) -> Result<Conn, String> {
    let (host, port) =
        crate::shardmap::host_port(addr).ok_or_else(|| format!("'{addr}' is not host:port"))?;
    let opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(cfg.user.as_str()))
        .pass(Some(cfg.password.as_str()))
        // The driver would switch to a unix socket on localhost; the proxy itself uses TCP, so
        // the check does too.
        .prefer_socket(false);
    match timeout(cfg.connect_timeout(), Conn::new(opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("connecting as {}: {e}", cfg.user)),
        Err(_) => Err(format!(
            "connecting as {}: no answer within {} ms",
            cfg.user, cfg.connect_timeout_ms
        )),
    }
}

/// Logs a server's state when it differs from what was last said: warn on going down or a
/// replica becoming unusable, info on recovery (also after a data-plane `mark_down`). The first
/// check of a healthy server is only a debug line.
fn log_change(
    server: &ServerHealth,
    check: &Check,
    was_up: bool,
    said: Option<Said>,
) -> Option<Said> {
    let addr = &server.addr;
    let now = match check {
        Check::Failed(_) => Said::Down,
        _ if server.usable() => Said::Usable,
        // Reached, but marked down by the data plane while the check ran: the next check decides.
        _ if !server.is_up() => return said,
        _ => Said::Unusable,
    };
    let recovered_from_mark = now == Said::Usable && said == Some(Said::Usable) && !was_up;
    if said == Some(now) && !recovered_from_mark {
        return said;
    }
    match (check, now) {
        (Check::Failed(e), _) => tracing::warn!(server = %addr, "server down: {e}"),
        (Check::Replica(st), Said::Unusable) => tracing::warn!(
            server = %addr,
            "replica not used for reads: {}",
            st.problem.as_deref().unwrap_or("not replicating")
        ),
        _ if said.is_none() => tracing::debug!(server = %addr, "server up"),
        _ if server.is_replica() => tracing::info!(
            server = %addr,
            lag_s = server.lag().map_or(0, |l| l.as_secs()),
            "replica usable again"
        ),
        _ => tracing::info!(server = %addr, "server up again"),
    }
    Some(now)
}

fn publish_metrics(server: &ServerHealth) {
    let addr = Arc::clone(&server.addr);
    metrics::gauge!("shardgate_server_up", "server" => Arc::clone(&addr)).set(if server.is_up() {
        1.0
    } else {
        0.0
    });
    if server.is_replica() {
        // NaN is Prometheus' "no value": the lag is unknown, not zero.
        let lag = server.lag().map_or(f64::NAN, |l| l.as_secs_f64());
        metrics::gauge!("shardgate_replica_lag_seconds", "server" => addr).set(lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        toml::from_str(
            r#"
            [keyspace.a]
            sharding = "unsharded"
            [[keyspace.a.shards]]
            name = "s0"
            primary = "127.0.0.1:1"
            replicas = ["127.0.0.1:2", { addr = "127.0.0.1:3", weight = 3 }]

            [keyspace.b]
            sharding = "unsharded"
            [[keyspace.b.shards]]
            name = "s0"
            primary = "127.0.0.1:1"
            replicas = ["127.0.0.1:2"]
            "#,
        )
        .expect("map parses")
    }

    fn replica_ok(lag_s: u64) -> Check {
        Check::Replica(ReplicaStatus {
            replicating: true,
            lag: Some(Duration::from_secs(lag_s)),
            problem: None,
        })
    }

    #[test]
    fn health_has_one_entry_per_server_and_learns_new_ones() {
        let h = Health::new(&map());
        assert_eq!(h.servers().len(), 3);
        let r3 = h.get("127.0.0.1:3").expect("known");
        assert!(r3.is_replica());
        assert_eq!(r3.weight(), 3);
        assert!(h.get("127.0.0.1:9").is_none());
        // A map naming a known server and a new one: only the new one is added, and the
        // known one keeps its state (the same entry, not a copy).
        let mut bigger = map();
        if let Some(ks) = bigger.keyspace.values_mut().next() {
            ks.shards[0]
                .replicas
                .push(crate::shardmap::Replica::new("127.0.0.1:9"));
        }
        assert_eq!(h.add_map(&bigger), vec!["127.0.0.1:9".to_string()]);
        assert!(Arc::ptr_eq(
            &r3,
            &h.get("127.0.0.1:3").expect("still known")
        ));
        assert_eq!(h.servers().len(), 4);
        assert!(h.add_map(&bigger).is_empty());
    }

    #[test]
    fn primaries_start_up_and_replicas_start_ineligible() {
        let h = Health::new(&map());
        let p = h.get("127.0.0.1:1").expect("primary");
        assert!(p.is_up() && !p.is_replica());
        let r = h.get("127.0.0.1:2").expect("replica");
        assert!(!r.is_up() && !r.replicating());
        assert_eq!(r.lag(), None);
    }

    #[test]
    fn checks_update_state() {
        let r = ServerHealth::new("127.0.0.1:2", true, 1);
        r.record(0, &replica_ok(4));
        assert!(r.is_up() && r.replicating());
        assert_eq!(r.lag(), Some(Duration::from_secs(4)));

        r.record(0, &Check::Failed("refused".into()));
        assert!(!r.is_up() && !r.replicating());
        assert_eq!(r.lag(), None);

        let stopped = ReplicaStatus::from_columns(Some(&|k: &str| match k {
            "Slave_IO_Running" => Some("Yes".into()),
            "Slave_SQL_Running" => Some("No".into()),
            "Last_SQL_Error" => Some("dup key".into()),
            _ => None,
        }));
        r.record(0, &Check::Replica(stopped));
        assert!(r.is_up() && !r.replicating());
        assert_eq!(r.lag(), None);
    }

    #[test]
    fn mark_down_holds_until_a_check_started_afterwards_succeeds() {
        let p = ServerHealth::new("127.0.0.1:1", false, 1);
        let epoch = p.down_epoch.load(Ordering::Relaxed);
        p.mark_down();
        assert!(!p.is_up());
        // This check began before the failure was seen: it must not undo the mark.
        p.record(epoch, &Check::Primary);
        assert!(!p.is_up());
        let epoch = p.down_epoch.load(Ordering::Relaxed);
        p.record(epoch, &Check::Primary);
        assert!(p.is_up());
    }

    #[test]
    fn outstanding_guard_counts_while_alive() {
        let s = Arc::new(ServerHealth::new("127.0.0.1:2", true, 1));
        let a = s.start_query();
        let b = s.start_query();
        assert_eq!(s.outstanding(), 2);
        drop(a);
        assert_eq!(s.outstanding(), 1);
        drop(b);
        assert_eq!(s.outstanding(), 0);
    }

    #[test]
    fn slave_status_rows_are_read_without_panics() {
        let row = |io: &'static str, sql: &'static str, sbm: Option<&'static str>| {
            move |k: &str| match k {
                "Slave_IO_Running" => Some(io.to_string()),
                "Slave_SQL_Running" => Some(sql.to_string()),
                "Seconds_Behind_Master" => sbm.map(str::to_string),
                _ => None,
            }
        };
        let ok = ReplicaStatus::from_columns(Some(&row("Yes", "Yes", Some("7"))));
        assert_eq!(
            (ok.replicating, ok.lag),
            (true, Some(Duration::from_secs(7)))
        );
        assert_eq!(ok.problem, None);

        let null = ReplicaStatus::from_columns(Some(&row("Yes", "Yes", None)));
        assert_eq!((null.replicating, null.lag), (true, None));
        assert!(null.problem.is_some());

        let connecting = ReplicaStatus::from_columns(Some(&row("Connecting", "Yes", Some("0"))));
        assert_eq!((connecting.replicating, connecting.lag), (false, None));
        assert!(connecting
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("Slave_IO_Running=Connecting")));

        let garbage = ReplicaStatus::from_columns(Some(&row("Yes", "Yes", Some("x"))));
        assert_eq!(garbage.lag, None);

        let none = ReplicaStatus::from_columns(None);
        assert!(!none.replicating && none.lag.is_none());
    }

    #[test]
    fn log_state_only_changes_on_transitions() {
        let r = ServerHealth::new("127.0.0.1:2", true, 1);
        r.record(0, &replica_ok(0));
        let said = log_change(&r, &replica_ok(0), false, None);
        assert_eq!(said, Some(Said::Usable));
        let fail = Check::Failed("x".into());
        r.record(0, &fail);
        assert_eq!(log_change(&r, &fail, true, said), Some(Said::Down));
    }

    #[test]
    fn monitor_stops_promptly_with_unreachable_servers() {
        // Port 1 on loopback refuses connections: checks fail fast and mark servers down.
        let h = Health::new(&map());
        let cfg = MonitorSection {
            interval_ms: 20,
            connect_timeout_ms: 50,
            ..Default::default()
        };
        let handle = try_spawn_monitor(Arc::clone(&h), cfg).expect("monitor starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let p = h.get("127.0.0.1:1").expect("primary");
        while p.is_up() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!p.is_up(), "the refused primary is marked down");
        let started = std::time::Instant::now();
        handle.stop();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// Against a running sandbox: `SHARDGATE_HEALTH_CLUSTER=DIR/cluster.json cargo test --lib
    /// health -- --ignored`. Checks that state becomes known quickly and that a stopped SQL
    /// thread is noticed within two intervals.
    #[tokio::test(flavor = "current_thread")]
    #[ignore = "needs a sandbox cluster: set SHARDGATE_HEALTH_CLUSTER"]
    async fn sandbox_replica_state_is_tracked() {
        // Shows the monitor's state-change lines with --nocapture.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("shardgate=debug")
            .with_test_writer()
            .try_init();
        let Ok(path) = std::env::var("SHARDGATE_HEALTH_CLUSTER") else {
            panic!("set SHARDGATE_HEALTH_CLUSTER to a sandbox's cluster.json");
        };
        let path = std::path::PathBuf::from(path);
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().map(|p| p.to_path_buf()).unwrap_or_default()
        };
        let cluster = crate::sandbox::Cluster::load(&dir).expect("cluster.json loads");
        let health = Health::new(&cluster.shard_map());
        let interval = Duration::from_millis(200);
        let cfg = MonitorSection {
            interval_ms: 200,
            ..Default::default()
        };
        let _monitor = try_spawn_monitor(Arc::clone(&health), cfg).expect("monitor starts");

        let all_known = || {
            health
                .servers()
                .into_iter()
                .all(|s| s.is_up() && (!s.is_replica() || (s.replicating() && s.lag().is_some())))
        };
        let started = std::time::Instant::now();
        wait_for(Duration::from_secs(2), all_known).await;
        eprintln!("all servers known after {:?}", started.elapsed());
        for s in health.servers() {
            eprintln!("{} replica={} lag={:?}", s.addr(), s.is_replica(), s.lag());
        }

        let replica = health
            .servers()
            .into_iter()
            .find(|s| s.is_replica())
            .expect("the sandbox has a replica");
        let port: u16 = replica
            .addr()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("port");
        let opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some("root"))
            .pass(Some(""))
            .prefer_socket(false);
        let mut root = Conn::new(opts).await.expect("root connects");

        root.query_drop("STOP SLAVE SQL_THREAD")
            .await
            .expect("stop");
        let stopped_at = std::time::Instant::now();
        wait_for(2 * interval + Duration::from_millis(50), || {
            !replica.replicating()
        })
        .await;
        eprintln!("SQL thread stop noticed after {:?}", stopped_at.elapsed());
        let rows: Vec<Row> = root.query("SHOW SLAVE STATUS").await.expect("status");
        if let Some(row) = rows.first() {
            for k in [
                "Slave_IO_Running",
                "Slave_SQL_Running",
                "Seconds_Behind_Master",
            ] {
                eprintln!("  {k} = {:?}", row.get_opt::<Option<String>, _>(k));
            }
        }
        assert!(replica.is_up(), "a stopped SQL thread is not a down server");
        assert_eq!(replica.lag(), None);

        root.query_drop("START SLAVE SQL_THREAD")
            .await
            .expect("start");
        wait_for(Duration::from_secs(2), || {
            replica.replicating() && replica.lag().is_some()
        })
        .await;

        // The data plane's mark lasts only until the next check.
        replica.mark_down();
        assert!(!replica.is_up());
        wait_for(2 * interval + Duration::from_millis(50), || replica.is_up()).await;
        let _ = root.disconnect().await;

        // A frozen server (SIGSTOP) answers nothing: the check times out, the server goes down,
        // and after SIGCONT a new connection brings it back.
        let frozen = cluster
            .servers
            .iter()
            .find(|s| s.addr() == **replica.addr())
            .expect("replica in cluster.json");
        let pid = libc::pid_t::try_from(frozen.pid).expect("pid");
        // SAFETY: plain signal syscalls on the sandbox's own server pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let frozen_at = std::time::Instant::now();
        let down = tokio::time::timeout(Duration::from_secs(2), async {
            while replica.is_up() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        eprintln!("frozen replica down after {:?}", frozen_at.elapsed());
        // SAFETY: as above; resumes the server whatever the outcome.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        assert!(down.is_ok(), "a frozen replica is marked down");
        let thawed_at = std::time::Instant::now();
        wait_for(Duration::from_secs(3), || {
            replica.is_up() && replica.replicating() && replica.lag().is_some()
        })
        .await;
        eprintln!("thawed replica usable after {:?}", thawed_at.elapsed());
    }

    async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
