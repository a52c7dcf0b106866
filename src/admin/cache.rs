//! `/api/v1/cache`: the result cache's size and counters, and flushing it (all of it, or the
//! results that read one table).

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AdminState, ApiError};
use crate::cache::generations::qualified;

/// `GET /api/v1/cache`; also what `shardgate cache stats` reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// False when no `[[cache.rules]]` turn the cache on; the numbers are then 0.
    pub enabled: bool,
    pub bytes: u64,
    pub entries: u64,
    /// `cache.max_bytes` from the config.
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub invalidations: u64,
}

/// `GET /api/v1/cache`.
pub async fn stats(State(state): State<AdminState>) -> Json<CacheStats> {
    let max_bytes = state.shared.config.cache.max_bytes;
    let Some(cache) = &state.shared.cache else {
        return Json(CacheStats {
            enabled: false,
            bytes: 0,
            entries: 0,
            max_bytes,
            hits: 0,
            misses: 0,
            evictions: 0,
            invalidations: 0,
        });
    };
    let (bytes, entries) = cache.size().await;
    let s = &cache.stats;
    Json(CacheStats {
        enabled: true,
        bytes,
        entries,
        max_bytes,
        hits: s.hits.get(),
        misses: s.misses.load(Ordering::Relaxed),
        evictions: s.evictions.load(Ordering::Relaxed),
        invalidations: s.invalidations.load(Ordering::Relaxed),
    })
}

/// What to flush, from the JSON body or the query string; no table: everything.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushRequest {
    pub table: Option<String>,
}

/// `POST /api/v1/cache/flush`'s answer: `"all"` or the `db.table` flushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flushed {
    pub flushed: String,
}

/// `POST /api/v1/cache/flush` with an optional `{"table": "db.table"}` body or `?table=`.
pub async fn flush(
    State(state): State<AdminState>,
    query: Result<Query<FlushRequest>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Flushed>, ApiError> {
    let body = body?;
    let Query(from_query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let from_body = parse_body(&body)?;
    let table = match (from_query.table, from_body.table) {
        (Some(q), Some(b)) if table_name(&q)? != table_name(&b)? => {
            return Err(ApiError::BadRequest(format!(
                "the query names table '{q}' and the body '{b}': give one"
            )))
        }
        (q, b) => q.or(b).map(|t| table_name(&t)).transpose()?,
    };
    let cache = state.shared.cache.as_ref().ok_or(ApiError::CacheOff)?;
    let flushed = match table {
        None => {
            cache.flush_all().await;
            "all".to_string()
        }
        Some(t) => {
            cache.invalidate(std::slice::from_ref(&t));
            t
        }
    };
    tracing::info!(flushed = %flushed, "result cache flushed through the admin API");
    Ok(Json(Flushed { flushed }))
}

/// An empty body asks for nothing in particular; anything else must be a `FlushRequest`.
fn parse_body(body: &[u8]) -> Result<FlushRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(FlushRequest::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON like {{\"table\": \"db.table\"}}: {e}"
        ))
    })
}

/// `db.table` as the cache names tables (lower-case, backticks dropped), or why it is not one.
pub fn table_name(given: &str) -> Result<String, ApiError> {
    let plain: String = given.trim().chars().filter(|&c| c != '`').collect();
    match plain.split_once('.') {
        Some((db, t))
            if !db.is_empty() && !t.is_empty() && !plain.contains(char::is_whitespace) =>
        {
            Ok(qualified(None, &plain))
        }
        _ => Err(ApiError::BadRequest(format!(
            "table '{given}' is not of the form db.table"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_qualified_and_lower_case() {
        assert_eq!(table_name("App.Users").expect("ok"), "app.users");
        assert_eq!(table_name("`app`.`users`").expect("ok"), "app.users");
        for bad in ["users", ".users", "app.", "", "app. users"] {
            assert!(table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_may_be_empty_or_name_a_table() {
        assert!(parse_body(b"").expect("empty").table.is_none());
        assert!(parse_body(b" \n").expect("blank").table.is_none());
        assert!(parse_body(b"{}").expect("{}").table.is_none());
        let r = parse_body(br#"{"table":"app.t"}"#).expect("table");
        assert_eq!(r.table.as_deref(), Some("app.t"));
        assert!(parse_body(b"{\"tabel\":\"x\"}").is_err());
        assert!(parse_body(b"not json").is_err());
    }
}
