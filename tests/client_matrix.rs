//! The client matrix: real client stacks (Node mysql2 with query() and execute(), Connector/J
//! with server-side prepares and bulk batches, PHP PDO with real prepares, Go's database/sql)
//! each run one scenario (`tests/clients/<client>/`) against MariaDB directly and through the
//! proxy, on an unsharded and on a sharded keyspace, and print everything they observe as one
//! canonical JSON line per step. Each test compares one client's two runs exactly and fails
//! with the differing values, path by path. `.ci/setup` installs the clients; a missing one
//! fails its tests (it is not skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use mysql_async::prelude::*;
use serde_json::Value;

use common::Sandbox;

const CLIENTS: [&str; 4] = ["node", "java", "php", "go"];
/// The first id of every sequence and AUTO_INCREMENT of the scenario's table, so the ids the
/// proxy fills in on the sharded keyspace equal the ones MariaDB generates.
const FIRST_ID: i64 = 1000;
/// A client run that takes longer is hung (a Java run compiles its source: about 2 s).
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// Differing values shown per step (a missing row shifts every later one).
const MAX_LEAVES: usize = 12;
/// The scenario's steps that end in an error: the same on every target.
const ERROR_STEPS: [&str; 3] = ["duplicate_key", "duplicate_key_prepared", "syntax_error"];

#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// Keyspace `app`, unsharded on s0; compared with database `direct_unsharded` on s0.
    Unsharded,
    /// Keyspace `shk` over s0 and s1 (each client's table sharded by `id`, ids from a
    /// sequence); compared with database `direct_sharded` on s0 holding every row.
    Sharded,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Unsharded => "unsharded",
            Target::Sharded => "sharded",
        }
    }
    fn proxy_db(self) -> &'static str {
        match self {
            Target::Unsharded => "app",
            Target::Sharded => "shk",
        }
    }
    fn direct_db(self) -> String {
        format!("direct_{}", self.name())
    }
}

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster_with(&["--shards", "2", "--replicas", "1"]))
}

/// The proxy's config over the sandbox: keyspace `app` as generated, plus `shk` sharding each
/// client's `<client>_items` by `id` with sequence `meta.<client>_seq`.
fn proxy_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let sb = sandbox();
        let port = |s: &str| sb.cluster.primary(s).expect("primary").port;
        let mut extra = String::from(
            "[monitor]\ninterval_ms = 200\n\
             [keyspace.shk]\nsharding = \"consistent_hash\"\nvnodes = 64\n\
             sequence_keyspace = \"meta\"\nallow_scatter_writes = true\n",
        );
        for c in CLIENTS {
            extra.push_str(&format!(
                "[keyspace.shk.tables.{c}_items]\nshard_key = \"id\"\nsequence = \"{c}_seq\"\n"
            ));
        }
        for s in ["s0", "s1"] {
            let replicas: Vec<String> = sb
                .cluster
                .replicas(s)
                .iter()
                .map(|r| format!("\"127.0.0.1:{}\"", r.port))
                .collect();
            extra.push_str(&format!(
                "[[keyspace.shk.shards]]\nname = \"{s}\"\nprimary = \"127.0.0.1:{}\"\nreplicas = [{}]\n",
                port(s),
                replicas.join(", ")
            ));
        }
        extra.push_str(&format!(
            "[keyspace.meta]\nsharding = \"unsharded\"\n\
             [[keyspace.meta.shards]]\nname = \"m0\"\nprimary = \"127.0.0.1:{}\"\n",
            port("s0")
        ));
        sb.keep_proxy(&extra)
    })
}

/// The databases a run needs (idempotent: tests run concurrently) and, for the sharded
/// keyspace, the client's sequence starting at `FIRST_ID`.
async fn prepare(client: &str, target: Target) {
    let sb = sandbox();
    for s in ["s0", "s1"] {
        let p = sb.cluster.primary(s).expect("primary").port;
        let mut c = common::connect(&common::root_url(p)).await;
        for db in ["shk", "meta", "direct_unsharded", "direct_sharded"] {
            c.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .await
                .expect("database");
        }
    }
    if target == Target::Sharded {
        let p = sb.cluster.primary("s0").expect("primary").port;
        let mut c = common::connect(&common::root_url(p)).await;
        c.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS meta.{client}_seq (id INT PRIMARY KEY, next_id BIGINT NOT NULL)"
        ))
        .await
        .expect("sequence table");
        c.query_drop(format!(
            "REPLACE INTO meta.{client}_seq VALUES (0, {FIRST_ID})"
        ))
        .await
        .expect("sequence row");
    }
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn scratch() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("client-matrix");
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Fails the test: a client stack the matrix needs is not installed.
fn missing(what: &str) -> ! {
    panic!("{what} is not installed: run .ci/setup (it installs every client of the matrix)")
}

