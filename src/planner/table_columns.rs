//! The column order of sharded tables, for `INSERT INTO t VALUES (...)` without a column list:
//! the planner finds the shard key's value by its position. Read from the keyspace's first
//! shard (`SHOW CREATE TABLE`) by the session when a statement needs it (the planner does no
//! I/O), forgotten at
//! once on DDL through the proxy, and read again when older than [`MAX_AGE`], which bounds
//! how long DDL run around the proxy can go unseen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a table's columns are trusted before they are read again.
pub const MAX_AGE: Duration = Duration::from_secs(30);

struct Entry {
    columns: Arc<[String]>,
    read_at: Instant,
}

/// Column names per (keyspace, table), shared by every planner version of the proxy.
#[derive(Default)]
pub struct TableColumns {
    tables: RwLock<HashMap<(String, String), Entry>>,
    /// Moves whenever a table's columns change or are forgotten: cached statement shapes
    /// whose plan used a column position are keyed by it.
    generation: AtomicU64,
}

fn key(keyspace: &str, table: &str) -> (String, String) {
    (keyspace.to_string(), table.to_ascii_lowercase())
}

impl TableColumns {
    /// The columns of `table`, in the table's order, when known and fresh.
    pub fn get(&self, keyspace: &str, table: &str) -> Option<Arc<[String]>> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        let e = tables.get(&key(keyspace, table))?;
        (e.read_at.elapsed() < MAX_AGE).then(|| e.columns.clone())
    }

    /// Records `columns` as read from the server just now.
    pub fn put(&self, keyspace: &str, table: &str, columns: Vec<String>) {
        let columns: Arc<[String]> = columns.into();
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let previous = tables.insert(
            key(keyspace, table),
            Entry {
                columns: columns.clone(),
                read_at: Instant::now(),
            },
        );
        if previous.is_none_or(|p| p.columns != columns) {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets every table (after DDL: any table may have changed).
    pub fn invalidate(&self) {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        tables.clear();
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

/// The statement whose second column is `table`'s definition (`SHOW CREATE TABLE` makes no
/// temporary table on the server, where information_schema.COLUMNS makes an on-disk one: see
/// [`crate::table_def`]).
pub fn query(schema: &str, table: &str) -> String {
    crate::table_def::statement(schema, table)
}

/// The column names of [`query`]'s definition text (`None`: no such table).
pub fn parse(create: Option<&str>) -> Option<Vec<String>> {
    let def = crate::table_def::parse(create?);
    (!def.columns.is_empty()).then(|| def.columns.into_iter().map(|c| c.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_kept_per_table_and_forgotten_on_ddl() {
        let t = TableColumns::default();
        assert_eq!(t.get("app", "users"), None);
        let g0 = t.generation();
        t.put("app", "Users", vec!["id".into(), "name".into()]);
        let got = t.get("app", "USERS").expect("known");
        assert_eq!(&got[..], ["id".to_string(), "name".to_string()]);
        assert_eq!(t.get("other", "users"), None);
        let g1 = t.generation();
        assert_ne!(g0, g1);
        // The same columns read again leave cached plans valid.
        t.put("app", "users", vec!["id".into(), "name".into()]);
        assert_eq!(t.generation(), g1);
        t.put("app", "users", vec!["name".into(), "id".into()]);
        assert_ne!(t.generation(), g1);
        let g2 = t.generation();
        t.invalidate();
        assert_eq!(t.get("app", "users"), None);
        assert_ne!(t.generation(), g2);
    }

    #[test]
    fn the_query_quotes_names_and_its_answer_gives_the_columns_in_order() {
        assert_eq!(query("app", "it`s"), "SHOW CREATE TABLE `app`.`it``s`");
        let create = "CREATE TABLE `t` (\n  `b` int(11) DEFAULT NULL,\n  `id` bigint(20) NOT NULL,\n  PRIMARY KEY (`id`)\n)";
        assert_eq!(
            parse(Some(create)),
            Some(vec!["b".to_string(), "id".to_string()])
        );
        assert_eq!(parse(None), None);
        assert_eq!(parse(Some("")), None);
    }
}
