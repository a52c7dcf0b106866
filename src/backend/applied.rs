//! What each replica is known to have applied, per GTID domain, learned from every session's
//! successful `MASTER_GTID_WAIT`: under read-your-writes, a session whose last write is at or
//! below a position another session already saw a replica reach reads there without a wait
//! of its own (a round trip each, and under many writers the wait for the replica to apply).
//!
//! A replica applies a domain's transactions in order (MariaDB commits in order in a domain,
//! with parallel replication too), and `MASTER_GTID_WAIT` answers by the same per-domain
//! sequence number kept here. Positions are forgotten when the shard map changes: a failover
//! or rejoin may point a server at another history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::protocol::track::TrackedGtid;

#[derive(Default)]
pub struct Applied {
    inner: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// The shard map version these positions were learned under.
    version: u64,
    /// Replica address -> (domain, highest sequence number applied) pairs.
    by_replica: HashMap<Arc<str>, Vec<(u32, u64)>>,
}

impl Applied {
    /// Whether `replica` is known to have applied `gtid` under map `version`.
    pub fn covers(&self, replica: &str, gtid: TrackedGtid, version: u64) -> bool {
        let known = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        known.version == version
            && known.by_replica.get(replica).is_some_and(|domains| {
                domains
                    .iter()
                    .any(|&(d, seq)| d == gtid.domain && seq >= gtid.seq)
            })
    }

    /// Records that `replica` has applied `gtid` (a `MASTER_GTID_WAIT` for it returned 0).
    pub fn learn(&self, replica: &Arc<str>, gtid: TrackedGtid, version: u64) {
        let mut known = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if known.version != version {
            known.by_replica.clear();
            known.version = version;
        }
        let domains = known.by_replica.entry(replica.clone()).or_default();
        match domains.iter_mut().find(|(d, _)| *d == gtid.domain) {
            Some((_, seq)) => *seq = (*seq).max(gtid.seq),
            None => domains.push((gtid.domain, gtid.seq)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(domain: u32, seq: u64) -> TrackedGtid {
        TrackedGtid {
            domain,
            server: 1,
            seq,
        }
    }

    #[test]
    fn a_position_covers_earlier_transactions_of_its_domain_only() {
        let a = Applied::default();
        let r: Arc<str> = Arc::from("127.0.0.1:2");
        assert!(!a.covers(&r, g(0, 5), 1));
        a.learn(&r, g(0, 10), 1);
        assert!(a.covers(&r, g(0, 10), 1));
        assert!(a.covers(&r, g(0, 3), 1));
        assert!(!a.covers(&r, g(0, 11), 1));
        assert!(!a.covers(&r, g(1, 3), 1), "another domain");
        assert!(!a.covers("127.0.0.1:3", g(0, 3), 1), "another replica");
        // An older answer does not move the position back.
        a.learn(&r, g(0, 4), 1);
        assert!(a.covers(&r, g(0, 10), 1));
    }

    #[test]
    fn a_new_shard_map_forgets_every_position() {
        let a = Applied::default();
        let r: Arc<str> = Arc::from("127.0.0.1:2");
        a.learn(&r, g(0, 10), 1);
        assert!(!a.covers(&r, g(0, 3), 2));
        a.learn(&r, g(0, 2), 2);
        assert!(!a.covers(&r, g(0, 3), 2));
        assert!(a.covers(&r, g(0, 2), 2));
    }
}