fn has_command(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The Go scenario, built once per test process without the module proxy from Debian's
/// go-sql-driver source.
fn go_binary() -> &'static Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if !has_command("go", "version") {
            return Err("Go (golang-go)".into());
        }
        if !Path::new("/usr/share/gocode/src/github.com/go-sql-driver/mysql").is_dir() {
            return Err("Go's MySQL driver (golang-github-go-sql-driver-mysql-dev)".into());
        }
        let out_bin = scratch().join("go-scenario");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&out_bin)
            .arg("scenario.go")
            .current_dir(clients_dir().join("go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", scratch().join("go-cache"))
            .output()
            .map_err(|e| format!("go build: {e}"))?;
        if !out.status.success() {
            panic!(
                "go build of tests/clients/go/scenario.go failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out_bin)
    })
}

const JAR: &str = "/usr/share/java/mariadb-java-client.jar";

/// The command that runs `client`'s scenario, or a test failure naming what to install.
fn client_command(client: &str) -> Command {
    let dir = clients_dir().join(client);
    match client {
        "node" => {
            if !has_command("node", "--version") {
                missing("Node.js");
            }
            if !dir.join("node_modules/mysql2/package.json").is_file() {
                missing("Node mysql2 (npm ci in tests/clients/node)");
            }
            let mut c = Command::new("node");
            c.arg(dir.join("scenario.js"));
            c
        }
        "java" => {
            if !has_command("java", "-version") {
                missing("Java (default-jdk-headless)");
            }
            if !Path::new(JAR).is_file() {
                missing("Connector/J (libmariadb-java)");
            }
            let mut c = Command::new("java");
            c.args(["-Duser.timezone=UTC", "-cp", JAR])
                .arg(dir.join("Scenario.java"));
            c
        }
        "php" => {
            let has_pdo = Command::new("php")
                .arg("-m")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("pdo_mysql"))
                .unwrap_or(false);
            if !has_pdo {
                missing("PHP with PDO MySQL (php-cli php-mysql)");
            }
            let mut c = Command::new("php");
            c.arg(dir.join("scenario.php"));
            c
        }
        "go" => match go_binary() {
            Ok(bin) => Command::new(bin),
            Err(what) => missing(what),
        },
        other => panic!("no client {other}"),
    }
}

/// Runs `client`'s scenario on `port`/`db`; its output lines, each parsed.
fn run_client(client: &str, label: &str, port: u16, db: &str) -> Vec<Value> {
    let mut cmd = client_command(client);
    cmd.env("SG_HOST", "127.0.0.1")
        .env("SG_PORT", port.to_string())
        .env("SG_USER", common::USER)
        .env("SG_PASSWORD", common::PASSWORD)
        .env("SG_DB", db)
        .env("SG_TABLE", format!("{client}_items"));
    let (out, timed_out) = common::run_child(&mut cmd, Vec::new(), RUN_DEADLINE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let saved = scratch().join(format!("{client}-{label}.jsonl"));
    std::fs::write(&saved, stdout.as_bytes()).expect("save output");
    let report = format!("{client} on {label}:\n--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(!timed_out, "killed after {RUN_DEADLINE:?}: {report}");
    assert!(out.status.success(), "exit {}: {report}", out.status);
    stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("{client} on {label} printed a line that is not JSON ({e}): {l}")
            })
        })
        .collect()
}

fn step_name(v: &Value) -> &str {
    v.get("step").and_then(Value::as_str).unwrap_or("?")
}

