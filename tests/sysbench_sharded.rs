//! sysbench `oltp_read_write`, its own `prepare` included, through the proxy into a 2-shard
//! keyspace (`sbtest*` sharded on `id`, ids from sequences): DDL reaches both shards, the
//! prepare's bulk inserts take ids from the sequences and split by shard, and the run's
//! transactions (prepared point reads and writes by id, range reads merged from both shards,
//! writes on either shard: `multi_shard_transactions = "best_effort"`) finish with zero errors,
//! each one a transaction on both shards.

mod common;

use std::process::Command;
use std::time::Duration;

use mysql_async::prelude::*;

const TABLES: usize = 2;
const TABLE_SIZE: usize = 5000;

fn sysbench(port: u16, command: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new("sysbench");
    cmd.arg("oltp_read_write")
        .arg("--db-driver=mysql")
        .arg("--mysql-host=127.0.0.1")
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-user={}", common::USER))
        .arg(format!("--mysql-password={}", common::PASSWORD))
        .arg("--mysql-db=app")
        .arg(format!("--tables={TABLES}"))
        .arg(format!("--table-size={TABLE_SIZE}"))
        .arg("--rand-type=uniform")
        .args(extra)
        .arg(command);
    let (out, killed) = common::run_child(&mut cmd, Vec::new(), Duration::from_secs(300));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!killed, "sysbench {command} did not finish:\n{text}");
    assert!(out.status.success(), "sysbench {command} failed:\n{text}");
    text
}

/// `Com_begin` of each shard's primary (s0, s1).
async fn begins_on_primaries(sb: &common::Sandbox) -> Vec<u64> {
    let mut out = Vec::new();
    for shard in ["s0", "s1"] {
        let p = sb.cluster.primary(shard).expect("primary").port;
        let mut direct = common::connect(&common::root_url(p)).await;
        let row: Option<(String, u64)> = direct
            .query_first("SHOW GLOBAL STATUS LIKE 'Com_begin'")
            .await
            .expect("Com_begin");
        out.push(row.map_or(0, |(_, n)| n));
    }
    out
}

/// The number after `label` in sysbench's report (`ignored errors:  0  (0.00 per sec.)`).
fn figure(report: &str, label: &str) -> Option<u64> {
    let line = report.lines().find(|l| l.trim_start().starts_with(label))?;
    line.trim_start()
        .strip_prefix(label)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn sysbench_oltp_read_write_prepares_and_runs_on_two_shards_with_zero_errors() {
    let mut args = vec!["--shards", "2", "--replicas", "1"];
    let tables: Vec<String> = (1..=TABLES).map(|i| format!("sbtest{i}:id")).collect();
    for t in &tables {
        args.push("--sharded-table");
        args.push(t);
    }
    let sb = common::start_cluster_with(&args);
    let s0 = sb.cluster.primary("s0").expect("primary").port;
    let mut root = common::connect(&common::root_url(s0)).await;
    root.query_drop("CREATE DATABASE IF NOT EXISTS meta")
        .await
        .expect("meta");
    let mut extra = format!(
        "[monitor]\ninterval_ms = 200\n\
         [keyspace.app]\nsequence_keyspace = \"meta\"\nmulti_shard_transactions = \"best_effort\"\n\
         [keyspace.meta]\nsharding = \"unsharded\"\n\
         [[keyspace.meta.shards]]\nname = \"m0\"\nprimary = \"127.0.0.1:{s0}\"\n"
    );
    for i in 1..=TABLES {
        root.query_drop(format!(
            "CREATE TABLE meta.sbtest{i}_seq (id INT PRIMARY KEY, next_id BIGINT NOT NULL)"
        ))
        .await
        .expect("sequence table");
        root.query_drop(format!("INSERT INTO meta.sbtest{i}_seq VALUES (0, 1)"))
            .await
            .expect("sequence row");
        extra.push_str(&format!(
            "[keyspace.app.tables.sbtest{i}]\nsequence = \"sbtest{i}_seq\"\n"
        ));
    }
    let (_proxy, port) = sb.proxy(&extra);

    let prepared = sysbench(port, "prepare", &[]);
    println!("{prepared}");
    // Every row once, spread over both shards, ids 1..=TABLE_SIZE from the sequence.
    let mut c = common::connect(&common::app_url(port, "app")).await;
    for i in 1..=TABLES {
        let (n, lo, hi): (u64, u64, u64) = c
            .query_first(format!(
                "/* shardgate:primary */ SELECT COUNT(*), MIN(id), MAX(id) FROM sbtest{i}"
            ))
            .await
            .expect("count")
            .expect("a row");
        assert_eq!((n, lo, hi), (TABLE_SIZE as u64, 1, TABLE_SIZE as u64));
        for shard in ["s0", "s1"] {
            let p = sb.cluster.primary(shard).expect("primary").port;
            let mut direct = common::connect(&common::root_url(p)).await;
            let here: Option<u64> = direct
                .query_first(format!("SELECT COUNT(*) FROM app.sbtest{i}"))
                .await
                .expect("direct count");
            let here = here.unwrap_or(0);
            assert!(
                here > TABLE_SIZE as u64 / 4,
                "sbtest{i} on {shard}: {here} rows"
            );
            println!("sbtest{i} on {shard}: {here} rows");
        }
    }

    let begins_before = begins_on_primaries(&sb).await;
    let report = sysbench(
        port,
        "run",
        &["--threads=4", "--time=20", "--report-interval=0"],
    );
    println!("{report}");
    let transactions = figure(&report, "transactions:").expect("transactions in the report");
    let errors = figure(&report, "ignored errors:").expect("errors in the report");
    assert!(
        transactions > 50,
        "too few transactions ran: {transactions}"
    );
    assert_eq!(errors, 0, "sysbench saw errors:\n{report}");
    // Its transactions really were transactions on both shards (its point reads and range
    // reads reach both): each primary saw about one BEGIN per transaction. (Prepared BEGINs
    // once opened the transaction on one shard only; the other ran in autocommit.)
    let begins_after = begins_on_primaries(&sb).await;
    for (shard, (before, after)) in ["s0", "s1"]
        .iter()
        .zip(begins_before.iter().zip(&begins_after))
    {
        assert!(
            after - before > transactions / 2,
            "{shard}'s primary saw {} BEGINs for {transactions} transactions",
            after - before
        );
    }
    // The run's deletes and re-inserts keep every id once.
    for i in 1..=TABLES {
        let n: Option<u64> = c
            .query_first(format!(
                "/* shardgate:primary */ SELECT COUNT(*) FROM sbtest{i}"
            ))
            .await
            .expect("count after");
        assert_eq!(n, Some(TABLE_SIZE as u64), "sbtest{i} after the run");
    }
}
