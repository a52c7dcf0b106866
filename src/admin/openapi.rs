//! `GET /api/v1/openapi.json`: the admin API described as OpenAPI 3.0, kept by hand in
//! `openapi.json` next to this file and compiled in, so the binary serves the description of
//! exactly the routes it has (a test checks every route in `router` is in it).

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    fn doc() -> serde_json::Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    /// The paths `router.rs` registers, read from its source.
    fn routed_paths() -> Vec<String> {
        include_str!("router.rs")
            .split(".route(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn describes_every_route_and_only_those() {
        let doc = doc();
        let mut documented: Vec<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let mut routed = routed_paths();
        documented.sort();
        routed.sort();
        assert!(routed.len() >= 12, "{routed:?}");
        assert_eq!(documented, routed);
    }

    #[test]
    fn every_operation_documents_its_errors_and_security() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.0.3");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let open = super::super::auth::OPEN_PATHS.contains(&path.as_str());
                let security = op.get("security").and_then(|s| s.as_array());
                assert_eq!(
                    security.is_some_and(|s| s.is_empty()),
                    open,
                    "{method} {path}: open paths say `security: []`, the others inherit bearer"
                );
                let responses = op["responses"].as_object().expect("responses");
                if !open {
                    assert!(responses.contains_key("401"), "{method} {path} lacks 401");
                }
                assert!(
                    op.get("operationId").is_some(),
                    "{method} {path} has no operationId"
                );
            }
        }
    }
}
