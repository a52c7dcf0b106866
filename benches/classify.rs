//! Cost of classifying a statement: the digest-cache hit every repeated statement pays, and
//! the full sqlparser path a cache miss pays.
//! Run: `cargo bench --bench classify -- --warm-up-time 1 --measurement-time 3`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardgate::planner::classify::{classify, classify_uncached};
use shardgate::planner::digest::digest;

fn bench(c: &mut Criterion) {
    // Distinct literals, as sysbench sends them: the digest must absorb the difference.
    let point: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("SELECT c FROM sbtest1 WHERE id={}", 4242 + i * 7919).into_bytes())
        .collect();
    let insert = (1..=10)
        .map(|i| format!("({i}, {}, '{i:0>60}', '{i:0>40}')", i * 31))
        .collect::<Vec<_>>()
        .join(", ");
    let insert = format!("INSERT INTO sbtest1 (id, k, c, pad) VALUES {insert}").into_bytes();

    let mut g = c.benchmark_group("classify");
    let mut i = 0usize;
    g.bench_function("cache_hit_point_select", |b| {
        b.iter(|| {
            i = (i + 1) % point.len();
            black_box(classify(black_box(&point[i])))
        })
    });
    g.bench_function("digest_point_select", |b| {
        b.iter(|| black_box(digest(black_box(&point[0]))))
    });
    g.bench_function("uncached_point_select", |b| {
        b.iter(|| black_box(classify_uncached(black_box(&point[0]))))
    });
    g.bench_function("uncached_insert_10_rows", |b| {
        b.iter(|| black_box(classify_uncached(black_box(&insert))))
    });
    g.bench_function("set_names_never_cached", |b| {
        b.iter(|| black_box(classify(black_box(b"SET NAMES utf8mb4"))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
