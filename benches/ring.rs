//! What routing one key costs: the shard-key hash and the ring lookup (`cargo bench --bench ring`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shardgate::shardmap::ring::{key_hash, KeyValue, Ring};

fn hash(c: &mut Criterion) {
    c.bench_function("key_hash int 1234567", |b| {
        b.iter(|| key_hash(black_box(&KeyValue::Int(1_234_567))))
    });
    let uuid = b"3f2c9a5e-7b1d-4e8a-9c36-0d5f2b7e4a19";
    assert_eq!(uuid.len(), 36);
    c.bench_function("key_hash string 36 bytes", |b| {
        b.iter(|| key_hash(black_box(&KeyValue::Bytes(uuid))))
    });
    c.bench_function("from_string_content + key_hash '1234567'", |b| {
        b.iter(|| key_hash(&KeyValue::from_string_content(black_box(b"1234567"))))
    });
}

fn lookup(c: &mut Criterion) {
    let ring = Ring::new(&["s0", "s1", "s2"], 256);
    // Different hashes each time, as real keys are: a fixed one would keep the same few cache
    // lines hot and the branch predictor trained.
    let hashes: Vec<u64> = (0..4096i128).map(|n| key_hash(&KeyValue::Int(n))).collect();
    let mut at = 0;
    c.bench_function("Ring::shard_for 3 shards x 256 vnodes", |b| {
        b.iter(|| {
            at = (at + 1) & 4095;
            ring.shard_for(black_box(hashes[at]))
        })
    });
    c.bench_function("Ring::new 3 shards x 256 vnodes", |b| {
        b.iter(|| Ring::new(black_box(&["s0", "s1", "s2"]), 256))
    });
}

criterion_group!(benches, hash, lookup);
criterion_main!(benches);
