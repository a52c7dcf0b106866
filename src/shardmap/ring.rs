//! Where a shard key's row lives: a stable 64-bit hash of the key's canonical form, placed on a
//! consistent hash ring of virtual nodes.
//!
//! Both halves are pure functions, documented in `shard-maps/README.md` precisely enough for
//! other tools (a bulk loader, a checker) to reproduce them:
//!
//! * [`key_hash`] is xxh3_64 (seed 0) of `i<decimal>` for integers and `s<bytes>` for
//!   everything else. Integers are canonicalised first ([`KeyValue`]), so `42`, `42.0` and the
//!   string `'42'` route alike.
//! * [`Ring`] gives each shard `vnodes` virtual nodes of [`POINTS_PER_VNODE`] points each, at
//!   `xxh3_64("<shard name>#<vnode>#<point>")`; a hash belongs to the first point at or after it,
//!   wrapping past `u64::MAX` to the first point. A point depends only on its shard's name, so
//!   adding a shard only takes arcs from the others, and [`Ring::moved_arcs`] lists them for the
//!   reshard planner.

use std::io::Write as _;

use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

/// Ring points per virtual node. With one point per vnode, 256 vnodes leave shards about ±5%
/// (one standard deviation) off an even share: s0, s1, s2 get 29.5%, 33.3% and 37.2%. Sixteen
/// points per vnode bring that to about ±1.3% for the cost of a larger (still cache-sized)
/// table; see `tests/distribution.rs`.
pub const POINTS_PER_VNODE: u32 = 16;

/// A shard key value in canonical form: what is hashed to route a row.
///
/// Integers are kept as numbers so that every spelling of one (`42`, `+42`, `42.0`, `'42'`)
/// routes alike. Anything else routes by its bytes, exactly as written: `'042'`, `'4.2e1'` and
/// `'abc'` are three different keys, and `'ABC'` differs from `'abc'` even where a
/// case-insensitive collation makes MariaDB call them equal. SQL NULL has no shard: callers
/// handle it before building a `KeyValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyValue<'a> {
    Int(i128),
    Bytes(&'a [u8]),
}

impl<'a> KeyValue<'a> {
    /// From a numeric literal's text as the client wrote it (a leading sign included, when the
    /// caller folded a unary minus into the literal).
    ///
    /// An integer, or a decimal whose fraction is all zeros (`42.0`, `42.`), with an optional
    /// `+`/`-` and any leading zeros, that fits an `i128` becomes [`KeyValue::Int`]; `-0` is 0.
    /// Anything else (an exponent as in `1e3`, a non-zero fraction, hex, an integer beyond
    /// `i128`) is [`KeyValue::Bytes`] of the text unchanged.
    pub fn from_number_text(text: &'a [u8]) -> KeyValue<'a> {
        match parse_number(text) {
            Some(n) => KeyValue::Int(n),
            None => KeyValue::Bytes(text),
        }
    }

    /// From a FLOAT or DOUBLE parameter: an integral value routes as that integer (MariaDB
    /// compares `600.0` equal to the key 600 and stores 600), whatever its column's type.
    /// `None` for a fraction, NaN, an infinity or a value past `i128`: such a value does not
    /// name one integer key (an INT column would round it, a DECIMAL or string column keep it).
    pub fn from_double(v: f64) -> Option<KeyValue<'a>> {
        // 2^127: the first value past i128's range (exactly representable).
        const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
        (v.is_finite() && v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v))
            .then_some(KeyValue::Int(v as i128))
    }

    /// From the content of a string literal (quotes removed, escapes resolved).
    ///
    /// A canonical decimal integer (an optional `-`, then digits without leading zeros: `0`,
    /// `42`, `-7`; no `+`, spaces, `-0` or fraction) that fits an `i128` becomes
    /// [`KeyValue::Int`], so `'42'` routes like `42`. Anything else is [`KeyValue::Bytes`] of
    /// the content.
    pub fn from_string_content(bytes: &'a [u8]) -> KeyValue<'a> {
        match parse_canonical_int(bytes) {
            Some(n) => KeyValue::Int(n),
            None => KeyValue::Bytes(bytes),
        }
    }
}

