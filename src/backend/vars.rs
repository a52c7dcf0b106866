//! Session variables a client has set, kept so that any pooled server connection can be made
//! to carry them: the basis of multiplexing.
//!
//! A set is immutable and shared (`Arc`): the session holds its current one and every server
//! connection remembers the one it carries, so "is this connection already right?" is a pointer
//! or hash comparison on the hot path, and only a mismatch builds a `SET` statement.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What a variable is, in the order a replay `SET` names them (NAMES first: it resets the
/// collation variables other assignments may then override).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Var {
    Names,
    System(String),
    User(String),
}

/// A session's variables and the SQL text of each value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VarSet {
    vars: BTreeMap<Var, String>,
    sig: u64,
    /// `sig` without `last_insert_id`, which every insert changes and no statement's
    /// metadata depends on (the key of kept PREPARE replies).
    metadata_sig: u64,
    /// Read on every statement (cache, routing): worked out once, not looked up each time.
    autocommit_off: bool,
}

/// `SET last_insert_id = DEFAULT` is refused by MariaDB; 0 is what a fresh connection has.
const NEUTRAL_LAST_INSERT_ID: &str = "0";

/// What a server connection must run to carry a session's variables.
#[derive(Debug, PartialEq, Eq)]
pub enum Sync {
    /// Already the same.
    Nothing,
    /// Run this `SET`.
    Set(String),
    /// COM_RESET_CONNECTION first (a character set cannot be put back otherwise), then this
    /// `SET` if any.
    Reset(Option<String>),
}

impl VarSet {
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// A cheap fingerprint; 0 for the empty set (a clean connection).
    pub fn sig(&self) -> u64 {
        self.sig
    }

    /// The fingerprint of what can change a statement's metadata: all but `last_insert_id`.
    pub fn metadata_sig(&self) -> u64 {
        self.metadata_sig
    }

    pub fn get(&self, var: &Var) -> Option<&str> {
        self.vars.get(var).map(String::as_str)
    }

    /// A new set with `changes` applied; `None` values go back to the server's default.
    pub fn with(&self, changes: impl IntoIterator<Item = (Var, Option<String>)>) -> Arc<VarSet> {
        let mut vars = self.vars.clone();
        for (var, value) in changes {
            match value {
                Some(v) => {
                    vars.insert(var, v);
                }
                None => {
                    vars.remove(&var);
                }
            }
        }
        let sig = if vars.is_empty() {
            0
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            vars.hash(&mut h);
            h.finish() | 1
        };
        // 0 as for the empty set when only `last_insert_id` is set.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut hashed = false;
        for (var, value) in &vars {
            if !matches!(var, Var::System(n) if n == "last_insert_id") {
                (var, value).hash(&mut h);
                hashed = true;
            }
        }
        let metadata_sig = if hashed { h.finish() | 1 } else { 0 };
        let autocommit_off = vars
            .get(&Var::System("autocommit".into()))
            .is_some_and(|v| is_off(v));
        Arc::new(VarSet {
            vars,
            sig,
            metadata_sig,
            autocommit_off,
        })
    }

    /// Autocommit as this session has it (on unless set off).
    pub fn autocommit(&self) -> bool {
        !self.autocommit_off
    }

    /// What turns a connection carrying `from` (`None`: fresh or reset) into one carrying `self`.
    pub fn sync_from(&self, from: Option<&VarSet>) -> Sync {
        let empty = VarSet::default();
        let from = from.unwrap_or(&empty);
        if from.sig == self.sig && from.vars == self.vars {
            return Sync::Nothing;
        }
        if from.vars.contains_key(&Var::Names) && !self.vars.contains_key(&Var::Names) {
            return Sync::Reset(self.assignments(&empty));
        }
        match self.assignments(from) {
            Some(sql) => Sync::Set(sql),
            None => Sync::Nothing,
        }
    }

