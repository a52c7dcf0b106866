//! One client connection: authentication, the state the proxy tracks for it, and the
//! command loop that hands each command to the planner and executor.

mod change_user;
mod database;
mod handshake;
mod kill;
mod registry;
mod statements;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tracing::debug;

use crate::backend::forward::{Forward, ForwardError};
use crate::backend::ConnKey;
use crate::config::User;
use crate::executor::{self, ExecError, Identity, Pinned};
use crate::planner::{lex, Plan, PlanContext, Route};
use crate::protocol::consts::{cap, com, errcode, status};
use crate::protocol::packet::{put_err, put_ok, put_packet, Frame, OkInfo, PacketError};
use crate::protocol::response::{Expect, Scanner};
use crate::protocol::stream::PacketStream;
use crate::proxy::Shared;

pub use handshake::HandshakeError;
use registry::Registration;
pub use registry::{Registry, FIRST_ID};
use statements::Statements;

/// Why a session ended abnormally (a clean COM_QUIT or close is not an error).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("{0}")]
    Packet(#[from] PacketError),
    #[error("{0}")]
    Forward(#[from] ForwardError),
    #[error("COM_CHANGE_USER named a database that does not exist")]
    ChangeUserDatabase,
}

pub struct Session {
    io: PacketStream,
    shared: Arc<Shared>,
    user: User,
    caps: u32,
    charset: u8,
    db: Option<String>,
    pinned: Pinned,
    stmts: Statements,
    out: BytesMut,
    registration: Registration,
    /// The greeting's nonce and the client's address, for COM_CHANGE_USER.
    nonce: [u8; 20],
    peer_ip: String,
    /// The server connection last recorded in the registry (for KILL from other sessions).
    recorded_backend: Option<(Arc<str>, u32)>,
}

/// Serves one client from handshake to close.
pub async fn run(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    connection_id: u32,
) -> Result<(), SessionError> {
    let peer_ip = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut io = PacketStream::new(stream);
    let timeout = shared.config.handshake_timeout();
    let auth = match tokio::time::timeout(
        timeout,
        handshake::handshake(&mut io, &shared, connection_id, &peer_ip),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            let mut out = BytesMut::new();
            let msg = format!("Bad handshake: no login within {} ms", timeout.as_millis());
            put_err(&mut out, 1, errcode::HANDSHAKE, &msg);
            let _ = io.write_all(&out).await;
            return Err(SessionError::HandshakeTimeout);
        }
    };
    let registration = shared.sessions.register(connection_id, &auth.user.name);
    let mut s = Session {
        io,
        shared,
        user: auth.user,
        caps: auth.caps,
        charset: auth.charset,
        db: auth.db,
        pinned: Pinned::default(),
        stmts: Statements::default(),
        out: BytesMut::new(),
        registration,
        nonce: auth.nonce,
        peer_ip,
        recorded_backend: None,
    };
    if !s.check_login_database(auth.ok_seq).await {
        return Ok(());
    }
    s.send_ok(auth.ok_seq).await;
    s.command_loop().await
}

impl Session {
    async fn command_loop(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.proxy.max_allowed_packet;
        // One registration for the session's life: re-arming a Notify per command costs a
        // lock on the hot path. KILL notifies with a stored permit, so none is missed.
        let info = self.registration.info.clone();
        let killed = info.killed.notified();
        tokio::pin!(killed);
        loop {
            let read = tokio::select! {
                biased;
                r = self.io.read_frame(max) => r,
                _ = &mut killed => return Ok(()),
            };
            let frame = match read {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(PacketError::TooLarge { len, max, seq }) => {
                    let msg = format!(
                        "Got a packet bigger than 'max_allowed_packet' bytes ({len} > {max})"
                    );
                    self.send_err(errcode::NET_PACKET_TOO_LARGE, &msg, seq.wrapping_add(1))
                        .await;
                    self.drain_before_close().await;
                    return Err(PacketError::TooLarge { len, max, seq }.into());
                }
                Err(e) => return Err(e.into()),
            };
            match frame.first_byte() {
                Some(com::QUIT) => return Ok(()),
                None => {
                    let seq = frame.last_seq.wrapping_add(1);
                    self.send_err(errcode::UNKNOWN_COM, "Unknown command", seq)
                        .await;
                }
                Some(cmd) => self.command(cmd, frame).await?,
            }
        }
    }

