//! The per-statement Prometheus series of one session, looked up once: `metrics::counter!`
//! with labels hashes its name and labels and searches the recorder's registry on every call,
//! which is most of the cost of counting a statement (`cargo bench --bench bookkeeping`). A
//! session keeps the handles it used; they stay valid for the recorder's life.

use std::sync::Arc;

use metrics::{Counter, Histogram};

/// Label sets kept per session: a session runs on a few shards and roles; a scatter-heavy
/// session past this looks the rest up each time, as before.
const KEPT: usize = 16;

struct Series {
    keyspace: Arc<str>,
    shard: Arc<str>,
    role: &'static str,
    kind: &'static str,
    counter: Counter,
}

#[derive(Default)]
pub struct QueryMetrics {
    duration: Option<Histogram>,
    queries: Vec<Series>,
}

impl QueryMetrics {
    /// Counts a statement in `shardgate_queries_total`.
    pub fn count(
        &mut self,
        keyspace: &Arc<str>,
        shard: &Arc<str>,
        role: &'static str,
        kind: &'static str,
    ) {
        let found = self.queries.iter().find(|s| {
            s.role == role
                && s.kind == kind
                && (Arc::ptr_eq(&s.shard, shard) || s.shard == *shard)
                && (Arc::ptr_eq(&s.keyspace, keyspace) || s.keyspace == *keyspace)
        });
        if let Some(s) = found {
            s.counter.increment(1);
            return;
        }
        let counter = metrics::counter!(
            "shardgate_queries_total",
            "keyspace" => keyspace.clone(),
            "shard" => shard.clone(),
            "role" => role,
            "kind" => kind
        );
        counter.increment(1);
        if self.queries.len() < KEPT {
            self.queries.push(Series {
                keyspace: keyspace.clone(),
                shard: shard.clone(),
                role,
                kind,
                counter,
            });
        }
    }

    /// Records a statement's time in `shardgate_query_duration_seconds`.
    pub fn duration(&mut self, seconds: f64) {
        self.duration
            .get_or_insert_with(|| metrics::histogram!("shardgate_query_duration_seconds"))
            .record(seconds);
    }
}
