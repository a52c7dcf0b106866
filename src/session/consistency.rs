//! Read-your-writes: after a session writes, a replica serves its reads only once it has
//! applied that write (MariaDB's `@@last_gtid` on the primary, `MASTER_GTID_WAIT` on the
//! replica); otherwise the primary does.

use std::sync::Arc;

use tracing::debug;

use super::Session;
use crate::config::Consistency;

/// The session's last write on each shard, and the replicas known to have applied it.
///
/// Per primary: shards replicate independently (in the sandbox all in GTID domain 0), so a
/// GTID from one shard says nothing about another shard's replicas.
#[derive(Debug, Default)]
pub struct Ryw {
    /// Primaries written since their GTID was last read (read when the transaction is over).
    pub dirty: Vec<Arc<str>>,
    /// Per primary, the GTID of the session's last write there.
    pub gtids: Vec<(Arc<str>, String)>,
    /// Replicas that have applied the last write of their shard.
    pub caught_up: Vec<Arc<str>>,
}

fn is_gtid_list(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
}

impl Session {
    pub(super) fn read_your_writes(&self) -> bool {
        self.shared.config.routing.consistency == Consistency::ReadYourWrites
    }

    /// After a statement on the primary connection to `addr`: remembers the GTID of the
    /// session's last write on each primary written, once its transaction is over (a
    /// transaction on several shards ends on all of them before this runs).
    pub(super) async fn note_write(&mut self, addr: &Arc<str>, wrote: bool) {
        if !self.read_your_writes() {
            return;
        }
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
                Ok(Ok(Some(g))) if is_gtid_list(&g) => {
                    self.ryw.gtids.retain(|(p, _)| *p != primary);
                    self.ryw.gtids.push((primary, g));
                    self.ryw.caught_up.clear();
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "reading @@last_gtid failed");
                    self.pinned.discard(&primary);
                }
            }
        }
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
            .map(|(_, g)| g.clone())
        else {
            return true;
        };
        if self.ryw.caught_up.iter().any(|a| a == addr) {
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
