//! Online resharding over HTTP: `POST /api/v1/reshard/plan` (what adding or removing a shard
//! would move; writes nothing).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::ha::json_body;
use super::{AdminState, ApiError};
use crate::reshard::plan::{self, Change, Plan, PlanError};

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
        match (&self.add, &self.remove) {
            (Some(a), None) => Change::parse_add(a),
            (None, Some(r)) => Ok(Change::Remove(r.clone())),
            _ => Err(PlanError::Invalid(
                "give exactly one of add (NAME=PRIMARY[,REPLICA...]) or remove (a shard name)"
                    .into(),
            )),
        }
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
