//! The admin API's routes, in one place. A new endpoint group adds its routes here.

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use super::{
    auth, cache, ha, health, metrics, openapi, queries, reload, reshard, server, topology,
    AdminState, ApiError,
};

/// Every route; all but `auth::OPEN_PATHS` behind the bearer token. Each one is described in
/// `openapi.json` (a test there compares the paths with this function's source).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(topology::readyz))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/cache", get(cache::stats))
        .route("/api/v1/cache/flush", post(cache::flush))
        .route("/api/v1/ha", get(ha::status))
        .route("/api/v1/events", get(ha::events))
        .route("/api/v1/failover", post(ha::failover))
        .route("/api/v1/rejoin", post(ha::rejoin))
        .route("/api/v1/shardmap", get(ha::shardmap))
        .route("/api/v1/queries", get(queries::top))
        .route("/api/v1/queries/reset", post(queries::reset))
        .route("/api/v1/config/reload", post(reload::reload))
        .route("/api/v1/topology", get(topology::topology))
        .route("/api/v1/reshard", get(reshard::list))
        .route("/api/v1/reshard/plan", post(reshard::plan))
        .route("/api/v1/reshard/start", post(reshard::start))
        .route("/api/v1/reshard/status", get(reshard::status))
        .route("/api/v1/reshard/verify", post(reshard::verify))
        .route("/api/v1/reshard/cutover", post(reshard::cutover))
        .route("/api/v1/reshard/rollback", post(reshard::rollback))
        .route("/api/v1/reshard/complete", post(reshard::complete))
        .route("/api/v1/reshard/cancel", post(reshard::cancel))
        .route("/api/v1/openapi.json", get(openapi::document))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        // On the whole router, fallbacks included: without the token nothing, not even
        // which paths exist, is visible.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(server::MAX_BODY))
        .layer(middleware::from_fn(server::announced_body_limit))
        .layer(middleware::from_fn(server::time_limit))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::super::client::Client;
    use super::super::{bind, serve, AdminState};
    use crate::config::Config;
    use crate::runtime::Shared;

    const CONFIG: &str = r#"
        [proxy]
        admin_token = "t0ken"
        [[users]]
        name = "app"
        password = "secret"
        [keyspace.app]
        sharding = "unsharded"
        [[keyspace.app.shards]]
        name = "s0"
        primary = "127.0.0.1:1"
    "#;

    /// An admin server over a proxy that never connects anywhere; its address.
    async fn start(extra: &str) -> String {
        let cfg =
            Config::from_toml(&format!("{extra}\n{CONFIG}"), Path::new("t.toml")).expect("config");
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = AdminState::new(Arc::new(Shared::new(cfg).expect("shared")));
        tokio::spawn(serve(listener, state));
        addr
    }

    async fn status_and_error(c: &Client, method: &str, path: &str) -> (u16, String) {
        let r = c.send(method, path, None).await.expect("request");
        (r.status, r.error_message())
    }

    #[tokio::test]
    async fn statuses_and_json_errors() {
        let addr = start("").await;
        let good = Client::new(addr.clone(), Some("t0ken".into()));
        let none = Client::new(addr.clone(), None);
        assert_eq!(
            status_and_error(&none, "GET", "/healthz").await,
            (200, "ok".into())
        );
        assert_eq!(status_and_error(&none, "GET", "/api/v1/cache").await.0, 401);
        assert_eq!(status_and_error(&none, "GET", "/elsewhere").await.0, 401);
        assert_eq!(
            status_and_error(&good, "GET", "/elsewhere").await,
            (404, "no such endpoint: GET /elsewhere".into())
        );
        assert_eq!(
            status_and_error(&good, "DELETE", "/api/v1/cache").await,
            (405, "DELETE is not allowed on /api/v1/cache".into())
        );
        assert_eq!(
            status_and_error(&good, "POST", "/api/v1/cache/flush").await,
            (409, "the result cache is off (no [[cache.rules]])".into())
        );
        let r = good
            .send("POST", "/api/v1/cache/flush", Some(b"{\"table\":\"x\"}"))
            .await
            .expect("request");
        assert_eq!(r.status, 400, "{}", r.text());
        let r = good
            .call("GET", "/api/v1/cache", None)
            .await
            .expect("stats");
        let stats: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(stats["enabled"], false);
        assert_eq!(stats["max_bytes"], 64 << 20);
    }

    #[tokio::test]
    async fn readiness_topology_and_the_document() {
        let addr = start("").await;
        let none = Client::new(addr.clone(), None);
        let good = Client::new(addr, Some("t0ken".into()));
        // A `Shared` without workers: nothing accepts MySQL clients.
        let r = none.send("GET", "/readyz", None).await.expect("readyz");
        assert_eq!(r.status, 503, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["ready"], false);
        assert!(v["error"].as_str().is_some_and(|e| e.contains("accepting")));
        let r = none
            .send("GET", "/api/v1/openapi.json", None)
            .await
            .expect("document");
        assert_eq!(r.status, 200);
        assert_eq!(
            status_and_error(&none, "GET", "/api/v1/topology").await.0,
            401
        );
        let r = good
            .call("GET", "/api/v1/topology", None)
            .await
            .expect("topology");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["version"], 1);
        let server = &v["keyspaces"][0]["shards"][0]["servers"][0];
        assert_eq!(server["addr"], "127.0.0.1:1");
        assert_eq!(server["role"], "primary");
        assert_eq!(server["pool"]["open"], 0);
        let big = vec![b' '; (2 << 20) + 1024];
        let r = good
            .send("POST", "/api/v1/cache/flush", Some(&big))
            .await
            .expect("request");
        assert_eq!(r.status, 413, "{}", r.text());
        assert!(r.error_message().contains("length limit"), "{}", r.text());
    }

    #[tokio::test]
    async fn flushes_with_the_cache_on() {
        let addr = start("[[cache.rules]]\nttl_ms = 1000").await;
        let c = Client::new(addr, Some("t0ken".into()));
        let r = c
            .call("POST", "/api/v1/cache/flush", None)
            .await
            .expect("flush");
        assert_eq!(r.text(), r#"{"flushed":"all"}"#);
        let r = c
            .call("POST", "/api/v1/cache/flush?table=App.T", None)
            .await
            .expect("flush");
        assert_eq!(r.text(), r#"{"flushed":"app.t"}"#);
        let r = c.call("GET", "/api/v1/cache", None).await.expect("stats");
        let stats: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(stats["enabled"], true);
        assert_eq!(stats["invalidations"], 1);
        assert_eq!(stats["entries"], 0);
    }
}
