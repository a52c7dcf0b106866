//! `reshard verify`: every table copy compared chunk by chunk, source against target, while the
//! application writes. A chunk that differs is compared again once the stream has applied
//! everything the source had when the difference was seen (a write in flight, not a loss); what
//! still differs after three rounds is reported by primary key and blocks the cutover.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::Value;

use super::copy::Side;
use super::manager::{lock, ReshardError};
use super::state::{Direction, Phase, TableVerify, VerifyReport};
use super::verify::{verify_chunk, ChunkCheck};
use super::workflow::{binlog_pos, copy_err, Held, Runner, CHUNK};
use crate::ha::events::now_rfc3339;
use crate::ha::gtid::GtidPos;

/// Keys listed per kind of difference and table.
const LISTED: usize = 100;
const ROUNDS: usize = 3;
/// Tries at a quiet last round when holding the writes takes too long.
const QUIET_TRIES: usize = 5;

pub async fn start(runner: Arc<Runner>) -> Result<(), ReshardError> {
    let _op = runner.op.lock().await;
    let phase = runner.phase();
    if phase != Phase::Running {
        return Err(ReshardError::Conflict(format!(
            "verify compares while the catch-up runs (phase running); the workflow is {phase:?}"
        )));
    }
    runner
        .update(|w| {
            w.verify = Some(VerifyReport {
                state: "running".into(),
                started_at: now_rfc3339(),
                finished_at: None,
                tables: Vec::new(),
            })
        })
        .await?;
    let me = runner.clone();
    runner.background("verify", async move {
        let outcome = run(&me).await;
        let (state, msg) = match &outcome {
            Ok(true) => ("clean".to_string(), "verify: no difference".to_string()),
            Ok(false) => (
                "differences".to_string(),
                "verify found differences (see reshard status)".to_string(),
            ),
            Err(e) => (format!("failed: {e}"), format!("verify failed: {e}")),
        };
        let _ = me
            .update(|w| {
                if let Some(v) = &mut w.verify {
                    v.state = state;
                    v.finished_at = Some(now_rfc3339());
                }
            })
            .await;
        me.event(msg);
    })
}

