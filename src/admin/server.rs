//! Serving admin HTTP connections within bounds: the admin port shares the process's file
//! descriptors with the MySQL listener, so no client of it may hold a socket for long or
//! take more than a fixed number of them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Admin connections open at once; more are closed as soon as they are accepted, so a flood
/// costs the process at most this many descriptors (MySQL logins keep theirs).
pub const MAX_CONNECTIONS: usize = 128;
/// A request's head (or the next request on an idle keep-alive connection) must arrive
/// within this; a client trickling header bytes is cut off.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request (body read and answer) must finish within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// An accept failing (out of descriptors) is retried after this instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, app: Router) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            // One line per 100 refusals: a flood must not flood the log too.
            if refused % 100 == 1 {
                warn!(%peer, refused, max = MAX_CONNECTIONS, "admin connection limit reached");
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
}

/// Bounds a request's time, body read included (a body trickled in forever would hold its
/// connection past the header timeout).
pub async fn time_limit(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => super::ApiError::Rejected {
            status: axum::http::StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request did not complete within {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        }
        .into_response(),
    }
}

/// The largest request body any endpoint reads (axum's own default, named here so the
/// up-front check and the extractors agree).
pub const MAX_BODY: usize = 2 << 20;

/// Answers 413 at once to a request announcing a body over `MAX_BODY`: the extractors would
/// only notice after reading that much, and a client announcing 2^62 bytes and sending none
/// would get no answer at all.
pub async fn announced_body_limit(
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(n) if n > MAX_BODY as u64 => super::ApiError::Rejected {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("length limit exceeded: a body of {n} bytes is over {MAX_BODY}"),
        }
        .into_response(),
        _ => next.run(req).await,
    }
}
