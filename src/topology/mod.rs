//! The live shard map: which server is each shard's primary right now. Failover and planned
//! switchover publish new versions; sessions plan every statement against the current one.
//!
//! Versions live behind one seam with two stores: the local state file (`[ha] state_file`, the
//! default: one proxy, nothing else to run) or etcd (`[topology] store = "etcd"`: several
//! proxies on one map). With etcd, a version is published only by compare-and-set on the one
//! before it, every proxy follows `map/current` through a watch (`ha::follow`), and the state file,
//! when set, keeps a local copy to start from while etcd is unreachable.

pub mod etcd;
mod file;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backend::health::Health;
use crate::config::{Config, StoreKind};
use crate::planner::Planner;
use crate::shardmap::ShardMap;
pub use etcd::EtcdStore;

/// Versions kept in memory and in the state file.
const HISTORY: usize = 50;

/// How often a publish that lost a compare-and-set race is retried on the newer map.
const PUBLISH_TRIES: usize = 5;

/// One published shard map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapVersion {
    pub version: u64,
    /// RFC 3339, UTC.
    pub at: String,
    /// Why it was published: `config`, `failover of app/s0: ...`.
    pub reason: String,
    pub map: ShardMap,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("reading the topology state file {file}: {msg}")]
    Read { file: String, msg: String },
    #[error("writing the topology state file {file}: {msg}")]
    Write { file: String, msg: String },
    #[error("{0}")]
    Refused(String),
    /// etcd did not answer, or answered with an error.
    #[error("the topology store: {0}")]
    Store(String),
    /// Another proxy published first, every retry.
    #[error("another proxy kept publishing shard map versions; try again")]
    Conflict,
    /// The lock this change was made under is no longer held (its lease expired): another
    /// proxy may be finishing the operation.
    #[error(
        "this proxy lost its lock on {0} (its etcd lease expired); the change was not published"
    )]
    LostLock(String),
}

/// Where the versions are kept.
enum Backing {
    /// This proxy alone; the file, when set, survives restarts.
    File(Option<PathBuf>),
    /// Shared through etcd; the file, when set, is a local copy for a start without etcd.
    Etcd(Arc<EtcdStore>, Option<PathBuf>),
}

pub struct Topology {
    planner: ArcSwap<Planner>,
    health: Arc<Health>,
    /// The config in force: the one the proxy started with, or the last reloaded (users,
    /// routing defaults for new planners).
    config: ArcSwap<Config>,
    history: Mutex<Vec<MapVersion>>,
    /// Held across read-modify-write of the map (failover, rejoin, reload), so one change
    /// never publishes over another it did not see.
    writer: tokio::sync::Mutex<()>,
    changed: watch::Sender<u64>,
    backing: Backing,
    /// etcd: the mod revision of the `map/current` applied (0: none yet, -1: never read).
    rev: AtomicI64,
}

impl Topology {
    /// Starts from the config's shard map, or from the state file's newest version when there
    /// is one (logged, so an operator knows why the config's primaries are not used). With
    /// etcd, from etcd's current version (seeding etcd with the local one when it has none);
    /// while etcd is unreachable, from the local one, until `ha::follow` reaches it.
    pub fn new(config: &Config, health: Arc<Health>) -> Result<Self, TopologyError> {
        let store = match config.topology.store {
            StoreKind::File => None,
            StoreKind::Etcd => Some(EtcdStore::start(
                &config.topology,
                &config.proxy.listen,
                &config.proxy.admin_listen,
            )?),
        };
        Self::with_store(config, health, store)
    }

