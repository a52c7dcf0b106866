//! The cutover: the moving keys change owner. Its commit point is the publication of the new
//! shard map; before it every step can be undone by releasing the hold, after it the new
//! owners serve and the reverse streams keep the old ones current. A rollback is the same run
//! backwards (reverse streams, the old keyspace published again).
//!
//! Order: hold the keyspace's new statements (other keyspaces never wait); let open
//! transactions finish for a quarter of the budget, then doom the rest (their next statement
//! rolls them back with a deadlock error); drain statements in flight; read each source's
//! binlog position; wait for the streams to apply up to it (no write can come after it: the
//! gate holds them); wait for the new owners' replicas; store the reverse streams' start
//! positions; publish; release. Past `max_pause` at any step before the publication, the
//! attempt aborts: the held statements go on to the old owners, nothing is lost, and it can be
//! retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::Conn;

use super::manager::{lock, ReshardError};
use super::plan::Change;
use super::state::{CutoverAttempt, Direction, Phase, Step};
use super::workflow::{binlog_pos, connect, test_stop, Held, Runner};
use crate::ha::events::now_rfc3339;
use crate::ha::gtid::GtidPos;
use crate::shardmap::ShardMap;
use crate::topology::TopologyError;

/// Streams further behind than this are not worth holding writes for: the cutover refuses.
const MAX_BEHIND: u64 = 20_000;

