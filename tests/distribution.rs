//! The balance the ring promises, measured: a million keys over three shards of 256 vnodes land
//! within ±5% (relative) of an even third each, and adding a fourth shard moves 25% ±3 points of
//! them, every one to the new shard. Run with `--nocapture` to see the numbers.

use shardgate::shardmap::ring::{key_hash, KeyValue, Ring};

const KEYS: usize = 1_000_000;
const VNODES: u32 = 256;

/// splitmix64: a fixed, dependency-free generator, so the keys are the same on every run.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random UUID-shaped key (36 bytes), the usual string shard key.
fn uuid(state: &mut u64) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (splitmix(state), splitmix(state));
    let mut out = [b'-'; 36];
    let mut nibbles = (0..16)
        .map(|i| (a >> (60 - 4 * i)) & 15)
        .chain((0..16).map(|i| (b >> (60 - 4 * i)) & 15));
    for (i, slot) in out.iter_mut().enumerate() {
        if ![8, 13, 18, 23].contains(&i) {
            *slot = HEX[nibbles.next().unwrap_or(0) as usize];
        }
    }
    out
}

/// Routes every hash on the 3-shard and the 4-shard ring; prints and checks the shares and
/// what moved.
fn check(what: &str, hashes: &[u64]) {
    let three = Ring::new(&["s0", "s1", "s2"], VNODES);
    let four = Ring::new(&["s0", "s1", "s2", "s3"], VNODES);
    let mut counts = [0usize; 3];
    let mut moved = 0usize;
    let mut moved_elsewhere = 0usize;
    for &h in hashes {
        let (before, after) = (three.shard_for(h), four.shard_for(h));
        counts[before] += 1;
        if before != after {
            moved += 1;
            if after != 3 {
                moved_elsewhere += 1;
            }
        }
    }
    let n = hashes.len() as f64;
    let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / n).collect();
    let moved_share = moved as f64 / n;
    println!(
        "{what}: {} keys over s0/s1/s2: {:.2}% {:.2}% {:.2}% (even: 33.33%, allowed 31.67%..35.00%); \
         adding s3 moves {:.2}% (allowed 22%..28%), {moved_elsewhere} of them elsewhere than s3",
        hashes.len(),
        shares[0] * 100.0,
        shares[1] * 100.0,
        shares[2] * 100.0,
        moved_share * 100.0,
    );
    for (i, share) in shares.iter().enumerate() {
        let off = (share * 3.0 - 1.0).abs();
        assert!(
            off <= 0.05,
            "{what}: s{i} holds {:.2}%, {:.1}% off an even third",
            share * 100.0,
            off * 100.0
        );
    }
    assert!(
        (0.22..=0.28).contains(&moved_share),
        "{what}: adding s3 moved {:.2}% of the keys",
        moved_share * 100.0
    );
    assert_eq!(moved_elsewhere, 0, "{what}: keys moved between old shards");
}

#[test]
fn integer_keys_spread_evenly_and_move_only_to_a_new_shard() {
    // 1..=1,000,000: auto-increment ids, as sysbench makes them.
    let hashes: Vec<u64> = (1..=KEYS as i128)
        .map(|n| key_hash(&KeyValue::Int(n)))
        .collect();
    check("integer keys 1..=1000000", &hashes);
}

#[test]
fn string_keys_spread_evenly_and_move_only_to_a_new_shard() {
    let mut state = 0x5EED;
    let hashes: Vec<u64> = (0..KEYS)
        .map(|_| key_hash(&KeyValue::Bytes(&uuid(&mut state))))
        .collect();
    check("random 36-byte string keys", &hashes);
}

#[test]
fn the_moved_arcs_hold_exactly_the_moved_keys() {
    let three = Ring::new(&["s0", "s1", "s2"], VNODES);
    let four = Ring::new(&["s0", "s1", "s2", "s3"], VNODES);
    let arcs = three.moved_arcs(&four);
    let space: f64 = arcs.iter().map(|a| a.span() as f64).sum::<f64>() / 2f64.powi(64);
    println!(
        "adding s3: {} arcs move, {:.2}% of the hash space, all to s3",
        arcs.len(),
        space * 100.0
    );
    assert!(arcs.iter().all(|a| a.to == 3));
    assert!((0.22..=0.28).contains(&space), "{space}");
    // Arcs are in hash order, so a key's arc is found by binary search on their ends (the
    // first arc may wrap past the top of the space).
    let in_an_arc = |h: u64| {
        let at = arcs.partition_point(|a| a.end < h);
        arcs.get(at).is_some_and(|a| a.contains(h)) || arcs.first().is_some_and(|a| a.contains(h))
    };
    for n in 1..=100_000i128 {
        let h = key_hash(&KeyValue::Int(n));
        assert_eq!(
            in_an_arc(h),
            three.shard_for(h) != four.shard_for(h),
            "key {n}"
        );
    }
}
