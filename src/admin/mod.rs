//! The admin plane: an HTTP API next to the MySQL listener (axum), Prometheus `/metrics`, and
//! the client the `shardgate` CLI uses to talk to it.
//!
//! One file per job: `router` lays out the routes, `auth` guards them, `error` turns failures
//! into JSON, and each group of endpoints (`health`, `metrics`, `cache`, `ha`, `topology`)
//! has its own handlers; `openapi.json` describes them all.
//! A new group of endpoints is a new file plus a few lines in `router`.

mod auth;
pub mod cache;
pub mod client;
pub mod commands;
mod error;
pub mod ha;
mod health;
pub mod metrics;
mod openapi;
pub mod queries;
pub mod reload;
pub mod reshard;
pub mod reshard_commands;
mod router;
pub mod server;
pub mod topology;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::runtime::Shared;
pub use auth::Token;
pub use error::ApiError;
pub use router::router;

/// What every handler can reach.
#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
    /// `proxy.admin_token`; `None` keeps every guarded route closed.
    pub token: Option<Token>,
    /// The Prometheus recorder's handle, `None` when another recorder was installed first.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl AdminState {
    pub fn new(shared: Arc<Shared>) -> Self {
        let token = Token::from_config(shared.config.proxy.admin_token.as_deref());
        AdminState {
            shared,
            token,
            metrics: metrics::handle(),
        }
    }
}

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("proxy.admin_listen '{addr}' is not an address like 127.0.0.1:6080: {source}")]
    BadAddress {
        addr: String,
        source: std::net::AddrParseError,
    },
    #[error("cannot listen on proxy.admin_listen {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Binds `proxy.admin_listen`, so a taken port stops the proxy at startup, not later.
pub async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    let parsed: SocketAddr = addr.parse().map_err(|source| StartError::BadAddress {
        addr: addr.to_string(),
        source,
    })?;
    TcpListener::bind(parsed)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Serves the admin API on `listener` until the task is dropped or aborted, within the
/// limits of `server` (connections, header and request time, body size).
pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    server::serve(listener, router(state)).await
}
