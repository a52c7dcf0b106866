//! The copy phase of a workflow: every table copy in turn, chunk by chunk, persisting the last
//! copied key after each chunk; throttled while a target's replicas lag. The chunks' own
//! positions are not needed: the catch-up starts at the position read before the first chunk
//! and replays everything since, idempotently, after the copy ends (a stream running during
//! the copy could see a chunk's older snapshot land after a newer change it applied).

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::Conn;

use super::copy::{copy_chunk, create_like, Position, Side, TableShape};
use super::manager::{lock, ReshardError};
use super::state::{key_from_parts, key_to_parts, Direction, Phase};
use super::workflow::{copy_err, test_stop, Runner, CHUNK};

/// Replica lag above which the copy waits.
const MAX_TARGET_LAG: f64 = 2.0;

pub async fn run(runner: Arc<Runner>) {
    match copy_all(&runner).await {
        Ok(true) => {
            let r = runner
                .update(|w| {
                    w.phase = Phase::Running;
                    w.error = None;
                })
                .await;
            if let Err(e) = r {
                runner.fail(&e).await;
                return;
            }
            runner.event("copy done; the catch-up streams run");
            test_stop("copied");
            runner.start_streams(Direction::Forward);
        }
        Ok(false) => {}
        Err(e) => runner.fail(&e).await,
    }
}

/// False when told to stop.
async fn copy_all(runner: &Arc<Runner>) -> Result<bool, ReshardError> {
    let count = lock(&runner.state).tables.len();
    for i in 0..count {
        let t = lock(&runner.state).tables[i].clone();
        if t.done {
            continue;
        }
        if !copy_table(runner, i).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The key column TableShape needs: the shard key, or for a reference table (copied whole)
/// its first primary key column.
pub(super) async fn shape_of(
    runner: &Runner,
    conn: &mut Conn,
    server: &str,
    table: &str,
) -> Result<TableShape, ReshardError> {
    let ks = runner.keyspace();
    let key = match runner.key_column(table) {
        Some(k) => k,
        None => {
            let k: Option<String> = conn
                .exec_first(
                    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE \
                     TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                     ORDER BY ORDINAL_POSITION LIMIT 1",
                    (&ks, table),
                )
                .await
                .map_err(|e| ReshardError::Failed(format!("{server}: {table}: {e}")))?;
            k.ok_or_else(|| ReshardError::Failed(format!("table {ks}.{table} has no primary key")))?
        }
    };
    TableShape::read(conn, server, &ks, table, &key)
        .await
        .map_err(copy_err)
}

async fn copy_table(runner: &Arc<Runner>, i: usize) -> Result<bool, ReshardError> {
    let t = lock(&runner.state).tables[i].clone();
    let ks = runner.keyspace();
    let (src_addr, dst_addr) = (
        runner.primary_of(&t.source).unwrap_or_default(),
        runner.primary_of(&t.target).unwrap_or_default(),
    );
    let mut src = runner.connect_shard(&t.source).await?;
    let mut dst = runner.connect_shard(&t.target).await?;
    let shape = shape_of(runner, &mut src, &src_addr, &t.table).await?;
    create_like(
        &mut Side {
            conn: &mut src,
            name: &src_addr,
        },
        &mut Side {
            conn: &mut dst,
            name: &dst_addr,
        },
        &ks,
        &t.table,
    )
    .await
    .map_err(copy_err)?;
    let moves = if t.kind == "reference" {
        Arc::new(|_: u64| true) as Arc<dyn Fn(u64) -> bool + Send + Sync>
    } else {
        runner.mover(&t.source, &t.target)
    };
    let replicas = runner.replicas_of(&t.target);
    let mut after = match &t.last_key {
        Some(k) => Some(key_from_parts(k).ok_or_else(|| {
            ReshardError::Failed(format!(
                "the persisted last key of {} is unreadable",
                t.table
            ))
        })?),
        None => None,
    };
    let mut chunks = 0u64;
    let stopped = runner.stop.subscribe();
    loop {
        // Only the coordinator copies (see `coordination`).
        if *runner.stop.borrow() || !runner.until_coordinating(&stopped).await {
            return Ok(false);
        }
        if chunks.is_multiple_of(10) {
            throttle(runner, &replicas).await;
        }
        chunks += 1;
        let chunk = copy_chunk(
            &mut Side {
                conn: &mut src,
                name: &src_addr,
            },
            &mut Side {
                conn: &mut dst,
                name: &dst_addr,
            },
            &shape,
            after.as_deref(),
            CHUNK,
            &*moves,
            Position::AtOrBefore,
        )
        .await
        .map_err(copy_err)?;
        metrics::counter!("shardgate_reshard_rows_copied_total", "keyspace" => ks.clone())
            .increment(chunk.copied as u64);
        let done = chunk.last_key.is_none();
        let last = chunk.last_key.as_deref().map(key_to_parts);
        runner
            .update(|w| {
                let tc = &mut w.tables[i];
                tc.rows_read += chunk.read as u64;
                tc.rows_copied += chunk.copied as u64;
                tc.done = done;
                if last.is_some() {
                    tc.last_key = last;
                }
            })
            .await?;
        test_stop("copying");
        if done {
            let _ = src.disconnect().await;
            let _ = dst.disconnect().await;
            return Ok(true);
        }
        after = chunk.last_key;
    }
}

/// Waits while any of the target's replicas lags more than `MAX_TARGET_LAG` (at most 30 s at a
/// time, so a dead replica slows the copy but does not stop it).
async fn throttle(runner: &Runner, replicas: &[String]) {
    let creds = runner.creds();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for r in replicas {
        let Ok(mut c) = super::workflow::connect(r, &creds).await else {
            continue;
        };
        loop {
            let lag: Option<f64> = match c.query_iter("SHOW SLAVE STATUS").await {
                Ok(mut res) => {
                    let rows: Vec<mysql_async::Row> = res.collect().await.unwrap_or_default();
                    rows.first()
                        .and_then(|row| row.get_opt::<Option<f64>, _>("Seconds_Behind_Master"))
                        .and_then(Result::ok)
                        .flatten()
                }
                Err(_) => None,
            };
            if lag.is_none_or(|l| l <= MAX_TARGET_LAG) || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = c.disconnect().await;
    }
}
