//! Coordination between proxies that share a topology store (etcd): one operation per shard
//! at a time (a lease-bound lock), a fencing epoch and an intent written before a promoted
//! replica is made writable (so the next lock holder can finish or undo it), and statement
//! holds that every live proxy acknowledges.
//!
//! With the file store there is one proxy: the lock is the local operation mutex, holds are
//! the local gate, and what this process acknowledged is all there is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, TxnOp};
use serde::{Deserialize, Serialize};

use super::acked::{Acked, Known};
use super::events::now_rfc3339;
use super::gate::HoldGuard;
use super::gtid::GtidPos;
use super::keyspace_gate::Scope;
use super::{Ha, HaError};
use crate::shardmap::moving::RingChange;
use crate::topology::etcd::{AckedRecord, HoldAck, HoldRecord};
use crate::topology::{EtcdStore, Fence};

/// A shard's lock, held until dropped (then deleted if still ours).
pub struct ShardLock {
    store: Option<Arc<EtcdStore>>,
    pub fence: Vec<Fence>,
}

impl Drop for ShardLock {
    fn drop(&mut self) {
        let (Some(store), Some(f)) = (self.store.take(), self.fence.first().cloned()) else {
            return;
        };
        let s = store.clone();
        store.spawn(async move {
            let _ = s
                .txn(
                    vec![Compare::lease(f.key.clone(), CompareOp::Equal, f.lease)],
                    vec![TxnOp::delete(f.key, None)],
                )
                .await;
        });
    }
}

/// What the lock key says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    holder: String,
    operation: String,
    since: String,
}

/// A promotion under way: written with the new fencing epoch before the new primary is made
/// writable; `done` once the map naming it is published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Intent {
    pub epoch: u64,
    pub holder: String,
    /// `failover` or `switchover`.
    pub operation: String,
    pub shard: String,
    pub old_primary: String,
    pub new_primary: String,
    /// Every replica of the group when it started (the new primary's replicas once done).
    pub replicas: Vec<String>,
    /// `promoting`, `done` or `abandoned`.
    pub state: String,
    pub at: String,
}

/// Statements held on every live proxy until dropped (then released everywhere: the hold key
/// is deleted after whatever was published before the drop).
/// A coordinated hold for a reshard cutover names `reshard:<keyspace>` where a failover's
/// names its shard.
pub const RESHARD_HOLD: &str = "reshard:";

/// What a coordinated hold holds.
struct HoldWhat<'s> {
    shard: &'s str,
    primary: &'s str,
    grace_ms: Option<u64>,
    moving: Option<RingChange>,
}

pub struct ClusterHold<'a> {
    /// This proxy's own hold (a reshard cutover holds its keyspace gate itself).
    _local: Option<HoldGuard<'a>>,
    store: Option<Arc<EtcdStore>>,
    /// The hold's record as written: only that one is deleted at the end (a later hold of the
    /// same shard or keyspace may have replaced it by then).
    record: Vec<u8>,
    key: String,
    acks_key: String,
    /// Acknowledgements received: proxy -> ack.
    pub acks: BTreeMap<String, HoldAck>,
    /// Live proxies that did not acknowledge in time.
    pub missing: Vec<String>,
}

impl Drop for ClusterHold<'_> {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (key, acks) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.acks_key),
        );
        let s = store.clone();
        let record = std::mem::take(&mut self.record);
        store.spawn(async move {
            let when = vec![Compare::value(key.clone(), CompareOp::Equal, record)];
            let _ = s.txn(when, vec![TxnOp::delete(key, None)]).await;
            let _ = s.delete(acks, true).await;
        });
    }
}

impl Ha {
    /// The shared store, when there is one.
    pub fn store(&self) -> Option<&Arc<EtcdStore>> {
        self.topology.store()
    }

    /// Refuses to decide anything while the shared store is unreachable: another proxy may be
    /// deciding with what this one cannot see.
    pub fn may_decide(&self) -> Result<(), HaError> {
        match self.store() {
            Some(s) if !s.is_up() => Err(HaError::StoreDown),
            _ => Ok(()),
        }
    }

