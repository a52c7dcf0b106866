//! Bad input at the wire level: wrong credentials, malformed, truncated and oversized packets,
//! unknown commands, idle and garbage connections.
//!
//! A tiny raw client ([`RawClient`]) speaks the MySQL protocol byte by byte, so each test can send
//! exactly what a broken or hostile client would. Every case asserts the exact MySQL error (code
//! and SQLSTATE) the proxy answers with, and then that the proxy is still healthy for everybody
//! else: a normal client connects and queries, the process is alive, and its log shows no panic.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use rand::Rng;
use shardgate::protocol::auth::{scramble_native, scramble_sha2};
use shardgate::protocol::consts::cap;
use shardgate::protocol::handshake::{parse_auth_switch, ClientHello, ServerHello};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the raw client announces: a modern 4.1 client with plugin auth and no EOF packets.
const CLIENT_CAPS: u32 = cap::LONG_PASSWORD
    | cap::PROTOCOL_41
    | cap::TRANSACTIONS
    | cap::SECURE_CONNECTION
    | cap::PLUGIN_AUTH
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::CONNECT_WITH_DB
    | cap::DEPRECATE_EOF
    | cap::MULTI_RESULTS;

/// Longest a single read from the proxy may take before the test fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest payload of one physical packet.
const MAX_PAYLOAD: usize = 0xFF_FFFF;

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_STMT_EXECUTE: u8 = 0x17;

/// One physical packet as the proxy sent it.
#[derive(Debug)]
struct Packet {
    seq: u8,
    payload: Vec<u8>,
}

/// The contents of an ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerError {
    code: u16,
    state: String,
    message: String,
}

impl Packet {
    fn is_ok(&self) -> bool {
        self.payload.first() == Some(&0x00)
    }

    /// The error this packet carries, if it is an ERR packet (0xFF, code, '#', SQLSTATE, text).
    fn error(&self) -> Option<ServerError> {
        let p = &self.payload;
        if p.first() != Some(&0xFF) || p.len() < 9 || p[3] != b'#' {
            return None;
        }
        Some(ServerError {
            code: u16::from_le_bytes([p[1], p[2]]),
            state: String::from_utf8_lossy(&p[4..9]).into_owned(),
            message: String::from_utf8_lossy(&p[9..]).into_owned(),
        })
    }

    /// Asserts this is an ERR packet with `code` and `state`, and returns it.
    #[track_caller]
    fn expect_error(&self, code: u16, state: &str) -> ServerError {
        let e = self
            .error()
            .unwrap_or_else(|| panic!("expected ERR {code} ({state}), got {self:?}"));
        assert_eq!(
            (e.code, e.state.as_str()),
            (code, state),
            "unexpected error: {e:?}"
        );
        e
    }
}

/// Whether a read error just means the peer closed the connection.
fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Reads one physical packet; `None` when the proxy closed the connection between packets.
/// Panics on a packet cut in the middle and on silence longer than [`READ_TIMEOUT`].
async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Option<Packet> {
    let read = async {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match r.read(&mut header[got..]).await {
                Ok(0) if got == 0 => return None,
                Ok(0) => panic!("connection closed inside a packet header"),
                Ok(n) => got += n,
                Err(e) if got == 0 && is_closed(&e) => return None,
                Err(e) => panic!("reading a packet header: {e}"),
            }
        }
        let len = header[0] as usize | (header[1] as usize) << 8 | (header[2] as usize) << 16;
        let mut payload = vec![0; len];
        r.read_exact(&mut payload)
            .await
            .unwrap_or_else(|e| panic!("reading a {len}-byte payload: {e}"));
        Some(Packet {
            seq: header[3],
            payload,
        })
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("the proxy sent nothing for {READ_TIMEOUT:?}"))
}

/// `payload` as physical packets: 0xFFFFFF-byte pieces with increasing sequence ids, then the
/// remainder (an empty packet when the payload is an exact multiple).
fn packets(mut seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4 * (payload.len() / MAX_PAYLOAD + 1));
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return out;
        }
    }
}

