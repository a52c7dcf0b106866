//! One connection from the proxy to a MariaDB server, opened with the client's framing
//! capabilities and charset so that the server's packets can be forwarded untouched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::net::TcpStream;

use super::prepared::StmtCache;
use super::vars::{Sync, VarSet};
use crate::protocol::auth;
use crate::protocol::consts::{cap, com};
use crate::protocol::handshake::{parse_auth_switch, ClientHello, ServerHello};
use crate::protocol::packet::{
    ok_info_text, parse_err, parse_ok, put_packet, ErrInfo, OkInfo, PacketError,
};
use crate::protocol::stream::PacketStream;
use crate::protocol::track::{self, TrackedGtid};

/// Why a backend connection failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {ms} ms")]
    ConnectTimeout { addr: String, ms: u64 },
    #[error("{addr}: {source}")]
    Packet {
        addr: String,
        #[source]
        source: PacketError,
    },
    #[error("{addr} closed the connection")]
    Closed { addr: String },
    #[error("{addr} sent a malformed {what}")]
    Malformed { addr: String, what: &'static str },
    #[error("{addr} refused: {} ({}) {}", .err.code, .err.state, .err.message)]
    Server { addr: String, err: ErrInfo },
    #[error("{addr} asks for auth plugin '{plugin}', which the proxy does not speak")]
    Plugin { addr: String, plugin: String },
    #[error("pool for {addr} is full ({max} connections) and none freed up within {ms} ms")]
    PoolTimeout { addr: String, max: usize, ms: u64 },
    #[error("{addr} does not offer MariaDB capabilities {missing:#x} the client negotiated")]
    Capability { addr: String, missing: u32 },
}

impl BackendError {
    /// The MySQL error a client is given for this failure: code, SQLSTATE, message. A
    /// server's refusal (unknown database, access denied) passes through as it was.
    pub fn client_error(&self) -> (u16, String, String) {
        use crate::protocol::consts::errcode;
        let ours = |(code, state): (u16, &str), msg: String| (code, state.to_string(), msg);
        match self {
            BackendError::Server { err, .. } => (err.code, err.state.clone(), err.message.clone()),
            BackendError::PoolTimeout { .. } => {
                ours(errcode::CON_COUNT, format!("shardgate: {self}"))
            }
            _ => ours(
                errcode::UNKNOWN,
                format!("shardgate: backend unavailable: {self}"),
            ),
        }
    }
}

/// What a backend connection was opened for: the client framing flags and charset it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub framing: u32,
    pub charset: u8,
    /// The client's MariaDB extended capabilities (`ext_cap::PASS_THROUGH` at most): a
    /// connection with extended metadata sends other column definitions, so connections are
    /// pooled per set rather than re-encoding definitions for clients that did not ask.
    pub ext: u32,
}

/// Parameters of a new connection.
pub struct ConnectParams<'a> {
    pub addr: &'a str,
    pub user: &'a str,
    pub password: &'a auth::Secret,
    pub key: ConnKey,
    pub db: Option<&'a str>,
    pub timeout: Duration,
}

pub struct BackendConn {
    pub io: PacketStream,
    pub addr: std::sync::Arc<str>,
    pub user: String,
    pub key: ConnKey,
    /// The database this connection has selected, as far as the proxy knows.
    pub db: Option<String>,
    pub connection_id: u32,
    pub server_version: String,
    /// Set while a response has not been read to its end: such a connection cannot be reused.
    pub in_flight: bool,
    pub last_used: Instant,
    /// The proxy worker whose event loop this connection's socket is registered with.
    pub worker: usize,
    /// Session variables this connection carries (`None`: as the server started it).
    pub vars: Option<Arc<VarSet>>,
    /// Statements prepared on this connection, shared by every session that uses it.
    pub stmts: StmtCache,
    /// Holds state no session record describes (a transaction, a temporary table, a lock):
    /// reset before anyone else may use it.
    pub dirty: bool,
    /// The server said it is closing this connection (an error of SQLSTATE class 08).
    pub broken: bool,
    /// The server's last status said a transaction is open on this connection.
    pub in_txn: bool,
    /// The GTID the last write reported in its OK, until the session takes it.
    pub last_gtid: Option<TrackedGtid>,
    /// The role another session must find on this connection (see [`Roles`]).
    pub roles: Roles,
    /// The MariaDB extended capabilities the server announced (0 for a "MySQL" server).
    pub server_ext: u32,
}

