//! One workflow's run, in order: `start` checks and persists it, the copy (`copying`) fills the
//! targets, the forward catch-up streams (`streams`) keep them current, `verify` (`checking`)
//! compares, `cutover` (`cutover`) switches the map, `complete` or `cancel` (`cleanup`) delete
//! what is left where it no longer belongs. Every step persists the state first, so that a
//! proxy killed anywhere resumes (`resume_all`) from what it last wrote.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::manager::{lock, ReshardError, Reshards, StartRequest};
use super::plan::{self, Change};
use super::state::{Direction, Phase, Status, StreamState, TableCopy, Workflow};
use super::streams::StreamHandle;
use crate::ha::events::now_rfc3339;
use crate::ha::keyspace_gate::{KeyspaceGate, Scope};
use crate::ha::server::Creds;
use crate::shardmap::moving::RingChange;
use crate::shardmap::{host_port, Keyspace};

/// Rows per copy, verify and delete chunk.
pub(super) const CHUNK: usize = 1000;

pub struct Runner {
    pub(super) owner: Arc<Reshards>,
    pub(super) state: Mutex<Workflow>,
    /// Serializes saves, so an older state never lands after a newer one.
    save_lock: tokio::sync::Mutex<()>,
    /// One command at a time (verify, cutover, rollback, complete, cancel).
    pub(super) op: tokio::sync::Mutex<()>,
    /// Tells the copy, verify and cleanup tasks to stop.
    pub(super) stop: watch::Sender<bool>,
    pub(super) streams: Mutex<Vec<StreamHandle>>,
    /// The copy, verify or cleanup task running now.
    pub(super) background: Mutex<Option<JoinHandle<()>>>,
    /// When this process began the copy, and the rows copied before (for rows/s).
    copy_clock: Mutex<(Instant, u64)>,
    /// With etcd: the lease under which this proxy holds the workflow's coordinator lock (0:
    /// it does not).
    lock_lease: AtomicI64,
}

impl Runner {
    fn new(owner: Arc<Reshards>, w: Workflow) -> Arc<Runner> {
        let copied = w.tables.iter().map(|t| t.rows_copied).sum();
        Arc::new(Runner {
            owner,
            state: Mutex::new(w),
            save_lock: tokio::sync::Mutex::new(()),
            op: tokio::sync::Mutex::new(()),
            stop: watch::channel(false).0,
            streams: Mutex::new(Vec::new()),
            background: Mutex::new(None),
            copy_clock: Mutex::new((Instant::now(), copied)),
            lock_lease: AtomicI64::new(0),
        })
    }

    /// Whether this proxy may act for the workflow now: always without etcd; with it, while
    /// it holds the coordinator lock under its current lease, renewed within 2/3 of its TTL
    /// (before another proxy can count it gone and take over). The copy and the streams
    /// check it before each write and wait while it is false.
    pub(super) fn coordinating(&self) -> bool {
        let Some(store) = self.owner.topology.store() else {
            return true;
        };
        let lease = self.lock_lease.load(Ordering::SeqCst);
        let fresh = Duration::from_millis(store.config().lease_ttl_secs * 2000 / 3);
        lease != 0 && lease == store.lease() && store.renewed_within(fresh)
    }

    /// Whether this proxy claimed the coordinator lock (under some lease).
    pub(super) fn holds_lock(&self) -> bool {
        self.lock_lease.load(Ordering::SeqCst) != 0
    }

    pub(super) fn set_lock_lease(&self, lease: i64) {
        self.lock_lease.store(lease, Ordering::SeqCst);
    }

