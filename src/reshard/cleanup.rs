//! What is left where it no longer belongs: `complete` deletes the moved rows from their old
//! shards (after the cutover, once no rollback is wanted); `cancel` (before it) and a rollback
//! (after it) delete the copies from the new owners. Both go in primary-key chunks with a pause
//! between them and wait while the shard's replicas lag, so the application keeps its pace.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Params, Value};

use super::copy::TableShape;
use super::manager::{lock, ReshardError};
use super::state::{Direction, Phase};
use super::workflow::{copy_err, Runner, CHUNK};

/// Pause between delete chunks.
const BREATHE: Duration = Duration::from_millis(5);

pub async fn complete(runner: Arc<Runner>) -> Result<(), ReshardError> {
    let _op = runner.op.lock().await;
    let phase = runner.phase();
    if phase != Phase::Switched {
        return Err(ReshardError::Conflict(format!(
            "keyspace {}: complete runs after the cutover (phase switched); the workflow is {phase:?}",
            runner.keyspace()
        )));
    }
    runner.update(|w| w.phase = Phase::Completing).await?;
    let me = runner.clone();
    runner.background("complete", async move { run_complete(me).await })
}

pub async fn run_complete(runner: Arc<Runner>) {
    runner.stop_streams(Direction::Reverse).await;
    let copies = lock(&runner.state).tables.clone();
    for t in copies.iter().filter(|t| t.kind == "sharded") {
        let moves = runner.mover(&t.source, &t.target);
        if let Err(e) = delete_on(&runner, &t.source, &t.table, &*moves).await {
            runner.fail(&e).await;
            return;
        }
    }
    forget_positions(&runner).await;
    let _ = runner.update(|w| w.phase = Phase::Completed).await;
    let deleted = lock(&runner.state).rows_deleted;
    runner.event(format!(
        "completed: {deleted} moved rows deleted from their old shards"
    ));
}

pub async fn cancel(runner: Arc<Runner>) -> Result<(), ReshardError> {
    let _op = runner.op.lock().await;
    let phase = runner.phase();
    if phase.switched() || phase.is_final() && phase != Phase::Failed {
        return Err(ReshardError::Conflict(format!(
            "keyspace {}: cancel is for a workflow before its cutover; it is {phase:?}{}",
            runner.keyspace(),
            if phase.switched() {
                " (use reshard rollback)"
            } else {
                ""
            }
        )));
    }
    let _ = runner.stop.send(true);
    let task = lock(&runner.background).take();
    if let Some(t) = task {
        let _ = t.await;
    }
    runner.stop_streams(Direction::Forward).await;
    runner.update(|w| w.phase = Phase::Cancelled).await?;
    runner.event("cancelled; deleting the copied rows from the targets");
    let me = runner.clone();
    *lock(&runner.background) = Some(tokio::spawn(async move { remove_copies(&me).await }));
    Ok(())
}

/// After a rollback: the new owners' copies go.
pub fn after_rollback(runner: Arc<Runner>) {
    let me = runner.clone();
    let _ = runner.background("the rollback's cleanup", async move {
        me.stop_streams(Direction::Reverse).await;
        remove_copies(&me).await;
    });
}

/// Deletes the moving rows from the targets of the workflow's copies (their owners never
/// changed, or changed back).
async fn remove_copies(runner: &Arc<Runner>) {
    let copies = lock(&runner.state).tables.clone();
    for t in copies.iter().filter(|t| t.kind == "sharded") {
        let moves = runner.mover(&t.source, &t.target);
        if let Err(e) = delete_on(runner, &t.target, &t.table, &*moves).await {
            runner.event(format!(
                "deleting the copies of {} on {}: {e}",
                t.table, t.target
            ));
            return;
        }
    }
    forget_positions(runner).await;
    let deleted = lock(&runner.state).rows_deleted;
    runner.event(format!("{deleted} copied rows deleted from the targets"));
    let _ = runner.save().await;
}

/// Drops the streams' stored positions from their targets.
async fn forget_positions(runner: &Runner) {
    let streams = lock(&runner.state).streams.clone();
    for s in streams {
        if let Ok(mut c) = runner.connect_shard(&s.target).await {
            let _ = c
                .exec_drop(
                    format!(
                        "DELETE FROM {} WHERE stream = ?",
                        super::apply::POSITION_TABLE
                    ),
                    (&s.name,),
                )
                .await;
            let _ = c.disconnect().await;
        }
    }
}

/// Deletes `table`'s rows whose key hash satisfies `moves` on `shard`'s primary.
async fn delete_on(
    runner: &Runner,
    shard: &str,
    table: &str,
    moves: &(dyn Fn(u64) -> bool + Sync),
) -> Result<(), ReshardError> {
    let addr = runner.primary_of(shard).unwrap_or_default();
    let mut conn = runner.connect_shard(shard).await?;
    let exists: Option<u64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (runner.keyspace(), table),
        )
        .await
        .map_err(|e| ReshardError::Failed(format!("{addr}: {e}")))?;
    if exists.unwrap_or(0) == 0 {
        return Ok(());
    }
    let shape = super::copying::shape_of(runner, &mut conn, &addr, table).await?;
    let ks = runner.keyspace();
    let mut after: Option<Vec<Value>> = None;
    let stopped = runner.stop.subscribe();
    loop {
        if !runner.until_coordinating(&stopped).await {
            break;
        }
        let rows = shape
            .read_chunk(&mut conn, &addr, after.as_deref(), CHUNK)
            .await
            .map_err(copy_err)?;
        let Some(last) = rows.last().map(|r| shape.key_of(r)) else {
            break;
        };
        let keys: Vec<Vec<Value>> = rows
            .iter()
            .filter(|r| shape.key_hash(r).is_some_and(moves))
            .map(|r| shape.key_of(r))
            .collect();
        if !keys.is_empty() {
            let n = delete_keys(&mut conn, &addr, &shape, keys).await?;
            runner.edit(|w| w.rows_deleted += n);
            metrics::counter!("shardgate_reshard_rows_deleted_total", "keyspace" => ks.clone())
                .increment(n);
        }
        if rows.len() < CHUNK {
            break;
        }
        after = Some(last);
        tokio::time::sleep(BREATHE).await;
    }
    let _ = runner.save().await;
    let _ = conn.disconnect().await;
    Ok(())
}

async fn delete_keys(
    conn: &mut Conn,
    server: &str,
    shape: &TableShape,
    keys: Vec<Vec<Value>>,
) -> Result<u64, ReshardError> {
    let sql = shape.delete_rows(keys.len());
    let params: Vec<Value> = keys.into_iter().flatten().collect();
    conn.exec_drop(sql, Params::Positional(params))
        .await
        .map_err(|e| ReshardError::Failed(format!("{server}: deleting moved rows: {e}")))?;
    Ok(conn.affected_rows())
}
