//! Every admin failure as one type, answered as `{"error": "..."}` with a fitting status.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An admin request that failed; the message is what the client (and the CLI) shows.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the admin API is closed: set proxy.admin_token in the proxy's config")]
    NoTokenConfigured,
    #[error("missing admin token: send the header `Authorization: Bearer <proxy.admin_token>`")]
    MissingToken,
    #[error("wrong admin token")]
    WrongToken,
    #[error("the result cache is off (no [[cache.rules]])")]
    CacheOff,
    #[error("{0}")]
    BadRequest(String),
    #[error("no such endpoint: {method} {path}")]
    NotFound { method: String, path: String },
    /// The request names something that does not exist (a reshard workflow...).
    #[error("{0}")]
    Missing(String),
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("metrics are unavailable: {0}")]
    MetricsUnavailable(String),
    /// The request cannot be carried out in the current state (another operation runs, the
    /// server named is not fenced...).
    #[error("{0}")]
    Conflict(String),
    /// A database server failed while the request ran.
    #[error("{0}")]
    Backend(String),
    /// An extractor refused the request (body too large, unreadable); its status is kept.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NoTokenConfigured | ApiError::MissingToken | ApiError::WrongToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::CacheOff => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MetricsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Backend(_) => StatusCode::BAD_GATEWAY,
            ApiError::Rejected { status, .. } => *status,
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        ApiError::Rejected {
            status: e.status(),
            message: e.body_text(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme the client should use.
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}