/// What the pool must do about this connection's role before another session uses it:
/// COM_RESET_CONNECTION keeps `CURRENT_ROLE()` (MariaDB 10.11), and a role can be set by
/// statements the proxy cannot see into (a stored procedure or function, a trigger,
/// `EXECUTE IMMEDIATE`), so the connection of an account that may change roles is put back
/// to its login role whenever it goes back to the pool. `SET ROLE` needs the role granted to
/// the account itself (a DEFINER routine's `SET ROLE` ends with the routine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roles {
    /// No role was granted to the account when the connection opened: nothing to undo.
    NoneGranted,
    /// The account has roles; a fresh login has this one (its default role) or none.
    Login(Option<String>),
}

/// One query, run once per new connection: NULL when the account has no role, otherwise `+`
/// followed by the login's role (role names are never empty).
const ROLES_AT_LOGIN: &str =
    "SELECT IF(EXISTS(SELECT 1 FROM information_schema.APPLICABLE_ROLES), \
     CONCAT('+', IFNULL(CURRENT_ROLE(), '')), NULL)";

impl Roles {
    fn from_login(value: Option<String>) -> Roles {
        match value.as_deref().and_then(|v| v.strip_prefix('+')) {
            None => Roles::NoneGranted,
            Some("") => Roles::Login(None),
            Some(role) => Roles::Login(Some(role.to_string())),
        }
    }

    /// Whether a session may have changed this connection's role.
    pub fn changeable(&self) -> bool {
        matches!(self, Roles::Login(_))
    }

    /// The statement that puts the login's role back, if the account can change roles.
    /// `after_pin`: the connection served a session held to it (`SET ROLE`, `CALL`,
    /// `EXECUTE`...): a role granted to the account since the connection opened may have been
    /// set, so even then no role is left.
    pub fn restore_sql(&self, after_pin: bool) -> Option<String> {
        match self {
            Roles::NoneGranted if after_pin => Some("SET ROLE NONE".into()),
            Roles::NoneGranted => None,
            Roles::Login(None) => Some("SET ROLE NONE".into()),
            Roles::Login(Some(r)) => Some(format!("SET ROLE `{}`", r.replace('`', "``"))),
        }
    }
}

