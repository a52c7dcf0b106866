//! `POST /api/v1/config/reload[?force=true]`: reads the proxy's config file again and applies
//! it without dropping clients (`Topology::reload`); an invalid file changes nothing and the
//! answer says why.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use super::{AdminState, ApiError};
use crate::config::Config;
use crate::ha::HaError;
use crate::topology::{ReloadReport, TopologyError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadQuery {
    /// Apply even when it moves a shard's primary away from the live one.
    #[serde(default)]
    pub force: bool,
}

pub async fn reload(
    State(state): State<AdminState>,
    q: Result<Query<ReloadQuery>, QueryRejection>,
) -> Result<Json<ReloadReport>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Some(path) = state.shared.config.source.clone() else {
        return Err(ApiError::Conflict(
            "this proxy was not started from a config file: nothing to reload".into(),
        ));
    };
    let file = path.display().to_string();
    // Off the async workers: a slow disk must not stall the admin API's other requests.
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|e| ApiError::Backend(format!("reading {file}: {e}")))?;
    let config = loaded.map_err(|e| {
        tracing::warn!(error = %e, "config reload refused; the running config stays");
        ApiError::BadRequest(format!("not reloaded, the running config stays: {e}"))
    })?;
    match state.shared.ha.reload(config, q.force).await {
        Ok(report) => {
            tracing::info!(
                version = report.version,
                added = ?report.added_servers,
                restart_needed = ?report.restart_needed,
                "config reloaded"
            );
            Ok(Json(report))
        }
        Err(e @ HaError::Publish(TopologyError::Refused(_)))
        | Err(e @ HaError::StoreDown)
        | Err(e @ HaError::Busy(_)) => Err(ApiError::Conflict(format!(
            "not reloaded, the running config stays: {e}"
        ))),
        Err(e) => Err(ApiError::Backend(e.to_string())),
    }
}
