//! Read-your-writes with many writers: a replica position one session waited for spares every
//! session whose last write is older its own `MASTER_GTID_WAIT`. Counted on the replicas
//! (`Master_gtid_wait_count`, global), so this binary has its own sandbox (one primary, two
//! replicas) and one test.

mod common;

use mysql_async::prelude::*;
use mysql_async::Conn;

const ROUTING: &str = r#"
[proxy]
workers = 2

[routing]
read_write_split = true
consistency = "read_your_writes"
gtid_wait_timeout_ms = 2000
max_replica_lag = 10.0

[monitor]
user = "root"
password = ""
interval_ms = 500
connect_timeout_ms = 1000
"#;

/// `MASTER_GTID_WAIT` calls the replicas have answered so far, summed.
async fn waits(sb: &common::Sandbox) -> u64 {
    let mut total = 0;
    for r in sb.replicas() {
        let mut c = common::connect(&common::root_url(r.port)).await;
        let row: Option<(String, u64)> = c
            .query_first("SHOW GLOBAL STATUS LIKE 'Master_gtid_wait_count'")
            .await
            .expect("status");
        total += row.expect("Master_gtid_wait_count").1;
        let _ = c.disconnect().await;
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_position_one_session_waited_for_serves_older_writes_of_others() {
    let sb = common::start_cluster(2);
    let (_proxy, port) = sb.proxy(ROUTING);
    let t = common::unique("t_ryw_pos");
    let mut root = common::connect(&common::root_url(sb.primary().port)).await;
    root.query_drop(format!("CREATE TABLE app.{t} (id INT PRIMARY KEY, v INT)"))
        .await
        .expect("create");
    common::wait_replicated(&sb).await;
    let sessions = 10;
    let mut conns: Vec<Conn> = Vec::new();
    for i in 0..sessions {
        let mut c = common::connect(&common::app_url(port, "app")).await;
        c.query_drop(format!("INSERT INTO {t} VALUES ({i}, {})", i * 3))
            .await
            .expect("insert");
        conns.push(c);
    }
    let before = waits(&sb).await;
    // The last writer first: once a replica has applied its write, it has applied every
    // earlier one, and the others need not ask.
    let primary_id = sb.primary().server_id;
    for (i, c) in conns.iter_mut().enumerate().rev() {
        let row: Option<(i64, u32)> = c
            .query_first(format!("SELECT v, @@server_id FROM {t} WHERE id = {i}"))
            .await
            .expect("read");
        let (v, server) = row.unwrap_or_else(|| panic!("session {i} did not read its write"));
        assert_eq!(v, i as i64 * 3, "session {i} read a wrong value");
        // Each replica waits up to 2 s: every read must have been served there.
        assert_ne!(server, primary_id, "session {i} read on the primary");
    }
    let asked = waits(&sb).await - before;
    println!("MASTER_GTID_WAIT calls for {sessions} sessions reading after their writes: {asked}");
    // One per replica at most, for the newest write each was asked about first.
    assert!(
        asked <= 2,
        "{asked} waits for {sessions} sessions: each session waited on its own"
    );
    for c in conns {
        let _ = c.disconnect().await;
    }
}
