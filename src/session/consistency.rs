//! Read-your-writes: after a session writes, a replica serves its reads only once it has
//! applied that write (MariaDB's `@@last_gtid` on the primary, `MASTER_GTID_WAIT` on the
//! replica); otherwise the primary does.

use std::sync::Arc;

use tracing::debug;

use super::Session;
use crate::backend::conn::sets_tracking;
use crate::config::Consistency;
use crate::ha::acked::Acked;
use crate::protocol::track::TrackedGtid;

/// The session's last write on each shard, and the replicas known to have applied it.
///
/// Per primary: shards replicate independently (in the sandbox all in GTID domain 0), so a
/// GTID from one shard says nothing about another shard's replicas.
#[derive(Debug, Default)]
pub struct Ryw {
    /// Primaries written since their GTID was last read, when OKs do not report it (read
    /// when the transaction is over).
    pub dirty: Vec<Arc<str>>,
    /// Per primary, the GTID of the session's last write there.
    pub gtids: Vec<(Arc<str>, TrackedGtid)>,
    /// Replicas that have applied the last write of their shard.
    pub caught_up: Vec<Arc<str>>,
}

impl Session {
    pub(super) fn read_your_writes(&self) -> bool {
        self.shared.config.routing.consistency == Consistency::ReadYourWrites
    }

    /// After a statement on the primary connection to `addr`: remembers the GTID of the
    /// session's last write there, as the statement's OK reported it (a transaction's comes
    /// with its COMMIT; a write that logged nothing has none, and nothing to wait for).
    pub(super) async fn note_write(&mut self, addr: &Arc<str>, wrote: bool) {
        let tracked = self.pinned.find(addr).and_then(|c| c.last_gtid.take());
        if let Some(g) = tracked {
            self.ryw.dirty.retain(|p| p != addr);
            if self.read_your_writes() {
                self.remember_gtid(addr.clone(), g);
            }
            return;
        }
        if !self.tracking_replaced() {
            return;
        }
        // The client set its own tracked variables, so OKs lack `last_gtid`: read it with a
        // statement once the transaction is over (this resets ROW_COUNT(), the price of it).
        if wrote && !self.ryw.dirty.contains(addr) {
            self.ryw.dirty.push(addr.clone());
        }
        if self.ryw.dirty.is_empty() || self.hold.txn {
            return;
        }
        for primary in std::mem::take(&mut self.ryw.dirty) {
            let Some(conn) = self.pinned.find(&primary) else {
                continue;
            };
            match conn.query_value("SELECT @@last_gtid").await {
                Ok(Ok(Some(g))) => {
                    if let Some(t) = TrackedGtid::parse(g.as_bytes()) {
                        Acked::global().note(&primary, t);
                        if self.read_your_writes() {
                            self.remember_gtid(primary, t);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "reading @@last_gtid failed");
                    self.pinned.discard(&primary);
                }
            }
        }
    }

    fn remember_gtid(&mut self, primary: Arc<str>, gtid: TrackedGtid) {
        self.ryw.gtids.retain(|(p, _)| *p != primary);
        self.ryw.gtids.push((primary, gtid));
        self.ryw.caught_up.clear();
    }

    /// Whether the client set `session_track_system_variables` itself: its value, replayed on
    /// the connection, replaced the proxy's (which asks for `last_gtid`).
    fn tracking_replaced(&self) -> bool {
        sets_tracking(Some(&self.vars))
    }

    /// Whether the replica connection held to `addr` has applied the session's last write
    /// on its shard's `primary`, waiting up to `gtid_wait_timeout_ms` for it.
    pub(super) async fn replica_caught_up(&mut self, addr: &Arc<str>, primary: &Arc<str>) -> bool {
        if !self.read_your_writes() {
            return true;
        }
        let Some(gtid) = self
            .ryw
            .gtids
            .iter()
            .find(|(p, _)| p == primary)
            .map(|(_, g)| *g)
        else {
            return true;
        };
        if self.ryw.caught_up.iter().any(|a| a == addr) {
            return true;
        }
        let version = self.shared.topology.version();
        if self.shared.applied.covers(addr, gtid, version) {
            self.ryw.caught_up.push(addr.clone());
            return true;
        }
        let ms = self.shared.config.routing.gtid_wait_timeout_ms;
        let sql = format!(
            "SELECT MASTER_GTID_WAIT('{gtid}', {}.{:03})",
            ms / 1000,
            ms % 1000
        );
        let Some(conn) = self.pinned.find(addr) else {
            return false;
        };
        match conn.query_value(&sql).await {
            Ok(Ok(Some(v))) if v == "0" => {
                self.shared.applied.learn(addr, gtid, version);
                self.ryw.caught_up.push(addr.clone());
                true
            }
            Ok(_) => false,
            Err(e) => {
                debug!(error = %e, "MASTER_GTID_WAIT failed");
                self.pinned.discard(addr);
                false
            }
        }
    }
}