pub async fn run(
    runner: &Arc<Runner>,
    max_pause: Duration,
    rollback: bool,
) -> Result<CutoverAttempt, ReshardError> {
    let _op = runner.op.lock().await;
    let phase = runner.phase();
    let ks = runner.keyspace();
    if !runner.coordinating() {
        return Err(ReshardError::Conflict(format!(
            "keyspace {ks}: this proxy does not coordinate the workflow now (its etcd lease is              not fresh, or another proxy took it over)"
        )));
    }
    if rollback && !phase.switched() {
        if matches!(phase, Phase::Copying | Phase::Running | Phase::Failed) {
            drop(_op);
            runner.clone().cancel().await?;
            return Ok(CutoverAttempt {
                kind: "rollback".into(),
                started_at: now_rfc3339(),
                outcome: "cancelled".into(),
                steps: vec![Step {
                    step: "before the cutover: cancelled (the old shards still own every key)"
                        .into(),
                    at_ms: 0,
                }],
                pause_ms: None,
                error: None,
                version: None,
            });
        }
        return Err(ReshardError::Conflict(format!(
            "keyspace {ks}: nothing to roll back in phase {phase:?}"
        )));
    }
    if rollback && phase != Phase::Switched {
        return Err(ReshardError::Conflict(format!(
            "keyspace {ks}: the rollback runs between the cutover and complete; the workflow is {phase:?}"
        )));
    }
    if !rollback {
        if phase != Phase::Running {
            return Err(ReshardError::Conflict(format!(
                "keyspace {ks}: the cutover needs the copy done and the catch-up running (phase \
                 running); the workflow is {phase:?}"
            )));
        }
        let verify = lock(&runner.state).verify.clone();
        match verify {
            Some(v) if v.is_clean() => {}
            Some(v) => {
                return Err(ReshardError::Conflict(format!(
                    "keyspace {ks}: the last verify is {}: run reshard verify until it is clean",
                    v.state
                )))
            }
            None => {
                return Err(ReshardError::Conflict(format!(
                    "keyspace {ks}: run reshard verify first (the cutover needs a clean one)"
                )))
            }
        }
    }
    let direction = if rollback {
        Direction::Reverse
    } else {
        Direction::Forward
    };
    let streams: Vec<(usize, tokio::sync::watch::Receiver<GtidPos>)> =
        runner.stream_positions(direction);
    let wanted = lock(&runner.state)
        .streams
        .iter()
        .filter(|s| s.direction == direction)
        .count();
    if streams.len() < wanted {
        return Err(ReshardError::Conflict(format!(
            "keyspace {ks}: {} of {wanted} streams run; wait for them (reshard status)",
            streams.len()
        )));
    }
    for s in lock(&runner.state)
        .streams
        .iter()
        .filter(|s| s.direction == direction)
    {
        if s.state != "running" || s.behind_transactions.is_none_or(|b| b > MAX_BEHIND) {
            return Err(ReshardError::Conflict(format!(
                "keyspace {ks}: stream {} is {} ({} transactions behind): the cutover waits for \
                 the catch-up to run close behind its source",
                s.name,
                s.state,
                s.behind_transactions
                    .map_or("an unknown number of".to_string(), |b| b.to_string())
            )));
        }
    }
    let kind_word = if rollback { "rollback" } else { "cutover" };
    let _ha = runner.owner.ha.exclusive().map_err(|e| {
        ReshardError::Conflict(format!(
            "keyspace {ks}: a failover or switchover runs: {e}; retry the cutover after it"
        ))
    })?;
    let stream_states = lock(&runner.state).streams.clone();
    // With etcd, no proxy fails over a shard of the cutover while it runs (their failover
    // takes the same locks): the streams and the drain read its primaries.
    let mut involved: Vec<String> = stream_states
        .iter()
        .flat_map(|s| [s.source.clone(), s.target.clone()])
        .filter_map(|name| runner.primary_of(&name))
        .collect();
    involved.sort();
    involved.dedup();
    let mut _shard_locks = Vec::new();
    for g in crate::ha::ops::groups(&runner.owner.topology.map()) {
        if !involved.contains(&g.primary) {
            continue;
        }
        let l = runner
            .owner
            .ha
            .lock_shard(&g.name, &format!("reshard {kind_word} of {ks}"))
            .await
            .map_err(|e| {
                ReshardError::Conflict(format!(
                    "keyspace {ks}: shard {} is busy: {e}; retry the cutover after it",
                    g.name
                ))
            })?;
        _shard_locks.push(l);
    }
    // Connections opened before the hold, so the pause pays for none.
    let mut sources: Vec<(usize, String, Conn)> = Vec::new();
    for (i, _) in &streams {
        let s = &stream_states[*i];
        let addr = runner.primary_of(&s.source).unwrap_or_default();
        sources.push((*i, addr.clone(), connect(&addr, &runner.creds()).await?));
    }
    let mut targets: Vec<(String, Conn, Vec<Conn>)> = Vec::new();
    let mut target_names: Vec<String> = streams
        .iter()
        .map(|(i, _)| stream_states[*i].target.clone())
        .collect();
    target_names.sort();
    target_names.dedup();
    for t in &target_names {
        let addr = runner.primary_of(t).unwrap_or_default();
        let primary = connect(&addr, &runner.creds()).await?;
        let mut reps = Vec::new();
        for r in runner.replicas_of(t) {
            // A replica that does not answer is not waited for: the monitor keeps reads off it.
            if let Ok(c) = connect(&r, &runner.creds()).await {
                reps.push(c);
            }
        }
        targets.push((addr, primary, reps));
    }
    // The other side's primaries, whose positions start the streams of the other direction.
    let other: Vec<(usize, String)> = stream_states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.direction != direction && !rollback)
        .map(|(i, s)| (i, runner.primary_of(&s.source).unwrap_or_default()))
        .collect();
    let mut other_conns = Vec::new();
    for (i, addr) in &other {
        other_conns.push((*i, addr.clone(), connect(addr, &runner.creds()).await?));
    }

    let kind = if rollback { "rollback" } else { "cutover" };
    let attempt = CutoverAttempt {
        kind: kind.into(),
        started_at: now_rfc3339(),
        outcome: "running".into(),
        steps: Vec::new(),
        pause_ms: None,
        error: None,
        version: None,
    };
    let n = runner
        .update(|w| {
            w.cutovers.push(attempt);
            w.cutovers.len() - 1
        })
        .await?;
    // Built before the pause (the hold asks for it again).
    runner.ring_change().moving_shared();
    let t0 = Instant::now();
    let step = |what: &str| {
        let at_ms = t0.elapsed().as_millis() as u64;
        runner.edit(|w| {
            w.cutovers[n].steps.push(Step {
                step: what.to_string(),
                at_ms,
            })
        });
    };
    let left = |t0: Instant| max_pause.saturating_sub(t0.elapsed());

    let ha = runner.owner.ha.clone();
    let (held, change) = runner.hold_moving(true);
    let gate = held.gate.clone();
    step("holding new statements on the moving keys");
    let grace = max_pause / 4;
    // Every other live proxy holds, lets its transactions finish, dooms and drains too, while
    // this one does the same (with etcd; alone, nothing to wait for).
    let reason = format!("reshard {kind} of {ks}");
    let (cluster, finished) = tokio::join!(
        ha.hold_keyspace_everywhere(&ks, &reason, Some(change), Some(grace), max_pause),
        gate.wait_txns(grace)
    );
    if !finished {
        step(&format!(
            "{} transactions still open: those that touched moving keys are doomed (rolled back at their next statement)",
            gate.open_txns()
        ));
    }
    gate.doom(held.scope.clone());
    let cluster = match cluster {
        Ok(c) if c.missing.is_empty() => c,
        Ok(c) => {
            let why = format!(
                "proxies {} did not hold and drain within {} ms",
                c.missing.join(", "),
                max_pause.as_millis()
            );
            drop(c);
            return abort(runner, n, t0, held, why).await;
        }
        Err(e) => return abort(runner, n, t0, held, format!("holding on every proxy: {e}")).await,
    };
    if !cluster.acks.is_empty() {
        step(&format!(
            "{} other proxies hold and drained",
            cluster.acks.len()
        ));
    }
    if !gate.drain(left(t0)).await {
        return abort(
            runner,
            n,
            t0,
            held,
            format!(
                "{} statements still ran after {} ms",
                gate.in_flight(),
                max_pause.as_millis()
            ),
        )
        .await;
    }
    step("drained");
    test_stop("drained");
    let mut wanted_pos = Vec::new();
    for (i, addr, conn) in &mut sources {
        let p = binlog_pos(conn, addr).await?;
        wanted_pos.push((*i, GtidPos::parse(&p).unwrap_or_default()));
    }
    step("read the sources' positions");
    for ((_, rx), (_, want)) in streams.iter().zip(&wanted_pos) {
        let mut rx = rx.clone();
        let ok = tokio::time::timeout(left(t0), rx.wait_for(|p| p.covers(want)))
            .await
            .is_ok_and(|r| r.is_ok());
        if !ok {
            let behind: Vec<String> = streams
                .iter()
                .zip(&wanted_pos)
                .filter(|((_, rx), (_, w))| !rx.borrow().covers(w))
                .map(|((i, rx), (_, w))| {
                    format!(
                        "{} at {} of {}",
                        stream_states[*i].name,
                        rx.borrow().clone(),
                        w
                    )
                })
                .collect();
            return abort(
                runner,
                n,
                t0,
                held,
                format!(
                    "the catch-up did not apply the sources' last writes within {} ms ({})",
                    max_pause.as_millis(),
                    behind.join("; ")
                ),
            )
            .await;
        }
    }
    step("caught up");
    test_stop("caught_up");
    for (addr, primary, reps) in &mut targets {
        let pos = binlog_pos(primary, addr).await?;
        for r in reps.iter_mut() {
            let secs = left(t0).as_secs_f64();
            let got: Option<i64> = r
                .exec_first("SELECT MASTER_GTID_WAIT(?, ?)", (pos.clone(), secs))
                .await
                .ok()
                .flatten();
            if got != Some(0) {
                return abort(
                    runner,
                    n,
                    t0,
                    held,
                    format!(
                        "a replica of the new owner {addr} did not reach {pos} within {} ms (reads \
                         there would miss writes)",
                        max_pause.as_millis()
                    ),
                )
                .await;
            }
        }
    }
    step("new owners' replicas caught up");
    let mut starts = Vec::new();
    for (i, addr, conn) in &mut other_conns {
        starts.push((*i, binlog_pos(conn, addr).await?));
    }
    runner
        .update(|w| {
            for (i, p) in &starts {
                w.streams[*i].start_position = p.clone();
            }
            w.cutovers[n].steps.push(Step {
                step: "publishing the shard map".into(),
                at_ms: t0.elapsed().as_millis() as u64,
            });
        })
        .await?;
    test_stop("publishing");
    let (change, reason) = {
        let w = lock(&runner.state);
        (
            w.plan.change.clone(),
            format!("reshard {kind} of {ks}: {}", w.plan.change.describe()),
        )
    };
    let before = lock(&runner.state).before.clone();
    let published = runner
        .owner
        .topology
        .update(&reason, &[], |cur| {
            flip(cur, &ks, &change, &before, rollback)
        })
        .await;
    let version = match published {
        Ok(v) => v,
        Err(e) => {
            if switched_in(&runner.owner.topology.map(), runner, rollback) {
                runner.owner.topology.version()
            } else {
                return abort(runner, n, t0, held, format!("publishing the new map: {e}")).await;
            }
        }
    };
    // The commit point is behind us: record it before anything else can fail. Other proxies
    // release when their watch brings the hold's end, after the new map.
    let pause = t0.elapsed();
    drop(cluster);
    drop(held);
    test_stop("published");
    let pause_ms = pause.as_millis() as u64;
    runner
        .update(|w| {
            let a = &mut w.cutovers[n];
            a.outcome = "switched".into();
            a.version = Some(version);
            a.pause_ms = Some(pause_ms);
            a.steps.push(Step {
                step: format!("published shard map version {version}; statements released"),
                at_ms: pause_ms,
            });
            w.phase = if rollback {
                Phase::RolledBack
            } else {
                Phase::Switched
            };
            w.error = None;
        })
        .await?;
    metrics::gauge!("shardgate_reshard_cutover_pause_ms", "keyspace" => ks.clone())
        .set(pause_ms as f64);
    runner.event(format!(
        "{kind} done: shard map version {version}, writes paused {pause_ms} ms"
    ));
    runner.stop_streams(direction).await;
    if rollback {
        runner.stop_streams(Direction::Forward).await;
        super::cleanup::after_rollback(runner.clone());
    } else {
        runner.start_streams(Direction::Reverse);
    }
    let _ = runner.save().await;
    Ok(lock(&runner.state).cutovers[n].clone())
}

