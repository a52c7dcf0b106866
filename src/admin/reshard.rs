//! Online resharding over HTTP: `POST /api/v1/reshard/plan` (what adding or removing a shard
//! would move; writes nothing), and the workflows that carry a plan out: `start`, `GET
//! /api/v1/reshard` and `status`, `verify`, `cutover`, `rollback`, `complete`, `cancel`.
//! The handlers only parse and answer; `reshard::manager::Reshards` does the work.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::ha::{detached, json_body};
use super::{AdminState, ApiError};
use crate::reshard::manager::{
    CutoverRequest, KeyspaceRequest, ReshardError, Reshards, StartRequest,
};
use crate::reshard::plan::{self, Change, Plan, PlanError};
use crate::reshard::state::{CutoverAttempt, Status};

/// `POST /api/v1/reshard/plan` body (the CLI's arguments).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub keyspace: String,
    /// `NAME=PRIMARY[,REPLICA...]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
    /// A shard name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<String>,
}

impl PlanRequest {
    pub fn change(&self) -> Result<Change, PlanError> {
        Change::from_args(self.add.as_deref(), self.remove.as_deref())
    }
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// `POST /api/v1/reshard/plan`: the plan against the live shard map, with row estimates read
/// from every shard's primary.
pub async fn plan(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Plan>, ApiError> {
    let body = body?;
    let req: PlanRequest = json_body(&body)?;
    let change = req.change()?;
    let map = state.shared.topology.map();
    let mut p = plan::plan(&map, &req.keyspace, &change)?;
    let ha = state.shared.ha.clone();
    crate::reshard::facts::estimate(&mut p, &map, ha.creds()).await;
    Ok(Json(p))
}

impl From<ReshardError> for ApiError {
    fn from(e: ReshardError) -> Self {
        match e {
            ReshardError::NotFound(m) => ApiError::Missing(m),
            ReshardError::Conflict(m) => ApiError::Conflict(m),
            ReshardError::Invalid(m) => ApiError::BadRequest(m),
            ReshardError::Failed(m) => ApiError::Backend(m),
        }
    }
}

/// `GET /api/v1/reshard`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkflowList {
    pub workflows: Vec<Status>,
}

/// `GET /api/v1/reshard/status` query.
#[derive(Debug, Deserialize)]
pub struct KeyspaceQuery {
    pub keyspace: String,
}

/// What `start` can tell from the request alone, answered before any work is done: exactly
/// one of a plan, `add` or `remove`, and a keyspace that agrees with the plan's.
fn check_start(req: &StartRequest) -> Result<(), ApiError> {
    match &req.plan {
        None => {
            if req.keyspace.is_empty() {
                return Err(ApiError::BadRequest(
                    "keyspace is required (or a plan, which names it)".into(),
                ));
            }
            req.change()?;
        }
        Some(p) => {
            if req.add.is_some() || req.remove.is_some() {
                return Err(ApiError::BadRequest(
                    "give a plan or add/remove, not both".into(),
                ));
            }
            if !req.keyspace.is_empty() && req.keyspace != p.keyspace {
                return Err(ApiError::BadRequest(format!(
                    "keyspace {} is not the plan's ({})",
                    req.keyspace, p.keyspace
                )));
            }
        }
    }
    Ok(())
}

/// `POST /api/v1/reshard/start`: plans (unless given a plan), persists the workflow and
/// starts copying; answers with its first status.
pub async fn start(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Status>, ApiError> {
    let body = body?;
    let req: StartRequest = json_body(&body)?;
    check_start(&req)?;
    let reshards = state.shared.reshards.clone();
    detached(async move { reshards.start(req).await }).await
}

/// `GET /api/v1/reshard`: every workflow (ended ones too, until another starts on the keyspace).
pub async fn list(State(state): State<AdminState>) -> Json<WorkflowList> {
    Json(WorkflowList {
        workflows: state.shared.reshards.status_all(),
    })
}

/// `GET /api/v1/reshard/status?keyspace=K`.
pub async fn status(
    State(state): State<AdminState>,
    q: Result<Query<KeyspaceQuery>, QueryRejection>,
) -> Result<Json<Status>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(state.shared.reshards.status(&q.keyspace).await?))
}

/// `POST /api/v1/reshard/verify`: starts comparing source and target rows; `status` follows it.
pub async fn verify(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Status>, ApiError> {
    on_workflow(state, body, |r, k| async move { r.verify(&k).await }).await
}

/// `POST /api/v1/reshard/complete`: deletes the moved rows from their old shards.
pub async fn complete(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Status>, ApiError> {
    on_workflow(state, body, |r, k| async move { r.complete(&k).await }).await
}

/// `POST /api/v1/reshard/cancel`: stops a workflow before its cutover.
pub async fn cancel(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Status>, ApiError> {
    on_workflow(state, body, |r, k| async move { r.cancel(&k).await }).await
}

/// A `{"keyspace": K}` request run by `op` on its own task (see `detached`).
async fn on_workflow<F, Fut>(
    state: AdminState,
    body: Result<Bytes, BytesRejection>,
    op: F,
) -> Result<Json<Status>, ApiError>
where
    F: FnOnce(Arc<Reshards>, String) -> Fut,
    Fut: std::future::Future<Output = Result<Status, ReshardError>> + Send + 'static,
{
    let req: KeyspaceRequest = json_body(&body?)?;
    detached(op(state.shared.reshards.clone(), req.keyspace)).await
}

/// `POST /api/v1/reshard/cutover`: 200 with the attempt whether it switched or aborted (its
/// `outcome` says which); an error status only when no attempt was made.
pub async fn cutover(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CutoverAttempt>, ApiError> {
    let req: CutoverRequest = json_body(&body?)?;
    let reshards = state.shared.reshards.clone();
    detached(async move { reshards.cutover(&req).await }).await
}

/// `POST /api/v1/reshard/rollback`: the cutover backwards; answers like `cutover`.
pub async fn rollback(
    State(state): State<AdminState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CutoverAttempt>, ApiError> {
    let req: CutoverRequest = json_body(&body?)?;
    let reshards = state.shared.reshards.clone();
    detached(async move { reshards.rollback(&req).await }).await
}
