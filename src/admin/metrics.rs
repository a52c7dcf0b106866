//! Prometheus `/metrics`: the `metrics` crate's global recorder, installed once per process,
//! rendered as text exposition on request. The rest of the codebase records with
//! `metrics::counter!` / `gauge!` and needs to know nothing about this.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::{AdminState, ApiError};

/// Prometheus' content type for text exposition format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder on first call; later calls return the same handle.
/// Metrics recorded before the first call are lost, so `proxy::serve` calls it first thing.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
}

/// The handle, if the recorder is installed; a failure to install is logged once.
pub fn handle() -> Option<PrometheusHandle> {
    match install() {
        Ok(h) => Some(h),
        Err(e) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| tracing::warn!(error = %e, "no Prometheus metrics"));
            None
        }
    }
}

/// HELP lines for the metrics the admin API reports on.
fn describe() {
    metrics::describe_counter!(
        "shardgate_cache_hits_total",
        "Reads answered from the result cache."
    );
    metrics::describe_counter!(
        "shardgate_cache_misses_total",
        "Cacheable reads that went to a server."
    );
    metrics::describe_counter!(
        "shardgate_cache_evictions_total",
        "Cached results dropped to stay within cache.max_bytes."
    );
    metrics::describe_counter!(
        "shardgate_cache_invalidations_total",
        "Tables whose cached results a write (or a flush) made unreachable."
    );
    metrics::describe_gauge!(
        "shardgate_cache_bytes",
        "Bytes the result cache holds (results and keys)."
    );
    metrics::describe_gauge!("shardgate_cache_entries", "Results the result cache holds.");
}

/// Shows the cache counters at 0 from the start, so a scrape before the first hit already has
/// the series (rate() over a series that appears late loses its first increments).
pub fn register_cache_series() {
    for name in [
        "shardgate_cache_hits_total",
        "shardgate_cache_misses_total",
        "shardgate_cache_evictions_total",
        "shardgate_cache_invalidations_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!("shardgate_cache_bytes").increment(0.0);
    metrics::gauge!("shardgate_cache_entries").increment(0.0);
}

/// Runs the recorder's housekeeping (histogram buckets) every few seconds, forever.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// `GET /metrics`.
pub async fn render(State(state): State<AdminState>) -> Result<impl IntoResponse, ApiError> {
    let handle = state.metrics.as_ref().ok_or_else(|| {
        ApiError::MetricsUnavailable("another metrics recorder was installed first".into())
    })?;
    // The cache's own gauge is set on inserts, when moka has not yet counted them; measured
    // here it is exact at every scrape. Its counters are kept by the cache (a hit does not
    // go through the recorder) and copied here.
    if let Some(cache) = &state.shared.cache {
        let (bytes, entries) = cache.size().await;
        cache.export_metrics();
        metrics::gauge!("shardgate_cache_bytes").set(bytes as f64);
        metrics::gauge!("shardgate_cache_entries").set(entries as f64);
    }
    let (logging_in, clients) = state.shared.admission.counts();
    metrics::gauge!("shardgate_client_connections", "state" => "logging_in").set(logging_in as f64);
    metrics::gauge!("shardgate_client_connections", "state" => "logged_in").set(clients as f64);
    metrics::gauge!("shardgate_incoming_command_bytes")
        .set(state.shared.command_bytes.used() as f64);
    // Pool use is read where it is kept (semaphore, idle lists) at each scrape, so the data
    // path never touches a gauge.
    for server in state.shared.health.servers() {
        let addr = std::sync::Arc::clone(server.addr());
        let u = state.shared.pools.usage(&addr);
        let busy = u.open.saturating_sub(u.idle);
        metrics::gauge!("shardgate_pool_connections", "server" => addr.clone(), "state" => "idle")
            .set(u.idle as f64);
        metrics::gauge!("shardgate_pool_connections", "server" => addr.clone(), "state" => "busy")
            .set(busy as f64);
        metrics::gauge!("shardgate_pool_max_connections", "server" => addr.clone())
            .set(u.max as f64);
        metrics::gauge!("shardgate_server_outstanding", "server" => addr)
            .set(f64::from(server.outstanding()));
    }
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()))
}
