//! Which replica a read goes to: a pure function over the health state, so it is easy to test
//! and cheap enough to run on every statement (no locks, no allocation).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use super::health::ServerHealth;

thread_local! {
    /// Per worker thread, so picking never contends on a shared cache line.
    static PICKS: Cell<u64> = const { Cell::new(0) };
}

/// A fraction in [0, 2^32) that spreads evenly over consecutive calls on this thread: the
/// golden-ratio (Weyl) sequence stays even for every subsequence too, so a thread alternating
/// between shards still splits each shard's reads by weight.
fn next_fraction() -> u64 {
    let n = PICKS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}

fn eligible(r: &ServerHealth, max_lag: Duration, exclude: &[&str]) -> bool {
    r.is_up()
        && r.replicating()
        && r.lag().is_some_and(|lag| lag <= max_lag)
        && !exclude.iter().any(|e| **e == **r.addr())
}

/// A replica's load as (outstanding, weight); `a` is busier than `b` when
/// a.0 / a.1 > b.0 / b.1, compared by cross-multiplying (no division, no floats).
fn load(r: &ServerHealth) -> (u64, u64) {
    (u64::from(r.outstanding()), u64::from(r.weight().max(1)))
}

/// Among `replicas`, the one a read should go to: up, replicating, lag known and <= `max_lag`,
/// not in `exclude`; the least outstanding queries relative to weight; replicas equally loaded
/// share reads in proportion to their weights (evenly when weights are equal). None: the read
/// goes to the primary.
pub fn choose_replica<'a>(
    replicas: &'a [Arc<ServerHealth>],
    max_lag: Duration,
    exclude: &[&str],
) -> Option<&'a Arc<ServerHealth>> {
    let candidates = || replicas.iter().filter(|r| eligible(r, max_lag, exclude));
    // Pass 1: the lowest load, and the total weight of the replicas at that load.
    let mut best: Option<(u64, u64)> = None;
    let mut first_best = None;
    let mut tied_weight = 0u64;
    for r in candidates() {
        let (out, w) = load(r);
        match best {
            Some((bo, bw)) if out * bw > bo * w => {}
            Some((bo, bw)) if out * bw == bo * w => tied_weight += w,
            _ => {
                best = Some((out, w));
                first_best = Some(r);
                tied_weight = w;
            }
        }
    }
    let (bo, bw) = best?;
    if tied_weight == load(first_best?).1 {
        return first_best;
    }
    // Pass 2: a weighted pick among the tied. Other threads may change counts in between; if
    // the ticket then matches nobody, the first of the tied is as good a choice.
    let mut ticket = (next_fraction() * tied_weight) >> 32;
    for r in candidates() {
        let (out, w) = load(r);
        if out * bw != bo * w {
            continue;
        }
        if ticket < w {
            return Some(r);
        }
        ticket -= w;
    }
    first_best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::health::{Check, ReplicaStatus};

    const MAX: Duration = Duration::from_secs(10);

    fn replica(addr: &str, weight: u32, lag_s: Option<u64>) -> Arc<ServerHealth> {
        let r = Arc::new(ServerHealth::new(addr, true, weight));
        r.record(
            0,
            &Check::Replica(ReplicaStatus {
                replicating: lag_s.is_some(),
                lag: lag_s.map(Duration::from_secs),
                problem: None,
            }),
        );
        r
    }

    fn pick(rs: &[Arc<ServerHealth>], exclude: &[&str]) -> Option<String> {
        choose_replica(rs, MAX, exclude).map(|r| r.addr().to_string())
    }

    fn counts(rs: &[Arc<ServerHealth>], n: usize) -> Vec<usize> {
        let mut counts = vec![0; rs.len()];
        for _ in 0..n {
            let chosen = choose_replica(rs, MAX, &[]).expect("a replica");
            // Taken and released at once: outstanding stays equal.
            let _guard = chosen.start_query();
            let i = rs
                .iter()
                .position(|r| Arc::ptr_eq(r, chosen))
                .expect("from the slice");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn lagging_replica_is_skipped() {
        let rs = [replica("a:1", 1, Some(11)), replica("b:1", 1, Some(10))];
        for _ in 0..10 {
            assert_eq!(pick(&rs, &[]).as_deref(), Some("b:1"));
        }
        let rs = [replica("a:1", 1, Some(11))];
        assert_eq!(pick(&rs, &[]), None);
    }

    #[test]
    fn down_replica_is_skipped() {
        let rs = [replica("a:1", 1, Some(0)), replica("b:1", 1, Some(0))];
        rs[0].mark_down();
        for _ in 0..10 {
            assert_eq!(pick(&rs, &[]).as_deref(), Some("b:1"));
        }
        rs[1].record(0, &Check::Failed("refused".into()));
        assert_eq!(pick(&rs, &[]), None);
    }

    #[test]
    fn not_replicating_or_unknown_lag_is_skipped() {
        let stopped = Arc::new(ServerHealth::new("a:1", true, 1));
        stopped.record(
            0,
            &Check::Replica(ReplicaStatus {
                replicating: false,
                lag: None,
                problem: Some("Slave_SQL_Running=No".into()),
            }),
        );
        let never_checked = Arc::new(ServerHealth::new("c:1", true, 1));
        let rs = [stopped, replica("b:1", 1, Some(0)), never_checked];
        for _ in 0..10 {
            assert_eq!(pick(&rs, &[]).as_deref(), Some("b:1"));
        }
    }

    #[test]
    fn weights_split_reads_proportionally() {
        let rs = [replica("a:1", 1, Some(0)), replica("b:1", 3, Some(0))];
        let c = counts(&rs, 4000);
        assert!((950..=1050).contains(&c[0]), "{c:?}");
        assert!((2950..=3050).contains(&c[1]), "{c:?}");
    }

    #[test]
    fn equal_replicas_share_evenly() {
        let rs = [
            replica("a:1", 1, Some(0)),
            replica("b:1", 1, Some(1)),
            replica("c:1", 1, Some(2)),
        ];
        let c = counts(&rs, 3000);
        for n in &c {
            assert!((950..=1050).contains(n), "{c:?}");
        }
    }

    #[test]
    fn least_outstanding_relative_to_weight_wins() {
        let rs = [replica("a:1", 1, Some(0)), replica("b:1", 2, Some(0))];
        let _a = rs[0].start_query();
        // a: 1/1, b: 0/2.
        assert_eq!(pick(&rs, &[]).as_deref(), Some("b:1"));
        let _b1 = rs[1].start_query();
        let _b2 = rs[1].start_query();
        let _b3 = rs[1].start_query();
        // a: 1/1, b: 3/2.
        for _ in 0..10 {
            assert_eq!(pick(&rs, &[]).as_deref(), Some("a:1"));
        }
    }

    #[test]
    fn excluded_replicas_are_skipped() {
        let rs = [replica("a:1", 1, Some(0)), replica("b:1", 1, Some(0))];
        for _ in 0..10 {
            assert_eq!(pick(&rs, &["a:1"]).as_deref(), Some("b:1"));
        }
        assert_eq!(pick(&rs, &["a:1", "b:1"]), None);
        assert_eq!(pick(&[], &[]), None);
    }
}
