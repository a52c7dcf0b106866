//! `add-shard` and `remove-shard`: grow or shrink a running sandbox by one shard, for trying
//! resharding. Neither touches the proxy configs' shard maps: resharding publishes the map that
//! routes to a new shard, and only a shard no map routes to may be removed.

use std::path::Path;
use std::time::Duration;

use super::cluster::{cluster_json, Cluster, ServerInfo, ETCD_PREFIX, STATE_FILE};
use super::error::{io, SandboxError};
use super::lifecycle::{
    copy_datadirs, plan_shard, remove_server_files, spawn_all, stop_started, wait_all,
};
use super::{free_ports, process, replication, template};
use crate::config::Config;
use crate::shardmap::ShardMap;
use crate::topology::MapVersion;

/// A shard `add_shard` started: its name and servers, the primary first.
#[derive(Debug, Clone)]
pub struct AddedShard {
    pub name: String,
    pub servers: Vec<ServerInfo>,
}

impl AddedShard {
    /// `NAME=PRIMARY[,REPLICA...]`: what `shardgate reshard plan/start --add` takes.
    pub fn add_arg(&self) -> String {
        let addrs: Vec<String> = self.servers.iter().map(ServerInfo::addr).collect();
        format!("{}={}", self.name, addrs.join(","))
    }
}

/// Starts one more shard in the sandbox in `dir`, named after the highest `s<N>` (s0, s1 ->
/// s2), with as many replicas as its first shard and the same server settings, the app user
/// and database `app` (no tables), and records it in `cluster.json`. Either returns a
/// replicating shard or stops what it started and leaves `cluster.json` as it was.
pub async fn add_shard(dir: &Path) -> Result<AddedShard, SandboxError> {
    let mut cluster = load(dir)?;
    let names = cluster.shard_names();
    let first = names
        .first()
        .ok_or_else(|| state(&cluster, "lists no shard"))?;
    let per_shard = cluster.servers.iter().filter(|s| &s.shard == first).count();
    let name = next_name(&names);
    let first_id = cluster
        .servers
        .iter()
        .map(|s| s.server_id)
        .max()
        .unwrap_or(0)
        + 1;
    let ports = free_ports(per_shard).map_err(io("finding free ports"))?;
    let servers = plan_shard(&cluster.dir, &name, &ports, first_id)?;

    let bins = template::find_binaries()?;
    let tpl = template::ensure(&bins).await?;
    copy_datadirs(&tpl, &servers).await?;
    let kept = cluster.servers.len();
    cluster.servers.extend(servers);
    let result = async {
        spawn_all(&bins, &mut cluster.servers[kept..])?;
        // Saved at once so `down` can find these pids even if this is interrupted.
        cluster.save()?;
        wait_all(&bins, &mut cluster.servers[kept..]).await?;
        cluster.save()?;
        replication::setup_shards(&cluster, std::slice::from_ref(&name)).await
    }
    .await;
    if let Err(e) = result {
        stop_started(&cluster.servers[kept..]).await;
        // Datadirs (and their error.log) stay for inspection; the next add replaces them.
        cluster.servers.truncate(kept);
        if let Err(save) = cluster.save() {
            // The stopped servers stay listed; `down` skips pids that no longer run.
            tracing::warn!(error = %save, "dropping the failed shard from cluster.json");
        }
        return Err(e);
    }
    tracing::info!(shard = %name, dir = %cluster.dir.display(), "sandbox shard added");
    Ok(AddedShard {
        name,
        servers: cluster.servers.split_off(kept),
    })
}

/// Stops shard `shard`'s servers, removes their datadirs and drops them from `cluster.json`.
/// Refuses the last shard, and a shard that a proxy's shard map still routes to (its config,
/// the newest version in the state file, or etcd's current one): reshard it away first.
/// Returns the servers removed.
pub async fn remove_shard(dir: &Path, shard: &str) -> Result<Vec<ServerInfo>, SandboxError> {
    let mut cluster = load(dir)?;
    let names = cluster.shard_names();
    if !names.iter().any(|n| n == shard) {
        return Err(SandboxError::Refused(format!(
            "the sandbox in {} has no shard {shard} (its shards: {})",
            cluster.dir.display(),
            names.join(", ")
        )));
    }
    if names.len() == 1 {
        return Err(SandboxError::Refused(format!(
            "{shard} is the sandbox's only shard; stop the whole sandbox with \
             `shardgate sandbox down --dir {}`",
            cluster.dir.display()
        )));
    }
    let (gone, kept): (Vec<ServerInfo>, Vec<ServerInfo>) = cluster
        .servers
        .iter()
        .cloned()
        .partition(|s| s.shard == shard);
    let addrs: Vec<String> = gone.iter().map(ServerInfo::addr).collect();
    for (source, map) in maps_in_force(&cluster).await? {
        if let Some(keyspace) = names_shard(&map, shard, &addrs) {
            return Err(SandboxError::Refused(format!(
                "shard {shard} is still in keyspace {keyspace}'s shard map ({source}): reshard \
                 it away first (`shardgate reshard start --keyspace {keyspace} --remove \
                 {shard}`, then `reshard cutover` and `reshard complete`)"
            )));
        }
    }

    let targets: Vec<(u32, std::path::PathBuf)> =
        gone.iter().map(|s| (s.pid, s.datadir.clone())).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<(u32, &Path)> = targets.iter().map(|(p, d)| (*p, d.as_path())).collect();
        process::stop(&refs, Duration::from_secs(20))
    })
    .await
    .map_err(|e| SandboxError::Internal(format!("stop task failed: {e}")))?
    .map_err(|left| SandboxError::Stop(format!("mariadbd pids {left:?} of shard {shard}")))?;
    cluster.servers = kept;
    cluster.save()?;
    remove_server_files(&cluster.dir, &gone)?;
    tracing::info!(shard, dir = %cluster.dir.display(), "sandbox shard removed");
    Ok(gone)
}

