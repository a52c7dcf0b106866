//! Verify: the moved rows compared between their source and their new owner, per primary-key
//! chunk, listing differences by primary key. Both sides must be current at one position when
//! a chunk is compared (the catch-up applied up to the source's position, and writes to the
//! chunk's keys held or done): this module compares, the workflow orders.

use mysql_async::prelude::*;
use mysql_async::{Params, Row, Value};

use super::copy::{sql_err, CopyError, Side, TableShape};

/// What one chunk's comparison found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkCheck {
    /// Rows of the chunk's key range on the source (all of them), and those that move.
    pub source_rows: usize,
    pub moving_rows: usize,
    /// Rows of the range on the target whose keys move there from this source.
    pub target_rows: usize,
    /// Primary keys (as SQL literals) of moving rows missing on the target, rows on the target
    /// that should not be there, and rows whose values differ.
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub different: Vec<String>,
    /// Where the next chunk starts; `None`: the table is done.
    pub last_key: Option<Vec<Value>>,
}

impl ChunkCheck {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

fn key_text(key: &[Value]) -> String {
    key.iter()
        .map(|v| v.as_sql(true))
        .collect::<Vec<_>>()
        .join(",")
}

/// Compares the moving rows of the next chunk of `shape` (after `after`, up to `limit` source
/// rows) with the target's rows of the same key range.
pub async fn verify_chunk(
    source: &mut Side<'_>,
    target: &mut Side<'_>,
    shape: &TableShape,
    after: Option<&[Value]>,
    limit: usize,
    moves: &(dyn Fn(u64) -> bool + Sync),
) -> Result<ChunkCheck, CopyError> {
    let limit = limit.max(1);
    let rows = shape
        .read_chunk(source.conn, source.name, after, limit)
        .await?;
    let last = rows.last().map(|r| shape.key_of(r));
    // The table's last chunk reaches to the end of the key space: a target row past the
    // source's last key is checked too.
    let bounded = rows.len() >= limit;
    let mut range: Vec<Value> = after.map(<[Value]>::to_vec).unwrap_or_default();
    if bounded {
        range.extend(last.iter().flatten().cloned());
    }
    let params = if range.is_empty() {
        Params::Empty
    } else {
        Params::Positional(range)
    };
    let on_target: Vec<Row> = target
        .conn
        .exec(shape.select_range(after.is_some(), bounded), params)
        .await
        .map_err(|e| sql_err(target.name, "reading a chunk to verify", e))?;
    // Only rows of the moving keys: the target may be an existing shard with rows of its own
    // in the same key range.
    let mut on_target: std::collections::BTreeMap<String, Vec<Value>> = on_target
        .into_iter()
        .map(Row::unwrap)
        .filter(|r| shape.key_hash(r).is_some_and(moves))
        .map(|r| (key_text(&shape.key_of(&r)), r))
        .collect();
    let mut check = ChunkCheck {
        source_rows: rows.len(),
        target_rows: on_target.len(),
        last_key: if bounded { last } else { None },
        ..Default::default()
    };
    for r in &rows {
        if !shape.key_hash(r).is_some_and(moves) {
            continue;
        }
        check.moving_rows += 1;
        let key = key_text(&shape.key_of(r));
        match on_target.remove(&key) {
            None => check.missing.push(key),
            Some(t) if t != *r => check.different.push(key),
            Some(_) => {}
        }
    }
    check.extra = on_target.into_keys().collect();
    Ok(check)
}
