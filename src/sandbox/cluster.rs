//! What a sandbox is: its servers (shard, role, port, pid, datadir), saved as `DIR/cluster.json`,
//! and the shard map and proxy config derived from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{io, SandboxError};
use super::etcd::Etcd;
use super::layout::TableLayout;
use super::process;
use crate::config::{Config, MonitorSection, StoreKind, User};
use crate::shardmap::ShardMap;

/// The keyspace (and database) the sandbox creates.
pub const KEYSPACE: &str = "app";

/// Virtual nodes per shard on the hash ring of a sharded sandbox keyspace.
pub const VNODES: i64 = 256;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

/// One running mariadbd of the sandbox.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ServerInfo {
    /// "s0", "s1", ...
    pub shard: String,
    pub role: Role,
    pub host: String,
    pub port: u16,
    pub pid: u32,
    pub datadir: PathBuf,
    pub socket: PathBuf,
    pub server_id: u32,
}

impl ServerInfo {
    /// "s0-primary", "s0-replica1": the datadir's name.
    pub fn name(&self) -> String {
        self.datadir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}-{:?}", self.shard, self.role))
    }

    /// `host:port`, as the shard map writes it.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// How errors name this server.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name(), self.addr())
    }

    /// True if its pid is still this server's mariadbd.
    pub fn is_running(&self) -> bool {
        process::is_mariadbd_on(self.pid, &self.datadir)
    }
}

/// A sandbox cluster: where it lives, the application account and every server.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub user: String,
    pub password: String,
    pub servers: Vec<ServerInfo>,
    /// Sharded and reference tables of keyspace `app`; absent (older files too): unsharded.
    #[serde(default, skip_serializing_if = "TableLayout::is_empty")]
    pub tables: TableLayout,
    /// `--cache-all`: the generated config caches every read this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_all_ms: Option<u64>,
    /// How many proxy configs `up` wrote (see [`Cluster::proxy_configs`]).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub proxies: usize,
    /// The etcd the proxy configs share, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Where the sandbox's proxies keep their shared keys in etcd.
pub const ETCD_PREFIX: &str = "/shardgate/sandbox";

/// How long a sandbox proxy's etcd lease lives without renewal: the minimum, so tests that
/// stop a proxy see its locks released soon.
pub const ETCD_LEASE_TTL_SECS: u64 = 2;

