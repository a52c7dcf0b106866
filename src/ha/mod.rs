//! Failure handling: finds dead primaries, promotes the most advanced replica, fences the old
//! primary, runs planned switchovers and rejoins, and records every step as an event.
//!
//! Runs on its own thread (`spawn`), like the health monitor, so the per-core workers never run
//! control-plane work; the admin API calls the same operations from its runtime. One operation
//! at a time (`op` lock). The data plane meets this module only through the [`gate::Gate`]
//! (statements wait while a primary changes) and the [`Topology`] (the new map).

pub mod coord;
pub mod detect;
pub mod events;
// GTIDs and what was acknowledged live below `backend` (which reports into them); their old
// paths stay.
pub use crate::gtid::{self, acked};
pub mod follow;
pub mod gate;
pub mod keyspace_gate;
pub mod ops;
pub mod server;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, HaSection};
use crate::topology::Topology;
use events::Events;
use gate::Gate;
use keyspace_gate::KeyspaceGates;
use server::Creds;

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("{0}")]
    Config(String),
    #[error("{server}: {what}: {msg}")]
    Sql {
        server: String,
        what: String,
        msg: String,
    },
    #[error("no shard named '{0}' (give keyspace/shard or a shard name from the shard map)")]
    UnknownShard(String),
    #[error("{0}")]
    Refused(String),
    /// No candidate holds every write the proxy acknowledged (or that is unknown): promoting
    /// would lose acknowledged writes. `force` accepts that.
    #[error("{0}; `shardgate failover --shard <shard> --force` promotes the most advanced replica anyway, losing what it lacks")]
    Lacking(String),
    #[error("another failover, switchover or rejoin is running ({0}); try again when it ends")]
    Busy(String),
    #[error("{server} did not reach GTID {want} within {ms} ms (it is at {at})")]
    NotCaughtUp {
        server: String,
        want: String,
        at: String,
        ms: u64,
    },
    #[error("the topology store (etcd) is unreachable: this proxy serves on its last shard map and decides nothing (no failover, switchover, rejoin or reload) until it is back")]
    StoreDown,
    #[error("publishing the new shard map: {0}")]
    Publish(#[from] crate::topology::TopologyError),
}

impl HaError {
    /// Whether the caller asked for something that cannot be done (HTTP 4xx), rather than a
    /// server failing along the way.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            HaError::UnknownShard(_)
                | HaError::Refused(_)
                | HaError::Lacking(_)
                | HaError::Busy(_)
                | HaError::Config(_)
                | HaError::StoreDown
        )
    }
}

/// A former primary kept out of routing until `rejoin`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fenced {
    pub server: String,
    pub shard: String,
    /// The primary that replaced it.
    pub replaced_by: String,
    pub since: String,
    /// `read_only` was set on it since it was fenced (it was reachable).
    pub read_only_set: bool,
}

/// The operation running now, for the admin API and the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub operation: String,
    pub shard: String,
    pub started: String,
    pub step: String,
    pub steps_done: usize,
}

/// What a finished failover, switchover or rejoin did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub operation: String,
    pub shard: String,
    pub old_primary: String,
    pub new_primary: String,
    /// Shard map version published (0 when none was).
    pub version: u64,
    pub took_ms: u64,
    /// How long statements were held (planned switchover and failover).
    pub held_ms: u64,
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub auto_failover: bool,
    pub shard_map_version: u64,
    pub running: Option<Progress>,
    pub fenced: Vec<Fenced>,
    /// Shards whose automatic failover is refused because no replica holds every
    /// acknowledged write: shard -> why.
    #[serde(default)]
    pub blocked: BTreeMap<String, String>,
    pub last_event_id: u64,
}

pub struct Ha {
    cfg: HaSection,
    creds: Creds,
    pub gate: Gate,
    /// Per sharded keyspace: statements held during a reshard cutover.
    pub keyspaces: KeyspaceGates,
    pub events: Events,
    topology: Arc<Topology>,
    op: tokio::sync::Mutex<()>,
    fenced: Mutex<BTreeMap<String, Fenced>>,
    progress: Mutex<Option<Progress>>,
    blocked: Mutex<BTreeMap<String, String>>,
    /// Holds other proxies coordinate, by shard: the hold's id, a reshard hold's scope, and
    /// whether it switches the map (a cutover's).
    remote_holds: Mutex<BTreeMap<String, (String, keyspace_gate::Scope, bool)>>,
}

impl Ha {
    pub fn new(config: &Config, topology: Arc<Topology>) -> Self {
        let fenced = fenced_from_history(&topology.history());
        Ha {
            cfg: config.ha.clone(),
            creds: Creds {
                user: config.monitor.user.clone(),
                password: config.monitor.password.clone(),
                connect_timeout: config.monitor.connect_timeout(),
                query_timeout: Duration::from_secs(10),
            },
            gate: Gate::default(),
            keyspaces: KeyspaceGates::default(),
            events: Events::default(),
            topology,
            op: tokio::sync::Mutex::new(()),
            fenced: Mutex::new(fenced),
            progress: Mutex::new(None),
            blocked: Mutex::new(BTreeMap::new()),
            remote_holds: Mutex::new(BTreeMap::new()),
        }
    }

