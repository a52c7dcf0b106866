//! Statement -> plan. The planner never does I/O; the executor runs what it returns.
//!
//! Every keyspace is unsharded at this stage: a statement goes to its keyspace's shard, whose
//! primary and replicas the route names; which of them runs it follows from the statement's
//! class (`classify`) and the session's state. Shard-key routing plugs in here (issue 4).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::health::{Health, ServerHealth};
use crate::protocol::consts::errcode;
use crate::shardmap::{ShardMap, Sharding};

pub mod classify;
pub mod digest;
pub mod lex;

/// Where one statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub keyspace: Arc<str>,
    pub shard: Arc<str>,
    /// `host:port` of the shard's primary (or, for a command aimed at one server, that server).
    pub addr: Arc<str>,
    pub replicas: Replicas,
}

/// A shard's replicas with their live health, and how far behind a read may be served.
#[derive(Clone)]
pub struct Replicas(pub Arc<ReplicaSet>);

pub struct ReplicaSet {
    pub servers: Vec<Arc<ServerHealth>>,
    pub max_lag: Duration,
    /// Reads are going to the primary for want of a usable replica (logged once per change).
    pub on_primary: AtomicBool,
}

impl Replicas {
    pub fn none() -> Self {
        Replicas(Arc::new(ReplicaSet {
            servers: Vec::new(),
            max_lag: Duration::ZERO,
            on_primary: AtomicBool::new(false),
        }))
    }

    pub fn addrs(&self) -> impl Iterator<Item = &str> {
        self.0.servers.iter().map(|s| &**s.addr())
    }
}

impl PartialEq for Replicas {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Replicas {}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.addrs()).finish()
    }
}

/// What to do with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Route(Route),
    /// Refused with a MySQL error that says what and why.
    Reject {
        code: (u16, &'static str),
        message: String,
    },
}

/// Session facts the planner reads.
pub struct PlanContext<'a> {
    pub db: Option<&'a str>,
    pub default_keyspace: Option<&'a str>,
}

/// Routing tables derived once from a shard map.
pub struct Planner {
    map: ShardMap,
    routes: HashMap<String, Route>,
}

impl Planner {
    /// `health` supplies the replicas' live state; `max_lag` a keyspace's lag limit. Without
    /// `read_write_split` routes carry no replicas and everything runs on primaries.
    pub fn new(
        map: ShardMap,
        health: &Health,
        read_write_split: bool,
        max_lag: impl Fn(&str) -> Duration,
    ) -> Self {
        let routes = map
            .keyspace
            .iter()
            .filter(|(_, ks)| ks.sharding == Sharding::Unsharded)
            .filter_map(|(name, ks)| {
                let shard = ks.shards.first()?;
                let servers = shard
                    .replicas
                    .iter()
                    .filter(|_| read_write_split)
                    .filter_map(|r| health.get(&r.addr))
                    .collect();
                Some((
                    name.clone(),
                    Route {
                        keyspace: name.as_str().into(),
                        shard: shard.name.as_str().into(),
                        addr: shard.primary.as_str().into(),
                        replicas: Replicas(Arc::new(ReplicaSet {
                            servers,
                            max_lag: max_lag(name),
                            on_primary: AtomicBool::new(false),
                        })),
                    },
                ))
            })
            .collect();
        Planner { map, routes }
    }

    /// The keyspace a session works in: its database if that names a keyspace, else the
    /// user's default, else the shard map's first (so `information_schema` and friends work).
    pub fn keyspace_for<'a>(&'a self, ctx: &PlanContext<'a>) -> Option<&'a str> {
        if let Some(db) = ctx.db {
            if let Some((name, _)) = self.map.keyspace.get_key_value(db) {
                return Some(name);
            }
        }
        ctx.default_keyspace.or_else(|| self.map.default_keyspace())
    }

    pub fn is_keyspace(&self, name: &str) -> bool {
        self.map.keyspace.contains_key(name)
    }

    /// Plans a statement (COM_QUERY text or a COM_STMT_PREPARE).
    pub fn plan(&self, _sql: &[u8], ctx: &PlanContext<'_>) -> Plan {
        self.plan_session(ctx)
    }

    /// Plans a command that is not a statement but needs the session's server (ping, ...).
    pub fn plan_session(&self, ctx: &PlanContext<'_>) -> Plan {
        let Some(ks) = self.keyspace_for(ctx) else {
            return Plan::Reject {
                code: errcode::UNKNOWN,
                message: "shardgate: no keyspace is configured".into(),
            };
        };
        match self.routes.get(ks) {
            Some(r) => Plan::Route(r.clone()),
            None => Plan::Reject {
                code: errcode::NOT_SUPPORTED,
                message: format!(
                    "shardgate: keyspace '{ks}' is sharded; sharded keyspaces are not supported yet"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner() -> Planner {
        let map: ShardMap = toml::from_str(
            r#"
            [keyspace.app]
            sharding = "unsharded"
            [[keyspace.app.shards]]
            name = "s0"
            primary = "127.0.0.1:1000"
            [keyspace.other]
            sharding = "unsharded"
            [[keyspace.other.shards]]
            name = "o0"
            primary = "127.0.0.1:2000"
            [keyspace.sharded]
            sharding = "consistent_hash"
            [[keyspace.sharded.shards]]
            name = "x0"
            primary = "127.0.0.1:3000"
            "#,
        )
        .expect("map");
        let health = Health::new(&map);
        Planner::new(map, &health, true, |_| Duration::from_secs(1))
    }

    fn addr(p: Plan) -> String {
        match p {
            Plan::Route(r) => r.addr.to_string(),
            Plan::Reject { message, .. } => message,
        }
    }

    #[test]
    fn database_picks_the_keyspace_and_others_fall_back() {
        let p = planner();
        let ctx = |db| PlanContext {
            db,
            default_keyspace: None,
        };
        assert_eq!(
            addr(p.plan(b"select 1", &ctx(Some("other")))),
            "127.0.0.1:2000"
        );
        assert_eq!(
            addr(p.plan(b"select 1", &ctx(Some("mysql")))),
            "127.0.0.1:1000"
        );
        assert_eq!(addr(p.plan(b"select 1", &ctx(None))), "127.0.0.1:1000");
        let with_default = PlanContext {
            db: None,
            default_keyspace: Some("other"),
        };
        assert_eq!(addr(p.plan(b"select 1", &with_default)), "127.0.0.1:2000");
        assert!(addr(p.plan(b"select 1", &ctx(Some("sharded")))).contains("not supported yet"));
    }
}
