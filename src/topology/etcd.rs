//! The shared store: etcd (v3 API) through `etcd-client`.
//!
//! Everything runs on one thread of its own ("shardgate-topology") with its own runtime: the
//! gRPC channel's tasks live there whatever runtime the caller is on (workers, the HA thread,
//! the admin API), and no data-path thread ever waits for etcd. Callers `spawn` onto it and
//! await the handle.
//!
//! The proxy holds one lease, renewed every third of its TTL: its member key, its locks, its
//! holds and its hold acknowledgements are bound to it, so a proxy that dies or loses etcd for
//! the TTL is gone for everyone else, and whatever it held is released by etcd itself.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{MapVersion, TopologyError};
use crate::config::TopologySection;

/// Versions kept under `map/history/`.
const HISTORY: u64 = 50;

/// Key names under the cluster's prefix (README "What etcd stores").
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }
    pub fn map_current(&self) -> String {
        format!("{}/map/current", self.prefix)
    }
    pub fn history_dir(&self) -> String {
        format!("{}/map/history/", self.prefix)
    }
    pub fn history(&self, version: u64) -> String {
        format!("{}/map/history/{version:020}", self.prefix)
    }
    /// Reshard workflows, one per keyspace.
    pub fn reshards(&self) -> String {
        format!("{}/reshard/", self.prefix)
    }
    pub fn reshard(&self, keyspace: &str) -> String {
        format!("{}/reshard/{keyspace}", self.prefix)
    }
    /// The coordinator lock of a keyspace's reshard workflow (bound to its holder's lease).
    pub fn reshard_lock(&self, keyspace: &str) -> String {
        format!("{}/reshard-lock/{keyspace}", self.prefix)
    }
    pub fn proxies(&self) -> String {
        format!("{}/proxies/", self.prefix)
    }
    pub fn proxy(&self, id: &str) -> String {
        format!("{}/proxies/{id}", self.prefix)
    }
    pub fn lock(&self, shard: &str) -> String {
        format!("{}/locks/{shard}", self.prefix)
    }
    pub fn epoch(&self, shard: &str) -> String {
        format!("{}/epochs/{shard}", self.prefix)
    }
    pub fn failovers(&self) -> String {
        format!("{}/failovers/", self.prefix)
    }
    pub fn failover(&self, shard: &str) -> String {
        format!("{}/failovers/{shard}", self.prefix)
    }
    pub fn holds(&self) -> String {
        format!("{}/holds/", self.prefix)
    }
    pub fn hold(&self, shard: &str) -> String {
        format!("{}/holds/{shard}", self.prefix)
    }
    pub fn hold_acks(&self, hold_id: &str) -> String {
        format!("{}/hold-acks/{hold_id}/", self.prefix)
    }
    pub fn hold_ack(&self, hold_id: &str, proxy: &str) -> String {
        format!("{}/hold-acks/{hold_id}/{proxy}", self.prefix)
    }
    pub fn acked_root(&self) -> String {
        format!("{}/acked/", self.prefix)
    }
    pub fn acked_dir(&self, primary: &str) -> String {
        format!("{}/acked/{primary}/", self.prefix)
    }
    pub fn acked(&self, primary: &str, proxy: &str) -> String {
        format!("{}/acked/{primary}/{proxy}", self.prefix)
    }
    pub fn caches(&self) -> String {
        format!("{}/cache/", self.prefix)
    }
    pub fn cache(&self, proxy: &str) -> String {
        format!("{}/cache/{proxy}", self.prefix)
    }
}

/// What `load` read.
#[derive(Debug)]
pub struct Loaded {
    pub current: Option<(MapVersion, i64)>,
    pub history: Vec<MapVersion>,
    /// etcd's revision when read: a watch from here on misses nothing.
    pub revision: i64,
}

/// What a proxy says about itself under `proxies/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub id: String,
    pub listen: String,
    pub admin: String,
    pub started: String,
}

/// What the watch saw, in etcd's order, for the topology's follower (`ha::follow`).
#[derive(Debug)]
pub enum Change {
    /// A new `map/current`, at this revision.
    Map(MapVersion, i64),
    /// A hold was published (`holds/{shard}`), or one ended.
    Hold(HoldRecord),
    HoldEnded {
        key: String,
    },
    /// Another proxy's cache invalidations.
    Cache(CacheNote),
    /// The watch restarted after a gap it could not replay (compaction): state may have been
    /// missed, so followers resynchronise (the map is re-read; caches are flushed).
    Resync,
}

