//! Passwords not in clear in the config (issue 18, point 4): a user given by its MariaDB
//! hash logs in through the proxy, which logs in to the servers with the password's SHA1
//! recovered from the client's own login; and passwords read from an environment variable or
//! a file.

mod common;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

/// `SELECT PASSWORD('app')`: the sandbox account's password is `app`.
const APP_HASH: &str = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3";

fn sandbox() -> &'static common::Sandbox {
    static SB: std::sync::OnceLock<common::Sandbox> = std::sync::OnceLock::new();
    SB.get_or_init(|| common::start_cluster(1))
}

fn user_with(source: &str) -> String {
    format!(
        "[[users]]\nname = \"{}\"\n{source}\ndefault_keyspace = \"app\"\n[routing]\nconsistency = \"eventual\"\n",
        common::USER
    )
}

#[tokio::test]
async fn a_user_given_by_its_hash_runs_statements_on_primary_and_replica() {
    let sb = sandbox();
    let (_proxy, port) = sb.proxy(&user_with(&format!("password_hash = \"{APP_HASH}\"")));
    let mut c = Conn::from_url(common::app_url(port, "app"))
        .await
        .expect("login with the password whose hash the proxy holds");
    c.query_drop("CREATE TABLE IF NOT EXISTS hashed (id INT PRIMARY KEY, v INT)")
        .await
        .expect("DDL on the primary");
    c.query_drop("REPLACE INTO hashed VALUES (1, 7)")
        .await
        .expect("a write on the primary");
    let primary = sb.primary().port;
    let written_on: Option<u16> = c
        .query_first("SELECT @@port FROM hashed WHERE id = 1 FOR UPDATE")
        .await
        .expect("a locking read runs on the primary");
    assert_eq!(written_on, Some(primary));
    // A plain read goes to the replica, over a connection the proxy opened with the
    // recovered SHA1 too.
    let replica = sb.replicas()[0].port;
    let mut seen = None;
    for _ in 0..50 {
        let r: Option<(u16, Option<i64>)> = c
            .query_first("SELECT @@port, (SELECT v FROM hashed WHERE id = 1)")
            .await
            .expect("a read");
        if let Some((p, Some(7))) = r {
            seen = Some(p);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        Some(replica),
        "the read ran on the replica and saw the write"
    );

    let wrong = format!(
        "mysql://{}:wrong@127.0.0.1:{port}/app?prefer_socket=false",
        common::USER
    );
    match Conn::from_url(wrong).await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!((e.code, e.state.as_str()), (1045, "28000"))
        }
        other => panic!("a wrong password must get ERR 1045: {other:?}"),
    }
}

#[tokio::test]
async fn passwords_come_from_an_environment_variable_or_a_file() {
    let sb = sandbox();
    let file = sb.dir.join("app-password");
    std::fs::write(&file, format!("{}\n", common::PASSWORD)).expect("password file");
    let (_by_file, port) = sb.proxy(&user_with(&format!(
        "password_file = \"{}\"",
        file.display()
    )));
    let mut c = Conn::from_url(common::app_url(port, "app"))
        .await
        .expect("login, password from a file");
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("SELECT 1");
    assert_eq!(one, Some(1));

    let config = sb.proxy_config(&user_with("password_env = \"SHARDGATE_TEST_APP_PASSWORD\""));
    let (child, port) = common::spawn_proxy_with_env(
        &config,
        &[("SHARDGATE_TEST_APP_PASSWORD", common::PASSWORD)],
    );
    let _by_env = common::ProxyProcess(child);
    let mut c = Conn::from_url(common::app_url(port, "app"))
        .await
        .expect("login, password from the environment");
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("SELECT 1");
    assert_eq!(one, Some(1));

    // A variable that is not set is a config error that names it.
    let out = std::process::Command::new(common::bin())
        .args(["check"])
        .arg(sb.proxy_config(&user_with("password_env = \"SHARDGATE_TEST_UNSET_VAR\"")))
        .output()
        .expect("shardgate check");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("SHARDGATE_TEST_UNSET_VAR"), "{text}");
}
