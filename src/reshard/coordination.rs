//! One coordinator per workflow when proxies share etcd: a lock key bound to the
//! coordinator's lease (`{prefix}/reshard-lock/{keyspace}`, its proxy id as value). Only the
//! holder saves the workflow (the save compares the lock), copies and applies streams; a
//! proxy whose lease is not fresh stops doing so (`Runner::coordinating`). When the holder's
//! lease expires (it died, or was cut off from etcd for longer than the lease), another proxy
//! claims the lock and takes the workflow over from its stored state.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, TxnOp};

use super::manager::{lock, ReshardError, Reshards};
use super::workflow::Runner;
use crate::topology::EtcdStore;

/// Who holds a workflow's lock after a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    /// This proxy, under this lease.
    Ours(i64),
    /// Another proxy (its id).
    Theirs(String),
}

fn failed(e: impl std::fmt::Display) -> ReshardError {
    ReshardError::Failed(format!("the workflow's coordinator lock in etcd: {e}"))
}

/// Takes `keyspace`'s workflow lock, or re-binds it to this proxy's current lease when this
/// proxy held it before (under a lease that lapsed, or in an earlier process).
pub(super) async fn claim(store: &EtcdStore, keyspace: &str) -> Result<Claim, ReshardError> {
    let lease = store.lease();
    if lease == 0 {
        return Err(failed("this proxy holds no etcd lease now"));
    }
    let key = store.keys.reshard_lock(keyspace);
    let me = store.id.as_bytes().to_vec();
    let put = || {
        TxnOp::put(
            key.clone(),
            me.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )
    };
    for _ in 0..3 {
        let free = vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)];
        if store.txn(free, vec![put()]).await.map_err(failed)? {
            return Ok(Claim::Ours(lease));
        }
        let mine = vec![Compare::value(key.clone(), CompareOp::Equal, me.clone())];
        if store.txn(mine, vec![put()]).await.map_err(failed)? {
            return Ok(Claim::Ours(lease));
        }
        if let Some((holder, _)) = store.get(key.clone()).await.map_err(failed)? {
            return Ok(Claim::Theirs(String::from_utf8_lossy(&holder).into_owned()));
        }
        // Released between the two reads: try again.
    }
    Err(failed("the lock changed hands three times in a row"))
}

/// With etcd, every second: workflows this proxy coordinates keep their lock (claimed again
/// under a new lease, or given up to the proxy that took them over), and unfinished
/// workflows whose coordinator is gone are taken over. The keyspaces of unfinished
/// workflows are armed on the way (see `KeyspaceGate::arm`).
pub(super) async fn follow(owner: Arc<Reshards>) {
    let Some(store) = owner.topology.store().cloned() else {
        return;
    };
    let mut armed: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !store.is_up() {
            continue;
        }
        let Ok(all) = owner.store.load_all().await else {
            continue;
        };
        let unfinished: Vec<_> = all.into_iter().filter(|w| !w.phase.is_final()).collect();
        let now: BTreeSet<String> = unfinished.iter().map(|w| w.keyspace.clone()).collect();
        for ks in armed.symmetric_difference(&now) {
            owner.ha.keyspaces.gate(ks).arm(now.contains(ks));
        }
        armed = now;
        let mut live: Option<Vec<String>> = None;
        for w in unfinished {
            let local = lock(&owner.runners).get(&w.keyspace).cloned();
            match local {
                Some(r) if r.coordinating() => {}
                Some(r) if r.holds_lock() => {
                    // Its lease changed: claim again, or give the workflow up.
                    match claim(&store, &w.keyspace).await {
                        Ok(Claim::Ours(lease)) => r.set_lock_lease(lease),
                        Ok(Claim::Theirs(holder)) => give_up(&owner, &r, &holder).await,
                        Err(e) => tracing::debug!(error = %e, "reshard lock"),
                    }
                }
                Some(_) => {}
                None => {
                    if w.coordinator != store.id {
                        if live.is_none() {
                            live = store
                                .members()
                                .await
                                .ok()
                                .map(|m| m.into_iter().map(|m| m.id).collect());
                        }
                        let Some(ids) = &live else {
                            continue;
                        };
                        if ids.contains(&w.coordinator) {
                            continue;
                        }
                    }
                    match claim(&store, &w.keyspace).await {
                        Ok(Claim::Ours(lease)) => {
                            super::workflow::take_over(&owner, w, lease).await;
                        }
                        Ok(Claim::Theirs(_)) => {}
                        Err(e) => tracing::debug!(error = %e, "reshard lock"),
                    }
                }
            }
        }
    }
}

/// Another proxy took the workflow over: stop everything it runs here.
async fn give_up(owner: &Reshards, r: &Arc<Runner>, holder: &str) {
    r.event(format!(
        "proxy {holder} coordinates the workflow now (this proxy's etcd lease lapsed): stopping here"
    ));
    r.set_lock_lease(0);
    r.halt().await;
    let ks = r.keyspace();
    let mut runners = lock(&owner.runners);
    if runners.get(&ks).is_some_and(|x| Arc::ptr_eq(x, r)) {
        runners.remove(&ks);
    }
}
