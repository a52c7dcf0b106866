//! Keyspaces, their tables and shards: the part of the configuration that says where data lives.
//!
//! The format is the one in DESIGN.md so later issues (sharding, resharding) load the same files.
//! At this stage only `unsharded` keyspaces route; a `consistent_hash` keyspace loads and
//! validates but is refused by the planner with a clear error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// How a keyspace spreads its rows over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharding {
    Unsharded,
    ConsistentHash,
}

/// One table's placement rule inside a keyspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reference: bool,
}

/// A shard: one primary and its replicas, as `host:port` addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub name: String,
    pub primary: String,
    #[serde(default)]
    pub replicas: Vec<String>,
}

fn default_vnodes() -> u32 {
    256
}

/// A keyspace is a logical database: clients select it with `USE name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyspace {
    pub sharding: Sharding,
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_keyspace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, TableRule>,
    pub shards: Vec<Shard>,
}

/// All keyspaces by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMap {
    #[serde(default)]
    pub keyspace: BTreeMap<String, Keyspace>,
}

impl ShardMap {
    /// Parses a stand-alone shard map file (`shard-maps/*.toml`).
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: path.display().to_string(),
            source: e,
        })?;
        let map: ShardMap = toml::from_str(&text).map_err(|e| ConfigError::parse(path, &e))?;
        map.validate(&path.display().to_string())?;
        Ok(map)
    }

    /// Checks what serde cannot: names, addresses, shard counts, key rules.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, msg: String| ConfigError::Invalid {
            file: file.to_string(),
            key,
            msg,
        };
        if self.keyspace.is_empty() {
            return Err(invalid(
                "keyspace".into(),
                "at least one keyspace is required".into(),
            ));
        }
        for (name, ks) in &self.keyspace {
            let at = format!("keyspace.{name}");
            if !is_identifier(name) {
                return Err(invalid(
                    at,
                    "keyspace names are letters, digits and '_' (they are database names)".into(),
                ));
            }
            if ks.shards.is_empty() {
                return Err(invalid(
                    format!("{at}.shards"),
                    "a keyspace needs at least one shard".into(),
                ));
            }
            if ks.sharding == Sharding::Unsharded && ks.shards.len() != 1 {
                return Err(invalid(
                    format!("{at}.shards"),
                    format!(
                        "an unsharded keyspace has exactly one shard, found {}",
                        ks.shards.len()
                    ),
                ));
            }
            if ks.vnodes == 0 {
                return Err(invalid(format!("{at}.vnodes"), "must be at least 1".into()));
            }
            let mut seen = std::collections::HashSet::new();
            for (i, shard) in ks.shards.iter().enumerate() {
                let sat = format!("{at}.shards[{i}]");
                if shard.name.is_empty() || !seen.insert(shard.name.as_str()) {
                    return Err(invalid(
                        format!("{sat}.name"),
                        format!("shard name '{}' is empty or repeated", shard.name),
                    ));
                }
                check_addr(&shard.primary).map_err(|m| invalid(format!("{sat}.primary"), m))?;
                for (j, r) in shard.replicas.iter().enumerate() {
                    check_addr(r).map_err(|m| invalid(format!("{sat}.replicas[{j}]"), m))?;
                }
            }
            for (t, rule) in &ks.tables {
                let tat = format!("{at}.tables.{t}");
                if rule.reference && rule.shard_key.is_some() {
                    return Err(invalid(
                        tat,
                        "a reference table has no shard_key: it is copied on every shard".into(),
                    ));
                }
                if ks.sharding == Sharding::ConsistentHash
                    && !rule.reference
                    && rule.shard_key.is_none()
                {
                    return Err(invalid(
                        format!("{tat}.shard_key"),
                        "a table of a sharded keyspace needs shard_key or reference = true".into(),
                    ));
                }
                if rule.sequence.is_some() && ks.sequence_keyspace.is_none() {
                    return Err(invalid(
                        format!("{tat}.sequence"),
                        format!("a sequence needs {at}.sequence_keyspace"),
                    ));
                }
            }
            if let Some(seq_ks) = &ks.sequence_keyspace {
                if !self.keyspace.contains_key(seq_ks) {
                    return Err(invalid(
                        format!("{at}.sequence_keyspace"),
                        format!("no keyspace named '{seq_ks}'"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The keyspace used when the client's database names none.
    pub fn default_keyspace(&self) -> Option<&str> {
        self.keyspace.keys().next().map(String::as_str)
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_addr(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("'{addr}' is not host:port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ShardMap, ConfigError> {
        let map: ShardMap =
            toml::from_str(text).map_err(|e| ConfigError::parse(std::path::Path::new("t"), &e))?;
        map.validate("t")?;
        Ok(map)
    }

    #[test]
    fn loads_the_design_example() {
        let map = parse(
            r#"
            [keyspace.meta]
            sharding = "unsharded"
            [[keyspace.meta.shards]]
            name = "m0"
            primary = "127.0.0.1:13300"

            [keyspace.app]
            sharding = "consistent_hash"
            vnodes = 256
            sequence_keyspace = "meta"
            [keyspace.app.tables.users]
            shard_key = "id"
            sequence = "users_seq"
            [keyspace.app.tables.countries]
            reference = true
            [[keyspace.app.shards]]
            name = "s0"
            primary = "127.0.0.1:13306"
            replicas = ["127.0.0.1:13307"]
            "#,
        )
        .expect("valid map");
        assert_eq!(map.keyspace["app"].shards[0].replicas.len(), 1);
        assert_eq!(
            map.keyspace["app"].tables["users"].shard_key.as_deref(),
            Some("id")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = parse(
            r#"
            [keyspace.app]
            sharding = "unsharded"
            [[keyspace.app.shards]]
            name = "s0"
            primary = "127.0.0.1"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("keyspace.app.shards[0].primary"), "{err}");
        assert!(err.contains("host:port"), "{err}");

        let err = parse(
            r#"
            [keyspace.app]
            sharding = "unsharded"
            [[keyspace.app.shards]]
            name = "s0"
            primary = "127.0.0.1:1"
            [[keyspace.app.shards]]
            name = "s1"
            primary = "127.0.0.1:2"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exactly one shard, found 2"), "{err}");

        let err = parse("[keyspace.app]\nsharding = \"weird\"\nshards = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sharding"), "{err}");
    }
}
