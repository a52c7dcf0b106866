//! The proxy's TOML configuration: listener, users, backend pools and the shard map.
//!
//! Every error names the file, the key and what is wrong, so `shardgate check` is useful to a
//! DBA who has never read this code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shardmap::{Keyspace, ShardMap};

mod topology;

use crate::tomlfile::check_lag_secs;
pub use crate::tomlfile::ConfigError;
pub use topology::{StoreKind, TopologySection};

fn default_listen() -> String {
    "127.0.0.1:6033".into()
}
fn default_admin() -> String {
    "127.0.0.1:6080".into()
}
fn default_server_version() -> String {
    // The 5.5.5- prefix is what MariaDB itself sends so that old clients parse the version.
    "5.5.5-10.11.99-MariaDB-shardgate".into()
}
fn default_handshake_timeout_ms() -> u64 {
    10_000
}
fn default_max_allowed_packet() -> usize {
    64 << 20
}
fn default_max_client_connections() -> usize {
    10_000
}
fn default_max_unauthenticated() -> usize {
    4_096
}
fn default_net_read_timeout_ms() -> u64 {
    30_000
}
fn default_max_buffered_command_bytes() -> usize {
    256 << 20
}
fn default_failed_login_threshold() -> u32 {
    3
}
fn default_failed_login_delay_ms() -> u64 {
    1_000
}

/// The client-facing side: where clients connect and what they are told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Admin HTTP address: the admin API, `/metrics` and `/healthz`.
    #[serde(default = "default_admin")]
    pub admin_listen: String,
    /// Bearer token every admin route but `/healthz` requires. Unset (the default) or empty:
    /// those routes answer 401, so an admin port nobody configured is never open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Statements taking at least this long are logged (target `shardgate::slow_query`, with
    /// their shape, not their literals); 0 turns the log off.
    #[serde(default = "default_slow_query_ms")]
    pub slow_query_ms: u64,
    #[serde(default = "default_server_version")]
    pub server_version: String,
    /// A client that has not finished authenticating by then is disconnected.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Largest command a client may send, as MariaDB's variable of the same name.
    #[serde(default = "default_max_allowed_packet")]
    pub max_allowed_packet: usize,
    /// Clients logged in at once; one more is refused with ERR 1040 after its login.
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// Connections that have not finished logging in, counted apart from
    /// `max_client_connections` so that they cannot lock out clients that log in; one more
    /// is refused with ERR 1040 before its greeting.
    #[serde(default = "default_max_unauthenticated")]
    pub max_unauthenticated_connections: usize,
    /// Once a client has begun a command packet, it may stay silent at most this long between
    /// reads (MariaDB's `net_read_timeout`); else ERR 1159 and the connection is closed.
    #[serde(default = "default_net_read_timeout_ms")]
    pub net_read_timeout_ms: u64,
    /// Bytes all clients' commands still arriving may hold in the proxy together; a command
    /// that would pass it is refused (ERR 1041) and its connection closed.
    #[serde(default = "default_max_buffered_command_bytes")]
    pub max_buffered_command_bytes: usize,
    /// Failed logins in a row from one address after which its logins are answered late;
    /// 0: never.
    #[serde(default = "default_failed_login_threshold")]
    pub failed_login_threshold: u32,
    /// The delay per failure past the threshold (at most ten of them, and at most half the
    /// handshake timeout).
    #[serde(default = "default_failed_login_delay_ms")]
    pub failed_login_delay_ms: u64,
    /// Worker threads, each with its own event loop and listening socket; 0: one per CPU.
    #[serde(default)]
    pub workers: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: default_listen(),
            admin_listen: default_admin(),
            admin_token: None,
            slow_query_ms: default_slow_query_ms(),
            server_version: default_server_version(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            max_allowed_packet: default_max_allowed_packet(),
            max_client_connections: default_max_client_connections(),
            max_unauthenticated_connections: default_max_unauthenticated(),
            net_read_timeout_ms: default_net_read_timeout_ms(),
            max_buffered_command_bytes: default_max_buffered_command_bytes(),
            failed_login_threshold: default_failed_login_threshold(),
            failed_login_delay_ms: default_failed_login_delay_ms(),
            workers: 0,
        }
    }
}

