//! Per statement shape ("digest": the statement with its literals as `?`) counters: how often,
//! how long, errors, rows, shards touched, cache hits. Read by `GET /api/v1/queries` and
//! `shardgate queries`, like ProxySQL's stats_mysql_query_digest.
//!
//! Each proxy worker records into its own table (no lock is ever contended on the data path);
//! a reader merges them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One worker's shapes.
pub type Table = Arc<Mutex<HashMap<u64, Entry>>>;

/// Shapes kept per worker; past it, new shapes are counted under one overflow row.
pub const MAX_SHAPES: usize = 2000;
/// Digest of the overflow row.
const OVERFLOW: u64 = 0;
/// Latency histogram: 4 buckets per power of two of microseconds, up to 2^40 us.
const SUB: u32 = 4;
const BUCKETS: usize = 40 * SUB as usize;

#[derive(Clone)]
pub struct Entry {
    text: Arc<str>,
    count: u64,
    errors: u64,
    rows: u64,
    total_us: u64,
    max_us: u64,
    shards: u64,
    cache_hits: u64,
    hist: Box<[u32; BUCKETS]>,
}

impl Entry {
    fn new(text: Arc<str>) -> Self {
        Entry {
            text,
            count: 0,
            errors: 0,
            rows: 0,
            total_us: 0,
            max_us: 0,
            shards: 0,
            cache_hits: 0,
            hist: Box::new([0; BUCKETS]),
        }
    }

    fn merge(&mut self, o: &Entry) {
        self.count += o.count;
        self.errors += o.errors;
        self.rows += o.rows;
        self.total_us += o.total_us;
        self.max_us = self.max_us.max(o.max_us);
        self.shards += o.shards;
        self.cache_hits += o.cache_hits;
        for (a, b) in self.hist.iter_mut().zip(o.hist.iter()) {
            *a = a.saturating_add(*b);
        }
    }
}

fn bucket(us: u64) -> usize {
    let us = us.max(1);
    let octave = 63 - us.leading_zeros();
    let frac = if octave >= 2 {
        ((us >> (octave - 2)) & u64::from(SUB - 1)) as u32
    } else {
        0
    };
    ((octave * SUB + frac) as usize).min(BUCKETS - 1)
}

/// The upper bound in microseconds of bucket `b`.
fn bucket_top(b: usize) -> u64 {
    let octave = (b as u32) / SUB;
    let frac = u64::from((b as u32) % SUB);
    let base = 1u64 << octave;
    base + (base / u64::from(SUB)) * (frac + 1)
}

/// One statement's facts, filled in while it runs.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub digest: u64,
    pub error: bool,
    pub rows: u64,
    pub shards: u32,
    pub cache_hit: bool,
}

/// One shape's totals, as the admin API lists them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DigestRow {
    /// The digest as 16 hex digits.
    pub digest: String,
    pub text: String,
    pub count: u64,
    pub errors: u64,
    pub rows: u64,
    pub total_ms: f64,
    pub avg_ms: f64,
    /// From a histogram with 4 buckets per doubling: within 25% above the true value.
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Shards the statements ran on, on average (0 for those answered by the cache or the
    /// proxy itself).
    pub shards_avg: f64,
    pub cache_hits: u64,
}

#[derive(Default)]
pub struct Digests {
    workers: Mutex<Vec<Table>>,
}

impl Digests {
    /// Worker `i`'s table (made on first use; `i` is the proxy worker index).
    pub fn table(&self, i: usize) -> Table {
        let mut w = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        while w.len() <= i {
            w.push(Arc::default());
        }
        w[i].clone()
    }

