//! The proxy's TOML configuration: listener, users, backend pools and the shard map.
//!
//! Every error names the file, the key and what is wrong, so `shardgate check` is useful to a
//! DBA who has never read this code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shardmap::{Keyspace, ShardMap};

/// Why a configuration or shard map could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("{file}: key `{key}`: {msg}")]
    Invalid {
        file: String,
        key: String,
        msg: String,
    },
}

impl ConfigError {
    pub(crate) fn parse(path: &Path, e: &toml::de::Error) -> Self {
        ConfigError::Parse {
            file: path.display().to_string(),
            msg: e.to_string().trim_end().to_string(),
        }
    }
}

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

/// The client-facing side: where clients connect and what they are told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Admin HTTP address (the admin API itself arrives with issue 7).
    #[serde(default = "default_admin")]
    pub admin_listen: String,
    #[serde(default = "default_server_version")]
    pub server_version: String,
    /// A client that has not finished authenticating by then is disconnected.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Largest command a client may send, as MariaDB's variable of the same name.
    #[serde(default = "default_max_allowed_packet")]
    pub max_allowed_packet: usize,
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// Worker threads, each with its own event loop and listening socket; 0: one per CPU.
    #[serde(default)]
    pub workers: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: default_listen(),
            admin_listen: default_admin(),
            server_version: default_server_version(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            max_allowed_packet: default_max_allowed_packet(),
            max_client_connections: default_max_client_connections(),
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
    /// Most idle connections kept per server for reuse.
    #[serde(default = "default_pool_idle")]
    pub max_idle: usize,
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
            wait_timeout_ms: default_pool_wait_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }
}

/// A client account. The proxy authenticates clients itself and connects to the backends with
/// the same name and password, as ProxySQL does, so one DSN works direct and proxied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
    /// Keyspace for a client that selects no database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_keyspace: Option<String>,
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
    pub users: Vec<User>,
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
        Self::from_toml(&text, path)
    }

    /// Parses config text; `path` names it in errors and anchors a relative `shard_map`.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::parse(path, &e))?;
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
}