fn default_pool_max() -> usize {
    1000
}
fn default_pool_idle() -> usize {
    64
}
fn default_pool_wait_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}

/// Backend connection pools, one per server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Most connections open to one server at once.
    #[serde(default = "default_pool_max")]
    pub max_connections: usize,
    /// Idle connections kept per server for reuse however long they stay unused (up to 5
    /// minutes); more are kept while they were used within `idle_timeout_ms`.
    #[serde(default = "default_pool_idle")]
    pub max_idle: usize,
    /// How long an idle connection above `max_idle` is kept for reuse.
    #[serde(default = "default_pool_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// How long a client waits for a connection when a pool is full before ERR 1040.
    #[serde(default = "default_pool_wait_ms")]
    pub wait_timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            max_connections: default_pool_max(),
            max_idle: default_pool_idle(),
            idle_timeout_ms: default_pool_idle_timeout_ms(),
            wait_timeout_ms: default_pool_wait_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }
}

fn default_pool_idle_timeout_ms() -> u64 {
    10_000
}

fn default_true() -> bool {
    true
}
fn default_gtid_wait_timeout_ms() -> u64 {
    100
}
fn default_max_replica_lag() -> f64 {
    10.0
}

/// What a read may see when it goes to a replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Any replica within the keyspace's lag limit.
    Eventual,
    /// A session's reads see its own earlier writes: the replica must have applied the
    /// session's last write (GTID), else the read goes to the primary. The default: an
    /// application moved behind the proxy keeps seeing what it wrote.
    #[default]
    ReadYourWrites,
}

/// How statements are spread over a shard's primary and replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// False: every statement goes to the primary.
    #[serde(default = "default_true")]
    pub read_write_split: bool,
    #[serde(default)]
    pub consistency: Consistency,
    /// read_your_writes: how long a replica may take to apply the session's last write before
    /// the read goes to the primary instead.
    #[serde(default = "default_gtid_wait_timeout_ms")]
    pub gtid_wait_timeout_ms: u64,
    /// Seconds a replica may be behind its primary and still serve reads; keyspaces may set
    /// their own.
    #[serde(default = "default_max_replica_lag")]
    pub max_replica_lag: f64,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection {
            read_write_split: true,
            consistency: Consistency::ReadYourWrites,
            gtid_wait_timeout_ms: default_gtid_wait_timeout_ms(),
            max_replica_lag: default_max_replica_lag(),
        }
    }
}

impl RoutingSection {
    pub fn gtid_wait_timeout(&self) -> Duration {
        Duration::from_millis(self.gtid_wait_timeout_ms)
    }
}

fn default_monitor_user() -> String {
    "root".into()
}
fn default_monitor_interval_ms() -> u64 {
    500
}
fn default_monitor_connect_timeout_ms() -> u64 {
    1_000
}

/// The account and timing of the server checks (up/down, replication, lag). On MariaDB 10.5.9
/// and later the account needs the SLAVE MONITOR privilege to run SHOW SLAVE STATUS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    #[serde(default = "default_monitor_user")]
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// Check period; a check that takes longer counts as failed.
    #[serde(default = "default_monitor_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_monitor_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for MonitorSection {
    fn default() -> Self {
        MonitorSection {
            user: default_monitor_user(),
            password: String::new(),
            interval_ms: default_monitor_interval_ms(),
            connect_timeout_ms: default_monitor_connect_timeout_ms(),
        }
    }
}

