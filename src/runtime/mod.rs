//! The services every part of a running proxy shares: the topology and its planner, failure
//! handling, pools, the session registry, caches and statistics. The listener (`proxy`), the
//! sessions and the admin API depend on this module, and it on none of them, so state flows
//! one way (it used to live in `proxy`, which the sessions and the admin API then imported
//! while `proxy` imported them).

pub mod admission;
pub mod registry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backend::health::Health;
use crate::backend::Pools;
use crate::config::Config;
use crate::ha::Ha;
use crate::planner::Planner;
use crate::topology::{Topology, TopologyError};
pub use registry::{Registry, FIRST_ID};

/// State every session reads.
pub struct Shared {
    pub config: Config,
    /// The live shard map and its planner; failover publishes new versions.
    pub topology: Arc<Topology>,
    /// Failure handling: its gate holds statements while a primary changes.
    pub ha: Arc<Ha>,
    pub pools: Pools,
    pub sessions: Arc<Registry>,
    /// Live state of every server, kept by the monitor.
    pub health: Arc<Health>,
    /// Ids taken from sequence tables and not yet handed out: sequence -> [next, end).
    pub sequences: crate::executor::sequence::Blocks,
    /// Per statement shape statistics (`/api/v1/queries`).
    pub digests: crate::digests::Digests,
    /// The result cache, when a rule in `[cache]` turns it on.
    pub cache: Option<Arc<crate::cache::ResultCache>>,
    /// GTID positions replicas are known to have applied (read-your-writes).
    pub applied: crate::backend::applied::Applied,
    /// Servers' PREPARE replies, given again to clients preparing the same text.
    pub prepare_replies: crate::cache::prepare_replies::PrepareReplies,
    /// Reshard workflows (`shardgate reshard ...`).
    pub reshards: Arc<crate::reshard::manager::Reshards>,
    /// Connections logging in and clients logged in, against the limits on them.
    pub admission: Arc<admission::Admission>,
    /// Bytes of clients' commands still arriving (`max_buffered_command_bytes`).
    pub command_bytes: crate::protocol::packet::ByteBudget,
    /// Set while the workers run: `/readyz` is not ready before the listeners exist.
    pub(crate) accepting: AtomicBool,
}

impl Shared {
    pub fn new(config: Config) -> Result<Self, TopologyError> {
        let workers = worker_count(&config);
        let command_bytes =
            crate::protocol::packet::ByteBudget::new(config.proxy.max_buffered_command_bytes);
        let health = Health::new(&config.shard_map());
        let topology = Arc::new(Topology::new(&config, health.clone())?);
        let ha = Arc::new(Ha::new(&config, topology.clone()));
        let cache = crate::cache::ResultCache::new(&config.cache).map(Arc::new);
        let reshards = crate::reshard::manager::Reshards::new(topology.clone(), ha.clone());
        Ok(Shared {
            reshards,
            topology,
            ha,
            pools: Pools::new(config.pool.clone(), workers),
            config,
            sessions: Arc::new(Registry::default()),
            health,
            sequences: Default::default(),
            digests: Default::default(),
            prepare_replies: Default::default(),
            applied: Default::default(),
            cache,
            admission: Default::default(),
            command_bytes,
            accepting: AtomicBool::new(false),
        })
    }

    /// Whether the proxy's workers are accepting MySQL clients.
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    /// The planner of the current shard map version.
    pub fn planner(&self) -> Arc<Planner> {
        self.topology.planner()
    }
}

/// Worker threads to run: `proxy.workers`, or one per CPU when it is 0.
pub fn worker_count(config: &Config) -> usize {
    match config.proxy.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}