    async fn command(&mut self, cmd: u8, frame: Frame) -> Result<(), SessionError> {
        match cmd {
            com::QUERY => {
                let payload = frame.payload();
                let sql = &payload[1..];
                if let Some(db) = lex::use_database(sql) {
                    drop(payload);
                    return self.change_db(db, &frame).await;
                }
                if let Some(kill) = lex::kill_statement(sql) {
                    drop(payload);
                    return self.kill(kill, &frame).await;
                }
                let plan = self.shared.planner.plan(sql, &self.plan_ctx());
                let rewritten =
                    lex::hide_socket_variable(sql).map(|sql| query_frame(&sql, frame.last_seq));
                drop(payload);
                let frame = rewritten.unwrap_or(frame);
                self.execute(plan, &frame, Some(Expect::Result), 0).await?;
            }
            com::INIT_DB => {
                let db = String::from_utf8_lossy(&frame.payload()[1..]).into_owned();
                self.change_db(db, &frame).await?;
            }
            com::STMT_PREPARE => {
                let plan = self
                    .shared
                    .planner
                    .plan(&frame.payload()[1..], &self.plan_ctx());
                let id = self.stmts.next_id();
                if let Some(sc) = self
                    .execute(plan.clone(), &frame, Some(Expect::Prepare), id)
                    .await?
                {
                    if let (Some((backend_id, _, _)), Plan::Route(r)) = (sc.prepared, plan) {
                        self.stmts.insert(id, r, backend_id);
                    }
                }
            }
            com::STMT_EXECUTE
            | com::STMT_SEND_LONG_DATA
            | com::STMT_CLOSE
            | com::STMT_RESET
            | com::STMT_FETCH => self.statement_command(cmd, frame).await?,
            com::RESET_CONNECTION => {
                self.stmts.clear();
                let plan = self.shared.planner.plan_session(&self.plan_ctx());
                if let Plan::Route(r) = &plan {
                    self.pinned.release_others(&r.addr);
                }
                if self.pinned.is_empty() {
                    self.send_ok(frame.last_seq.wrapping_add(1)).await;
                } else {
                    self.execute(plan, &frame, Some(Expect::Single), 0).await?;
                }
            }
            com::CHANGE_USER => self.change_user(&frame).await?,
            com::PROCESS_KILL => {
                let Some(id) = id_after_command(&frame) else {
                    let msg = "Malformed communication packet";
                    let seq = frame.last_seq.wrapping_add(1);
                    self.send_err(errcode::MALFORMED_PACKET, msg, seq).await;
                    return Ok(());
                };
                let kill = lex::Kill {
                    query_only: false,
                    modifier: None,
                    id: id.into(),
                };
                self.kill(kill, &frame).await?;
            }
            com::PING | com::STATISTICS | com::SET_OPTION | com::REFRESH | com::DEBUG => {
                let plan = self.shared.planner.plan_session(&self.plan_ctx());
                self.execute(plan, &frame, Some(Expect::Single), 0).await?;
            }
            com::FIELD_LIST => {
                let plan = self.shared.planner.plan_session(&self.plan_ctx());
                self.execute(plan, &frame, Some(Expect::Rows), 0).await?;
            }
            com::PROCESS_INFO => {
                let plan = self.shared.planner.plan_session(&self.plan_ctx());
                self.execute(plan, &frame, Some(Expect::Result), 0).await?;
            }
            other => {
                let msg = format!("Unknown command 0x{other:02x}");
                self.send_err(errcode::UNKNOWN_COM, &msg, frame.last_seq.wrapping_add(1))
                    .await;
            }
        }
        Ok(())
    }