    pub fn with_store(
        config: &Config,
        health: Arc<Health>,
        store: Option<Arc<EtcdStore>>,
    ) -> Result<Self, TopologyError> {
        let state_file = config.ha.state_file.clone();
        let saved = match &state_file {
            Some(f) => file::load(f)?,
            None => Vec::new(),
        };
        if let Some(v) = saved.last() {
            tracing::warn!(
                file = %state_file.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default(),
                version = v.version,
                reason = %v.reason,
                "using the shard map published by an earlier failover, not the config's; \
                 delete the state file to start from the config again"
            );
        }
        let mut history = saved;
        if history.is_empty() {
            history.push(MapVersion {
                version: 1,
                at: crate::clock::now_rfc3339(),
                reason: "config".into(),
                map: config.shard_map(),
            });
        }
        let mut rev = -1;
        if let Some(store) = &store {
            match store.block_on(first_sync(store.clone(), history.clone())) {
                Ok((h, r)) => {
                    history = h;
                    rev = r;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    version = history.last().map_or(1, |v| v.version),
                    "etcd is unreachable at start: serving on the local shard map until it is back"
                ),
            }
        }
        // Every server a kept version names gets a health entry (a restart after a failover).
        for v in &history {
            health.add_map(&v.map);
        }
        let first = history[history.len() - 1].map.clone();
        let planner = build_planner(config, &health, &first);
        let version = history.last().map_or(1, |v| v.version);
        set_roles(&health, &first);
        metrics::gauge!("shardgate_shard_map_version").set(version as f64);
        let backing = match store {
            Some(s) => Backing::Etcd(s, state_file),
            None => Backing::File(state_file),
        };
        Ok(Topology {
            planner: ArcSwap::from_pointee(planner),
            health,
            config: ArcSwap::from_pointee(config.clone()),
            history: Mutex::new(history),
            writer: tokio::sync::Mutex::new(()),
            changed: watch::channel(version).0,
            backing,
            rev: AtomicI64::new(rev),
        })
    }

    /// The etcd store, when the map is shared.
    pub fn store(&self) -> Option<&Arc<EtcdStore>> {
        match &self.backing {
            Backing::Etcd(s, _) => Some(s),
            Backing::File(_) => None,
        }
    }

    /// The local state file, when there is one (with etcd: the local copy).
    pub fn state_file(&self) -> Option<&Path> {
        match &self.backing {
            Backing::File(f) | Backing::Etcd(_, f) => f.as_deref(),
        }
    }

    /// The mod revision of etcd's `map/current` this proxy applied (-1: not read yet).
    pub fn revision(&self) -> i64 {
        self.rev.load(Ordering::SeqCst)
    }

