//! Limits on what clients may hold (issue 18, point 6): connections still logging in are
//! bounded apart from logged-in clients, a user's own connection limit, a command packet begun
//! must arrive in time, the bytes of commands still arriving are bounded across all clients,
//! and logins from an address that keeps failing are answered late. Each test shows the
//! refusal (the MySQL error a client gets) and that other clients are served meanwhile.

mod common;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use common::raw::Raw;

const CAPS: u32 = shardgate::protocol::consts::cap::MULTI_RESULTS;

fn sandbox() -> &'static common::Sandbox {
    static SB: std::sync::OnceLock<common::Sandbox> = std::sync::OnceLock::new();
    SB.get_or_init(|| common::start_cluster(0))
}

async fn connect(port: u16) -> Result<Conn, mysql_async::Error> {
    Conn::from_url(common::app_url(port, "app")).await
}

/// Connects once the proxy has seen earlier clients leave (it learns of a close when it next
/// reads their socket): tries for up to 5 s.
async fn connect_once_freed(port: u16) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connect(port).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no login within 5 s of the others leaving: {e}"),
        }
    }
}

async fn assert_serves(c: &mut Conn) {
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("SELECT 1");
    assert_eq!(one, Some(1));
}

/// The server error a login or statement failed with: (code, SQLSTATE).
fn server_error(e: &mysql_async::Error) -> (u16, String) {
    match e {
        mysql_async::Error::Server(s) => (s.code, s.state.clone()),
        other => panic!("expected a server error, got {other}"),
    }
}

/// A TCP connection that read the greeting and says nothing more (a login in progress).
async fn stalled_login(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.expect("greeting header");
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.expect("greeting");
    assert_ne!(body.first(), Some(&0xFF), "a greeting, not an error");
    s
}

/// The first packet on a fresh connection: (sequence id, ERR code, SQLSTATE) if an ERR.
async fn first_packet_error(port: u16) -> Option<(u8, u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    (body.first() == Some(&0xFF) && body.len() >= 9).then(|| {
        (
            head[3],
            u16::from_le_bytes([body[1], body[2]]),
            String::from_utf8_lossy(&body[4..9]).into_owned(),
        )
    })
}

#[tokio::test]
async fn logins_in_progress_are_bounded_apart_from_logged_in_clients() {
    let (_proxy, port) = sandbox()
        .proxy("[proxy]\nmax_unauthenticated_connections = 3\nmax_client_connections = 2\n");
    let mut a = connect(port).await.expect("first client");
    let stalled = vec![stalled_login(port).await, stalled_login(port).await];
    // Two logins in progress do not count against max_client_connections = 2.
    let mut b = connect(port)
        .await
        .expect("a second client logs in past two stalled logins");
    // A third logged-in client is over max_client_connections: refused after its login.
    let e = connect(port).await.expect_err("a third logged-in client");
    assert_eq!(server_error(&e), (1040, "08004".into()), "{e}");
    // A third login in progress is allowed, a fourth is refused before its greeting.
    let third = stalled_login(port).await;
    assert_eq!(
        first_packet_error(port).await,
        Some((0, 1040, "08004".into())),
        "a fourth login in progress gets ERR 1040 instead of a greeting"
    );
    // Meanwhile the logged-in clients are served, and once the stalled logins go, new ones
    // get in again.
    assert_serves(&mut a).await;
    assert_serves(&mut b).await;
    drop(stalled);
    drop(third);
    drop(b);
    let mut c = connect_once_freed(port).await;
    assert_serves(&mut c).await;
}

#[tokio::test]
async fn a_users_max_connections_refuses_its_next_login_with_1226() {
    let (_proxy, port) = sandbox().proxy(&format!(
        "[[users]]\nname = \"{}\"\npassword = \"{}\"\ndefault_keyspace = \"app\"\nmax_connections = 2\n",
        common::USER,
        common::PASSWORD
    ));
    let mut one = connect(port).await.expect("first");
    let two = connect(port).await.expect("second");
    let e = connect(port)
        .await
        .expect_err("a third login of the same user");
    assert_eq!(server_error(&e), (1226, "42000".into()), "{e}");
    assert!(
        e.to_string().contains("max_user_connections"),
        "MariaDB's wording: {e}"
    );
    assert_serves(&mut one).await;
    two.disconnect().await.expect("disconnect");
    let mut again = connect_once_freed(port).await;
    assert_serves(&mut again).await;
}