async fn abort(
    runner: &Arc<Runner>,
    n: usize,
    t0: Instant,
    held: Held,
    why: String,
) -> Result<CutoverAttempt, ReshardError> {
    drop(held);
    let ms = t0.elapsed().as_millis() as u64;
    runner
        .update(|w| {
            let a = &mut w.cutovers[n];
            a.outcome = "aborted".into();
            a.error = Some(why.clone());
            a.pause_ms = Some(ms);
            a.steps.push(Step {
                step: "aborted: statements released to the old owners".into(),
                at_ms: ms,
            });
        })
        .await?;
    metrics::counter!("shardgate_reshard_cutover_aborts_total").increment(1);
    runner.event(format!("cutover aborted after {ms} ms: {why}; retry it"));
    Ok(lock(&runner.state).cutovers[n].clone())
}

/// The map with the keyspace's shard list changed (the live primaries kept: a failover since
/// the plan is not undone).
fn flip(
    cur: &ShardMap,
    ks: &str,
    change: &Change,
    before: &crate::shardmap::Keyspace,
    rollback: bool,
) -> Result<ShardMap, TopologyError> {
    let mut m = cur.clone();
    let k = m
        .keyspace
        .get_mut(ks)
        .ok_or_else(|| TopologyError::Refused(format!("keyspace {ks} is gone from the map")))?;
    match (change, rollback) {
        (Change::Add(s), false) => {
            if !k.shards.iter().any(|x| x.name == s.name) {
                k.shards.push(s.clone());
            }
        }
        (Change::Add(s), true) => k.shards.retain(|x| x.name != s.name),
        (Change::Remove(name), false) => k.shards.retain(|x| &x.name != name),
        (Change::Remove(name), true) => {
            let at = before.shards.iter().position(|x| &x.name == name);
            if let (false, Some(at)) = (k.shards.iter().any(|x| &x.name == name), at) {
                k.shards
                    .insert(at.min(k.shards.len()), before.shards[at].clone());
            }
        }
    }
    m.validate("the resharded map")
        .map_err(|e| TopologyError::Refused(e.to_string()))?;
    Ok(m)
}

