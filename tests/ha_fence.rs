//! The fence of a primary being replaced (`ha::server::Server::kill_clients`) against a real
//! server: every client connection but the fencer's own and replication's is ended, and
//! listing them makes no on-disk temporary table (MariaDB 10.11 crashed, signal 11 in
//! `create_tmp_table_for_schema`, on information_schema queries that build them under load:
//! see `reshard::facts`).

mod common;

use std::time::Duration;

use mysql_async::prelude::*;
use shardgate::ha::server::{Creds, Server};

#[tokio::test]
async fn the_fence_ends_client_connections_without_temporary_tables() {
    let sb = common::start_cluster(1);
    let primary = sb.primary();
    let addr = format!("127.0.0.1:{}", primary.port);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(common::connect(&common::app_url(primary.port, "app")).await);
    }
    let mut watcher = common::connect(&common::root_url(primary.port)).await;
    let creds = Creds {
        user: "root".into(),
        password: String::new(),
        connect_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(5),
    };
    let mut fencer = Server::connect(&addr, &creds).await.expect("fencer");
    let before = common::disk_tmp_tables(&mut watcher).await;
    let killed = fencer.kill_clients().await.expect("kill_clients");
    let mut watcher = common::connect(&common::root_url(primary.port)).await;
    let after = common::disk_tmp_tables(&mut watcher).await;
    assert_eq!(
        after - before,
        0,
        "on-disk temporary tables made by the fence"
    );
    // The three clients and the first watcher at least; never the fencer itself.
    assert!(killed >= 4, "killed {killed}");
    for mut c in clients {
        assert!(
            c.query_drop("SELECT 1").await.is_err(),
            "a client survived the fence"
        );
    }
    assert_eq!(
        fencer.read_only().await.ok(),
        Some(false),
        "the fencer's own connection lives"
    );
    // Replication's threads were left alone: the replica still follows.
    let replica = sb.replicas()[0].port;
    let mut r = common::connect(&common::root_url(replica)).await;
    let io: Option<(String, String)> = r
        .query_first("SHOW GLOBAL STATUS LIKE 'Slaves_running'")
        .await
        .expect("status");
    assert_eq!(io.map(|x| x.1), Some("1".to_string()));
}
