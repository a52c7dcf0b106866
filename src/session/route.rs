//! Which server of a shard runs a statement: the read/write split.
//!
//! Writes, DDL, locking reads and anything uncertain go to the primary; plain reads outside a
//! transaction go to a replica chosen by `backend::balance` (healthy, within the keyspace's lag
//! limit, least busy). A connection the session holds (transaction, pin) wins over both, and
//! hints in comments override the rules.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{info, warn};

use super::Session;
use crate::backend::balance::choose_replica;
use crate::backend::health::ServerHealth;
use crate::planner::classify::{Class, Hint, Kind};
use crate::planner::Route;

/// The server chosen for one statement.
pub(super) enum Choice {
    Primary,
    Replica(Arc<ServerHealth>),
    /// A connection the session already holds on this shard.
    Held(Arc<str>),
}

impl Session {
    pub(super) fn choose(
        &self,
        route: &Route,
        class: &Class,
        hint: Option<Hint>,
        exclude: &[Arc<str>],
        force_primary: bool,
    ) -> Choice {
        let servers = std::iter::once(&*route.addr).chain(route.replicas.addrs());
        let held = self.pinned.held_among(servers);
        let reads = matches!(class.kind, Kind::Read | Kind::LockingRead);
        if hint == Some(Hint::Replica) && reads && self.hold.life.is_none() && !force_primary {
            if let Some(r) = pick_replica(route, exclude) {
                return Choice::Replica(r);
            }
        }
        if let Some(addr) = held {
            let for_this = self.hold.txn || self.hold.long_data;
            if for_this || (self.hold.next && class.uses_previous) {
                return Choice::Held(addr);
            }
        }
        if self.hold.life.is_some() {
            // Pinned state lives on the primary connection, which the session holds.
            return Choice::Primary;
        }
        let to_replica = matches!(class.kind, Kind::Read | Kind::Begin { read_only: true });
        if !to_replica
            || force_primary
            || class.pins.is_some()
            || class.uses_previous
            || hint == Some(Hint::Primary)
            || !self.vars.autocommit()
            || route.replicas.0.servers.is_empty()
        {
            return Choice::Primary;
        }
        match pick_replica(route, exclude) {
            Some(r) => Choice::Replica(r),
            None => Choice::Primary,
        }
    }
}

/// A usable replica of `route`'s shard; when there is none, says so once (log) and every time
/// (metric), and the caller reads from the primary.
fn pick_replica(route: &Route, exclude: &[Arc<str>]) -> Option<Arc<ServerHealth>> {
    let set = &route.replicas.0;
    if set.servers.is_empty() {
        return None;
    }
    let exclude: Vec<&str> = exclude.iter().map(|a| &**a).collect();
    match choose_replica(&set.servers, set.max_lag, &exclude) {
        Some(r) => {
            if set.on_primary.swap(false, Ordering::Relaxed) {
                info!(shard = %route.shard, replica = %r.addr(), "reads are back on replicas");
            }
            Some(r.clone())
        }
        None => {
            metrics::counter!("shardgate_reads_on_primary_total", "shard" => route.shard.to_string())
                .increment(1);
            if !set.on_primary.swap(true, Ordering::Relaxed) {
                warn!(
                    shard = %route.shard,
                    primary = %route.addr,
                    "no healthy replica within the lag limit: reads go to the primary"
                );
            }
            None
        }
    }
}