impl MonitorSection {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// A client account. The proxy authenticates clients itself and connects to the backends with
/// the same name and password, as ProxySQL does, so one DSN works direct and proxied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// The password in clear. Or one of `password_hash`, `password_env`, `password_file`
    /// instead (the last two are read into this at load); none: an empty password.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// The password's MariaDB hash (`*` and 40 hex digits, as `SELECT PASSWORD('...')` prints
    /// it): the proxy checks clients' mysql_native_password logins against it and logs in to
    /// the servers with SHA1(password) recovered from each client's login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// An environment variable holding the password, read at load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding the password (a trailing newline is not part of it), read at load;
    /// relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Keyspace for a client that selects no database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_keyspace: Option<String>,
    /// Most clients logged in as this user at once (MariaDB's MAX_USER_CONNECTIONS); one more
    /// is refused with ERR 1226. Unset: no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

impl User {
    /// Reads the password from `password_env` or `password_file` into `password`, and checks
    /// that one source at most is given and that a hash reads as one.
    fn read_password(&mut self, dir: &Path) -> Result<(), String> {
        let given = [
            !self.password.is_empty(),
            self.password_hash.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(
                "give one of password, password_hash, password_env and password_file".into(),
            );
        }
        if let Some(h) = &self.password_hash {
            if crate::protocol::auth::parse_native_hash(h).is_none() {
                return Err("password_hash must be '*' and 40 hex digits, as SELECT PASSWORD('...') prints it".into());
            }
        }
        if let Some(var) = &self.password_env {
            self.password = std::env::var(var)
                .map_err(|_| format!("password_env: environment variable {var} is not set"))?;
        }
        if let Some(f) = &self.password_file {
            let full = dir.join(f);
            let text = std::fs::read_to_string(&full)
                .map_err(|e| format!("password_file {}: {e}", full.display()))?;
            self.password = text.trim_end_matches(['\n', '\r']).to_string();
        }
        Ok(())
    }

    /// The stored SHA1(SHA1(password)) when the config gives the hash instead of the password.
    pub fn native_hash(&self) -> Option<[u8; 20]> {
        self.password_hash
            .as_deref()
            .and_then(crate::protocol::auth::parse_native_hash)
    }
}

fn default_cache_max_bytes() -> u64 {
    64 << 20
}
fn default_cache_max_entry_bytes() -> usize {
    1 << 20
}
fn default_fill_from_primary_ms() -> u64 {
    10_000
}

/// Failure handling (`[ha]`): detection, promotion, switchover. Server checks and changes use
/// the `[monitor]` account, which then needs SUPER (or the REPLICATION SLAVE ADMIN,
/// READ_ONLY ADMIN and CONNECTION ADMIN privileges) besides SLAVE MONITOR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    /// Promote a replica when a primary is dead (unreachable for `failover_after_ms` and its
    /// replicas lost it too). Off: only `shardgate failover` changes primaries.
    #[serde(default = "default_true")]
    pub auto_failover: bool,
    /// How often each primary is checked.
    #[serde(default = "default_ha_check_interval_ms")]
    pub check_interval_ms: u64,
    /// How long a primary must stay unreachable before its replicas are asked whether they
    /// lost it too.
    #[serde(default = "default_failover_after_ms")]
    pub failover_after_ms: u64,
    /// How long a statement waits for a primary change (planned or not) before it fails.
    #[serde(default = "default_failover_buffer_timeout_ms")]
    pub failover_buffer_timeout_ms: u64,
    /// Switchover: how long running statements and transactions on the old primary may take
    /// to finish before their connections are killed.
    #[serde(default = "default_switchover_drain_ms")]
    pub switchover_drain_ms: u64,
    /// How long a promoted replica may take to apply what it received.
    #[serde(default = "default_catchup_timeout_ms")]
    pub catchup_timeout_ms: u64,
    /// The account replicas log in to their primary with (`CHANGE MASTER TO MASTER_USER`).
    #[serde(default = "default_replication_user")]
    pub replication_user: String,
    #[serde(default)]
    pub replication_password: String,
    /// Where published shard map versions are kept, so a restarted proxy routes to the
    /// current primaries. Unset: memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
}

