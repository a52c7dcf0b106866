//! Prepared statements of a session: the id the client sees and what the statement is.
//!
//! The proxy hands out its own ids: a statement may be executed on any pooled connection (each
//! prepares it under its own server id, see `backend::prepared`), so the session keeps the SQL
//! text, its class for routing, and the parameter types the client last bound.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use crate::planner::classify::{Class, Hint};
use crate::planner::Route;

pub struct StmtInfo {
    pub sql: Arc<[u8]>,
    pub class: Arc<Class>,
    pub hint: Option<Hint>,
    pub route: Route,
    /// Parameter types the client sent with its last execute that carried them.
    pub types: Option<Bytes>,
    /// Parameters the statement takes.
    pub params: u16,
    /// Where executes run on a sharded keyspace.
    pub shards: StmtShards,
    /// What the result cache worked out for its executes (set by the first).
    pub cache_shape: Option<Arc<super::cached::Shape>>,
    /// The statement's shape for statistics; 0 until its first execute works it out.
    pub digest: u64,
}

impl StmtInfo {
    pub fn new(
        sql: Arc<[u8]>,
        class: Arc<Class>,
        hint: Option<Hint>,
        route: Route,
        params: u16,
    ) -> Self {
        StmtInfo {
            sql,
            class,
            hint,
            route,
            types: None,
            params,
            shards: Default::default(),
            cache_shape: None,
            digest: 0,
        }
    }
}

/// Where a prepared statement's executes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StmtShards {
    /// On the statement's route (one shard, or an unsharded keyspace).
    #[default]
    Fixed,
    /// On the shard of this parameter's value.
    Key(usize),
    /// On several shards: planned again at each execute (from the plan cache).
    Multi,
}

/// The proxy's own statement ids are small and sequential: one multiplication spreads them
/// over the whole hash (the map reads its top bits too), and an execute does not pay SipHash
/// for each of its lookups.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
pub struct Statements {
    by_client_id: HashMap<u32, StmtInfo, BuildHasherDefault<IdHasher>>,
    last_id: u32,
}

impl Statements {
    /// The id the next PREPARE_OK will carry.
    pub fn next_id(&self) -> u32 {
        self.last_id.wrapping_add(1).max(1)
    }

    pub fn insert(&mut self, client_id: u32, info: StmtInfo) {
        self.last_id = client_id;
        self.by_client_id.insert(client_id, info);
    }

    pub fn get(&self, client_id: u32) -> Option<&StmtInfo> {
        self.by_client_id.get(&client_id)
    }

    pub fn get_mut(&mut self, client_id: u32) -> Option<&mut StmtInfo> {
        self.by_client_id.get_mut(&client_id)
    }

    pub fn remove(&mut self, client_id: u32) {
        self.by_client_id.remove(&client_id);
    }

    pub fn clear(&mut self) {
        self.by_client_id.clear();
    }
}