    /// Whether `table` knows `digest` yet (so the caller computes its text only once).
    pub fn knows(table: &Mutex<HashMap<u64, Entry>>, digest: u64) -> bool {
        table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&digest)
    }

    /// Adds a finished statement; `text` is needed only for a shape new to this table.
    pub fn record(
        table: &Mutex<HashMap<u64, Entry>>,
        s: &Sample,
        elapsed: Duration,
        text: impl FnOnce() -> String,
    ) {
        let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
        let key = if t.contains_key(&s.digest) || t.len() < MAX_SHAPES {
            s.digest
        } else {
            OVERFLOW
        };
        let e = t.entry(key).or_insert_with(|| {
            Entry::new(if key == OVERFLOW {
                Arc::from("(other statement shapes, past the per-worker limit)")
            } else {
                Arc::from(text())
            })
        });
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        e.count += 1;
        e.errors += u64::from(s.error);
        e.rows += s.rows;
        e.total_us = e.total_us.saturating_add(us);
        e.max_us = e.max_us.max(us);
        e.shards += u64::from(s.shards);
        e.cache_hits += u64::from(s.cache_hit);
        let b = bucket(us);
        e.hist[b] = e.hist[b].saturating_add(1);
    }

    /// Every shape, merged over workers, sorted by `sort` (`total`, `count`, `errors`, `p99`,
    /// `rows`), at most `limit`.
    pub fn top(&self, sort: &str, limit: usize) -> Vec<DigestRow> {
        let tables: Vec<_> = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut all: HashMap<u64, Entry> = HashMap::new();
        for t in tables {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            for (k, e) in t.iter() {
                match all.get_mut(k) {
                    Some(a) => a.merge(e),
                    None => {
                        all.insert(*k, e.clone());
                    }
                }
            }
        }
        let mut rows: Vec<DigestRow> = all
            .into_iter()
            .map(|(k, e)| {
                let ms = |us: u64| us as f64 / 1000.0;
                let p99 = {
                    let want = e.count.saturating_mul(99).div_ceil(100);
                    let mut seen = 0u64;
                    let mut top = 0;
                    for (b, n) in e.hist.iter().enumerate() {
                        seen += u64::from(*n);
                        if seen >= want && *n > 0 {
                            top = bucket_top(b).min(e.max_us.max(1));
                            break;
                        }
                    }
                    top
                };
                DigestRow {
                    digest: format!("{k:016x}"),
                    text: e.text.to_string(),
                    count: e.count,
                    errors: e.errors,
                    rows: e.rows,
                    total_ms: ms(e.total_us),
                    avg_ms: if e.count == 0 {
                        0.0
                    } else {
                        ms(e.total_us) / e.count as f64
                    },
                    p99_ms: ms(p99),
                    max_ms: ms(e.max_us),
                    shards_avg: if e.count == 0 {
                        0.0
                    } else {
                        e.shards as f64 / e.count as f64
                    },
                    cache_hits: e.cache_hits,
                }
            })
            .collect();
        let key = |r: &DigestRow| -> f64 {
            match sort {
                "count" => r.count as f64,
                "errors" => r.errors as f64,
                "p99" => r.p99_ms,
                "rows" => r.rows as f64,
                _ => r.total_ms,
            }
        };
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.text.cmp(&b.text)));
        rows.truncate(limit);
        rows
    }

    /// Forgets every shape.
    pub fn reset(&self) {
        for t in self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            t.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_quarters_of_a_doubling() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert!(bucket(1000) < bucket(1300));
        for us in [5u64, 100, 1000, 12_345, 1 << 30] {
            let top = bucket_top(bucket(us));
            assert!(top >= us && top <= us + us / 4 + 1, "{us} -> {top}");
        }
    }

    #[test]
    fn workers_merge_and_sort() {
        let d = Digests::default();
        let (a, b) = (d.table(0), d.table(1));
        let s = |digest, error| Sample {
            digest,
            error,
            rows: 2,
            shards: 1,
            cache_hit: false,
        };
        for i in 0..99u64 {
            Digests::record(&a, &s(7, false), Duration::from_micros(100 + i), || {
                "SELECT ?".into()
            });
        }
        Digests::record(&b, &s(7, true), Duration::from_millis(50), || {
            "SELECT ?".into()
        });
        Digests::record(&b, &s(9, false), Duration::from_millis(1), || {
            "UPDATE t SET a = ?".into()
        });
        let top = d.top("count", 10);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].text, "SELECT ?");
        assert_eq!((top[0].count, top[0].errors, top[0].rows), (100, 1, 200));
        assert!(top[0].p99_ms < 0.3, "p99 {}", top[0].p99_ms);
        assert!((top[0].max_ms - 50.0).abs() < 1e-9);
        assert_eq!(d.top("total", 1)[0].text, "SELECT ?");
        d.reset();
        assert!(d.top("total", 10).is_empty());
    }

    #[test]
    fn shapes_past_the_limit_share_one_row() {
        let d = Digests::default();
        let t = d.table(0);
        for i in 1..=(MAX_SHAPES as u64 + 10) {
            Digests::record(
                &t,
                &Sample {
                    digest: i,
                    ..Default::default()
                },
                Duration::ZERO,
                || format!("S{i}"),
            );
        }
        let top = d.top("count", usize::MAX);
        assert_eq!(top.len(), MAX_SHAPES + 1);
        assert_eq!(top[0].count, 10, "{:?}", top[0]);
    }
}
