//! The operations: unplanned failover, planned switchover, rejoin of a former primary.
//!
//! A "group" is one primary and its replicas. A server may serve several keyspaces (the same
//! primary named by shards of two keyspaces), so a change rewrites every shard that names the
//! group's primary.

use std::time::Instant;

use std::time::Duration;

use super::acked::{self, Known};
use super::coord::{Intent, ShardLock};
use super::events::now_rfc3339;
use super::gtid::GtidPos;
use super::server::{Server, SlaveStatus};
use super::{lock, Fenced, Ha, HaError, Progress, Report};
use crate::shardmap::{Replica, ShardMap};

/// Per domain, the further of `a` and `b`.
pub(crate) fn merged(a: &GtidPos, b: &GtidPos) -> GtidPos {
    let mut out = a.clone();
    for (d, g) in &b.0 {
        if out.0.get(d).is_none_or(|have| have.seq < g.seq) {
            out.0.insert(*d, *g);
        }
    }
    out
}

/// A replication group as the current shard map has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `keyspace/shard` of the first shard naming this primary.
    pub name: String,
    pub primary: String,
    pub replicas: Vec<String>,
}

/// Every group of `map`, in map order, each primary once.
pub fn groups(map: &ShardMap) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for (ks, k) in &map.keyspace {
        for s in &k.shards {
            if out.iter().any(|g| g.primary == s.primary) {
                continue;
            }
            out.push(Group {
                name: format!("{ks}/{}", s.name),
                primary: s.primary.clone(),
                replicas: s.replicas.iter().map(|r| r.addr.clone()).collect(),
            });
        }
    }
    out
}

/// The group `spec` names: `keyspace/shard`, or a shard name (the first keyspace having it).
pub fn find_group(map: &ShardMap, spec: &str) -> Result<Group, HaError> {
    let (ks, shard) = match spec.split_once('/') {
        Some((k, s)) => (Some(k), s),
        None => (None, spec),
    };
    for (name, k) in &map.keyspace {
        if ks.is_some_and(|want| want != name) {
            continue;
        }
        if let Some(s) = k.shards.iter().find(|s| s.name == shard) {
            let primary = s.primary.clone();
            return groups(map)
                .into_iter()
                .find(|g| g.primary == primary)
                .ok_or_else(|| HaError::UnknownShard(spec.to_string()));
        }
    }
    Err(HaError::UnknownShard(spec.to_string()))
}

/// `map` with every shard whose primary is `old` now led by `primary` with `replicas`
/// (weights kept for servers that were replicas before).
pub fn with_primary(map: &ShardMap, old: &str, primary: &str, replicas: &[String]) -> ShardMap {
    let mut map = map.clone();
    for k in map.keyspace.values_mut() {
        for s in k.shards.iter_mut().filter(|s| s.primary == old) {
            let weight = |a: &str| {
                s.replicas
                    .iter()
                    .find(|r| r.addr == a)
                    .map_or(1, |r| r.weight)
            };
            let list: Vec<Replica> = replicas
                .iter()
                .map(|a| Replica {
                    addr: a.clone(),
                    weight: weight(a),
                })
                .collect();
            s.primary = primary.to_string();
            s.replicas = list;
        }
    }
    map
}

/// Steps of one operation: each an event, the current one shown by `status`.
struct Steps<'a> {
    ha: &'a Ha,
    shard: String,
    done: Vec<String>,
}

impl Steps<'_> {
    fn step(&mut self, server: Option<&str>, msg: String) {
        self.ha
            .events
            .add("step", Some(&self.shard), server, msg.clone());
        if let Some(p) = lock(&self.ha.progress).as_mut() {
            p.step = msg.clone();
            p.steps_done += 1;
            metrics::gauge!("shardgate_ha_operation_steps_done").set(p.steps_done as f64);
        }
        self.done.push(msg);
    }

    fn warn(&mut self, server: Option<&str>, msg: String) {
        self.ha
            .events
            .add("failed", Some(&self.shard), server, msg.clone());
        self.done.push(msg);
    }
}

