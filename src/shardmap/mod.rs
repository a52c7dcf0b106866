//! Keyspaces, their tables and shards: the part of the configuration that says where data lives.
//!
//! The format is the one in DESIGN.md so later issues (sharding, resharding) load the same files.
//! At this stage only `unsharded` keyspaces route; a `consistent_hash` keyspace loads and
//! validates but is refused by the planner with a clear error. Its key hash and ring are in
//! [`ring`].

pub mod moving;
pub mod ring;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tomlfile::ConfigError;

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
    pub replicas: Vec<Replica>,
}

impl Shard {
    /// The replicas' `host:port` addresses, in map order.
    pub fn replica_addrs(&self) -> impl Iterator<Item = &str> {
        self.replicas.iter().map(|r| r.addr.as_str())
    }
}

/// `host:port` split into its parts (brackets of an IPv6 host removed); None if malformed.
pub fn host_port(addr: &str) -> Option<(String, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((
        h.trim_start_matches('[').trim_end_matches(']').to_string(),
        p.parse().ok()?,
    ))
}

/// Largest replica weight: keeps `outstanding * weight` products far from overflow and a
/// typo like 10000 from starving the other replicas.
pub const MAX_REPLICA_WEIGHT: u32 = 1000;

fn default_weight() -> u32 {
    1
}

/// A replica and its share of the shard's reads. In a map it is either `"host:port"` (weight
/// 1) or `{ addr = "host:port", weight = N }`; it is written back the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub addr: String,
    /// Relative share of reads: a weight-3 replica gets three times the reads of a weight-1
    /// one when both are equally busy.
    pub weight: u32,
}

impl Replica {
    /// A replica of weight 1.
    pub fn new(addr: impl Into<String>) -> Self {
        Replica {
            addr: addr.into(),
            weight: default_weight(),
        }
    }
}

/// The table form of a replica; its own struct so unknown keys are named in errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaTable {
    addr: String,
    #[serde(default = "default_weight")]
    weight: u32,
}

// Hand-written rather than `#[serde(untagged)]`: untagged only says "did not match any
// variant", while this names the unknown key or the wrong type.
impl<'de> Deserialize<'de> for Replica {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = Replica;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"host:port\" or { addr = \"host:port\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Replica, E> {
                Ok(Replica::new(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Replica, A::Error> {
                let t =
                    ReplicaTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Replica {
                    addr: t.addr,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(Form)
    }
}

impl Serialize for Replica {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if self.weight == default_weight() {
            return s.serialize_str(&self.addr);
        }
        let mut t = s.serialize_struct("Replica", 2)?;
        t.serialize_field("addr", &self.addr)?;
        t.serialize_field("weight", &self.weight)?;
        t.end()
    }
}

fn default_vnodes() -> u32 {
    256
}

/// Largest `vnodes`: 4096 virtual nodes of [`ring::POINTS_PER_VNODE`] points are 65,536 ring
/// points (768 KiB) per shard, far past the point where more improve the balance.
pub const MAX_VNODES: u32 = 4096;

/// What the proxy does when a transaction needs a second shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiShardTransactions {
    /// A statement needing another shard than the transaction's first one fails (ERR 1105)
    /// and the transaction stays open on its first shard: no transaction can half-commit.
    #[default]
    Refuse,
    /// The transaction opens on every shard it needs and COMMIT commits them one by one: a
    /// failure after one shard committed leaves that shard's changes in place (there is no
    /// two-phase commit).
    BestEffort,
}

impl MultiShardTransactions {
    fn is_refuse(&self) -> bool {
        *self == MultiShardTransactions::Refuse
    }
}

/// A keyspace is a logical database: clients select it with `USE name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyspace {
    pub sharding: Sharding,
    /// Virtual nodes per shard on the hash ring (consistent_hash only), 1..=[`MAX_VNODES`].
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    /// The unsharded keyspace holding the sequence tables named by `tables.*.sequence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_keyspace: Option<String>,
    /// Whether an UPDATE or DELETE without a shard key in its WHERE may run on every shard;
    /// false (the default): it is refused, so a forgotten key cannot rewrite every shard.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_scatter_writes: bool,
    /// Transactions needing more than one shard: refused (the default) or committed shard by
    /// shard.
    #[serde(default, skip_serializing_if = "MultiShardTransactions::is_refuse")]
    pub multi_shard_transactions: MultiShardTransactions,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, TableRule>,
    /// Seconds a replica may lag and still serve this keyspace's reads; unset: the config's
    /// `[routing] max_replica_lag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_lag: Option<f64>,
    pub shards: Vec<Shard>,
}

