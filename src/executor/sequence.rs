//! Sequence: ids for rows inserted without their shard key. The proxy hands them out from a
//! block it reserved; a new block is claimed from the sequence table (one row `id = 0` whose
//! `next_id` is the next id to hand out) in the keyspace's `sequence_keyspace`, on a
//! connection of its own, never the session's: the block must not be part of (or rolled back
//! with) the client's transaction.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::backend::{BackendError, ConnKey, Pools};
use crate::protocol::consts::com;
use crate::protocol::packet::ErrInfo;

/// Ids claimed from a sequence table at a time (more when one INSERT needs more).
pub const BLOCK: i64 = 1000;

/// Ids claimed and not yet handed out, per sequence: [next, end).
#[derive(Default)]
pub struct Blocks(Mutex<HashMap<String, (i64, i64)>>);

impl Blocks {
    /// `n` consecutive ids from the reserved block, if it holds that many.
    pub fn take(&self, sequence: &str, n: i64) -> Option<Vec<i64>> {
        let mut blocks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let block = blocks.get_mut(sequence)?;
        if block.1 - block.0 < n {
            return None;
        }
        let ids = (block.0..block.0 + n).collect();
        block.0 += n;
        Some(ids)
    }

    /// Keeps a newly claimed [start, end), unless another session's claim already left
    /// enough for `n`.
    fn keep(&self, sequence: &str, start: i64, end: i64, n: i64) {
        let mut blocks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let block = blocks.entry(sequence.to_string()).or_insert((0, 0));
        if block.1 - block.0 < n {
            *block = (start, end);
        }
    }
}

/// Where a sequence's table lives and who claims from it.
pub struct SequenceTable<'a> {
    pub keyspace: &'a str,
    pub addr: &'a str,
    pub user: &'a str,
    pub password: &'a crate::protocol::auth::Secret,
    pub key: ConnKey,
}

#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("shardgate: sequence {0} needs `sequence_keyspace` in this keyspace's shard map")]
    NoKeyspace(String),
    #[error("shardgate: sequence table {keyspace}.{sequence} has no row with id = 0 (create it with next_id = 1)")]
    NoRow { keyspace: String, sequence: String },
    #[error("shardgate: the sequence block was used up by other sessions meanwhile; retry")]
    UsedUp,
    #[error("shardgate: too many rows for one INSERT with generated keys")]
    TooMany,
    #[error("{}", .0.message)]
    Database(ErrInfo),
    #[error(transparent)]
    Connect(#[from] BackendError),
}

/// `n` ids from `sequence`: from the reserved block, else from a block claimed from `table`
/// (`None`: the keyspace names no sequence keyspace).
pub async fn take_ids(
    pools: &Pools,
    blocks: &Blocks,
    sequence: &str,
    n: usize,
    table: Option<SequenceTable<'_>>,
) -> Result<Vec<i64>, SequenceError> {
    let want = i64::try_from(n).map_err(|_| SequenceError::TooMany)?;
    if let Some(ids) = blocks.take(sequence, want) {
        return Ok(ids);
    }
    let table = table.ok_or_else(|| SequenceError::NoKeyspace(sequence.to_string()))?;
    let size = want.max(BLOCK);
    let sql = format!(
        "UPDATE {}.{} SET next_id = LAST_INSERT_ID(next_id + {size}) WHERE id = 0",
        crate::table_def::ident(table.keyspace),
        crate::table_def::ident(sequence)
    );
    let mut conn = pools
        .get(
            table.addr,
            table.user,
            table.password,
            table.key,
            Some(table.keyspace),
            0,
        )
        .await?;
    conn.ensure_db(Some(table.keyspace))
        .await?
        .map_err(SequenceError::Database)?;
    let ok = conn
        .simple_command(com::QUERY, sql.as_bytes())
        .await?
        .map_err(SequenceError::Database)?;
    let end = i64::try_from(ok.last_insert_id).unwrap_or(0);
    if ok.affected_rows == 0 || end < size {
        return Err(SequenceError::NoRow {
            keyspace: table.keyspace.to_string(),
            sequence: sequence.to_string(),
        });
    }
    blocks.keep(sequence, end - size, end, want);
    blocks.take(sequence, want).ok_or(SequenceError::UsedUp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_block_in_order_until_it_runs_short() {
        let blocks = Blocks::default();
        assert_eq!(blocks.take("s", 1), None);
        blocks.keep("s", 1, 4, 2);
        assert_eq!(blocks.take("s", 2), Some(vec![1, 2]));
        assert_eq!(blocks.take("s", 2), None, "one id left, two asked");
        assert_eq!(blocks.take("s", 1), Some(vec![3]));
    }

    #[test]
    fn a_claim_does_not_replace_a_block_another_session_refilled() {
        let blocks = Blocks::default();
        blocks.keep("s", 1001, 2001, 5);
        // A second session claimed too and arrives after the refill: its block is not kept
        // over the first (those ids are lost, never handed out twice).
        blocks.keep("s", 2001, 3001, 5);
        assert_eq!(blocks.take("s", 1), Some(vec![1001]));
    }
}
