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
use crate::shardmap::moving::Touched;
use crate::shardmap::ring::{key_hash, KeyValue, Ring};
use crate::shardmap::{ShardMap, Sharding, TableRule};
use shard::shape::{self, Shape};
use shard::ShardContext;
pub use shard::ShardPlan;
use table_columns::TableColumns;

pub mod classify;
pub mod digest;
pub mod explain;
pub mod lex;
pub mod shard;
pub mod table_columns;
pub mod text;

/// Where one statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub keyspace: Arc<str>,
    pub shard: Arc<str>,
    /// `host:port` of the shard's primary (or, for a command aimed at one server, that server).
    pub addr: Arc<str>,
    pub replicas: Replicas,
}

impl Route {
    /// Whether `addr` is one of this shard's servers (its primary or a replica).
    pub fn serves(&self, addr: &str) -> bool {
        &*self.addr == addr || self.replicas.addrs().any(|a| a == addr)
    }
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
    /// The same statement on every shard's primary (DDL, reference-table writes).
    Broadcast(Vec<Route>),
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
    keyspaces: HashMap<String, KeyspacePlan>,
    columns: Arc<TableColumns>,
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
        let keyspaces = map
            .keyspace
            .iter()
            .map(|(name, ks)| {
                let routes: Vec<Route> = ks
                    .shards
                    .iter()
                    .map(|shard| {
                        let servers = shard
                            .replicas
                            .iter()
                            .filter(|_| read_write_split)
                            .filter_map(|r| health.get(&r.addr))
                            .collect();
                        Route {
                            keyspace: name.as_str().into(),
                            shard: shard.name.as_str().into(),
                            addr: shard.primary.as_str().into(),
                            replicas: Replicas(Arc::new(ReplicaSet {
                                servers,
                                max_lag: max_lag(name),
                                on_primary: AtomicBool::new(false),
                            })),
                        }
                    })
                    .collect();
                let names: Vec<&str> = ks.shards.iter().map(|s| s.name.as_str()).collect();
                let sharded =
                    (ks.sharding == Sharding::ConsistentHash).then(|| Ring::new(&names, ks.vnodes));
                let plans = KeyspacePlan {
                    // Everything a kept plan was decided by: the keyspace, its ring (plans
                    // kept by text hold shard indexes) and its table rules (a reload may make
                    // a table a reference table or change its key).
                    cache_id: {
                        use std::hash::{Hash, Hasher};
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        name.hash(&mut h);
                        names.hash(&mut h);
                        ks.vnodes.hash(&mut h);
                        format!("{:?}", ks.tables).hash(&mut h);
                        ks.allow_scatter_writes.hash(&mut h);
                        h.finish()
                    },
                    routes,
                    ring: sharded,
                    tables: ks.tables.clone(),
                    allow_scatter_writes: ks.allow_scatter_writes,
                    name: name.clone(),
                };
                (name.clone(), plans)
            })
            .collect();
        Planner {
            map,
            keyspaces,
            columns: Arc::default(),
        }
    }

    /// This planner with `columns`, the store every planner version of a proxy shares.
    pub fn with_table_columns(mut self, columns: Arc<TableColumns>) -> Self {
        self.columns = columns;
        self
    }

    /// The column orders known for INSERTs without a column list.
    pub fn table_columns(&self) -> &Arc<TableColumns> {
        &self.columns
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

    /// Whether any keyspace is sharded.
    pub fn any_sharded(&self) -> bool {
        self.keyspaces.values().any(|k| k.ring.is_some())
    }

    /// Whether the session's keyspace is sharded.
    pub fn is_sharded(&self, ctx: &PlanContext<'_>) -> bool {
        self.sharded_keyspace(ctx).is_some()
    }

    /// The session's keyspace if it is sharded.
    pub fn sharded_keyspace<'a>(&'a self, ctx: &PlanContext<'a>) -> Option<&'a str> {
        let name = self.keyspace_for(ctx)?;
        self.keyspaces
            .get(name)
            .is_some_and(|k| k.ring.is_some())
            .then_some(name)
    }

    /// Plans a statement: its shards on a sharded keyspace, else the keyspace's one shard.
    pub fn plan(&self, sql: &[u8], ctx: &PlanContext<'_>) -> Plan {
        let Some(ks) = self.keyspace_plan(ctx) else {
            return no_keyspace();
        };
        if ks.ring.is_none() {
            return Plan::Route(ks.routes[0].clone());
        }
        match ks.ring_shard_plan(&text::parse_copy(sql), &self.columns) {
            ShardPlan::One(i) => Plan::Route(ks.routes[i].clone()),
            // A `?` in COM_QUERY text is the server's syntax error to report.
            ShardPlan::Any | ShardPlan::Param(_) => Plan::Route(ks.routes[0].clone()),
            ShardPlan::All => Plan::Broadcast(ks.routes.clone()),
            ShardPlan::Scatter(_)
            | ShardPlan::ScatterWrite(_)
            | ShardPlan::SplitInsert(_)
            | ShardPlan::MergeSorted(_)
            | ShardPlan::Sequence { .. } => Plan::Reject {
                code: errcode::UNKNOWN,
                message: "shardgate: a multi-shard statement is run by the session (plan_shards)"
                    .into(),
            },
            ShardPlan::Reject(message) | ShardPlan::NotUnderstood(message) => Plan::Reject {
                code: errcode::UNKNOWN,
                message,
            },
            ShardPlan::NeedColumns(table) => Plan::Reject {
                code: errcode::UNKNOWN,
                message: format!(
                    "shardgate: the column order of {table} is not known yet (plan_shards reads it)"
                ),
            },
        }
    }

    /// Plans a statement on a sharded keyspace: the decision and the keyspace's shard routes
    /// (`ShardPlan::One(i)` means `routes[i]`). `None` when the keyspace is not sharded.
    /// `sql` is the client's statement or its [`text::parse_copy`]; a rewrite in the plan is
    /// sent as cut from the client's bytes.
    pub fn plan_shards(&self, sql: &str, ctx: &PlanContext<'_>) -> Option<(ShardPlan, &[Route])> {
        let ks = self.keyspace_plan(ctx)?;
        ks.ring.as_ref()?;
        Some((ks.cached_or_planned(sql, &self.columns), &ks.routes))
    }

    /// The route of the shard that owns `key` in the session's (sharded) keyspace.
    pub fn route_for_key(&self, ctx: &PlanContext<'_>, key: &KeyValue<'_>) -> Option<Route> {
        let ks = self.keyspace_plan(ctx)?;
        let ring = ks.ring.as_ref()?;
        ks.routes.get(ring.shard_for(key_hash(key))).cloned()
    }

    /// The rows of the session's sharded keyspace a statement touches, by key hash, as far
    /// as its plan names them (what a reshard cutover's hold asks of every command).
    pub fn touched(&self, sql: &str, ctx: &PlanContext<'_>) -> Touched {
        let Some(ks) = self.keyspace_plan(ctx) else {
            return Touched::Nothing;
        };
        let Some(ring) = &ks.ring else {
            return Touched::Nothing;
        };
        let keys = std::cell::RefCell::new(Vec::new());
        let shard_of = |k: &KeyValue<'_>| {
            let h = key_hash(k);
            keys.borrow_mut().push(h);
            ring.shard_for(h)
        };
        match ks.cached_or_planned_with(sql, &shard_of, &self.columns) {
            ShardPlan::One(_) | ShardPlan::SplitInsert(_) => {
                let keys = keys.into_inner();
                if keys.is_empty() {
                    Touched::Unknown
                } else {
                    Touched::Keys(keys)
                }
            }
            // Reference tables read, or no table at all.
            ShardPlan::Any => Touched::Nothing,
            _ => Touched::Unknown,
        }
    }

    /// Whether a key `touched` names has another owner (by shard name) under this planner's
    /// map than under `older`'s, in the session's sharded keyspace: a transaction that
    /// touched it on the old map must not go on (a backstop to the reshard gate's doom).
    pub fn moved_since(&self, older: &Planner, ctx: &PlanContext<'_>, touched: &Touched) -> bool {
        if *touched == Touched::Nothing {
            return false;
        }
        let new = self.keyspace_plan(ctx).and_then(|k| k.ring.as_ref());
        let old = older.keyspace_plan(ctx).and_then(|k| k.ring.as_ref());
        let (Some(new), Some(old)) = (new, old) else {
            return false;
        };
        if new == old {
            return false;
        }
        let owner = |r: &Ring, h: u64| r.shard_names().get(r.shard_for(h)).cloned();
        match touched {
            Touched::Keys(keys) => keys.iter().any(|&h| owner(new, h) != owner(old, h)),
            Touched::Unknown => true,
            Touched::Nothing => false,
        }
    }

    /// What a statement keyed by `key` touches (a prepared statement's key parameter).
    pub fn key_touched(&self, ctx: &PlanContext<'_>, key: &KeyValue<'_>) -> Touched {
        match self.sharded_keyspace(ctx) {
            Some(_) => Touched::Keys(vec![key_hash(key)]),
            None => Touched::Nothing,
        }
    }

    /// [`Planner::plan_shards`] without the shape cache: a full parse every time (for
    /// measuring what the cache saves).
    pub fn plan_shards_uncached(&self, sql: &str, ctx: &PlanContext<'_>) -> Option<ShardPlan> {
        let ks = self.keyspace_plan(ctx)?;
        ks.ring.as_ref()?;
        Some(ks.ring_shard_plan(sql, &self.columns))
    }

    /// Whether the session's keyspace lets a transaction span shards
    /// (`multi_shard_transactions = "best_effort"`).
    pub fn multi_shard_best_effort(&self, ctx: &PlanContext<'_>) -> bool {
        self.keyspace_for(ctx)
            .and_then(|ks| self.map.keyspace.get(ks))
            .is_some_and(|k| {
                k.multi_shard_transactions == crate::shardmap::MultiShardTransactions::BestEffort
            })
    }

    /// The keyspace holding the session's keyspace's sequence tables, and its route.
    pub fn sequence_keyspace(&self, ctx: &PlanContext<'_>) -> Option<(String, Route)> {
        let ks = self.keyspace_for(ctx)?;
        let seq = self.map.keyspace.get(ks)?.sequence_keyspace.clone()?;
        let route = self.keyspaces.get(&seq)?.routes.first()?.clone();
        Some((seq, route))
    }

    /// The route of one shard of the session's keyspace, by shard name.
    pub fn shard_route(&self, ctx: &PlanContext<'_>, shard: &str) -> Option<Route> {
        let ks = self.keyspace_plan(ctx)?;
        ks.routes.iter().find(|r| &*r.shard == shard).cloned()
    }

    /// The route of the shard of the session's keyspace that `addr` (a primary or a replica)
    /// serves.
    pub fn route_serving(&self, ctx: &PlanContext<'_>, addr: &str) -> Option<Route> {
        let ks = self.keyspace_plan(ctx)?;
        ks.routes.iter().find(|r| r.serves(addr)).cloned()
    }

    /// `route` as this planner's shard map has it (a new primary after a failover); None if
    /// its keyspace or shard is gone.
    pub fn refresh(&self, route: &Route) -> Option<Route> {
        self.keyspaces
            .get(&*route.keyspace)?
            .routes
            .iter()
            .find(|r| r.shard == route.shard)
            .cloned()
    }

    /// Plans a command that is not a statement but needs the session's server (ping, ...):
    /// the keyspace's first shard.
    pub fn plan_session(&self, ctx: &PlanContext<'_>) -> Plan {
        match self.keyspace_plan(ctx) {
            Some(ks) => Plan::Route(ks.routes[0].clone()),
            None => no_keyspace(),
        }
    }

    fn keyspace_plan(&self, ctx: &PlanContext<'_>) -> Option<&KeyspacePlan> {
        let name = self.keyspace_for(ctx)?;
        self.keyspaces.get(name).filter(|k| !k.routes.is_empty())
    }
}

