//! `reshard plan`: what adding or removing a shard of a consistent-hash keyspace moves, before
//! anything is written. The ring part is pure (which arcs change owner, and what share of the
//! hash space goes from which shard to which); the row figures are estimates from each source
//! primary's `information_schema` (InnoDB's `TABLE_ROWS`), scaled by the share that leaves it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::shardmap::{host_port, Replica, Shard, ShardMap, Sharding};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("no keyspace named '{0}'")]
    UnknownKeyspace(String),
    #[error("keyspace '{0}' is unsharded: only a consistent_hash keyspace is resharded")]
    Unsharded(String),
    #[error("{0}")]
    Invalid(String),
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A new shard (`--add NAME=PRIMARY[,REPLICA...]`).
    Add(Shard),
    /// A shard to empty and drop from the ring (`--remove NAME`).
    Remove(String),
}

impl Change {
    /// `NAME=PRIMARY[,REPLICA...]`, addresses as `host:port`.
    pub fn parse_add(spec: &str) -> Result<Change, PlanError> {
        let bad = |why: &str| {
            PlanError::Invalid(format!(
                "--add '{spec}': {why} (expected NAME=PRIMARY[,REPLICA...], e.g. s2=10.0.0.5:3306,10.0.0.6:3306)"
            ))
        };
        let (name, addrs) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
        let name = name.trim();
        if name.is_empty() || name.contains('/') || name.contains(char::is_whitespace) {
            return Err(bad(
                "the shard name must be non-empty, without '/' or spaces",
            ));
        }
        let mut addrs = addrs.split(',').map(str::trim);
        let primary = addrs
            .next()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad("no primary"))?;
        let replicas: Vec<Replica> = addrs
            .map(|a| Replica {
                addr: a.to_string(),
                weight: 1,
            })
            .collect();
        for a in std::iter::once(primary).chain(replicas.iter().map(|r| r.addr.as_str())) {
            if host_port(a).is_none() {
                return Err(bad(&format!("'{a}' is not host:port")));
            }
        }
        Ok(Change::Add(Shard {
            name: name.to_string(),
            primary: primary.to_string(),
            replicas,
        }))
    }

    /// The change `--add` or `--remove` asks for (exactly one of them).
    pub fn from_args(add: Option<&str>, remove: Option<&str>) -> Result<Change, PlanError> {
        match (add, remove) {
            (Some(a), None) => Change::parse_add(a),
            (None, Some(r)) => Ok(Change::Remove(r.to_string())),
            _ => Err(PlanError::Invalid(
                "give exactly one of add (NAME=PRIMARY[,REPLICA...]) or remove (a shard name)"
                    .into(),
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Change::Add(s) => format!("add shard {} (primary {})", s.name, s.primary),
            Change::Remove(n) => format!("remove shard {n}"),
        }
    }
}

/// Hashes moving from one shard to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    /// Ring arcs (contiguous stretches of the hash space).
    pub arcs: usize,
    /// Share of the whole hash space, 0..1.
    pub share: f64,
    /// Share of `from`'s own keys that leave it for `to`, 0..1.
    pub share_of_source: f64,
}

/// One table's rows to copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMove {
    pub table: String,
    /// `sharded` (rows whose key changes owner move) or `reference` (copied whole to a new
    /// shard; dropped from a removed one at `complete`).
    pub kind: String,
    /// Estimated rows to copy, per `from -> to`.
    pub rows: BTreeMap<String, u64>,
}

/// The whole plan: `reshard plan` prints it, `reshard start` carries it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub keyspace: String,
    pub change: Change,
    pub shards_before: Vec<String>,
    pub shards_after: Vec<String>,
    pub moves: Vec<Move>,
    /// Empty until estimated (`estimate`).
    #[serde(default)]
    pub tables: Vec<TableMove>,
    /// What `reshard start` would refuse, with what to change (binlog format, primary keys).
    #[serde(default)]
    pub blockers: Vec<String>,
    /// The shard map after the cutover.
    pub new_map: ShardMap,
}