/// Reads a length-encoded integer from the front of `b`; `None` for NULL (0xFB).
fn lenenc(b: &mut &[u8]) -> Option<u64> {
    let (first, rest) = b.split_first().expect("lenenc");
    let width = match first {
        0xFB => {
            *b = rest;
            return None;
        }
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        v => {
            *b = rest;
            return Some(*v as u64);
        }
    };
    let mut v = [0u8; 8];
    v[..width].copy_from_slice(&rest[..width]);
    *b = &rest[width..];
    Some(u64::from_le_bytes(v))
}

type Row = Vec<Option<Vec<u8>>>;

/// A minimal MySQL client on a raw socket to the proxy.
struct RawClient {
    stream: TcpStream,
    hello: ServerHello,
}

impl RawClient {
    /// Connects to the proxy and reads its greeting.
    async fn connect() -> Self {
        let port = common::env().proxy_port;
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the proxy");
        let greeting = read_packet(&mut stream).await.expect("a greeting");
        assert_eq!(greeting.seq, 0, "greeting sequence id");
        let hello = ServerHello::parse(&greeting.payload).expect("a valid greeting");
        assert_eq!(hello.nonce.len(), 20, "nonce of {hello:?}");
        RawClient { stream, hello }
    }

    /// Connects and logs in as the test user, asserting the OK.
    async fn logged_in() -> Self {
        let mut c = Self::connect().await;
        let reply = c.login(common::USER, common::PASSWORD).await;
        assert!(reply.is_ok(), "login failed: {reply:?}");
        assert_eq!(reply.seq, 2, "sequence id of the OK after login");
        c
    }

    /// A HandshakeResponse41 for `user`, scrambling `password` with the greeting's nonce.
    fn login_packet(&self, caps: u32, user: &str, password: &str) -> Vec<u8> {
        let response = scramble_native(&self.hello.nonce, password.as_bytes());
        self.login_packet_with(caps, user, "mysql_native_password", response)
    }

    /// A HandshakeResponse41 naming auth `plugin` and carrying its `response`.
    fn login_packet_with(&self, caps: u32, user: &str, plugin: &str, response: Vec<u8>) -> Vec<u8> {
        let mut out = BytesMut::new();
        ClientHello {
            caps,
            max_packet: 1 << 30,
            charset: 45,
            user: user.into(),
            auth_response: response,
            database: Some("app".into()),
            auth_plugin: Some(plugin.into()),
            attrs: Vec::new(),
            ext_caps: 0,
        }
        .encode(&mut out);
        out.to_vec()
    }

    /// Sends a handshake response and returns the proxy's answer.
    async fn login(&mut self, user: &str, password: &str) -> Packet {
        let p = self.login_packet(CLIENT_CAPS, user, password);
        self.send(1, &p).await;
        self.read().await.expect("an answer to the login")
    }

    /// Sends `payload` as one physical packet.
    async fn send(&mut self, seq: u8, payload: &[u8]) {
        assert!(payload.len() < MAX_PAYLOAD);
        self.send_raw(&packets(seq, payload)).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to proxy");
    }

    async fn read(&mut self) -> Option<Packet> {
        read_packet(&mut self.stream).await
    }

    /// Sends a command (sequence id 0) and returns the first packet of the answer.
    async fn command(&mut self, payload: &[u8]) -> Packet {
        self.send(0, payload).await;
        self.read().await.expect("an answer to the command")
    }

    /// Sends a command that must fail; asserts the error, its sequence id 1, and returns it.
    async fn command_error(&mut self, payload: &[u8], code: u16, state: &str) -> ServerError {
        let reply = self.command(payload).await;
        assert_eq!(reply.seq, 1, "sequence id of the reply");
        reply.expect_error(code, state)
    }