fn no_keyspace() -> Plan {
    Plan::Reject {
        code: errcode::UNKNOWN,
        message: "shardgate: no keyspace is configured".into(),
    }
}

/// What the planner keeps per keyspace.
struct KeyspacePlan {
    /// Tells this keyspace's shapes apart in the per-thread plan cache.
    cache_id: u64,
    /// One per shard, in map order (ring indexes point here).
    routes: Vec<Route>,
    /// Sharded keyspaces only.
    ring: Option<Ring>,
    tables: std::collections::BTreeMap<String, TableRule>,
    allow_scatter_writes: bool,
    /// The keyspace's name (its database's).
    name: String,
}

impl KeyspacePlan {
    /// The plan from the shape cache when the statement's shape has a value-independent plan;
    /// else planned in full (and the shape's plan remembered when it can be).
    fn cached_or_planned(&self, sql: &str, columns: &TableColumns) -> ShardPlan {
        match &self.ring {
            Some(ring) => {
                self.cached_or_planned_with(sql, &|k| ring.shard_for(key_hash(k)), columns)
            }
            None => ShardPlan::One(0),
        }
    }

    /// [`KeyspacePlan::cached_or_planned`] placing keys with `shard_of` (which may note them).
    fn cached_or_planned_with(
        &self,
        sql: &str,
        shard_of: &dyn Fn(&KeyValue<'_>) -> usize,
        columns: &TableColumns,
    ) -> ShardPlan {
        if self.ring.is_none() {
            return ShardPlan::One(0);
        }
        let cache_id = self.cache_key(columns);
        if let Some(shape) = Shape::of(sql) {
            let cached = match shape::get(cache_id, shape.hash) {
                Some(cached) => cached,
                None => {
                    let planned = self.shard_plan(&shape.text, shard_of, columns);
                    let cached = shape::cacheable(&planned).unwrap_or(shape::Cached::ByText);
                    shape::put(cache_id, shape.hash, cached.clone());
                    cached
                }
            };
            if let Some(plan) = shape.bind(&cached, shard_of) {
                return plan;
            }
        }
        let exact = shape::exact_hash(sql);
        if let Some(shape::Cached::Exact(plan)) = exact.and_then(|h| shape::get(cache_id, h)) {
            return plan;
        }
        let plan = self.shard_plan(sql, shard_of, columns);
        if let Some(h) = exact.filter(|_| shape::exact_cacheable(&plan)) {
            shape::put(cache_id, h, shape::Cached::Exact(plan.clone()));
        }
        plan
    }

    /// This keyspace's part of the plan cache: its ring, and the column orders known (a shape
    /// planned with a table's column order is stale once that order changes).
    fn cache_key(&self, columns: &TableColumns) -> u64 {
        self.cache_id ^ columns.generation().wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn shard_plan(
        &self,
        sql: &str,
        shard_of: &dyn Fn(&KeyValue<'_>) -> usize,
        columns: &TableColumns,
    ) -> ShardPlan {
        if self.ring.is_none() {
            return ShardPlan::One(0);
        }
        let rule = |t: &str| {
            self.tables
                .get(t)
                .or_else(|| self.tables.get(&t.to_ascii_lowercase()))
        };
        let known = |t: &str| columns.get(&self.name, t);
        let cx = ShardContext {
            rule: &rule,
            shard_of,
            allow_scatter_writes: self.allow_scatter_writes,
            shard_count: self.routes.len(),
            columns: &known,
        };
        shard::plan(sql, &cx)
    }

    fn ring_shard_plan(&self, sql: &str, columns: &TableColumns) -> ShardPlan {
        match &self.ring {
            Some(ring) => self.shard_plan(sql, &|k| ring.shard_for(key_hash(k)), columns),
            None => ShardPlan::One(0),
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

    fn sharded_planner(shards: usize) -> Planner {
        let mut text = String::from(
            "[keyspace.ks]\nsharding = \"consistent_hash\"\n[keyspace.ks.tables.t]\nshard_key = \"id\"\n",
        );
        for i in 0..shards {
            text.push_str(&format!(
                "[[keyspace.ks.shards]]\nname = \"s{i}\"\nprimary = \"127.0.0.1:{}\"\n",
                4000 + i
            ));
        }
        let map: ShardMap = toml::from_str(&text).expect("map");
        let health = Health::new(&map);
        Planner::new(map, &health, true, |_| Duration::from_secs(1))
    }

    #[test]
    fn multi_shard_reads_are_planned_once_per_text_and_ring() {
        let p = sharded_planner(3);
        let ctx = PlanContext {
            db: Some("ks"),
            default_keyspace: None,
        };
        let sql = "SELECT id FROM t WHERE v > 1 ORDER BY id LIMIT 2, 3";
        let (first, _) = p.plan_shards(sql, &ctx).expect("sharded");
        assert!(matches!(first, ShardPlan::MergeSorted(_)), "{first:?}");
        let ks = &p.keyspaces["ks"];
        let key = ks.cache_key(&p.columns);
        let exact = shape::exact_hash(sql).expect("short");
        assert_eq!(
            shape::get(key, exact),
            Some(shape::Cached::Exact(first.clone()))
        );
        // Served from the cache: a planted entry is what comes back.
        shape::put(
            key,
            exact,
            shape::Cached::Exact(ShardPlan::Scatter(vec![7])),
        );
        let (again, _) = p.plan_shards(sql, &ctx).expect("sharded");
        assert_eq!(again, ShardPlan::Scatter(vec![7]));
        // Other table rules (a reload) do not see this planner's plans.
        let mut map = p.map.clone();
        if let Some(k) = map.keyspace.get_mut("ks") {
            k.tables.entry("t".into()).or_default().shard_key = Some("v".into());
        }
        let reloaded = Planner::new(map.clone(), &Health::new(&map), true, |_| {
            Duration::from_secs(1)
        });
        assert_ne!(reloaded.keyspaces["ks"].cache_key(&reloaded.columns), key);
        // Another ring (a shard added) does not see this one's plans.
        let q = sharded_planner(4);
        assert_ne!(q.keyspaces["ks"].cache_key(&q.columns), key);
        let (other, _) = q.plan_shards(sql, &ctx).expect("sharded");
        assert!(
            matches!(other, ShardPlan::MergeSorted(ref m) if m.shards.len() == 4),
            "{other:?}"
        );
        // Prepared text: kept by its text too.
        let (param, _) = p
            .plan_shards("SELECT v FROM t WHERE id = ?", &ctx)
            .expect("sharded");
        assert_eq!(param, ShardPlan::Param(0));
        let h = shape::exact_hash("SELECT v FROM t WHERE id = ?").expect("short");
        assert_eq!(shape::get(key, h), Some(shape::Cached::Exact(param)));
    }

    fn addr(p: Plan) -> String {
        match p {
            Plan::Route(r) => r.addr.to_string(),
            Plan::Reject { message, .. } => message,
            Plan::Broadcast(rs) => rs.iter().map(|r| r.addr.to_string()).collect(),
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
        // A statement touching no table runs on any shard of a sharded keyspace.
        assert_eq!(
            addr(p.plan(b"select 1", &ctx(Some("sharded")))),
            "127.0.0.1:3000"
        );
    }

    #[test]
    fn sharded_keyspace_names_only_a_sharded_one() {
        let p = planner();
        let ctx = |db| PlanContext {
            db,
            default_keyspace: None,
        };
        assert_eq!(p.sharded_keyspace(&ctx(Some("sharded"))), Some("sharded"));
        assert_eq!(p.sharded_keyspace(&ctx(Some("other"))), None);
        // Not a keyspace: the map's first, unsharded.
        assert_eq!(p.sharded_keyspace(&ctx(Some("mysql"))), None);
        let by_default = PlanContext {
            db: None,
            default_keyspace: Some("sharded"),
        };
        assert_eq!(p.sharded_keyspace(&by_default), Some("sharded"));
    }

    #[test]
    fn touched_names_the_keys_a_statement_reaches() {
        let map: ShardMap = toml::from_str(
            r#"
            [keyspace.app]
            sharding = "consistent_hash"
            [keyspace.app.tables.users]
            shard_key = "id"
            [keyspace.app.tables.countries]
            reference = true
            [[keyspace.app.shards]]
            name = "s1"
            primary = "127.0.0.1:3001"
            [[keyspace.app.shards]]
            name = "s2"
            primary = "127.0.0.1:3002"
            [keyspace.plain]
            sharding = "unsharded"
            [[keyspace.plain.shards]]
            name = "p0"
            primary = "127.0.0.1:4000"
            "#,
        )
        .expect("map");
        let p = Planner::new(map.clone(), &Health::new(&map), true, |_| {
            Duration::from_secs(1)
        });
        let ctx = PlanContext {
            db: Some("app"),
            default_keyspace: None,
        };
        let h = |k: i128| key_hash(&KeyValue::Int(k));
        let t = |sql: &str| p.touched(sql, &ctx);
        assert_eq!(
            t("SELECT name FROM users WHERE id = 7"),
            Touched::Keys(vec![h(7)])
        );
        // Twice: the second from the shape cache.
        for _ in 0..2 {
            assert_eq!(
                t("UPDATE users SET name = 'x' WHERE id = 8"),
                Touched::Keys(vec![h(8)])
            );
        }
        let Touched::Keys(mut rows) = t("INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b')")
        else {
            panic!("a multi-row insert names its keys");
        };
        rows.sort_unstable();
        rows.dedup();
        let mut want = vec![h(1), h(2)];
        want.sort_unstable();
        assert_eq!(rows, want);
        for sql in ["SELECT * FROM countries", "SELECT 1", "BEGIN", "COMMIT"] {
            assert_eq!(t(sql), Touched::Nothing, "{sql}");
        }
        for sql in [
            "SELECT * FROM users",
            "SELECT * FROM users ORDER BY id LIMIT 3",
            "INSERT INTO countries VALUES ('fr')",
            "DELETE FROM users WHERE name = 'x'",
        ] {
            assert_eq!(t(sql), Touched::Unknown, "{sql}");
        }
        assert_eq!(
            p.key_touched(&ctx, &KeyValue::Int(9)),
            Touched::Keys(vec![h(9)])
        );
        let plain = PlanContext {
            db: Some("plain"),
            default_keyspace: None,
        };
        assert_eq!(p.touched("SELECT * FROM t", &plain), Touched::Nothing);
        assert_eq!(p.key_touched(&plain, &KeyValue::Int(9)), Touched::Nothing);
    }

    #[test]
    fn moved_since_names_a_transaction_whose_keys_changed_owner() {
        let map = |shards: &[&str]| -> ShardMap {
            let mut text = String::from(
                "[keyspace.app]\nsharding = \"consistent_hash\"\n[keyspace.app.tables.users]\nshard_key = \"id\"\n",
            );
            for (i, s) in shards.iter().enumerate() {
                text += &format!(
                    "[[keyspace.app.shards]]\nname = \"{s}\"\nprimary = \"127.0.0.1:{}\"\n",
                    3000 + i
                );
            }
            toml::from_str(&text).expect("map")
        };
        let planner = |m: ShardMap| {
            Planner::new(m.clone(), &Health::new(&m), true, |_| {
                Duration::from_secs(1)
            })
        };
        let (two, three) = (
            planner(map(&["s1", "s2"])),
            planner(map(&["s1", "s2", "s3"])),
        );
        let again = planner(map(&["s1", "s2"]));
        let ctx = PlanContext {
            db: Some("app"),
            default_keyspace: None,
        };
        let owner = |p: &Planner, k: i128| {
            p.route_for_key(&ctx, &KeyValue::Int(k))
                .map(|r| r.shard.to_string())
        };
        let mover = (0..200)
            .find(|&k| owner(&two, k) != owner(&three, k))
            .expect("a key moves");
        let stayer = (0..200)
            .find(|&k| owner(&two, k) == owner(&three, k))
            .expect("a key stays");
        let keys = |k: i128| Touched::Keys(vec![key_hash(&KeyValue::Int(k))]);
        assert!(three.moved_since(&two, &ctx, &keys(mover)));
        assert!(!three.moved_since(&two, &ctx, &keys(stayer)));
        assert!(three.moved_since(&two, &ctx, &Touched::Unknown));
        assert!(!three.moved_since(&two, &ctx, &Touched::Nothing));
        // A new planner on the same ring (a failover, a reload): nothing moved.
        assert!(!again.moved_since(&two, &ctx, &Touched::Unknown));
    }
}
