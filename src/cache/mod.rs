//! Result cache for hot reads: the raw response packets a backend sent for a read, keyed by
//! who asked what (user, database, session state, statement text or prepared statement and
//! its bound values) and by the generations of the tables it read, so a hit is written
//! straight to the client and a write through the proxy makes older entries unreachable by
//! bumping its tables' generations (`generations`). Bounded in bytes (moka weigher), each
//! entry with its rule's TTL; concurrent identical misses run once (`flight`).

mod flight;
pub mod generations;
pub mod rules;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::notification::RemovalCause;

use crate::config::CacheSection;
pub use flight::{wait, Flight, Lookup};
use generations::Generations;
use rules::Rule;

/// What a cached result is for: every part that can change the bytes a server sends back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub user: Arc<str>,
    pub db: Option<Arc<str>>,
    /// Session state that shapes the result: protocol flags, charset, variables (signature).
    pub context: u64,
    /// COM_QUERY: the statement text. COM_STMT_EXECUTE: the statement text, then the bound
    /// parameter types and values.
    pub request: Box<[u8]>,
    /// Generations of the tables read, when the key was made.
    pub generations: Vec<u64>,
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
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    pub invalidations: AtomicU64,
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
    entries: moka::future::Cache<Arc<CacheKey>, Arc<Entry>>,
    flights: flight::Flights,
    pub generations: Generations,
    rules: Vec<Rule>,
    pub max_entry_bytes: usize,
    pub fill_from_primary_ms: u64,
    pub stats: Arc<Stats>,
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
                    metrics::counter!("shardgate_cache_evictions_total").increment(1);
                }
            })
            .build();
        Some(ResultCache {
            entries,
            flights: flight::Flights::default(),
            generations: Generations::default(),
            rules: cfg.rules.iter().map(Rule::new).collect(),
            max_entry_bytes: cfg.max_entry_bytes,
            fill_from_primary_ms: cfg.fill_from_primary_ms,
            stats,
        })
    }

    /// The TTL of a read of `tables` in `db` whose text is `sql`, if a rule caches it.
    pub fn ttl_for(&self, db: Option<&str>, tables: &[String], sql: &[u8]) -> Option<Duration> {
        rules::ttl_for(&self.rules, db, tables, sql)
    }

    /// A hit, the lead of a new flight (run the read and `complete` it), or a wait for another
    /// session's identical read to finish.
    pub async fn lookup(&self, key: Arc<CacheKey>) -> Lookup {
        if let Some(e) = self.entries.get(&key).await {
            self.hit();
            return Lookup::Hit(e);
        }
        let lookup = self.flights.join(&self.entries, key).await;
        match &lookup {
            Lookup::Hit(_) => self.hit(),
            Lookup::Lead(_) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("shardgate_cache_misses_total").increment(1);
            }
            Lookup::Wait(_) => {}
        }
        lookup
    }

    fn hit(&self) {
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("shardgate_cache_hits_total").increment(1);
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
    pub fn invalidate(&self, tables: &[String]) {
        for t in tables {
            self.generations.bump(t);
        }
        self.stats
            .invalidations
            .fetch_add(tables.len() as u64, Ordering::Relaxed);
        metrics::counter!("shardgate_cache_invalidations_total").increment(tables.len() as u64);
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
