//! The `shardgate` command line as a user runs it: `check` and `demo`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn check_accepts_the_examples_and_names_file_and_key_of_errors() {
    let root = env!("CARGO_MANIFEST_DIR");
    for f in [
        "examples/shardgate.toml",
        "shard-maps/unsharded.toml",
        "shard-maps/consistent-hash.toml",
    ] {
        let out = Command::new(common::bin())
            .args(["check", &format!("{root}/{f}")])
            .output()
            .expect("run check");
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[users]]\nname = \"a\"\npassword = \"b\"\n[keyspace.app]\nsharding = \"unsharded\"\n\
         [[keyspace.app.shards]]\nname = \"s0\"\nprimary = \"nohost\"\n",
    )
    .expect("write");
    let out = Command::new(common::bin())
        .arg("check")
        .arg(&bad)
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("keyspace.app.shards[0].primary"), "{err}");
    assert!(err.contains("host:port"), "{err}");
}

#[test]
fn demo_serves_clients_and_tears_everything_down_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(common::bin())
        .args(["demo", "--shards", "1", "--replicas", "1", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut connect = None;
    let mut seen = Vec::new();
    while connect.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(cmd) = line.trim().strip_prefix("connect: ") {
            connect = Some(cmd.to_string());
        }
        seen.push(line);
    }
    let connect = connect.unwrap_or_else(|| panic!("no connect line in: {seen:?}"));
    assert!(
        seen.iter()
            .any(|l| l.contains("DSN:     mysql://app:app@127.0.0.1:")),
        "{seen:?}"
    );
    let cluster = shardgate::sandbox::Cluster::load(dir.path()).expect("cluster.json");
    assert_eq!(cluster.servers.len(), 2);

    // The printed command line works as printed.
    let mut args: Vec<&str> = connect.split_whitespace().collect();
    assert_eq!(args.remove(0), "mariadb");
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .args(&args)
        .args(["-N", "-e", "SELECT 40 + 2"])
        .output()
        .expect("run mariadb");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");

    // Ctrl-C: the proxy and both servers go away.
    // SAFETY: sending SIGINT to the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().expect("demo exits");
    assert!(status.success(), "{status}");
    for s in &cluster.servers {
        assert!(!s.is_running(), "{} still running", s.name());
    }
}

/// `shardgate explain` plans against a config without touching any server.
#[test]
fn explain_names_the_shards_and_how_results_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("sharded.toml");
    std::fs::write(
        &cfg,
        "[[users]]\nname = \"app\"\npassword = \"app\"\n\
         [keyspace.app]\nsharding = \"consistent_hash\"\n\
         [keyspace.app.tables.users]\nshard_key = \"id\"\n\
         [keyspace.app.tables.countries]\nreference = true\n\
         [[keyspace.app.shards]]\nname = \"s0\"\nprimary = \"127.0.0.1:1\"\nreplicas = [\"127.0.0.1:2\"]\n\
         [[keyspace.app.shards]]\nname = \"s1\"\nprimary = \"127.0.0.1:3\"\n",
    )
    .expect("write");
    let explain = |sql: &str| {
        let out = Command::new(common::bin())
            .args(["explain", "--config"])
            .arg(&cfg)
            .arg(sql)
            .output()
            .expect("run explain");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // 42 and '42' are one key: the same shard either way (s1 on this two-shard ring).
    let by_int = explain("SELECT * FROM users WHERE id = 42");
    let by_text = explain("SELECT * FROM users WHERE id = '42'");
    assert!(
        by_int.contains("runs on: one shard, s1 (primary 127.0.0.1:3)"),
        "{by_int}"
    );
    assert_eq!(
        by_int.lines().skip(1).collect::<Vec<_>>(),
        by_text.lines().skip(1).collect::<Vec<_>>()
    );
    let ddl = explain("CREATE TABLE users (id INT PRIMARY KEY)");
    assert!(ddl.contains("every shard's primary"), "{ddl}");
    assert!(
        ddl.contains("s0 (primary 127.0.0.1:1, replicas 127.0.0.1:2)"),
        "{ddl}"
    );
    let scatter = explain("SELECT * FROM users WHERE name = 'x'");
    assert!(scatter.contains("these shards at once"), "{scatter}");
    let merged = explain("SELECT id FROM users ORDER BY id DESC LIMIT 10, 5");
    assert!(
        merged.contains("each running: SELECT id FROM users ORDER BY id DESC LIMIT 15"),
        "{merged}"
    );
    assert!(merged.contains("rows 11..15 kept"), "{merged}");
    let grouped = explain("SELECT name, COUNT(*) AS c FROM users GROUP BY name");
    assert!(grouped.contains("folded"), "{grouped}");
    let distinct = explain("SELECT COUNT(DISTINCT name) FROM users");
    assert!(
        distinct
            .contains("each running: SELECT COUNT(DISTINCT name), name FROM users GROUP BY name")
            && distinct.contains("a value found on several shards counts once"),
        "{distinct}"
    );
    let refused = explain("SELECT COUNT(DISTINCT name), COUNT(DISTINCT id) FROM users");
    assert!(refused.contains("refused: ERR 1105"), "{refused}");
    let prepared = explain("UPDATE users SET name = ? WHERE id = ?");
    assert!(prepared.contains("parameter 2"), "{prepared}");
}