/// The ring part of the plan: the keyspace's shards after `change`, and what moves.
pub fn plan(map: &ShardMap, keyspace: &str, change: &Change) -> Result<Plan, PlanError> {
    let ks = map
        .keyspace
        .get(keyspace)
        .ok_or_else(|| PlanError::UnknownKeyspace(keyspace.to_string()))?;
    if ks.sharding != Sharding::ConsistentHash {
        return Err(PlanError::Unsharded(keyspace.to_string()));
    }
    let mut after = ks.clone();
    match change {
        Change::Add(shard) => {
            if ks.shards.iter().any(|s| s.name == shard.name) {
                return Err(PlanError::Invalid(format!(
                    "keyspace {keyspace} already has a shard named {}",
                    shard.name
                )));
            }
            let used = |a: &str| {
                ks.shards
                    .iter()
                    .any(|s| s.primary == a || s.replica_addrs().any(|r| r == a))
            };
            for a in std::iter::once(shard.primary.as_str()).chain(shard.replica_addrs()) {
                if used(a) {
                    return Err(PlanError::Invalid(format!(
                        "{a} already serves a shard of {keyspace}: a new shard needs servers of its own"
                    )));
                }
            }
            after.shards.push(shard.clone());
        }
        Change::Remove(name) => {
            if !ks.shards.iter().any(|s| &s.name == name) {
                return Err(PlanError::Invalid(format!(
                    "keyspace {keyspace} has no shard named {name} (shards: {})",
                    names(&ks.shards).join(", ")
                )));
            }
            if ks.shards.len() == 1 {
                return Err(PlanError::Invalid(format!(
                    "{name} is the last shard of {keyspace}: nothing could take its rows"
                )));
            }
            after.shards.retain(|s| &s.name != name);
        }
    }
    let (old, new) = (ks.ring(), after.ring());
    let whole = (1u128 << 64) as f64;
    let owned = old.shares();
    let mut moves: BTreeMap<(String, String), (usize, u128)> = BTreeMap::new();
    for arc in old.moved_arcs(&new) {
        let key = (
            old.shard_names()[arc.from].clone(),
            new.shard_names()[arc.to].clone(),
        );
        let e = moves.entry(key).or_default();
        e.0 += 1;
        e.1 += arc.span();
    }
    let moves = moves
        .into_iter()
        .map(|((from, to), (arcs, span))| {
            let own = old
                .shard_names()
                .iter()
                .position(|n| *n == from)
                .and_then(|i| owned.get(i).copied())
                .unwrap_or(0);
            Move {
                share: span as f64 / whole,
                share_of_source: if own == 0 {
                    0.0
                } else {
                    span as f64 / own as f64
                },
                from,
                to,
                arcs,
            }
        })
        .collect();
    let mut new_map = map.clone();
    new_map.keyspace.insert(keyspace.to_string(), after.clone());
    new_map
        .validate("the new shard map")
        .map_err(|e| PlanError::Invalid(e.to_string()))?;
    Ok(Plan {
        keyspace: keyspace.to_string(),
        change: change.clone(),
        shards_before: names(&ks.shards),
        shards_after: names(&after.shards),
        moves,
        tables: Vec::new(),
        blockers: Vec::new(),
        new_map,
    })
}

fn names(shards: &[Shard]) -> Vec<String> {
    shards.iter().map(|s| s.name.clone()).collect()
}

/// What one source primary reports about the keyspace's tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceFacts {
    /// Estimated rows per table (`information_schema.TABLES.TABLE_ROWS`).
    pub rows: BTreeMap<String, u64>,
    /// Tables without a primary key.
    pub no_primary_key: Vec<String>,
    pub binlog_format: String,
    pub binlog_row_image: String,
    pub log_bin: bool,
}