/// The reference run must have gone through the whole scenario: errors only where it makes
/// them on purpose.
fn check_reference(client: &str, direct: &[Value]) {
    assert!(
        direct.iter().any(|s| step_name(s) == "final_prepared"),
        "{client} directly did not reach the last step: {direct:#?}"
    );
    for s in direct {
        let name = step_name(s);
        assert_eq!(
            s.get("error").is_some(),
            ERROR_STEPS.contains(&name),
            "{client} directly, step `{name}` (the scenario itself is wrong): {s}"
        );
    }
}

fn short(v: Option<&Value>) -> String {
    let s = v.map_or_else(|| "<absent>".to_string(), Value::to_string);
    if s.chars().count() > 240 {
        format!("{}...", s.chars().take(240).collect::<String>())
    } else {
        s
    }
}

/// Each leaf where `a` (direct) and `b` (proxy) differ, as `path: direct ... | proxy ...`,
/// descending while both sides are objects or both arrays.
fn differences(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                differences(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                differences(&format!("{path}[{i}]"), x.get(i), y.get(i), out);
            }
        }
        _ => out.push(format!(
            "  {path}:\n    direct: {}\n    proxy:  {}",
            short(a),
            short(b)
        )),
    }
}

/// Runs `client` directly and through the proxy on `target` and compares the two outputs.
async fn compare(client: &str, target: Target) {
    prepare(client, target).await;
    let sb = sandbox();
    let port = proxy_port();
    let primary = sb.cluster.primary("s0").expect("primary").port;
    let t = target.name();
    let direct = run_client(client, &format!("{t}-direct"), primary, &target.direct_db());
    check_reference(client, &direct);
    let proxied = run_client(client, &format!("{t}-proxy"), port, target.proxy_db());
    let mut diffs = Vec::new();
    for i in 0..direct.len().max(proxied.len()) {
        let (a, b) = (direct.get(i), proxied.get(i));
        let mut d = Vec::new();
        differences("", a, b, &mut d);
        if d.len() > MAX_LEAVES {
            let more = d.len() - MAX_LEAVES;
            d.truncate(MAX_LEAVES);
            d.push(format!("  ... and {more} more values"));
        }
        if !d.is_empty() {
            let name = a.or(b).map(step_name).unwrap_or("?");
            diffs.push(format!("step `{name}`:\n{}", d.join("\n")));
        }
    }
    let saved = scratch();
    assert!(
        diffs.is_empty(),
        "{client} through the proxy ({t} keyspace) differs from MariaDB directly in {} of {} \
         steps (whole outputs: {}/{client}-{t}-*.jsonl; proxy log beside {}):\n{}",
        diffs.len(),
        direct.len(),
        saved.display(),
        sb.dir.display(),
        diffs.join("\n")
    );
}

#[tokio::test]
async fn node_mysql2_unsharded() {
    compare("node", Target::Unsharded).await;
}

#[tokio::test]
async fn node_mysql2_sharded() {
    compare("node", Target::Sharded).await;
}

#[tokio::test]
async fn connector_j_unsharded() {
    compare("java", Target::Unsharded).await;
}

#[tokio::test]
async fn connector_j_sharded() {
    compare("java", Target::Sharded).await;
}

#[tokio::test]
async fn php_pdo_unsharded() {
    compare("php", Target::Unsharded).await;
}

#[tokio::test]
async fn php_pdo_sharded() {
    compare("php", Target::Sharded).await;
}

#[tokio::test]
async fn go_database_sql_unsharded() {
    compare("go", Target::Unsharded).await;
}

#[tokio::test]
async fn go_database_sql_sharded() {
    compare("go", Target::Sharded).await;
}

/// The differ itself: equal documents give nothing, and a changed leaf is named by its path.
#[test]
fn differences_name_the_changed_leaf() {
    let a: Value = serde_json::json!({"step": "x", "rows": [[["doc", {"json": {"a": 1}}]]]});
    let b: Value = serde_json::json!({"step": "x", "rows": [[["doc", "{\"a\": 1}"]]]});
    let mut same = Vec::new();
    differences("", Some(&a), Some(&a), &mut same);
    assert!(same.is_empty(), "{same:?}");
    let mut d = Vec::new();
    differences("", Some(&a), Some(&b), &mut d);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].starts_with("  .rows[0][0][1]:"), "{d:?}");
}
