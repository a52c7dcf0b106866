//! The live shard map: which server is each shard's primary right now. Failover and planned
//! switchover publish new versions; sessions plan every statement against the current one.
//!
//! Versions are kept in memory (history for the admin API) and, with `[ha] state_file`, on
//! disk: a proxy that restarts after a failover loads the newest version instead of sending
//! writes to the old primary its config still names.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backend::health::Health;
use crate::config::Config;
use crate::planner::Planner;
use crate::shardmap::ShardMap;

/// Versions kept in memory and in the state file.
const HISTORY: usize = 50;

/// One published shard map.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    writer: Mutex<()>,
    changed: watch::Sender<u64>,
    state_file: Option<PathBuf>,
}

impl Topology {
    /// Starts from the config's shard map, or from the state file's newest version when there
    /// is one (logged, so an operator knows why the config's primaries are not used).
    pub fn new(config: &Config, health: Arc<Health>) -> Result<Self, TopologyError> {
        let state_file = config.ha.state_file.clone();
        let saved = match &state_file {
            Some(f) => load(f)?,
            None => Vec::new(),
        };
        let first = match saved.last() {
            Some(v) => {
                tracing::warn!(
                    file = %state_file.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default(),
                    version = v.version,
                    reason = %v.reason,
                    "using the shard map published by an earlier failover, not the config's; \
                     delete the state file to start from the config again"
                );
                v.map.clone()
            }
            None => config.shard_map(),
        };
        // Every server a kept version names gets a health entry (a restart after a failover).
        for v in &saved {
            health.add_map(&v.map);
        }
        let planner = build_planner(config, &health, &first);
        let mut history = saved;
        if history.is_empty() {
            history.push(MapVersion {
                version: 1,
                at: crate::ha::events::now_rfc3339(),
                reason: "config".into(),
                map: first,
            });
        }
        let version = history.last().map_or(1, |v| v.version);
        set_roles(&health, &history[history.len() - 1].map);
        Ok(Topology {
            planner: ArcSwap::from_pointee(planner),
            health,
            config: ArcSwap::from_pointee(config.clone()),
            history: Mutex::new(history),
            writer: Mutex::new(()),
            changed: watch::channel(version).0,
            state_file,
        })
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

    /// Makes `map` current: new statements plan against it at once. Written to the state file
    /// first (when there is one), so a version that routes writes is never only in memory.
    pub fn publish(&self, map: ShardMap, reason: &str) -> Result<u64, TopologyError> {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let version = h.last().map_or(1, |v| v.version) + 1;
        h.push(MapVersion {
            version,
            at: crate::ha::events::now_rfc3339(),
            reason: reason.to_string(),
            map: map.clone(),
        });
        if h.len() > HISTORY {
            let extra = h.len() - HISTORY;
            h.drain(..extra);
        }
        if let Some(f) = &self.state_file {
            if let Err(e) = save(f, &h) {
                h.pop();
                return Err(e);
            }
        }
        drop(h);
        set_roles(&self.health, &map);
        self.planner.store(Arc::new(build_planner(
            &self.config.load(),
            &self.health,
            &map,
        )));
        self.changed.send_replace(version);
        metrics::gauge!("shardgate_shard_map_version").set(version as f64);
        Ok(version)
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
    pub fn reload(&self, new: Config, force: bool) -> Result<ReloadReport, TopologyError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
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
        } else {
            self.publish(map, "config reload")?
        };
        Ok(ReloadReport {
            version,
            map_changed: !same_map,
            added_servers: added,
            restart_needed,
        })
    }

    /// Publishes `change` applied to the current map, with no other change in between.
    pub fn update(
        &self,
        reason: &str,
        change: impl FnOnce(&ShardMap) -> Result<ShardMap, TopologyError>,
    ) -> Result<u64, TopologyError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let map = change(&self.map())?;
        self.publish(map, reason)
    }

    /// Waits until a version newer than `seen` is published, at most `limit`; true if it was.
    pub async fn wait_newer(&self, seen: u64, limit: std::time::Duration) -> bool {
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|v| *v > seen))
            .await
            .is_ok_and(|r| r.is_ok())
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

fn load(file: &Path) -> Result<Vec<MapVersion>, TopologyError> {
    let err = |msg: String| TopologyError::Read {
        file: file.display().to_string(),
        msg,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let versions: Vec<MapVersion> = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    if let Some(v) = versions.last() {
        v.map
            .validate(&file.display().to_string())
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(versions)
}

/// Written to a temporary file and renamed, so a crash leaves the old or the new, never half.
fn save(file: &Path, versions: &[MapVersion]) -> Result<(), TopologyError> {
    let err = |msg: String| TopologyError::Write {
        file: file.display().to_string(),
        msg,
    };
    let text = serde_json::to_string_pretty(versions).map_err(|e| err(e.to_string()))?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, file).map_err(|e| err(e.to_string()))
}
