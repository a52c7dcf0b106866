//! Nothing of one session reaches the next session served by the same pooled server connection,
//! including what COM_RESET_CONNECTION keeps (MariaDB 10.11): the active role and the
//! multi-statement option of COM_SET_OPTION. The proxy here has one server connection
//! (`pool.max_connections = 1`, one worker), so every session reuses the previous one's; the
//! tests run one at a time for the same reason.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::Conn;

use common::raw::{Raw, Reply};
use common::Sandbox;
use shardgate::protocol::consts::cap;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Accounts the proxy knows besides `app`; the tests create them on the server as root.
const USERS: &[(&str, &str)] = &[("ro", "ro"), ("rd", "rd"), ("rg", "rg")];

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| common::start_cluster(0))
}

/// The proxy over the sandbox with a single server connection.
fn proxy_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let mut users = String::from(
            "[[users]]\nname = \"app\"\npassword = \"app\"\ndefault_keyspace = \"app\"\n",
        );
        for (u, p) in USERS {
            users += &format!(
                "[[users]]\nname = \"{u}\"\npassword = \"{p}\"\ndefault_keyspace = \"app\"\n"
            );
        }
        sandbox().keep_proxy(&format!(
            "[proxy]\nworkers = 1\n\n[pool]\nmax_connections = 1\nwait_timeout_ms = 5000\n\n{users}"
        ))
    })
}

fn url(port: u16, user: &str, password: &str) -> String {
    format!("mysql://{user}:{password}@127.0.0.1:{port}/app?prefer_socket=false")
}

async fn root() -> Conn {
    common::connect(&common::root_url(sandbox().primary().port)).await
}