fn default_slow_query_ms() -> u64 {
    1000
}
fn default_ha_check_interval_ms() -> u64 {
    500
}
fn default_failover_after_ms() -> u64 {
    3000
}
fn default_failover_buffer_timeout_ms() -> u64 {
    10_000
}
fn default_switchover_drain_ms() -> u64 {
    2000
}
fn default_catchup_timeout_ms() -> u64 {
    30_000
}
fn default_replication_user() -> String {
    "repl".into()
}

impl Default for HaSection {
    fn default() -> Self {
        HaSection {
            auto_failover: true,
            check_interval_ms: default_ha_check_interval_ms(),
            failover_after_ms: default_failover_after_ms(),
            failover_buffer_timeout_ms: default_failover_buffer_timeout_ms(),
            switchover_drain_ms: default_switchover_drain_ms(),
            catchup_timeout_ms: default_catchup_timeout_ms(),
            replication_user: default_replication_user(),
            replication_password: String::new(),
            state_file: None,
        }
    }
}

impl HaSection {
    pub fn buffer_timeout(&self) -> Duration {
        Duration::from_millis(self.failover_buffer_timeout_ms)
    }
}

/// The result cache (`[cache]`): off unless a rule matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Bytes of cached results (packets plus keys) kept at most, all entries together.
    #[serde(default = "default_cache_max_bytes")]
    pub max_bytes: u64,
    /// A result larger than this is never cached.
    #[serde(default = "default_cache_max_entry_bytes")]
    pub max_entry_bytes: usize,
    /// After a write through the proxy to a table, misses on that table are read from the
    /// primary for this long, so a replica that has not applied the write yet cannot fill the
    /// cache with the old rows.
    #[serde(default = "default_fill_from_primary_ms")]
    pub fill_from_primary_ms: u64,
    /// Which reads are cached, first match wins.
    #[serde(default)]
    pub rules: Vec<CacheRule>,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            max_bytes: default_cache_max_bytes(),
            max_entry_bytes: default_cache_max_entry_bytes(),
            fill_from_primary_ms: default_fill_from_primary_ms(),
            rules: Vec::new(),
        }
    }
}

/// One cache rule: reads that match every field given are cached for `ttl_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// Only reads of this keyspace (database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    /// Only reads of at least one of these tables (`table` or `db.table`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Only statements of this shape: the statement with `?` for its literals, as
    /// `shardgate explain` and the query digests print it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub ttl_ms: u64,
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub pool: PoolSection,
    #[serde(default)]
    pub routing: RoutingSection,
    #[serde(default)]
    pub monitor: MonitorSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub ha: HaSection,
    #[serde(default)]
    pub topology: TopologySection,
    #[serde(default)]
    pub users: Vec<User>,
    /// The file this config was loaded from: what a reload reads again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// A shard map file, relative to this file; alternative to inline `[keyspace.*]` tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_map: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub keyspace: std::collections::BTreeMap<String, Keyspace>,
}