/// True when every table copy is equal on both sides.
async fn run(runner: &Arc<Runner>) -> Result<bool, ReshardError> {
    let copies = lock(&runner.state).tables.clone();
    let mut clean = true;
    for (i, t) in copies.iter().enumerate() {
        let (src_addr, dst_addr) = (
            runner.primary_of(&t.source).unwrap_or_default(),
            runner.primary_of(&t.target).unwrap_or_default(),
        );
        let mut src = runner.connect_shard(&t.source).await?;
        let mut dst = runner.connect_shard(&t.target).await?;
        let shape = super::copying::shape_of(runner, &mut src, &src_addr, &t.table).await?;
        let moves = if t.kind == "reference" {
            Arc::new(|_: u64| true) as Arc<dyn Fn(u64) -> bool + Send + Sync>
        } else {
            runner.mover(&t.source, &t.target)
        };
        let mut report = TableVerify {
            table: t.table.clone(),
            source: t.source.clone(),
            target: t.target.clone(),
            ..Default::default()
        };
        let mut after: Option<Vec<Value>> = None;
        loop {
            if *runner.stop.borrow() {
                return Err(ReshardError::Conflict("stopped".into()));
            }
            let mut check = ChunkCheck::default();
            let mut quiet_ran = false;
            for round in 0..ROUNDS + QUIET_TRIES {
                // The last rounds compare with the keyspace's writes held: both sides at one
                // position, whatever the application does to these keys.
                let quiet = round + 1 >= ROUNDS;
                let held = if quiet {
                    match quiesce(runner, i, &mut src, &src_addr).await {
                        Some(h) => Some(h),
                        None => {
                            tokio::time::sleep(QUIET).await;
                            continue;
                        }
                    }
                } else {
                    None
                };
                check = verify_chunk(
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
                )
                .await
                .map_err(copy_err)?;
                drop(held);
                quiet_ran |= quiet;
                if check.is_clean() || quiet {
                    break;
                }
                // Let the stream catch up with what the source has now, then look again.
                let pos = binlog_pos(&mut src, &src_addr).await?;
                wait_applied(runner, i, &pos, Duration::from_secs(10)).await;
            }
            if !check.is_clean() && !quiet_ran {
                // Differences seen only while writes ran are no finding: say it could not look.
                return Err(ReshardError::Conflict(format!(
                    "{} {}->{}: the keyspace's writes could not be held for {} ms to compare a \
                     chunk at one position (long transactions or statements?); run verify again",
                    t.table,
                    t.source,
                    t.target,
                    QUIET.as_millis()
                )));
            }
            report.chunks += 1;
            report.rows_compared += check.moving_rows as u64;
            for (into, from) in [
                (&mut report.missing, &check.missing),
                (&mut report.extra, &check.extra),
                (&mut report.different, &check.different),
            ] {
                let room = LISTED.saturating_sub(into.len());
                into.extend(from.iter().take(room).cloned());
            }
            clean &= check.is_clean();
            runner.edit(|w| {
                if let Some(v) = &mut w.verify {
                    v.tables.retain(|x| {
                        !(x.table == report.table
                            && x.source == report.source
                            && x.target == report.target)
                    });
                    v.tables.push(report.clone());
                }
            });
            match check.last_key {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        let _ = runner.save().await;
        let _ = src.disconnect().await;
        let _ = dst.disconnect().await;
    }
    Ok(clean)
}

/// Holds the keyspace's new statements that touch moving keys (here and on every proxy), lets open transactions end
/// and running statements drain, and waits until the stream applied everything the source
/// has: then source and target are at one position until the hold is dropped. None when that
/// took too long (the hold is released at once).
async fn quiesce<'a>(
    runner: &'a Runner,
    i: usize,
    src: &mut mysql_async::Conn,
    src_addr: &str,
) -> Option<(Held, Option<crate::ha::coord::ClusterHold<'a>>)> {
    let ha = &runner.owner.ha;
    let ks = runner.keyspace();
    let (held, change) = runner.hold_moving(false);
    let gate = held.gate.clone();
    let reason = format!("reshard verify of {ks}");
    let cluster = ha
        .hold_keyspace_everywhere(&ks, &reason, Some(change), None, QUIET)
        .await
        .ok()?;
    if !cluster.missing.is_empty() || !gate.wait_txns(QUIET).await || !gate.drain(QUIET).await {
        return None;
    }
    let pos = binlog_pos(src, src_addr).await.ok()?;
    if !wait_applied(runner, i, &pos, QUIET).await {
        return None;
    }
    Some((held, Some(cluster)))
}

/// The longest a verify holds a keyspace's writes for one chunk's last round.
const QUIET: Duration = Duration::from_millis(300);

/// Waits until the forward stream carrying table copy `i` applied `pos` (at most `limit`).
async fn wait_applied(runner: &Runner, i: usize, pos: &str, limit: Duration) -> bool {
    let Some(pos) = GtidPos::parse(pos) else {
        return false;
    };
    let (source, target, kind) = {
        let w = lock(&runner.state);
        let t = &w.tables[i];
        (t.source.clone(), t.target.clone(), t.kind.clone())
    };
    let index = lock(&runner.state).streams.iter().position(|s| {
        s.direction == Direction::Forward
            && s.source == source
            && s.target == target
            && s.kind == kind
    });
    let Some(index) = index else {
        return false;
    };
    let rx = runner
        .stream_positions(Direction::Forward)
        .into_iter()
        .find(|(i, _)| *i == index)
        .map(|(_, rx)| rx);
    match rx {
        Some(mut rx) => tokio::time::timeout(limit, rx.wait_for(|p| p.covers(&pos)))
            .await
            .is_ok_and(|r| r.is_ok()),
        None => false,
    }
}