/// Numeric literal text: `[+-]digits[.zeros]` or `[+-].zeros`.
fn parse_number(text: &[u8]) -> Option<i128> {
    let (negative, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (int_part, fraction) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &[][..]),
    };
    if int_part.is_empty() && fraction.is_empty() {
        return None;
    }
    if !fraction.iter().all(|&b| b == b'0') {
        return None;
    }
    accumulate(int_part, negative)
}

/// A canonical decimal integer: `0`, or `[-]` then a digit 1-9 then digits.
fn parse_canonical_int(bytes: &[u8]) -> Option<i128> {
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits.first() {
        Some(b'1'..=b'9') => accumulate(digits, negative),
        _ => None,
    }
}

/// The value of ASCII digits (at least one), negated if asked; None on any other byte or past
/// the range of `i128`. Negative values accumulate downwards so `i128::MIN` fits.
fn accumulate(digits: &[u8], negative: bool) -> Option<i128> {
    if digits.is_empty() {
        // `.0` and `-.0`: a zero fraction with no integer digits.
        return Some(0);
    }
    let mut value: i128 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let d = i128::from(b - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(d)?
        } else {
            value.checked_add(d)?
        };
    }
    Some(value)
}

/// Longest canonical encoding of an integer: `i`, `-`, and the 39 digits of `i128::MIN`.
const INT_ENCODING_MAX: usize = 41;

/// Strings up to this many bytes are hashed from a stack copy; longer ones through the
/// streaming hasher (same result, no allocation either way).
const SMALL_BYTES: usize = 127;

/// The canonical encoding of an integer key (`i` then its decimal form) into `out`; its length.
fn encode_int(n: i128, out: &mut [u8; INT_ENCODING_MAX]) -> usize {
    let mut digits = [0u8; 39];
    let mut at = digits.len();
    let magnitude = n.unsigned_abs();
    if let Ok(mut m) = u64::try_from(magnitude) {
        // The common case, in 64-bit arithmetic (u128 division is a library call).
        loop {
            at -= 1;
            digits[at] = b'0' + (m % 10) as u8;
            m /= 10;
            if m == 0 {
                break;
            }
        }
    } else {
        let mut m = magnitude;
        while m > 0 {
            at -= 1;
            digits[at] = b'0' + (m % 10) as u8;
            m /= 10;
        }
    }
    out[0] = b'i';
    let mut len = 1;
    if n < 0 {
        out[1] = b'-';
        len = 2;
    }
    let digits = &digits[at..];
    out[len..len + digits.len()].copy_from_slice(digits);
    len + digits.len()
}

/// The stable 64-bit hash of a shard key: xxh3_64 with seed 0 of its canonical encoding,
/// `i` followed by the decimal digits (with `-` if negative) for [`KeyValue::Int`], `s`
/// followed by the bytes for [`KeyValue::Bytes`]. The key 42 is xxh3_64(`i42`).
///
/// Stored rows are placed by this value: changing it moves every row, so a unit test pins
/// the values that `shard-maps/README.md` prints.
pub fn key_hash(v: &KeyValue<'_>) -> u64 {
    match *v {
        KeyValue::Int(n) => {
            let mut buf = [0u8; INT_ENCODING_MAX];
            let len = encode_int(n, &mut buf);
            xxh3_64(&buf[..len])
        }
        KeyValue::Bytes(bytes) if bytes.len() <= SMALL_BYTES => {
            let mut buf = [0u8; SMALL_BYTES + 1];
            buf[0] = b's';
            buf[1..=bytes.len()].copy_from_slice(bytes);
            xxh3_64(&buf[..=bytes.len()])
        }
        KeyValue::Bytes(bytes) => {
            let mut h = Xxh3Default::new();
            h.update(b"s");
            h.update(bytes);
            h.digest()
        }
    }
}