    /// COM_STMT_* on a prepared statement: to the server that prepared it, id translated.
    async fn statement_command(&mut self, cmd: u8, mut frame: Frame) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let Some(client_id) = id_after_command(&frame) else {
            let msg = "Malformed communication packet";
            self.send_err(errcode::MALFORMED_PACKET, msg, reply_seq)
                .await;
            return Ok(());
        };
        let Some((route, backend_id)) = self.stmts.get(client_id) else {
            if cmd != com::STMT_CLOSE && cmd != com::STMT_SEND_LONG_DATA {
                let msg = format!(
                    "Unknown prepared statement handler ({client_id}) given to {}",
                    com_name(cmd)
                );
                self.send_err(errcode::UNKNOWN_STMT_HANDLER, &msg, reply_seq)
                    .await;
            }
            return Ok(());
        };
        frame.raw[5..9].copy_from_slice(&backend_id.to_le_bytes());
        let expect = match cmd {
            com::STMT_EXECUTE => Some(Expect::Result),
            com::STMT_FETCH => Some(Expect::Rows),
            com::STMT_RESET => Some(Expect::Single),
            _ => None,
        };
        if cmd == com::STMT_CLOSE {
            self.stmts.remove(client_id);
        }
        self.execute(Plan::Route(route), &frame, expect, 0).await?;
        Ok(())
    }

    fn plan_ctx(&self) -> PlanContext<'_> {
        PlanContext {
            db: self.db.as_deref(),
            default_keyspace: self.user.default_keyspace.as_deref(),
        }
    }

    /// Runs a plan; `Ok(None)` when the client was answered with an error instead.
    async fn execute(
        &mut self,
        plan: Plan,
        frame: &Frame,
        expect: Option<Expect>,
        stmt_id: u32,
    ) -> Result<Option<Scanner>, SessionError> {
        self.execute_on(plan, frame, expect, stmt_id, true).await
    }

    /// `with_db`: select the session's database on the connection first (not for COM_INIT_DB,
    /// which selects its own).
    async fn execute_on(
        &mut self,
        plan: Plan,
        frame: &Frame,
        expect: Option<Expect>,
        stmt_id: u32,
        with_db: bool,
    ) -> Result<Option<Scanner>, SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let route: Route = match plan {
            Plan::Route(r) => r,
            Plan::Reject { code, message } => {
                self.send_err(code, &message, reply_seq).await;
                return Ok(None);
            }
        };
        let shared = self.shared.clone();
        let db = if with_db { self.db.as_deref() } else { None };
        let who = identity(&self.user, self.caps, self.charset, db);
        let fwd = Forward {
            command: &frame.raw,
            last_seq: frame.last_seq,
            expect,
            deprecate_eof: self.caps & cap::DEPRECATE_EOF != 0,
            client_stmt_id: stmt_id,
            max_packet: shared.config.proxy.max_allowed_packet,
        };
        let r = executor::run(
            &shared.pools,
            &mut self.pinned,
            &mut self.io,
            &route,
            &who,
            fwd,
        )
        .await;
        match r {
            Ok(sc) => {
                self.record_backend(&route);
                Ok(Some(sc))
            }
            Err(ExecError::Connect(e)) => {
                let (code, state, msg) = e.client_error();
                self.send_err((code, &state), &msg, reply_seq).await;
                Ok(None)
            }
            Err(ExecError::Database(err)) => {
                self.send_err((err.code, &err.state), &err.message, reply_seq)
                    .await;
                Ok(None)
            }
            Err(ExecError::Forward(e)) => {
                if let ForwardError::Backend {
                    sent: false,
                    addr,
                    msg,
                } = &e
                {
                    let text = format!("shardgate: lost connection to backend {addr}: {msg}");
                    self.send_err(errcode::UNKNOWN, &text, reply_seq).await;
                }
                debug!(error = %e, "session ends");
                Err(e.into())
            }
        }
    }

    /// Reads and drops what the client is still sending (the rest of an oversized packet), so
    /// that closing does not reset the connection before the client has read our error.
    async fn drain_before_close(&mut self) {
        let mut scratch = vec![0u8; 64 * 1024];
        let drain = async {
            while let Ok(n) = self.io.stream.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    }

    /// Tells the registry which server connection runs this session's statements, when that
    /// changed, so a KILL from another session reaches it.
    fn record_backend(&mut self, route: &Route) {
        let Some(id) = self.pinned.find(&route.addr).map(|c| c.connection_id) else {
            return;
        };
        let same = self
            .recorded_backend
            .as_ref()
            .is_some_and(|(a, i)| Arc::ptr_eq(a, &route.addr) && *i == id);
        if !same {
            self.registration.info.set_backend(route, id);
            self.recorded_backend = Some((route.addr.clone(), id));
        }
    }

    async fn send_err(&mut self, code: (u16, &str), msg: &str, seq: u8) {
        self.out.clear();
        put_err(&mut self.out, seq, code, msg);
        let _ = self.io.write_all(&self.out).await;
    }

    async fn send_ok(&mut self, seq: u8) {
        self.out.clear();
        let ok = OkInfo {
            status: status::AUTOCOMMIT,
            ..OkInfo::default()
        };
        put_ok(&mut self.out, seq, self.caps, ok);
        let _ = self.io.write_all(&self.out).await;
    }
}

/// The 4-byte id (statement or connection) right after the command byte.
fn id_after_command(frame: &Frame) -> Option<u32> {
    frame
        .raw
        .get(5..9)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A COM_QUERY of the proxy's own making, sent in place of the client's command; replies
/// continue from the sequence id of the client's last packet.
fn query_frame(sql: &[u8], client_last_seq: u8) -> Frame {
    let mut cmd = Vec::with_capacity(sql.len() + 1);
    cmd.push(com::QUERY);
    cmd.extend_from_slice(sql);
    let mut raw = BytesMut::new();
    put_packet(&mut raw, 0, &cmd);
    Frame {
        raw,
        last_seq: client_last_seq,
        payload_len: cmd.len(),
    }
}

/// How the session logs in to backends: the client's user, framing flags and charset.
fn identity<'a>(user: &'a User, caps: u32, charset: u8, db: Option<&'a str>) -> Identity<'a> {
    Identity {
        user: &user.name,
        password: &user.password,
        key: ConnKey {
            framing: caps & cap::FRAMING,
            charset,
        },
        db,
    }
}

fn com_name(cmd: u8) -> &'static str {
    match cmd {
        com::STMT_EXECUTE => "mysqld_stmt_execute",
        com::STMT_FETCH => "mysqld_stmt_fetch",
        com::STMT_RESET => "mysqld_stmt_reset",
        _ => "mysqld_stmt_command",
    }
}