impl Plan {
    /// Fills `tables` and `blockers` from each shard's facts (by shard name; a new shard's
    /// facts are not needed).
    pub fn estimate(&mut self, facts: &BTreeMap<String, SourceFacts>) {
        let rules = self
            .new_map
            .keyspace
            .get(&self.keyspace)
            .map(|k| k.tables.clone())
            .unwrap_or_default();
        let mut blockers = Vec::new();
        for (shard, f) in facts {
            if !f.log_bin || !f.binlog_format.eq_ignore_ascii_case("ROW") {
                blockers.push(format!(
                    "{shard}: binlog_format is {} (log_bin {}): the catch-up reads row events; set \
                     log_bin and binlog_format=ROW in the server's config and restart it",
                    if f.binlog_format.is_empty() { "unknown" } else { &f.binlog_format },
                    if f.log_bin { "on" } else { "off" }
                ));
            }
            if !f.binlog_row_image.is_empty() && !f.binlog_row_image.eq_ignore_ascii_case("FULL") {
                blockers.push(format!(
                    "{shard}: binlog_row_image is {}: set binlog_row_image=FULL (updates must carry \
                     the whole row)",
                    f.binlog_row_image
                ));
            }
            for t in &f.no_primary_key {
                blockers.push(format!(
                    "{shard}: table {t} has no primary key: the copy goes by primary-key chunks \
                     and the catch-up finds rows by it; add one"
                ));
            }
        }
        blockers.sort();
        blockers.dedup();
        let mut tables = Vec::new();
        let all_tables: std::collections::BTreeSet<&String> =
            facts.values().flat_map(|f| f.rows.keys()).collect();
        for table in all_tables {
            let rule = rules.get(table);
            let reference = rule.is_some_and(|r| r.reference);
            let mut rows = BTreeMap::new();
            if reference {
                // Copied whole from any source to a new shard.
                if let Change::Add(s) = &self.change {
                    let n = facts
                        .values()
                        .filter_map(|f| f.rows.get(table))
                        .max()
                        .copied();
                    rows.insert(
                        format!("{} -> {}", self.shards_before[0], s.name),
                        n.unwrap_or(0),
                    );
                }
            } else {
                for m in &self.moves {
                    let n = facts
                        .get(&m.from)
                        .and_then(|f| f.rows.get(table))
                        .copied()
                        .unwrap_or(0);
                    rows.insert(
                        format!("{} -> {}", m.from, m.to),
                        (n as f64 * m.share_of_source).round() as u64,
                    );
                }
            }
            tables.push(TableMove {
                table: table.clone(),
                kind: if reference { "reference" } else { "sharded" }.into(),
                rows,
            });
        }
        self.tables = tables;
        self.blockers = blockers;
    }