    /// The planner of the current version.
    pub fn planner(&self) -> Arc<Planner> {
        self.planner.load_full()
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// The current shard map.
    pub fn map(&self) -> ShardMap {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        h.last().map(|v| v.map.clone()).unwrap_or_default()
    }

    /// Every version kept, oldest first.
    pub fn history(&self) -> Vec<MapVersion> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `v` current here: new statements plan against it at once. For a version read
    /// from etcd at `rev` (-1 for the file store), applied only if newer than what is here.
    /// Returns whether it was applied.
    pub fn apply(&self, v: MapVersion, rev: i64) -> bool {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if rev >= 0 {
            if rev <= self.rev.load(Ordering::SeqCst) {
                return false;
            }
            self.rev.store(rev, Ordering::SeqCst);
        }
        if h.last() == Some(&v) {
            return false;
        }
        let version = v.version;
        let map = v.map.clone();
        h.retain(|x| x.version < version);
        h.push(v);
        trim(&mut h);
        if let Backing::Etcd(_, Some(f)) = &self.backing {
            // A local copy only: etcd has it already.
            if let Err(e) = file::save(f, &h) {
                tracing::warn!(error = %e, "keeping a local copy of the shard map");
            }
        }
        drop(h);
        self.health.add_map(&map);
        set_roles(&self.health, &map);
        let columns = self.planner.load().table_columns().clone();
        self.planner.store(Arc::new(
            build_planner(&self.config.load(), &self.health, &map).with_table_columns(columns),
        ));
        self.changed.send_replace(version);
        metrics::gauge!("shardgate_shard_map_version").set(version as f64);
        true
    }

    /// Publishes `map` as the next version. The file store writes the state file first (a
    /// version that routes writes is never only in memory); etcd takes it only if no other
    /// version came in between and every `fence` holds (a lock still ours).
    async fn publish(
        &self,
        map: ShardMap,
        reason: &str,
        fence: &[Fence],
    ) -> Result<u64, TopologyError> {
        let v = MapVersion {
            version: self.version() + 1,
            at: crate::clock::now_rfc3339(),
            reason: reason.to_string(),
            map,
        };
        let version = v.version;
        match &self.backing {
            Backing::File(file) => {
                if let Some(f) = file {
                    let mut h = self.history();
                    h.push(v.clone());
                    trim(&mut h);
                    file::save(f, &h)?;
                }
                self.apply(v, -1);
                Ok(version)
            }
            Backing::Etcd(store, _) => {
                let rev = self.rev.load(Ordering::SeqCst).max(0);
                let also = fence.iter().map(Fence::compare).collect();
                match store.publish(&v, rev, also).await? {
                    Ok(new_rev) => {
                        self.apply(v, new_rev);
                        Ok(version)
                    }
                    Err(Some((current, cur_rev))) if cur_rev != rev => {
                        self.apply(current, cur_rev);
                        Err(TopologyError::Conflict)
                    }
                    Err(_) => match fence.first() {
                        Some(f) => Err(TopologyError::LostLock(f.what.clone())),
                        None => Err(TopologyError::Conflict),
                    },
                }
            }
        }
    }

    /// The config in force (users, keyspaces, routing): changes with `reload`.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Applies a re-read config without dropping a client: its shard map (new replicas are
    /// checked and used as soon as the monitor finds them healthy; removed servers get no new
    /// statements), users and routing limits. Refused, changing nothing, when it would move a
    /// shard's primary away from the live one (after a failover the config is out of date:
    /// `force` overrides). Sections that only a restart applies are listed in the report.
    /// With etcd the map goes to every proxy; users and routing stay this proxy's.
    pub async fn reload(
        &self,
        new: Config,
        force: bool,
        fence: &[Fence],
    ) -> Result<ReloadReport, TopologyError> {
        let _w = self.writer.lock().await;
        let live = self.map();
        let map = new.shard_map();
        if !force {
            for (ks, k) in &map.keyspace {
                for s in &k.shards {
                    let now = live
                        .keyspace
                        .get(ks)
                        .and_then(|lk| lk.shards.iter().find(|x| x.name == s.name));
                    if let Some(now) = now.filter(|now| now.primary != s.primary) {
                        return Err(TopologyError::Refused(format!(
                            "the config names {} as primary of {ks}/{} but the live primary is {} \
                             (a failover or switchover changed it): update the config's shard map, \
                             or reload with force to move the primary back",
                            s.primary, s.name, now.primary
                        )));
                    }
                }
            }
        }
        let old = self.config.load_full();
        let restart_needed = restart_needed(&old, &new);
        let added = self.health.add_map(&map);
        let same_map = map == live;
        let same_routing = old.routing == new.routing;
        self.config.store(Arc::new(new));
        let version = if same_map && same_routing {
            self.version()
        } else if same_map {
            // Routing limits only: a new planner on the same map, this proxy's business.
            let columns = self.planner.load().table_columns().clone();
            self.planner.store(Arc::new(
                build_planner(&self.config.load(), &self.health, &live).with_table_columns(columns),
            ));
            self.version()
        } else {
            self.publish(map, "config reload", fence).await?
        };
        Ok(ReloadReport {
            version,
            map_changed: !same_map,
            added_servers: added,
            restart_needed,
        })
    }

    /// Publishes `change` applied to the current map, with no other change in between (with
    /// etcd: retried on the newer map when another proxy published first).
    pub async fn update(
        &self,
        reason: &str,
        fence: &[Fence],
        change: impl Fn(&ShardMap) -> Result<ShardMap, TopologyError>,
    ) -> Result<u64, TopologyError> {
        let _w = self.writer.lock().await;
        let mut last = TopologyError::Conflict;
        for _ in 0..PUBLISH_TRIES {
            let map = change(&self.map())?;
            match self.publish(map, reason, fence).await {
                Err(TopologyError::Conflict) => {
                    if let Some(store) = self.store() {
                        // The newer version may not have reached the watch yet.
                        if let Ok(l) = store.load().await {
                            if let Some((v, rev)) = l.current {
                                self.apply(v, rev);
                            }
                        }
                    }
                    last = TopologyError::Conflict;
                }
                r => return r,
            }
        }
        Err(last)
    }

    /// Waits until a version newer than `seen` is published, at most `limit`; true if it was.
    pub async fn wait_newer(&self, seen: u64, limit: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|v| *v > seen))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Subscribes to version changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Keeps the newest `HISTORY` versions.
fn trim(h: &mut Vec<MapVersion>) {
    if h.len() > HISTORY {
        let extra = h.len() - HISTORY;
        h.drain(..extra);
    }
}

/// A condition a publish needs besides "no other version in between": a lock key still held
/// under this proxy's lease.
#[derive(Debug, Clone)]
pub struct Fence {
    pub key: String,
    pub lease: i64,
    /// What the lock is for, for the error.
    pub what: String,
}

impl Fence {
    fn compare(&self) -> etcd_client::Compare {
        etcd_client::Compare::lease(self.key.clone(), etcd_client::CompareOp::Equal, self.lease)
    }
}

/// etcd's history and current version, seeded with `local` when etcd has none (the first
/// proxy of a cluster, or one moving from a state file to etcd).
async fn first_sync(
    store: Arc<EtcdStore>,
    local: Vec<MapVersion>,
) -> Result<(Vec<MapVersion>, i64), TopologyError> {
    let loaded = store.load().await?;
    if let Some((cur, rev)) = loaded.current {
        let mut h = loaded.history;
        h.retain(|v| v.version < cur.version);
        h.push(cur);
        return Ok((h, rev));
    }
    let Some(newest) = local.last().cloned() else {
        return Err(TopologyError::Store("nothing to seed etcd with".into()));
    };
    match store.publish(&newest, 0, Vec::new()).await? {
        Ok(rev) => {
            tracing::info!(
                version = newest.version,
                "etcd had no shard map for this cluster: published this proxy's"
            );
            Ok((local, rev))
        }
        // Another proxy seeded it first: theirs.
        Err(Some((cur, rev))) => Ok((vec![cur], rev)),
        Err(None) => Err(TopologyError::Store(
            "etcd refused the first shard map".into(),
        )),
    }
}

/// What a reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The shard map version in force after it.
    pub version: u64,
    pub map_changed: bool,
    /// Servers new to the proxy (checked from now on).
    pub added_servers: Vec<String>,
    /// Settings that changed in the file but take effect only when the proxy restarts.
    pub restart_needed: Vec<String>,
}

