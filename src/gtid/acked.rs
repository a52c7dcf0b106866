//! What the proxy acknowledged: per primary, the highest GTID per domain of a write whose OK
//! came through this process (MariaDB reports it in the OK's session state). Failover promotes
//! only a replica holding all of it.
//!
//! One table for the process, not per session or pool: every backend connection reports into
//! it wherever it was made, and one proxy process is the unit whose acknowledgements count.
//! The hot path takes a read lock and one small mutex, and allocates only for a primary or
//! domain seen for the first time.
//!
//! After a start the proxy knows nothing of what an earlier process acknowledged. Until it has
//! read a primary's `@@gtid_binlog_pos` once (the detector does when it first reaches it), it
//! counts that primary's history as unknown and refuses automatic failover; once read, that
//! position counts as acknowledged (possibly more than was: safe).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use super::{Gtid, GtidPos};
use crate::protocol::track::TrackedGtid;

#[derive(Debug, Default)]
struct Entry {
    pos: GtidPos,
    /// The primary's binlog position was read since this process started.
    baseline: bool,
}

/// What is known of one primary's acknowledged writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Every GTID acknowledged (and the primary's position when first seen): per domain, the
    /// highest.
    pub pos: GtidPos,
    /// False until the primary's position was read once since this process started: what an
    /// earlier process acknowledged is then unknown.
    pub baseline: bool,
}

#[derive(Debug, Default)]
pub struct Acked {
    groups: RwLock<HashMap<Arc<str>, Mutex<Entry>>>,
}

fn raise(pos: &mut GtidPos, domain: u32, g: Gtid) {
    match pos.0.get_mut(&domain) {
        Some(have) if have.seq >= g.seq => {}
        Some(have) => *have = g,
        None => {
            pos.0.insert(domain, g);
        }
    }
}

impl Acked {
    /// The process's table.
    pub fn global() -> &'static Acked {
        static ACKED: LazyLock<Acked> = LazyLock::new(Acked::default);
        &ACKED
    }

    fn with(&self, primary: &str, f: impl FnOnce(&mut Entry)) {
        let read = self.groups.read().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = read.get(primary) {
            f(&mut e.lock().unwrap_or_else(|p| p.into_inner()));
            return;
        }
        drop(read);
        let mut write = self.groups.write().unwrap_or_else(|p| p.into_inner());
        let e = write.entry(primary.into()).or_default();
        f(e.get_mut().unwrap_or_else(|p| p.into_inner()));
    }

    /// A write on `server` reported `g` in its OK.
    pub fn note(&self, server: &str, g: TrackedGtid) {
        let gtid = Gtid {
            server: g.server,
            seq: g.seq,
        };
        self.with(server, |e| raise(&mut e.pos, g.domain, gtid));
    }

    /// `primary`'s `@@gtid_binlog_pos`, read while it was alive: everything up to it may have
    /// been acknowledged by an earlier process.
    pub fn baseline(&self, primary: &str, pos: &GtidPos) {
        self.with(primary, |e| {
            for (d, g) in &pos.0 {
                raise(&mut e.pos, *d, *g);
            }
            e.baseline = true;
        });
    }

    /// `server` is about to become a primary holding exactly `pos` (no statement reaches it
    /// before the new map is published): an older record of it (from an earlier time as the
    /// primary, or GTIDs lost by a forced failover) must not ask more of its replicas later.
    pub fn promoted(&self, server: &str, pos: &GtidPos) {
        self.with(server, |e| {
            e.pos = pos.clone();
            e.baseline = true;
        });
    }

    /// What an earlier process of this proxy published: acknowledged, but not a baseline.
    pub fn restore(&self, primary: &str, pos: &GtidPos) {
        self.with(primary, |e| {
            for (d, g) in &pos.0 {
                raise(&mut e.pos, *d, *g);
            }
        });
    }

    /// `server` became a primary under another proxy's failover: what this process recorded
    /// of an earlier time as primary no longer applies; its baseline is read again.
    pub fn forget(&self, server: &str) {
        self.with(server, |e| *e = Entry::default());
    }

    /// Every primary's record.
    pub fn snapshot(&self) -> Vec<(String, Known)> {
        let read = self.groups.read().unwrap_or_else(|p| p.into_inner());
        read.iter()
            .map(|(k, e)| {
                let e = e.lock().unwrap_or_else(|p| p.into_inner());
                (
                    k.to_string(),
                    Known {
                        pos: e.pos.clone(),
                        baseline: e.baseline,
                    },
                )
            })
            .collect()
    }

    /// Whether `primary`'s position was read since the start.
    pub fn has_baseline(&self, primary: &str) -> bool {
        self.known(primary).baseline
    }

    pub fn known(&self, primary: &str) -> Known {
        let read = self.groups.read().unwrap_or_else(|p| p.into_inner());
        read.get(primary)
            .map(|e| {
                let e = e.lock().unwrap_or_else(|p| p.into_inner());
                Known {
                    pos: e.pos.clone(),
                    baseline: e.baseline,
                }
            })
            .unwrap_or_default()
    }
}

/// The GTIDs of `want` that `have` lacks, as `domain-server-seq`.
pub fn missing(have: &GtidPos, want: &GtidPos) -> Vec<String> {
    want.0
        .iter()
        .filter(|(d, g)| have.0.get(d).is_none_or(|h| h.seq < g.seq))
        .map(|(d, g)| format!("{d}-{}-{}", g.server, g.seq))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(domain: u32, server: u32, seq: u64) -> TrackedGtid {
        TrackedGtid {
            domain,
            server,
            seq,
        }
    }

    #[test]
    fn keeps_the_highest_per_domain_and_names_what_a_replica_lacks() {
        let a = Acked::default();
        a.note("p:1", g(0, 1, 7));
        a.note("p:1", g(0, 1, 5));
        a.note("p:1", g(2, 1, 3));
        let k = a.known("p:1");
        assert!(!k.baseline, "nothing read from the primary yet");
        assert_eq!(k.pos.to_string(), "0-1-7,2-1-3");
        let replica = GtidPos::parse("0-1-6,2-1-3").expect("pos");
        assert_eq!(missing(&replica, &k.pos), vec!["0-1-7".to_string()]);
        assert!(missing(&GtidPos::parse("0-1-7,2-1-9").expect("pos"), &k.pos).is_empty());
        a.baseline("p:1", &GtidPos::parse("0-1-6,1-1-2").expect("pos"));
        let k = a.known("p:1");
        assert!(k.baseline);
        assert_eq!(k.pos.to_string(), "0-1-7,1-1-2,2-1-3");
        assert_eq!(a.known("other:1"), Known::default());
        assert!(!a.has_baseline("other:1"));
        a.promoted("p:1", &GtidPos::parse("0-1-5").expect("pos"));
        assert_eq!(a.known("p:1").pos.to_string(), "0-1-5");
    }

    #[test]
    fn restored_positions_count_but_are_no_baseline_and_forget_starts_over() {
        let a = Acked::default();
        a.restore("p:1", &GtidPos::parse("0-1-9").expect("pos"));
        let k = a.known("p:1");
        assert_eq!(k.pos.to_string(), "0-1-9");
        assert!(
            !k.baseline,
            "an earlier process's record is not a read of the primary"
        );
        a.note("p:1", g(0, 1, 10));
        let snap = a.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].1.pos.to_string(), "0-1-10");
        a.forget("p:1");
        assert_eq!(a.known("p:1"), Known::default());
    }
}