/// The sandbox's `cluster.json`, or an error saying there is no sandbox in `dir`.
fn load(dir: &Path) -> Result<Cluster, SandboxError> {
    let dir = std::path::absolute(dir).map_err(io(format!("resolving {}", dir.display())))?;
    if !cluster_json(&dir).exists() {
        return Err(SandboxError::Refused(format!(
            "no sandbox in {} (no cluster.json); start one with `shardgate sandbox up --dir {}`",
            dir.display(),
            dir.display()
        )));
    }
    Cluster::load(&dir)
}

fn state(cluster: &Cluster, msg: &str) -> SandboxError {
    SandboxError::State {
        file: cluster_json(&cluster.dir).display().to_string(),
        msg: msg.into(),
    }
}

/// `s<N+1>` for the highest `s<N>` in `names` (`s0` when none has that form), so a new shard
/// never takes the name of one that still exists.
fn next_name(names: &[String]) -> String {
    let next = names
        .iter()
        .filter_map(|n| n.strip_prefix('s')?.parse::<u64>().ok())
        .max()
        .map_or(0, |n| n + 1);
    format!("s{next}")
}

/// The keyspace of `map` with a shard named `shard` or on one of `addrs`, if any.
fn names_shard(map: &ShardMap, shard: &str, addrs: &[String]) -> Option<String> {
    map.keyspace
        .iter()
        .find(|(_, k)| {
            k.shards.iter().any(|s| {
                s.name == shard
                    || addrs.contains(&s.primary)
                    || s.replica_addrs().any(|r| addrs.iter().any(|a| a == r))
            })
        })
        .map(|(name, _)| name.clone())
}

/// Every shard map a proxy of this sandbox routes by or would start from, with where it was
/// read: each proxy config's, the state file's newest version, and etcd's current version.
async fn maps_in_force(cluster: &Cluster) -> Result<Vec<(String, ShardMap)>, SandboxError> {
    let mut maps = Vec::new();
    for path in cluster.proxy_configs() {
        if !path.exists() {
            continue;
        }
        let cfg = Config::load(&path).map_err(|e| SandboxError::State {
            file: path.display().to_string(),
            msg: e.to_string(),
        })?;
        maps.push((path.display().to_string(), cfg.shard_map()));
    }
    let state_file = cluster.dir.join(STATE_FILE);
    match std::fs::read_to_string(&state_file) {
        Ok(text) => {
            let versions: Vec<MapVersion> =
                serde_json::from_str(&text).map_err(|e| SandboxError::State {
                    file: state_file.display().to_string(),
                    msg: e.to_string(),
                })?;
            if let Some(v) = versions.into_iter().last() {
                let source = format!("version {} in {}", v.version, state_file.display());
                maps.push((source, v.map));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("reading {}", state_file.display()))(e)),
    }
    if let Some(etcd) = &cluster.etcd {
        if let Some(v) = etcd_current(&etcd.endpoint()).await? {
            let source = format!("version {} in etcd at {}", v.version, etcd.endpoint());
            maps.push((source, v.map));
        }
    }
    Ok(maps)
}

/// etcd's current shard map version under the sandbox prefix (None before a proxy seeds it).
async fn etcd_current(endpoint: &str) -> Result<Option<MapVersion>, SandboxError> {
    let unreachable = |e: String| {
        SandboxError::Refused(format!(
            "the sandbox etcd at {endpoint} did not answer ({e}), so the shard map the proxies \
             share cannot be checked; start it again and retry"
        ))
    };
    let t = Duration::from_secs(5);
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(t)
        .with_timeout(t);
    let mut client = etcd_client::Client::connect([format!("http://{endpoint}")], Some(options))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let key = format!("{ETCD_PREFIX}/map/current");
    let resp = client
        .get(key.as_str(), None)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    match resp.kvs().first() {
        Some(kv) => serde_json::from_slice(kv.value())
            .map(Some)
            .map_err(|e| SandboxError::State {
                file: format!("etcd {endpoint} {key}"),
                msg: e.to_string(),
            }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_name_continues_after_the_highest() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(next_name(&names(&["s0", "s1"])), "s2");
        assert_eq!(next_name(&names(&["s0", "s3", "s1"])), "s4");
        assert_eq!(next_name(&names(&["main"])), "s0");
        assert_eq!(next_name(&[]), "s0");
    }

    #[test]
    fn a_shard_is_named_by_its_name_or_any_of_its_servers() {
        let shard =
            r#"{ name = "main", primary = "127.0.0.1:4001", replicas = ["127.0.0.1:4002"] }"#;
        let text = format!("keyspace.app = {{ sharding = \"unsharded\", shards = [{shard}] }}");
        let map: ShardMap = toml::from_str(&text).expect("map");
        let none: &[String] = &[];
        assert_eq!(names_shard(&map, "main", none).as_deref(), Some("app"));
        assert_eq!(names_shard(&map, "s2", none), None);
        let replica = ["127.0.0.1:4002".to_string()];
        assert_eq!(names_shard(&map, "s2", &replica).as_deref(), Some("app"));
        let primary = ["127.0.0.1:4001".to_string()];
        assert_eq!(names_shard(&map, "s2", &primary).as_deref(), Some("app"));
        assert_eq!(names_shard(&map, "s2", &["127.0.0.1:9".into()]), None);
    }
}