impl BackendConn {
    /// Opens and authenticates a connection.
    pub async fn connect(p: ConnectParams<'_>) -> Result<Self, BackendError> {
        let addr = p.addr.to_string();
        let ms = p.timeout.as_millis() as u64;
        match tokio::time::timeout(p.timeout, Self::connect_inner(&p)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::ConnectTimeout { addr, ms }),
        }
    }

    async fn connect_inner(p: &ConnectParams<'_>) -> Result<Self, BackendError> {
        let addr = p.addr;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| BackendError::Connect {
                addr: addr.into(),
                source,
            })?;
        let mut io = PacketStream::new(stream);
        let pkt = |source| BackendError::Packet {
            addr: addr.into(),
            source,
        };
        let closed = || BackendError::Closed { addr: addr.into() };
        let hello = io
            .read_frame(1 << 20)
            .await
            .map_err(pkt)?
            .ok_or_else(closed)?;
        if hello.first_byte() == Some(0xFF) {
            return Err(server_err(addr, &hello.payload()));
        }
        let server = ServerHello::parse(&hello.payload()).map_err(|_| BackendError::Malformed {
            addr: addr.into(),
            what: "handshake",
        })?;
        let mut caps = cap::LONG_PASSWORD
            | cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH
            | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | cap::TRANSACTIONS
            // Always, whatever the client asked: each write's GTID comes in its OK (cut off
            // again for a client that did not ask for session tracking).
            | cap::SESSION_TRACK
            | (p.key.framing & cap::FRAMING);
        if p.db.is_some() {
            caps |= cap::CONNECT_WITH_DB;
        }
        caps &= server.caps | cap::LONG_PASSWORD;
        if p.key.ext != 0 {
            // MariaDB reads a client's extended capabilities only from a "not MySQL" client.
            caps &= !cap::LONG_PASSWORD;
        }
        // A client that negotiated extended metadata would misread a server's definitions
        // without it: refuse rather than forward them.
        let missing = p.key.ext & !server.ext_caps;
        if missing != 0 {
            return Err(BackendError::Capability {
                addr: addr.into(),
                missing,
            });
        }
        let plugin = server.auth_plugin.clone();
        let response = scramble(addr, &plugin, &server.nonce, p.password)?;
        let mut out = BytesMut::with_capacity(128);
        let mut body = BytesMut::with_capacity(128);
        ClientHello {
            caps,
            max_packet: 1 << 30,
            charset: p.key.charset,
            user: p.user.into(),
            auth_response: response,
            database: p.db.map(str::to_string),
            auth_plugin: Some(plugin),
            attrs: Vec::new(),
            ext_caps: p.key.ext,
        }
        .encode(&mut body);
        put_packet(&mut out, hello.last_seq.wrapping_add(1), &body);
        io.write_all(&out).await.map_err(|e| pkt(e.into()))?;
        // OK, ERR, or an auth switch / extra round of the plugin.
        loop {
            let f = io
                .read_frame(1 << 20)
                .await
                .map_err(pkt)?
                .ok_or_else(closed)?;
            let payload = f.payload();
            match payload.first() {
                Some(0x00) => break,
                Some(0xFF) => return Err(server_err(addr, &payload)),
                Some(0xFE) => {
                    let (plugin, nonce) =
                        parse_auth_switch(&payload).map_err(|_| BackendError::Malformed {
                            addr: addr.into(),
                            what: "auth switch",
                        })?;
                    let resp = scramble(addr, &plugin, &nonce, p.password)?;
                    out.clear();
                    put_packet(&mut out, f.last_seq.wrapping_add(1), &resp);
                    io.write_all(&out).await.map_err(|e| pkt(e.into()))?;
                }
                // caching_sha2 "fast auth success" (0x01 0x03): the OK follows.
                Some(0x01) if payload.get(1) == Some(&3) => continue,
                _ => {
                    return Err(BackendError::Plugin {
                        addr: addr.into(),
                        plugin: "caching_sha2_password full authentication".into(),
                    })
                }
            }
        }
        let mut conn = BackendConn {
            io,
            addr: addr.into(),
            user: p.user.into(),
            key: p.key,
            db: p.db.map(str::to_string),
            connection_id: server.connection_id,
            server_version: server.server_version,
            in_flight: false,
            last_used: Instant::now(),
            worker: 0,
            vars: None,
            stmts: StmtCache::default(),
            dirty: false,
            broken: false,
            in_txn: false,
            last_gtid: None,
            // Until known: a failed look-up must not leave a role behind.
            roles: Roles::Login(None),
            server_ext: server.ext_caps,
        };
        conn.track_gtid().await?;
        if let Ok(value) = conn.query_value(ROLES_AT_LOGIN).await? {
            conn.roles = Roles::from_login(value);
        }
        Ok(conn)
    }

    /// Puts the login's role back (see [`Roles`] and [`Roles::restore_sql`]).
    pub async fn restore_role(
        &mut self,
        after_pin: bool,
    ) -> Result<Result<(), ErrInfo>, BackendError> {
        let Some(sql) = self.roles.restore_sql(after_pin) else {
            return Ok(Ok(()));
        };
        Ok(self
            .simple_command(com::QUERY, sql.as_bytes())
            .await?
            .map(|_| ()))
    }

    /// Asks the server to report `last_gtid` in OK packets (a fresh or reset session forgets).
    async fn track_gtid(&mut self) -> Result<(), BackendError> {
        match self
            .simple_command(com::QUERY, track::TRACK_LAST_GTID.as_bytes())
            .await?
        {
            Ok(_) => {
                // The OK may repeat an earlier session's GTID: not this session's write.
                self.last_gtid = None;
                Ok(())
            }
            Err(err) => Err(BackendError::Server {
                addr: self.addr.to_string(),
                err,
            }),
        }
    }

    /// A write on this connection reported `g`: the session reads it (read-your-writes) and
    /// the failover's record of acknowledged writes gets it now.
    pub fn wrote(&mut self, g: TrackedGtid) {
        crate::gtid::acked::Acked::global().note(&self.addr, g);
        self.last_gtid = Some(g);
    }

    /// Runs one proxy-issued command that answers with a single OK or ERR.
    pub async fn simple_command(
        &mut self,
        command: u8,
        arg: &[u8],
    ) -> Result<Result<OkInfo, ErrInfo>, BackendError> {
        Ok(self.command_ok(command, arg).await?.map(|(ok, _)| ok))
    }

    /// [`BackendConn::simple_command`], with the OK packet's info text ("Rows matched: ...").
    pub async fn command_ok(
        &mut self,
        command: u8,
        arg: &[u8],
    ) -> Result<Result<(OkInfo, Vec<u8>), ErrInfo>, BackendError> {
        let mut out = BytesMut::with_capacity(5 + arg.len());
        let mut body = BytesMut::with_capacity(1 + arg.len());
        body.put_u8(command);
        body.put_slice(arg);
        put_packet(&mut out, 0, &body);
        let addr = self.addr.to_string();
        self.in_flight = true;
        self.io
            .write_all(&out)
            .await
            .map_err(|e| BackendError::Packet {
                addr: addr.clone(),
                source: e.into(),
            })?;
        let f = self
            .io
            .read_frame(1 << 24)
            .await
            .map_err(|source| BackendError::Packet {
                addr: addr.clone(),
                source,
            })?
            .ok_or(BackendError::Closed { addr: addr.clone() })?;
        let payload = f.payload();
        if !matches!(payload.first(), Some(0x00 | 0xFE | 0xFF)) {
            // A result set (a write with RETURNING): the rest of it is still coming, so the
            // connection stays marked in flight and is never reused out of step.
            return Err(BackendError::Malformed {
                addr,
                what: "answer (a result set where an OK was expected)",
            });
        }
        self.in_flight = false;
        Ok(match payload.first() {
            Some(0xFF) => Err(parse_err(&payload).map_err(|_| BackendError::Malformed {
                addr,
                what: "error packet",
            })?),
            _ => {
                if let Some(g) = track::last_gtid(&payload) {
                    self.wrote(g);
                }
                Ok((
                    parse_ok(&payload).unwrap_or_default(),
                    ok_info_text(&payload).to_vec(),
                ))
            }
        })
    }

    /// COM_RESET_CONNECTION: back to a fresh session (the database stays selected).
    pub async fn reset(&mut self) -> Result<Result<(), ErrInfo>, BackendError> {
        let r = self.simple_command(com::RESET_CONNECTION, &[]).await?;
        self.vars = None;
        self.stmts.clear();
        self.dirty = false;
        self.in_txn = false;
        if r.is_ok() {
            self.track_gtid().await?;
        }
        Ok(r.map(|_| ()))
    }

    /// Makes this connection carry `vars` (a session's variables) before the session uses it.
    pub async fn sync_vars(
        &mut self,
        vars: &Arc<VarSet>,
    ) -> Result<Result<(), ErrInfo>, BackendError> {
        if let Some(have) = &self.vars {
            if Arc::ptr_eq(have, vars) {
                return Ok(Ok(()));
            }
        }
        let tracked_own = sets_tracking(self.vars.as_deref());
        let sql = match vars.sync_from(self.vars.as_deref()) {
            Sync::Nothing => None,
            Sync::Set(sql) => Some(sql),
            Sync::Reset(sql) => {
                if let Err(e) = self.reset().await? {
                    return Ok(Err(e));
                }
                sql
            }
        };
        if let Some(sql) = sql {
            if let Err(e) = self.simple_command(com::QUERY, sql.as_bytes()).await? {
                return Ok(Err(e));
            }
        }
        if tracked_own && !sets_tracking(Some(vars)) {
            // Undoing a client's own list put the server's default back, without `last_gtid`.
            self.track_gtid().await?;
        }
        self.vars = (!vars.is_empty()).then(|| vars.clone());
        Ok(Ok(()))
    }

    /// Runs a proxy-issued query and returns the first column of its first row (`Ok(None)`
    /// for SQL NULL or no row). For the proxy's own bookkeeping queries only.
    pub async fn query_value(
        &mut self,
        sql: &str,
    ) -> Result<Result<Option<String>, ErrInfo>, BackendError> {
        self.query_value_at(sql, 0).await
    }

    /// [`BackendConn::query_value`], of column `column` (0-based) of the first row.
    pub async fn query_value_at(
        &mut self,
        sql: &str,
        column: usize,
    ) -> Result<Result<Option<String>, ErrInfo>, BackendError> {
        let mut out = BytesMut::with_capacity(5 + sql.len());
        let mut body = BytesMut::with_capacity(1 + sql.len());
        body.put_u8(com::QUERY);
        body.put_slice(sql.as_bytes());
        put_packet(&mut out, 0, &body);
        let addr = self.addr.to_string();
        let perr = |source| BackendError::Packet {
            addr: addr.clone(),
            source,
        };
        self.in_flight = true;
        self.io.write_all(&out).await.map_err(|e| perr(e.into()))?;
        let deprecate_eof = self.key.framing & cap::DEPRECATE_EOF != 0;
        let mut value = None;
        let mut columns_left: Option<u64> = None;
        let mut rows = false;
        let mut first_row = true;
        loop {
            let f = self
                .io
                .read_frame(1 << 24)
                .await
                .map_err(perr)?
                .ok_or(BackendError::Closed { addr: addr.clone() })?;
            let p = f.payload();
            let is_end = p.first() == Some(&0xFE) && p.len() < 0xFF_FFFF;
            match columns_left {
                None => match p.first() {
                    Some(0xFF) => {
                        self.in_flight = false;
                        return match parse_err(&p) {
                            Ok(e) => Ok(Err(e)),
                            Err(_) => Err(BackendError::Malformed {
                                addr,
                                what: "error packet",
                            }),
                        };
                    }
                    Some(0x00) => break,
                    _ => {
                        let mut r = crate::protocol::wire::Reader::new(&p);
                        columns_left = Some(r.lenenc().ok().flatten().unwrap_or(0));
                    }
                },
                Some(0) if !rows => {
                    rows = true;
                    if deprecate_eof {
                        // No EOF after the definitions: this is already a row or the end.
                        if is_end {
                            break;
                        }
                        value = nth_value(&p, column);
                        first_row = false;
                    }
                }
                Some(0) => {
                    if is_end || p.first() == Some(&0xFF) {
                        break;
                    }
                    if first_row {
                        value = nth_value(&p, column);
                        first_row = false;
                    }
                }
                Some(n) => columns_left = Some(n - 1),
            }
        }
        self.in_flight = false;
        Ok(Ok(value))
    }

    /// Selects `db` on this connection if it has not already.
    pub async fn ensure_db(
        &mut self,
        db: Option<&str>,
    ) -> Result<Result<(), ErrInfo>, BackendError> {
        let Some(db) = db else { return Ok(Ok(())) };
        if self.db.as_deref() == Some(db) {
            return Ok(Ok(()));
        }
        match self.simple_command(com::INIT_DB, db.as_bytes()).await? {
            Ok(_) => {
                self.db = Some(db.to_string());
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

/// The MariaDB extended capabilities `addr` announces in its greeting (read without logging
/// in), or `None` if it did not greet within `timeout`.
pub async fn greeting_ext_caps(addr: &str, timeout: Duration) -> Option<u32> {
    let read = async {
        let mut io = PacketStream::new(TcpStream::connect(addr).await.ok()?);
        let hello = io.read_frame(1 << 20).await.ok()??;
        Some(ServerHello::parse(&hello.payload()).ok()?.ext_caps)
    };
    tokio::time::timeout(timeout, read).await.ok()?
}

/// Whether `vars` (a session's) sets `session_track_system_variables`, replacing the list the
/// proxy sets on every connection.
pub fn sets_tracking(vars: Option<&VarSet>) -> bool {
    vars.is_some_and(|v| {
        v.get(&super::vars::Var::System(
            "session_track_system_variables".into(),
        ))
        .is_some()
    })
}

/// The first column of a text-protocol row.
/// Value `n` (0-based) of a text-protocol row; `None` for NULL or a short row.
fn nth_value(row: &[u8], n: usize) -> Option<String> {
    let mut r = crate::protocol::wire::Reader::new(row);
    for _ in 0..n {
        if r.remaining().first() == Some(&0xFB) {
            r.u8().ok()?;
        } else {
            r.lenenc_bytes().ok()?;
        }
    }
    if r.remaining().first() == Some(&0xFB) {
        return None;
    }
    let bytes = r.lenenc_bytes().ok()?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

fn server_err(addr: &str, payload: &[u8]) -> BackendError {
    match parse_err(payload) {
        Ok(err) => BackendError::Server {
            addr: addr.into(),
            err,
        },
        Err(_) => BackendError::Malformed {
            addr: addr.into(),
            what: "error packet",
        },
    }
}

fn scramble(
    addr: &str,
    plugin: &str,
    nonce: &[u8],
    password: &auth::Secret,
) -> Result<Vec<u8>, BackendError> {
    match (plugin, password) {
        (auth::NATIVE, auth::Secret::Clear(p)) => Ok(auth::scramble_native(nonce, p.as_bytes())),
        (auth::NATIVE, auth::Secret::NativeStage1(s)) => Ok(auth::scramble_native_stage1(nonce, s)),
        (auth::CACHING_SHA2, auth::Secret::Clear(p)) => {
            Ok(auth::scramble_sha2(nonce, p.as_bytes()))
        }
        // Only the password's SHA1 is known: caching_sha2 needs its SHA256.
        (other, _) => Err(BackendError::Plugin {
            addr: addr.into(),
            plugin: other.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_at_login() {
        assert_eq!(Roles::from_login(None), Roles::NoneGranted);
        assert_eq!(Roles::from_login(Some("+".into())), Roles::Login(None));
        let r = Roles::from_login(Some("+r`x".into()));
        assert_eq!(r, Roles::Login(Some("r`x".into())));
        assert_eq!(r.restore_sql(false).as_deref(), Some("SET ROLE `r``x`"));
        let none = Roles::Login(None);
        assert_eq!(none.restore_sql(false).as_deref(), Some("SET ROLE NONE"));
        assert_eq!(Roles::NoneGranted.restore_sql(false), None);
        let after_pin = Roles::NoneGranted.restore_sql(true);
        assert_eq!(after_pin.as_deref(), Some("SET ROLE NONE"));
    }
}
