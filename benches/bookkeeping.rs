//! What counting one statement costs the proxy: the Prometheus series (looked up by name and
//! labels on each call, against the handles a session keeps) and the per-shape digest table.
//! Run: `cargo bench --bench bookkeeping -- --warm-up-time 1 --measurement-time 3`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardgate::digests::{Digests, Sample};
use shardgate::query_metrics::QueryMetrics;

fn bench(c: &mut Criterion) {
    // The recorder the proxy runs with, with as many other series as a proxy of 8 shards has.
    let _ = shardgate::admin::metrics::install();
    let keyspace: Arc<str> = Arc::from("app");
    let shards: Vec<Arc<str>> = (0..8).map(|i| Arc::from(format!("s{i}"))).collect();
    for s in &shards {
        for role in ["primary", "replica"] {
            for kind in ["read", "write", "other"] {
                metrics::counter!("shardgate_queries_total", "keyspace" => keyspace.clone(),
                    "shard" => s.clone(), "role" => role, "kind" => kind)
                .increment(1);
            }
        }
    }
    let mut g = c.benchmark_group("bookkeeping");
    g.bench_function("queries_total_looked_up", |b| {
        b.iter(|| {
            metrics::counter!(
                "shardgate_queries_total",
                "keyspace" => keyspace.clone(),
                "shard" => shards[3].clone(),
                "role" => "replica",
                "kind" => "read"
            )
            .increment(1)
        })
    });
    let mut kept = QueryMetrics::default();
    g.bench_function("queries_total_kept", |b| {
        b.iter(|| kept.count(&keyspace, &shards[3], "replica", "read"))
    });
    g.bench_function("duration_looked_up", |b| {
        b.iter(|| metrics::histogram!("shardgate_query_duration_seconds").record(black_box(0.0002)))
    });
    g.bench_function("duration_kept", |b| {
        b.iter(|| kept.duration(black_box(0.0002)))
    });
    let digests = Digests::default();
    let table = digests.table(0);
    for d in 1..500u64 {
        let s = Sample {
            digest: d,
            ..Default::default()
        };
        Digests::record(&table, &s, Duration::from_micros(200), || {
            format!("SELECT {d}")
        });
    }
    let sample = Sample {
        digest: 42,
        rows: 1,
        shards: 1,
        ..Default::default()
    };
    g.bench_function("digest_record", |b| {
        b.iter(|| {
            Digests::record(
                &table,
                black_box(&sample),
                Duration::from_micros(180),
                String::new,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
