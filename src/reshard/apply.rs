//! The catch-up's applier: row changes read from a source primary's binlog (`binlog`) applied
//! to the new owner of their keys, one source transaction per target transaction, with the
//! stream's position written in the same transaction (`_shardgate.reshard_position`): after a
//! crash the stream restarts from the stored position and nothing is applied twice or skipped.
//!
//! Only keys that move from this source to this target matter: an insert of one is upserted,
//! a delete deletes it, an update that keeps it moving is upserted (deleting the old primary
//! key when the key itself changed), and an update that takes a row out of the moving arcs is
//! a delete here (its new owner gets it from its own stream or already has it).

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::*;
use mysql_async::{Conn, Params, Value};

use super::binlog::{Change, ChangeKind, TableInfo};
use super::copy::{ident, sql_err, CopyError, TableShape};

/// Where streams keep their positions, on every target.
pub const POSITION_TABLE: &str = "`_shardgate`.`reshard_position`";

/// What one change does to the target.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// A row, in its shape's column order.
    Upsert(usize, Vec<Value>),
    /// A primary key.
    Delete(usize, Vec<Value>),
}

/// Rows per applied statement.
const MAX_BATCH: usize = 200;

impl Op {
    /// (0 upsert / 1 delete, shape): what may share one statement.
    fn group(&self) -> (u8, usize) {
        match self {
            Op::Upsert(s, _) => (0, *s),
            Op::Delete(s, _) => (1, *s),
        }
    }

    fn values(&self) -> &[Value] {
        match self {
            Op::Upsert(_, v) | Op::Delete(_, v) => v,
        }
    }
}

/// How a binlog table maps onto a copy shape: for each shape column, its index in the row
/// image.
struct Mapping {
    shape: usize,
    columns: Vec<usize>,
}

/// Applies one stream (one source to one target).
pub struct Applier {
    stream: String,
    shapes: Vec<TableShape>,
    moves: Box<dyn Fn(u64) -> bool + Send + Sync>,
    /// By `(schema, table)` and the `TableInfo` it was built for (a table map after an ALTER
    /// is another `Arc`).
    mappings: HashMap<(String, String), (Arc<TableInfo>, Arc<Mapping>)>,
    pending: Vec<Op>,
}

/// What a commit applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub upserts: usize,
    pub deletes: usize,
}

