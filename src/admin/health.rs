//! Liveness: answers while the admin server's runtime is running; needs no token.

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}
