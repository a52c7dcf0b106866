//! Statement -> plan. The planner never does I/O; the executor runs what it returns.
//!
//! At this stage every keyspace is unsharded and every statement goes to its shard's primary.
//! The read/write split, shard-key routing and the plan cache plug in here (issues 3 and 4).

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::consts::errcode;
use crate::shardmap::{ShardMap, Sharding};

pub mod lex;

/// Where one statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub keyspace: Arc<str>,
    pub shard: Arc<str>,
    /// `host:port` of the server that runs it.
    pub addr: Arc<str>,
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
    pub fn new(map: ShardMap) -> Self {
        let routes = map
            .keyspace
            .iter()
            .filter(|(_, ks)| ks.sharding == Sharding::Unsharded)
            .filter_map(|(name, ks)| {
                let shard = ks.shards.first()?;
                Some((
                    name.clone(),
                    Route {
                        keyspace: name.as_str().into(),
                        shard: shard.name.as_str().into(),
                        addr: shard.primary.as_str().into(),
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
        Planner::new(map)
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