/// A consistent hash ring: which shard owns which hash.
///
/// Shard `name` has `vnodes * POINTS_PER_VNODE` points, point `j` of virtual node `i` at
/// `xxh3_64("<name>#<i>#<j>")` (decimal `i` and `j`). A hash belongs to the first point at or
/// after it; hashes past the last point wrap to the first. If two shards' points coincide,
/// the shard whose name sorts first owns it, so a ring depends on its set of names and
/// `vnodes` only, not on their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// Shard names, indexed as given to [`Ring::new`].
    names: Vec<String>,
    /// Point positions, sorted and distinct.
    points: Vec<u64>,
    /// `owners[k]`: the shard index owning the arc that ends at `points[k]`.
    owners: Vec<u32>,
    /// A lookup index: `buckets[b]` is the position of the first point at or after `b <<
    /// shift`, and the last entry is `points.len()`. It narrows the binary search to a few
    /// points, so a lookup touches two or three cache lines instead of ~14.
    buckets: Vec<u32>,
    /// `64 - log2(bucket count)`.
    shift: u32,
}

/// A stretch of the hash space whose owner differs between two rings: the hashes `h` with
/// `start < h <= end`, wrapping past `u64::MAX` to 0 when `start >= end` (`start == end` is
/// the whole space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedArc {
    /// Exclusive.
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    /// The owner in the ring `moved_arcs` was called on: an index into its shard names.
    pub from: usize,
    /// The owner in the ring passed to `moved_arcs`: an index into that ring's shard names.
    pub to: usize,
}

impl MovedArc {
    /// Whether `hash` lies in this arc.
    pub fn contains(&self, hash: u64) -> bool {
        if self.start < self.end {
            self.start < hash && hash <= self.end
        } else {
            hash > self.start || hash <= self.end
        }
    }

    /// How many hashes the arc holds (2^64 for the whole space).
    pub fn span(&self) -> u128 {
        if self.start < self.end {
            u128::from(self.end - self.start)
        } else {
            (1u128 << 64) - u128::from(self.start - self.end)
        }
    }
}

