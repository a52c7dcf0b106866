//! Result cache for hot reads: the raw response packets a backend sent for a read, keyed by
//! who asked what (user, database, session state, statement text or prepared statement and
//! its bound values) and by the generations of the tables it read, so a hit is written
//! straight to the client and a write through the proxy makes older entries unreachable by
//! bumping its tables' generations (`generations`). Bounded in bytes (moka weigher), each
//! entry with its rule's TTL; concurrent identical misses run once (`flight`).

mod flight;
pub mod generations;
pub mod prepare_replies;
pub mod rules;

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::Equivalent;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::CacheSection;
pub use flight::{wait, Flight, Lookup};
use generations::Generations;
use rules::Rule;

/// What a cached result is for: every part that can change the bytes a server sends back.
/// Made from a `KeyRef` by `ResultCache::lookup` on a miss; hashed once, when made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub user: Arc<str>,
    pub db: Option<Arc<str>>,
    /// Session state that shapes the result: protocol flags, charset, variables (signature).
    pub context: u64,
    /// COM_QUERY: the statement text. COM_STMT_EXECUTE: the statement text, then the bound
    /// parameter types and values.
    pub request: Box<[u8]>,
    /// Generations of the tables read, when the key was made.
    pub generations: Box<[u64]>,
    hash: u64,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A key as a session has it, borrowed: a hit allocates and copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    pub user: &'a str,
    pub db: Option<&'a str>,
    pub context: u64,
    pub request: &'a [u8],
    pub generations: &'a [u64],
}

/// A `KeyRef` with its hash, as moka looks it up.
struct Probe<'a> {
    key: KeyRef<'a>,
    hash: u64,
}

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Equivalent<Arc<CacheKey>> for Probe<'_> {
    fn equivalent(&self, k: &Arc<CacheKey>) -> bool {
        let p = &self.key;
        k.hash == self.hash
            && k.context == p.context
            && *k.request == *p.request
            && *k.generations == *p.generations
            && *k.user == *p.user
            && k.db.as_deref() == p.db
    }
}

impl Probe<'_> {
    fn owned(&self) -> CacheKey {
        let p = &self.key;
        CacheKey {
            user: Arc::from(p.user),
            db: p.db.map(Arc::from),
            context: p.context,
            request: p.request.into(),
            generations: p.generations.into(),
            hash: self.hash,
        }
    }
}

/// Keys carry their hash already (`CacheKey::hash`): moka and the flights use it as it is
/// instead of hashing it again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

type KeyHash = BuildHasherDefault<KeyHasher>;

/// The finalizer of splitmix64: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A key's hash. Seeded per process: clients choose the request bytes, and must not be able
/// to pile their keys onto one bucket.
fn key_hash(k: &KeyRef, seed: u64) -> u64 {
    let mut h = xxh3_64_with_seed(k.request, seed);
    h = mix(h ^ xxh3_64_with_seed(k.user.as_bytes(), seed));
    h = mix(h ^ k.db.map_or(0, |d| xxh3_64_with_seed(d.as_bytes(), !seed)));
    h = mix(h ^ k.context);
    for g in k.generations {
        h = mix(h ^ g);
    }
    h
}

/// A cached response: the packets as the server sent them (sequence ids from `first_seq`).
#[derive(Debug)]
pub struct Entry {
    pub packets: Bytes,
    pub first_seq: u8,
    ttl: Duration,
}

impl Entry {
    pub fn new(packets: Bytes, first_seq: u8, ttl: Duration) -> Entry {
        Entry {
            packets,
            first_seq,
            ttl,
        }
    }
}

/// Counters for metrics and the admin API.
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: Striped,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub invalidations: AtomicU64,
}

/// A counter every worker bumps on every hit: one cache line per stripe, so workers on
/// different cores do not pass one line back and forth on each hit.
#[derive(Debug, Default)]
pub struct Striped {
    stripes: [Padded; STRIPES],
}

const STRIPES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl Striped {
    pub fn add(&self, n: u64) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
        }
        let i = STRIPE.with(|s| *s);
        self.stripes[i].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Each entry lives for its rule's TTL.
struct RuleTtl;