    /// Waits while this proxy may not act for the workflow; false if told to stop meanwhile.
    pub(super) async fn until_coordinating(&self, stopped: &watch::Receiver<bool>) -> bool {
        while !self.coordinating() {
            if *stopped.borrow() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Stops whatever the workflow runs here: the background task and every stream.
    pub(super) async fn halt(&self) {
        let _ = self.stop.send(true);
        self.stop_streams(Direction::Forward).await;
        self.stop_streams(Direction::Reverse).await;
    }

    pub fn keyspace(&self) -> String {
        lock(&self.state).keyspace.clone()
    }

    pub fn phase(&self) -> Phase {
        lock(&self.state).phase
    }

    /// Changes the state in memory (see `save`).
    pub(super) fn edit<T>(&self, f: impl FnOnce(&mut Workflow) -> T) -> T {
        let mut w = lock(&self.state);
        let r = f(&mut w);
        w.updated_at = now_rfc3339();
        r
    }

    /// Persists the state as it is now.
    pub(super) async fn save(&self) -> Result<(), ReshardError> {
        let _g = self.save_lock.lock().await;
        let w = lock(&self.state).clone();
        self.owner.store.save(&w).await
    }

    /// `edit` then `save`.
    pub(super) async fn update<T>(
        &self,
        f: impl FnOnce(&mut Workflow) -> T,
    ) -> Result<T, ReshardError> {
        let r = self.edit(f);
        self.save().await?;
        Ok(r)
    }

    /// An event in `shardgate events` and the log.
    pub(super) fn event(&self, message: impl Into<String>) {
        let message = message.into();
        let ks = self.keyspace();
        tracing::info!(keyspace = %ks, "reshard: {message}");
        self.owner.ha.events.add(
            "reshard",
            Some(&ks),
            None,
            format!("reshard {ks}: {message}"),
        );
    }

    pub(super) fn creds(&self) -> Creds {
        self.owner.ha.creds().clone()
    }

    /// A shard's primary now: the live map's (a failover may have moved it), else the plan's
    /// (a shard the workflow adds, or one it removed).
    pub(super) fn primary_of(&self, shard: &str) -> Option<String> {
        let (ks, plan_map, before) = {
            let w = lock(&self.state);
            (w.keyspace.clone(), w.plan.new_map.clone(), w.before.clone())
        };
        let live = self.owner.topology.map();
        let find = |k: Option<&Keyspace>| {
            k.and_then(|k| k.shards.iter().find(|s| s.name == shard))
                .map(|s| s.primary.clone())
        };
        find(live.keyspace.get(&ks))
            .or_else(|| find(plan_map.keyspace.get(&ks)))
            .or_else(|| find(Some(&before)))
    }

    /// A shard's replicas, as in the plan's new map (or the old keyspace for a removed one).
    pub(super) fn replicas_of(&self, shard: &str) -> Vec<String> {
        let w = lock(&self.state);
        let ks = w.keyspace.clone();
        let live = self.owner.topology.map();
        let found: Vec<String> = [
            live.keyspace.get(&ks),
            w.plan.new_map.keyspace.get(&ks),
            Some(&w.before),
        ]
        .into_iter()
        .flatten()
        .find_map(|k| k.shards.iter().find(|s| s.name == shard))
        .map(|s| s.replica_addrs().map(str::to_string).collect())
        .unwrap_or_default();
        found
    }

    /// Connects to `shard`'s primary as the control plane's user.
    pub(super) async fn connect_shard(&self, shard: &str) -> Result<Conn, ReshardError> {
        let addr = self
            .primary_of(shard)
            .ok_or_else(|| ReshardError::Failed(format!("no shard named {shard}")))?;
        connect(&addr, &self.creds()).await
    }

    /// Whether a key hash moves from `from` to `to` (shard names) in this workflow.
    pub(super) fn mover(&self, from: &str, to: &str) -> Arc<dyn Fn(u64) -> bool + Send + Sync> {
        let w = lock(&self.state);
        let old = w.before.ring();
        let new = w
            .plan
            .new_map
            .keyspace
            .get(&w.keyspace)
            .map(Keyspace::ring)
            .unwrap_or_else(|| w.before.ring());
        let fi = old.shard_names().iter().position(|n| n == from);
        let ti = new.shard_names().iter().position(|n| n == to);
        match (fi, ti) {
            (Some(fi), Some(ti)) => {
                Arc::new(move |h| old.shard_for(h) == fi && new.shard_for(h) == ti)
            }
            _ => Arc::new(|_| false),
        }
    }

    /// The ring change of the workflow (the same keys move either way, so it serves the
    /// rollback too).
    pub(super) fn ring_change(&self) -> RingChange {
        let w = lock(&self.state);
        let before = &w.before;
        let after = w.plan.new_map.keyspace.get(&w.keyspace).unwrap_or(before);
        let names = |k: &Keyspace| k.shards.iter().map(|s| s.name.clone()).collect();
        RingChange {
            before: names(before),
            before_vnodes: before.vnodes,
            after: names(after),
            after_vnodes: after.vnodes,
        }
    }

    /// A hold of this workflow's moving keys on its keyspace's gate, here.
    pub(super) fn hold_moving(&self, switching: bool) -> (Held, RingChange) {
        let change = self.ring_change();
        let gate = self.owner.ha.keyspaces.gate(&self.keyspace());
        let scope = Some(change.moving_shared());
        (Held::new(gate, scope, switching), change)
    }

    /// The shard key column of a sharded table (from the shard map), or `None` for a
    /// reference table (whose copy needs no key).
    pub(super) fn key_column(&self, table: &str) -> Option<String> {
        let w = lock(&self.state);
        w.before.tables.get(table).and_then(|r| r.shard_key.clone())
    }

    pub fn status(&self) -> Status {
        let w = lock(&self.state).clone();
        let (since, before) = *lock(&self.copy_clock);
        Status::new(w, |rows_copied| {
            let secs = since.elapsed().as_secs_f64();
            if secs > 0.0 {
                rows_copied.saturating_sub(before) as f64 / secs
            } else {
                0.0
            }
        })
    }

    /// Starts `fut` as the workflow's background task (one at a time).
    pub(super) fn background(
        self: &Arc<Self>,
        what: &str,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ReshardError> {
        let mut slot = lock(&self.background);
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return Err(ReshardError::Conflict(format!(
                "keyspace {}: another step of the workflow is running; {what} must wait for it \
                 (see reshard status)",
                self.keyspace()
            )));
        }
        // A panic must not leave the workflow looking busy for ever: it fails, saying so.
        let (me, what) = (self.clone(), what.to_string());
        *slot = Some(tokio::spawn(async move {
            if let Err(e) = tokio::spawn(fut).await {
                if e.is_panic() {
                    let e =
                        ReshardError::Failed(format!("{what} stopped on an internal error: {e}"));
                    me.fail(&e).await;
                }
            }
        }));
        Ok(())
    }

    /// Records an error that stops the workflow where it is (`Failed`), keeping the old map.
    pub(super) async fn fail(&self, e: &ReshardError) {
        self.event(format!("stopped: {e}"));
        let _ = self
            .update(|w| {
                w.error = Some(e.to_string());
                if !w.phase.switched() {
                    w.phase = Phase::Failed;
                }
            })
            .await;
    }

    /// Starts the streams of `direction` that are not running.
    pub(super) fn start_streams(self: &Arc<Self>, direction: Direction) {
        let wanted: Vec<usize> = lock(&self.state)
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.direction == direction)
            .map(|(i, _)| i)
            .collect();
        let mut running = lock(&self.streams);
        for i in wanted {
            if running.iter().any(|h| h.index == i) {
                continue;
            }
            running.push(super::streams::spawn(self.clone(), i));
        }
    }

    /// Stops the streams of `direction` (each stores its position before it ends).
    pub(super) async fn stop_streams(&self, direction: Direction) {
        let stopping: Vec<StreamHandle> = {
            let mut running = lock(&self.streams);
            let (stop, keep): (Vec<_>, Vec<_>) =
                running.drain(..).partition(|h| h.direction == direction);
            *running = keep;
            stop
        };
        for h in stopping {
            h.stop().await;
        }
        self.edit(|w| {
            for s in w.streams.iter_mut().filter(|s| s.direction == direction) {
                s.state = "stopped".into();
            }
        });
    }

    /// The running streams of `direction`, for the cutover's wait.
    pub(super) fn stream_positions(
        &self,
        direction: Direction,
    ) -> Vec<(usize, watch::Receiver<crate::ha::gtid::GtidPos>)> {
        lock(&self.streams)
            .iter()
            .filter(|h| h.direction == direction)
            .map(|h| (h.index, h.applied.clone()))
            .collect()
    }

    pub async fn verify(self: Arc<Self>) -> Result<(), ReshardError> {
        super::checking::start(self).await
    }

    pub async fn cutover(
        self: &Arc<Self>,
        max_pause: Duration,
        rollback: bool,
    ) -> Result<super::state::CutoverAttempt, ReshardError> {
        super::cutover::run(self, max_pause, rollback).await
    }

    pub async fn complete(self: Arc<Self>) -> Result<(), ReshardError> {
        super::cleanup::complete(self).await
    }

    pub async fn cancel(self: Arc<Self>) -> Result<(), ReshardError> {
        super::cleanup::cancel(self).await
    }

    /// Goes on from the persisted phase (at start, and at `start`).
    fn run_from_phase(self: &Arc<Self>) {
        match self.phase() {
            Phase::Copying => {
                let me = self.clone();
                let _ = self.background("the copy", async move {
                    super::copying::run(me).await;
                });
            }
            Phase::Running => self.start_streams(Direction::Forward),
            Phase::Switched => self.start_streams(Direction::Reverse),
            Phase::Completing => {
                let me = self.clone();
                let _ = self.background("complete", async move {
                    super::cleanup::run_complete(me).await;
                });
            }
            _ => {}
        }
    }
}

/// A test-only stop at a step of the workflow (`SHARDGATE_TEST_RESHARD_STOP=<step>`: `copying`,
/// `copied`, `drained`, `caught_up`, `publishing`, `published`): the proxy
/// exits there, as a kill -9 would stop it.
pub(super) fn test_stop(step: &str) {
    if std::env::var("SHARDGATE_TEST_RESHARD_STOP").is_ok_and(|s| s == step) {
        tracing::warn!(step, "SHARDGATE_TEST_RESHARD_STOP: exiting here");
        std::process::exit(86);
    }
}

/// A hold of the keyspace's commands that touch the workflow's moving keys, released when
/// dropped (an early return, an error, a panic). A cutover's switches the map (see
/// `KeyspaceGate::acquire_switching`); a verify's does not.
pub(super) struct Held {
    pub(super) gate: Arc<KeyspaceGate>,
    pub(super) scope: Scope,
    switching: bool,
}

impl Held {
    pub(super) fn new(gate: Arc<KeyspaceGate>, scope: Scope, switching: bool) -> Held {
        if switching {
            gate.acquire_switching(scope.clone());
        } else {
            gate.acquire(scope.clone());
        }
        Held {
            gate,
            scope,
            switching,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.switching {
            self.gate.release_switching(&self.scope);
        } else {
            self.gate.release(&self.scope);
        }
    }
}

/// Connects to `addr` as `creds`, over TCP.
pub(super) async fn connect(addr: &str, creds: &Creds) -> Result<Conn, ReshardError> {
    let (host, port) = host_port(addr)
        .ok_or_else(|| ReshardError::Failed(format!("'{addr}' is not host:port")))?;
    let opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(creds.user.clone()))
        .pass(Some(creds.password.clone()))
        .prefer_socket(false);
    let limit = creds.connect_timeout.max(Duration::from_secs(2));
    match tokio::time::timeout(limit, Conn::new(opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(ReshardError::Failed(format!("connecting to {addr}: {e}"))),
        Err(_) => Err(ReshardError::Failed(format!(
            "connecting to {addr}: no answer within {limit:?}"
        ))),
    }
}

/// `@@gtid_binlog_pos` of a connected server.
pub(super) async fn binlog_pos(conn: &mut Conn, server: &str) -> Result<String, ReshardError> {
    let p: Option<String> = conn
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .map_err(|e| ReshardError::Failed(format!("{server}: reading gtid_binlog_pos: {e}")))?;
    Ok(p.unwrap_or_default())
}

pub(super) fn copy_err(e: super::copy::CopyError) -> ReshardError {
    ReshardError::Failed(e.to_string())
}

/// `reshard start`.
pub async fn start(owner: &Arc<Reshards>, req: StartRequest) -> Result<Status, ReshardError> {
    let map = owner.topology.map();
    let (keyspace, plan) = match req.plan {
        Some(p) => {
            let live = plan::plan(&map, &p.keyspace, &p.change)?;
            if live.shards_before != p.shards_before || live.new_map != p.new_map {
                return Err(ReshardError::Conflict(format!(
                    "the shard map of {} changed since this plan was made: make a new one \
                     (reshard plan)",
                    p.keyspace
                )));
            }
            (p.keyspace.clone(), live)
        }
        None => {
            let change = req.change()?;
            (
                req.keyspace.clone(),
                plan::plan(&map, &req.keyspace, &change)?,
            )
        }
    };
    if let Some(r) = lock(&owner.runners).get(&keyspace) {
        // A failed workflow may still run streams: cancel stops them and removes its copies.
        if !r.phase().is_final() || r.phase() == Phase::Failed {
            return Err(ReshardError::Conflict(format!(
                "keyspace {keyspace} already has a reshard workflow in phase {:?}: finish it \
                 (complete, rollback or cancel) first",
                r.phase()
            )));
        }
    }
    let mut plan = plan;
    super::facts::estimate(&mut plan, &map, owner.ha.creds()).await;
    let before = map
        .keyspace
        .get(&keyspace)
        .cloned()
        .ok_or_else(|| ReshardError::NotFound(format!("no keyspace named {keyspace}")))?;
    // Tables on the shards that the shard map does not describe: the proxy could not route
    // them after the move.
    let mut blockers = plan.blockers.clone();
    for t in &plan.tables {
        if t.kind == "sharded"
            && before
                .tables
                .get(&t.table)
                .and_then(|r| r.shard_key.as_ref())
                .is_none()
        {
            blockers.push(format!(
                "table {keyspace}.{} has no shard key in the shard map: add a [keyspace.{keyspace}.tables.{}] rule (shard_key or reference)",
                t.table, t.table
            ));
        }
    }
    if let Change::Add(s) = &plan.change {
        let creds = owner.ha.creds().clone();
        match connect(&s.primary, &creds).await {
            Ok(mut c) => {
                let ro: Option<u8> = c
                    .query_first("SELECT @@GLOBAL.read_only")
                    .await
                    .ok()
                    .flatten();
                if ro == Some(1) {
                    blockers.push(format!(
                        "the new shard's primary {} is read_only: it must take writes",
                        s.primary
                    ));
                }
                let _ = c.disconnect().await;
            }
            Err(e) => blockers.push(format!("the new shard's primary does not answer: {e}")),
        }
    }
    if !blockers.is_empty() {
        return Err(ReshardError::Conflict(format!(
            "reshard start refused:\n- {}",
            blockers.join("\n- ")
        )));
    }
    let lease = match owner.topology.store() {
        Some(store) => {
            if let Some(w) = owner.store.load_shared(&keyspace).await? {
                if !w.phase.is_final() {
                    return Err(ReshardError::Conflict(format!(
                        "keyspace {keyspace} has an unfinished reshard workflow coordinated by                          proxy {} (phase {:?}): finish it there, or, if that proxy is gone,                          another proxy takes it over within seconds",
                        w.coordinator, w.phase
                    )));
                }
            }
            match super::coordination::claim(store, &keyspace).await? {
                super::coordination::Claim::Ours(lease) => lease,
                super::coordination::Claim::Theirs(holder) => {
                    return Err(ReshardError::Conflict(format!(
                        "proxy {holder} holds the reshard lock of keyspace {keyspace}"
                    )))
                }
            }
        }
        None => 0,
    };
    let w = new_workflow(owner, &keyspace, plan, before).await?;
    owner.topology.health().add_map(&w.plan.new_map);
    let runner = Runner::new(owner.clone(), w);
    runner.set_lock_lease(lease);
    runner.save().await?;
    let msg = {
        let w = lock(&runner.state);
        format!(
            "started: {} ({} table copies, {} streams)",
            w.plan.change.describe(),
            w.tables.len(),
            w.streams.len()
        )
    };
    runner.event(msg);
    lock(&owner.runners).insert(keyspace, runner.clone());
    runner.run_from_phase();
    Ok(runner.status())
}

/// The workflow's tables and streams, with each source's position read now: the catch-up
/// starts there, before the first chunk is read.
async fn new_workflow(
    owner: &Arc<Reshards>,
    keyspace: &str,
    plan: plan::Plan,
    before: Keyspace,
) -> Result<Workflow, ReshardError> {
    let creds = owner.ha.creds().clone();
    let id = format!("{keyspace}-{}", crate::ha::events::now_ms());
    let primary = |name: &str| {
        before
            .shards
            .iter()
            .chain(
                plan.new_map
                    .keyspace
                    .get(keyspace)
                    .map(|k| k.shards.as_slice())
                    .unwrap_or_default(),
            )
            .find(|s| s.name == name)
            .map(|s| s.primary.clone())
    };
    let mut positions: BTreeMap<String, String> = BTreeMap::new();
    let mut pos_of = async |shard: &str| -> Result<String, ReshardError> {
        if let Some(p) = positions.get(shard) {
            return Ok(p.clone());
        }
        let addr = primary(shard)
            .ok_or_else(|| ReshardError::Failed(format!("no shard named {shard}")))?;
        let mut c = connect(&addr, &creds).await?;
        let p = binlog_pos(&mut c, &addr).await?;
        let _ = c.disconnect().await;
        positions.insert(shard.to_string(), p.clone());
        Ok(p)
    };
    let estimate = |table: &str, key: &str| -> u64 {
        plan.tables
            .iter()
            .find(|t| t.table == table)
            .and_then(|t| t.rows.get(key))
            .copied()
            .unwrap_or(0)
    };
    let mut tables = Vec::new();
    let mut streams = Vec::new();
    let reference: Vec<&str> = plan
        .tables
        .iter()
        .filter(|t| t.kind == "reference")
        .map(|t| t.table.as_str())
        .collect();
    for m in &plan.moves {
        for t in plan.tables.iter().filter(|t| t.kind == "sharded") {
            tables.push(TableCopy {
                table: t.table.clone(),
                kind: "sharded".into(),
                source: m.from.clone(),
                target: m.to.clone(),
                rows_estimated: estimate(&t.table, &format!("{} -> {}", m.from, m.to)),
                rows_read: 0,
                rows_copied: 0,
                last_key: None,
                done: false,
            });
        }
        let start = pos_of(&m.from).await?;
        streams.push(stream(
            &id,
            Direction::Forward,
            "sharded",
            &m.from,
            &m.to,
            start,
        ));
    }
    match &plan.change {
        Change::Add(new) if !reference.is_empty() => {
            let from = plan.shards_before[0].clone();
            for t in &reference {
                tables.push(TableCopy {
                    table: t.to_string(),
                    kind: "reference".into(),
                    source: from.clone(),
                    target: new.name.clone(),
                    rows_estimated: estimate(t, &format!("{from} -> {}", new.name)),
                    rows_read: 0,
                    rows_copied: 0,
                    last_key: None,
                    done: false,
                });
            }
            let start = pos_of(&from).await?;
            streams.push(stream(
                &id,
                Direction::Forward,
                "reference",
                &from,
                &new.name,
                start,
            ));
        }
        _ => {}
    }
    // Reverse streams get their start positions at the cutover.
    let forward: Vec<StreamState> = streams.clone();
    for s in &forward {
        if s.kind == "sharded" {
            streams.push(stream(
                &id,
                Direction::Reverse,
                "sharded",
                &s.target,
                &s.source,
                String::new(),
            ));
        }
    }
    if let Change::Remove(gone) = &plan.change {
        if !reference.is_empty() {
            if let Some(from) = plan.shards_after.first() {
                streams.push(stream(
                    &id,
                    Direction::Reverse,
                    "reference",
                    from,
                    gone,
                    String::new(),
                ));
            }
        }
    }
    let now = now_rfc3339();
    Ok(Workflow {
        id,
        keyspace: keyspace.to_string(),
        plan,
        before,
        phase: Phase::Copying,
        started_at: now.clone(),
        updated_at: now,
        coordinator: owner
            .topology
            .store()
            .map(|s| s.id.clone())
            .unwrap_or_else(|| "local".into()),
        tables,
        streams,
        verify: None,
        cutovers: Vec::new(),
        rows_deleted: 0,
        error: None,
    })
}

fn stream(
    workflow: &str,
    direction: Direction,
    kind: &str,
    source: &str,
    target: &str,
    start: String,
) -> StreamState {
    // Unique: a reverse stream runs the other way between the same shards, and a later
    // workflow's stream must not find this one's stored position.
    let suffix = if kind == "reference" {
        " reference"
    } else {
        ""
    };
    StreamState {
        name: format!("{workflow} {source}->{target}{suffix}"),
        direction,
        kind: kind.to_string(),
        source: source.to_string(),
        target: target.to_string(),
        start_position: start,
        applied_position: String::new(),
        transactions: 0,
        rows_applied: 0,
        lag_seconds: None,
        behind_transactions: None,
        state: "waiting".into(),
    }
}

/// At startup: every persisted workflow is shown again, and the unfinished ones go on. A
/// cutover interrupted mid-way ends on the side of its commit point that the live map shows.
pub async fn resume_all(owner: &Arc<Reshards>) {
    let found = match owner.store.load_all().await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read reshard workflows: none resumed");
            return;
        }
    };
    for w in found {
        if owner.topology.store().is_some() && !w.phase.is_final() {
            // With etcd, `coordination::follow` resumes it once this proxy holds its lock
            // (its own, or one whose coordinator is gone); until then status reads etcd.
            continue;
        }
        let final_phase = w.phase.is_final();
        let keyspace = w.keyspace.clone();
        owner.topology.health().add_map(&w.plan.new_map);
        let runner = Runner::new(owner.clone(), w);
        lock(&owner.runners).insert(keyspace.clone(), runner.clone());
        if final_phase {
            continue;
        }
        super::cutover::settle_interrupted(&runner).await;
        runner.event(format!("resumed in phase {:?}", runner.phase()));
        runner.run_from_phase();
    }
}

/// This proxy claimed the lock of `w`'s keyspace under `lease` (see `coordination`): it
/// coordinates the workflow from its stored state, as a restart would.
pub(super) async fn take_over(owner: &Arc<Reshards>, mut w: Workflow, lease: i64) {
    let Some(me) = owner.topology.store().map(|s| s.id.clone()) else {
        return;
    };
    let took = w.coordinator != me;
    let from = std::mem::replace(&mut w.coordinator, me);
    let keyspace = w.keyspace.clone();
    owner.topology.health().add_map(&w.plan.new_map);
    let runner = Runner::new(owner.clone(), w);
    runner.set_lock_lease(lease);
    if let Err(e) = runner.save().await {
        tracing::warn!(error = %e, keyspace = %keyspace, "taking a reshard workflow over");
        return;
    }
    lock(&owner.runners).insert(keyspace, runner.clone());
    super::cutover::settle_interrupted(&runner).await;
    if took {
        runner.event(format!(
            "took the workflow over from proxy {from} (gone) in phase {:?}",
            runner.phase()
        ));
    } else {
        runner.event(format!("resumed in phase {:?}", runner.phase()));
    }
    runner.run_from_phase();
}
