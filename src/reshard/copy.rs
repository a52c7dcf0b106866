//! The copy phase of a reshard, one table at a time: the target table is created from the
//! source's definition, then the rows whose shard key changes owner are copied in primary-key
//! chunks. Each chunk is read inside its own consistent snapshot whose binlog position (as a
//! MariaDB GTID position) is known, so the catch-up knows from where the chunk is current.
//!
//! Values travel through the binary protocol both ways (a prepared SELECT, a prepared INSERT):
//! bytes of strings and BLOBs, DECIMALs as text, dates and floats arrive at the target as they
//! left the source. Inserts are `ON DUPLICATE KEY UPDATE` every column, so a chunk copied twice
//! (a resumed workflow) leaves the row as the second copy read it.

use mysql_async::prelude::*;
use mysql_async::{Conn, Params, Row, Value};

use crate::shardmap::ring::{key_hash, KeyValue};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{server}: {what}: {msg}")]
    Sql {
        server: String,
        what: String,
        msg: String,
    },
    #[error("table {0} has no primary key: the copy goes by primary-key chunks; add one")]
    NoPrimaryKey(String),
    #[error("table {table} has no column {column} (its shard key)")]
    NoKeyColumn { table: String, column: String },
    #[error("{server}: the binlog position of the snapshot is unknown ({why}): is log_bin on, and was the binlog purged?")]
    NoPosition { server: String, why: String },
}

pub(crate) fn sql_err(server: &str, what: &str, e: impl std::fmt::Display) -> CopyError {
    CopyError::Sql {
        server: server.to_string(),
        what: what.to_string(),
        msg: e.to_string(),
    }
}

pub use crate::table_def::ident;

/// What the copy needs to know about one table, read from the source.
#[derive(Debug, Clone, PartialEq)]
pub struct TableShape {
    pub schema: String,
    pub table: String,
    /// Every stored column (generated ones left out: the target computes them), in order.
    pub columns: Vec<String>,
    /// Primary key columns, in key order: indexes into `columns`.
    pub primary_key: Vec<usize>,
    /// The shard key column: an index into `columns`, and whether its type is numeric (its
    /// stored text routes as a number literal would).
    pub key: usize,
    pub key_numeric: bool,
}

impl TableShape {
    /// Reads the shape of `schema.table` from `conn` (on `server`, for errors).
    pub async fn read(
        conn: &mut Conn,
        server: &str,
        schema: &str,
        table: &str,
        key_column: &str,
    ) -> Result<TableShape, CopyError> {
        let def = crate::table_def::read(conn, schema, table)
            .await
            .map_err(|e| sql_err(server, "reading the columns", e))?
            .unwrap_or_default();
        let stored: Vec<&crate::table_def::ColumnDef> =
            def.columns.iter().filter(|c| !c.generated).collect();
        let columns: Vec<String> = stored.iter().map(|c| c.name.clone()).collect();
        let pk = def.primary_key;
        if pk.is_empty() {
            return Err(CopyError::NoPrimaryKey(format!("{schema}.{table}")));
        }
        let find = |name: &str| columns.iter().position(|c| c.eq_ignore_ascii_case(name));
        let primary_key: Vec<usize> = pk.iter().filter_map(|c| find(c)).collect();
        if primary_key.len() != pk.len() {
            return Err(CopyError::NoPrimaryKey(format!(
                "{schema}.{table} (its primary key uses a generated column)"
            )));
        }
        let key = find(key_column).ok_or_else(|| CopyError::NoKeyColumn {
            table: format!("{schema}.{table}"),
            column: key_column.to_string(),
        })?;
        let numeric = [
            "tinyint",
            "smallint",
            "mediumint",
            "int",
            "bigint",
            "decimal",
            "float",
            "double",
            "bit",
            "year",
        ];
        let key_numeric = numeric.contains(&stored[key].data_type.as_str());
        Ok(TableShape {
            schema: schema.to_string(),
            table: table.to_string(),
            columns,
            primary_key,
            key,
            key_numeric,
        })
    }

    fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.table))
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn pk_list(&self) -> String {
        self.primary_key
            .iter()
            .map(|&i| ident(&self.columns[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The next chunk's SELECT: after `after` (a primary key) when given.
    fn select(&self, after: bool, limit: usize) -> String {
        let pk = self.pk_list();
        let wher = if after {
            let marks = vec!["?"; self.primary_key.len()].join(", ");
            format!(" WHERE ({pk}) > ({marks})")
        } else {
            String::new()
        };
        format!(
            "SELECT {} FROM {}{wher} ORDER BY {pk} LIMIT {limit}",
            self.column_list(),
            self.qualified()
        )
    }

    /// The rows with a primary key in `(after, last]`: from the start when `after` is false,
    /// to the end when `last` is.
    pub(crate) fn select_range(&self, after: bool, last: bool) -> String {
        let pk = self.pk_list();
        let marks = vec!["?"; self.primary_key.len()].join(", ");
        let mut conds = Vec::new();
        if after {
            conds.push(format!("({pk}) > ({marks})"));
        }
        if last {
            conds.push(format!("({pk}) <= ({marks})"));
        }
        let wher = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        format!(
            "SELECT {} FROM {}{wher} ORDER BY {pk}",
            self.column_list(),
            self.qualified()
        )
    }

    /// The next chunk of rows on `conn` (`server`, for errors): up to `limit` after `after`,
    /// in primary-key order.
    pub(crate) async fn read_chunk(
        &self,
        conn: &mut Conn,
        server: &str,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Vec<Value>>, CopyError> {
        let params = match after {
            Some(k) => Params::Positional(k.to_vec()),
            None => Params::Empty,
        };
        let rows: Vec<Row> = conn
            .exec(self.select(after.is_some(), limit), params)
            .await
            .map_err(|e| sql_err(server, "reading a chunk", e))?;
        Ok(rows.into_iter().map(Row::unwrap).collect())
    }

    /// A row's primary key values.
    pub fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.primary_key
            .iter()
            .filter_map(|&i| row.get(i).cloned())
            .collect()
    }

    /// An idempotent INSERT of `rows` rows, for other modules.
    pub(crate) fn insert_rows(&self, rows: usize) -> String {
        self.insert(rows)
    }

    /// An idempotent INSERT of `rows` rows.
    fn insert(&self, rows: usize) -> String {
        let one = format!("({})", vec!["?"; self.columns.len()].join(", "));
        let update = self
            .columns
            .iter()
            .map(|c| format!("{0} = VALUES({0})", ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {update}",
            self.qualified(),
            self.column_list(),
            vec![one; rows].join(", ")
        )
    }

    /// The ring hash of a row's shard key, as the planner would route the row (`None` for a
    /// NULL key, which has no shard).
    pub fn key_hash(&self, row: &[Value]) -> Option<u64> {
        let v = row.get(self.key)?;
        let text;
        let kv = match v {
            Value::NULL => return None,
            Value::Int(i) => KeyValue::Int(i128::from(*i)),
            Value::UInt(u) => KeyValue::Int(i128::from(*u)),
            Value::Double(d) => KeyValue::from_double(*d)?,
            Value::Float(f) => KeyValue::from_double(f64::from(*f))?,
            Value::Bytes(b) if self.key_numeric => KeyValue::from_number_text(b),
            Value::Bytes(b) => KeyValue::from_string_content(b),
            other => {
                text = other.as_sql(true).into_bytes();
                KeyValue::Bytes(&text)
            }
        };
        Some(key_hash(&kv))
    }
}

/// A server connection and the name errors give it.
pub struct Side<'a> {
    pub conn: &'a mut Conn,
    pub name: &'a str,
}

/// Creates the table on the target from the source's definition, unless it exists. True if it
/// was created.
pub async fn create_like(
    source: &mut Side<'_>,
    target: &mut Side<'_>,
    schema: &str,
    table: &str,
) -> Result<bool, CopyError> {
    let (source_name, target_name) = (source.name, target.name);
    let (source, target) = (&mut *source.conn, &mut *target.conn);
    let exists: Option<u64> = target
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await
        .map_err(|e| sql_err(target_name, "looking for the table", e))?;
    if exists.unwrap_or(0) > 0 {
        return Ok(false);
    }
    let q = format!("SHOW CREATE TABLE {}.{}", ident(schema), ident(table));
    // Bytes, not text: a binary column's DEFAULT is printed as its raw bytes, which need not
    // be UTF-8 (and mysql_async panics on a row it cannot convert).
    let row: Option<(Vec<u8>, Vec<u8>)> = source
        .query_first(&q)
        .await
        .map_err(|e| sql_err(source_name, &q, e))?;
    let Some((_, ddl)) = row else {
        return Err(sql_err(source_name, &q, "no such table"));
    };
    target
        .query_drop(format!("CREATE DATABASE IF NOT EXISTS {}", ident(schema)))
        .await
        .map_err(|e| sql_err(target_name, "creating the database", e))?;
    // SHOW CREATE TABLE names the table unqualified: run it in the schema.
    target
        .query_drop(format!("USE {}", ident(schema)))
        .await
        .map_err(|e| sql_err(target_name, "USE", e))?;
    target
        .query_drop(&ddl)
        .await
        .map_err(|e| sql_err(target_name, "creating the table", e))?;
    Ok(true)
}

/// Which binlog position a chunk reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The snapshot's own (`binlog_snapshot_file/position` through `BINLOG_GTID_POS`). Exact,
    /// but MariaDB 10.11 reads the binlog file from its start to find it: 90-330 ms per chunk
    /// on a few hundred MB of binlog here (benches/reshard_copy/README.md), which then sets the
    /// copy's pace.
    Exact,
    /// `@@gtid_binlog_pos` read just before the snapshot: at or before it (a transaction
    /// committing in between is in the snapshot but not in the position). Cheap. Enough when
    /// the catch-up starts at or before every chunk's position and runs past the last one: its
    /// changes are applied idempotently, so replaying what a chunk already holds is harmless.
    AtOrBefore,
}

/// What one chunk did.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Rows read from the source (all of them, moving or not).
    pub read: usize,
    /// Rows written to the target (those whose key moves there).
    pub copied: usize,
    /// The last primary key read: where the next chunk starts. `None`: the table is done.
    pub last_key: Option<Vec<Value>>,
    /// The source's binlog position (MariaDB GTID) the chunk is current at, or one at or
    /// before it (see [`Position`]).
    pub position: String,
}

/// The GTID position of the consistent snapshot open on `conn` (`Position::Exact`).
async fn snapshot_position(conn: &mut Conn, server: &str) -> Result<String, CopyError> {
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| sql_err(server, "reading the snapshot's position", e))?;
    let get = |name: &str| {
        status
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (file, pos) = (get("binlog_snapshot_file"), get("binlog_snapshot_position"));
    let position: Option<String> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), pos.clone()))
        .await
        .map_err(|e| sql_err(server, "BINLOG_GTID_POS", e))?;
    position.ok_or_else(|| CopyError::NoPosition {
        server: server.to_string(),
        why: format!("BINLOG_GTID_POS('{file}', {pos}) is NULL"),
    })
}

