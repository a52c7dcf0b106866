//! Read-your-writes: after a session writes, a replica serves its reads only once it has
//! applied that write (MariaDB's `@@last_gtid` on the primary, `MASTER_GTID_WAIT` on the
//! replica); otherwise the primary does.

use std::sync::Arc;

use tracing::debug;

use super::Session;
use crate::config::Consistency;

/// The session's last write, and the replicas known to have applied it.
#[derive(Debug, Default)]
pub struct Ryw {
    /// A write ran since the last GTID was read (read it when the transaction is over).
    pub dirty: bool,
    pub gtid: Option<String>,
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
    /// session's last write once its transaction is over.
    pub(super) async fn note_write(&mut self, addr: &str, wrote: bool) {
        if !self.read_your_writes() {
            return;
        }
        self.ryw.dirty |= wrote;
        if !self.ryw.dirty || self.hold.txn {
            return;
        }
        let Some(conn) = self.pinned.find(addr) else {
            return;
        };
        match conn.query_value("SELECT @@last_gtid").await {
            Ok(Ok(Some(g))) if is_gtid_list(&g) => {
                self.ryw.gtid = Some(g);
                self.ryw.caught_up.clear();
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "reading @@last_gtid failed");
                self.pinned.discard(addr);
            }
        }
        self.ryw.dirty = false;
    }

    /// Whether the replica connection held to `addr` has applied the session's last write,
    /// waiting up to `gtid_wait_timeout_ms` for it.
    pub(super) async fn replica_caught_up(&mut self, addr: &Arc<str>) -> bool {
        if !self.read_your_writes() {
            return true;
        }
        let Some(gtid) = self.ryw.gtid.clone() else {
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