    /// Runs a COM_QUERY and reads its whole answer: the rows of a result set (none for an OK),
    /// or the error. Asserts the answer's sequence ids count up from 1.
    async fn query(&mut self, sql: &[u8]) -> Result<Vec<Row>, ServerError> {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql);
        self.send(0, &payload).await;
        let mut seq = 1u8;
        let mut next = || {
            let s = seq;
            seq = seq.wrapping_add(1);
            s
        };
        let first = self.read().await.expect("an answer to COM_QUERY");
        assert_eq!(first.seq, next(), "sequence id of {first:?}");
        if let Some(e) = first.error() {
            return Err(e);
        }
        if first.is_ok() {
            return Ok(Vec::new());
        }
        let columns = lenenc(&mut &first.payload[..]).expect("column count");
        for _ in 0..columns {
            let def = self.read().await.expect("a column definition");
            assert_eq!(def.seq, next(), "sequence id of a column definition");
        }
        let mut rows = Vec::new();
        loop {
            let p = self.read().await.expect("a row or the terminator");
            assert_eq!(p.seq, next(), "sequence id of {p:?}");
            if let Some(e) = p.error() {
                return Err(e);
            }
            if p.payload.first() == Some(&0xFE) && p.payload.len() < MAX_PAYLOAD {
                return Ok(rows);
            }
            let mut b = &p.payload[..];
            let mut row = Vec::new();
            for _ in 0..columns {
                row.push(lenenc(&mut b).map(|n| {
                    let (cell, rest) = b.split_at(n as usize);
                    b = rest;
                    cell.to_vec()
                }));
            }
            rows.push(row);
        }
    }

    /// Asserts the connection answers `SELECT 1` correctly.
    async fn assert_select_1(&mut self) {
        let rows = self.query(b"SELECT 1").await.expect("SELECT 1");
        assert_eq!(rows, vec![vec![Some(b"1".to_vec())]]);
    }

    /// Asserts the proxy closes the connection without sending anything more.
    async fn expect_closed(&mut self) {
        if let Some(p) = self.read().await {
            panic!("expected the proxy to close the connection, got {p:?}");
        }
    }
}

/// Options of a normal mysql_async client of the proxy.
///
/// `prefer_socket(false)`: by default mysql_async reads `@@socket` after connecting to 127.0.0.1
/// and reconnects through that unix socket; the proxy forwards the question to MariaDB, so the
/// client would silently talk to MariaDB directly (see `a_normal_client_stays_on_the_proxy`).
fn proxy_opts() -> Opts {
    let opts = Opts::from_url(&common::env().proxy_url("app")).expect("proxy url");
    OptsBuilder::from_opts(opts).prefer_socket(false).into()
}

/// Asserts the proxy still serves a fresh normal client, runs, and has logged no panic.
async fn assert_proxy_healthy() {
    let env = common::env();
    let mut conn = Conn::new(proxy_opts())
        .await
        .expect("a normal client can still connect");
    let one: Option<i64> = conn.query_first("SELECT 1").await.expect("SELECT 1");
    assert_eq!(one, Some(1));
    conn.disconnect().await.expect("disconnect");
    assert!(env.proxy_alive(), "the proxy process died");
    assert_no_panics();
}

fn assert_no_panics() {
    let log_path = common::env().dir.join("test-proxy.log");
    let log = std::fs::read_to_string(&log_path).expect("proxy log");
    assert!(
        !log.contains("panicked"),
        "the proxy panicked ({}):\n{log}",
        log_path.display()
    );
}

fn access_denied(user: &str, password: bool) -> String {
    let yes_no = if password { "YES" } else { "NO" };
    format!("Access denied for user '{user}'@'127.0.0.1' (using password: {yes_no})")
}