impl Ring {
    /// The ring of `shard_names` (indexes of [`Ring::shard_for`] follow this order) with
    /// `vnodes` virtual nodes each. Validation keeps names unique, non-empty and `vnodes` in
    /// 1..=4096; an empty ring (no names, or 0 vnodes) answers shard 0 for every hash.
    pub fn new(shard_names: &[&str], vnodes: u32) -> Ring {
        let per_shard = vnodes as usize * POINTS_PER_VNODE as usize;
        let mut placed: Vec<(u64, u32)> = Vec::with_capacity(per_shard * shard_names.len());
        let mut label = Vec::with_capacity(64);
        for (index, name) in shard_names.iter().enumerate() {
            for i in 0..vnodes {
                for j in 0..POINTS_PER_VNODE {
                    label.clear();
                    // Writing to a Vec cannot fail.
                    let _ = write!(label, "{name}#{i}#{j}");
                    placed.push((xxh3_64(&label), index as u32));
                }
            }
        }
        placed.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| shard_names[a.1 as usize].cmp(shard_names[b.1 as usize]))
                .then(a.1.cmp(&b.1))
        });
        // Of coinciding points the first (smallest name) owns the arc; the rest would own
        // nothing.
        placed.dedup_by_key(|p| p.0);
        let points: Vec<u64> = placed.iter().map(|p| p.0).collect();
        let owners: Vec<u32> = placed.iter().map(|p| p.1).collect();

        // About eight points per bucket, between 2 and 65,536 buckets.
        let bits = (usize::BITS - points.len().leading_zeros()).saturating_sub(4);
        let bits = bits.clamp(1, 16);
        let shift = 64 - bits;
        let mut buckets = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0usize;
        for b in 0..(1u64 << bits) {
            let start = b << shift;
            while at < points.len() && points[at] < start {
                at += 1;
            }
            buckets.push(at as u32);
        }
        buckets.push(points.len() as u32);

        Ring {
            names: shard_names.iter().map(|n| n.to_string()).collect(),
            points,
            owners,
            buckets,
            shift,
        }
    }

    /// The index (into the names given to [`Ring::new`]) of the shard owning `hash`.
    pub fn shard_for(&self, hash: u64) -> usize {
        let b = (hash >> self.shift) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        let at = lo + self.points[lo..hi].partition_point(|&p| p < hash);
        // Past the last point: wrap to the first.
        let owner = self.owners.get(at).or(self.owners.first());
        owner.map_or(0, |&o| o as usize)
    }

    /// How many hashes each shard owns (indexed as the names given to [`Ring::new`]); they
    /// add up to 2^64 (an empty ring: all zero).
    pub fn shares(&self) -> Vec<u128> {
        let mut out = vec![0u128; self.names.len()];
        let Some(&last) = self.points.last() else {
            return out;
        };
        let mut prev = last;
        for (k, &p) in self.points.iter().enumerate() {
            let span = if k == 0 {
                // The arc that wraps past u64::MAX: (last, first].
                (1u128 << 64) - u128::from(last - p)
            } else {
                u128::from(p - prev)
            };
            if let Some(o) = out.get_mut(self.owners[k] as usize) {
                *o += span;
            }
            prev = p;
        }
        out
    }

    /// How many shards the ring was built from.
    pub fn shard_count(&self) -> usize {
        self.names.len()
    }

    /// The shard names, in the order given to [`Ring::new`].
    pub fn shard_names(&self) -> &[String] {
        &self.names
    }

    /// The arcs whose owner differs between `self` and `to`, compared by shard name (indexes
    /// may differ between the two rings), in hash order. Adjacent arcs with the same `from`
    /// and `to` are joined. Empty when every hash keeps its owner, or when either ring is
    /// empty.
    pub fn moved_arcs(&self, to: &Ring) -> Vec<MovedArc> {
        if self.points.is_empty() || to.points.is_empty() {
            return Vec::new();
        }
        // Between two consecutive points of either ring, both owners are constant: each is
        // the owner of the interval's end.
        let mut bounds = Vec::with_capacity(self.points.len() + to.points.len());
        bounds.extend_from_slice(&self.points);
        bounds.extend_from_slice(&to.points);
        bounds.sort_unstable();
        bounds.dedup();

        let mut arcs: Vec<MovedArc> = Vec::new();
        let last = bounds.len() - 1;
        for (k, &end) in bounds.iter().enumerate() {
            // The first interval wraps: (last bound, first bound].
            let start = bounds[if k == 0 { last } else { k - 1 }];
            let (from, dest) = (self.shard_for(end), to.shard_for(end));
            if self.names[from] == to.names[dest] {
                continue;
            }
            if let Some(prev) = arcs.last_mut() {
                if prev.end == start && prev.from == from && prev.to == dest {
                    prev.end = end;
                    continue;
                }
            }
            arcs.push(MovedArc {
                start,
                end,
                from,
                to: dest,
            });
        }
        // Join the arc that ends at the top with the one that starts at the bottom.
        if arcs.len() > 1 {
            let (first, tail) = (arcs[0], arcs[arcs.len() - 1]);
            if tail.end == first.start && tail.from == first.from && tail.to == first.to {
                arcs[0].start = tail.start;
                arcs.pop();
            }
        }
        arcs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i128) -> KeyValue<'static> {
        KeyValue::Int(n)
    }

    #[test]
    fn integral_doubles_route_as_their_integer() {
        let int = |v: i128| Some(KeyValue::Int(v));
        assert_eq!(KeyValue::from_double(600.0), int(600));
        assert_eq!(KeyValue::from_double(-0.0), int(0));
        assert_eq!(KeyValue::from_double(-7.0), int(-7));
        assert_eq!(
            KeyValue::from_double(1e20),
            int(100_000_000_000_000_000_000)
        );
        assert_eq!(
            KeyValue::from_double(1e20).map(|k| key_hash(&k)),
            Some(key_hash(&KeyValue::from_number_text(
                b"100000000000000000000"
            )))
        );
        for v in [600.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e39] {
            assert_eq!(KeyValue::from_double(v), None, "{v}");
        }
    }

    #[test]
    fn numbers_canonicalise() {
        fn num(text: &[u8]) -> KeyValue<'_> {
            KeyValue::from_number_text(text)
        }
        assert_eq!(num(b"42"), int(42));
        assert_eq!(num(b"+42"), int(42));
        assert_eq!(num(b"042"), int(42));
        assert_eq!(num(b"42.0"), int(42));
        assert_eq!(num(b"42.000"), int(42));
        assert_eq!(num(b"42."), int(42));
        assert_eq!(num(b"-7"), int(-7));
        assert_eq!(num(b"-0"), int(0));
        assert_eq!(num(b"-0.0"), int(0));
        assert_eq!(num(b".0"), int(0));
        assert_eq!(num(b"0"), int(0));
        assert_eq!(
            num(b"-170141183460469231731687303715884105728"),
            int(i128::MIN)
        );
        assert_eq!(
            num(b"170141183460469231731687303715884105727"),
            int(i128::MAX)
        );
        for other in [
            &b"170141183460469231731687303715884105728"[..],
            b"42.5",
            b"1e3",
            b"0x2A",
            b".",
            b"-",
            b"",
            b" 42",
            b"4 2",
            b"--4",
            b"42.0.0",
        ] {
            assert_eq!(num(other), KeyValue::Bytes(other), "{other:?}");
        }
    }

    #[test]
    fn strings_are_integers_only_in_canonical_form() {
        fn s(bytes: &[u8]) -> KeyValue<'_> {
            KeyValue::from_string_content(bytes)
        }
        assert_eq!(s(b"42"), int(42));
        assert_eq!(s(b"-7"), int(-7));
        assert_eq!(s(b"0"), int(0));
        for other in [
            &b"042"[..],
            b"+42",
            b"42.0",
            b"-0",
            b"00",
            b" 42",
            b"42 ",
            b"",
            b"-",
            b"abc",
            b"1e3",
            b"170141183460469231731687303715884105728",
        ] {
            assert_eq!(s(other), KeyValue::Bytes(other), "{other:?}");
        }
        // Every integer's decimal form reads back as that integer.
        for n in [
            0,
            1,
            -1,
            9,
            10,
            -10,
            i64::MAX as i128,
            u64::MAX as i128,
            u64::MAX as i128 + 1,
            -(u64::MAX as i128) - 1,
            i128::MAX,
            i128::MIN,
        ] {
            let text = n.to_string();
            assert_eq!(s(text.as_bytes()), int(n), "{text}");
            assert_eq!(
                KeyValue::from_number_text(text.as_bytes()),
                int(n),
                "{text}"
            );
        }
    }

    #[test]
    fn the_hash_is_xxh3_of_the_documented_encoding() {
        for n in [
            0,
            42,
            -7,
            u64::MAX as i128,
            u64::MAX as i128 + 1,
            i128::MAX,
            i128::MIN,
        ] {
            assert_eq!(
                key_hash(&int(n)),
                xxh3_64(format!("i{n}").as_bytes()),
                "{n}"
            );
        }
        // Around the switch from the stack copy to the streaming hasher.
        let long = vec![b'x'; 1000];
        for len in [0, 1, 35, 36, 126, 127, 128, 129, 240, 241, 1000] {
            let bytes = &long[..len];
            let mut encoded = vec![b's'];
            encoded.extend_from_slice(bytes);
            assert_eq!(
                key_hash(&KeyValue::Bytes(bytes)),
                xxh3_64(&encoded),
                "{len}"
            );
        }
    }

    /// The values printed in shard-maps/README.md. Rows are stored where these say: if this
    /// test fails, the hash changed and every existing sharded database would be misrouted.
    #[test]
    fn documented_hash_values_are_pinned() {
        let h = |v: KeyValue| format!("{:016x}", key_hash(&v));
        assert_eq!(h(KeyValue::from_number_text(b"42")), "c55f260c193dd5f1");
        assert_eq!(h(KeyValue::from_string_content(b"42")), "c55f260c193dd5f1");
        assert_eq!(h(KeyValue::from_number_text(b"-7")), "f0f9a8e709dd4924");
        assert_eq!(h(KeyValue::from_string_content(b"042")), "3327e800c808c8c6");
        assert_eq!(h(KeyValue::from_string_content(b"abc")), "08ba960ca8dfb710");
        assert_eq!(format!("{:016x}", xxh3_64(b"s0#0#0")), "4d7b07c989ae16fe");
        let ring = Ring::new(&["s0", "s1", "s2"], 256);
        let names = ring.shard_names();
        let route = |v: KeyValue| names[ring.shard_for(key_hash(&v))].as_str();
        assert_eq!(route(int(42)), "s1");
        assert_eq!(route(int(-7)), "s2");
        assert_eq!(route(KeyValue::Bytes(b"042")), "s1");
        assert_eq!(route(KeyValue::Bytes(b"abc")), "s0");
    }

    /// The first point at or after `hash`, wrapping: the definition, by linear scan.
    fn slow_owner(ring: &Ring, hash: u64) -> usize {
        let at = ring.points.iter().position(|&p| p >= hash).unwrap_or(0);
        ring.owners[at] as usize
    }

    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn lookup_matches_the_definition() {
        for (names, vnodes) in [
            (&["s0", "s1", "s2"][..], 256),
            (&["a"][..], 1),
            (&["a", "b"][..], 1),
            (&["a", "b", "c", "d", "e"][..], 7),
        ] {
            let ring = Ring::new(names, vnodes);
            assert_eq!(ring.shard_count(), names.len());
            assert_eq!(
                ring.points.len(),
                names.len() * (vnodes * POINTS_PER_VNODE) as usize
            );
            assert!(ring.points.windows(2).all(|w| w[0] < w[1]));
            let mut probes = vec![0, 1, u64::MAX - 1, u64::MAX];
            for &p in ring.points.iter().take(200) {
                probes.extend([p.wrapping_sub(1), p, p.wrapping_add(1)]);
            }
            let mut state = 7;
            probes.extend((0..20_000).map(|_| splitmix(&mut state)));
            for h in probes {
                assert_eq!(ring.shard_for(h), slow_owner(&ring, h), "{names:?} {h:#x}");
            }
        }
    }

    #[test]
    fn an_empty_ring_answers_shard_zero() {
        assert_eq!(Ring::new(&[], 256).shard_for(42), 0);
        assert_eq!(Ring::new(&["s0"], 0).shard_for(u64::MAX), 0);
        assert!(Ring::new(&[], 256)
            .moved_arcs(&Ring::new(&["s0"], 1))
            .is_empty());
    }

    #[test]
    fn the_ring_depends_on_names_not_their_order() {
        let a = Ring::new(&["s0", "s1", "s2"], 64);
        let b = Ring::new(&["s2", "s0", "s1"], 64);
        let mut state = 1;
        for _ in 0..10_000 {
            let h = splitmix(&mut state);
            assert_eq!(a.names[a.shard_for(h)], b.names[b.shard_for(h)]);
        }
        assert!(a.moved_arcs(&b).is_empty());
    }

    /// Checks `moved_arcs(from, to)` against per-hash owners on random and boundary hashes;
    /// returns the moved fraction of the hash space.
    fn check_moved_arcs(from: &Ring, to: &Ring) -> f64 {
        let arcs = from.moved_arcs(to);
        // Disjoint and in order: each arc ends before the next begins, and only the first may
        // wrap past the top.
        for w in arcs.windows(2) {
            assert!(w[0].end <= w[1].start && w[1].start < w[1].end, "{w:?}");
        }
        if let (Some(first), Some(last)) = (arcs.first(), arcs.last()) {
            if arcs.len() > 1 && first.start > first.end {
                assert!(last.end <= first.start, "{first:?} {last:?}");
            }
        }
        // So a hash can only be in the first arc ending at or after it, or the wrapping one.
        let containing = |h: u64| {
            let at = arcs.partition_point(|a| a.end < h);
            let mut found: Vec<usize> = [at, 0]
                .into_iter()
                .filter(|&i| arcs.get(i).is_some_and(|a| a.contains(h)))
                .collect();
            found.dedup();
            found
        };
        let mut probes: Vec<u64> = vec![0, u64::MAX];
        for a in &arcs {
            probes.extend([
                a.start,
                a.start.wrapping_add(1),
                a.end,
                a.end.wrapping_add(1),
            ]);
        }
        let mut state = 99;
        probes.extend((0..20_000).map(|_| splitmix(&mut state)));
        for h in probes {
            let (f, t) = (from.shard_for(h), to.shard_for(h));
            let inside = containing(h);
            if from.names[f] == to.names[t] {
                assert!(
                    inside.is_empty(),
                    "{h:#x} kept its owner but is in {inside:?}"
                );
            } else {
                assert_eq!(inside.len(), 1, "{h:#x} moved: {inside:?}");
                let arc = arcs[inside[0]];
                assert_eq!((arc.from, arc.to), (f, t), "{h:#x}");
            }
        }
        arcs.iter().map(|a| a.span() as f64).sum::<f64>() / 2f64.powi(64)
    }

    #[test]
    fn moved_arcs_list_exactly_what_changes_owner() {
        let three = Ring::new(&["s0", "s1", "s2"], 256);
        assert!(three.moved_arcs(&three).is_empty());

        let four = Ring::new(&["s0", "s1", "s2", "s3"], 256);
        let moved = check_moved_arcs(&three, &four);
        assert!((0.22..0.28).contains(&moved), "{moved}");
        assert!(three.moved_arcs(&four).iter().all(|a| a.to == 3));

        // Removing a shard shifts indexes: arcs compare names.
        let without_s1 = Ring::new(&["s0", "s2"], 256);
        let moved = check_moved_arcs(&three, &without_s1);
        assert!((0.28..0.39).contains(&moved), "{moved}");
        assert!(three.moved_arcs(&without_s1).iter().all(|a| a.from == 1));

        check_moved_arcs(&four, &three);
        check_moved_arcs(&Ring::new(&["a", "b"], 3), &Ring::new(&["b", "c"], 2));
    }

    #[test]
    fn a_whole_space_move_is_one_arc() {
        let (a, b) = (Ring::new(&["a"], 4), Ring::new(&["b"], 4));
        let arcs = a.moved_arcs(&b);
        assert_eq!(arcs.len(), 1, "{arcs:?}");
        assert_eq!(arcs[0].start, arcs[0].end);
        assert_eq!(arcs[0].span(), 1u128 << 64);
        assert!(arcs[0].contains(0) && arcs[0].contains(u64::MAX));
        assert_eq!(check_moved_arcs(&a, &b), 1.0);
    }

    #[test]
    fn arcs_wrap_around_the_top() {
        let arc = MovedArc {
            start: u64::MAX - 10,
            end: 5,
            from: 0,
            to: 1,
        };
        assert!(arc.contains(u64::MAX) && arc.contains(0) && arc.contains(5));
        assert!(!arc.contains(u64::MAX - 10) && !arc.contains(6));
        assert_eq!(arc.span(), 16);
    }

    #[test]
    fn shares_add_up_to_the_whole_space_and_match_moved_arcs() {
        let two = Ring::new(&["s0", "s1"], 64);
        let three = Ring::new(&["s0", "s1", "s2"], 64);
        for r in [&two, &three] {
            assert_eq!(r.shares().iter().sum::<u128>(), 1u128 << 64);
        }
        let moved: u128 = two.moved_arcs(&three).iter().map(MovedArc::span).sum();
        assert_eq!(moved, three.shares()[2], "only the new shard gains");
        let third = three.shares()[2] as f64 / (1u128 << 64) as f64;
        assert!((0.28..0.39).contains(&third), "about a third: {third}");
        assert_eq!(Ring::new(&[], 4).shares(), Vec::<u128>::new());
    }
}