/// Whether the map shows the keyspace as the cutover (or rollback) leaves it.
fn switched_in(map: &ShardMap, runner: &Runner, rollback: bool) -> bool {
    let w = lock(&runner.state);
    let Some(k) = map.keyspace.get(&w.keyspace) else {
        return false;
    };
    let names: Vec<&str> = k.shards.iter().map(|s| s.name.as_str()).collect();
    let want = if rollback {
        &w.plan.shards_before
    } else {
        &w.plan.shards_after
    };
    let mut a: Vec<&str> = want.iter().map(String::as_str).collect();
    let mut b = names;
    a.sort();
    b.sort();
    a == b
}

/// At startup: a cutover the proxy died in is either published (switched) or not (aborted):
/// the live map tells which.
pub async fn settle_interrupted(runner: &Arc<Runner>) {
    let last = lock(&runner.state).cutovers.last().cloned();
    let Some(a) = last.filter(|a| a.outcome == "running") else {
        return;
    };
    let rollback = a.kind == "rollback";
    let map = runner.owner.topology.map();
    let switched = switched_in(&map, runner, rollback);
    let version = runner.owner.topology.version();
    let _ = runner
        .update(|w| {
            let Some(a) = w.cutovers.last_mut() else {
                return;
            };
            if switched {
                a.outcome = "switched".into();
                a.version = Some(version);
                a.steps.push(Step {
                    step: "the proxy stopped after publishing; found published at restart".into(),
                    at_ms: 0,
                });
                w.phase = if rollback {
                    Phase::RolledBack
                } else {
                    Phase::Switched
                };
            } else {
                a.outcome = "aborted".into();
                a.error = Some("the proxy stopped before publishing the new map".into());
            }
        })
        .await;
    if switched && rollback {
        super::cleanup::after_rollback(runner.clone());
    }
}