    /// Takes `shard`'s lock for `operation`, or says who holds it.
    pub async fn lock_shard(&self, shard: &str, operation: &str) -> Result<ShardLock, HaError> {
        let Some(store) = self.store().cloned() else {
            return Ok(ShardLock {
                store: None,
                fence: Vec::new(),
            });
        };
        self.may_decide()?;
        let lease = store.lease();
        let key = store.keys.lock(shard);
        let rec = LockRecord {
            holder: store.id.clone(),
            operation: operation.to_string(),
            since: now_rfc3339(),
        };
        let value = serde_json::to_vec(&rec).map_err(|e| HaError::Config(e.to_string()))?;
        let took = store
            .txn(
                vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)],
                vec![TxnOp::put(
                    key.clone(),
                    value,
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )],
            )
            .await?;
        if !took {
            let holder = match store.get(key.clone()).await? {
                Some((v, _)) => serde_json::from_slice::<LockRecord>(&v)
                    .map(|r| {
                        format!(
                            "{} of {shard} by proxy {} since {}",
                            r.operation, r.holder, r.since
                        )
                    })
                    .unwrap_or_else(|_| format!("an operation on {shard}")),
                None => format!("an operation on {shard} that just ended"),
            };
            return Err(HaError::Busy(holder));
        }
        Ok(ShardLock {
            store: Some(store),
            fence: vec![Fence {
                key,
                lease,
                what: shard.to_string(),
            }],
        })
    }

    /// The unfinished promotion of `shard` another proxy left, if any.
    pub async fn pending_intent(&self, shard: &str) -> Result<Option<Intent>, HaError> {
        let Some(store) = self.store() else {
            return Ok(None);
        };
        let Some((v, _)) = store.get(store.keys.failover(shard)).await? else {
            return Ok(None);
        };
        let intent: Intent = serde_json::from_slice(&v)
            .map_err(|e| HaError::Config(format!("unreadable failover record of {shard}: {e}")))?;
        Ok((intent.state == "promoting").then_some(intent))
    }

    /// Raises `shard`'s fencing epoch and records the intent, only while `lock` is still ours:
    /// past this point another proxy that takes the lock knows what was started.
    pub async fn begin_promotion(
        &self,
        lock: &ShardLock,
        mut intent: Intent,
    ) -> Result<u64, HaError> {
        let Some(store) = self.store() else {
            return Ok(0);
        };
        let key = store.keys.epoch(&intent.shard);
        let (epoch, rev) = match store.get(key.clone()).await? {
            Some((v, rev)) => (
                String::from_utf8_lossy(&v)
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0),
                rev,
            ),
            None => (0, 0),
        };
        intent.epoch = epoch + 1;
        let mut when: Vec<Compare> = lock
            .fence
            .iter()
            .map(|f| Compare::lease(f.key.clone(), CompareOp::Equal, f.lease))
            .collect();
        when.push(Compare::mod_revision(key.clone(), CompareOp::Equal, rev));
        let text = serde_json::to_vec(&intent).map_err(|e| HaError::Config(e.to_string()))?;
        let ok = store
            .txn(
                when,
                vec![
                    TxnOp::put(key, intent.epoch.to_string(), None),
                    TxnOp::put(store.keys.failover(&intent.shard), text, None),
                ],
            )
            .await?;
        if !ok {
            return Err(HaError::Publish(crate::topology::TopologyError::LostLock(
                intent.shard.clone(),
            )));
        }
        Ok(intent.epoch)
    }

    /// Marks `shard`'s intent `state` (`done`, `abandoned`).
    pub async fn end_promotion(&self, shard: &str, state: &str) -> Result<(), HaError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let key = store.keys.failover(shard);
        if let Some((v, _)) = store.get(key.clone()).await? {
            if let Ok(mut i) = serde_json::from_slice::<Intent>(&v) {
                i.state = state.to_string();
                i.at = now_rfc3339();
                let text = serde_json::to_vec(&i).map_err(|e| HaError::Config(e.to_string()))?;
                store.put(key, text, false).await?;
            }
        }
        Ok(())
    }

    /// Holds new statements here and on every live proxy, and waits (at most `limit`) until
    /// each acknowledged that it holds and drained. A proxy whose lease expires meanwhile is
    /// gone and not waited for.
    pub async fn hold_everywhere(
        &self,
        shard: &str,
        primary: &str,
        reason: &str,
        limit: Duration,
    ) -> Result<ClusterHold<'_>, HaError> {
        let what = HoldWhat {
            shard,
            primary,
            grace_ms: None,
            moving: None,
        };
        self.hold_everywhere_as(what, reason, Some(self.gate.hold()), limit)
            .await
    }

    /// A reshard's hold of `keyspace` on every other live proxy: each holds the keyspace's new
    /// statements that touch the keys `moving` moves (every key without it) and drains
    /// before it acknowledges; with `doom` (a cutover), it first lets open transactions
    /// commit for that grace, then dooms those that touched the held keys. The caller holds
    /// this proxy's keyspace gate itself.
    pub async fn hold_keyspace_everywhere(
        &self,
        keyspace: &str,
        reason: &str,
        moving: Option<RingChange>,
        doom: Option<Duration>,
        limit: Duration,
    ) -> Result<ClusterHold<'_>, HaError> {
        let shard = format!("{RESHARD_HOLD}{keyspace}");
        let grace = doom.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX));
        let what = HoldWhat {
            shard: &shard,
            primary: "",
            grace_ms: grace,
            moving,
        };
        self.hold_everywhere_as(what, reason, None, limit).await
    }

    async fn hold_everywhere_as<'a>(
        &'a self,
        what: HoldWhat<'_>,
        reason: &str,
        local: Option<HoldGuard<'a>>,
        limit: Duration,
    ) -> Result<ClusterHold<'a>, HaError> {
        let Some(store) = self.store().cloned() else {
            return Ok(ClusterHold {
                _local: local,
                store: None,
                record: Vec::new(),
                key: String::new(),
                acks_key: String::new(),
                acks: BTreeMap::new(),
                missing: Vec::new(),
            });
        };
        let rec = HoldRecord {
            id: format!("{}-{}", store.id, crate::ha::events::now_ms()),
            shard: what.shard.to_string(),
            primary: what.primary.to_string(),
            by: store.id.clone(),
            reason: reason.to_string(),
            grace_ms: what.grace_ms,
            moving: what.moving,
        };
        let key = store.keys.hold(what.shard);
        let acks_key = store.keys.hold_acks(&rec.id);
        let text = serde_json::to_vec(&rec).map_err(|e| HaError::Config(e.to_string()))?;
        store.put(key.clone(), text.clone(), true).await?;
        let mut hold = ClusterHold {
            _local: local,
            store: Some(store.clone()),
            record: text,
            key,
            acks_key: acks_key.clone(),
            acks: BTreeMap::new(),
            missing: Vec::new(),
        };
        let deadline = Instant::now() + limit;
        loop {
            let members = store.members().await?;
            hold.acks = store
                .list(acks_key.clone())
                .await?
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice::<HoldAck>(&v).ok())
                .map(|a| (a.proxy.clone(), a))
                .collect();
            hold.missing = members
                .iter()
                .map(|m| m.id.clone())
                .filter(|id| *id != store.id && !hold.acks.contains_key(id))
                .collect();
            if hold.missing.is_empty() || Instant::now() >= deadline {
                return Ok(hold);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every write acknowledged on `primary` by any proxy: this process's, what every proxy
    /// published (earlier processes included), and the final figures in `acks`.
    pub async fn acked_everywhere(
        &self,
        primary: &str,
        acks: &BTreeMap<String, HoldAck>,
    ) -> Result<Known, HaError> {
        let mut known = Acked::global().known(primary);
        let Some(store) = self.store() else {
            return Ok(known);
        };
        let mut add = |pos: &str, baseline: bool| {
            if let Some(p) = GtidPos::parse(pos) {
                known.pos = super::ops::merged(&known.pos, &p);
            }
            known.baseline |= baseline;
        };
        for (_, v) in store.list(store.keys.acked_dir(primary)).await? {
            if let Ok(r) = serde_json::from_slice::<AckedRecord>(&v) {
                add(&r.pos, r.baseline);
            }
        }
        for a in acks.values() {
            add(&a.acked, a.baseline);
        }
        Ok(known)
    }

    /// `server` became a primary: what anyone recorded of its acknowledged writes before (an
    /// earlier time as primary) must not hold back its replicas' promotion later.
    pub async fn reset_acked(&self, server: &str, pos: &GtidPos) -> Result<(), HaError> {
        Acked::global().promoted(server, pos);
        if let Some(store) = self.store() {
            store.delete(store.keys.acked_dir(server), true).await?;
        }
        Ok(())
    }

    /// Another proxy's hold: holds statements here, in the watch's order (a release seen
    /// next must find it taken, or the hold would outlive its end until the buffer timeout, as
    /// for a proxy that thaws after a SIGSTOP and reads both at once). False when it is this
    /// proxy's own or already held; otherwise `remote_hold` drains and acknowledges it.
    pub fn take_remote_hold(&self, rec: &HoldRecord) -> bool {
        if self.store().is_none_or(|s| rec.by == s.id) {
            return false;
        }
        let mut held = super::lock(&self.remote_holds);
        if held.contains_key(&rec.shard) {
            return false;
        }
        let scope: Scope = rec.moving.as_ref().map(|m| m.moving_shared());
        // A cutover's hold (it dooms after a grace) switches the map; a verify's does not.
        let switching = rec.grace_ms.is_some();
        match rec.shard.strip_prefix(RESHARD_HOLD) {
            Some(ks) if switching => self.keyspaces.gate(ks).acquire_switching(scope.clone()),
            Some(ks) => self.keyspaces.gate(ks).acquire(scope.clone()),
            None => self.gate.acquire(),
        }
        held.insert(rec.shard.clone(), (rec.id.clone(), scope, switching));
        true
    }

    /// A hold `take_remote_hold` took: drain, acknowledge with what this proxy acknowledged
    /// on the hold's primary. Released by `remote_release` when the hold ends, or after the
    /// buffer timeout should the coordinator vanish without etcd noticing.
    pub async fn remote_hold(self: Arc<Self>, rec: HoldRecord) {
        let Some(store) = self.store().cloned() else {
            return;
        };
        self.events.add(
            "hold",
            Some(&rec.shard),
            Some(&rec.primary),
            format!("statements held for proxy {}: {}", rec.by, rec.reason),
        );
        let limit = Duration::from_millis(self.cfg.switchover_drain_ms);
        let drained = match rec.shard.strip_prefix(RESHARD_HOLD) {
            Some(ks) => {
                // As the coordinator does on its own: a grace for open transactions, then
                // doom what is left and drain.
                let gate = self.keyspaces.gate(ks);
                if let Some(grace) = rec.grace_ms {
                    gate.wait_txns(Duration::from_millis(grace)).await;
                    let scope = super::lock(&self.remote_holds)
                        .get(&rec.shard)
                        .and_then(|(_, s, _)| s.clone());
                    gate.doom(scope);
                }
                gate.drain(limit).await
            }
            None => self.gate.drain(limit).await,
        };
        let still_held = super::lock(&self.remote_holds)
            .get(&rec.shard)
            .is_some_and(|(id, _, _)| *id == rec.id);
        if !still_held {
            // It ended while this proxy drained (or before it saw it): nobody waits for an ack.
            return;
        }
        let known = Acked::global().known(&rec.primary);
        let ack = HoldAck {
            proxy: store.id.clone(),
            drained,
            acked: known.pos.to_string(),
            baseline: known.baseline,
        };
        if let Ok(text) = serde_json::to_vec(&ack) {
            if let Err(e) = store
                .put(store.keys.hold_ack(&rec.id, &store.id), text, true)
                .await
            {
                tracing::warn!(error = %e, shard = %rec.shard, "acknowledging a hold");
            }
        }
        let me = self.clone();
        // A reshard cutover may hold up to its max pause (at most 60 s): its hold must not
        // end here first. (A coordinator that dies loses its lease, which ends the hold.)
        let limit = match rec.shard.strip_prefix(RESHARD_HOLD) {
            Some(_) => self.cfg.buffer_timeout().max(Duration::from_secs(65)),
            None => self.cfg.buffer_timeout(),
        };
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            me.remote_release_id(&rec.shard, Some(&rec.id));
        });
    }

    /// A coordinated hold ended (its key was deleted).
    pub fn remote_release(&self, shard: &str) {
        self.remote_release_id(shard, None);
    }

    fn remote_release_id(&self, shard: &str, id: Option<&str>) {
        let mut held = super::lock(&self.remote_holds);
        if held
            .get(shard)
            .is_some_and(|(h, _, _)| id.is_none_or(|id| id == h))
        {
            let (scope, switching) = held
                .remove(shard)
                .map(|(_, s, w)| (s, w))
                .unwrap_or((None, false));
            drop(held);
            match shard.strip_prefix(RESHARD_HOLD) {
                Some(ks) if switching => self.keyspaces.gate(ks).release_switching(&scope),
                Some(ks) => self.keyspaces.gate(ks).release(&scope),
                None => self.gate.release(),
            }
        }
    }

    /// Publishes what this proxy acknowledged per primary (changed since `last`).
    pub async fn publish_acked(&self, last: &mut BTreeMap<String, Known>) -> Result<(), HaError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        for (primary, known) in Acked::global().snapshot() {
            if last.get(&primary) == Some(&known) {
                continue;
            }
            let rec = AckedRecord {
                pos: known.pos.to_string(),
                baseline: known.baseline,
            };
            let text = serde_json::to_vec(&rec).map_err(|e| HaError::Config(e.to_string()))?;
            store
                .put(store.keys.acked(&primary, &store.id), text, false)
                .await?;
            last.insert(primary, known);
        }
        Ok(())
    }

    /// At start: what this proxy's earlier processes published counts as acknowledged here
    /// too (a restart must not forget it).
    pub async fn restore_acked(&self) -> Result<(), HaError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let dir = store.keys.acked_root();
        for (key, v) in store.list(dir.clone()).await? {
            let Some(rest) = key.strip_prefix(&dir) else {
                continue;
            };
            let Some((primary, proxy)) = rest.rsplit_once('/') else {
                continue;
            };
            if proxy != store.id {
                continue;
            }
            if let Ok(r) = serde_json::from_slice::<AckedRecord>(&v) {
                if let Some(p) = GtidPos::parse(&r.pos) {
                    Acked::global().restore(primary, &p);
                }
            }
        }
        Ok(())
    }
}
