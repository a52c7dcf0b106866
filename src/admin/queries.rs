//! `GET /api/v1/queries`: the top statement shapes (count, errors, rows, total and p99 time,
//! shards touched, cache hits); `POST /api/v1/queries/reset` forgets them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::digests::DigestRow;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueriesQuery {
    /// `total` (time, the default), `count`, `errors`, `p99` or `rows`.
    #[serde(default = "default_sort")]
    pub sort: String,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_sort() -> String {
    "total".into()
}

fn default_limit() -> usize {
    20
}

const SORTS: [&str; 5] = ["total", "count", "errors", "p99", "rows"];

#[derive(Debug, Serialize, Deserialize)]
pub struct QueryList {
    pub sort: String,
    pub queries: Vec<DigestRow>,
}

/// `GET /api/v1/queries?sort=total&limit=20`.
pub async fn top(
    State(state): State<AdminState>,
    q: Result<Query<QueriesQuery>, QueryRejection>,
) -> Result<Json<QueryList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if !SORTS.contains(&q.sort.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "sort must be one of {}, not '{}'",
            SORTS.join(", "),
            q.sort
        )));
    }
    let queries = state.shared.digests.top(&q.sort, q.limit.min(10_000));
    Ok(Json(QueryList {
        sort: q.sort,
        queries,
    }))
}

/// `POST /api/v1/queries/reset`.
pub async fn reset(State(state): State<AdminState>) -> Json<serde_json::Value> {
    state.shared.digests.reset();
    Json(serde_json::json!({ "reset": true }))
}
