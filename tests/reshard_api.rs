//! The reshard workflow endpoints (`/api/v1/reshard`, `.../start|status|verify|cutover|
//! rollback|complete|cancel`) and their CLI commands against a proxy over a small sandbox (2
//! shards, no replicas): what the admin plane itself answers (bad requests, no workflow, no
//! token) and the OpenAPI document. The workflows' own behaviour is tested with the engine.

mod common;

use std::sync::OnceLock;

use serde_json::Value;
use shardgate::admin::client::{Client, Response};

use common::Sandbox;

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| {
        common::start_cluster_with(&[
            "--shards",
            "2",
            "--replicas",
            "0",
            "--sharded-table",
            "items:id",
        ])
    })
}

/// Every new route: method, path, a body it would accept.
const ROUTES: [(&str, &str, Option<&str>); 8] = [
    ("GET", "/api/v1/reshard", None),
    (
        "POST",
        "/api/v1/reshard/start",
        Some(r#"{"keyspace":"app","remove":"s1"}"#),
    ),
    ("GET", "/api/v1/reshard/status?keyspace=app", None),
    (
        "POST",
        "/api/v1/reshard/verify",
        Some(r#"{"keyspace":"app"}"#),
    ),
    (
        "POST",
        "/api/v1/reshard/cutover",
        Some(r#"{"keyspace":"app","max_pause_ms":100}"#),
    ),
    (
        "POST",
        "/api/v1/reshard/rollback",
        Some(r#"{"keyspace":"app"}"#),
    ),
    (
        "POST",
        "/api/v1/reshard/complete",
        Some(r#"{"keyspace":"app"}"#),
    ),
    (
        "POST",
        "/api/v1/reshard/cancel",
        Some(r#"{"keyspace":"app"}"#),
    ),
];

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{} is not JSON: {e}", r.text()))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn every_new_route_needs_the_token_and_is_documented() {
    let p = sandbox().admin_proxy("");
    let anonymous = Client::new(p.admin.clone(), None);
    let wrong = Client::new(p.admin.clone(), Some("not-the-token".into()));
    for (method, path, body) in ROUTES {
        for (who, c) in [("no token", &anonymous), ("wrong token", &wrong)] {
            let r = c
                .send(method, path, body.map(str::as_bytes))
                .await
                .expect("answer");
            assert_eq!(r.status, 401, "{who}: {method} {path}: {}", r.text());
        }
    }
    // Nothing started behind the refusals.
    let r = p.get("/api/v1/reshard").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r), serde_json::json!({ "workflows": [] }));

    let doc = json(&p.get("/api/v1/openapi.json").await);
    for (method, path, _) in ROUTES {
        let path = path.split('?').next().expect("path");
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(
            op["operationId"].is_string(),
            "{method} {path} undocumented"
        );
        assert!(op["responses"]["401"].is_object(), "{method} {path}");
    }
    let status_op = &doc["paths"]["/api/v1/reshard/status"]["get"];
    assert_eq!(status_op["parameters"][0]["name"], "keyspace");
    assert!(status_op["responses"]["404"].is_object());
    for schema in [
        "ReshardStatus",
        "ReshardWorkflow",
        "ReshardCutoverAttempt",
        "ReshardStartRequest",
        "ReshardCutoverRequest",
        "ReshardKeyspaceRequest",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
}

#[tokio::test]
async fn no_workflow_is_a_404_for_the_api_and_the_cli() {
    let p = sandbox().admin_proxy("");
    let r = p.get("/api/v1/reshard/status?keyspace=app").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        json(&r)["error"],
        "no reshard workflow on keyspace app",
        "{}",
        r.text()
    );
    // Every operation on a workflow needs one.
    for (method, path, body) in &ROUTES[3..] {
        let r = p.client().send(method, path, body.map(str::as_bytes)).await;
        let r = r.expect("answer");
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert!(
            r.error_message()
                .contains("no reshard workflow on keyspace app"),
            "{path}: {}",
            r.text()
        );
    }
    let r = p.get("/api/v1/reshard/status").await;
    assert_eq!(r.status, 400, "no keyspace: {}", r.text());
    assert!(r.error_message().contains("keyspace"), "{}", r.text());

    let out = p.cli(&["reshard", "status", "--keyspace", "app"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("404") && err.contains("no reshard workflow on keyspace app"),
        "{err}"
    );
    for args in [
        vec!["reshard", "verify", "--keyspace", "app", "--wait"],
        vec!["reshard", "cutover", "--keyspace", "app"],
        vec![
            "reshard",
            "rollback",
            "--keyspace",
            "app",
            "--max-pause-ms",
            "50",
        ],
        vec!["reshard", "complete", "--keyspace", "app"],
        vec!["reshard", "cancel", "--keyspace", "app"],
    ] {
        let out = p.cli(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("404"), "{args:?}: {err}");
    }

    // Every workflow: none, in words and as JSON.
    let out = p.cli(&["reshard", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no reshard workflows\n"
    );
    let out = p.cli(&["reshard", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v, serde_json::json!({ "workflows": [] }));
}

#[tokio::test]
async fn bad_start_requests_are_refused_before_anything_starts() {
    let p = sandbox().admin_proxy("");
    let cases = [
        (
            r#"{"keyspace":"app","add":"s2=127.0.0.1:1","remove":"s1"}"#,
            "exactly one of add",
        ),
        (r#"{"keyspace":"app"}"#, "exactly one of add"),
        (r#"{"remove":"s1"}"#, "keyspace is required"),
        (r#"{"keyspace":"app","add":"s2"}"#, "no '='"),
        (
            r#"{"keyspace":"app","remove":"s1","shard":"s1"}"#,
            "unknown field",
        ),
        ("not json", "bad JSON body"),
    ];
    for (body, why) in cases {
        let r = p.post("/api/v1/reshard/start", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.error_message().contains(why), "{body}: {}", r.text());
    }
    // A plan with add or remove besides, or for another keyspace.
    let plan = p
        .post(
            "/api/v1/reshard/plan",
            Some(r#"{"keyspace":"app","remove":"s1"}"#),
        )
        .await;
    assert_eq!(plan.status, 200, "{}", plan.text());
    let plan = json(&plan);
    for (extra, why) in [
        (serde_json::json!({ "remove": "s1" }), "not both"),
        (
            serde_json::json!({ "keyspace": "other" }),
            "is not the plan's",
        ),
    ] {
        let mut body = serde_json::json!({ "plan": plan });
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = p
            .post("/api/v1/reshard/start", Some(&body.to_string()))
            .await;
        assert_eq!(r.status, 400, "{extra}: {}", r.text());
        assert!(r.error_message().contains(why), "{extra}: {}", r.text());
    }
    // Unknown fields on every other body.
    for (_, path, _) in ROUTES.iter().filter(|r| r.0 == "POST").skip(1) {
        let r = p
            .post(path, Some(r#"{"keyspace":"app","force":true}"#))
            .await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(
            r.error_message().contains("unknown field `force`"),
            "{path}: {}",
            r.text()
        );
    }
    let r = p.get("/api/v1/reshard").await;
    assert_eq!(json(&r)["workflows"], serde_json::json!([]), "{}", r.text());

    // The CLI: clap refuses both or neither before any request.
    for args in [
        vec![
            "reshard",
            "start",
            "--keyspace",
            "app",
            "--add",
            "s2=127.0.0.1:1",
            "--remove",
            "s1",
        ],
        vec!["reshard", "start", "--keyspace", "app"],
    ] {
        let out = p.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--remove"), "{}", stderr(&out));
    }
    // A plan file that is not a plan.
    let file = sandbox().dir.join("not-a-plan.json");
    std::fs::write(&file, r#"{"keyspace":"app"}"#).expect("write");
    let file = file.to_str().expect("utf-8 path");
    let out = p.cli(&["reshard", "start", "--plan-file", file]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not a plan"), "{}", stderr(&out));
}
