//! The admin API as a whole against a real proxy over a sandbox of its own (1 shard: primary +
//! 1 replica): `/readyz`, `/api/v1/topology` and `shardgate topology`, and schemathesis
//! fuzzing every operation of `/api/v1/openapi.json` (but failover and rejoin, which would
//! change the cluster) for server errors and answers that break the document.

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use shardgate::admin::client::{Client, Response};

use common::Sandbox;

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster(1))
}

/// A proxy of the test's own, with `extra` config.
type Proxy = common::AdminProxy;

impl Proxy {
    fn start(extra: &str) -> Proxy {
        sandbox().admin_proxy(extra)
    }

    /// `GET path` without a token.
    async fn get_anonymous(&self, path: &str) -> Response {
        Client::new(self.admin.clone(), None)
            .send("GET", path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Polls `path` until `done` holds for its answer, at most 20 s; the last answer.
    async fn wait_for(&self, path: &str, done: impl Fn(&Response) -> bool) -> Response {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.get(path).await;
            if done(&r) || Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{} is not JSON: {e}", r.text()))
}

/// The topology once the replica's first check is in (it starts not replicating).
async fn settled_topology(p: &Proxy) -> Value {
    let r = p
        .wait_for("/api/v1/topology", |r| {
            serde_json::from_slice::<Value>(&r.body)
                .is_ok_and(|v| v["keyspaces"][0]["shards"][0]["servers"][1]["replicating"] == true)
        })
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)
}

#[tokio::test]
async fn readyz_is_open_and_ready_with_the_cluster_up() {
    let p = Proxy::start("");
    let r = p.wait_for("/readyz", |r| r.status == 200).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"ready":true}"#);
    let open = p.get_anonymous("/readyz").await;
    assert_eq!(open.status, 200, "no token needed: {}", open.text());
    let doc = p.get_anonymous("/api/v1/openapi.json").await;
    assert_eq!(doc.status, 200, "no token needed: {}", doc.text());
    assert_eq!(json(&doc)["openapi"], "3.0.3");
}

#[tokio::test]
async fn readyz_names_a_shard_whose_primary_is_down() {
    let dead = shardgate::sandbox::free_port().expect("port");
    let p = Proxy::start(&format!(
        "[keyspace.gone]\nsharding = \"unsharded\"\n\
         [[keyspace.gone.shards]]\nname = \"s9\"\nprimary = \"127.0.0.1:{dead}\"\n"
    ));
    let r = p.wait_for("/readyz", |r| r.status == 503).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["ready"], false);
    let why = v["error"].as_str().expect("error");
    assert!(
        why.contains("gone/s9") && why.contains(&dead.to_string()),
        "{why}"
    );
    assert!(!why.contains("app/s0"), "app/s0 is up: {why}");
}

