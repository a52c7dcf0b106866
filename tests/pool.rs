//! Backend pools: bounded per server (a client that needs a connection beyond the bound waits,
//! then gets ERR 1040), and a connection given back by a client is reset before the next
//! client gets it.

mod common;

use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

/// A second proxy over the shared sandbox with a pool of `max` connections per server.
fn small_pool_proxy(max: usize) -> (common::ProxyProcess, u16) {
    let env = common::env();
    let base = std::fs::read_to_string(env.dir.join("test-proxy.toml")).expect("config");
    let port = shardgate::sandbox::free_port().expect("port");
    let admin = shardgate::sandbox::free_port().expect("port");
    let cfg: String = base
        .lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{port}\"")
            } else if l.starts_with("admin_listen = ") {
                format!("admin_listen = \"127.0.0.1:{admin}\"")
            } else if l.starts_with("max_connections = ") {
                format!("max_connections = {max}")
            } else if l.starts_with("wait_timeout_ms = ") {
                "wait_timeout_ms = 700".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = env.dir.join(format!("pool-{port}.toml"));
    std::fs::write(&path, cfg).expect("write config");
    let (child, port) = common::spawn_proxy(&path);
    (common::ProxyProcess(child), port)
}

async fn connect(port: u16) -> mysql_async::Result<Conn> {
    let url = format!(
        "mysql://{}:{}@127.0.0.1:{port}/app",
        common::USER,
        common::PASSWORD
    );
    Conn::new(Opts::from_url(&url).expect("url")).await
}

#[tokio::test]
async fn a_full_pool_makes_clients_wait_then_refuses_with_1040() {
    let (_proxy, port) = small_pool_proxy(2);
    let mut a = connect(port).await.expect("a");
    let mut b = connect(port).await.expect("b");
    // Clients hold a server connection only while they need one: an open transaction does.
    a.query_drop("BEGIN").await.expect("a holds a connection");
    b.query_drop("BEGIN").await.expect("b holds a connection");
    let mut c = connect(port)
        .await
        .expect("an idle client needs no server connection");
    let e = c.query_drop("BEGIN").await.expect_err("pool is full");
    match e {
        mysql_async::Error::Server(s) => {
            assert_eq!((s.code, s.state.as_str()), (1040, "08004"));
            assert!(s.message.contains("pool for 127.0.0.1:"), "{}", s.message);
        }
        other => panic!("expected ERR 1040, got {other}"),
    }
    // A waiting client gets the connection a leaving transaction gives back.
    let waiter = tokio::spawn(async move {
        c.query_drop("BEGIN").await.expect("served after waiting");
        let seven = c.query_first::<i64, _>("SELECT 7").await.expect("query");
        c.query_drop("COMMIT").await.expect("commit");
        seven
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.query_drop("COMMIT").await.expect("a commits");
    assert_eq!(waiter.await.expect("task"), Some(7));
    b.query_drop("DO 1").await.expect("b unaffected");
}

#[tokio::test]
async fn a_returned_connection_is_reset_before_reuse() {
    let (_proxy, port) = small_pool_proxy(1);
    let t = common::unique("reset");
    let mut setup = Conn::new(Opts::from_url(&common::env().direct_url("app")).expect("url"))
        .await
        .expect("direct");
    setup
        .query_drop(format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
        .await
        .expect("create");

    let mut a = connect(port).await.expect("a");
    let id_a: Option<u64> = a.query_first("SELECT CONNECTION_ID()").await.expect("id");
    a.query_drop("SET @leftover = 1").await.expect("user var");
    a.query_drop("CREATE TEMPORARY TABLE tmp_leftover (x INT)")
        .await
        .expect("temp table");
    a.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .expect("session var");
    a.query_drop("START TRANSACTION").await.expect("begin");
    a.query_drop(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .expect("insert");
    drop(a); // gone mid-transaction, without COM_QUIT

    let mut b = connect(port).await.expect("b");
    let id_b: Option<u64> = b.query_first("SELECT CONNECTION_ID()").await.expect("id");
    assert_eq!(
        id_a, id_b,
        "the pool of one reused the same server connection"
    );
    let leftover: Option<Option<i64>> = b.query_first("SELECT @leftover").await.expect("q");
    assert_eq!(leftover, Some(None));
    let temp = b.query_drop("SELECT * FROM tmp_leftover").await;
    assert!(temp.is_err(), "temporary table survived the reset");
    let mode: Option<String> = b.query_first("SELECT @@SESSION.sql_mode").await.expect("q");
    assert!(!mode.unwrap_or_default().contains("ANSI_QUOTES"));
    let rows: Option<i64> = b
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .expect("count");
    assert_eq!(rows, Some(0), "the abandoned transaction was rolled back");
}