pub(crate) fn cluster_json(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

pub(crate) fn config_toml(dir: &Path) -> PathBuf {
    dir.join("shardgate.toml")
}

/// Proxy `n`'s config (1-based): `shardgate.toml` for the first, `shardgate-N.toml` after.
pub(crate) fn nth_config_toml(dir: &Path, n: usize) -> PathBuf {
    match n {
        0 | 1 => config_toml(dir),
        n => dir.join(format!("shardgate-{n}.toml")),
    }
}

impl Cluster {
    /// Reads `DIR/cluster.json`.
    pub fn load(dir: &Path) -> Result<Cluster, SandboxError> {
        let path = cluster_json(dir);
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| SandboxError::State {
            file: path.display().to_string(),
            msg: e.to_string(),
        })
    }

    pub fn primary(&self, shard: &str) -> Option<&ServerInfo> {
        self.servers
            .iter()
            .find(|s| s.shard == shard && s.role == Role::Primary)
    }

    pub fn replicas(&self, shard: &str) -> Vec<&ServerInfo> {
        self.servers
            .iter()
            .filter(|s| s.shard == shard && s.role == Role::Replica)
            .collect()
    }

    /// Shard names in order of first appearance ("s0", "s1", ...).
    pub fn shard_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for s in &self.servers {
            if !names.contains(&s.shard) {
                names.push(s.shard.clone());
            }
        }
        names
    }

    /// The shard map for the proxy. Without sharded tables: keyspace `app` unsharded on s0 (the
    /// other shards' servers run but are not routed to). With them: `consistent_hash` over
    /// every shard (each with its primary and replicas), 256 vnodes, a `shard_key` for each
    /// sharded table and `reference = true` for each reference table.
    pub fn shard_map(&self) -> ShardMap {
        // Read from TOML rather than built from struct literals, so fields the map format gains
        // (with their serde defaults) need no change here. Every field the map requires is
        // written, which the tests below check for both shapes.
        toml::Value::Table(self.shard_map_toml())
            .try_into()
            .expect("the sandbox writes every field a shard map requires")
    }

    /// [`Cluster::shard_map`] as TOML: `{ keyspace = { app = { ... } } }`.
    pub fn shard_map_toml(&self) -> toml::Table {
        let names = self.shard_names();
        let sharded = self.tables.is_sharded();
        let routed = if sharded {
            &names[..]
        } else {
            &names[..names.len().min(1)]
        };
        let shards: Vec<toml::Value> = routed
            .iter()
            .map(|name| {
                let primary = self.primary(name).map(|s| s.addr()).unwrap_or_default();
                let replicas = self
                    .replicas(name)
                    .iter()
                    .map(|s| toml::Value::String(s.addr()))
                    .collect();
                toml::Value::Table(toml::Table::from_iter([
                    ("name".to_string(), toml::Value::String(name.clone())),
                    ("primary".to_string(), toml::Value::String(primary)),
                    ("replicas".to_string(), toml::Value::Array(replicas)),
                ]))
            })
            .collect();
        let mut keyspace = toml::Table::new();
        let sharding = if sharded {
            "consistent_hash"
        } else {
            "unsharded"
        };
        keyspace.insert("sharding".into(), sharding.into());
        keyspace.insert("vnodes".into(), VNODES.into());
        if sharded {
            let mut tables = toml::Table::new();
            for t in &self.tables.sharded {
                let rule =
                    toml::Table::from_iter([("shard_key".to_string(), t.column.as_str().into())]);
                tables.insert(t.table.clone(), rule.into());
            }
            for t in &self.tables.reference {
                let rule = toml::Table::from_iter([("reference".to_string(), true.into())]);
                tables.insert(t.clone(), rule.into());
            }
            keyspace.insert("tables".into(), tables.into());
        }
        keyspace.insert("shards".into(), toml::Value::Array(shards));
        let keyspaces = toml::Table::from_iter([(KEYSPACE.to_string(), keyspace.into())]);
        toml::Table::from_iter([("keyspace".to_string(), keyspaces.into())])
    }

    /// A proxy config for this cluster: one user (the sandbox's), the shard map inline, and the
    /// monitor checking servers as root, which the sandbox lets in from 127.0.0.1 without a
    /// password (see template.rs).
    pub fn proxy_config(&self, listen: String, admin_listen: String) -> Config {
        let mut cfg = Config {
            monitor: MonitorSection {
                user: "root".into(),
                password: String::new(),
                ..Default::default()
            },
            users: vec![User {
                name: self.user.clone(),
                password: self.password.clone(),
                default_keyspace: Some(KEYSPACE.to_string()),
                max_connections: None,
                password_hash: None,
                password_env: None,
                password_file: None,
            }],
            keyspace: self.shard_map().keyspace,
            ..default_config()
        };
        cfg.proxy.listen = listen;
        cfg.proxy.admin_listen = admin_listen;
        // Failover repoints replicas with the sandbox's replication account; the shard map
        // versions it publishes outlive a proxy restart.
        cfg.ha.replication_user = "repl".into();
        cfg.ha.replication_password = "repl".into();
        cfg.ha.failover_after_ms = 2000;
        cfg.ha.state_file = Some(self.dir.join(STATE_FILE));
        // A fresh random token per sandbox (32 hex digits from rand's OS-seeded CSPRNG): its
        // admin API works at once and is never open.
        let mut token = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut token);
        cfg.proxy.admin_token = Some(token.iter().map(|b| format!("{b:02x}")).collect());
        if let Some(ttl_ms) = self.cache_all_ms {
            cfg.cache.rules.push(crate::config::CacheRule {
                keyspace: None,
                tables: Vec::new(),
                digest: None,
                ttl_ms,
            });
        }
        cfg
    }

    /// Proxy `n`'s config (1-based, as [`Cluster::proxy_config`]); when the sandbox has an
    /// etcd, the config keeps its topology there as `proxy-N` instead of in a state file.
    pub fn nth_proxy_config(&self, n: usize, listen: String, admin_listen: String) -> Config {
        let mut cfg = self.proxy_config(listen, admin_listen);
        if let Some(etcd) = &self.etcd {
            // The store replaces the state file: versions live in etcd, shared by all proxies.
            cfg.ha.state_file = None;
            cfg.topology.store = StoreKind::Etcd;
            cfg.topology.endpoints = vec![etcd.endpoint()];
            cfg.topology.prefix = ETCD_PREFIX.into();
            cfg.topology.proxy_id = Some(format!("proxy-{n}"));
            cfg.topology.lease_ttl_secs = ETCD_LEASE_TTL_SECS;
        }
        cfg
    }

    /// The proxy configs `up` wrote: `DIR/shardgate.toml`, then `DIR/shardgate-2.toml`, ...
    pub fn proxy_configs(&self) -> Vec<PathBuf> {
        (1..=self.proxies.max(1))
            .map(|n| nth_config_toml(&self.dir, n))
            .collect()
    }

    /// Starts the sandbox's etcd again on its ports and data after a stop, waits until it is
    /// healthy and records the new pid in `cluster.json`. Blocks up to 30 s.
    pub fn start_etcd(&mut self) -> Result<(), SandboxError> {
        let Some(old) = &self.etcd else {
            return Err(self.no_etcd());
        };
        if old.is_running() {
            return Ok(());
        }
        self.etcd = Some(Etcd::start_at(&self.dir, old.client_port, old.peer_port)?);
        self.save()
    }

    /// Stops the sandbox's etcd (SIGTERM, up to `grace`; zero: SIGKILL, as a crash). False if
    /// it was not running.
    pub fn stop_etcd(&self, grace: Duration) -> Result<bool, SandboxError> {
        match &self.etcd {
            Some(e) => e.stop(grace),
            None => Err(self.no_etcd()),
        }
    }

    fn no_etcd(&self) -> SandboxError {
        SandboxError::State {
            file: cluster_json(&self.dir).display().to_string(),
            msg: "this sandbox has no etcd (start it with --proxies N or --etcd)".into(),
        }
    }

    /// Writes `DIR/cluster.json` (replacing it atomically).
    pub fn save(&self) -> Result<(), SandboxError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| SandboxError::State {
            file: cluster_json(&self.dir).display().to_string(),
            msg: e.to_string(),
        })?;
        write_atomic(&cluster_json(&self.dir), &(json + "\n"))
    }

    /// Writes `DIR/cluster.json` and the proxy configs `cfgs`, the first as
    /// `DIR/shardgate.toml`, the next as `DIR/shardgate-2.toml`, ...
    pub fn write_files(&self, cfgs: &[Config]) -> Result<(), SandboxError> {
        self.save()?;
        for (i, cfg) in cfgs.iter().enumerate() {
            self.write_config(i + 1, cfgs.len(), cfg)?;
        }
        Ok(())
    }

    fn write_config(&self, n: usize, of: usize, cfg: &Config) -> Result<(), SandboxError> {
        let path = nth_config_toml(&self.dir, n);
        let body = toml::to_string_pretty(cfg).map_err(|e| SandboxError::State {
            file: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let mut header = format!(
            "# shardgate proxy config for the sandbox cluster in {} (servers: cluster.json).\n\
             # Written by `shardgate sandbox up`; removed by `shardgate sandbox down`.\n",
            self.dir.display()
        );
        if let Some(etcd) = &self.etcd {
            header += &format!(
                "# Proxy {n} of {of}; the proxies share the shard map and failover locks \
                 through etcd at {}.\n",
                etcd.endpoint()
            );
        }
        if self.tables.is_sharded() {
            header += &format!("# {}.\n", self.keyspace_summary());
        }
        header += "\n";
        write_atomic(&path, &(header + &body))
    }

    /// One line saying how keyspace `app` is laid out, for the CLI and the config's header.
    pub fn keyspace_summary(&self) -> String {
        let names = self.shard_names();
        if !self.tables.is_sharded() {
            let first = names.first().map(String::as_str).unwrap_or("-");
            return format!("keyspace {KEYSPACE}: unsharded on {first}");
        }
        let sharded: Vec<String> = self
            .tables
            .sharded
            .iter()
            .map(|t| format!("{} by {}", t.table, t.column))
            .collect();
        let mut line = format!(
            "keyspace {KEYSPACE}: consistent_hash over {} ({VNODES} vnodes); sharded: {}",
            names.join(", "),
            sharded.join(", ")
        );
        if !self.tables.reference.is_empty() {
            line += &format!("; reference: {}", self.tables.reference.join(", "));
        }
        line
    }

    /// `mysql://user:password@127.0.0.1:port/app` for a server, credentials percent-encoded.
    pub fn dsn(&self, server: &ServerInfo) -> String {
        format!(
            "mysql://{}:{}@{}:{}/{KEYSPACE}",
            pct(&self.user),
            pct(&self.password),
            server.host,
            server.port
        )
    }

    /// Stops server `idx` cleanly (SIGTERM, up to 20s, then SIGKILL). False if it was not running.
    pub fn stop_server(&self, idx: usize) -> Result<bool, SandboxError> {
        self.signal_server(idx, Duration::from_secs(20))
    }

    /// Kills server `idx` with SIGKILL, as a crash would. False if it was not running.
    pub fn kill_server(&self, idx: usize) -> Result<bool, SandboxError> {
        self.signal_server(idx, Duration::ZERO)
    }

    fn signal_server(&self, idx: usize, grace: Duration) -> Result<bool, SandboxError> {
        let s = self.server(idx)?;
        match process::stop(&[(s.pid, &s.datadir)], grace) {
            Ok(n) => Ok(n > 0),
            Err(_) => Err(SandboxError::Stop(s.label())),
        }
    }

    pub(super) fn server(&self, idx: usize) -> Result<&ServerInfo, SandboxError> {
        self.servers.get(idx).ok_or_else(|| SandboxError::State {
            file: cluster_json(&self.dir).display().to_string(),
            msg: format!("no server #{idx} (there are {})", self.servers.len()),
        })
    }
}

/// Shard map versions published by failovers (`[ha] state_file`), in the sandbox dir.
pub const STATE_FILE: &str = "topology-state.json";

fn default_config() -> Config {
    Config {
        proxy: Default::default(),
        pool: Default::default(),
        routing: Default::default(),
        monitor: Default::default(),
        cache: Default::default(),
        ha: Default::default(),
        topology: Default::default(),
        users: Vec::new(),
        shard_map: None,
        source: None,
        keyspace: Default::default(),
    }
}

/// Percent-encodes everything but URL-unreserved characters.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Write to a sibling temp file and rename, so readers never see half a file.
fn write_atomic(path: &Path, text: &str) -> Result<(), SandboxError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!(
        "renaming {} to {}",
        tmp.display(),
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shardmap::{Replica, Sharding};

    fn sample(dir: &Path) -> Cluster {
        let mut servers = Vec::new();
        let mut id = 0;
        for shard in ["s0", "s1"] {
            for (role, name) in [(Role::Primary, "primary"), (Role::Replica, "replica1")] {
                id += 1;
                servers.push(ServerInfo {
                    shard: shard.into(),
                    role,
                    host: "127.0.0.1".into(),
                    port: 4000 + id as u16,
                    pid: 100 + id,
                    datadir: dir.join(format!("{shard}-{name}")),
                    socket: dir.join(format!("{shard}-{name}.sock")),
                    server_id: id,
                });
            }
        }
        Cluster {
            dir: dir.to_path_buf(),
            user: "app".into(),
            password: "p@ss:w/rd".into(),
            servers,
            tables: TableLayout::default(),
            cache_all_ms: None,
            proxies: 1,
            etcd: None,
        }
    }

    fn sharded_sample(dir: &Path) -> Cluster {
        let mut c = sample(dir);
        c.tables = TableLayout {
            sharded: ["users:id", "orders:user_id"]
                .iter()
                .map(|s| s.parse().expect("TABLE:COLUMN"))
                .collect(),
            reference: vec!["countries".into()],
        };
        c
    }

    #[test]
    fn lookups_by_shard_and_role() {
        let c = sample(Path::new("/sb"));
        assert_eq!(c.shard_names(), vec!["s0", "s1"]);
        assert_eq!(c.primary("s1").map(|s| s.port), Some(4003));
        assert_eq!(c.replicas("s0").len(), 1);
        assert_eq!(c.replicas("s0")[0].name(), "s0-replica1");
        assert!(c.primary("s9").is_none());
        assert_eq!(
            c.dsn(&c.servers[0]),
            "mysql://app:p%40ss%3Aw%2Frd@127.0.0.1:4001/app"
        );
        let opts = mysql_async::Opts::from_url(&c.dsn(&c.servers[0])).expect("dsn parses");
        assert_eq!(opts.pass(), Some("p@ss:w/rd"));
    }

    #[test]
    fn shard_map_is_unsharded_on_s0() {
        let c = sample(Path::new("/sb"));
        let map = c.shard_map();
        let ks = &map.keyspace["app"];
        assert_eq!(ks.sharding, Sharding::Unsharded);
        assert_eq!(ks.shards.len(), 1);
        assert_eq!(ks.shards[0].name, "s0");
        assert_eq!(ks.shards[0].primary, "127.0.0.1:4001");
        assert_eq!(ks.shards[0].replicas, vec![Replica::new("127.0.0.1:4002")]);
        map.validate("test").expect("valid shard map");
        assert!(ks.tables.is_empty());
        assert_eq!(c.keyspace_summary(), "keyspace app: unsharded on s0");
    }

    #[test]
    fn sharded_tables_make_a_consistent_hash_keyspace_over_every_shard() {
        let c = sharded_sample(Path::new("/sb"));
        let text = toml::to_string_pretty(&c.shard_map_toml()).expect("toml");
        let map = c.shard_map();
        map.validate("test").expect("valid shard map");
        assert_eq!(map.keyspace.len(), 1);
        let ks = &map.keyspace["app"];
        assert_eq!(ks.sharding, Sharding::ConsistentHash, "{text}");
        assert_eq!(ks.vnodes, 256);
        let shards: Vec<(&str, &str, Vec<Replica>)> = ks
            .shards
            .iter()
            .map(|s| (s.name.as_str(), s.primary.as_str(), s.replicas.clone()))
            .collect();
        assert_eq!(
            shards,
            [
                ("s0", "127.0.0.1:4001", vec![Replica::new("127.0.0.1:4002")]),
                ("s1", "127.0.0.1:4003", vec![Replica::new("127.0.0.1:4004")]),
            ]
        );
        let rules: Vec<(&str, Option<&str>, bool)> = ks
            .tables
            .iter()
            .map(|(t, r)| (t.as_str(), r.shard_key.as_deref(), r.reference))
            .collect();
        assert_eq!(
            rules,
            [
                ("countries", None, true),
                ("orders", Some("user_id"), false),
                ("users", Some("id"), false),
            ]
        );
        assert!(ks.tables.values().all(|r| r.sequence.is_none()));
        assert_eq!(
            c.keyspace_summary(),
            "keyspace app: consistent_hash over s0, s1 (256 vnodes); \
             sharded: users by id, orders by user_id; reference: countries"
        );

        // Names with '$' are quoted where TOML needs it and read back unchanged.
        let mut odd = c.clone();
        odd.tables.sharded[0] = "t$1:k$".parse().expect("TABLE:COLUMN");
        let ks = &odd.shard_map().keyspace["app"];
        assert_eq!(ks.tables["t$1"].shard_key.as_deref(), Some("k$"));
    }

    #[test]
    fn a_sharded_config_round_trips_and_validates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = sharded_sample(dir.path());
        let cfg = c.proxy_config("127.0.0.1:7001".into(), "127.0.0.1:7002".into());
        c.write_files(std::slice::from_ref(&cfg))
            .expect("write files");
        let text = std::fs::read_to_string(config_toml(dir.path())).expect("toml");
        for line in [
            "# keyspace app: consistent_hash over s0, s1",
            "sharding = \"consistent_hash\"",
            "vnodes = 256",
            "[keyspace.app.tables.users]\nshard_key = \"id\"",
            "[keyspace.app.tables.orders]\nshard_key = \"user_id\"",
            "[keyspace.app.tables.countries]\nreference = true",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        let mut loaded = Config::load(&config_toml(dir.path())).expect("config validates");
        assert_eq!(
            loaded.source.as_deref(),
            Some(config_toml(dir.path()).as_path())
        );
        loaded.source = None;
        assert_eq!(loaded, cfg);
        assert_eq!(loaded.keyspace["app"].shards.len(), 2);
        let back = Cluster::load(dir.path()).expect("load");
        assert_eq!(back.tables, c.tables);
        assert_eq!(back.shard_map(), c.shard_map());

        // An unsharded cluster.json has no "tables" key, so older files read the same.
        let plain = sample(dir.path());
        plain.save().expect("save");
        let json = std::fs::read_to_string(cluster_json(dir.path())).expect("json");
        assert!(!json.contains("\"tables\""), "{json}");
        assert!(Cluster::load(dir.path()).expect("load").tables.is_empty());
    }

    #[test]
    fn files_round_trip_and_config_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = sample(dir.path());
        let cfg = c.proxy_config("127.0.0.1:7001".into(), "127.0.0.1:7002".into());
        c.write_files(std::slice::from_ref(&cfg))
            .expect("write files");

        let back = Cluster::load(dir.path()).expect("load");
        assert_eq!(back.servers.len(), 4);
        assert_eq!(back.servers[1].role, Role::Replica);
        assert_eq!(back.servers[3].datadir, c.servers[3].datadir);
        assert_eq!(back.password, c.password);

        let text = std::fs::read_to_string(config_toml(dir.path())).expect("toml");
        assert!(text.starts_with("# shardgate proxy config"));
        let mut loaded = Config::load(&config_toml(dir.path())).expect("config validates");
        assert_eq!(
            loaded.source.as_deref(),
            Some(config_toml(dir.path()).as_path())
        );
        loaded.source = None;
        assert_eq!(loaded, cfg);
        assert_eq!(loaded.proxy.listen, "127.0.0.1:7001");
        assert_eq!(
            (
                loaded.monitor.user.as_str(),
                loaded.monitor.password.as_str()
            ),
            ("root", "")
        );
        assert!(text.contains("[monitor]"), "{text}");
        assert!(text.contains("replicas = [\"127.0.0.1:"), "{text}");
        assert_eq!(
            loaded
                .user("app")
                .and_then(|u| u.default_keyspace.as_deref()),
            Some("app")
        );
        assert!(!dir.path().join("cluster.tmp").exists());
    }

    #[test]
    fn etcd_sandboxes_write_one_config_per_proxy_sharing_etcd() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = sample(dir.path());
        let plain = c.nth_proxy_config(1, "127.0.0.1:7001".into(), "127.0.0.1:7002".into());
        assert_eq!(plain.topology.store, StoreKind::File);
        assert!(plain.ha.state_file.is_some());

        c.proxies = 3;
        c.etcd = Some(Etcd {
            pid: 4242,
            client_port: 7100,
            peer_port: 7101,
            data_dir: dir.path().join("etcd"),
        });
        let cfgs: Vec<Config> = (1..=3)
            .map(|n| {
                let port = 7000 + 2 * n as u16;
                c.nth_proxy_config(
                    n,
                    format!("127.0.0.1:{port}"),
                    format!("127.0.0.1:{}", port + 1),
                )
            })
            .collect();
        c.write_files(&cfgs).expect("write files");
        let paths = c.proxy_configs();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["shardgate.toml", "shardgate-2.toml", "shardgate-3.toml"]
        );
        for (n, path) in paths.iter().enumerate() {
            let cfg = Config::load(path).expect("config validates");
            let t = &cfg.topology;
            assert_eq!(t.store, StoreKind::Etcd);
            assert_eq!(t.endpoints, ["127.0.0.1:7100"]);
            assert_eq!(t.prefix, ETCD_PREFIX);
            assert_eq!(t.proxy_id, Some(format!("proxy-{}", n + 1)));
            assert_eq!(t.lease_ttl_secs, 2);
            assert_eq!(cfg.ha.state_file, None, "etcd replaces the state file");
            let text = std::fs::read_to_string(path).expect("toml");
            assert!(text.contains(&format!("# Proxy {} of 3;", n + 1)), "{text}");
        }

        let back = Cluster::load(dir.path()).expect("load");
        assert_eq!((back.proxies, back.etcd.as_ref()), (3, c.etcd.as_ref()));
        // One proxy and no etcd: cluster.json reads and writes as before.
        sample(dir.path()).save().expect("save");
        let json = std::fs::read_to_string(cluster_json(dir.path())).expect("json");
        assert!(
            !json.contains("etcd") && !json.contains("proxies"),
            "{json}"
        );
        let back = Cluster::load(dir.path()).expect("load");
        assert_eq!((back.proxies, back.etcd.as_ref()), (1, None));
        assert_eq!(back.proxy_configs(), [config_toml(dir.path())]);
        let err = back.stop_etcd(Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("no etcd"), "{err}");
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Cluster::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cluster.json"), "{err}");
        std::fs::write(cluster_json(dir.path()), "{").expect("write");
        let err = Cluster::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cluster.json"), "{err}");
    }
}