/// Logs in with `user` / `password`, asserts ERR 1045 with `message` and a closed connection.
async fn assert_login_refused(user: &str, password: &str, message: &str) {
    let mut c = RawClient::connect().await;
    let reply = c.login(user, password).await;
    assert_eq!(reply.seq, 2, "sequence id of the ERR after login");
    let e = reply.expect_error(1045, "28000");
    assert_eq!(e.message, message);
    c.expect_closed().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn wrong_password_is_access_denied() {
    assert_login_refused("app", "wrong", &access_denied("app", true)).await;
}

#[tokio::test]
async fn unknown_user_is_access_denied() {
    assert_login_refused("nobody", "app", &access_denied("nobody", true)).await;
}

#[tokio::test]
async fn empty_password_is_access_denied_without_password() {
    assert_login_refused("app", "", &access_denied("app", false)).await;
}

#[tokio::test]
async fn malformed_handshake_responses_are_bad_handshakes() {
    let template = RawClient::connect().await;
    let valid = template.login_packet(CLIENT_CAPS, "app", "app");
    let pre41 = template.login_packet(CLIENT_CAPS & !cap::PROTOCOL_41, "app", "app");
    drop(template);
    // Random bytes: either no PROTOCOL_41 flag or too short for the fixed-size fields.
    let random: Vec<u8> = (0..24).map(|_| rand::random()).collect();
    // The auth response claims 200 bytes but the packet ends after 20.
    let mut long_auth = valid[..32].to_vec();
    long_auth.extend_from_slice(b"app\0");
    long_auth.push(200);
    long_auth.extend_from_slice(&[7; 20]);
    let cases: [(&str, &[u8]); 5] = [
        ("random bytes", &random),
        ("no PROTOCOL_41", &pre41),
        ("truncated to 10 bytes", &valid[..10]),
        ("auth response longer than the packet", &long_auth),
        ("empty packet", &[]),
    ];
    for (what, payload) in cases {
        let mut c = RawClient::connect().await;
        c.send(1, payload).await;
        let reply = c.read().await.unwrap_or_else(|| panic!("{what}: no ERR"));
        assert_eq!(reply.seq, 2, "{what}: sequence id");
        let e = reply.expect_error(1043, "08S01");
        assert!(e.message.starts_with("Bad handshake"), "{what}: {e:?}");
        c.expect_closed().await;
    }
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn unframed_garbage_instead_of_a_handshake_is_a_bad_handshake() {
    let cases: [(&str, &[u8]); 2] = [
        // A web browser pointed at the port (its header claims 5.5 MB, sequence id 0x20).
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        // A header claiming a 16 MiB response.
        ("a 16 MiB header", b"\xff\xff\xff\x01garbage"),
    ];
    for (what, bytes) in cases {
        let mut c = RawClient::connect().await;
        c.send_raw(bytes).await;
        let reply = c
            .read()
            .await
            .unwrap_or_else(|| panic!("{what}: closed without an ERR"));
        let e = reply.expect_error(1043, "08S01");
        assert!(e.message.starts_with("Bad handshake"), "{what}: {e:?}");
        c.expect_closed().await;
    }
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_normal_client_stays_on_the_proxy() {
    // mysql_async with the URL from tests/common, default options: after connecting it asks
    // `SELECT @@socket` and, finding a socket, reconnects through it. The backend sees the
    // proxy's TCP connection ("127.0.0.1:port"); a direct socket client shows "localhost".
    let opts = Opts::from_url(&common::env().proxy_url("app")).expect("proxy url");
    let mut conn = Conn::new(opts).await.expect("connect");
    let host: Option<String> = conn
        .query_first("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        .await
        .expect("own processlist row");
    conn.disconnect().await.expect("disconnect");
    assert_ne!(
        host.as_deref(),
        Some("localhost"),
        "mysql_async reconnected to MariaDB's unix socket (@@socket forwarded by the proxy)"
    );
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_packet_cut_short_closes_only_its_connection() {
    // A bystander logged in before, which must keep working afterwards.
    let mut bystander = RawClient::logged_in().await;
    // The header claims 1000 bytes, only 10 follow.
    let mut cut = vec![0xE8, 0x03, 0x00];
    let mut short = |seq: u8| {
        cut.truncate(3);
        cut.push(seq);
        cut.extend_from_slice(&[COM_QUERY; 10]);
        cut.clone()
    };

    // During the handshake, then half-closed: closed without an answer.
    let mut c = RawClient::connect().await;
    c.send_raw(&short(1)).await;
    c.stream.shutdown().await.expect("half-close");
    c.expect_closed().await;

    // After login, then half-closed: closed without an answer.
    let mut c = RawClient::logged_in().await;
    c.send_raw(&short(0)).await;
    c.stream.shutdown().await.expect("half-close");
    c.expect_closed().await;

    // After login, then closed entirely.
    let mut c = RawClient::logged_in().await;
    c.send_raw(&short(0)).await;
    drop(c);

    bystander.assert_select_1().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_command_over_max_allowed_packet_is_refused_and_closed() {
    let env = common::env();
    let c = RawClient::logged_in().await;
    let len = common::MAX_PACKET + (1 << 20);
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(b"\x03SELECT '");
    payload.resize(len - 1, b'x');
    payload.push(b'\'');
    let wire = packets(0, &payload);
    drop(payload);
    let (before, _) = env.proxy_memory_kib();

    // The proxy may answer before the whole packet is sent: write and read concurrently.
    let (mut rd, mut wr) = c.stream.into_split();
    let writer = tokio::spawn(async move {
        let r = wr.write_all(&wire).await;
        (r, wr) // the write half stays open until the reply was read
    });
    let reply = read_packet(&mut rd).await.expect("an ERR before the close");
    let e = reply.expect_error(1153, "08S01");
    assert!(
        e.message
            .starts_with("Got a packet bigger than 'max_allowed_packet' bytes"),
        "{e:?}"
    );
    assert!(
        read_packet(&mut rd).await.is_none(),
        "connection not closed"
    );
    let (written, _wr) = tokio::time::timeout(READ_TIMEOUT, writer)
        .await
        .expect("the write ends once the proxy closed")
        .expect("writer task");
    if let Err(e) = written {
        // The proxy stops reading and closes: the rest of the packet cannot be delivered.
        assert!(is_closed(&e), "unexpected write error: {e}");
    }
    let (after, peak) = env.proxy_memory_kib();
    eprintln!("proxy RSS before {before} KiB, after {after} KiB, peak {peak} KiB");
    assert_proxy_healthy().await;
    // The client sent sequence ids 0..=3 and expects the answer to continue with 4, as MariaDB
    // does; otherwise real clients (mysql_async: PacketsOutOfSync) never see the 1153 error.
    assert_eq!(reply.seq, 4, "sequence id of the ERR after packets 0..=3");
}

#[tokio::test]
async fn a_silent_client_gets_a_bad_handshake_after_the_timeout() {
    let start = Instant::now();
    let mut idle = RawClient::connect().await;
    // Meanwhile, other clients are served normally.
    assert_proxy_healthy().await;
    RawClient::logged_in().await.assert_select_1().await;

    let reply = idle
        .read()
        .await
        .expect("an ERR after the handshake timeout");
    let waited = start.elapsed();
    let e = reply.expect_error(1043, "08S01");
    assert!(e.message.starts_with("Bad handshake"), "{e:?}");
    idle.expect_closed().await;
    let timeout = Duration::from_millis(common::HANDSHAKE_TIMEOUT_MS);
    assert!(
        waited >= timeout / 2 && waited <= Duration::from_secs(5),
        "ERR after {waited:?}, timeout is {timeout:?}"
    );
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn an_unknown_command_is_refused_and_the_session_goes_on() {
    let mut c = RawClient::logged_in().await;
    let e = c.command_error(&[0x55, 1, 2, 3], 1047, "08S01").await;
    assert!(e.message.starts_with("Unknown command"), "{e:?}");
    c.assert_select_1().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn an_empty_command_packet_is_refused_and_the_session_goes_on() {
    let mut c = RawClient::logged_in().await;
    // As MariaDB answers it: an empty command is an unknown command.
    c.command_error(&[], 1047, "08S01").await;
    c.assert_select_1().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn executing_a_statement_never_prepared_is_refused() {
    let mut c = RawClient::logged_in().await;
    let id: u32 = 0x7FFF_FFF0;
    let mut execute = vec![COM_STMT_EXECUTE];
    execute.extend_from_slice(&id.to_le_bytes());
    execute.push(0); // flags: no cursor
    execute.extend_from_slice(&1u32.to_le_bytes()); // iteration count
    let e = c.command_error(&execute, 1243, "HY000").await;
    assert_eq!(
        e.message,
        format!("Unknown prepared statement handler ({id}) given to mysqld_stmt_execute")
    );
    c.assert_select_1().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_statement_command_without_statement_id_is_malformed() {
    let mut c = RawClient::logged_in().await;
    // As MariaDB answers it.
    let e = c.command_error(&[COM_STMT_EXECUTE, 1], 1835, "HY000").await;
    assert_eq!(e.message, "Malformed communication packet");
    c.assert_select_1().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_command_out_of_sequence_is_refused_by_the_server() {
    for _ in 0..3 {
        let mut c = RawClient::logged_in().await;
        c.send(3, b"\x03SELECT 1").await;
        let reply = c.read().await.expect("an answer");
        assert_eq!(reply.seq, 4, "sequence id of the reply");
        reply.expect_error(1156, "08S01");
        // MariaDB dropped the backend connection: it must not be handed to the next client.
        c.send(0, &[COM_QUIT]).await;
        c.expect_closed().await;
    }
    for _ in 0..5 {
        RawClient::logged_in().await.assert_select_1().await;
    }
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_query_with_invalid_utf8_reaches_the_server() {
    let mut c = RawClient::logged_in().await;
    let answer = c.query(b"SELECT '\xff\xfe'").await;
    // MariaDB answers with the bytes as they were sent: the proxy neither rejects nor mangles them.
    assert_eq!(answer, Ok(vec![vec![Some(vec![0xFF, 0xFE])]]));
    c.assert_select_1().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_syntax_error_is_passed_through() {
    let mut c = RawClient::logged_in().await;
    let e = c.query(b"SELEC 1 FROM").await.expect_err("a syntax error");
    assert_eq!((e.code, e.state.as_str()), (1064, "42000"), "{e:?}");
    assert!(
        e.message
            .starts_with("You have an error in your SQL syntax"),
        "{e:?}"
    );
    c.assert_select_1().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn sequence_ids_follow_the_protocol() {
    // The login OK has sequence id 2 (checked by logged_in); `query` checks every packet of a
    // response counts up from 1, for each command anew.
    let mut c = RawClient::logged_in().await;
    for _ in 0..3 {
        c.assert_select_1().await;
    }
    let rows = c
        .query(b"SELECT 'a', NULL UNION ALL SELECT 'b', 2")
        .await
        .expect("two rows");
    assert_eq!(
        rows,
        vec![
            vec![Some(b"a".to_vec()), None],
            vec![Some(b"b".to_vec()), Some(b"2".to_vec())]
        ]
    );
    assert_eq!(c.query(b"DO 1").await, Ok(Vec::new()));
    let ping = c.command(&[0x0e]).await;
    assert!(ping.is_ok() && ping.seq == 1, "{ping:?}");
    assert_proxy_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_connections_do_not_disturb_a_working_client() {
    let env = common::env();
    let worker = tokio::spawn(async move {
        let mut conn = Conn::new(proxy_opts()).await.expect("connect");
        for i in 0..200i64 {
            let v: Option<i64> = conn
                .query_first(format!("SELECT {i}"))
                .await
                .unwrap_or_else(|e| panic!("query {i}: {e}"));
            assert_eq!(v, Some(i));
        }
        conn.disconnect().await.expect("disconnect");
    });
    let port = env.proxy_port;
    let garbage: Vec<_> = (0..50)
        .map(|i| {
            tokio::spawn(async move {
                let bytes: Vec<u8> = {
                    let mut rng = rand::thread_rng();
                    let n = rng.gen_range(1..4096);
                    (0..n).map(|_| rng.gen()).collect()
                };
                let mut s = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                if i % 2 == 0 {
                    // Half of them wait for the greeting, the others talk over it.
                    read_packet(&mut s).await.expect("greeting");
                }
                // The proxy may already have closed on the first bytes.
                let _ = s.write_all(&bytes).await;
            })
        })
        .collect();
    for g in garbage {
        g.await.expect("garbage client");
    }
    worker.await.expect("the normal client ran 200 queries");
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_mysql8_client_logs_in_with_caching_sha2_fast_auth() {
    let mut c = RawClient::connect().await;
    let response = scramble_sha2(&c.hello.nonce, common::PASSWORD.as_bytes());
    let p = c.login_packet_with(CLIENT_CAPS, common::USER, "caching_sha2_password", response);
    c.send(1, &p).await;
    let fast = c.read().await.expect("fast auth result");
    assert_eq!((fast.seq, fast.payload.as_slice()), (2, &[0x01, 0x03][..]));
    let ok = c.read().await.expect("OK");
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(ok.seq, 3);
    c.assert_select_1().await;

    let mut c = RawClient::connect().await;
    let response = scramble_sha2(&c.hello.nonce, b"wrong");
    let p = c.login_packet_with(CLIENT_CAPS, common::USER, "caching_sha2_password", response);
    c.send(1, &p).await;
    let err = c.read().await.expect("an answer");
    err.expect_error(1045, "28000");
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn another_auth_plugin_is_switched_to_native_password() {
    let mut c = RawClient::connect().await;
    let p = c.login_packet_with(CLIENT_CAPS, common::USER, "client_ed25519", vec![1; 64]);
    c.send(1, &p).await;
    let switch = c.read().await.expect("auth switch request");
    assert_eq!(switch.seq, 2);
    assert_eq!(switch.payload[0], 0xFE);
    let (plugin, nonce) = parse_auth_switch(&switch.payload).expect("auth switch");
    assert_eq!(plugin, "mysql_native_password");
    assert_eq!(nonce, c.hello.nonce);
    c.send(3, &scramble_native(&nonce, common::PASSWORD.as_bytes()))
        .await;
    let ok = c.read().await.expect("OK");
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(ok.seq, 4);
    c.assert_select_1().await;
    assert_proxy_healthy().await;
}

#[tokio::test]
async fn a_client_reset_mid_statement_releases_its_locks() {
    let mut setup = Conn::new(proxy_opts()).await.expect("connect");
    setup
        .query_drop(
            "CREATE TABLE IF NOT EXISTS gone_locks (id INT PRIMARY KEY, v INT);\
             REPLACE INTO gone_locks VALUES (1, 0)",
        )
        .await
        .expect("setup");
    // A client locks the row, starts a long statement and vanishes with a TCP reset.
    let mut c = RawClient::logged_in().await;
    c.query(b"BEGIN").await.expect("begin");
    c.query(b"UPDATE gone_locks SET v = v + 1 WHERE id = 1")
        .await
        .expect("update");
    let mut payload = vec![COM_QUERY];
    payload.extend_from_slice(b"SELECT SLEEP(120)");
    c.send(0, &payload).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket2::SockRef::from(&c.stream)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(c);

    // Another client gets the row well before the sleep would have ended; the vanished
    // client's update is rolled back with its killed connection.
    let mut other = Conn::new(proxy_opts()).await.expect("connect");
    other
        .query_drop("SET SESSION innodb_lock_wait_timeout = 20")
        .await
        .expect("set");
    other
        .query_drop("UPDATE gone_locks SET v = v + 10 WHERE id = 1")
        .await
        .expect("the row is free once the client that locked it is gone");
    let v: Option<i64> = other
        .query_first("SELECT v FROM gone_locks WHERE id = 1 FOR UPDATE")
        .await
        .expect("select");
    assert_eq!(v, Some(10), "the vanished client's update was rolled back");
    assert_proxy_healthy().await;
}