    /// The account server checks and changes use (`[monitor]`).
    pub fn creds(&self) -> &Creds {
        &self.creds
    }

    pub fn config(&self) -> &HaSection {
        &self.cfg
    }

    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    pub fn status(&self) -> Status {
        Status {
            auto_failover: self.cfg.auto_failover,
            shard_map_version: self.topology.version(),
            running: lock(&self.progress).clone(),
            fenced: lock(&self.fenced).values().cloned().collect(),
            blocked: self.blocked(),
            last_event_id: self.events.last_id(),
        }
    }

    pub fn fenced(&self) -> Vec<Fenced> {
        lock(&self.fenced).values().cloned().collect()
    }

    /// Shards whose failover is refused for lack of acknowledged writes, with the reason.
    pub fn blocked(&self) -> BTreeMap<String, String> {
        lock(&self.blocked).clone()
    }

    /// Failover of `group` refused: no candidate holds every acknowledged write. Logged once
    /// per reason (the detector tries again), an event each time it changes.
    fn block(&self, group: &ops::Group, why: &str) {
        let changed = lock(&self.blocked).insert(group.name.clone(), why.to_string())
            != Some(why.to_string());
        metrics::gauge!("shardgate_failover_blocked", "shard" => group.name.clone()).set(1.0);
        if changed {
            // Logged at error level by the event list.
            self.events.add(
                "blocked",
                Some(&group.name),
                Some(&group.primary),
                format!("no automatic failover: {why}"),
            );
        }
    }

    fn unblock(&self, group: &ops::Group) {
        if lock(&self.blocked).remove(&group.name).is_some() {
            metrics::gauge!("shardgate_failover_blocked", "shard" => group.name.clone()).set(0.0);
        }
    }
}

impl Ha {
    /// Another proxy published `new` over `old`: servers that became primaries start with no
    /// record of acknowledged writes (their baseline is read again), and former primaries the
    /// map no longer names are fenced here too.
    pub fn on_new_map(&self, old: &crate::shardmap::ShardMap, new: &crate::shardmap::ShardMap) {
        let was: Vec<String> = ops::groups(old).into_iter().map(|g| g.primary).collect();
        for g in ops::groups(new) {
            if !was.contains(&g.primary) {
                acked::Acked::global().forget(&g.primary);
            }
        }
        let from_history = fenced_from_history(&self.topology.history());
        let mut fenced = lock(&self.fenced);
        let named = |addr: &str| {
            new.keyspace.values().any(|k| {
                k.shards
                    .iter()
                    .any(|s| s.primary == addr || s.replicas.iter().any(|r| r.addr == addr))
            })
        };
        fenced.retain(|server, _| !named(server));
        for (server, f) in from_history {
            fenced.entry(server).or_insert(f);
        }
    }

    /// `reload` through the same lock and store as failover: with etcd the new map reaches
    /// every proxy, and nothing is decided while etcd is unreachable.
    pub async fn reload(
        &self,
        config: Config,
        force: bool,
    ) -> Result<crate::topology::ReloadReport, HaError> {
        self.may_decide()?;
        let shard_lock = self.lock_shard("config", "reload").await?;
        Ok(self
            .topology
            .reload(config, force, &shard_lock.fence)
            .await?)
    }
}

/// Former primaries that the newest shard map no longer names at all: after a restart (the
/// versions come from the state file) they stay fenced until `rejoin`.
fn fenced_from_history(history: &[crate::topology::MapVersion]) -> BTreeMap<String, Fenced> {
    let mut out = BTreeMap::new();
    let Some(current) = history.last() else {
        return out;
    };
    let named = |addr: &str| {
        current.map.keyspace.values().any(|k| {
            k.shards
                .iter()
                .any(|s| s.primary == addr || s.replicas.iter().any(|r| r.addr == addr))
        })
    };
    for v in history {
        for (ks, k) in &v.map.keyspace {
            for (i, s) in k.shards.iter().enumerate() {
                if named(&s.primary) || out.contains_key(&s.primary) {
                    continue;
                }
                let now = current
                    .map
                    .keyspace
                    .get(ks)
                    .and_then(|k| k.shards.get(i))
                    .map(|s| s.primary.clone())
                    .unwrap_or_default();
                out.insert(
                    s.primary.clone(),
                    Fenced {
                        server: s.primary.clone(),
                        shard: format!("{ks}/{}", s.name),
                        replaced_by: now,
                        since: current.at.clone(),
                        read_only_set: false,
                    },
                );
            }
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The failure detector's thread; dropping it stops the detector.
pub struct HaHandle {
    stop: Option<tokio::sync::watch::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HaHandle {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the failure detector (and the fencing of returning former primaries) on its own
/// thread.
pub fn spawn(ha: Arc<Ha>) -> std::io::Result<HaHandle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = tokio::sync::watch::channel(());
    let thread = std::thread::Builder::new()
        .name("shardgate-ha".into())
        .spawn(move || runtime.block_on(detect::run(ha, rx)))?;
    Ok(HaHandle {
        stop: Some(tx),
        thread: Some(thread),
    })
}
