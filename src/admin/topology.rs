//! What the proxy routes to now: `GET /readyz` (may a load balancer send clients here?) and
//! `GET /api/v1/topology` (every keyspace, shard and server with its health and load).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::AdminState;
use crate::backend::pool::PoolUsage;
use crate::runtime::Shared;
use crate::shardmap::Sharding;

/// `GET /api/v1/topology`; also what `shardgate topology` reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyView {
    /// The shard map version the servers' roles come from.
    pub version: u64,
    pub keyspaces: Vec<KeyspaceView>,
    /// Where the shard map is kept and whether this proxy reaches it.
    #[serde(default)]
    pub store: StoreView,
}

/// The topology store as this proxy sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoreView {
    /// `file` (this proxy alone) or `etcd`.
    pub kind: String,
    /// etcd answers and this proxy's lease is alive (always true for `file`). When false the
    /// proxy serves on its last map and decides nothing.
    pub up: bool,
    /// This proxy's name in the cluster (etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_id: Option<String>,
    /// The live proxies sharing the map (etcd; empty when unreachable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxies: Vec<crate::topology::etcd::Member>,
}

/// The store part of the view (asks etcd for the live proxies).
pub async fn store_view(shared: &Shared) -> StoreView {
    match shared.topology.store() {
        None => StoreView {
            kind: "file".into(),
            up: true,
            proxy_id: None,
            proxies: Vec::new(),
        },
        Some(store) => StoreView {
            kind: "etcd".into(),
            up: store.is_up(),
            proxy_id: Some(store.id.clone()),
            proxies: if store.is_up() {
                store.members().await.unwrap_or_default()
            } else {
                Vec::new()
            },
        },
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyspaceView {
    pub name: String,
    pub sharding: Sharding,
    pub shards: Vec<ShardView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardView {
    pub name: String,
    /// The primary first, then the replicas in map order.
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerView {
    pub addr: String,
    pub role: Role,
    /// The monitor's last check succeeded and nothing marked it down since.
    pub up: bool,
    /// A replica's IO and SQL threads both ran at the last check (false for a primary).
    pub replicating: bool,
    /// A replica's lag at the last check; `None` when unknown and for a primary.
    pub lag_seconds: Option<f64>,
    /// Share of the shard's reads (1 for a primary).
    pub weight: u32,
    /// Statements running on it now.
    pub outstanding: u32,
    pub pool: PoolUsage,
}

/// The current shard map with each server's live state.
pub fn view(shared: &Shared) -> TopologyView {
    let t = &shared.topology;
    // The version first: a map published in between is newer than the version named, never
    // older.
    let version = t.version();
    let map = t.map();
    let server = |addr: &str, role: Role, weight: u32| {
        let h = shared.health.get(addr);
        let replica = role == Role::Replica;
        ServerView {
            addr: addr.to_string(),
            role,
            up: h.as_ref().is_some_and(|h| h.is_up()),
            replicating: replica && h.as_ref().is_some_and(|h| h.replicating()),
            lag_seconds: h
                .as_ref()
                .filter(|_| replica)
                .and_then(|h| h.lag())
                .map(|d| d.as_secs_f64()),
            weight,
            outstanding: h.as_ref().map_or(0, |h| h.outstanding()),
            pool: shared.pools.usage(addr),
        }
    };
    let keyspaces = map
        .keyspace
        .iter()
        .map(|(name, ks)| KeyspaceView {
            name: name.clone(),
            sharding: ks.sharding,
            shards: ks
                .shards
                .iter()
                .map(|s| ShardView {
                    name: s.name.clone(),
                    servers: std::iter::once(server(&s.primary, Role::Primary, 1))
                        .chain(
                            s.replicas
                                .iter()
                                .map(|r| server(&r.addr, Role::Replica, r.weight)),
                        )
                        .collect(),
                })
                .collect(),
        })
        .collect();
    TopologyView {
        version,
        keyspaces,
        store: StoreView::default(),
    }
}

/// `GET /api/v1/topology`.
pub async fn topology(State(state): State<AdminState>) -> Json<TopologyView> {
    let mut v = view(&state.shared);
    v.store = store_view(&state.shared).await;
    Json(v)
}

/// What `/readyz` says of the store: `None` when all is well. Not a reason to be unready: a
/// proxy without etcd still serves on its last map, and taking every proxy out of the load
/// balancer because etcd is down would turn an etcd outage into a database outage.
fn store_note(shared: &Shared) -> Option<String> {
    let store = shared.topology.store()?;
    (!store.is_up()).then(|| {
        "etcd unreachable: serving on the last shard map; no failover, switchover, rejoin or \
         reload until it is back"
            .to_string()
    })
}

/// Why the proxy should get no clients now, or `None` when it should.
pub fn not_ready(shared: &Shared) -> Option<String> {
    if !shared.accepting() {
        return Some("the proxy is not accepting MySQL clients".into());
    }
    let map = shared.topology.map();
    let down: Vec<String> = map
        .keyspace
        .iter()
        .flat_map(|(ks, k)| k.shards.iter().map(move |s| (ks, s)))
        .filter(|(_, s)| !shared.health.get(&s.primary).is_some_and(|h| h.is_up()))
        .map(|(ks, s)| format!("{ks}/{} (primary {})", s.name, s.primary))
        .collect();
    let blocked = shared.ha.blocked();
    match (down.as_slice(), blocked.is_empty()) {
        ([], true) => None,
        ([], false) => Some(format!("failover refused: {}", blocked_text(&blocked))),
        (_, true) => Some(format!("primary down: {}", down.join(", "))),
        (_, false) => Some(format!(
            "primary down: {}; failover refused: {}",
            down.join(", "),
            blocked_text(&blocked)
        )),
    }
}

fn blocked_text(blocked: &std::collections::BTreeMap<String, String>) -> String {
    blocked
        .iter()
        .map(|(shard, why)| format!("{shard}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `GET /readyz`: 200 `{"ready":true}`, or 503 with what is down. A plain body, not an
/// `ApiError`, because "not ready" is an answer, not a failed request.
pub async fn readyz(State(state): State<AdminState>) -> Response {
    let note = store_note(&state.shared);
    match (not_ready(&state.shared), note) {
        (None, None) => Json(serde_json::json!({ "ready": true })).into_response(),
        (None, Some(n)) => {
            Json(serde_json::json!({ "ready": true, "topology_store": n })).into_response()
        }
        (Some(why), n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "error": why, "topology_store": n })),
        )
            .into_response(),
    }
}
