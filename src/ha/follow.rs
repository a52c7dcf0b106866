//! Follows the shared store (etcd): applies every new shard map version, takes and ends the
//! holds other proxies coordinate, applies their cache invalidations, and publishes this
//! proxy's (and what it acknowledged per primary). Runs on the store's thread; nothing here
//! is on a statement's path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Ha;
use crate::cache::ResultCache;
use crate::topology::etcd::{CacheNote, Change};
use crate::topology::{EtcdStore, MapVersion, Topology};

/// How long invalidations are gathered before one write to etcd carries them: bounds the
/// writes etcd sees under load, and adds at most this much to how late another proxy's cache
/// stops serving a changed table.
const CACHE_BATCH: Duration = Duration::from_millis(5);

/// How often what this proxy acknowledged is published (when it changed).
const ACKED_EVERY: Duration = Duration::from_millis(100);

/// Starts following `store` (a no-op for the file store).
pub fn start(topology: Arc<Topology>, ha: Arc<Ha>, cache: Option<Arc<ResultCache>>) {
    let Some(store) = topology.store().cloned() else {
        return;
    };
    if let Some(c) = &cache {
        c.share();
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let s = store.clone();
    let (t, h, c) = (topology.clone(), ha.clone(), cache.clone());
    store.spawn(async move {
        let from = first_read(&s, &t, &h).await;
        s.watch(from, tx);
        follow(rx, t, h, c).await;
    });
    store.spawn(resync_on_new_lease(
        store.clone(),
        topology.clone(),
        ha.clone(),
    ));
    let h = ha.clone();
    store.spawn(async move {
        let mut last = BTreeMap::new();
        loop {
            tokio::time::sleep(ACKED_EVERY).await;
            if let Err(e) = h.publish_acked(&mut last).await {
                tracing::debug!(error = %e, "publishing acknowledged writes");
            }
        }
    });
    if let Some(cache) = cache {
        store.spawn(publish_invalidations(store.clone(), cache.clone()));
        store.spawn(watch_serving(store.clone(), cache));
    }
}

/// Reads the current version until etcd answers (the proxy serves on its start-up map
/// meanwhile) and restores what earlier processes of this proxy acknowledged; returns the
/// revision to watch from.
async fn first_read(store: &Arc<EtcdStore>, topology: &Topology, ha: &Ha) -> i64 {
    loop {
        match store.load().await {
            Ok(l) => {
                if let Some((v, rev)) = l.current {
                    apply(topology, ha, v, rev);
                }
                if let Err(e) = ha.restore_acked().await {
                    tracing::warn!(error = %e, "reading what this proxy acknowledged before");
                }
                return l.revision;
            }
            Err(e) => {
                tracing::debug!(error = %e, "etcd not reachable yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn follow(
    mut rx: mpsc::UnboundedReceiver<Change>,
    topology: Arc<Topology>,
    ha: Arc<Ha>,
    cache: Option<Arc<ResultCache>>,
) {
    while let Some(change) = rx.recv().await {
        match change {
            Change::Map(v, rev) => {
                let version = v.version;
                if apply(&topology, &ha, v, rev) {
                    tracing::info!(version, "applied a shard map version from etcd");
                }
            }
            Change::Hold(rec) => {
                if ha.take_remote_hold(&rec) {
                    tokio::spawn(ha.clone().remote_hold(rec));
                }
            }
            Change::HoldEnded { key } => {
                if let Some(store) = topology.store() {
                    if let Some(shard) = key.strip_prefix(&store.keys.holds()) {
                        ha.remote_release(shard);
                    }
                }
            }
            Change::Cache(note) => {
                if let Some(c) = &cache {
                    apply_note(c, &note).await;
                }
            }
            Change::Resync => {
                if let Some(store) = topology.store() {
                    if let Ok(l) = store.load().await {
                        if let Some((v, rev)) = l.current {
                            apply(&topology, &ha, v, rev);
                        }
                    }
                }
                if let Some(c) = &cache {
                    c.flush_all().await;
                }
            }
        }
    }
}

/// Applies a version read from etcd and tells failure handling what changed; whether it was
/// newer than what this proxy had.
fn apply(topology: &Topology, ha: &Ha, v: MapVersion, rev: i64) -> bool {
    let old = topology.map();
    let applied = topology.apply(v, rev);
    if applied {
        ha.on_new_map(&old, &topology.map());
    }
    applied
}

async fn apply_note(cache: &ResultCache, note: &CacheNote) {
    if note.all {
        cache.flush_all().await;
    } else {
        cache.invalidate_remote(&note.tables);
    }
}

/// Sends this proxy's invalidations to the others, a batch per write.
async fn publish_invalidations(store: Arc<EtcdStore>, cache: Arc<ResultCache>) {
    let mut seq = 0u64;
    loop {
        let mut tables = cache.next_outbox().await;
        tokio::time::sleep(CACHE_BATCH).await;
        tables.extend(cache.next_outbox_now());
        seq += 1;
        let note = CacheNote {
            proxy: store.id.clone(),
            seq,
            tables,
            all: false,
        };
        let Ok(text) = serde_json::to_vec(&note) else {
            continue;
        };
        if let Err(e) = store.put(store.keys.cache(&store.id), text, false).await {
            tracing::debug!(error = %e, "publishing cache invalidations; retrying");
            cache.requeue(note.tables);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every new lease (the first, or one granted after the last lapsed: other proxies may have
/// counted this one gone and published maps it did not hold for) is followed by a fresh read
/// of the current map; only then does `EtcdStore::serves_current` let resharding keyspaces'
/// statements through again.
async fn resync_on_new_lease(store: Arc<EtcdStore>, topology: Arc<Topology>, ha: Arc<Ha>) {
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let lease = store.lease();
        if lease == 0 || lease == store.synced_lease() {
            continue;
        }
        match store.load().await {
            Ok(l) => {
                if let Some((v, rev)) = l.current {
                    apply(&topology, &ha, v, rev);
                }
                store.set_synced_lease(lease);
            }
            Err(e) => tracing::debug!(error = %e, "reading the map under a new lease"),
        }
    }
}

/// While the store is unreachable, invalidations from other proxies may be missed: the cache
/// serves nothing then, and starts empty when the store is back. "Unreachable" for the cache
/// comes sooner than for decisions: two lease renewals missed (2/3 of the TTL), not the TTL.
async fn watch_serving(store: Arc<EtcdStore>, cache: Arc<ResultCache>) {
    let fresh = Duration::from_millis(store.config().lease_ttl_secs * 2000 / 3);
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let up = store.renewed_within(fresh);
        if up != cache.is_serving() {
            if up {
                cache.flush_all().await;
                tracing::info!("etcd is back: the result cache serves again (emptied)");
            } else {
                tracing::warn!(
                    "etcd is unreachable: the result cache serves nothing until it is back"
                );
            }
            cache.set_serving(up);
        }
    }
}