/// A coordinated hold of statements while a shard's primary changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HoldRecord {
    /// Unique per hold: acknowledgements are filed under it.
    pub id: String,
    pub shard: String,
    /// The primary whose writes stop.
    pub primary: String,
    pub by: String,
    pub reason: String,
    /// A reshard cutover's hold (`shard` is then `reshard:<keyspace>`): how long open
    /// transactions may still commit before they are doomed, in ms (none: a verify's hold,
    /// which dooms nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// A reshard's hold: the ring change whose moving keys are held (none: every key of the
    /// keyspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<crate::shardmap::moving::RingChange>,
}

/// A proxy's answer to a hold: it holds new statements and drained (or not) the running ones;
/// what it acknowledged on the hold's primary, final since nothing more runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HoldAck {
    pub proxy: String,
    pub drained: bool,
    /// GTID position text (`d-s-n,...`).
    pub acked: String,
    pub baseline: bool,
}

/// A proxy's published acknowledged writes on one primary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AckedRecord {
    pub pos: String,
    pub baseline: bool,
}

/// Tables written through one proxy, for the others' caches.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheNote {
    pub proxy: String,
    /// Increases with every note of that proxy.
    pub seq: u64,
    /// `db.table` names, or `db.` for "some table of db"; empty with `all`.
    pub tables: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

pub struct EtcdStore {
    cfg: TopologySection,
    pub id: String,
    pub keys: Keys,
    client: Client,
    rt: Handle,
    up: AtomicBool,
    lease: AtomicI64,
    /// The lease was renewed at (ms since `epoch`): `up` also needs it to be fresh.
    renewed_ms: AtomicI64,
    /// The lease under which this proxy last read the shard map from etcd (0: none yet).
    synced_lease: AtomicI64,
    epoch: Instant,
    member: Member,
    stop: tokio::sync::watch::Sender<bool>,
}

fn unreachable(e: impl std::fmt::Display) -> TopologyError {
    TopologyError::Store(e.to_string())
}

