//! The connection phase with a client: greeting, authentication against the configured
//! users, and the answer (OK or a MySQL error) that ends it.

use bytes::BytesMut;

use crate::config::User;
use crate::protocol::auth;
use crate::protocol::consts::{cap, errcode, status};
use crate::protocol::handshake::{put_auth_switch, ClientHello, ServerHello};
use crate::protocol::packet::{put_err, put_packet, PacketError};
use crate::protocol::stream::PacketStream;
use crate::runtime::Shared;

/// A client that passed authentication.
pub struct Authenticated {
    pub user: User,
    /// What the proxy logs in to the servers as this user with.
    pub secret: auth::Secret,
    pub caps: u32,
    /// MariaDB extended capabilities both sides have (see `offered_ext`).
    pub ext_caps: u32,
    pub charset: u8,
    pub db: Option<String>,
    /// The greeting's nonce: COM_CHANGE_USER scrambles against it too.
    pub nonce: [u8; 20],
    /// Sequence id of the OK (or ERR) that ends the handshake; the session sends it once it
    /// has checked the database the client asked for.
    pub ok_seq: u8,
}

/// Why a connection ended during the handshake (the client has been told when it could be).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Packet(#[from] PacketError),
    #[error("closed during handshake")]
    Closed,
    #[error("bad handshake: {0}")]
    Bad(String),
    #[error("access denied for user '{0}'")]
    Denied(String),
}

/// The 20-byte nonce's default plugin; MySQL 8 clients answer with caching_sha2 instead,
/// which is verified directly, so neither kind of client needs an extra round trip.
const DEFAULT_PLUGIN: &str = auth::NATIVE;

/// A login packet is small; anything larger is not a MySQL client (an HTTP request, say).
const MAX_HELLO: usize = 1 << 20;

pub async fn handshake(
    io: &mut PacketStream,
    shared: &Shared,
    connection_id: u32,
    peer_ip: &str,
) -> Result<Authenticated, HandshakeError> {
    let nonce = auth::nonce();
    let mut out = BytesMut::with_capacity(128);
    let mut body = BytesMut::with_capacity(128);
    let ext = offered_ext(shared);
    // Without LONG_PASSWORD MariaDB clients read (and answer) the extended capabilities.
    let caps = match ext {
        0 => cap::SERVER_OFFER,
        _ => cap::SERVER_OFFER & !cap::LONG_PASSWORD,
    };
    ServerHello {
        server_version: shared.config.proxy.server_version.clone(),
        connection_id,
        nonce: nonce.to_vec(),
        caps,
        charset: 45, // utf8mb4_general_ci
        status: status::AUTOCOMMIT,
        auth_plugin: DEFAULT_PLUGIN.into(),
        ext_caps: ext,
    }
    .encode(&mut body);
    put_packet(&mut out, 0, &body);
    io.write_all(&out).await.map_err(PacketError::from)?;

    let frame = match io.read_frame(MAX_HELLO).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(HandshakeError::Closed),
        Err(PacketError::TooLarge { len, seq, .. }) => {
            let msg = format!("Bad handshake: a {len}-byte login packet is not a MySQL handshake");
            return Err(bad_handshake(io, seq.wrapping_add(1), msg).await);
        }
        Err(e) => return Err(e.into()),
    };
    let seq = frame.last_seq.wrapping_add(1);
    let payload = frame.payload();
    // An SSL request (or a full response asking for TLS): the proxy offered no TLS.
    let wants_tls = payload
        .get(..4)
        .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & cap::SSL != 0);
    if wants_tls {
        let msg = "Bad handshake: TLS is not supported by shardgate yet".to_string();
        return Err(bad_handshake(io, seq, msg).await);
    }
    let hello = match ClientHello::parse(&payload) {
        Ok(h) => h,
        Err(e) => return Err(bad_handshake(io, seq, format!("Bad handshake: {e}")).await),
    };
    let (user, secret, seq) = authenticate(
        io,
        shared,
        &nonce,
        Credentials {
            user: &hello.user,
            plugin: hello.auth_plugin.as_deref(),
            response: hello.auth_response.clone(),
            seq,
        },
        peer_ip,
    )
    .await?;
    Ok(Authenticated {
        user,
        secret,
        caps: hello.caps & cap::SERVER_OFFER,
        ext_caps: hello.ext_caps & ext,
        charset: hello.charset,
        db: hello.database,
        nonce,
        ok_seq: seq,
    })
}

/// The MariaDB extended capabilities clients are offered: extended metadata and bulk execute
/// when every server seen offers them (on a sharded keyspace a bulk's rows are split between
/// shards, see `session::bulk`).
fn offered_ext(shared: &Shared) -> u32 {
    shared.pools.backend_ext() & crate::protocol::consts::ext_cap::PASS_THROUGH
}