#[tokio::test]
async fn a_client_silent_in_the_middle_of_a_command_is_closed_after_net_read_timeout() {
    let (_proxy, port) = sandbox().proxy("[proxy]\nnet_read_timeout_ms = 500\n");
    let (mut slow, _) = Raw::login(port, common::USER, common::PASSWORD, CAPS, 0).await;
    // An idle client is not timed out: it has begun no packet.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let replies = slow.query("SELECT 1").await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    // A command sent slowly, but never silent for 500 ms, is read: the timeout is between
    // reads, not for the whole packet.
    let query = b"\x03SELECT 'slow but steady'";
    let mut wire = vec![query.len() as u8, 0, 0, 0];
    wire.extend_from_slice(query);
    for piece in wire.chunks(8) {
        slow.send_raw(piece).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (reply, _) = slow.reply().await;
    assert!(
        matches!(reply, common::raw::Reply::Rows { .. }),
        "{reply:?}"
    );
    // A header for 100 bytes, then 10 of them, then nothing.
    let mut cut = vec![100, 0, 0, 0, 0x03];
    cut.extend_from_slice(b"SELECT 1 ");
    slow.send_raw(&cut).await;
    let started = Instant::now();
    let mut other = connect(port).await.expect("another client");
    assert_serves(&mut other).await;
    let err = tokio::time::timeout(Duration::from_secs(10), slow.try_packet())
        .await
        .expect("an answer within 10 s")
        .expect("an ERR before the close");
    assert_eq!(err.first(), Some(&0xFF));
    assert_eq!(u16::from_le_bytes([err[1], err[2]]), 1159);
    assert_eq!(&err[4..9], b"08S01");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the timeout: {:?}",
        started.elapsed()
    );
    assert!(slow.try_packet().await.is_none(), "then closed");
    assert_serves(&mut other).await;
}

#[tokio::test]
async fn commands_still_arriving_are_bounded_across_clients() {
    let (_proxy, port) = sandbox().proxy("[proxy]\nmax_buffered_command_bytes = 1048576\n");
    let select = |len: usize| {
        let mut q = b"\x03SELECT LENGTH('".to_vec();
        q.resize(len - 2, b'x');
        q.extend_from_slice(b"')");
        q
    };
    let big = select(700 * 1024);
    let header = |len: usize| {
        let l = (len as u32).to_le_bytes();
        vec![l[0], l[1], l[2], 0]
    };
    // The first client stalls after 100 KiB of a 700 KiB command.
    let (mut first, _) = Raw::login(port, common::USER, common::PASSWORD, CAPS, 0).await;
    let mut part = header(big.len());
    part.extend_from_slice(&big[..100 * 1024]);
    first.send_raw(&part).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second client's 700 KiB command would pass the 1 MiB both may hold together.
    let (mut second, _) = Raw::login(port, common::USER, common::PASSWORD, CAPS, 0).await;
    let mut whole = header(big.len());
    whole.extend_from_slice(&big);
    second.send_raw(&whole).await;
    let err = tokio::time::timeout(Duration::from_secs(10), second.try_packet())
        .await
        .expect("an answer within 10 s")
        .expect("an ERR before the close");
    assert_eq!(u16::from_le_bytes([err[1], err[2]]), 1041, "{err:?}");
    assert_eq!(&err[4..9], b"HY000");
    // The first client finishes its command and gets its answer.
    first.send_raw(&big[100 * 1024..]).await;
    let replies = tokio::time::timeout(Duration::from_secs(10), first.reply())
        .await
        .expect("the first client's answer");
    assert!(
        matches!(replies.0, common::raw::Reply::Rows { ref rows, .. } if rows.len() == 1),
        "{replies:?}"
    );
    // Once it arrived, its bytes are free again: the same command fits.
    let replies = first.command(&big).await;
    assert!(
        matches!(replies.first(), Some(common::raw::Reply::Rows { .. })),
        "{replies:?}"
    );
}

#[tokio::test]
async fn logins_from_an_address_that_keeps_failing_are_answered_late() {
    let (_proxy, port) =
        sandbox().proxy("[proxy]\nfailed_login_threshold = 2\nfailed_login_delay_ms = 800\n");
    let wrong = format!(
        "mysql://{}:wrong@127.0.0.1:{port}/app?prefer_socket=false",
        common::USER
    );
    let fail = || async {
        let started = Instant::now();
        let e = Conn::from_url(wrong.as_str())
            .await
            .expect_err("a wrong password");
        assert_eq!(server_error(&e), (1045, "28000".into()), "{e}");
        started.elapsed()
    };
    // The first two failures are answered at once.
    for _ in 0..2 {
        let took = fail().await;
        assert!(took < Duration::from_millis(800), "no delay yet: {took:?}");
    }
    // Past the threshold every answer waits, the right password's too.
    let took = fail().await;
    assert!(took >= Duration::from_millis(800), "delayed: {took:?}");
    let started = Instant::now();
    let mut c = connect(port)
        .await
        .expect("the right password still logs in");
    assert!(
        started.elapsed() >= Duration::from_millis(1600),
        "the next answer waits two steps: {:?}",
        started.elapsed()
    );
    assert_serves(&mut c).await;
    // A login that succeeded clears the count.
    let took = fail().await;
    assert!(took < Duration::from_millis(800), "cleared: {took:?}");
    // A client logged in is not slowed by another's failures.
    let started = Instant::now();
    for _ in 0..3 {
        fail().await;
    }
    assert!(started.elapsed() >= Duration::from_millis(800));
    let started = Instant::now();
    assert_serves(&mut c).await;
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "statements are not delayed: {:?}",
        started.elapsed()
    );
}