impl moka::Expiry<Arc<CacheKey>, Arc<Entry>> for RuleTtl {
    fn expire_after_create(
        &self,
        _key: &Arc<CacheKey>,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub struct ResultCache {
    entries: moka::future::Cache<Arc<CacheKey>, Arc<Entry>, KeyHash>,
    flights: flight::Flights,
    pub generations: Generations,
    rules: Vec<Rule>,
    pub max_entry_bytes: usize,
    pub fill_from_primary_ms: u64,
    pub stats: Arc<Stats>,
    hash_seed: u64,
    peers: Peers,
}

/// The cache's side of several proxies sharing one cluster (`ha::follow` publishes and
/// applies invalidations through etcd).
#[derive(Debug)]
struct Peers {
    shared: AtomicBool,
    outbox: std::sync::Mutex<std::collections::HashSet<String>>,
    notify: tokio::sync::Notify,
    serving: AtomicBool,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            shared: AtomicBool::new(false),
            outbox: Default::default(),
            notify: tokio::sync::Notify::new(),
            serving: AtomicBool::new(true),
        }
    }
}

/// Bytes an entry is charged: its packets and its key.
fn weight(key: &CacheKey, value: &Entry) -> u32 {
    let bytes = value.packets.len()
        + key.request.len()
        + key.generations.len() * 8
        + key.user.len()
        + key.db.as_ref().map_or(0, |d| d.len())
        + 64;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl ResultCache {
    /// `None` when no rule caches anything.
    pub fn new(cfg: &CacheSection) -> Option<ResultCache> {
        if cfg.rules.is_empty() {
            return None;
        }
        let stats = Arc::new(Stats::default());
        let evicted = stats.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(cfg.max_bytes)
            .weigher(|k: &Arc<CacheKey>, v: &Arc<Entry>| weight(k, v))
            .expire_after(RuleTtl)
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    evicted.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build_with_hasher(KeyHash::default());
        Some(ResultCache {
            entries,
            flights: flight::Flights::default(),
            generations: Generations::default(),
            rules: cfg.rules.iter().map(Rule::new).collect(),
            max_entry_bytes: cfg.max_entry_bytes,
            fill_from_primary_ms: cfg.fill_from_primary_ms,
            stats,
            hash_seed: rand::random(),
            peers: Peers::default(),
        })
    }

    /// The TTL of a read of `tables` in `db` whose text is `sql`, if a rule caches it.
    pub fn ttl_for(&self, db: Option<&str>, tables: &[String], sql: &[u8]) -> Option<Duration> {
        if !self.peers.serving.load(Ordering::Relaxed) {
            return None;
        }
        rules::ttl_for(&self.rules, db, tables, sql)
    }

    /// A hit, the lead of a new flight (run the read and `complete` it), or a wait for another
    /// session's identical read to finish.
    pub async fn lookup(&self, key: KeyRef<'_>) -> Lookup {
        let probe = Probe {
            hash: key_hash(&key, self.hash_seed),
            key,
        };
        if let Some(e) = self.entries.get(&probe).await {
            self.stats.hits.add(1);
            return Lookup::Hit(e);
        }
        let lookup = self
            .flights
            .join(&self.entries, Arc::new(probe.owned()))
            .await;
        match &lookup {
            Lookup::Hit(_) => self.stats.hits.add(1),
            Lookup::Lead(_) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Wait(_) => {}
        }
        lookup
    }

    /// Sets the Prometheus counters from `stats`: counted there, not through the recorder on
    /// every hit (a registry look-up each time).
    pub fn export_metrics(&self) {
        let s = &self.stats;
        metrics::counter!("shardgate_cache_hits_total").absolute(s.hits.get());
        metrics::counter!("shardgate_cache_misses_total")
            .absolute(s.misses.load(Ordering::Relaxed));
        metrics::counter!("shardgate_cache_evictions_total")
            .absolute(s.evictions.load(Ordering::Relaxed));
        metrics::counter!("shardgate_cache_invalidations_total")
            .absolute(s.invalidations.load(Ordering::Relaxed));
    }

    /// Ends a flight: stores `entry` (if the read could be cached) and hands it to the
    /// sessions that waited for it.
    pub async fn complete(&self, flight: Flight, entry: Option<Arc<Entry>>) {
        if let Some(e) = &entry {
            self.entries.insert(flight.key().clone(), e.clone()).await;
            metrics::gauge!("shardgate_cache_bytes").set(self.entries.weighted_size() as f64);
        }
        self.flights.finish(flight, entry).await;
    }

    /// A write through the proxy changed these tables (`db.table`, or `db.` when unknown).
    /// With other proxies (etcd), the names also wait in the outbox for `ha::follow` to publish.
    pub fn invalidate(&self, tables: &[String]) {
        self.invalidate_remote(tables);
        if self.peers.shared.load(Ordering::Relaxed) {
            let mut out = self.peers.outbox.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(tables.iter().cloned());
            drop(out);
            self.peers.notify.notify_one();
        }
    }

    /// Another proxy's write changed these tables.
    pub fn invalidate_remote(&self, tables: &[String]) {
        for t in tables {
            self.generations.bump(t);
        }
        self.stats
            .invalidations
            .fetch_add(tables.len() as u64, Ordering::Relaxed);
    }

    /// Writes through this proxy are to be published to the other proxies from now on.
    pub fn share(&self) {
        self.peers.shared.store(true, Ordering::Relaxed);
    }

    /// Waits until the outbox has names, then takes them all.
    pub async fn next_outbox(&self) -> Vec<String> {
        loop {
            let notified = self.peers.notify.notified();
            {
                let mut out = self.peers.outbox.lock().unwrap_or_else(|p| p.into_inner());
                if !out.is_empty() {
                    return out.drain().collect();
                }
            }
            notified.await;
        }
    }

    /// Takes what the outbox has now, without waiting.
    pub fn next_outbox_now(&self) -> Vec<String> {
        let mut out = self.peers.outbox.lock().unwrap_or_else(|p| p.into_inner());
        out.drain().collect()
    }

    /// Puts back names whose publishing failed.
    pub fn requeue(&self, tables: Vec<String>) {
        let mut out = self.peers.outbox.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(tables);
    }

    /// Off: nothing is served from or stored in the cache (another proxy's invalidations may
    /// not be arriving). Back on after `flush_all`, by the caller.
    pub fn set_serving(&self, on: bool) {
        if self.peers.serving.swap(on, Ordering::Relaxed) != on {
            self.generations.renew_watches();
        }
    }

    pub fn is_serving(&self) -> bool {
        self.peers.serving.load(Ordering::Relaxed)
    }

    /// Drops every entry.
    pub async fn flush_all(&self) {
        self.generations.bump_all();
        self.entries.invalidate_all();
        self.entries.run_pending_tasks().await;
        metrics::gauge!("shardgate_cache_bytes").set(self.entries.weighted_size() as f64);
    }

    /// Bytes and entries held now (after pending evictions are applied).
    pub async fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks().await;
        (self.entries.weighted_size(), self.entries.entry_count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn a_borrowed_key_finds_its_owned_key_and_only_it() {
        let gens = [3, 0];
        let key = KeyRef {
            user: "app",
            db: Some("app"),
            context: 7,
            request: b"SELECT c FROM t WHERE id=?\0\x08\0\x01",
            generations: &gens,
        };
        fn probe(k: KeyRef<'_>) -> Probe<'_> {
            Probe {
                hash: key_hash(&k, 42),
                key: k,
            }
        }
        let owned = Arc::new(probe(key).owned());
        let hasher = KeyHash::default();
        assert_eq!(hasher.hash_one(probe(key)), hasher.hash_one(&owned));
        assert!(probe(key).equivalent(&owned));
        let other_gens = [4, 0];
        for other in [
            KeyRef { user: "bob", ..key },
            KeyRef { db: None, ..key },
            KeyRef { context: 8, ..key },
            KeyRef {
                request: b"SELECT c FROM t WHERE id=?\0\x08\0\x02",
                ..key
            },
            KeyRef {
                generations: &other_gens,
                ..key
            },
        ] {
            assert!(!probe(other).equivalent(&owned), "{other:?}");
            assert_ne!(probe(other).hash, owned.hash, "{other:?}");
        }
    }

    #[tokio::test]
    async fn shared_invalidations_wait_in_the_outbox_and_serving_off_stops_caching() {
        let cfg: CacheSection = toml::from_str("[[rules]]\ndigest = \"SELECT ?\"\nttl_ms = 1000\n")
            .expect("cache config");
        let cache = ResultCache::new(&cfg).expect("a rule");
        let tables = vec!["app.t".to_string()];
        cache.invalidate(&tables);
        assert!(
            cache.next_outbox_now().is_empty(),
            "not shared: nothing to publish"
        );
        cache.share();
        cache.invalidate(&tables);
        cache.invalidate(&["app.u".to_string(), "app.t".to_string()]);
        let mut out = cache.next_outbox().await;
        out.sort();
        assert_eq!(out, vec!["app.t".to_string(), "app.u".to_string()]);
        let before = cache.generations.current(&tables);
        cache.invalidate_remote(&tables);
        assert_ne!(
            cache.generations.current(&tables),
            before,
            "another proxy's write counts"
        );
        assert!(cache.next_outbox_now().is_empty(), "and is not sent back");
        let w = cache.generations.watch(&tables);
        assert!(cache.ttl_for(Some("app"), &tables, b"SELECT 1").is_some());
        cache.set_serving(false);
        assert!(cache.ttl_for(Some("app"), &tables, b"SELECT 1").is_none());
        assert!(
            !cache.generations.is_fresh(&w),
            "shapes built before are built again"
        );
    }
}
