//! `shardgate reshard plan` against a real sandbox: 2 shards with a sharded table of 4,000
//! rows and a reference table. The plan writes nothing, estimates from the primaries'
//! statistics, and says what `reshard start` would refuse.

mod common;

use mysql_async::prelude::*;
use serde_json::Value;

/// Rows whose key moves, counted exactly by the library's ring, against the plan's estimate.
fn moving_rows(ids: &[u64], to: usize) -> usize {
    use shardgate::shardmap::ring::{key_hash, KeyValue, Ring};
    let (old, new) = (
        Ring::new(&["s0", "s1"], 256),
        Ring::new(&["s0", "s1", "s2"], 256),
    );
    ids.iter()
        .filter(|id| {
            let text = id.to_string();
            let h = key_hash(&KeyValue::from_number_text(text.as_bytes()));
            old.shard_for(h) != new.shard_for(h) && new.shard_for(h) == to
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_estimates_the_rows_that_move_and_names_what_start_would_refuse() {
    let sb = common::start_cluster_with(&[
        "--shards",
        "2",
        "--replicas",
        "0",
        "--sharded-table",
        "items:id",
        "--reference-table",
        "countries",
    ]);
    let proxy = sb.admin_proxy("");
    let mut c = common::connect(&common::app_url(proxy.port, "app")).await;
    c.query_drop("CREATE TABLE items (id BIGINT PRIMARY KEY, v INT)")
        .await
        .expect("create items");
    c.query_drop("CREATE TABLE countries (code CHAR(2) PRIMARY KEY)")
        .await
        .expect("create countries");
    c.query_drop("INSERT INTO countries VALUES ('fr'), ('de'), ('it')")
        .await
        .expect("countries");
    let ids: Vec<u64> = (1..=4000).collect();
    for chunk in ids.chunks(500) {
        let values: Vec<String> = chunk.iter().map(|i| format!("({i}, {i})")).collect();
        c.query_drop(format!(
            "INSERT INTO items (id, v) VALUES {}",
            values.join(",")
        ))
        .await
        .expect("insert");
    }
    // InnoDB's row estimates are refreshed by ANALYZE; the plan reads those estimates.
    for s in &sb.cluster.servers {
        let mut r = common::connect(&common::root_url(s.port)).await;
        r.query_drop("ANALYZE TABLE app.items, app.countries")
            .await
            .expect("analyze");
    }
    let before: Vec<u64> = {
        let mut out = Vec::new();
        for s in &sb.cluster.servers {
            let mut r = common::connect(&common::root_url(s.port)).await;
            let n: u64 = r
                .query_first("SELECT COUNT(*) FROM app.items")
                .await
                .expect("count")
                .expect("row");
            out.push(n);
        }
        out
    };

    let out = proxy.cli(&[
        "reshard",
        "plan",
        "--keyspace",
        "app",
        "--add",
        "s2=127.0.0.1:1,127.0.0.1:2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).expect("JSON plan");
    assert_eq!(plan["shards_after"], serde_json::json!(["s0", "s1", "s2"]));
    let moves = plan["moves"].as_array().expect("moves");
    assert_eq!(moves.len(), 2, "{plan}");
    assert!(moves.iter().all(|m| m["to"] == "s2"));
    assert!(
        plan["blockers"].as_array().expect("blockers").is_empty(),
        "{plan}"
    );
    let items = plan["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "items")
        .expect("items estimated");
    assert_eq!(items["kind"], "sharded");
    let estimated: u64 = items["rows"]
        .as_object()
        .expect("rows")
        .values()
        .map(|v| v.as_u64().expect("count"))
        .sum();
    let exact = moving_rows(&ids, 2) as u64;
    // Statistics and the share-based scaling are estimates: within a fifth of the exact count.
    let diff = estimated.abs_diff(exact);
    assert!(
        diff * 5 <= exact,
        "estimated {estimated} rows to move, exactly {exact} do"
    );
    let countries = plan["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["table"] == "countries")
        .expect("countries");
    assert_eq!(countries["kind"], "reference");
    assert_eq!(countries["rows"]["s0 -> s2"], 3);
    assert_eq!(
        plan["new_map"]["keyspace"]["app"]["shards"][2]["primary"],
        "127.0.0.1:1"
    );
    // Written nothing: the live map and the servers are as before.
    let v: Value = serde_json::from_slice(&proxy.get("/api/v1/topology").await.body).expect("json");
    assert_eq!(v["version"], 1);
    for (s, n) in sb.cluster.servers.iter().zip(&before) {
        let mut r = common::connect(&common::root_url(s.port)).await;
        let now: u64 = r
            .query_first("SELECT COUNT(*) FROM app.items")
            .await
            .expect("count")
            .expect("row");
        assert_eq!(now, *n);
    }

    // The text form for people, and a removal.
    let out = proxy.cli(&["reshard", "plan", "--keyspace", "app", "--remove", "s1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("s1 -> s0: "), "{text}");
    assert!(text.contains("100.0% of s1's"), "{text}");
    assert!(text.contains("nothing blocks `reshard start`"), "{text}");

    // What start would refuse: a table without a primary key.
    c.query_drop("CREATE TABLE logs (msg TEXT)")
        .await
        .expect("create logs");
    let out = proxy.cli(&["reshard", "plan", "--keyspace", "app", "--remove", "s1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("table logs has no primary key"), "{text}");

    // Refusals: a 400 with the reason, nothing else.
    for (args, why) in [
        (
            vec!["--keyspace", "nope", "--remove", "s1"],
            "no keyspace named 'nope'",
        ),
        (
            vec!["--keyspace", "app", "--remove", "s7"],
            "no shard named s7",
        ),
        (
            vec!["--keyspace", "app", "--add", "s0=127.0.0.1:9"],
            "already has a shard named s0",
        ),
        (vec!["--keyspace", "app", "--add", "s2"], "no '='"),
    ] {
        let mut all = vec!["reshard", "plan"];
        all.extend(args);
        let out = proxy.cli(&all);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why) && err.contains("400"), "{all:?}: {err}");
    }
}

/// `reshard start` and `plan` read each source primary's tables through information_schema.
/// They used a LEFT JOIN of TABLES and TABLE_CONSTRAINTS, for which MariaDB opens every
/// schema's tables and builds an on-disk Aria temporary table per information_schema table
/// (13 per read): the path where MariaDB 10.11.19 crashes (signal 11 in
/// create_tmp_table_for_schema, seen in CI under load: a source primary went down at `reshard
/// start`). Read 20 times, each on a new connection as `start` does, and the copy's table
/// shape 20 times (it read information_schema.COLUMNS, 1 on-disk table each; a source primary
/// died mid-reshard in CI): the answers are right and no on-disk temporary table is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_sources_tables_makes_no_temporary_tables_on_the_server() {
    use shardgate::ha::server::{Creds, Server};
    let sb = common::start_cluster_with(&["--shards", "1", "--replicas", "0"]);
    let port = sb.cluster.primary("s0").expect("s0").port;
    let mut root = common::connect(&common::root_url(port)).await;
    for ddl in [
        // A binary DEFAULT: SHOW CREATE TABLE prints its raw bytes, which are not UTF-8.
        "CREATE TABLE app.keyed (id INT PRIMARY KEY, v INT, b VARBINARY(4) DEFAULT X'00FF80')",
        "CREATE TABLE app.unkeyed (a INT)",
        "CREATE TABLE app.unique_only (a INT NOT NULL UNIQUE)",
    ] {
        root.query_drop(ddl).await.expect("ddl");
    }
    let before = common::disk_tmp_tables(&mut root).await;
    let creds = Creds {
        user: "root".into(),
        password: String::new(),
        connect_timeout: std::time::Duration::from_secs(5),
        query_timeout: std::time::Duration::from_secs(10),
    };
    let addr = format!("127.0.0.1:{port}");
    for round in 0..20 {
        let mut s = Server::connect(&addr, &creds)
            .await
            .unwrap_or_else(|e| panic!("round {round}: connect: {e}"));
        let f = shardgate::reshard::facts::read(&mut s, "app")
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        s.close().await;
        assert_eq!(
            f.no_primary_key,
            ["unique_only", "unkeyed"],
            "round {round}"
        );
        assert_eq!(
            f.rows.keys().collect::<Vec<_>>(),
            ["keyed", "unique_only", "unkeyed"]
        );
    }
    // The copy and the catch-up read a table's columns (and primary key) the same way.
    let mut c = common::connect(&common::root_url(port)).await;
    for round in 0..20 {
        let shape = shardgate::reshard::copy::TableShape::read(&mut c, &addr, "app", "keyed", "id")
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(shape.columns, ["id", "v", "b"], "round {round}");
        assert!(shape.key_numeric);
    }
    let made = common::disk_tmp_tables(&mut root).await - before;
    assert_eq!(made, 0, "on-disk temporary tables made by 40 reads");
}
