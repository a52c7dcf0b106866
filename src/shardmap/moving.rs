//! The keys a reshard moves: those whose owner differs between a keyspace's ring before and
//! after. A cutover holds only their statements; every other key keeps its owner and runs on.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::ring::Ring;

/// A ring change as it travels between proxies (in a hold record): the shard names and
/// virtual nodes of the ring before and after. A ring depends on these alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingChange {
    pub before: Vec<String>,
    pub before_vnodes: u32,
    pub after: Vec<String>,
    pub after_vnodes: u32,
}

impl RingChange {
    pub fn of(before: &Ring, before_vnodes: u32, after: &Ring, after_vnodes: u32) -> Self {
        RingChange {
            before: before.shard_names().to_vec(),
            before_vnodes,
            after: after.shard_names().to_vec(),
            after_vnodes,
        }
    }

    /// [`RingChange::moving`], built once: a hold asks for the same change on every step of
    /// a workflow, and building two rings must not lengthen a cutover's pause.
    pub fn moving_shared(&self) -> Arc<MovingKeys> {
        static BUILT: Mutex<Vec<Arc<MovingKeys>>> = Mutex::new(Vec::new());
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = built.iter().find(|m| m.change == *self) {
            return m.clone();
        }
        let m = Arc::new(self.moving());
        if built.len() >= 4 {
            built.remove(0);
        }
        built.push(m.clone());
        m
    }

    pub fn moving(&self) -> MovingKeys {
        let ring = |names: &[String], vnodes| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Ring::new(&names, vnodes)
        };
        MovingKeys {
            before: ring(&self.before, self.before_vnodes),
            after: ring(&self.after, self.after_vnodes),
            change: self.clone(),
        }
    }
}

/// Which key hashes change owner (by shard name) between two rings: two ring lookups each.
#[derive(Debug)]
pub struct MovingKeys {
    before: Ring,
    after: Ring,
    change: RingChange,
}

impl MovingKeys {
    pub fn contains(&self, hash: u64) -> bool {
        let name = |r: &Ring| r.shard_names().get(r.shard_for(hash)).cloned();
        name(&self.before) != name(&self.after)
    }

    pub fn change(&self) -> &RingChange {
        &self.change
    }
}

/// The keys of a sharded keyspace that a statement reads or writes, as far as the planner can
/// tell from its text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Touched {
    /// No row of a sharded table (no table, reference-table reads, session statements).
    #[default]
    Nothing,
    /// Only the rows of these key hashes.
    Keys(Vec<u64>),
    /// Rows it cannot name: a scatter, a write to every shard, a sequence, a statement the
    /// planner cannot read.
    Unknown,
}

/// More keys than this in one transaction are not tracked one by one (it counts as touching
/// every key).
const MAX_KEYS: usize = 256;

impl Touched {
    /// Whether any of these rows changes owner under `moving`.
    pub fn meets(&self, moving: &MovingKeys) -> bool {
        match self {
            Touched::Nothing => false,
            Touched::Keys(keys) => keys.iter().any(|&h| moving.contains(h)),
            Touched::Unknown => true,
        }
    }

    /// Adds what one more statement touched (a transaction's keys so far).
    pub fn add(&mut self, more: Touched) {
        match (&mut *self, more) {
            (_, Touched::Nothing) | (Touched::Unknown, _) => {}
            (_, Touched::Unknown) => *self = Touched::Unknown,
            (Touched::Nothing, keys) => *self = keys,
            (Touched::Keys(have), Touched::Keys(new)) => {
                have.extend(new);
                if have.len() > MAX_KEYS {
                    have.sort_unstable();
                    have.dedup();
                    if have.len() > MAX_KEYS {
                        *self = Touched::Unknown;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shardmap::ring::{key_hash, KeyValue};

    #[test]
    fn a_key_moves_when_its_owner_changes_name() {
        let two = Ring::new(&["s1", "s2"], 64);
        let three = Ring::new(&["s1", "s2", "s3"], 64);
        let moving = RingChange::of(&two, 64, &three, 64).moving();
        let (mut moved, mut stayed) = (0, 0);
        for k in 0..3000i128 {
            let h = key_hash(&KeyValue::Int(k));
            let to_s3 = three.shard_names()[three.shard_for(h)] == "s3";
            // Adding s3 moves exactly the keys s3 now owns.
            assert_eq!(moving.contains(h), to_s3, "key {k}");
            if to_s3 {
                moved += 1;
            } else {
                stayed += 1;
            }
        }
        assert!(
            moved > 600 && stayed > 1600,
            "{moved} moved, {stayed} stayed"
        );
        // The same ring: nothing moves, whatever the order of names.
        let same = RingChange::of(&two, 64, &Ring::new(&["s2", "s1"], 64), 64).moving();
        assert!((0..1000i128).all(|k| !same.contains(key_hash(&KeyValue::Int(k)))));
    }

    #[test]
    fn touched_keys_add_up_and_meet_the_moving_ones() {
        let two = Ring::new(&["s1", "s2"], 64);
        let three = Ring::new(&["s1", "s2", "s3"], 64);
        let moving = RingChange::of(&two, 64, &three, 64).moving();
        let hashes: Vec<u64> = (0..100i128).map(|k| key_hash(&KeyValue::Int(k))).collect();
        let mover = *hashes
            .iter()
            .find(|&&h| moving.contains(h))
            .expect("one moves");
        let stayer = *hashes
            .iter()
            .find(|&&h| !moving.contains(h))
            .expect("one stays");

        let mut t = Touched::Nothing;
        assert!(!t.meets(&moving));
        t.add(Touched::Keys(vec![stayer]));
        t.add(Touched::Nothing);
        assert!(!t.meets(&moving), "only a key that stays");
        t.add(Touched::Keys(vec![mover]));
        assert!(t.meets(&moving));
        assert!(Touched::Unknown.meets(&moving));

        let mut many = Touched::Keys(vec![stayer]);
        many.add(Touched::Keys(vec![stayer; MAX_KEYS + 10]));
        assert_eq!(many, Touched::Keys(vec![stayer]), "repeats are kept once");
        many.add(Touched::Keys((0..=MAX_KEYS as u64).collect()));
        assert_eq!(many, Touched::Unknown, "too many to track");
        many.add(Touched::Keys(vec![stayer]));
        assert_eq!(many, Touched::Unknown);
    }
}
