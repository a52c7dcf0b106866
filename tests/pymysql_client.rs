//! PyMySQL, a pure-Python client, through the proxy: each test runs one check of
//! `tests/python/pymysql_check.py` against the shared sandbox's proxy (and, for comparisons,
//! its primary directly) and fails with the script's whole output.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pymysql_check.py");
/// A check that takes longer is hung (the slowest, the 20 MiB blob, takes about a second).
const CHECK_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `python3 pymysql_check.py ARGS` to completion, killing it past `CHECK_DEADLINE`.
fn run_script(args: &[&str]) -> (Output, bool) {
    let mut cmd = Command::new("python3");
    // -u, unbuffered: a killed script still shows how far it got.
    cmd.arg("-u").arg(SCRIPT).args(args);
    common::run_child(&mut cmd, Vec::new(), CHECK_DEADLINE)
}

/// Runs one named check through the proxy and asserts it passed.
fn run_check(name: &str) {
    let env = common::env();
    let (port, direct) = (env.proxy_port.to_string(), env.primary_port().to_string());
    let args = [
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        common::USER,
        "--password",
        common::PASSWORD,
        "--db",
        "app",
        "--direct-port",
        &direct,
        "--check",
        name,
    ];
    let (out, timed_out) = run_script(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "pymysql check `{name}` (proxy log: {}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
        env.dir.join("test-proxy.log").display()
    );
    println!("{report}");
    assert!(!timed_out, "killed after {CHECK_DEADLINE:?}: {report}");
    assert!(out.status.success(), "exit {}: {report}", out.status);
    assert_eq!(
        stdout.lines().last(),
        Some("pymysql: 1 checks passed, 0 failed"),
        "{report}"
    );
    assert!(stdout.contains(&format!("ok   {name}\n")), "{report}");
}

/// One `#[test]` per script check, plus the list of names for the completeness test.
macro_rules! pymysql_checks {
    ($($name:ident),* $(,)?) => {
        const CHECKS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                run_check(stringify!($name));
            }
        )*
    };
}

pymysql_checks!(
    ok_packets_match_direct,
    crud_with_parameters,
    column_types_round_trip,
    executemany_and_lastrowid,
    big_blob_with_parameters,
    warning_count,
    syntax_error_then_connection_works,
    duplicate_key_error,
    stored_procedure_two_result_sets,
    multi_statements,
    autocommit_off_rollback,
    sscursor_streams_100k_rows,
    ping_and_select_db,
    no_default_database,
    com_field_list_matches_direct,
    kill_query_by_thread_id,
    unicode_emoji_round_trip,
    wrong_password_is_refused,
);

/// Every check the script defines runs as a test here, so none is silently skipped.
#[test]
fn every_script_check_has_a_test() {
    assert!(Path::new(SCRIPT).exists(), "{SCRIPT} is missing");
    let (out, timed_out) = run_script(&["--list"]);
    assert!(!timed_out && out.status.success(), "--list failed: {out:?}");
    let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let mut ours: Vec<String> = CHECKS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    ours.sort();
    assert_eq!(listed, ours, "script checks vs. Rust tests");
}