impl Keyspace {
    /// The hash ring of this keyspace's shards: [`ring::Ring::shard_for`] answers an index
    /// into `shards`.
    pub fn ring(&self) -> ring::Ring {
        let names: Vec<&str> = self.shards.iter().map(|s| s.name.as_str()).collect();
        ring::Ring::new(&names, self.vnodes)
    }

    /// A table's rule by the name a statement used: the exact name, else the one equal to it
    /// ignoring ASCII case (validation refuses two tables differing only in case). MariaDB on
    /// Linux treats table names case-sensitively by default, so there `USERS` is not `users`
    /// and the server answers "doesn't exist" wherever the statement goes; with
    /// `lower_case_table_names = 1` they are one table, and route alike here.
    pub fn table(&self, name: &str) -> Option<&TableRule> {
        self.tables.get(name).or_else(|| {
            self.tables
                .iter()
                .find(|(t, _)| t.eq_ignore_ascii_case(name))
                .map(|(_, rule)| rule)
        })
    }
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
        let map: ShardMap =
            toml::from_str(&text).map_err(|e| ConfigError::parse(path, &text, &e))?;
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
        // Health and replica choice keep one state per address, so a server must have one role
        // (and one weight) across the whole map.
        let mut roles = std::collections::HashMap::new();
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
            if !(1..=MAX_VNODES).contains(&ks.vnodes) {
                return Err(invalid(
                    format!("{at}.vnodes"),
                    format!("{} is not between 1 and {MAX_VNODES}", ks.vnodes),
                ));
            }
            if let Some(lag) = ks.max_replica_lag {
                crate::tomlfile::check_lag_secs(lag)
                    .map_err(|m| invalid(format!("{at}.max_replica_lag"), m))?;
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
                let pat = format!("{sat}.primary");
                if let Some(m) = role_conflict(&mut roles, &shard.primary, None, &pat) {
                    return Err(invalid(pat, m));
                }
                for (j, r) in shard.replicas.iter().enumerate() {
                    let rat = format!("{sat}.replicas[{j}]");
                    check_addr(&r.addr).map_err(|m| invalid(rat.clone(), m))?;
                    if !(1..=MAX_REPLICA_WEIGHT).contains(&r.weight) {
                        return Err(invalid(
                            format!("{rat}.weight"),
                            format!("{} is not between 1 and {MAX_REPLICA_WEIGHT}", r.weight),
                        ));
                    }
                    let repeated = r.addr == shard.primary
                        || shard.replicas[..j].iter().any(|o| o.addr == r.addr);
                    if repeated {
                        return Err(invalid(
                            rat,
                            format!("'{}' appears twice in this shard", r.addr),
                        ));
                    }
                    if let Some(m) = role_conflict(&mut roles, &r.addr, Some(r.weight), &rat) {
                        return Err(invalid(rat, m));
                    }
                }
            }
            let mut folded = std::collections::HashMap::new();
            for (t, rule) in &ks.tables {
                let tat = format!("{at}.tables.{t}");
                if let Some(other) = folded.insert(t.to_ascii_lowercase(), t) {
                    return Err(invalid(
                        tat,
                        format!("tables '{other}' and '{t}' differ only in case"),
                    ));
                }
                if rule.shard_key.as_deref().is_some_and(str::is_empty) {
                    return Err(invalid(
                        format!("{tat}.shard_key"),
                        "names no column".into(),
                    ));
                }
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
                if rule.sequence.as_deref().is_some_and(str::is_empty) {
                    return Err(invalid(
                        format!("{tat}.sequence"),
                        "names no sequence".into(),
                    ));
                }
                if rule.sequence.is_some() && rule.shard_key.is_none() {
                    return Err(invalid(
                        format!("{tat}.sequence"),
                        "a sequence generates shard keys: it needs shard_key".into(),
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
                match self.keyspace.get(seq_ks) {
                    None => {
                        return Err(invalid(
                            format!("{at}.sequence_keyspace"),
                            format!("no keyspace named '{seq_ks}'"),
                        ))
                    }
                    Some(target) if target.sharding != Sharding::Unsharded => {
                        return Err(invalid(
                            format!("{at}.sequence_keyspace"),
                            format!(
                                "'{seq_ks}' is sharded: sequences live in an unsharded keyspace"
                            ),
                        ))
                    }
                    Some(_) => {}
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

/// Remembers where `addr` was first seen and as what (None: primary, Some(weight): replica);
/// a message when `key` gives it another role or weight.
fn role_conflict<'m>(
    seen: &mut std::collections::HashMap<&'m str, (Option<u32>, String)>,
    addr: &'m str,
    role: Option<u32>,
    key: &str,
) -> Option<String> {
    match seen.get(addr) {
        Some((first_role, first_key)) if *first_role != role => Some(format!(
            "'{addr}' is {} here but {} at {first_key}",
            role_name(role),
            role_name(*first_role)
        )),
        Some(_) => None,
        None => {
            seen.insert(addr, (role, key.to_string()));
            None
        }
    }
}

fn role_name(weight: Option<u32>) -> String {
    match weight {
        None => "a primary".into(),
        Some(w) => format!("a replica of weight {w}"),
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
        let map: ShardMap = toml::from_str(text)
            .map_err(|e| ConfigError::parse(std::path::Path::new("t"), text, &e))?;
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

    const ONE_SHARD: &str = r#"
        [keyspace.app]
        sharding = "unsharded"
        [[keyspace.app.shards]]
        name = "s0"
        primary = "127.0.0.1:1"
    "#;

    #[test]
    fn replicas_are_strings_or_weighted_tables() {
        let map = parse(&format!(
            "{ONE_SHARD}replicas = [\"127.0.0.1:2\", {{ addr = \"127.0.0.1:3\", weight = 3 }}, {{ addr = \"127.0.0.1:4\" }}]\n"
        ))
        .expect("valid map");
        let shard = &map.keyspace["app"].shards[0];
        assert_eq!(
            shard.replicas,
            vec![
                Replica::new("127.0.0.1:2"),
                Replica {
                    addr: "127.0.0.1:3".into(),
                    weight: 3
                },
                Replica::new("127.0.0.1:4"),
            ]
        );
        assert_eq!(
            shard.replica_addrs().collect::<Vec<_>>(),
            ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]
        );

        // Weight 1 is written as a plain string, others as a table, and both read back.
        let text = toml::to_string_pretty(&map).expect("serialize");
        assert!(text.contains("\"127.0.0.1:2\""), "{text}");
        assert!(!text.contains("weight = 1"), "{text}");
        assert!(text.contains("weight = 3"), "{text}");
        let back: ShardMap = toml::from_str(&text).expect("reparse");
        assert_eq!(back, map);

        // Only tables: TOML may write them as an array of tables; it must still read back.
        let mut only_tables = map.clone();
        if let Some(ks) = only_tables.keyspace.get_mut("app") {
            ks.shards[0].replicas.retain(|r| r.weight > 1);
        }
        let text = toml::to_string_pretty(&only_tables).expect("serialize");
        let back: ShardMap = toml::from_str(&text).expect("reparse");
        assert_eq!(back, only_tables, "{text}");
    }

    #[test]
    fn bad_replicas_are_named() {
        let err = parse(&format!(
            "{ONE_SHARD}replicas = [{{ addr = \"127.0.0.1:2\", weight = 0 }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("keyspace.app.shards[0].replicas[0].weight"),
            "{err}"
        );
        assert!(err.contains("between 1 and 1000"), "{err}");

        let err = parse(&format!(
            "{ONE_SHARD}replicas = [{{ addr = \"127.0.0.1:2\", wieght = 2 }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("wieght"), "{err}");

        let err = parse(&format!("{ONE_SHARD}replicas = [\"nope\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("keyspace.app.shards[0].replicas[0]"), "{err}");

        let err = parse(&format!(
            "{ONE_SHARD}replicas = [\"127.0.0.1:2\", \"127.0.0.1:2\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("replicas[1]"), "{err}");
        assert!(err.contains("twice"), "{err}");

        let err = parse(&format!("{ONE_SHARD}replicas = [\"127.0.0.1:1\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn a_server_has_one_role_across_the_map() {
        let two = |other: &str| {
            format!(
                "{ONE_SHARD}replicas = [\"127.0.0.1:2\"]\n\
                 [keyspace.b]\nsharding = \"unsharded\"\n\
                 [[keyspace.b.shards]]\nname = \"s0\"\nprimary = \"127.0.0.1:1\"\n{other}"
            )
        };
        // The same primary and replica serving two keyspaces is fine.
        parse(&two("replicas = [\"127.0.0.1:2\"]\n")).expect("shared servers");

        let err = parse(&two(
            "replicas = [{ addr = \"127.0.0.1:2\", weight = 2 }]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("keyspace.b.shards[0].replicas[0]"), "{err}");
        assert!(err.contains("keyspace.app.shards[0].replicas[0]"), "{err}");

        let err = parse(&format!(
            "{ONE_SHARD}replicas = [\"127.0.0.1:2\"]\n\
             [keyspace.b]\nsharding = \"unsharded\"\n\
             [[keyspace.b.shards]]\nname = \"s0\"\nprimary = \"127.0.0.1:2\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("keyspace.b.shards[0].primary"), "{err}");
        assert!(err.contains("a primary here but a replica"), "{err}");
    }

    #[test]
    fn keyspace_max_replica_lag_is_checked() {
        let with = |v: &str| {
            ONE_SHARD.replace(
                "sharding = \"unsharded\"",
                &format!("sharding = \"unsharded\"\nmax_replica_lag = {v}"),
            )
        };
        let map = parse(&with("2.5")).expect("valid");
        assert_eq!(map.keyspace["app"].max_replica_lag, Some(2.5));
        for bad in ["0", "-1.0", "nan", "inf"] {
            let err = parse(&with(bad)).unwrap_err().to_string();
            assert!(err.contains("keyspace.app.max_replica_lag"), "{bad}: {err}");
        }
    }

    /// A valid sharded map; `edit` rewrites it into the case under test.
    const SHARDED: &str = r#"
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
        [keyspace.app.tables.Orders]
        shard_key = "user_id"
        [keyspace.app.tables.countries]
        reference = true
        [[keyspace.app.shards]]
        name = "s0"
        primary = "127.0.0.1:13306"
        [[keyspace.app.shards]]
        name = "s1"
        primary = "127.0.0.1:13316"
        [[keyspace.app.shards]]
        name = "s2"
        primary = "127.0.0.1:13326"
    "#;

    fn sharded_err(from: &str, to: &str) -> String {
        assert!(SHARDED.contains(from), "{from}");
        parse(&SHARDED.replacen(from, to, 1))
            .expect_err("invalid map")
            .to_string()
    }

    #[test]
    fn keyspace_options_default_and_parse() {
        let map = parse(SHARDED).expect("valid");
        let app = &map.keyspace["app"];
        assert!(!app.allow_scatter_writes);
        assert_eq!(app.multi_shard_transactions, MultiShardTransactions::Refuse);
        // Defaults are not written back.
        let text = toml::to_string_pretty(&map).expect("serialize");
        assert!(!text.contains("allow_scatter_writes"), "{text}");
        assert!(!text.contains("multi_shard_transactions"), "{text}");

        let map = parse(&SHARDED.replacen(
            "vnodes = 256",
            "vnodes = 256\nallow_scatter_writes = true\nmulti_shard_transactions = \"best_effort\"",
            1,
        ))
        .expect("valid");
        let app = &map.keyspace["app"];
        assert!(app.allow_scatter_writes);
        assert_eq!(
            app.multi_shard_transactions,
            MultiShardTransactions::BestEffort
        );
        let text = toml::to_string_pretty(&map).expect("serialize");
        assert_eq!(toml::from_str::<ShardMap>(&text).expect("reparse"), map);

        let err = sharded_err("vnodes = 256", "multi_shard_transactions = \"2pc\"");
        assert!(
            err.contains("multi_shard_transactions") || err.contains("2pc"),
            "{err}"
        );
        let err = sharded_err("vnodes = 256", "allow_scatter_writes = \"yes\"");
        assert!(
            err.contains("allow_scatter_writes") || err.contains("bool"),
            "{err}"
        );
    }

    #[test]
    fn vnodes_are_between_1_and_4096() {
        for ok in ["1", "4096"] {
            parse(&SHARDED.replacen("vnodes = 256", &format!("vnodes = {ok}"), 1))
                .expect("valid vnodes");
        }
        for bad in ["0", "4097"] {
            let err = sharded_err("vnodes = 256", &format!("vnodes = {bad}"));
            assert!(err.contains("keyspace.app.vnodes"), "{err}");
            assert!(err.contains("between 1 and 4096"), "{err}");
        }
        let err = sharded_err("vnodes = 256", "vnodes = -1");
        assert!(err.contains("vnodes"), "{err}");
    }

    #[test]
    fn a_sharded_keyspace_needs_unique_shards() {
        let no_shards = SHARDED
            .split("[[keyspace.app.shards]]")
            .next()
            .unwrap_or_default()
            .replacen("vnodes = 256", "vnodes = 256\nshards = []", 1);
        let err = parse(&no_shards).expect_err("no shards").to_string();
        assert!(err.contains("keyspace.app.shards"), "{err}");
        assert!(err.contains("at least one shard"), "{err}");

        let err = sharded_err("name = \"s2\"", "name = \"s0\"");
        assert!(err.contains("keyspace.app.shards[2].name"), "{err}");
        assert!(err.contains("'s0'"), "{err}");
    }

    #[test]
    fn a_sharded_table_has_a_shard_key_or_is_a_reference() {
        let err = sharded_err("shard_key = \"user_id\"", "");
        assert!(
            err.contains("keyspace.app.tables.Orders.shard_key"),
            "{err}"
        );
        assert!(err.contains("shard_key or reference = true"), "{err}");

        let err = sharded_err("reference = true", "reference = true\nshard_key = \"id\"");
        assert!(err.contains("keyspace.app.tables.countries"), "{err}");
        assert!(err.contains("reference table has no shard_key"), "{err}");

        let err = sharded_err("shard_key = \"user_id\"", "shard_key = \"\"");
        assert!(
            err.contains("keyspace.app.tables.Orders.shard_key"),
            "{err}"
        );
    }

    #[test]
    fn sequences_need_a_shard_key_and_an_unsharded_keyspace() {
        let err = sharded_err("reference = true", "reference = true\nsequence = \"c_seq\"");
        assert!(
            err.contains("keyspace.app.tables.countries.sequence"),
            "{err}"
        );
        assert!(err.contains("needs shard_key"), "{err}");

        let err = sharded_err("sequence_keyspace = \"meta\"\n", "");
        assert!(err.contains("keyspace.app.tables.users.sequence"), "{err}");
        assert!(err.contains("keyspace.app.sequence_keyspace"), "{err}");

        let err = sharded_err(
            "sequence_keyspace = \"meta\"",
            "sequence_keyspace = \"nope\"",
        );
        assert!(err.contains("keyspace.app.sequence_keyspace"), "{err}");
        assert!(err.contains("no keyspace named 'nope'"), "{err}");

        let err = sharded_err(
            "sequence_keyspace = \"meta\"",
            "sequence_keyspace = \"app\"",
        );
        assert!(err.contains("keyspace.app.sequence_keyspace"), "{err}");
        assert!(err.contains("'app' is sharded"), "{err}");

        let err = sharded_err("sequence = \"users_seq\"", "sequence = \"\"");
        assert!(err.contains("keyspace.app.tables.users.sequence"), "{err}");
    }

    #[test]
    fn tables_are_found_exactly_then_ignoring_case() {
        let map = parse(SHARDED).expect("valid");
        let app = &map.keyspace["app"];
        let key = |t: &str| app.table(t).and_then(|r| r.shard_key.as_deref());
        assert_eq!(key("users"), Some("id"));
        assert_eq!(key("USERS"), Some("id"));
        assert_eq!(key("Orders"), Some("user_id"));
        assert_eq!(key("orders"), Some("user_id"));
        assert!(app.table("countries").is_some_and(|r| r.reference));
        assert!(app.table("nope").is_none());

        let err = sharded_err(
            "[keyspace.app.tables.countries]",
            "[keyspace.app.tables.ORDERS]\nshard_key = \"user_id\"\n[keyspace.app.tables.countries]",
        );
        assert!(err.contains("keyspace.app.tables."), "{err}");
        assert!(err.contains("differ only in case"), "{err}");
    }

    #[test]
    fn the_keyspace_ring_follows_map_order() {
        let map = parse(SHARDED).expect("valid");
        let app = &map.keyspace["app"];
        let ring = app.ring();
        assert_eq!(ring.shard_count(), 3);
        assert_eq!(ring.shard_names(), ["s0", "s1", "s2"]);
        // The pinned example of ring.rs: 42 lives on s1.
        let h = ring::key_hash(&ring::KeyValue::Int(42));
        assert_eq!(app.shards[ring.shard_for(h)].name, "s1");
    }
}