#[tokio::test]
async fn topology_lists_the_primary_and_the_replica_with_their_roles() {
    let p = Proxy::start("");
    assert_eq!(p.get_anonymous("/api/v1/topology").await.status, 401);
    let v = settled_topology(&p).await;
    assert!(v["version"].as_u64().is_some_and(|n| n >= 1), "{v}");
    let ks = &v["keyspaces"][0];
    assert_eq!(ks["name"], "app", "{v}");
    assert_eq!(ks["sharding"], "unsharded", "{v}");
    let shard = &ks["shards"][0];
    assert_eq!(shard["name"], "s0");
    let servers = shard["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2, "{v}");
    let sb = sandbox();
    let primary = &servers[0];
    assert_eq!(
        primary["addr"],
        format!("127.0.0.1:{}", sb.primary().port),
        "{v}"
    );
    assert_eq!(primary["role"], "primary");
    assert_eq!(primary["up"], true);
    assert_eq!(primary["replicating"], false);
    assert_eq!(primary["lag_seconds"], Value::Null);
    assert_eq!(primary["weight"], 1);
    let replica = &servers[1];
    assert_eq!(
        replica["addr"],
        format!("127.0.0.1:{}", sb.replicas()[0].port),
        "{v}"
    );
    assert_eq!(replica["role"], "replica");
    assert_eq!(replica["up"], true);
    assert!(replica["lag_seconds"].as_f64().is_some(), "{v}");
    for s in servers {
        assert!(s["outstanding"].as_u64().is_some(), "{v}");
        assert!(s["pool"]["open"].as_u64().is_some(), "{v}");
        assert!(s["pool"]["idle"].as_u64().is_some(), "{v}");
        assert!(s["pool"]["max"].as_u64().is_some_and(|m| m > 0), "{v}");
    }
}

#[tokio::test]
async fn topology_command_prints_a_table_or_the_json() {
    let p = Proxy::start("");
    settled_topology(&p).await;
    let out = p.cli(&["topology"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sb = sandbox();
    let line_of = |port: u16| {
        text.lines()
            .find(|l| l.contains(&format!("127.0.0.1:{port}")))
            .unwrap_or_else(|| panic!("no line for port {port} in:\n{text}"))
            .to_string()
    };
    let primary = line_of(sb.primary().port);
    assert!(
        primary.starts_with("app/s0") && primary.contains(" primary ") && primary.contains(" up "),
        "{primary}"
    );
    let replica = line_of(sb.replicas()[0].port);
    assert!(
        replica.contains(" replica ") && replica.contains(" up "),
        "{replica}"
    );
    assert!(text.starts_with("shard map version "), "{text}");

    let out = p.cli(&["topology", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(
        v["keyspaces"][0]["shards"][0]["servers"][0]["role"],
        "primary"
    );

    let out = p.cli(&["topology", "--token", "wrong"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong admin token"), "{err}");
}

#[tokio::test]
async fn failover_and_rejoin_refuse_bad_requests_without_touching_the_cluster() {
    let p = Proxy::start("");
    let cases = [
        ("/api/v1/failover", "not json", 400),
        ("/api/v1/failover", r#"{"shard":"app/nope"}"#, 400),
        ("/api/v1/failover", r#"{"shard":"app/s0","extra":1}"#, 400),
        ("/api/v1/rejoin", "{}", 400),
        ("/api/v1/rejoin", r#"{"server":"127.0.0.1:1"}"#, 409),
    ];
    for (path, body, status) in cases {
        let r = p.post(path, Some(body)).await;
        assert_eq!(r.status, status, "POST {path} {body}: {}", r.text());
        assert!(json(&r)["error"].is_string(), "{}", r.text());
    }
}

/// Whether `python3 -m schemathesis.cli` runs, installing schemathesis with pip if not.
fn schemathesis_available() -> bool {
    let runs = || {
        Command::new("python3")
            .args(["-m", "schemathesis.cli", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs() {
        return true;
    }
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "schemathesis"])
        .status()
        .is_ok_and(|s| s.success());
    installed && runs()
}

#[tokio::test]
async fn schemathesis_finds_no_server_error() {
    assert!(
        schemathesis_available(),
        "schemathesis is not installed and `python3 -m pip install schemathesis` failed \
         (.ci/setup installs it)"
    );
    // With the cache on, flushes succeed instead of all answering 409.
    let p = Proxy::start("[[cache.rules]]\nttl_ms = 1000\n");
    p.wait_for("/readyz", |r| r.status == 200).await;
    // Its example database and reports go here, not into the source tree.
    let work = sandbox().dir.join("schemathesis");
    std::fs::create_dir_all(&work).expect("schemathesis dir");
    let url = format!("http://{}/api/v1/openapi.json", p.admin);
    let mut cmd = Command::new("python3");
    cmd.current_dir(&work)
        .args(["-m", "schemathesis.cli", "run", &url])
        .args(["--header", &format!("Authorization: Bearer {}", p.token)])
        // Fuzzing these would switch the test cluster's primary over.
        .args(["--exclude-operation-id", "failover"])
        .args(["--exclude-operation-id", "rejoin"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,unsupported_method,ignored_auth",
        ])
        .args(["--max-examples", "50", "--seed", "7", "--workers", "2"])
        .args(["--request-timeout", "10"])
        .env("NO_COLOR", "1");
    let (out, killed) = common::run_child(&mut cmd, Vec::new(), Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        !killed,
        "schemathesis ran over 3 minutes:\n{stdout}{stderr}"
    );
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stdout.contains("Server error"),
        "a 5xx was found:\n{stdout}"
    );
    // Every operation selected (all but the two excluded and the document itself, which
    // schemathesis leaves out) was tested.
    let count = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.trim().split('/').next()?.trim().parse::<u32>().ok())
    };
    let selected = count("Selected:");
    assert!(selected.is_some_and(|n| n >= 9), "selected:\n{stdout}");
    assert_eq!(count("Tested:"), selected, "tested:\n{stdout}");
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn a_flood_on_the_admin_port_leaves_mysql_logins_working() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    common::raise_fd_limit();
    let p = Proxy::start("");
    let pid = p.guard.0.id();
    let before = open_fds(pid);
    // Slow-loris clients: each sends one byte of a request head and then nothing.
    let mut held = Vec::new();
    for _ in 0..1000 {
        let Ok(mut s) = TcpStream::connect(&p.admin).await else {
            continue;
        };
        let _ = s.write_all(b"G").await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = open_fds(pid).saturating_sub(before);
    let cap = shardgate::admin::server::MAX_CONNECTIONS;
    assert!(
        grown <= cap + 16,
        "the proxy holds {grown} more descriptors with 1000 admin sockets open (cap {cap})"
    );
    // MySQL logins do not depend on what the admin port receives.
    let mut c = common::connect(&common::app_url(p.port, "app")).await;
    let one: Option<i64> = mysql_async::prelude::Queryable::query_first(&mut c, "SELECT 1")
        .await
        .expect("select");
    assert_eq!(one, Some(1));
    drop(c);

    // A body announced as 2^62 bytes is refused at once, not waited for. The flood's slots
    // free up as its sockets close: until then a connection is closed on accept.
    drop(held);
    let head = format!(
        "POST /api/v1/cache/flush HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 4611686018427387904\r\n\r\n",
        p.token
    );
    let mut answer = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let mut s = TcpStream::connect(&p.admin).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("write");
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer)).await {
            Ok(Ok(n @ 1..)) => break String::from_utf8_lossy(&answer[..n]).into_owned(),
            Err(_) => panic!("no answer to a 2^62-byte body within 5 s"),
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(r) => panic!("the admin port still refuses connections: {r:?}"),
        }
    };
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("length limit"), "{text}");

    // A head trickled in is cut off after the header timeout.
    let mut slow = TcpStream::connect(&p.admin).await.expect("connect");
    slow.write_all(b"GET /hea").await.expect("write");
    let limit = shardgate::admin::server::HEADER_TIMEOUT + Duration::from_secs(5);
    let n = tokio::time::timeout(limit, slow.read(&mut answer))
        .await
        .expect("the server closes a connection whose head never completes");
    // Closed (EOF or reset), or told why before the close: never a served request.
    if let Ok(k @ 1..) = n {
        let text = String::from_utf8_lossy(&answer[..k]);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
}
