//! A real local MariaDB cluster (shards x (primary + replicas), GTID + semi-sync replication)
//! started from Debian's `mariadbd`, for `shardgate demo`, tests and benches.
//!
//! `up` copies a cached, pre-initialised template datadir per server (so start-up takes seconds),
//! starts every server detached in its own process group, wires replication, creates the
//! application user and database `app` on every shard, and writes `DIR/cluster.json` (what runs
//! where, with pids) and `DIR/shardgate.toml` (a proxy config for it). With `proxies > 1` (or
//! `etcd`) it also starts an etcd (`DIR/etcd`) and writes one config per proxy
//! (`shardgate.toml`, `shardgate-2.toml`, ...) sharing the topology through it. With sharded tables
//! (`--sharded-table TABLE:COLUMN`) keyspace `app` is `consistent_hash` over every shard;
//! otherwise it is unsharded on s0. `down` stops exactly the pids in
//! `cluster.json` and removes the server datadirs, so a later `up` starts clean.
//!
//! One file per job: `template` (the cached datadir), `server` (spawning one mariadbd and waiting
//! for it), `process` (pid checks and signals), `sql` (a tiny mysql_async helper), `replication`
//! (replicas, app user, catch-up), `layout` (sharded and reference tables), `etcd` (the shared
//! topology store's one member), `cluster` (the
//! serialisable description and the shard map it implies), `lifecycle` (up/down), `shards`
//! (add-shard/remove-shard: one more or one less shard in a running sandbox, for resharding).

mod cluster;
mod error;
mod etcd;
mod layout;
mod lifecycle;
mod process;
mod replication;
mod server;
mod shards;
mod sql;
mod template;

use std::path::PathBuf;

pub use cluster::{Cluster, Role, ServerInfo, ETCD_LEASE_TTL_SECS, ETCD_PREFIX};
pub use error::SandboxError;
pub use etcd::Etcd;
pub use layout::{parse_table, ShardedTable, TableLayout};
pub use lifecycle::{down, up};
pub use shards::{add_shard, remove_shard, AddedShard};
pub use template::ensure_template;

/// What `up` builds and where.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Holds every server's datadir, socket and logs, plus `cluster.json` and `shardgate.toml`.
    pub dir: PathBuf,
    pub shards: usize,
    /// Replicas per shard.
    pub replicas: usize,
    /// The application account created on every server (the proxy uses the same credentials).
    pub user: String,
    pub password: String,
    /// Sharded and reference tables of keyspace `app`; empty: unsharded on s0.
    pub tables: TableLayout,
    /// Cache every read for this many milliseconds (`--cache-all`).
    pub cache_all_ms: Option<u64>,
    /// Proxy configs to write (`shardgate.toml`, `shardgate-2.toml`, ...); more than one
    /// starts an etcd they share.
    pub proxies: usize,
    /// Start etcd and point the proxy configs at it even with one proxy.
    pub etcd: bool,
}

impl SandboxOptions {
    /// Whether this sandbox runs an etcd for its proxies' topology.
    pub fn uses_etcd(&self) -> bool {
        self.etcd || self.proxies > 1
    }
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            dir: std::env::temp_dir().join("shardgate-sandbox"),
            shards: 2,
            replicas: 1,
            user: "app".into(),
            password: "app".into(),
            tables: TableLayout::default(),
            cache_all_ms: None,
            proxies: 1,
            etcd: false,
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct free ports: all listeners are held until every port is chosen, so none repeats.
pub(crate) fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("port is free again");
        let ports = free_ports(8).expect("free ports");
        let unique: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 8);
    }

    #[test]
    fn default_options() {
        let o = SandboxOptions::default();
        assert_eq!((o.shards, o.replicas), (2, 1));
        assert_eq!((o.user.as_str(), o.password.as_str()), ("app", "app"));
        assert!(o.dir.ends_with("shardgate-sandbox"));
        assert!(o.tables.is_empty());
    }
}
