//! Failure handling over HTTP: `GET /api/v1/ha` (state, the running operation, fenced
//! servers), `GET /api/v1/events`, `POST /api/v1/failover` (planned switchover, or failover of
//! a dead primary), `POST /api/v1/rejoin`, `GET /api/v1/shardmap` (versions).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::ha::events::Event;
use crate::ha::{HaError, Report, Status};
use crate::topology::MapVersion;

impl From<HaError> for ApiError {
    fn from(e: HaError) -> Self {
        match e {
            HaError::UnknownShard(_) => ApiError::BadRequest(e.to_string()),
            // Without etcd the proxy decides nothing: a refusal of the request, not a fault.
            HaError::Busy(_) | HaError::Refused(_) | HaError::Config(_) | HaError::StoreDown => {
                ApiError::Conflict(e.to_string())
            }
            _ => ApiError::Backend(e.to_string()),
        }
    }
}

/// `GET /api/v1/ha`.
pub async fn status(State(state): State<AdminState>) -> Json<Status> {
    Json(state.shared.ha.status())
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Only events with a larger id (what a watcher saw last).
    #[serde(default)]
    pub after: u64,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    500
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EventList {
    pub events: Vec<Event>,
    pub last_id: u64,
}

/// `GET /api/v1/events?after=N&limit=M`: oldest first.
pub async fn events(
    State(state): State<AdminState>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let ev = &state.shared.ha.events;
    Ok(Json(serde_json::json!({
        "events": ev.since(q.after, q.limit.min(crate::ha::events::KEEP)),
        "last_id": ev.last_id(),
    })))
}

/// `POST /api/v1/failover` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// `keyspace/shard` or a shard name.
    pub shard: String,
    /// The replica to promote (planned switchover only); default: the most advanced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Fail over a primary the proxy cannot reach even though a replica still sees it, or
    /// though no replica holds every acknowledged write (accepting their loss).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
}

/// Runs an operation on its own task, so that a client hanging up cannot cancel a flip
/// half-way; answers with its result.
pub(super) async fn detached<T, E>(
    op: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> Result<Json<T>, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    let r = tokio::spawn(op)
        .await
        .map_err(|e| ApiError::Backend(format!("the operation's task failed: {e}")))?;
    r.map(Json).map_err(Into::into)
}

/// `POST /api/v1/failover`: returns when the operation ended, with its steps.
pub async fn failover(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Report>, ApiError> {
    let body = body?;
    let req: FailoverRequest = json_body(&body)?;
    let ha = state.shared.ha.clone();
    detached(async move {
        ha.failover_command(&req.shard, req.to.as_deref(), req.force)
            .await
    })
    .await
}

/// `POST /api/v1/rejoin` body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RejoinRequest {
    /// The fenced former primary, `host:port`.
    pub server: String,
}

/// `POST /api/v1/rejoin`.
pub async fn rejoin(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Report>, ApiError> {
    let body = body?;
    let req: RejoinRequest = json_body(&body)?;
    let ha = state.shared.ha.clone();
    detached(async move { ha.rejoin(&req.server).await }).await
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShardMapVersions {
    pub version: u64,
    pub current: crate::shardmap::ShardMap,
    pub history: Vec<MapVersion>,
}

/// `GET /api/v1/shardmap`.
pub async fn shardmap(State(state): State<AdminState>) -> Json<ShardMapVersions> {
    let t = &state.shared.topology;
    Json(ShardMapVersions {
        version: t.version(),
        current: t.map(),
        history: t.history(),
    })
}