    /// The plan as a table for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "keyspace {}: {}\nshards {} -> {}\n",
            self.keyspace,
            self.change.describe(),
            self.shards_before.join(","),
            self.shards_after.join(",")
        );
        out.push_str("moves (share of all keys; share of the source's keys):\n");
        for m in &self.moves {
            out.push_str(&format!(
                "  {} -> {}: {:.1}% of all keys ({:.1}% of {}'s), {} ring arcs\n",
                m.from,
                m.to,
                m.share * 100.0,
                m.share_of_source * 100.0,
                m.from,
                m.arcs
            ));
        }
        if !self.tables.is_empty() {
            out.push_str("rows to copy (estimated from information_schema):\n");
            for t in &self.tables {
                let parts: Vec<String> = t.rows.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                out.push_str(&format!(
                    "  {} ({}): {}\n",
                    t.table,
                    t.kind,
                    if parts.is_empty() {
                        "none".to_string()
                    } else {
                        parts.join(", ")
                    }
                ));
            }
        }
        if self.blockers.is_empty() {
            out.push_str("nothing blocks `reshard start`\n");
        } else {
            out.push_str("`reshard start` would refuse:\n");
            for b in &self.blockers {
                out.push_str(&format!("  {b}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        toml::from_str(
            r#"
[keyspace.app]
sharding = "consistent_hash"
[keyspace.app.tables.t]
shard_key = "id"
[keyspace.app.tables.countries]
reference = true
[[keyspace.app.shards]]
name = "s0"
primary = "h:1"
[[keyspace.app.shards]]
name = "s1"
primary = "h:2"
[keyspace.meta]
sharding = "unsharded"
[[keyspace.meta.shards]]
name = "m0"
primary = "h:9"
"#,
        )
        .expect("map")
    }

    #[test]
    fn adding_a_third_shard_moves_about_a_third_to_it_from_both() {
        let add = Change::parse_add("s2=h:3,h:4").expect("spec");
        let p = plan(&map(), "app", &add).expect("plan");
        assert_eq!(p.shards_after, vec!["s0", "s1", "s2"]);
        assert!(p.moves.iter().all(|m| m.to == "s2"), "{:?}", p.moves);
        assert_eq!(p.moves.len(), 2);
        let total: f64 = p.moves.iter().map(|m| m.share).sum();
        assert!((0.25..0.42).contains(&total), "{total}");
        let s2 = &p.new_map.keyspace["app"].shards[2];
        assert_eq!(
            (s2.primary.as_str(), s2.replicas[0].addr.as_str()),
            ("h:3", "h:4")
        );
        let mut facts = BTreeMap::new();
        for (s, n) in [("s0", 1000u64), ("s1", 2000)] {
            facts.insert(
                s.to_string(),
                SourceFacts {
                    rows: [("t".to_string(), n), ("countries".to_string(), 10)].into(),
                    binlog_format: "ROW".into(),
                    binlog_row_image: "FULL".into(),
                    log_bin: true,
                    ..Default::default()
                },
            );
        }
        let mut p = p;
        p.estimate(&facts);
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let t = p.tables.iter().find(|t| t.table == "t").expect("t");
        let from_s1 = t.rows["s1 -> s2"];
        let share = p
            .moves
            .iter()
            .find(|m| m.from == "s1")
            .expect("s1")
            .share_of_source;
        assert_eq!(from_s1, (2000.0 * share).round() as u64);
        let c = p
            .tables
            .iter()
            .find(|t| t.table == "countries")
            .expect("ref");
        assert_eq!(c.kind, "reference");
        assert_eq!(c.rows.values().copied().collect::<Vec<_>>(), vec![10]);
        assert!(p.render().contains("s1 -> s2"));
    }

    #[test]
    fn removing_a_shard_gives_all_its_keys_to_the_others() {
        let p = plan(&map(), "app", &Change::Remove("s1".into())).expect("plan");
        assert_eq!(p.moves.len(), 1);
        assert_eq!(
            (p.moves[0].from.as_str(), p.moves[0].to.as_str()),
            ("s1", "s0")
        );
        assert!((p.moves[0].share_of_source - 1.0).abs() < 1e-9);
        assert_eq!(p.new_map.keyspace["app"].shards.len(), 1);
    }

    #[test]
    fn refuses_what_cannot_be_done() {
        let m = map();
        assert_eq!(
            plan(&m, "nope", &Change::Remove("s0".into())),
            Err(PlanError::UnknownKeyspace("nope".into()))
        );
        assert_eq!(
            plan(&m, "meta", &Change::Remove("m0".into())),
            Err(PlanError::Unsharded("meta".into()))
        );
        for spec in ["s2", "=h:3", "s2=", "s2=nohost", "a b=h:3"] {
            assert!(Change::parse_add(spec).is_err(), "{spec}");
        }
        let taken = Change::parse_add("s2=h:2").expect("spec");
        assert!(plan(&m, "app", &taken).is_err(), "a server of s1");
        let dup = Change::parse_add("s1=h:7").expect("spec");
        assert!(plan(&m, "app", &dup).is_err(), "name taken");
        assert!(plan(&m, "app", &Change::Remove("s9".into())).is_err());
        let one = plan(&m, "app", &Change::Remove("s1".into()))
            .expect("plan")
            .new_map;
        assert!(
            plan(&one, "app", &Change::Remove("s0".into())).is_err(),
            "last shard"
        );
    }

    #[test]
    fn blockers_say_what_to_change() {
        let mut p = plan(&map(), "app", &Change::Remove("s1".into())).expect("plan");
        let facts = [(
            "s1".to_string(),
            SourceFacts {
                rows: [("t".to_string(), 5)].into(),
                no_primary_key: vec!["t".into()],
                binlog_format: "MIXED".into(),
                binlog_row_image: "MINIMAL".into(),
                log_bin: true,
            },
        )]
        .into();
        p.estimate(&facts);
        let text = p.blockers.join("\n");
        assert!(text.contains("binlog_format=ROW"), "{text}");
        assert!(text.contains("binlog_row_image=FULL"), "{text}");
        assert!(text.contains("t has no primary key"), "{text}");
    }
}