/// Copies one chunk of `shape` from `source` to `target`: up to `limit` rows after `after`,
/// read in a consistent snapshot, keeping those for which `moves(hash)` holds; `position` says
/// which binlog position the chunk reports.
pub async fn copy_chunk(
    source: &mut Side<'_>,
    target: &mut Side<'_>,
    shape: &TableShape,
    after: Option<&[Value]>,
    limit: usize,
    moves: &(dyn Fn(u64) -> bool + Sync),
    position: Position,
) -> Result<Chunk, CopyError> {
    let (source_name, target_name) = (source.name, target.name);
    let (source, target) = (&mut *source.conn, &mut *target.conn);
    let limit = limit.max(1);
    // Read before the snapshot starts: every transaction it names is in the snapshot.
    let before: Option<String> = match position {
        Position::Exact => None,
        Position::AtOrBefore => Some(
            source
                .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
                .await
                .map_err(|e| sql_err(source_name, "reading gtid_binlog_pos", e))?
                .unwrap_or_default(),
        ),
    };
    source
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(|e| sql_err(source_name, "starting a snapshot", e))?;
    let read = async {
        let position = match before {
            Some(p) => p,
            None => snapshot_position(source, source_name).await?,
        };
        let rows = shape.read_chunk(source, source_name, after, limit).await?;
        Ok::<_, CopyError>((position, rows))
    };
    let r = read.await;
    // The snapshot is only for reading: end it whatever happened.
    let _ = source.query_drop("COMMIT").await;
    let (position, rows) = r?;
    let last_key = if rows.len() < limit {
        None
    } else {
        rows.last().map(|r| shape.key_of(r))
    };
    let moving: Vec<&Vec<Value>> = rows
        .iter()
        .filter(|r| shape.key_hash(r).is_some_and(moves))
        .collect();
    // A few hundred rows per statement: far below max_allowed_packet for ordinary rows, and
    // under the 65,535 placeholders a statement may have.
    let per_insert = (60_000 / shape.columns.len().max(1)).clamp(1, 500);
    for batch in moving.chunks(per_insert) {
        let params: Vec<Value> = batch.iter().flat_map(|r| r.iter().cloned()).collect();
        target
            .exec_drop(shape.insert(batch.len()), Params::Positional(params))
            .await
            .map_err(|e| sql_err(target_name, "writing a chunk", e))?;
    }
    Ok(Chunk {
        read: rows.len(),
        copied: moving.len(),
        last_key,
        position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> TableShape {
        TableShape {
            schema: "app".into(),
            table: "t`x".into(),
            columns: vec!["a".into(), "b".into(), "id".into()],
            primary_key: vec![2, 0],
            key: 2,
            key_numeric: true,
        }
    }

    #[test]
    fn statements_quote_and_page_by_the_primary_key() {
        let s = shape();
        assert_eq!(
            s.select(false, 10),
            "SELECT `a`, `b`, `id` FROM `app`.`t``x` ORDER BY `id`, `a` LIMIT 10"
        );
        assert_eq!(
            s.select(true, 10),
            "SELECT `a`, `b`, `id` FROM `app`.`t``x` WHERE (`id`, `a`) > (?, ?) ORDER BY `id`, `a` LIMIT 10"
        );
        assert_eq!(
            s.insert(2),
            "INSERT INTO `app`.`t``x` (`a`, `b`, `id`) VALUES (?, ?, ?), (?, ?, ?) ON DUPLICATE \
             KEY UPDATE `a` = VALUES(`a`), `b` = VALUES(`b`), `id` = VALUES(`id`)"
        );
    }

    #[test]
    fn a_stored_key_hashes_as_the_planner_routes_its_literal() {
        let s = shape();
        let h = |v: Value| s.key_hash(&[Value::NULL, Value::NULL, v]);
        let literal = key_hash(&KeyValue::from_number_text(b"42"));
        assert_eq!(h(Value::Int(42)), Some(literal));
        assert_eq!(h(Value::UInt(42)), Some(literal));
        assert_eq!(h(Value::Bytes(b"42.00".to_vec())), Some(literal), "DECIMAL");
        assert_eq!(h(Value::Double(42.0)), Some(literal));
        assert_eq!(h(Value::NULL), None);
        let mut text = shape();
        text.key_numeric = false;
        let t = |v: &[u8]| text.key_hash(&[Value::NULL, Value::NULL, Value::Bytes(v.to_vec())]);
        assert_eq!(t(b"42"), Some(literal), "'42' routes as 42");
        assert_eq!(t(b"abc"), Some(key_hash(&KeyValue::Bytes(b"abc"))));
    }
}