/// Config sections whose change a running proxy does not apply.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    fn val<T: Serialize>(t: &T) -> Option<toml::Value> {
        toml::Value::try_from(t).ok()
    }
    let routing = |c: &Config| {
        let mut r = c.routing.clone();
        r.max_replica_lag = 0.0;
        r.read_write_split = false;
        val(&r)
    };
    [
        ("proxy", val(&old.proxy), val(&new.proxy)),
        ("pool", val(&old.pool), val(&new.pool)),
        ("monitor", val(&old.monitor), val(&new.monitor)),
        ("cache", val(&old.cache), val(&new.cache)),
        ("ha", val(&old.ha), val(&new.ha)),
        ("topology", val(&old.topology), val(&new.topology)),
        (
            "routing (but max_replica_lag and read_write_split)",
            routing(old),
            routing(new),
        ),
    ]
    .into_iter()
    .filter(|(_, a, b)| a != b)
    .map(|(name, _, _)| name.to_string())
    .collect()
}

fn build_planner(config: &Config, health: &Health, map: &ShardMap) -> Planner {
    let mut c = config.clone();
    c.keyspace = map.keyspace.clone();
    Planner::new(map.clone(), health, config.routing.read_write_split, |ks| {
        c.max_replica_lag(ks)
    })
}

/// Checks servers as what the map says they are: a promoted replica as a primary, a rejoined
/// primary as a replica.
fn set_roles(health: &Health, map: &ShardMap) {
    for ks in map.keyspace.values() {
        for shard in &ks.shards {
            if let Some(s) = health.get(&shard.primary) {
                s.set_replica(false);
            }
            for r in &shard.replicas {
                if let Some(s) = health.get(&r.addr) {
                    s.set_replica(true);
                }
            }
        }
    }
}
