//! Which tables the sandbox's keyspace shards and which it copies everywhere, as given by
//! `--sharded-table TABLE:COLUMN` and `--reference-table TABLE`. Empty means what the sandbox
//! always did: keyspace `app` unsharded on shard s0.

use std::collections::HashMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A table spread over the shards by the hash of one column (`--sharded-table TABLE:COLUMN`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShardedTable {
    pub table: String,
    /// The shard key column.
    pub column: String,
}

impl FromStr for ShardedTable {
    type Err = String;

    /// Parses `TABLE:COLUMN`; the error says what was expected.
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((table, column)) = s.split_once(':') else {
            return Err(format!(
                "'{s}' is not TABLE:COLUMN (the table and its shard key column, e.g. users:id)"
            ));
        };
        check_identifier("table", table)?;
        check_identifier("shard key column", column)?;
        Ok(ShardedTable {
            table: table.to_string(),
            column: column.to_string(),
        })
    }
}

/// A table name as `--reference-table` accepts it.
pub fn parse_table(s: &str) -> Result<String, String> {
    check_identifier("table", s)?;
    Ok(s.to_string())
}

/// Names are plain identifiers (`[A-Za-z0-9_$]+`), so they need no quoting in SQL or the map.
fn check_identifier(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} name is empty"));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '$'))
    {
        Some(c) => Err(format!(
            "{what} name '{s}' contains {c:?}: use letters, digits, '_' and '$'"
        )),
        None => Ok(()),
    }
}

/// The sandbox keyspace's tables: sharded ones with their shard key, and reference tables.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TableLayout {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sharded: Vec<ShardedTable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference: Vec<String>,
}

impl TableLayout {
    /// True when the keyspace is sharded (`consistent_hash` over every shard): at least one
    /// sharded table was given.
    pub fn is_sharded(&self) -> bool {
        !self.sharded.is_empty()
    }

    /// True when nothing was given: the keyspace stays unsharded on s0.
    pub fn is_empty(&self) -> bool {
        self.sharded.is_empty() && self.reference.is_empty()
    }

    /// Checks every name and that no table is named twice (ignoring case, as a mistake like
    /// `users` and `Users` would confuse more than it helps). Reference tables need a sharded
    /// keyspace, so they come with at least one sharded table.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen: HashMap<String, String> = HashMap::new();
        let named = self
            .sharded
            .iter()
            .map(|t| {
                (
                    t.table.as_str(),
                    format!("--sharded-table {}:{}", t.table, t.column),
                )
            })
            .chain(
                self.reference
                    .iter()
                    .map(|t| (t.as_str(), format!("--reference-table {t}"))),
            );
        for (table, option) in named {
            check_identifier("table", table)?;
            if let Some(first) = seen.get(&table.to_ascii_lowercase()) {
                return Err(format!(
                    "table '{table}' is given twice ({first} and {option})"
                ));
            }
            seen.insert(table.to_ascii_lowercase(), option);
        }
        for t in &self.sharded {
            check_identifier("shard key column", &t.column)?;
        }
        if !self.reference.is_empty() && self.sharded.is_empty() {
            return Err(
                "--reference-table needs at least one --sharded-table (reference tables belong \
                 to a sharded keyspace)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharded(s: &str) -> ShardedTable {
        s.parse().expect("valid TABLE:COLUMN")
    }

    #[test]
    fn table_column_syntax() {
        assert_eq!(
            sharded("users:id"),
            ShardedTable {
                table: "users".into(),
                column: "id".into()
            }
        );
        assert_eq!(sharded("t$1:user_id").table, "t$1");
        for (bad, says) in [
            ("users", "not TABLE:COLUMN"),
            ("users:", "shard key column name is empty"),
            (":id", "table name is empty"),
            ("us-ers:id", "'-'"),
            ("users:id:x", "':'"),
            ("users:i d", "' '"),
            ("app.users:id", "'.'"),
        ] {
            let err = bad.parse::<ShardedTable>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!(parse_table("countries").as_deref(), Ok("countries"));
        assert!(parse_table("").is_err());
        assert!(parse_table("a`b").unwrap_err().contains("'`'"));
    }

    #[test]
    fn duplicates_and_lone_reference_tables_are_refused() {
        let layout = |s: &[&str], r: &[&str]| TableLayout {
            sharded: s.iter().map(|x| sharded(x)).collect(),
            reference: r.iter().map(|x| x.to_string()).collect(),
        };
        assert!(TableLayout::default().validate().is_ok());
        assert!(!TableLayout::default().is_sharded());
        let ok = layout(&["users:id", "orders:user_id"], &["countries"]);
        assert!(ok.validate().is_ok());
        assert!(ok.is_sharded());

        let err = layout(&["users:id", "users:email"], &[])
            .validate()
            .unwrap_err();
        assert!(err.contains("'users' is given twice"), "{err}");
        assert!(err.contains("--sharded-table users:email"), "{err}");
        let err = layout(&["users:id"], &["Users"]).validate().unwrap_err();
        assert!(err.contains("--reference-table Users"), "{err}");
        let err = layout(&["users:id"], &["c", "c"]).validate().unwrap_err();
        assert!(err.contains("'c' is given twice"), "{err}");
        let err = layout(&[], &["countries"]).validate().unwrap_err();
        assert!(err.contains("needs at least one --sharded-table"), "{err}");
    }
}