impl EtcdStore {
    /// Starts the store's thread and connects (lazily: etcd may be down; the lease task keeps
    /// trying). `listen`/`admin` are what other proxies see of this one.
    pub fn start(
        cfg: &TopologySection,
        listen: &str,
        admin: &str,
    ) -> Result<Arc<EtcdStore>, TopologyError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(unreachable)?;
        let rt = runtime.handle().clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        std::thread::Builder::new()
            .name("shardgate-topology".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while stopped.changed().await.is_ok() && !*stopped.borrow() {}
                })
            })
            .map_err(unreachable)?;
        let endpoints: Vec<String> = cfg
            .endpoints
            .iter()
            .map(|e| {
                if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        let t = cfg.request_timeout();
        let options = ConnectOptions::new()
            .with_connect_timeout(t)
            .with_timeout(t)
            .with_keep_alive(Duration::from_secs(1), t);
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(Client::connect(endpoints, Some(options)).await);
        });
        let client = rx
            .recv_timeout(t + Duration::from_secs(1))
            .map_err(|_| unreachable("connecting to etcd timed out"))?
            .map_err(unreachable)?;
        let id = cfg.proxy_id.clone().unwrap_or_else(|| default_id(listen));
        let store = Arc::new(EtcdStore {
            cfg: cfg.clone(),
            member: Member {
                id: id.clone(),
                listen: listen.to_string(),
                admin: admin.to_string(),
                started: crate::clock::now_rfc3339(),
            },
            id,
            keys: Keys::new(&cfg.prefix),
            client,
            rt,
            up: AtomicBool::new(false),
            lease: AtomicI64::new(0),
            renewed_ms: AtomicI64::new(0),
            synced_lease: AtomicI64::new(0),
            epoch: Instant::now(),
            stop,
        });
        let s = store.clone();
        store.rt.spawn(async move { s.keep_lease().await });
        Ok(store)
    }

    pub fn config(&self) -> &TopologySection {
        &self.cfg
    }

    /// Whether etcd answered recently and this proxy's lease is alive: without it the proxy
    /// decides nothing.
    pub fn is_up(&self) -> bool {
        let fresh = self.epoch.elapsed().as_millis() as i64
            - self.renewed_ms.load(Ordering::SeqCst)
            < (self.cfg.lease_ttl_secs as i64 * 1000);
        self.up.load(Ordering::SeqCst) && fresh
    }

    /// Runs `fut` on the store's thread (its result is not waited for).
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.rt.spawn(fut);
    }

    /// The lease was renewed within `d` (and the store counts as up).
    pub fn renewed_within(&self, d: Duration) -> bool {
        let age = self.epoch.elapsed().as_millis() as i64 - self.renewed_ms.load(Ordering::SeqCst);
        self.up.load(Ordering::SeqCst) && age < d.as_millis() as i64
    }

    /// Whether this proxy may serve a keyspace that other proxies may be switching: its lease
    /// was renewed within 2/3 of its TTL (before the others can count it gone), and it read
    /// the shard map under this lease (a lease that lapsed, as after a long pause, means a
    /// cutover may have gone on without it; see `ha::follow`).
    pub fn serves_current(&self) -> bool {
        let lease = self.lease.load(Ordering::SeqCst);
        let fresh = Duration::from_millis(self.cfg.lease_ttl_secs * 2000 / 3);
        lease != 0
            && lease == self.synced_lease.load(Ordering::SeqCst)
            && self.renewed_within(fresh)
    }

    /// The lease under which the map was last read (see `serves_current`).
    pub fn synced_lease(&self) -> i64 {
        self.synced_lease.load(Ordering::SeqCst)
    }

    pub fn set_synced_lease(&self, lease: i64) {
        self.synced_lease.store(lease, Ordering::SeqCst);
    }

    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }

    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::SeqCst);
        if was != up {
            metrics::gauge!("shardgate_topology_store_up").set(if up { 1.0 } else { 0.0 });
            if up {
                tracing::info!(proxy = %self.id, "the topology store (etcd) is reachable");
            } else {
                tracing::warn!(proxy = %self.id, "the topology store (etcd) is unreachable: \
                    serving on the last shard map, deciding nothing (no failover, switchover, \
                    rejoin or reload) until it is back");
            }
        }
    }

    /// Runs `f` on the store's runtime with a fresh client handle, bounded by the request
    /// timeout.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, TopologyError>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let client = self.client.clone();
        let limit = self.cfg.request_timeout();
        let task = self
            .rt
            .spawn(async move { tokio::time::timeout(limit, f(client)).await });
        match task.await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(unreachable(format!("etcd: {e}"))),
            Ok(Err(_)) => Err(unreachable(format!(
                "etcd did not answer within {} ms",
                limit.as_millis()
            ))),
            Err(e) => Err(unreachable(e)),
        }
    }

    /// Grants a lease, files the member key under it and renews it; on any failure marks the
    /// store down and starts over with a new lease (the old one's keys are gone by then or
    /// will be).
    async fn keep_lease(self: Arc<Self>) {
        let ttl = self.cfg.lease_ttl_secs as i64;
        let every = Duration::from_millis((ttl as u64 * 1000) / 3);
        let mut stopped = self.stop.subscribe();
        loop {
            if *stopped.borrow() {
                return;
            }
            let r = async {
                let mut c = self.client.clone();
                let grant =
                    tokio::time::timeout(self.cfg.request_timeout(), c.lease_grant(ttl, None))
                        .await
                        .map_err(|_| unreachable("lease grant timed out"))?
                        .map_err(unreachable)?;
                let id = grant.id();
                let member = serde_json::to_vec(&self.member).map_err(unreachable)?;
                tokio::time::timeout(
                    self.cfg.request_timeout(),
                    c.put(
                        self.keys.proxy(&self.id),
                        member,
                        Some(PutOptions::new().with_lease(id)),
                    ),
                )
                .await
                .map_err(|_| unreachable("registering timed out"))?
                .map_err(unreachable)?;
                let (mut keeper, mut answers) =
                    c.lease_keep_alive(id).await.map_err(unreachable)?;
                self.lease.store(id, Ordering::SeqCst);
                self.renewed_ms
                    .store(self.epoch.elapsed().as_millis() as i64, Ordering::SeqCst);
                self.set_up(true);
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return Ok::<(), TopologyError>(()),
                        _ = tokio::time::sleep(every) => {}
                    }
                    keeper.keep_alive().await.map_err(unreachable)?;
                    let answer =
                        tokio::time::timeout(self.cfg.request_timeout(), answers.message())
                            .await
                            .map_err(|_| unreachable("lease renewal timed out"))?
                            .map_err(unreachable)?;
                    match answer {
                        Some(a) if a.ttl() > 0 => {
                            self.renewed_ms
                                .store(self.epoch.elapsed().as_millis() as i64, Ordering::SeqCst);
                            self.set_up(true);
                        }
                        _ => return Err(unreachable("the lease expired")),
                    }
                }
            };
            if let Err(e) = r.await {
                tracing::debug!(error = %e, "etcd lease");
                self.lease.store(0, Ordering::SeqCst);
                self.set_up(false);
            } else {
                return;
            }
            tokio::select! {
                _ = stopped.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    }

    /// Reads `map/current` (with its mod revision) and the kept history.
    pub async fn load(&self) -> Result<Loaded, TopologyError> {
        let keys = self.keys.clone();
        let (cur, hist) = self
            .call(move |mut c| async move {
                let cur = c.get(keys.map_current(), None).await?;
                let hist = c
                    .get(keys.history_dir(), Some(GetOptions::new().with_prefix()))
                    .await?;
                Ok((cur, hist))
            })
            .await?;
        let current = match cur.kvs().first() {
            Some(kv) => Some((parse_version(kv.value())?, kv.mod_revision())),
            None => None,
        };
        let mut history: Vec<MapVersion> = hist
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        history.sort_by_key(|v| v.version);
        Ok(Loaded {
            current,
            history,
            revision: cur.header().map_or(0, |h| h.revision()),
        })
    }

    /// Runs `fut` on the store's thread and waits for it from a thread that may be inside
    /// another runtime (start-up only: it blocks the caller).
    pub fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, TopologyError>> + Send + 'static,
    ) -> Result<T, TopologyError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(self.cfg.request_timeout() * 3)
            .map_err(|_| unreachable("etcd did not answer in time"))?
    }

    /// Writes `v` as `map/current` if `map/current` is still at `rev` (0: absent) and every
    /// `also` holds. `Ok(Ok(new_rev))`, or `Ok(Err(current))` with what is there instead.
    pub async fn publish(
        &self,
        v: &MapVersion,
        rev: i64,
        also: Vec<Compare>,
    ) -> Result<Result<i64, Option<(MapVersion, i64)>>, TopologyError> {
        let keys = self.keys.clone();
        let text = serde_json::to_vec(v).map_err(unreachable)?;
        let version = v.version;
        let resp = self
            .call(move |mut c| async move {
                let mut when = vec![Compare::mod_revision(
                    keys.map_current(),
                    CompareOp::Equal,
                    rev,
                )];
                when.extend(also);
                let mut ops = vec![
                    TxnOp::put(keys.map_current(), text.clone(), None),
                    TxnOp::put(keys.history(version), text, None),
                ];
                if version > HISTORY {
                    ops.push(TxnOp::delete(keys.history(version - HISTORY), None));
                }
                c.txn(
                    Txn::new()
                        .when(when)
                        .and_then(ops)
                        .or_else(vec![TxnOp::get(keys.map_current(), None)]),
                )
                .await
            })
            .await?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map_or(0, |h| h.revision())));
        }
        let mut current = None;
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                if let Some(kv) = g.kvs().first() {
                    current = Some((parse_version(kv.value())?, kv.mod_revision()));
                }
            }
        }
        Ok(Err(current))
    }

    /// Every live proxy.
    pub async fn members(&self) -> Result<Vec<Member>, TopologyError> {
        let key = self.keys.proxies();
        let resp = self
            .call(
                move |mut c| async move { c.get(key, Some(GetOptions::new().with_prefix())).await },
            )
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    /// Values under `prefix`, with their keys.
    pub async fn list(&self, prefix: String) -> Result<Vec<(String, Vec<u8>)>, TopologyError> {
        let resp =
            self.call(move |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect())
    }

    pub async fn put(
        &self,
        key: String,
        value: Vec<u8>,
        leased: bool,
    ) -> Result<(), TopologyError> {
        let lease = self.lease();
        if leased && lease == 0 {
            return Err(unreachable("no etcd lease (etcd unreachable)"));
        }
        self.call(move |mut c| async move {
            let opts = leased.then(|| PutOptions::new().with_lease(lease));
            c.put(key, value, opts).await.map(|_| ())
        })
        .await
    }

    pub async fn delete(&self, key: String, prefix: bool) -> Result<(), TopologyError> {
        self.call(move |mut c| async move {
            let opts = prefix.then(|| DeleteOptions::new().with_prefix());
            c.delete(key, opts).await.map(|_| ())
        })
        .await
    }

    /// A transaction: `Ok(true)` when `when` held and `then` ran.
    pub async fn txn(&self, when: Vec<Compare>, then: Vec<TxnOp>) -> Result<bool, TopologyError> {
        self.call(move |mut c| async move {
            c.txn(Txn::new().when(when).and_then(then))
                .await
                .map(|r| r.succeeded())
        })
        .await
    }

    /// One value, with its mod revision.
    pub async fn get(&self, key: String) -> Result<Option<(Vec<u8>, i64)>, TopologyError> {
        let resp = self
            .call(move |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Watches the cluster's prefix from `from_rev + 1` for ever, sending what matters to
    /// `out`; re-watches from the last revision seen after a disconnect (etcd-client does not),
    /// and sends `Resync` when etcd compacted what it missed.
    pub fn watch(self: &Arc<Self>, mut from_rev: i64, out: mpsc::UnboundedSender<Change>) {
        let s = self.clone();
        self.rt.spawn(async move {
            let mut stopped = s.stop.subscribe();
            loop {
                let r = async {
                    let mut c = s.client.clone();
                    let opts = WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(from_rev + 1)
                        .with_progress_notify();
                    let mut stream = c
                        .watch(s.keys.root(), Some(opts))
                        .await
                        .map_err(unreachable)?;
                    loop {
                        let msg = tokio::select! {
                            _ = stopped.changed() => return Ok(()),
                            m = stream.message() => m.map_err(unreachable)?,
                        };
                        let Some(resp) = msg else {
                            return Err(unreachable("the watch ended"));
                        };
                        if resp.compact_revision() > 0 {
                            from_rev = resp.compact_revision() - 1;
                            let _ = out.send(Change::Resync);
                            return Err(unreachable("the watch fell behind a compaction"));
                        }
                        if resp.canceled() {
                            return Err(unreachable(format!(
                                "watch canceled: {}",
                                resp.cancel_reason()
                            )));
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            from_rev = from_rev.max(kv.mod_revision());
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            if let Some(c) =
                                s.classify(&key, ev.event_type(), kv.value(), kv.mod_revision())
                            {
                                let _ = out.send(c);
                            }
                        }
                        if let Some(h) = resp.header() {
                            from_rev = from_rev.max(h.revision());
                        }
                    }
                };
                match r.await {
                    Ok(()) => return,
                    Err(e) => tracing::debug!(error = %e, from_rev, "etcd watch; watching again"),
                }
                tokio::select! {
                    _ = stopped.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
    }

    fn classify(&self, key: &str, kind: EventType, value: &[u8], rev: i64) -> Option<Change> {
        let k = &self.keys;
        if key == k.map_current() {
            if kind != EventType::Put {
                return None;
            }
            return match parse_version(value) {
                Ok(v) => Some(Change::Map(v, rev)),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an unreadable shard map in etcd");
                    None
                }
            };
        }
        if key.starts_with(&k.holds()) {
            return match kind {
                EventType::Delete => Some(Change::HoldEnded {
                    key: key.to_string(),
                }),
                EventType::Put => serde_json::from_slice(value).ok().map(Change::Hold),
            };
        }
        if key.starts_with(&k.caches()) && kind == EventType::Put {
            let note: CacheNote = serde_json::from_slice(value).ok()?;
            return (note.proxy != self.id).then_some(Change::Cache(note));
        }
        None
    }

    /// Revokes the lease (its keys go at once) and stops the thread's tasks.
    pub async fn close(&self) {
        let lease = self.lease();
        if lease != 0 {
            let _ = self
                .call(move |mut c| async move { c.lease_revoke(lease).await.map(|_| ()) })
                .await;
        }
        let _ = self.stop.send(true);
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn parse_version(bytes: &[u8]) -> Result<MapVersion, TopologyError> {
    serde_json::from_slice(bytes)
        .map_err(|e| TopologyError::Store(format!("a shard map in etcd is unreadable: {e}")))
}

/// Host name and MySQL port: unique per machine and port, stable across restarts (so a
/// restarted proxy finds what its earlier process published).
fn default_id(listen: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "proxy".into());
    let port = listen.rsplit(':').next().unwrap_or("0");
    format!("{host}-{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let k = Keys::new("/shardgate/c1");
        assert_eq!(k.map_current(), "/shardgate/c1/map/current");
        assert_eq!(
            k.history(7),
            "/shardgate/c1/map/history/00000000000000000007"
        );
        assert!(k.history(7) > k.history(6) && k.history(10) > k.history(9));
        assert_eq!(k.lock("app/s0"), "/shardgate/c1/locks/app/s0");
        assert!(k.hold("app/s0").starts_with(&k.holds()));
        assert!(k
            .acked("127.0.0.1:3306", "p1")
            .starts_with(&k.acked_dir("127.0.0.1:3306")));
        assert!(k.map_current().starts_with(&k.root()));
        assert!(k.failover("app/s0").starts_with(&k.failovers()));
        assert!(k.acked_dir("h:1").starts_with(&k.acked_root()));
        assert!(!Keys::new("/shardgate/c10")
            .map_current()
            .starts_with(&k.root()));
    }

    #[test]
    fn the_default_id_names_the_port() {
        assert!(default_id("0.0.0.0:6033").ends_with("-6033"));
    }
}
