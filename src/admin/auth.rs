//! Bearer-token guard for every admin route but the open ones (`OPEN_PATHS`).
//!
//! Without `proxy.admin_token` the guarded routes answer 401: an admin port someone forgot to
//! configure is closed, never open. Tokens are compared as SHA-256 digests in constant time,
//! so neither the time taken nor the length of the configured token leaks.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::{AdminState, ApiError};

/// Paths anyone may call: load balancers probe liveness and readiness without a token, and
/// the API's description tells nothing the open source does not.
pub const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/api/v1/openapi.json"];

/// The configured admin token, kept only as its digest.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl Token {
    /// `None` for no token or an empty one: both leave the API closed.
    pub fn from_config(token: Option<&str>) -> Option<Token> {
        token.filter(|t| !t.is_empty()).map(|t| Token(digest(t)))
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let other = digest(presented);
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: lets open paths through, checks the token on the rest.
pub async fn require_token(
    State(state): State<AdminState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return Ok(next.run(req).await);
    }
    let Some(token) = &state.token else {
        return Err(ApiError::NoTokenConfigured);
    };
    match bearer(&req) {
        None => Err(ApiError::MissingToken),
        Some(t) if token.matches(t) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::WrongToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_absent_token_closes_the_api() {
        assert!(Token::from_config(None).is_none());
        assert!(Token::from_config(Some("")).is_none());
    }

    #[test]
    fn only_the_same_token_matches() {
        let t = Token::from_config(Some("s3cret")).expect("token");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches("s3cret "));
        assert!(!t.matches(""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let req = |v: &str| {
            Request::builder()
                .header(AUTHORIZATION, v)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        assert_eq!(bearer(&req("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&req("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bearer")), None);
    }
}