/// What a client offered to prove who it is (at login or in COM_CHANGE_USER).
pub struct Credentials<'a> {
    pub user: &'a str,
    pub plugin: Option<&'a str>,
    pub response: Vec<u8>,
    /// Sequence id of the proxy's next packet.
    pub seq: u8,
}

/// Checks credentials against the configured users, switching the client to
/// mysql_native_password first if it used a plugin the proxy does not verify, and sends the
/// caching_sha2 fast-auth marker when that plugin was used. Returns the user and the sequence
/// id of the OK that ends the exchange; on failure the client has been sent ERR 1045.
pub async fn authenticate(
    io: &mut PacketStream,
    shared: &Shared,
    nonce: &[u8],
    c: Credentials<'_>,
    peer_ip: &str,
) -> Result<(User, auth::Secret, u8), HandshakeError> {
    let mut seq = c.seq;
    let mut out = BytesMut::with_capacity(64);
    let mut plugin = c.plugin.unwrap_or(auth::NATIVE).to_string();
    let mut response = c.response;
    let user = shared.topology.config().user(c.user).cloned();
    // A user given by its hash can be checked (and its password's SHA1 recovered) only from
    // a mysql_native_password response.
    let hashed = user.as_ref().and_then(|u| u.native_hash());
    let verifiable = match hashed {
        Some(_) => plugin == auth::NATIVE,
        None => plugin == auth::NATIVE || plugin == auth::CACHING_SHA2,
    };
    if !verifiable {
        // Ask the client to answer with a plugin the proxy verifies.
        let mut body = BytesMut::with_capacity(64);
        put_auth_switch(&mut body, auth::NATIVE, nonce);
        put_packet(&mut out, seq, &body);
        io.write_all(&out).await.map_err(PacketError::from)?;
        let f = io.read_frame(4096).await?.ok_or(HandshakeError::Closed)?;
        seq = f.last_seq.wrapping_add(1);
        response = f.payload().to_vec();
        plugin = auth::NATIVE.into();
    }
    let secret = match (&user, hashed) {
        (Some(_), Some(hash)) => {
            auth::recover_stage1(nonce, &hash, &response).map(auth::Secret::NativeStage1)
        }
        (Some(u), None) => auth::verify(&plugin, nonce, &u.password, &response)
            .then(|| auth::Secret::Clear(u.password.clone())),
        (None, _) => None,
    };
    let ok = secret.is_some();
    // After failures in a row from this address, every answer waits, so that guessing costs
    // time whatever the guess.
    let delay = login_delay(shared, peer_ip);
    if !delay.is_zero() {
        metrics::counter!("shardgate_login_delays_total").increment(1);
        tokio::time::sleep(delay).await;
    }
    if ok {
        shared.admission.login_succeeded(peer_ip);
    } else {
        metrics::counter!("shardgate_login_failures_total").increment(1);
        shared.admission.login_failed(peer_ip);
    }
    let (Some(user), Some(secret)) = (user, secret) else {
        let msg = format!(
            "Access denied for user '{}'@'{}' (using password: {})",
            c.user,
            peer_ip,
            if response.is_empty() { "NO" } else { "YES" }
        );
        let e = HandshakeError::Denied(c.user.to_string());
        return Err(refuse(io, seq, errcode::ACCESS_DENIED, &msg, e).await);
    };
    if plugin == auth::CACHING_SHA2 {
        out.clear();
        seq = put_packet(&mut out, seq, &[0x01, 0x03]); // fast auth success
        io.write_all(&out).await.map_err(PacketError::from)?;
    }
    Ok((user, secret, seq))
}

/// How long the answer to a login from `peer_ip` waits (`[proxy] failed_login_*`): at most
/// ten steps, and half the handshake timeout, so the client still gets its answer.
fn login_delay(shared: &Shared, peer_ip: &str) -> std::time::Duration {
    let p = &shared.config.proxy;
    let step = std::time::Duration::from_millis(p.failed_login_delay_ms);
    let max = (step * 10).min(shared.config.handshake_timeout() / 2);
    shared
        .admission
        .login_delay(peer_ip, p.failed_login_threshold, step, max)
}

/// Sends ERR 1043 with `msg` and returns the error that ends the connection.
async fn bad_handshake(io: &mut PacketStream, seq: u8, msg: String) -> HandshakeError {
    refuse(
        io,
        seq,
        errcode::HANDSHAKE,
        &msg,
        HandshakeError::Bad(msg.clone()),
    )
    .await
}

/// Sends an ERR packet and returns `e` for the caller to end the connection with.
async fn refuse(
    io: &mut PacketStream,
    seq: u8,
    code: (u16, &str),
    msg: &str,
    e: HandshakeError,
) -> HandshakeError {
    let mut out = BytesMut::new();
    put_err(&mut out, seq, code, msg);
    let _ = io.write_all(&out).await;
    e
}
