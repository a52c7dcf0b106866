//! Planning statements on a sharded keyspace: a point select whose shape is cached (only its
//! literal changes), a repeated 3-shard ORDER BY ... LIMIT and a prepared point select (kept
//! by their text), and the same statements parsed in full. Run: `cargo bench --bench
//! shard_plan`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shardgate::backend::health::Health;
use shardgate::planner::{PlanContext, Planner};
use shardgate::shardmap::ShardMap;

fn planner() -> Planner {
    let map: ShardMap = toml::from_str(
        r#"
        [keyspace.app]
        sharding = "consistent_hash"
        vnodes = 256
        [keyspace.app.tables.sbtest1]
        shard_key = "id"
        [[keyspace.app.shards]]
        name = "s0"
        primary = "127.0.0.1:1"
        [[keyspace.app.shards]]
        name = "s1"
        primary = "127.0.0.1:2"
        [[keyspace.app.shards]]
        name = "s2"
        primary = "127.0.0.1:3"
        "#,
    )
    .expect("map");
    let health = Health::new(&map);
    Planner::new(map, &health, true, |_| std::time::Duration::from_secs(10))
}

fn bench(c: &mut Criterion) {
    let p = planner();
    let ctx = PlanContext {
        db: Some("app"),
        default_keyspace: None,
    };
    let statements: Vec<String> = (0..1000)
        .map(|i| format!("SELECT c FROM sbtest1 WHERE id = {}", i * 7919 % 100_000))
        .collect();
    let mut i = 0;
    c.bench_function("cached plan: point select, new literal each time", |b| {
        b.iter(|| {
            i = (i + 1) % statements.len();
            black_box(
                p.plan_shards(black_box(&statements[i]), &ctx)
                    .map(|(plan, _)| plan),
            )
        })
    });
    c.bench_function("full parse and plan: point select", |b| {
        b.iter(|| {
            i = (i + 1) % statements.len();
            black_box(p.plan_shards_uncached(black_box(&statements[i]), &ctx))
        })
    });
    let merged = "SELECT id, c FROM sbtest1 WHERE k > 100 ORDER BY c DESC LIMIT 10";
    c.bench_function(
        "cached plan: 3-shard ORDER BY ... LIMIT 10, repeated",
        |b| b.iter(|| black_box(p.plan_shards(black_box(merged), &ctx).map(|(plan, _)| plan))),
    );
    c.bench_function(
        "cached plan: prepared point select (id = ?), repeated",
        |b| {
            b.iter(|| {
                black_box(
                    p.plan_shards(black_box("SELECT c FROM sbtest1 WHERE id = ?"), &ctx)
                        .map(|(plan, _)| plan),
                )
            })
        },
    );
    c.bench_function("full parse and plan: 3-shard ORDER BY ... LIMIT 10", |b| {
        b.iter(|| {
            black_box(p.plan_shards_uncached(
                black_box("SELECT id, c FROM sbtest1 WHERE k > 100 ORDER BY c DESC LIMIT 10"),
                &ctx,
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