    /// One `SET` with every difference from `from`: new values, and defaults for what `from`
    /// had and this set does not.
    fn assignments(&self, from: &VarSet) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        for (var, value) in &self.vars {
            if from.vars.get(var) != Some(value) {
                parts.push(assign(var, value));
            }
        }
        for var in from.vars.keys() {
            if !self.vars.contains_key(var) {
                let neutral = match var {
                    Var::Names => continue, // handled by a reset
                    Var::User(_) => "NULL",
                    Var::System(n) if n == "last_insert_id" => NEUTRAL_LAST_INSERT_ID,
                    Var::System(_) => "DEFAULT",
                };
                parts.push(assign(var, neutral));
            }
        }
        if parts.is_empty() {
            None
        } else {
            Some(format!("SET {}", parts.join(", ")))
        }
    }
}

fn assign(var: &Var, value: &str) -> String {
    match var {
        Var::Names => format!("NAMES {value}"),
        Var::System(n) => format!("@@SESSION.{n} = {value}"),
        Var::User(n) => format!("@`{}` = {value}", n.replace('`', "``")),
    }
}

/// A value read back from the server as SQL text that sets it again.
pub fn literal(value: Option<&str>) -> String {
    match value {
        None => "NULL".into(),
        Some(v) if !v.is_empty() && v.parse::<f64>().is_ok() && !v.contains(['e', 'E']) => {
            v.to_string()
        }
        Some(v) => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''")),
    }
}

/// A boolean variable's literal value (`0`, `OFF`, `'off'`, `FALSE`) that turns it off.
pub fn is_off(literal: &str) -> bool {
    matches!(
        literal.trim_matches('\'').to_ascii_lowercase().as_str(),
        "0" | "off" | "false"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(n: &str) -> Var {
        Var::System(n.into())
    }

    #[test]
    fn sync_sets_differences_and_defaults_the_rest() {
        let a = VarSet::default().with([
            (sys("sql_mode"), Some("'ANSI'".into())),
            (Var::User("v".into()), Some("7".into())),
        ]);
        let b = VarSet::default().with([(sys("time_zone"), Some("'+02:00'".into()))]);
        assert_eq!(a.sync_from(Some(&a)), Sync::Nothing);
        assert_eq!(
            b.sync_from(Some(&a)),
            Sync::Set(
                "SET @@SESSION.time_zone = '+02:00', @@SESSION.sql_mode = DEFAULT, @`v` = NULL"
                    .into()
            )
        );
        assert_eq!(VarSet::default().sync_from(None), Sync::Nothing);
        assert_eq!(
            a.sync_from(None),
            Sync::Set("SET @@SESSION.sql_mode = 'ANSI', @`v` = 7".into())
        );
    }

    #[test]
    fn dropping_a_character_set_needs_a_reset() {
        let names = VarSet::default().with([(Var::Names, Some("latin1".into()))]);
        let plain = VarSet::default().with([(sys("last_insert_id"), Some("5".into()))]);
        assert_eq!(
            plain.sync_from(Some(&names)),
            Sync::Reset(Some("SET @@SESSION.last_insert_id = 5".into()))
        );
        assert_eq!(
            VarSet::default().sync_from(Some(&plain)),
            Sync::Set("SET @@SESSION.last_insert_id = 0".into())
        );
    }

    #[test]
    fn autocommit_and_literals() {
        let off = VarSet::default().with([(sys("autocommit"), Some("OFF".into()))]);
        assert!(!off.autocommit());
        assert!(VarSet::default().autocommit());
        let removed = off.with([(sys("autocommit"), None)]);
        assert!(removed.autocommit());
        assert_eq!(removed.sig(), 0);
        assert_eq!(literal(Some("42")), "42");
        assert_eq!(literal(Some("1e5")), "'1e5'");
        assert_eq!(literal(Some("it's")), "'it''s'");
        assert_eq!(literal(None), "NULL");
    }
}