/// Runs `sql` as root on the primary, statement by statement.
async fn as_root(sql: &[String]) {
    let mut r = root().await;
    for s in sql {
        r.query_drop(s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// Creates (again) account `user` with role `role` granted, a table `app.<table>` only that
/// role may read, and an INVOKER procedure `app.<table>_sr` that runs `SET ROLE <role>`.
async fn account_with_role(user: &str, password: &str, role: &str, table: &str) {
    as_root(&[
        format!("DROP USER IF EXISTS {user}@'%'"),
        format!("CREATE USER {user}@'%' IDENTIFIED BY '{password}'"),
        format!("CREATE ROLE {role}"),
        format!("CREATE TABLE app.{table} (a INT)"),
        format!("INSERT INTO app.{table} VALUES (1)"),
        format!("GRANT SELECT ON app.{table} TO {role}"),
        format!("GRANT {role} TO {user}@'%'"),
        format!("GRANT CREATE ROUTINE, EXECUTE ON app.* TO {user}@'%'"),
        format!("CREATE PROCEDURE app.{table}_sr() SQL SECURITY INVOKER SET ROLE {role}"),
    ])
    .await;
}

/// How session A sets its role.
#[derive(Clone, Copy, Debug)]
enum Via {
    Text,
    Prepared,
    ExecuteImmediate,
    VersionedComment,
    Procedure,
}

async fn set_role(c: &mut Conn, via: Via, role: &str, table: &str) {
    let r = match via {
        Via::Text => c.query_drop(format!("SET ROLE {role}")).await,
        Via::Prepared => c.exec_drop(format!("SET ROLE {role}"), ()).await,
        Via::ExecuteImmediate => {
            c.query_drop(format!("EXECUTE IMMEDIATE 'SET ROLE {role}'"))
                .await
        }
        Via::VersionedComment => c.query_drop(format!("/*!SET ROLE {role} */")).await,
        Via::Procedure => c.query_drop(format!("CALL app.{table}_sr()")).await,
    };
    r.unwrap_or_else(|e| panic!("{via:?}: SET ROLE {role}: {e}"));
}

/// The code of a statement's error, or `None` if it ran.
async fn error_code(c: &mut Conn, sql: &str) -> Option<u16> {
    match c.query_drop(sql).await {
        Ok(()) => None,
        Err(mysql_async::Error::Server(e)) => Some(e.code),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Session A of `ro` sets a role `via` some path and quits; session B of `ro`, on the same
/// server connection, must not have it: ERR 1142 reading the role's table, as directly.
async fn role_stays_with_its_session(via: Via) {
    let _one = SERIAL.lock().await;
    let port = proxy_port();
    let role = common::unique("r_secret");
    let table = common::unique("secret");
    account_with_role("ro", "ro", &role, &table).await;
    let read = format!("SELECT * FROM app.{table} FOR UPDATE");

    let mut direct = common::connect(&url(sandbox().primary().port, "ro", "ro")).await;
    assert_eq!(error_code(&mut direct, &read).await, Some(1142), "direct");
    drop(direct);

    let mut a = common::connect(&url(port, "ro", "ro")).await;
    let a_id: u32 = a
        .query_first("SELECT CONNECTION_ID()")
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    set_role(&mut a, via, &role, &table).await;
    assert_eq!(
        error_code(&mut a, &read).await,
        None,
        "{via:?}: A has its role"
    );
    a.disconnect().await.expect("A quits");
    // The connection goes back to the pool (after its reset) in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut b = common::connect(&url(port, "ro", "ro")).await;
    let b_id: u32 = b
        .query_first("SELECT CONNECTION_ID()")
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    let role_b: Option<Option<String>> = b.query_first("SELECT CURRENT_ROLE()").await.expect("B");
    assert_eq!(
        error_code(&mut b, &read).await,
        Some(1142),
        "{via:?}: session B of the same account reads the table of A's role \
         (B's CURRENT_ROLE() = {role_b:?}; proxy connection ids A {a_id}, B {b_id})"
    );
    assert_eq!(role_b, Some(None), "{via:?}: B has no role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_as_text_does_not_reach_the_next_session() {
    role_stays_with_its_session(Via::Text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_prepared_does_not_reach_the_next_session() {
    role_stays_with_its_session(Via::Prepared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_by_execute_immediate_does_not_reach_the_next_session() {
    role_stays_with_its_session(Via::ExecuteImmediate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_in_a_versioned_comment_does_not_reach_the_next_session() {
    role_stays_with_its_session(Via::VersionedComment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_in_a_procedure_does_not_reach_the_next_session() {
    role_stays_with_its_session(Via::Procedure).await;
}

/// With a default role (`SET DEFAULT ROLE`), a fresh login has that role: a session that
/// changed it (to another role, or NONE) leaves the next one the default role, not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_session_gets_the_default_role_back() {
    let _one = SERIAL.lock().await;
    let port = proxy_port();
    let role = common::unique("r_other");
    let default_role = common::unique("r_default");
    let table = common::unique("other");
    let pub_table = common::unique("pub");
    account_with_role("rd", "rd", &role, &table).await;
    as_root(&[
        format!("CREATE ROLE {default_role}"),
        format!("CREATE TABLE app.{pub_table} (a INT)"),
        format!("GRANT SELECT ON app.{pub_table} TO {default_role}"),
        format!("GRANT {default_role} TO rd@'%'"),
        format!("SET DEFAULT ROLE {default_role} FOR rd@'%'"),
    ])
    .await;
    let mut direct = common::connect(&url(sandbox().primary().port, "rd", "rd")).await;
    let fresh: Option<Option<String>> = direct
        .query_first("SELECT CURRENT_ROLE()")
        .await
        .expect("direct");
    assert_eq!(
        fresh,
        Some(Some(default_role.clone())),
        "a direct login has the default role"
    );
    drop(direct);

    for change in [format!("SET ROLE {role}"), "SET ROLE NONE".to_string()] {
        let mut a = common::connect(&url(port, "rd", "rd")).await;
        a.query_drop(&change).await.expect("A changes its role");
        a.disconnect().await.expect("A quits");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut b = common::connect(&url(port, "rd", "rd")).await;
        let got: Option<Option<String>> = b.query_first("SELECT CURRENT_ROLE()").await.expect("B");
        assert_eq!(
            got,
            Some(Some(default_role.clone())),
            "after A's `{change}`"
        );
        assert_eq!(
            error_code(&mut b, &format!("SELECT * FROM app.{table} FOR UPDATE")).await,
            Some(1142),
            "after A's `{change}`"
        );
        assert_eq!(
            error_code(&mut b, &format!("SELECT * FROM app.{pub_table} FOR UPDATE")).await,
            None,
            "after A's `{change}`: B reads what its default role may"
        );
    }
}

/// A role granted while the account's pooled connection is open (it had none when the
/// connection opened) is not left on that connection either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_granted_later_does_not_reach_the_next_session() {
    let _one = SERIAL.lock().await;
    let port = proxy_port();
    let role = common::unique("r_late");
    let table = common::unique("late");
    as_root(&[
        "DROP USER IF EXISTS rg@'%'".to_string(),
        "CREATE USER rg@'%' IDENTIFIED BY 'rg'".to_string(),
        "GRANT EXECUTE ON app.* TO rg@'%'".to_string(),
    ])
    .await;
    let mut first = common::connect(&url(port, "rg", "rg")).await;
    first
        .query_drop("SELECT 1")
        .await
        .expect("the connection opens without roles");
    first.disconnect().await.expect("quit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    as_root(&[
        format!("CREATE ROLE {role}"),
        format!("CREATE TABLE app.{table} (a INT)"),
        format!("GRANT SELECT ON app.{table} TO {role}"),
        format!("GRANT {role} TO rg@'%'"),
    ])
    .await;
    let mut a = common::connect(&url(port, "rg", "rg")).await;
    a.query_drop(format!("SET ROLE {role}"))
        .await
        .expect("A sets the new role");
    a.disconnect().await.expect("A quits");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = common::connect(&url(port, "rg", "rg")).await;
    let got: Option<Option<String>> = b.query_first("SELECT CURRENT_ROLE()").await.expect("B");
    assert_eq!(got, Some(None), "B has no role");
    let read = format!("SELECT * FROM app.{table} FOR UPDATE");
    assert_eq!(error_code(&mut b, &read).await, Some(1142));
}

/// Whether stacked statements ran (two OKs) or were refused as a syntax error (1064).
fn stacked_ran(replies: &[Reply], who: &str) -> bool {
    match replies {
        [Reply::Ok(_), Reply::Ok(_)] => true,
        [Reply::Err(1064, _)] => false,
        other => panic!("{who}: unexpected reply to stacked statements: {other:?}"),
    }
}

/// COM_SET_OPTION changes the option of the server connection at hand: the next session on
/// that connection must still have the option it logged in with, in both directions; the
/// session itself keeps what it set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_option_stays_with_its_session() {
    let _one = SERIAL.lock().await;
    let port = proxy_port();
    let primary = sandbox().primary().port;
    let single = cap::MULTI_RESULTS;
    let multi = cap::MULTI_RESULTS | cap::MULTI_STATEMENTS;
    let stacked = "DO 1; DO 2";

    let (mut d, _) = Raw::login(primary, "app", "app", single, 0).await;
    assert!(
        !stacked_ran(&d.query(stacked).await, "direct"),
        "direct: refused without the option"
    );
    d.quit().await;

    // Negotiated at login, per session.
    for (caps, want) in [(multi, true), (single, false), (multi, true)] {
        let (mut c, _) = Raw::login(port, "app", "app", caps, 0).await;
        assert_eq!(
            stacked_ran(&c.query(stacked).await, "login"),
            want,
            "caps {caps:#x}"
        );
        c.quit().await;
    }

    // On, then the next session logged in without it.
    let (mut a, _) = Raw::login(port, "app", "app", single, 0).await;
    assert_eq!(
        a.set_multi_statements(true).await,
        vec![Reply::Eof],
        "A turns it on"
    );
    assert!(
        stacked_ran(&a.query(stacked).await, "A"),
        "A may now stack statements"
    );
    a.quit().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut b, _) = Raw::login(port, "app", "app", single, 0).await;
    assert!(
        !stacked_ran(&b.query(stacked).await, "B"),
        "B logged in without multi-statements, yet runs stacked statements after A's COM_SET_OPTION"
    );
    b.quit().await;

    // Off, then the next session logged in with it.
    let (mut c, _) = Raw::login(port, "app", "app", multi, 0).await;
    assert_eq!(
        c.set_multi_statements(false).await,
        vec![Reply::Eof],
        "C turns it off"
    );
    assert!(
        !stacked_ran(&c.query(stacked).await, "C"),
        "C turned it off"
    );
    c.quit().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut d, _) = Raw::login(port, "app", "app", multi, 0).await;
    assert!(
        stacked_ran(&d.query(stacked).await, "D"),
        "D logged in with multi-statements, yet they are refused after C's COM_SET_OPTION"
    );
    d.quit().await;
}

/// A procedure's user variables (OUT parameters) and temporary tables stay with the session
/// that called it, and go with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_procedure_leaves_stays_with_its_session() {
    let _one = SERIAL.lock().await;
    let port = proxy_port();
    let proc = common::unique("leaves");
    let tmp = common::unique("ptmp");
    as_root(&[format!(
        "CREATE PROCEDURE app.{proc}(OUT o INT) BEGIN SET o = 7; SET @x = 42; \
         CREATE TEMPORARY TABLE app.{tmp} (a INT); END"
    )])
    .await;
    let mut a = common::connect(&url(port, "app", "app")).await;
    a.query_drop(format!("CALL app.{proc}(@out)"))
        .await
        .expect("A calls");
    let seen: Option<(Option<i64>, Option<i64>)> =
        a.query_first("SELECT @out, @x").await.expect("A reads");
    assert_eq!(
        seen,
        Some((Some(7), Some(42))),
        "A keeps what its procedure set"
    );
    assert_eq!(
        error_code(&mut a, &format!("SELECT * FROM app.{tmp}")).await,
        None,
        "A's table"
    );
    a.disconnect().await.expect("A quits");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut b = common::connect(&url(port, "app", "app")).await;
    let seen: Option<(Option<i64>, Option<i64>)> =
        b.query_first("SELECT @out, @x").await.expect("B reads");
    assert_eq!(seen, Some((None, None)), "B sees none of A's variables");
    assert_eq!(
        error_code(&mut b, &format!("SELECT * FROM app.{tmp}")).await,
        Some(1146),
        "A's temporary table"
    );
}

/// What COM_RESET_CONNECTION clears must be gone for the next session too: a named lock, a
/// temporary table, a transaction's isolation level, a SQL prepared statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_a_reset_clears_is_gone_for_the_next_session() {
    let _one = SERIAL.lock().await;
    let port = proxy_port();
    let lock = common::unique("lock");
    let tmp = common::unique("tmp");
    let mut a = common::connect(&url(port, "app", "app")).await;
    for sql in [
        format!("SELECT GET_LOCK('{lock}', 0)"),
        format!("CREATE TEMPORARY TABLE {tmp} (a INT)"),
        "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE".to_string(),
        "PREPARE leak FROM 'SELECT 1'".to_string(),
    ] {
        a.query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("A: {sql}: {e}"));
    }
    a.disconnect().await.expect("A quits");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut r = root().await;
    let holder: Option<Option<u64>> = r
        .query_first(format!("SELECT IS_USED_LOCK('{lock}')"))
        .await
        .expect("lock");
    assert_eq!(holder, Some(None), "A's named lock is released");
    let mut b = common::connect(&url(port, "app", "app")).await;
    assert_eq!(
        error_code(&mut b, &format!("SELECT * FROM {tmp}")).await,
        Some(1146),
        "temporary table"
    );
    assert_eq!(
        error_code(&mut b, "EXECUTE leak").await,
        Some(1243),
        "prepared statement"
    );
    let iso: Option<String> = b.query_first("SELECT @@tx_isolation").await.expect("B");
    assert_eq!(iso.as_deref(), Some("REPEATABLE-READ"), "isolation level");
}
