//! Per-table generation counters: a cache key carries the generations of the tables its read
//! touched, so a write only has to bump its tables' counters to make every older entry
//! unreachable (O(1) per write; the orphans age out by TTL and size). moka's
//! `invalidate_entries_if` was the alternative and is both slower and leaky (CRATE-NOTES.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// One table's (or one database's) counter and when a write last bumped it.
#[derive(Debug, Default)]
struct Generation {
    value: AtomicU64,
    /// Milliseconds since `Generations::epoch` of the last bump (0: never).
    written_ms: AtomicU64,
}

/// Counters by `db.table` (lower-cased), and by `db.` for writes whose tables are unknown.
#[derive(Debug)]
pub struct Generations {
    by_name: RwLock<HashMap<String, Arc<Generation>>>,
    /// Bumped before a new name's counter can change: a `Watch` made before holds no counter
    /// for that name and must look it up again.
    names: AtomicU64,
    epoch: Instant,
}

impl Default for Generations {
    fn default() -> Self {
        Generations {
            by_name: RwLock::new(HashMap::new()),
            names: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

/// The counters a read of some tables depends on, looked up once: reading them again is a
/// few atomic loads, where `current` builds names and searches the map for each.
#[derive(Debug)]
pub struct Watch {
    /// Each table's name then its database's (`db.`), as `current` orders them.
    names: Vec<String>,
    /// `None`: no write made a counter for that name yet (it reads as 0).
    counters: Vec<Option<Arc<Generation>>>,
    /// `Generations::names` when the counters were looked up.
    names_seen: u64,
}

/// `db.table` for a table as a statement names it (`t` or `db.t`) in database `db`.
pub fn qualified(db: Option<&str>, table: &str) -> String {
    if table.contains('.') {
        table.to_ascii_lowercase()
    } else {
        format!(
            "{}.{}",
            db.unwrap_or("").to_ascii_lowercase(),
            table.to_ascii_lowercase()
        )
    }
}

/// The database part of a `db.table` name.
fn database_of(name: &str) -> &str {
    name.split_once('.').map_or("", |(db, _)| db)
}

impl Generations {
    fn get(&self, name: &str) -> Option<Arc<Generation>> {
        let map = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }

    fn get_or_create(&self, name: &str) -> Arc<Generation> {
        if let Some(g) = self.get(name) {
            return g;
        }
        let mut map = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| {
                self.names.fetch_add(1, Ordering::AcqRel);
                Arc::default()
            })
            .clone()
    }

    /// Looks up the counters of a read of `tables` (`db.table` names) for `read`.
    pub fn watch(&self, tables: &[String]) -> Watch {
        // Read first: a name added while looking up makes the watch stale, never wrong.
        let names_seen = self.names.load(Ordering::Acquire);
        let names: Vec<String> = tables
            .iter()
            .flat_map(|t| [t.clone(), format!("{}.", database_of(t))])
            .collect();
        let counters = names.iter().map(|n| self.get(n)).collect();
        Watch {
            names,
            counters,
            names_seen,
        }
    }

    /// Whether `w` still holds every counter its names have.
    pub fn is_fresh(&self, w: &Watch) -> bool {
        self.names.load(Ordering::Acquire) == w.names_seen
    }

    /// What `current` gives for the tables `w` watches, into `out`.
    pub fn read(&self, w: &Watch, out: &mut Vec<u64>) {
        out.clear();
        if self.is_fresh(w) {
            out.extend(
                w.counters
                    .iter()
                    .map(|c| c.as_ref().map_or(0, |g| g.value.load(Ordering::Acquire))),
            );
        } else {
            out.extend(
                w.names
                    .iter()
                    .map(|n| self.get(n).map_or(0, |g| g.value.load(Ordering::Acquire))),
            );
        }
    }

    /// The counters a read of `tables` (`db.table` names) depends on: each table's and each
    /// of their databases'.
    pub fn current(&self, tables: &[String]) -> Vec<u64> {
        let value = |n: &str| self.get(n).map_or(0, |g| g.value.load(Ordering::Acquire));
        let mut out = Vec::with_capacity(tables.len() * 2);
        for t in tables {
            out.push(value(t));
            out.push(value(&format!("{}.", database_of(t))));
        }
        out
    }

    /// Whether a write through the proxy touched any of `tables` within the last `window_ms`.
    pub fn written_within(&self, tables: &[String], window_ms: u64) -> bool {
        let now = self.now_ms();
        let recent = |n: &str| {
            self.get(n).is_some_and(|g| {
                let at = g.written_ms.load(Ordering::Acquire);
                at != 0 && now.saturating_sub(at) < window_ms
            })
        };
        tables
            .iter()
            .any(|t| recent(t) || recent(&format!("{}.", database_of(t))))
    }

    /// Makes every entry that read `name` (`db.table`, or `db.` for the whole database)
    /// unreachable.
    pub fn bump(&self, name: &str) {
        let g = self.get_or_create(name);
        g.value.fetch_add(1, Ordering::AcqRel);
        g.written_ms.store(self.now_ms().max(1), Ordering::Release);
    }

    /// Makes every `Watch` stale, so shapes built on them are built again (and see rules and
    /// serving as they are now).
    pub fn renew_watches(&self) {
        self.names.fetch_add(1, Ordering::AcqRel);
    }

    /// Bumps every counter (a flush of everything).
    pub fn bump_all(&self) {
        let names: Vec<String> = {
            let map = self.by_name.read().unwrap_or_else(|e| e.into_inner());
            map.keys().cloned().collect()
        };
        for n in names {
            self.bump(&n);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_changes_the_generations_of_reads_of_that_table_only() {
        let g = Generations::default();
        let users = vec![qualified(Some("app"), "Users")];
        let orders = vec![qualified(Some("app"), "orders")];
        let before = (g.current(&users), g.current(&orders));
        g.bump("app.users");
        assert_ne!(g.current(&users), before.0);
        assert_eq!(g.current(&orders), before.1);
        assert!(g.written_within(&users, 60_000));
        assert!(!g.written_within(&orders, 60_000));
        // A write whose tables are unknown bumps the database: every table of it.
        g.bump("app.");
        assert_ne!(g.current(&orders), before.1);
        assert_eq!(qualified(Some("App"), "other.T"), "other.t");
    }

    #[test]
    fn a_watch_reads_what_current_reads_even_for_names_written_after_it() {
        let g = Generations::default();
        let tables = vec!["app.users".to_string(), "other.t".to_string()];
        g.bump("app.users");
        let w = g.watch(&tables);
        let mut out = Vec::new();
        g.read(&w, &mut out);
        assert_eq!(out, g.current(&tables));
        // Names with no counter when the watch was made.
        g.bump("other.t");
        g.bump("app.");
        g.bump("app.users");
        assert!(!g.is_fresh(&w));
        g.read(&w, &mut out);
        assert_eq!(out, g.current(&tables));
        assert_eq!(out, vec![2, 1, 1, 0]);
        let w = g.watch(&tables);
        assert!(g.is_fresh(&w));
        g.bump("app.users");
        g.read(&w, &mut out);
        assert_eq!(out, g.current(&tables));
    }
}