impl Drop for Steps<'_> {
    fn drop(&mut self) {
        if let Some(p) = lock(&self.ha.progress).take() {
            metrics::gauge!("shardgate_ha_operation_running", "operation" => p.operation).set(0.0);
        }
        metrics::gauge!("shardgate_ha_operation_steps_done").set(0.0);
    }
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Ha {
    fn start<'a>(&'a self, operation: &'static str, shard: &str) -> Steps<'a> {
        metrics::gauge!("shardgate_ha_operation_running", "operation" => operation).set(1.0);
        *lock(&self.progress) = Some(Progress {
            operation: operation.to_string(),
            shard: shard.to_string(),
            started: now_rfc3339(),
            step: "starting".into(),
            steps_done: 0,
        });
        Steps {
            ha: self,
            shard: shard.to_string(),
            done: Vec::new(),
        }
    }

    /// Excludes failovers, switchovers and rejoins while held (a reshard cutover); `Busy`
    /// when one runs now.
    pub fn exclusive(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, HaError> {
        self.busy()
    }

    fn busy(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, HaError> {
        self.op.try_lock().map_err(|_| {
            let what = lock(&self.progress)
                .as_ref()
                .map(|p| format!("{} of {}: {}", p.operation, p.shard, p.step))
                .unwrap_or_else(|| "starting".into());
            HaError::Busy(what)
        })
    }

    /// `shardgate failover --shard S [--to SERVER]`: a planned switchover when the primary
    /// answers, else a failover (which needs the replicas to have lost the primary too, unless
    /// `force`).
    pub async fn failover_command(
        &self,
        spec: &str,
        to: Option<&str>,
        force: bool,
    ) -> Result<Report, HaError> {
        let group = find_group(&self.topology.map(), spec)?;
        match Server::connect(&group.primary, &self.creds).await {
            Ok(s) => {
                s.close().await;
                self.switchover(&group, to).await
            }
            Err(e) => {
                if !force && !self.replicas_lost_primary(&group).await {
                    return Err(HaError::Refused(format!(
                        "the proxy cannot reach primary {} ({e}) but a replica still replicates \
                         from it; not failing over (add force to do it anyway)",
                        group.primary
                    )));
                }
                if to.is_some() {
                    return Err(HaError::Refused(
                        "--to is for a planned switchover; with the primary down the most \
                         advanced replica is promoted"
                            .into(),
                    ));
                }
                self.failover(
                    &group,
                    &format!("requested; primary unreachable: {e}"),
                    force,
                )
                .await
            }
        }
    }

    /// Whether every reachable replica of `group` reports its IO thread disconnected (and at
    /// least one was reachable).
    pub(crate) async fn replicas_lost_primary(&self, group: &Group) -> bool {
        let mut reached = 0;
        for r in &group.replicas {
            let Ok(mut s) = Server::connect(r, &self.creds).await else {
                continue;
            };
            let st = s.slave_status().await;
            s.close().await;
            match st {
                Ok(Some(st)) if st.connected() => return false,
                Ok(_) => reached += 1,
                Err(_) => {}
            }
        }
        reached > 0
    }

    /// Promotes the replica of `group` that received the most, after it applied all of it;
    /// repoints the others; fences the old primary. Statements wait meanwhile. Only a replica
    /// holding every GTID the proxy acknowledged on `group` qualifies, unless `force` (an
    /// operator accepting the loss).
    pub async fn failover(
        &self,
        group: &Group,
        reason: &str,
        force: bool,
    ) -> Result<Report, HaError> {
        let _op = self.busy()?;
        if let Err(e) = self.may_decide() {
            // Said once (the detector tries again), and shown by /readyz as a refused failover.
            self.block(group, &e.to_string());
            return Err(e);
        }
        let shard_lock = self.lock_shard(&group.name, "failover").await?;
        // Another proxy may have failed it over while this one waited for the lock.
        self.still_primary(group)?;
        let started = Instant::now();
        let mut steps = self.start("failover", &group.name);
        let mut group = group.clone();
        if let Some(intent) = self.pending_intent(&group.name).await? {
            match self
                .finish_intent(&group, &intent, &shard_lock, &mut steps)
                .await?
            {
                Some(report) => return Ok(report),
                // Its replica is gone: a fresh failover among the others.
                None => group.replicas.retain(|r| *r != intent.new_primary),
            }
        }
        let group = &group;
        self.events.add(
            "decide",
            Some(&group.name),
            Some(&group.primary),
            format!("failing over from {}: {reason}", group.primary),
        );
        let held_at = Instant::now();
        let hold = self
            .hold_everywhere(
                &group.name,
                &group.primary,
                &format!("failover: {reason}"),
                Duration::from_millis(self.cfg.switchover_drain_ms + 1000),
            )
            .await?;
        if !hold.missing.is_empty() {
            steps.warn(
                None,
                format!(
                    "proxies {} did not acknowledge the hold: their acknowledged writes count \
                     as last published",
                    hold.missing.join(", ")
                ),
            );
        }
        let r = match self.acked_everywhere(&group.primary, &hold.acks).await {
            Ok(acked) => {
                self.promote_best(group, &mut steps, force, acked, &shard_lock)
                    .await
            }
            Err(e) => Err(e),
        };
        let (new_primary, chosen, others, version) = match r {
            Ok(x) => x,
            Err(e) => {
                drop(hold);
                if let HaError::Lacking(why) = &e {
                    self.block(group, why);
                }
                self.events.add(
                    "failed",
                    Some(&group.name),
                    Some(&group.primary),
                    format!("failover failed: {e}"),
                );
                metrics::counter!("shardgate_failovers_total", "kind" => "failover", "result" => "failed").increment(1);
                return Err(e);
            }
        };
        drop(hold);
        self.unblock(group);
        let held_ms = ms(held_at);
        steps.step(
            Some(&new_primary),
            format!("statements released after {held_ms} ms"),
        );
        for (mut s, addr) in others {
            match s
                .replicate_from(
                    &new_primary,
                    &self.cfg.replication_user,
                    &self.cfg.replication_password,
                    "slave_pos",
                )
                .await
            {
                Ok(()) => steps.step(Some(&addr), format!("{addr} replicates from {new_primary}")),
                Err(e) => steps.warn(Some(&addr), format!("repointing {addr}: {e}")),
            }
            s.close().await;
        }
        chosen.close().await;
        lock(&self.fenced).insert(
            group.primary.clone(),
            Fenced {
                server: group.primary.clone(),
                shard: group.name.clone(),
                replaced_by: new_primary.clone(),
                since: now_rfc3339(),
                read_only_set: false,
            },
        );
        steps.step(
            Some(&group.primary),
            format!(
                "{} fenced: no statements routed to it; it is set read_only when it is back; \
                 `shardgate rejoin {}` makes it a replica of {new_primary}",
                group.primary, group.primary
            ),
        );
        let took = ms(started);
        self.events.add(
            "done",
            Some(&group.name),
            Some(&new_primary),
            format!(
                "failover done in {took} ms: {new_primary} is the primary (shard map version {version})"
            ),
        );
        metrics::counter!("shardgate_failovers_total", "kind" => "failover", "result" => "done")
            .increment(1);
        metrics::histogram!("shardgate_failover_seconds", "kind" => "failover")
            .record(took as f64 / 1000.0);
        Ok(Report {
            operation: "failover".into(),
            shard: group.name.clone(),
            old_primary: group.primary.clone(),
            new_primary,
            version,
            took_ms: took,
            held_ms,
            steps: std::mem::take(&mut steps.done),
        })
    }

    /// The failover's steps up to publishing the new map: the promoted server, its
    /// connection, the other replicas' connections and the version published.
    #[allow(clippy::type_complexity)]
    async fn promote_best(
        &self,
        group: &Group,
        steps: &mut Steps<'_>,
        force: bool,
        acked: Known,
        lock: &ShardLock,
    ) -> Result<(String, Server, Vec<(Server, String)>, u64), HaError> {
        if !acked.baseline && !force {
            return Err(HaError::Lacking(format!(
                "the proxy has not reached primary {} since it started, so what was \
                 acknowledged before that is unknown; not promoting automatically",
                group.primary
            )));
        }
        let mut cands: Vec<(Server, SlaveStatus, usize)> = Vec::new();
        for (i, r) in group.replicas.iter().enumerate() {
            match Server::connect(r, &self.creds).await {
                Ok(mut s) => {
                    // Nothing more arrives from a dead primary; stopping the IO thread keeps
                    // a returning one from sending more while we compare.
                    if let Err(e) = s.exec("STOP SLAVE IO_THREAD").await {
                        steps.warn(Some(r), format!("{r}: {e}"));
                    }
                    match s.slave_status().await {
                        Ok(Some(mut st)) => {
                            // What it received, or holds already (a restarted replica's relay
                            // log is gone; its applied position is what counts then).
                            match s.gtid("gtid_current_pos").await {
                                Ok(cur) => st.gtid_io_pos = merged(&st.gtid_io_pos, &cur),
                                Err(e) => steps.warn(Some(r), format!("{r}: {e}")),
                            }
                            cands.push((s, st, i))
                        }
                        Ok(None) => steps.warn(Some(r), format!("{r} is not a replica")),
                        Err(e) => steps.warn(Some(r), format!("{r}: {e}")),
                    }
                }
                Err(e) => steps.warn(Some(r), format!("replica {r} unreachable: {e}")),
            }
        }
        if cands.is_empty() {
            return Err(HaError::Refused(format!(
                "no replica of {} is reachable: nothing to promote",
                group.name
            )));
        }
        let lacking: Vec<String> = cands
            .iter()
            .filter_map(|(s, st, _)| {
                let gone = acked::missing(&st.gtid_io_pos, &acked.pos);
                (!gone.is_empty()).then(|| {
                    format!(
                        "{} (at {}) lacks {}",
                        s.addr,
                        st.gtid_io_pos,
                        gone.join(",")
                    )
                })
            })
            .collect();
        let holding = |st: &SlaveStatus| force || st.gtid_io_pos.covers(&acked.pos);
        if !cands.iter().any(|(_, st, _)| holding(st)) {
            for (s, _, _) in &mut cands {
                // Back to replicating, should the primary come back.
                let _ = s.exec("START SLAVE IO_THREAD").await;
            }
            return Err(HaError::Lacking(format!(
                "no replica holds every write the proxy acknowledged on {} (up to {}): {}",
                group.name,
                acked.pos,
                lacking.join("; ")
            )));
        }
        let best = cands
            .iter()
            .enumerate()
            .filter(|(_, (_, st, _))| holding(st))
            .max_by_key(|(_, (_, st, i))| (st.gtid_io_pos.total(), std::cmp::Reverse(*i)))
            .map(|(k, _)| k)
            .unwrap_or(0);
        let (mut chosen, st, _) = cands.swap_remove(best);
        let addr = chosen.addr.clone();
        let others_pos: Vec<String> = cands
            .iter()
            .map(|(s, st, _)| format!("{} at {}", s.addr, st.gtid_io_pos))
            .collect();
        steps.step(
            Some(&addr),
            format!(
                "chose {addr}: received up to {} (others: {})",
                st.gtid_io_pos,
                if others_pos.is_empty() {
                    "none".to_string()
                } else {
                    others_pos.join(", ")
                }
            ),
        );
        if force && !st.gtid_io_pos.covers(&acked.pos) {
            let gone = acked::missing(&st.gtid_io_pos, &acked.pos).join(",");
            tracing::warn!(shard = %group.name, server = %addr, missing = %gone,
                "forced failover promotes a replica lacking acknowledged writes");
            steps.step(
                Some(&addr),
                format!(
                    "FORCED by the operator: {addr} lacks acknowledged {gone}; those writes \
                     are lost"
                ),
            );
        }
        let limit = std::time::Duration::from_millis(self.cfg.catchup_timeout_ms);
        chosen.wait_applied(&st.gtid_io_pos, limit).await?;
        let applied = chosen.gtid("gtid_current_pos").await?;
        if !force && !applied.covers(&acked.pos) {
            let _ = chosen.exec("START SLAVE IO_THREAD").await;
            return Err(HaError::Lacking(format!(
                "{addr} applied up to {applied} but the proxy acknowledged {} on {}: lacks {}",
                acked.pos,
                group.name,
                acked::missing(&applied, &acked.pos).join(",")
            )));
        }
        steps.step(
            Some(&addr),
            format!("{addr} applied its relay log up to {}", st.gtid_io_pos),
        );
        let replicas: Vec<String> = group
            .replicas
            .iter()
            .filter(|r| **r != addr)
            .cloned()
            .collect();
        let epoch = self
            .begin_promotion(lock, self.intent("failover", group, &addr, &replicas))
            .await?;
        if epoch > 0 {
            steps.step(
                Some(&addr),
                format!("fencing epoch {epoch} of {} recorded in etcd", group.name),
            );
        }
        chosen.become_primary().await?;
        steps.step(
            Some(&addr),
            format!("{addr} stopped replicating and is writable"),
        );
        test_stop_point("promoting");
        let others: Vec<(Server, String)> = cands
            .into_iter()
            .map(|(s, _, _)| {
                let a = s.addr.clone();
                (s, a)
            })
            .collect();
        // What it holds, not what the old primary acknowledged: after a forced promotion the
        // lost GTIDs would otherwise block every later failover of this shard.
        self.reset_acked(&addr, &applied).await?;
        let version = self
            .topology
            .update(
                &format!("failover of {}: {} -> {addr}", group.name, group.primary),
                &lock.fence,
                |m| Ok(with_primary(m, &group.primary, &addr, &replicas)),
            )
            .await?;
        self.end_promotion(&group.name, "done").await?;
        steps.step(
            Some(&addr),
            format!("shard map version {version} published: {addr} takes the writes"),
        );
        Ok((addr, chosen, others, version))
    }

    /// Planned switchover to `to` (or the most advanced replica): holds statements, fences the
    /// old primary, waits for the target to apply everything, flips, releases. No statement
    /// fails; the ones that arrive meanwhile wait.
    pub async fn switchover(&self, group: &Group, to: Option<&str>) -> Result<Report, HaError> {
        let _op = self.busy()?;
        self.may_decide()?;
        let lock = self.lock_shard(&group.name, "switchover").await?;
        self.still_primary(group)?;
        let started = Instant::now();
        let mut steps = self.start("switchover", &group.name);
        let target = match to {
            Some(t) if group.replicas.iter().any(|r| r == t) => t.to_string(),
            Some(t) => {
                return Err(HaError::Refused(format!(
                    "{t} is not a replica of {} (replicas: {})",
                    group.name,
                    group.replicas.join(", ")
                )))
            }
            None => self.most_advanced(group).await?,
        };
        let mut new = Server::connect(&target, &self.creds).await?;
        match new.slave_status().await? {
            Some(st) if st.connected() && st.sql_running == "Yes" => {}
            Some(st) => {
                return Err(HaError::Refused(format!(
                    "{target} is not replicating (IO {}, SQL {}{}); fix it or choose another",
                    st.io_running,
                    st.sql_running,
                    if st.last_io_error.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", st.last_io_error)
                    }
                )))
            }
            None => return Err(HaError::Refused(format!("{target} is not a replica"))),
        }
        let mut old = Server::connect(&group.primary, &self.creds).await?;
        self.events.add(
            "decide",
            Some(&group.name),
            Some(&group.primary),
            format!("switchover from {} to {target}", group.primary),
        );
        // Most of the catching up happens before statements are held, to keep the hold short.
        let limit = std::time::Duration::from_millis(self.cfg.catchup_timeout_ms);
        let pos = old.gtid("gtid_binlog_pos").await?;
        new.wait_applied(&pos, limit).await?;
        steps.step(Some(&target), format!("{target} caught up to {pos}"));

        let held_at = Instant::now();
        let drain = std::time::Duration::from_millis(self.cfg.switchover_drain_ms);
        let hold = self
            .hold_everywhere(
                &group.name,
                &group.primary,
                &format!("switchover to {target}"),
                drain + Duration::from_millis(500),
            )
            .await?;
        if !hold.missing.is_empty() {
            steps.warn(
                None,
                format!(
                    "proxies {} did not acknowledge the hold within {} ms: their statements \
                     on the old primary fail once it is read_only",
                    hold.missing.join(", "),
                    drain.as_millis() + 500
                ),
            );
        }
        let others_drained = hold.acks.values().all(|a| a.drained);
        if self.gate.drain(drain).await && others_drained {
            steps.step(
                None,
                format!("statements held; none running after {} ms", ms(held_at)),
            );
        } else {
            steps.step(
                None,
                format!(
                    "statements held; {} still running after {} ms: their connections to the \
                     old primary are ended",
                    self.gate.in_flight(),
                    drain.as_millis()
                ),
            );
        }
        let flip = async {
            old.set_read_only(true).await?;
            let killed = old.kill_clients().await?;
            let pos = old.gtid("gtid_binlog_pos").await?;
            steps.step(
                Some(&group.primary),
                format!(
                    "{} is read_only; {killed} client connections ended; final position {pos}",
                    group.primary
                ),
            );
            new.wait_applied(&pos, limit).await?;
            steps.step(Some(&target), format!("{target} applied up to {pos}"));
            let mut replicas: Vec<String> = group
                .replicas
                .iter()
                .filter(|r| **r != target)
                .cloned()
                .collect();
            replicas.push(group.primary.clone());
            self.begin_promotion(&lock, self.intent("switchover", group, &target, &replicas))
                .await?;
            new.become_primary().await?;
            test_stop_point("switching");
            self.reset_acked(&target, &pos).await?;
            let version = self
                .topology
                .update(
                    &format!(
                        "switchover of {}: {} -> {target}",
                        group.name, group.primary
                    ),
                    &lock.fence,
                    |m| Ok(with_primary(m, &group.primary, &target, &replicas)),
                )
                .await?;
            self.end_promotion(&group.name, "done").await?;
            steps.step(
                Some(&target),
                format!("shard map version {version} published: {target} takes the writes"),
            );
            Ok::<u64, HaError>(version)
        };
        let version = match flip.await {
            Ok(v) => v,
            Err(e) => {
                // Nothing was published: the old primary takes writes again.
                let undo = old.set_read_only(false).await;
                drop(hold);
                self.events.add(
                    "failed",
                    Some(&group.name),
                    Some(&group.primary),
                    format!(
                        "switchover failed, {} stays the primary{}: {e}",
                        group.primary,
                        match undo {
                            Ok(()) => String::new(),
                            Err(u) => format!(" (and clearing read_only failed: {u})"),
                        }
                    ),
                );
                metrics::counter!("shardgate_failovers_total", "kind" => "switchover", "result" => "failed").increment(1);
                return Err(e);
            }
        };
        drop(hold);
        let held_ms = ms(held_at);
        steps.step(None, format!("statements released after {held_ms} ms"));
        let (user, pass) = (&self.cfg.replication_user, &self.cfg.replication_password);
        match old.replicate_from(&target, user, pass, "current_pos").await {
            Ok(()) => steps.step(
                Some(&group.primary),
                format!("{} replicates from {target}", group.primary),
            ),
            Err(e) => steps.warn(
                Some(&group.primary),
                format!("repointing the old primary: {e}"),
            ),
        }
        old.close().await;
        for r in group.replicas.iter().filter(|r| **r != target) {
            let done = async {
                let mut s = Server::connect(r, &self.creds).await?;
                s.replicate_from(&target, user, pass, "slave_pos").await?;
                s.close().await;
                Ok::<(), HaError>(())
            };
            match done.await {
                Ok(()) => steps.step(Some(r), format!("{r} replicates from {target}")),
                Err(e) => steps.warn(Some(r), format!("repointing {r}: {e}")),
            }
        }
        new.close().await;
        let took = ms(started);
        self.events.add(
            "done",
            Some(&group.name),
            Some(&target),
            format!("switchover done in {took} ms (statements held {held_ms} ms): {target} is the primary"),
        );
        metrics::counter!("shardgate_failovers_total", "kind" => "switchover", "result" => "done")
            .increment(1);
        metrics::histogram!("shardgate_failover_seconds", "kind" => "switchover")
            .record(took as f64 / 1000.0);
        metrics::histogram!("shardgate_switchover_hold_seconds").record(held_ms as f64 / 1000.0);
        Ok(Report {
            operation: "switchover".into(),
            shard: group.name.clone(),
            old_primary: group.primary.clone(),
            new_primary: target,
            version,
            took_ms: took,
            held_ms,
            steps: std::mem::take(&mut steps.done),
        })
    }

    /// The replicating replica that applied the most.
    async fn most_advanced(&self, group: &Group) -> Result<String, HaError> {
        let mut best: Option<(u128, String)> = None;
        for r in &group.replicas {
            let Ok(mut s) = Server::connect(r, &self.creds).await else {
                continue;
            };
            let ok = matches!(s.slave_status().await, Ok(Some(st)) if st.connected() && st.sql_running == "Yes");
            let pos = s.gtid("gtid_slave_pos").await.unwrap_or_default();
            s.close().await;
            if ok && best.as_ref().is_none_or(|(t, _)| pos.total() > *t) {
                best = Some((pos.total(), r.clone()));
            }
        }
        best.map(|(_, r)| r).ok_or_else(|| {
            HaError::Refused(format!(
                "no replica of {} is replicating: nothing to switch over to",
                group.name
            ))
        })
    }

    /// Makes a fenced former primary a replica of the primary that replaced it (with GTID:
    /// `current_pos`), and lists it among that shard's replicas again.
    pub async fn rejoin(&self, server: &str) -> Result<Report, HaError> {
        let _op = self.busy()?;
        self.may_decide()?;
        let started = Instant::now();
        let Some(fenced) = lock(&self.fenced).get(server).cloned() else {
            return Err(HaError::Refused(format!(
                "{server} is not a fenced former primary (fenced: {})",
                lock(&self.fenced)
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let map = self.topology.map();
        let group = find_group(&map, &fenced.shard)?;
        let shard_lock = self.lock_shard(&group.name, "rejoin").await?;
        let mut steps = self.start("rejoin", &group.name);
        let mut s = Server::connect(server, &self.creds).await?;
        let (user, pass) = (&self.cfg.replication_user, &self.cfg.replication_password);
        s.replicate_from(&group.primary, user, pass, "current_pos")
            .await?;
        steps.step(
            Some(server),
            format!(
                "{server} is read_only and replicates from {}",
                group.primary
            ),
        );
        let target: GtidPos = {
            let mut p = Server::connect(&group.primary, &self.creds).await?;
            let pos = p.gtid("gtid_binlog_pos").await?;
            p.close().await;
            pos
        };
        // Diverged history (transactions the new primary never got) shows as an IO error,
        // possibly only after the IO thread first connected: watch until it has caught up.
        let deadline =
            Instant::now() + std::time::Duration::from_millis(self.cfg.catchup_timeout_ms);
        let step = std::time::Duration::from_millis(200);
        loop {
            let st = s.slave_status().await?.unwrap_or_default();
            let failed = !st.last_io_error.is_empty() || st.sql_running == "No";
            if !failed && st.connected() && s.wait_applied(&target, step).await.is_ok() {
                steps.step(Some(server), format!("{server} caught up to {target}"));
                break;
            }
            if failed || Instant::now() >= deadline {
                let st = s.slave_status().await?.unwrap_or_default();
                let _ = s.exec("STOP SLAVE").await;
                s.close().await;
                let msg = format!(
                    "{server} cannot replicate from {}: {}; its binlog may hold transactions \
                     the new primary never received (they were not acknowledged to clients): \
                     rebuild it from a replica's backup",
                    group.primary,
                    if st.last_io_error.is_empty() {
                        format!(
                            "IO {}, SQL {}, not at {target} after {} ms",
                            st.io_running, st.sql_running, self.cfg.catchup_timeout_ms
                        )
                    } else {
                        st.last_io_error.clone()
                    }
                );
                self.events
                    .add("failed", Some(&group.name), Some(server), msg.clone());
                return Err(HaError::Refused(msg));
            }
        }
        s.close().await;
        let shard = fenced.shard.clone();
        let version = self
            .topology
            .update(
                &format!("rejoin of {server} to {}", group.name),
                &shard_lock.fence,
                |m| {
                    // The map as it is now, not as it was when the rejoin started.
                    let g = find_group(m, &shard)
                        .map_err(|e| crate::topology::TopologyError::Refused(e.to_string()))?;
                    let mut replicas = g.replicas.clone();
                    if !replicas.iter().any(|r| r == server) {
                        replicas.push(server.to_string());
                    }
                    Ok(with_primary(m, &g.primary, &g.primary, &replicas))
                },
            )
            .await?;
        drop(shard_lock);
        lock(&self.fenced).remove(server);
        steps.step(
            Some(server),
            format!("shard map version {version} published: {server} serves reads again"),
        );
        let took = ms(started);
        self.events.add(
            "rejoin",
            Some(&group.name),
            Some(server),
            format!(
                "{server} rejoined as a replica of {} in {took} ms",
                group.primary
            ),
        );
        Ok(Report {
            operation: "rejoin".into(),
            shard: group.name.clone(),
            old_primary: server.to_string(),
            new_primary: group.primary.clone(),
            version,
            took_ms: took,
            held_ms: 0,
            steps: std::mem::take(&mut steps.done),
        })
    }
}

/// A test-only stop: with `SHARDGATE_TEST_STOP=<point>` the operation stops here for good (a
/// test then kills the proxy, as a crash at the worst moment would).
fn test_stop_point(point: &str) {
    if std::env::var("SHARDGATE_TEST_STOP").is_ok_and(|p| p == point) {
        tracing::warn!(point, "SHARDGATE_TEST_STOP: stopping here until killed");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

impl Ha {
    /// Refuses when `group.primary` is no longer a primary in the current map (another proxy
    /// changed it while this one waited).
    fn still_primary(&self, group: &Group) -> Result<(), HaError> {
        let map = self.topology.map();
        if groups(&map).iter().any(|g| g.primary == group.primary) {
            return Ok(());
        }
        let now = find_group(&map, &group.name)
            .map(|g| g.primary)
            .unwrap_or_default();
        Err(HaError::Refused(format!(
            "{} is no longer the primary of {} (it is {now}): another proxy changed it",
            group.primary, group.name
        )))
    }

    fn intent(&self, operation: &str, group: &Group, new: &str, replicas: &[String]) -> Intent {
        Intent {
            epoch: 0,
            holder: self.store().map(|s| s.id.clone()).unwrap_or_default(),
            operation: operation.to_string(),
            shard: group.name.clone(),
            old_primary: group.primary.clone(),
            new_primary: new.to_string(),
            replicas: replicas.to_vec(),
            state: "promoting".into(),
            at: now_rfc3339(),
        }
    }

    /// Another proxy started promoting `intent.new_primary` and stopped (it died or lost its
    /// lease) before publishing the map. If that server answers, this proxy finishes the job
    /// (it may already be writable; no statement reached it, since no map named it); if not,
    /// the intent is abandoned and `None` says to fail over afresh among the others.
    async fn finish_intent(
        &self,
        group: &Group,
        intent: &Intent,
        shard_lock: &ShardLock,
        steps: &mut Steps<'_>,
    ) -> Result<Option<Report>, HaError> {
        let started = Instant::now();
        steps.step(
            Some(&intent.new_primary),
            format!(
                "found the {} of {} that proxy {} started (epoch {}): promoting {}",
                intent.operation, group.name, intent.holder, intent.epoch, intent.new_primary
            ),
        );
        let mut s = match Server::connect(&intent.new_primary, &self.creds).await {
            Ok(s) => s,
            Err(e) => {
                steps.warn(
                    Some(&intent.new_primary),
                    format!(
                        "{} is unreachable ({e}): the unfinished {} is abandoned",
                        intent.new_primary, intent.operation
                    ),
                );
                self.end_promotion(&group.name, "abandoned").await?;
                return Ok(None);
            }
        };
        let hold = self
            .hold_everywhere(
                &group.name,
                &group.primary,
                &format!("finishing the {} of {}", intent.operation, group.name),
                Duration::from_millis(self.cfg.switchover_drain_ms + 1000),
            )
            .await?;
        if intent.operation == "switchover" {
            // The old primary may be alive: it must not take writes once the map moves.
            if let Ok(mut old) = Server::connect(&intent.old_primary, &self.creds).await {
                old.set_read_only(true).await?;
                old.kill_clients().await?;
                let pos = old.gtid("gtid_binlog_pos").await?;
                let limit = Duration::from_millis(self.cfg.catchup_timeout_ms);
                if !s.read_only().await? {
                    // Writable already: it may have taken nothing (no map named it).
                } else {
                    s.wait_applied(&pos, limit).await?;
                }
                old.close().await;
            }
        }
        s.become_primary().await?;
        let applied = s.gtid("gtid_current_pos").await?;
        self.reset_acked(&intent.new_primary, &applied).await?;
        let version = self
            .topology
            .update(
                &format!(
                    "{} of {} finished by this proxy: {} -> {}",
                    intent.operation, group.name, intent.old_primary, intent.new_primary
                ),
                &shard_lock.fence,
                |m| {
                    Ok(with_primary(
                        m,
                        &intent.old_primary,
                        &intent.new_primary,
                        &intent.replicas,
                    ))
                },
            )
            .await?;
        self.end_promotion(&group.name, "done").await?;
        drop(hold);
        steps.step(
            Some(&intent.new_primary),
            format!(
                "shard map version {version} published: {} takes the writes",
                intent.new_primary
            ),
        );
        let (user, pass) = (&self.cfg.replication_user, &self.cfg.replication_password);
        for r in &intent.replicas {
            let done = async {
                let mut c = Server::connect(r, &self.creds).await?;
                let how = if *r == intent.old_primary {
                    "current_pos"
                } else {
                    "slave_pos"
                };
                c.replicate_from(&intent.new_primary, user, pass, how)
                    .await?;
                c.close().await;
                Ok::<(), HaError>(())
            };
            match done.await {
                Ok(()) => steps.step(
                    Some(r),
                    format!("{r} replicates from {}", intent.new_primary),
                ),
                Err(e) => steps.warn(Some(r), format!("repointing {r}: {e}")),
            }
        }
        s.close().await;
        if intent.operation == "failover" {
            lock(&self.fenced).insert(
                group.primary.clone(),
                Fenced {
                    server: group.primary.clone(),
                    shard: group.name.clone(),
                    replaced_by: intent.new_primary.clone(),
                    since: now_rfc3339(),
                    read_only_set: false,
                },
            );
        }
        let took = ms(started);
        self.events.add(
            "done",
            Some(&group.name),
            Some(&intent.new_primary),
            format!(
                "{} finished in {took} ms: {} is the primary (shard map version {version})",
                intent.operation, intent.new_primary
            ),
        );
        Ok(Some(Report {
            operation: intent.operation.clone(),
            shard: group.name.clone(),
            old_primary: intent.old_primary.clone(),
            new_primary: intent.new_primary.clone(),
            version,
            took_ms: took,
            held_ms: 0,
            steps: std::mem::take(&mut steps.done),
        }))
    }
}

impl Ha {
    /// Finishes promotions other proxies left half done (they died or lost their lease after
    /// making a replica writable, before publishing the map). A lock still held means its
    /// holder is alive and at it: skipped.
    pub async fn resume_intents(&self) -> Result<(), HaError> {
        let Some(store) = self.store().cloned() else {
            return Ok(());
        };
        self.may_decide()?;
        let dir = store.keys.failovers();
        for (_, v) in store.list(dir).await? {
            let Ok(intent) = serde_json::from_slice::<Intent>(&v) else {
                continue;
            };
            if intent.state != "promoting" {
                continue;
            }
            let map = self.topology.map();
            let Some(group) = groups(&map)
                .into_iter()
                .find(|g| g.primary == intent.old_primary)
            else {
                // The map moved on: whoever did it finished or replaced this.
                self.end_promotion(&intent.shard, "done").await?;
                continue;
            };
            let Ok(_op) = self.busy() else { return Ok(()) };
            let shard_lock = match self.lock_shard(&intent.shard, "resume").await {
                Ok(l) => l,
                Err(HaError::Busy(_)) => continue,
                Err(e) => return Err(e),
            };
            let Some(intent) = self.pending_intent(&intent.shard).await? else {
                continue;
            };
            let op = if intent.operation == "switchover" {
                "switchover"
            } else {
                "failover"
            };
            let mut steps = self.start(op, &intent.shard);
            if let Err(e) = self
                .finish_intent(&group, &intent, &shard_lock, &mut steps)
                .await
            {
                self.events.add(
                    "failed",
                    Some(&intent.shard),
                    Some(&intent.new_primary),
                    format!(
                        "finishing the {} left by proxy {}: {e}",
                        intent.operation, intent.holder
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        toml::from_str(
            r#"
[keyspace.app]
sharding = "consistent_hash"
[keyspace.app.tables.t]
shard_key = "id"
[[keyspace.app.shards]]
name = "s0"
primary = "h:1"
replicas = ["h:2", { addr = "h:3", weight = 3 }]
[[keyspace.app.shards]]
name = "s1"
primary = "h:4"
replicas = ["h:5"]
[keyspace.meta]
sharding = "unsharded"
[[keyspace.meta.shards]]
name = "m0"
primary = "h:1"
replicas = ["h:2", { addr = "h:3", weight = 3 }]
"#,
        )
        .expect("map")
    }

    #[test]
    fn groups_name_each_primary_once() {
        let g = groups(&map());
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "app/s0");
        assert_eq!(g[0].replicas, vec!["h:2", "h:3"]);
        assert_eq!(find_group(&map(), "s1").expect("s1").primary, "h:4");
        assert_eq!(find_group(&map(), "meta/m0").expect("m0").primary, "h:1");
        assert!(matches!(
            find_group(&map(), "app/m0"),
            Err(HaError::UnknownShard(_))
        ));
    }

    #[test]
    fn a_new_primary_rewrites_every_shard_naming_the_old_one() {
        let m = with_primary(&map(), "h:1", "h:3", &["h:2".into(), "h:1".into()]);
        for ks in ["app", "meta"] {
            let s = &m.keyspace[ks].shards[0];
            assert_eq!(s.primary, "h:3");
            let r: Vec<_> = s
                .replicas
                .iter()
                .map(|r| (r.addr.as_str(), r.weight))
                .collect();
            assert_eq!(r, vec![("h:2", 1), ("h:1", 1)]);
        }
        assert_eq!(m.keyspace["app"].shards[1], map().keyspace["app"].shards[1]);
        m.validate("test").expect("still valid");
    }
}