impl Applier {
    /// A stream named `stream` (unique per source and target, e.g. `app s0->s2`) applying the
    /// changes of `shapes`' tables whose key hash satisfies `moves`.
    pub fn new(
        stream: &str,
        shapes: Vec<TableShape>,
        moves: impl Fn(u64) -> bool + Send + Sync + 'static,
    ) -> Applier {
        Applier {
            stream: stream.to_string(),
            shapes,
            moves: Box::new(moves),
            mappings: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Readies `target` (the connection `commit` will use): the position table, created if
    /// needed, and the session's time zone set to UTC, since the stream gives TIMESTAMP values
    /// in UTC.
    pub async fn prepare(target: &mut Conn, target_name: &str) -> Result<(), CopyError> {
        let err = |e| sql_err(target_name, "creating the stream position table", e);
        target
            .query_drop("SET time_zone = '+00:00'")
            .await
            .map_err(err)?;
        target
            .query_drop("CREATE DATABASE IF NOT EXISTS `_shardgate`")
            .await
            .map_err(err)?;
        target
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {POSITION_TABLE} (stream VARCHAR(255) PRIMARY KEY, \
                 position TEXT NOT NULL, updated TIMESTAMP(6) NOT NULL DEFAULT \
                 CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))"
            ))
            .await
            .map_err(err)
    }

    /// The position `stream` stored on `target`, if it applied anything yet.
    pub async fn stored_position(
        target: &mut Conn,
        target_name: &str,
        stream: &str,
    ) -> Result<Option<String>, CopyError> {
        target
            .exec_first(
                format!("SELECT position FROM {POSITION_TABLE} WHERE stream = ?"),
                (stream,),
            )
            .await
            .map_err(|e| sql_err(target_name, "reading the stream position", e))
    }

    fn mapping(&mut self, table: &Arc<TableInfo>) -> Option<Arc<Mapping>> {
        let key = (table.schema.clone(), table.table.clone());
        if let Some((info, m)) = self.mappings.get(&key) {
            if Arc::ptr_eq(info, table) || **info == **table {
                return Some(m.clone());
            }
        }
        let shape = self.shapes.iter().position(|s| {
            s.schema.eq_ignore_ascii_case(&table.schema)
                && s.table.eq_ignore_ascii_case(&table.table)
        })?;
        let columns: Option<Vec<usize>> = self.shapes[shape]
            .columns
            .iter()
            .map(|c| table.index_of(c))
            .collect();
        let m = Arc::new(Mapping {
            shape,
            columns: columns?,
        });
        self.mappings.insert(key, (table.clone(), m.clone()));
        Some(m)
    }

    /// Takes one change of the current source transaction (kept until `commit`).
    pub fn add(&mut self, change: &Change) -> Result<(), CopyError> {
        let Some(m) = self.mapping(&change.table) else {
            // A table outside the keyspace's copy, or one whose columns no longer match.
            if self.shapes.iter().any(|s| {
                s.schema.eq_ignore_ascii_case(&change.table.schema)
                    && s.table.eq_ignore_ascii_case(&change.table.table)
            }) {
                return Err(sql_err(
                    &self.stream,
                    &format!(
                        "applying a change of {}.{}",
                        change.table.schema, change.table.table
                    ),
                    "its columns no longer match the copied table's (an ALTER during the reshard?)",
                ));
            }
            return Ok(());
        };
        let shape = &self.shapes[m.shape];
        let row = |image: &[Value]| -> Vec<Value> {
            m.columns
                .iter()
                .map(|&i| image.get(i).cloned().unwrap_or(Value::NULL))
                .collect()
        };
        let moving = |r: &[Value]| shape.key_hash(r).is_some_and(|h| (self.moves)(h));
        let ops: Vec<Op> = match &change.kind {
            ChangeKind::Insert { after } => {
                let a = row(after);
                if moving(&a) {
                    vec![Op::Upsert(m.shape, a)]
                } else {
                    vec![]
                }
            }
            ChangeKind::Delete { before } => {
                let b = row(before);
                if moving(&b) {
                    vec![Op::Delete(m.shape, shape.key_of(&b))]
                } else {
                    vec![]
                }
            }
            ChangeKind::Update { before, after } => {
                let (b, a) = (row(before), row(after));
                let (mb, ma) = (moving(&b), moving(&a));
                let (kb, ka) = (shape.key_of(&b), shape.key_of(&a));
                let mut ops = Vec::new();
                if mb && (!ma || kb != ka) {
                    ops.push(Op::Delete(m.shape, kb));
                }
                if ma {
                    ops.push(Op::Upsert(m.shape, a));
                }
                ops
            }
        };
        self.pending.extend(ops);
        Ok(())
    }

    /// Applies the changes taken since the last commit (whole source transactions: the caller
    /// may gather several) and `position` (the stream's position including them) in one target
    /// transaction. With nothing to apply it still moves the position (one statement).
    pub async fn commit(
        &mut self,
        target: &mut Conn,
        target_name: &str,
        position: &str,
    ) -> Result<Applied, CopyError> {
        let ops = std::mem::take(&mut self.pending);
        let err = |what: &str, e| sql_err(target_name, what, e);
        let mut applied = Applied::default();
        let mut tx = target
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .map_err(|e| err("starting a transaction", e))?;
        // Runs of the same kind on the same table go as one statement (a multi-row upsert,
        // whose later rows win over earlier ones of the same key, or one DELETE ... IN): in
        // order, so a delete and a re-insert of one key keep their order.
        let mut i = 0;
        while i < ops.len() {
            let (kind, shape) = ops[i].group();
            let mut j = i;
            while j < ops.len() && ops[j].group() == (kind, shape) && j - i < MAX_BATCH {
                j += 1;
            }
            let run = &ops[i..j];
            let shape_ref = &self.shapes[shape];
            let params: Vec<Value> = run
                .iter()
                .flat_map(|op| op.values().iter().cloned())
                .collect();
            if kind == 0 {
                tx.exec_drop(shape_ref.insert_rows(run.len()), Params::Positional(params))
                    .await
                    .map_err(|e| err("applying inserts and updates", e))?;
                applied.upserts += run.len();
            } else {
                tx.exec_drop(shape_ref.delete_rows(run.len()), Params::Positional(params))
                    .await
                    .map_err(|e| err("applying deletes", e))?;
                applied.deletes += run.len();
            }
            i = j;
        }
        tx.exec_drop(
            format!(
                "INSERT INTO {POSITION_TABLE} (stream, position) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE position = VALUES(position)"
            ),
            (&self.stream, position),
        )
        .await
        .map_err(|e| err("storing the stream position", e))?;
        tx.commit().await.map_err(|e| err("committing", e))?;
        Ok(applied)
    }

    /// Changes taken and not yet applied.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether the current source transaction changed anything this stream applies.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets the current source transaction's changes (the stream broke before its commit).
    pub fn discard(&mut self) {
        self.pending.clear();
    }
}

impl TableShape {
    /// DELETE of `n` rows by primary key.
    pub(crate) fn delete_rows(&self, n: usize) -> String {
        let pk: Vec<String> = self
            .primary_key
            .iter()
            .map(|&i| ident(&self.columns[i]))
            .collect();
        let one = format!("({})", vec!["?"; pk.len()].join(", "));
        format!(
            "DELETE FROM {}.{} WHERE ({}) IN ({})",
            ident(&self.schema),
            ident(&self.table),
            pk.join(", "),
            vec![one; n].join(", ")
        )
    }
}