impl Config {
    /// Loads and validates a config file, resolving `shard_map` relative to it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: path.display().to_string(),
            source: e,
        })?;
        let mut cfg = Self::from_toml(&text, path)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses config text; `path` names it in errors and anchors a relative `shard_map`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::parse(path, text, &e))?;
        let file = path.display().to_string();
        if let Some(rel) = cfg.shard_map.clone() {
            if !cfg.keyspace.is_empty() {
                return Err(ConfigError::Invalid {
                    file,
                    key: "shard_map".into(),
                    msg: "give either shard_map or inline [keyspace.*] tables, not both".into(),
                });
            }
            let full = path.parent().unwrap_or(Path::new(".")).join(rel);
            cfg.keyspace = ShardMap::load(&full)?.keyspace;
            cfg.shard_map = Some(full);
        }
        if let Some(rel) = cfg.ha.state_file.clone() {
            cfg.ha.state_file = Some(path.parent().unwrap_or(Path::new(".")).join(rel));
        }
        for (i, u) in cfg.users.iter_mut().enumerate() {
            u.read_password(path.parent().unwrap_or(Path::new(".")))
                .map_err(|msg| ConfigError::Invalid {
                    file: file.clone(),
                    key: format!("users[{i}]"),
                    msg,
                })?;
        }
        cfg.validate(&file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, msg: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            msg,
        };
        self.proxy
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| invalid("proxy.listen", format!("'{}': {e}", self.proxy.listen)))?;
        for (i, rule) in self.cache.rules.iter().enumerate() {
            if rule.ttl_ms == 0 {
                return Err(invalid(
                    &format!("cache.rules[{i}].ttl_ms"),
                    "must be at least 1".into(),
                ));
            }
        }
        if self.cache.max_entry_bytes as u64 > self.cache.max_bytes {
            return Err(invalid(
                "cache.max_entry_bytes",
                format!(
                    "{} is more than cache.max_bytes ({})",
                    self.cache.max_entry_bytes, self.cache.max_bytes
                ),
            ));
        }
        self.proxy
            .admin_listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                invalid(
                    "proxy.admin_listen",
                    format!("'{}': {e}", self.proxy.admin_listen),
                )
            })?;
        if self.proxy.max_allowed_packet < 1024 || self.proxy.max_allowed_packet > (1 << 30) {
            return Err(invalid(
                "proxy.max_allowed_packet",
                "must be between 1024 and 1073741824 bytes".into(),
            ));
        }
        if self.pool.max_connections == 0 {
            return Err(invalid("pool.max_connections", "must be at least 1".into()));
        }
        check_lag_secs(self.routing.max_replica_lag)
            .map_err(|m| invalid("routing.max_replica_lag", m))?;
        if self.monitor.user.is_empty() {
            return Err(invalid("monitor.user", "must not be empty".into()));
        }
        // Faster than every 10 ms would load the servers for no useful gain in reaction time.
        if self.monitor.interval_ms < 10 {
            return Err(invalid(
                "monitor.interval_ms",
                "must be at least 10 milliseconds".into(),
            ));
        }
        if self.monitor.connect_timeout_ms == 0 {
            return Err(invalid(
                "monitor.connect_timeout_ms",
                "must be at least 1 millisecond".into(),
            ));
        }
        for (key, v) in [
            ("ha.check_interval_ms", self.ha.check_interval_ms),
            ("ha.failover_after_ms", self.ha.failover_after_ms),
            ("ha.catchup_timeout_ms", self.ha.catchup_timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1 millisecond".into()));
            }
        }
        self.topology.check().map_err(|(k, m)| invalid(k, m))?;
        if self.users.is_empty() {
            return Err(invalid(
                "users",
                "at least one [[users]] entry is required".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty() || !names.insert(u.name.as_str()) {
                return Err(invalid(
                    &format!("users[{i}].name"),
                    format!("user name '{}' is empty or repeated", u.name),
                ));
            }
            if let Some(ks) = &u.default_keyspace {
                if !self.keyspace.contains_key(ks) {
                    return Err(invalid(
                        &format!("users[{i}].default_keyspace"),
                        format!("no keyspace named '{ks}'"),
                    ));
                }
            }
        }
        self.shard_map().validate(file)
    }

    /// The shard map part of this config.
    pub fn shard_map(&self) -> ShardMap {
        ShardMap {
            keyspace: self.keyspace.clone(),
        }
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.proxy.handshake_timeout_ms)
    }

    /// How far behind its primary a replica of `keyspace` may be and still serve its reads: the
    /// keyspace's own `max_replica_lag`, else `[routing] max_replica_lag`.
    pub fn max_replica_lag(&self, keyspace: &str) -> Duration {
        let secs = self
            .keyspace
            .get(keyspace)
            .and_then(|ks| ks.max_replica_lag)
            .unwrap_or(self.routing.max_replica_lag);
        // Validated at load; a config built in code with a bad value gets the default rather
        // than a panic on the data path.
        check_lag_secs(secs).unwrap_or(Duration::from_secs_f64(default_max_replica_lag()))
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[users]]
        name = "app"
        password = "secret"

        [keyspace.app]
        sharding = "unsharded"
        [[keyspace.app.shards]]
        name = "s0"
        primary = "127.0.0.1:3307"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = Config::from_toml(MINIMAL, Path::new("x.toml")).expect("valid");
        assert_eq!(cfg.proxy.listen, "127.0.0.1:6033");
        assert_eq!(cfg.pool.max_connections, 1000);
        assert_eq!(cfg.user("app").map(|u| u.password.as_str()), Some("secret"));
    }

    #[test]
    fn a_password_comes_from_one_source_hash_file_or_clear() {
        let with = |source: &str| MINIMAL.replace("password = \"secret\"", source);
        let hashed = with("password_hash = \"*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3\"");
        let cfg = Config::from_toml(&hashed, Path::new("x.toml")).expect("valid");
        let user = cfg.user("app").expect("user");
        assert!(user.native_hash().is_some());
        assert_eq!(user.password, "");
        for bad in [
            with("password_hash = \"5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3\""),
            with("password = \"x\"\npassword_hash = \"*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3\""),
            with("password_env = \"SHARDGATE_UNIT_TEST_NOT_SET\""),
            with("password_file = \"/nonexistent/shardgate-password\""),
        ] {
            let e = Config::from_toml(&bad, Path::new("x.toml")).expect_err(&bad);
            assert!(e.to_string().contains("users[0]"), "{e}");
        }
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("pw"), "from-file\n").expect("write");
        let cfg = Config::from_toml(&with("password_file = \"pw\""), &dir.path().join("c.toml"))
            .expect("valid");
        assert_eq!(
            cfg.user("app").map(|u| u.password.as_str()),
            Some("from-file")
        );
    }

    #[test]
    fn parse_errors_never_show_secret_values() {
        // toml's own message quotes the offending line: a broken password line, or a type
        // error on another key of the same inline table, must not echo the password.
        for (text, line) in [
            (MINIMAL.replace("\"secret\"", "\"hunter2-pw\" x"), 4),
            (
                format!("[proxy]\nadmin_token = 12.5.hunter2-pw\n{MINIMAL}"),
                2,
            ),
            (
                "users = [{ name = 5, password = \"hunter2-pw\" }]\n".to_string(),
                1,
            ),
        ] {
            let err = Config::from_toml(&text, Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains(&format!("line {line}, column")), "{err}");
        }
        // Elsewhere in the file, the message stays as useful as toml's.
        let err = Config::from_toml(
            &format!("[proxy]\nlisten = 5\n{MINIMAL}"),
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 2, column") && err.contains("string"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn unknown_key_and_bad_values_are_named() {
        let err = Config::from_toml(
            &format!("[proxy]\nlisten_addr = \"x\"\n{MINIMAL}"),
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("x.toml:"), "{err}");
        assert!(err.contains("listen_addr"), "{err}");

        let err = Config::from_toml(
            &format!("[proxy]\nlisten = \"nope\"\n{MINIMAL}"),
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("key `proxy.listen`"), "{err}");

        let no_users = MINIMAL.replace(
            "[[users]]\n        name = \"app\"\n        password = \"secret\"",
            "",
        );
        let err = Config::from_toml(&no_users, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `users`"), "{err}");
    }

    #[test]
    fn shard_map_file_is_resolved_relative_to_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("map.toml"),
            "[keyspace.app]\nsharding = \"unsharded\"\n[[keyspace.app.shards]]\nname = \"s0\"\nprimary = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        let cfg_path = dir.path().join("shardgate.toml");
        std::fs::write(
            &cfg_path,
            "shard_map = \"map.toml\"\n[[users]]\nname = \"a\"\npassword = \"b\"\n",
        )
        .expect("write");
        let cfg = Config::load(&cfg_path).expect("valid");
        assert_eq!(cfg.keyspace["app"].shards[0].primary, "127.0.0.1:1");
    }

    #[test]
    fn routing_and_monitor_defaults_and_overrides() {
        let cfg = Config::from_toml(MINIMAL, Path::new("x.toml")).expect("valid");
        assert_eq!(cfg.routing, RoutingSection::default());
        assert!(cfg.routing.read_write_split);
        assert_eq!(cfg.routing.consistency, Consistency::ReadYourWrites);
        assert_eq!(cfg.routing.gtid_wait_timeout(), Duration::from_millis(100));
        assert_eq!(cfg.monitor.user, "root");
        assert_eq!(cfg.monitor.password, "");
        assert_eq!(cfg.monitor.interval(), Duration::from_millis(500));
        assert_eq!(cfg.monitor.connect_timeout(), Duration::from_millis(1000));
        assert_eq!(cfg.max_replica_lag("app"), Duration::from_secs(10));

        let text = format!(
            "[routing]\nread_write_split = false\nconsistency = \"read_your_writes\"\n\
             gtid_wait_timeout_ms = 250\nmax_replica_lag = 2.5\n\
             [monitor]\nuser = \"mon\"\npassword = \"pw\"\ninterval_ms = 100\n\
             connect_timeout_ms = 300\n{}",
            MINIMAL.replace(
                "sharding = \"unsharded\"",
                "sharding = \"unsharded\"\nmax_replica_lag = 0.5"
            )
        );
        let cfg = Config::from_toml(&text, Path::new("x.toml")).expect("valid");
        assert!(!cfg.routing.read_write_split);
        assert_eq!(cfg.routing.consistency, Consistency::ReadYourWrites);
        assert_eq!(cfg.routing.gtid_wait_timeout_ms, 250);
        assert_eq!(cfg.monitor.user, "mon");
        assert_eq!(cfg.monitor.interval_ms, 100);
        // The keyspace's own limit wins; an unknown keyspace gets the routing default.
        assert_eq!(cfg.max_replica_lag("app"), Duration::from_millis(500));
        assert_eq!(cfg.max_replica_lag("other"), Duration::from_millis(2500));
    }

    #[test]
    fn bad_routing_and_monitor_values_are_named() {
        let err_of = |section: &str| {
            Config::from_toml(&format!("{section}\n{MINIMAL}"), Path::new("x.toml"))
                .unwrap_err()
                .to_string()
        };
        for (section, key) in [
            (
                "[routing]\nmax_replica_lag = 0.0",
                "key `routing.max_replica_lag`",
            ),
            (
                "[routing]\nmax_replica_lag = -3.0",
                "key `routing.max_replica_lag`",
            ),
            (
                "[routing]\nmax_replica_lag = nan",
                "key `routing.max_replica_lag`",
            ),
            ("[monitor]\ninterval_ms = 0", "key `monitor.interval_ms`"),
            (
                "[monitor]\nconnect_timeout_ms = 0",
                "key `monitor.connect_timeout_ms`",
            ),
            ("[monitor]\nuser = \"\"", "key `monitor.user`"),
        ] {
            let err = err_of(section);
            assert!(
                err.starts_with("x.toml:") && err.contains(key),
                "{section}: {err}"
            );
        }
        let err = err_of("[routing]\nconsistency = \"strong\"");
        assert!(err.contains("consistency"), "{err}");
        let err = err_of("[monitor]\nintervall_ms = 5");
        assert!(err.contains("intervall_ms"), "{err}");
    }
}
