//! One client connection: authentication, the state the proxy tracks for it, and the
//! command loop that hands each command to the planner and executor.

/// The session's identity for opening and fitting server connections, with database `db`;
/// a macro so that it borrows only the fields it reads (the pinned connections stay free).
macro_rules! who {
    ($s:ident, $db:expr) => {
        identity(&$s.user, &$s.secret, $s.conn_key(), $db, &$s.vars)
    };
}

mod bulk;
mod cached;
mod change_user;
mod consistency;
mod database;
mod dispatch;
mod handshake;
mod hold;
mod keyspace;
mod kill;
mod prepare;
mod route;
mod scatter;
mod set;
mod set_option;
mod sharded;
mod statements;
mod table_columns;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tracing::{debug, warn};

use crate::backend::forward::{Forward, ForwardError};
use crate::backend::prepared::sent_types;
use crate::backend::vars::VarSet;
use crate::backend::ConnKey;
use crate::config::User;
use crate::executor::{self, ExecError, Identity, Pinned};
use crate::ha::keyspace_gate::{KeyspaceGate, Refused};
use crate::planner::classify::{classify, Classified, Kind};
use crate::planner::{self, lex, Plan, PlanContext, Route};
use crate::protocol::consts::{cap, com, errcode, status};
use crate::protocol::packet::{put_err, put_ok, put_packet, Frame, OkInfo, PacketError};
use crate::protocol::response::{Expect, Scanner};
use crate::protocol::stream::PacketStream;
use crate::runtime::Shared;

use crate::runtime::admission::{ClientSlot, LoginSlot, OverLimit};
use crate::runtime::registry::Registration;
pub use crate::runtime::registry::FIRST_ID;
use consistency::Ryw;
use dispatch::Work;
pub use handshake::HandshakeError;
use hold::Hold;
use statements::{Statements, StmtShards};

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
    #[error("COM_CHANGE_USER refused: {0}")]
    ChangeUserRefused(String),
}

pub struct Session {
    io: PacketStream,
    shared: Arc<Shared>,
    user: User,
    caps: u32,
    /// MariaDB extended capabilities negotiated at login.
    ext_caps: u32,
    charset: u8,
    db: Option<String>,
    pinned: Pinned,
    /// Why `pinned` is kept between statements; empty: connections go back to the pool.
    hold: Hold,
    /// Session variables every connection serving the session must carry.
    vars: Arc<VarSet>,
    ryw: Ryw,
    /// A transaction on a sharded keyspace, bound to a shard by its first statement.
    shard_txn: Option<sharded::ShardTxn>,
    /// The keys of a sharded keyspace the running command touches (worked out only in a
    /// transaction or during a reshard's hold).
    cmd_touched: crate::shardmap::moving::Touched,
    /// The running command entered its keyspace's gate uncounted (during a hold, touching
    /// no moving key).
    cmd_uncounted: bool,
    stmts: Statements,
    out: BytesMut,
    registration: Registration,
    /// What the session's server connections log in with (the user's password, or its SHA1
    /// recovered from the client's login when the config holds only the hash).
    secret: crate::protocol::auth::Secret,
    /// This client's place among those logged in (its user's too).
    admitted: ClientSlot,
    /// The greeting's nonce and the client's address, for COM_CHANGE_USER.
    nonce: [u8; 20],
    peer_ip: String,
    /// The server connection last recorded in the registry (for KILL from other sessions).
    recorded_backend: Option<(Arc<str>, u32)>,
    /// The server that ran the last statement on one connection (`None` after a multi-shard
    /// one): on a sharded keyspace, where SHOW WARNINGS, ROW_COUNT() and the like must go.
    last_server: Option<Arc<str>>,
    /// Tables the open transaction wrote: the result cache drops them again at its end.
    cache_pending: Vec<String>,
    /// The user's name as result cache keys hold it (made once, not on every lookup).
    cache_user: Arc<str>,
    /// The request part of the next lookup's key; kept between commands so that a hit
    /// allocates nothing.
    cache_request: Vec<u8>,
    /// The generations part of the next lookup's key (same reason).
    cache_gens: Vec<u64>,
    /// This worker's per-shape statistics, and the statement being measured (with its
    /// text, kept in a reused buffer for a new shape's text and the slow-query log).
    digests: crate::digests::Table,
    sample: Option<crate::digests::Sample>,
    sample_sql: Vec<u8>,
    /// This session's Prometheus series, looked up once.
    query_metrics: crate::query_metrics::QueryMetrics,
}

/// Serves one client from handshake to close.
pub async fn run(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    connection_id: u32,
    login: LoginSlot,
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
    drop(login);
    let admitted = match shared.admission.admit(
        &auth.user.name,
        shared.config.proxy.max_client_connections,
        auth.user.max_connections,
    ) {
        Ok(slot) => slot,
        Err(refused) => {
            let (code, msg) = refusal(&auth.user.name, refused);
            let mut out = BytesMut::new();
            put_err(&mut out, auth.ok_seq, code, &msg);
            let _ = io.write_all(&out).await;
            return Ok(());
        }
    };
    let registration = shared.sessions.register(connection_id, &auth.user.name);
    let digests = shared.digests.table(crate::backend::pool::current_worker());
    let mut s = Session {
        io,
        shared,
        cache_user: Arc::from(auth.user.name.as_str()),
        cache_request: Vec::new(),
        cache_gens: Vec::new(),
        digests,
        sample: None,
        sample_sql: Vec::new(),
        query_metrics: Default::default(),
        user: auth.user,
        secret: auth.secret,
        caps: auth.caps,
        ext_caps: auth.ext_caps,
        charset: auth.charset,
        db: auth.db,
        pinned: Pinned::default(),
        hold: Hold::default(),
        vars: Arc::new(VarSet::default()),
        ryw: Ryw::default(),
        shard_txn: None,
        cmd_touched: Default::default(),
        cmd_uncounted: false,
        stmts: Statements::default(),
        out: BytesMut::new(),
        registration,
        admitted,
        nonce: auth.nonce,
        peer_ip,
        recorded_backend: None,
        last_server: None,
        cache_pending: Vec::new(),
    };
    if !s.check_login_database(auth.ok_seq).await {
        return Ok(());
    }
    s.after_command();
    s.send_ok(auth.ok_seq).await;
    s.command_loop().await
}

/// What the client is told when reading its command failed: the error, its text, the sequence
/// id it follows, and whether the rest of the command is still arriving (read before closing).
fn read_refusal(e: &PacketError) -> Option<((u16, &'static str), String, u8, bool)> {
    Some(match *e {
        PacketError::TooLarge { len, max, seq } => (
            errcode::NET_PACKET_TOO_LARGE,
            format!("Got a packet bigger than 'max_allowed_packet' bytes ({len} > {max})"),
            seq,
            true,
        ),
        PacketError::OverBudget { len, max, seq } => (
            errcode::OUT_OF_RESOURCES,
            format!(
                "shardgate: out of resources: this {len}-byte command would pass the {max} bytes all clients' incoming commands may hold (max_buffered_command_bytes)"
            ),
            seq,
            true,
        ),
        PacketError::TimedOut { seq } => (
            errcode::NET_READ_INTERRUPTED,
            "Got timeout reading communication packets".to_string(),
            seq,
            false,
        ),
        _ => return None,
    })
}

/// The error a logged-in client gets when a limit refuses it, as MariaDB words it.
pub(super) fn refusal(user: &str, refused: OverLimit) -> ((u16, &'static str), String) {
    match refused {
        OverLimit::Clients => {
            metrics::counter!("shardgate_clients_refused_total", "reason" => "clients")
                .increment(1);
            (errcode::CON_COUNT, "Too many connections".to_string())
        }
        OverLimit::User(n) => {
            metrics::counter!("shardgate_clients_refused_total", "reason" => "user").increment(1);
            let msg = format!(
                "User '{user}' has exceeded the 'max_user_connections' resource (current value: {n})"
            );
            (errcode::USER_LIMIT_REACHED, msg)
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Connections given back mid-transaction or carrying pinned state are reset first.
        if self.hold.sticky() {
            self.pinned.mark_dirty();
        }
    }
}

impl Session {
    async fn command_loop(&mut self) -> Result<(), SessionError> {
        let max = self.shared.config.proxy.max_allowed_packet;
        let net_read =
            std::time::Duration::from_millis(self.shared.config.proxy.net_read_timeout_ms);
        let shared = self.shared.clone();
        // One registration for the session's life: re-arming a Notify per command costs a
        // lock on the hot path. KILL notifies with a stored permit, so none is missed.
        let info = self.registration.info.clone();
        let killed = info.killed.notified();
        tokio::pin!(killed);
        loop {
            let read = tokio::select! {
                biased;
                // A KILL wins over a command that arrived meanwhile.
                _ = &mut killed => return Ok(()),
                r = self.io.read_command(max, &shared.command_bytes, net_read) => r,
            };
            let frame = match read {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => {
                    // The client is told why before the connection closes; after a command
                    // it is still sending, its rest is read so that it sees the answer.
                    if let Some((code, msg, seq, drain)) = read_refusal(&e) {
                        self.send_err(code, &msg, seq.wrapping_add(1)).await;
                        if drain {
                            self.drain_before_close().await;
                        }
                    }
                    return Err(e.into());
                }
            };
            match frame.first_byte() {
                Some(com::QUIT) => return Ok(()),
                None => {
                    let seq = frame.last_seq.wrapping_add(1);
                    self.send_err(errcode::UNKNOWN_COM, "Unknown command", seq)
                        .await;
                }
                Some(cmd) => {
                    let Some(keyspace_gate) = self.pass_gates(cmd, &frame).await else {
                        continue;
                    };
                    let started = std::time::Instant::now();
                    let r = self.command(cmd, frame).await;
                    if let Some(g) = keyspace_gate {
                        g.leave();
                    }
                    self.shared.ha.gate.leave();
                    self.end_sample(started.elapsed());
                    r?
                }
            }
            self.after_command();
        }
    }

    /// Lets a command through the statement gates, or answers the client and returns `None`.
    /// `Some(keyspace gate)`: in through the proxy's gate, and through the keyspace's (sharded
    /// keyspaces); each is left once the command ran.
    async fn pass_gates(&mut self, cmd: u8, frame: &Frame) -> Option<Option<Arc<KeyspaceGate>>> {
        let wait = self.shared.config.ha.buffer_timeout();
        // A reshard cutover's hold on the session's keyspace first (a sharded keyspace's
        // commands are all counted there): a command waiting there has reached no server, and
        // a failover's drain must not wait for it.
        let keyspace = match self.enter_keyspace_gate(cmd, frame, wait).await {
            Err(r) if matches!(r.refused, Refused::StillHeld | Refused::LeaseLapsed) => {
                self.keyspace_refused(r, wait, frame).await;
                return None;
            }
            k => k,
        };
        // While a primary changes, commands wait here (a transaction's go on: it must be
        // able to end where it began).
        let gate = &self.shared.ha.gate;
        // (Not what a statement left for the next: that one waits too, then runs on the new
        // primary unless it reads that state.)
        let in_txn = self.hold.sticky() || self.shard_txn.is_some();
        if gate.enter(in_txn, wait).await.is_err() {
            if let Ok(Some(g)) = &keyspace {
                g.leave();
            }
            let msg = format!(
                "shardgate: a primary change is still running after {} ms \
                 (failover_buffer_timeout_ms); try again",
                wait.as_millis()
            );
            let seq = frame.last_seq.wrapping_add(1);
            self.send_err(errcode::UNKNOWN, &msg, seq).await;
            return None;
        }
        match keyspace {
            Ok(g) => Some(g),
            Err(r) => {
                // A doomed transaction: its rollback reaches its servers, inside the gate.
                self.keyspace_refused(r, wait, frame).await;
                self.shared.ha.gate.leave();
                None
            }
        }
    }

    /// Gives the session's connections back to the pool unless something holds them.
    fn after_command(&mut self) {
        if self.hold.any() || self.pinned.is_empty() {
            return;
        }
        self.pinned.release_all();
    }

    /// The session runs no statement now: a KILL QUERY for it must not reach a connection that
    /// may serve another session next.
    fn clear_backend(&mut self) {
        if self.recorded_backend.take().is_some() {
            self.registration.info.set_backend(None);
        }
    }

    /// Back to a fresh session (COM_RESET_CONNECTION, COM_CHANGE_USER): connections that
    /// carried its state are reset by the pool before reuse.
    fn forget_state(&mut self) {
        self.pinned.mark_dirty();
        self.pinned.release_all();
        self.stmts.clear();
        self.hold = Hold::default();
        self.vars = Arc::new(VarSet::default());
        self.ryw = Ryw::default();
        self.shard_txn = None;
    }

    /// The route of the session's keyspace, or `None` after telling the client why not.
    async fn route(&mut self, reply_seq: u8) -> Option<Route> {
        match self.shared.planner().plan_session(&self.plan_ctx()) {
            Plan::Route(r) => Some(r),
            // A session command runs on one server: the first shard's.
            Plan::Broadcast(rs) => rs.into_iter().next(),
            Plan::Reject { code, message } => {
                self.send_err(code, &message, reply_seq).await;
                None
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
                let Classified {
                    class,
                    hint,
                    digest,
                } = classify(sql);
                self.begin_sample(digest, sql);
                let rewritten =
                    lex::hide_socket_variable(sql).map(|sql| query_frame(&sql, frame.last_seq));
                let reply_seq = frame.last_seq.wrapping_add(1);
                let shape = self.cache_shape(&class, hint, sql, None);
                if shape.is_some() {
                    self.cache_request.clear();
                    self.cache_request.extend_from_slice(sql);
                }
                drop(payload);
                let frame = rewritten.unwrap_or(frame);
                let Some((hint, lead)) = self.serve_cached(shape, hint, reply_seq).await else {
                    return Ok(());
                };
                let r = self.query(class, hint, frame).await;
                if let Some((flight, c)) = lead {
                    self.cache_fill(flight, c, reply_seq).await;
                }
                r?;
            }
            com::INIT_DB => {
                let db = String::from_utf8_lossy(&frame.payload()[1..]).into_owned();
                self.change_db(db, &frame).await?;
            }
            com::STMT_PREPARE => self.prepare(frame).await?,
            com::STMT_EXECUTE
            | com::STMT_SEND_LONG_DATA
            | com::STMT_CLOSE
            | com::STMT_RESET
            | com::STMT_FETCH => self.statement_command(cmd, frame).await?,
            com::STMT_BULK_EXECUTE => self.bulk_execute(frame).await?,
            com::RESET_CONNECTION => {
                // The connections that carried this session are reset by the pool.
                self.forget_state();
                self.send_ok(frame.last_seq.wrapping_add(1)).await;
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
            com::SET_OPTION => self.set_option(frame).await?,
            com::PING | com::STATISTICS | com::REFRESH | com::DEBUG => {
                let plan = self.shared.planner().plan_session(&self.plan_ctx());
                self.execute(plan, &frame, Some(Expect::Single), 0).await?;
            }
            com::FIELD_LIST => {
                let plan = self.shared.planner().plan_session(&self.plan_ctx());
                self.execute(plan, &frame, Some(Expect::Rows), 0).await?;
            }
            com::PROCESS_INFO => {
                let plan = self.shared.planner().plan_session(&self.plan_ctx());
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

    /// A COM_QUERY on the session's keyspace.
    async fn query(
        &mut self,
        class: Arc<planner::classify::Class>,
        hint: Option<planner::classify::Hint>,
        frame: Frame,
    ) -> Result<(), SessionError> {
        if self.shared.planner().is_sharded(&self.plan_ctx()) {
            return self.sharded_statement(class, hint, frame).await;
        }
        let Some(route) = self.route(frame.last_seq.wrapping_add(1)).await else {
            return Ok(());
        };
        self.run_statement(&route, &class, hint, Work::Query(&frame))
            .await
    }

    /// COM_STMT_* on a prepared statement. Execute and long data run wherever the statement's
    /// class sends them (preparing it there if needed); reset and fetch go to the connection
    /// that holds the statement's server-side state, if any.
    async fn statement_command(&mut self, cmd: u8, frame: Frame) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let Some(client_id) = id_after_command(&frame) else {
            let msg = "Malformed communication packet";
            self.send_err(errcode::MALFORMED_PACKET, msg, reply_seq)
                .await;
            return Ok(());
        };
        let Some(info) = self.stmts.get(client_id) else {
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
        if cmd == com::STMT_EXECUTE {
            return self.execute_statement(client_id, frame).await;
        }
        let (route, class, hint, sql) = (
            self.current_route(&info.route),
            info.class.clone(),
            info.hint,
            info.sql.clone(),
        );
        match cmd {
            com::STMT_SEND_LONG_DATA => {
                self.run_statement(&route, &class, hint, Work::LongData(&frame, client_id))
                    .await
            }
            com::STMT_CLOSE => {
                // Server-side copies stay in their connections' caches for other sessions.
                self.stmts.remove(client_id);
                Ok(())
            }
            _ => {
                if cmd == com::STMT_RESET {
                    self.hold.long_data = false;
                }
                let held = self.pinned.iter_mut().find_map(|c| {
                    let id = c.stmts.get_mut(&sql)?.id;
                    Some((c.addr.clone(), id))
                });
                let Some((addr, server_id)) = held else {
                    if cmd == com::STMT_RESET {
                        self.send_ok(reply_seq).await; // nothing server-side to reset
                    } else {
                        let msg = "The statement has no open cursor";
                        self.send_err(errcode::UNKNOWN_STMT_HANDLER, msg, reply_seq)
                            .await;
                    }
                    return Ok(());
                };
                let mut frame = frame;
                frame.raw[5..9].copy_from_slice(&server_id.to_le_bytes());
                let expect = if cmd == com::STMT_FETCH {
                    Expect::Rows
                } else {
                    Expect::Single
                };
                let route = Route { addr, ..route };
                self.execute(Plan::Route(route), &frame, Some(expect), 0)
                    .await?;
                Ok(())
            }
        }
    }

    /// COM_STMT_EXECUTE of a statement the session prepared: from the result cache when it
    /// has the result (keyed by the statement and its bound types and values; not with a
    /// cursor), otherwise run where the statement's class sends it.
    async fn execute_statement(
        &mut self,
        client_id: u32,
        frame: Frame,
    ) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let payload = frame.payload();
        let Some(info) = self.stmts.get_mut(client_id) else {
            return Ok(());
        };
        if info.digest == 0 {
            info.digest = crate::planner::digest::digest(&info.sql).hash;
        }
        let (digest, sql) = (info.digest, info.sql.clone());
        self.begin_sample(digest, &sql);
        let Some(info) = self.stmts.get_mut(client_id) else {
            return Ok(());
        };
        // Types travel with the values, or were bound by an earlier execute.
        let sent = sent_types(&payload, info.params);
        let sent_now = sent.is_some();
        if sent.is_some() {
            info.types = sent;
        }
        let hint = info.hint;
        let shape = match payload.get(5) {
            Some(0) => self.execute_shape(client_id),
            _ => None,
        };
        if let (Some(_), Some(info)) = (&shape, self.stmts.get(client_id)) {
            let request = &mut self.cache_request;
            request.clear();
            request.extend_from_slice(&info.sql);
            request.push(0);
            if !sent_now {
                request.extend_from_slice(info.types.as_deref().unwrap_or_default());
                request.push(0);
            }
            request.extend_from_slice(payload.get(10..).unwrap_or_default());
        }
        drop(payload);
        let Some((hint, lead)) = self.serve_cached(shape, hint, reply_seq).await else {
            return Ok(());
        };
        let Some(info) = self.stmts.get(client_id) else {
            return Ok(());
        };
        let route = self.current_route(&info.route);
        let (class, shards) = (info.class.clone(), info.shards);
        // A prepared BEGIN / COMMIT / ROLLBACK (sysbench prepares them) or SET must start and
        // end the transaction on every shard it spans, as its text does; without parameters
        // it is its text, and its answer the same OK.
        let txn_control = match class.kind {
            Kind::Begin { .. } | Kind::EndTransaction => true,
            Kind::Set(_) => info.params == 0,
            _ => false,
        };
        let r = if txn_control && self.shared.planner().is_sharded(&self.plan_ctx()) {
            let query = query_frame(&info.sql, frame.last_seq);
            self.sharded_statement(class, hint, query).await
        } else if shards == StmtShards::Multi {
            self.execute_on_shards(&frame, client_id, class, hint).await
        } else {
            match self.execute_route(route, &frame, client_id).await {
                Ok(Some(route)) => {
                    self.run_statement(&route, &class, hint, Work::Execute(&frame, client_id))
                        .await
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        };
        if let Some((flight, c)) = lead {
            self.cache_fill(flight, c, reply_seq).await;
        }
        r
    }

    /// The route of a statement prepared earlier as the shard map has it now (the shard's
    /// primary after a failover).
    fn current_route(&self, route: &Route) -> Route {
        self.shared
            .planner()
            .refresh(route)
            .unwrap_or_else(|| route.clone())
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
            Plan::Broadcast(rs) => match rs.into_iter().next() {
                Some(r) => r,
                None => return Ok(None),
            },
            Plan::Reject { code, message } => {
                self.send_err(code, &message, reply_seq).await;
                return Ok(None);
            }
        };
        let shared = self.shared.clone();
        let db = if with_db { self.db.as_deref() } else { None };
        let who = who!(self, db);
        let fwd = Forward {
            command: &frame.raw,
            last_seq: frame.last_seq,
            expect,
            deprecate_eof: self.caps & cap::DEPRECATE_EOF != 0,
            strip_state: self.caps & cap::SESSION_TRACK == 0,
            client_stmt_id: stmt_id,
            max_packet: shared.config.proxy.max_allowed_packet,
            before_end: None,
        };
        let r = match executor::connection(&shared.pools, &mut self.pinned, &route.addr, &who).await
        {
            Ok(_) => {
                self.record_backend(&route.addr);
                let r =
                    executor::forward_on(&mut self.pinned, &route.addr, &mut self.io, fwd).await;
                self.clear_backend();
                r
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(sc) => Ok(Some(sc)),
            Err(e) => {
                self.report(e, reply_seq).await?;
                Ok(None)
            }
        }
    }

    /// Tells the client why a command failed; an error return ends the session (the client
    /// connection cannot be resynchronised).
    async fn report(&mut self, e: ExecError, reply_seq: u8) -> Result<(), SessionError> {
        match e {
            ExecError::Connect(e) => {
                let (code, state, msg) = e.client_error();
                self.send_err((code, &state), &msg, reply_seq).await;
                Ok(())
            }
            ExecError::Database(err) => {
                self.send_err((err.code, &err.state), &err.message, reply_seq)
                    .await;
                Ok(())
            }
            ExecError::Forward(e) => {
                if let ForwardError::Backend {
                    sent: false,
                    addr,
                    msg,
                } = &e
                {
                    let text = format!("shardgate: lost connection to backend {addr}: {msg}");
                    self.send_err(errcode::UNKNOWN, &text, reply_seq).await;
                }
                if let ForwardError::ClientGone {
                    addr,
                    connection_id,
                } = &e
                {
                    self.kill_orphaned(addr.clone(), *connection_id);
                }
                debug!(error = %e, "session ends");
                Err(e.into())
            }
        }
    }

    /// Kills server connection `id` on `addr`, whose client went away mid-statement: closing
    /// the socket alone leaves the statement running, holding its locks, until the server
    /// next looks at the socket (a lock wait never does). The session's own account may kill
    /// its own connections; off the session's task, which is ending.
    fn kill_orphaned(&self, addr: Arc<str>, id: u32) {
        let shared = self.shared.clone();
        let (user, password) = (self.user.name.clone(), self.secret.clone());
        let key = self.conn_key();
        tokio::spawn(async move {
            let sql = format!("KILL CONNECTION {id}");
            let done = match shared
                .pools
                .get(&addr, &user, &password, key, None, 0)
                .await
            {
                Ok(mut c) => c.simple_command(com::QUERY, sql.as_bytes()).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(Ok(_)) => debug!(%addr, id, "killed the statement of a client that left"),
                // 1094: it ended on its own meanwhile.
                Ok(Err(e)) if e.code == 1094 => {}
                Ok(Err(e)) => {
                    warn!(%addr, id, error = %e.message, "cannot kill an orphaned statement")
                }
                Err(e) => warn!(%addr, id, error = %e, "cannot kill an orphaned statement"),
            }
        });
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
    fn record_backend(&mut self, addr: &Arc<str>) {
        let Some(id) = self.pinned.find(addr).map(|c| c.connection_id) else {
            return;
        };
        let same = self
            .recorded_backend
            .as_ref()
            .is_some_and(|(a, i)| Arc::ptr_eq(a, addr) && *i == id);
        if !same {
            self.registration.info.set_backend(Some((addr.clone(), id)));
            self.recorded_backend = Some((addr.clone(), id));
        }
    }

    async fn send_err(&mut self, code: (u16, &str), msg: &str, seq: u8) {
        if let Some(s) = self.sample.as_mut() {
            s.error = true;
        }
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
    command_frame(&cmd, client_last_seq)
}

/// A command of the proxy's making (`cmd` from its command byte on), answered as the client's
/// command that ended at `client_last_seq`.
fn command_frame(cmd: &[u8], client_last_seq: u8) -> Frame {
    let mut raw = BytesMut::with_capacity(cmd.len() + 4);
    put_packet(&mut raw, 0, cmd);
    Frame {
        raw,
        last_seq: client_last_seq,
        payload_len: cmd.len(),
    }
}

/// How the session logs in to backends: the client's user, connection key (see
/// `Session::conn_key`), and what every connection must carry for it.
fn identity<'a>(
    user: &'a User,
    secret: &'a crate::protocol::auth::Secret,
    key: ConnKey,
    db: Option<&'a str>,
    vars: &'a Arc<VarSet>,
) -> Identity<'a> {
    Identity {
        vars: Some(vars),
        user: &user.name,
        password: secret,
        key,
        db,
    }
}

impl Session {
    /// What a server connection must have been opened with to serve this client: its framing
    /// flags, charset and MariaDB extended capabilities.
    fn conn_key(&self) -> ConnKey {
        ConnKey {
            framing: self.caps & cap::FRAMING,
            charset: self.charset,
            ext: self.ext_caps,
        }
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

impl Session {
    /// Starts measuring a statement of shape `digest`.
    fn begin_sample(&mut self, digest: u64, sql: &[u8]) {
        self.sample_sql.clear();
        self.sample_sql.extend_from_slice(sql);
        self.sample = Some(crate::digests::Sample {
            digest,
            ..Default::default()
        });
    }

    /// Adds the measured statement to the worker's statistics; logs it when slow.
    fn end_sample(&mut self, elapsed: std::time::Duration) {
        let Some(s) = self.sample.take() else {
            return;
        };
        let sql = &self.sample_sql;
        crate::digests::Digests::record(&self.digests, &s, elapsed, || {
            crate::planner::digest::normalized(sql)
        });
        self.query_metrics.duration(elapsed.as_secs_f64());
        let slow = self.shared.config.proxy.slow_query_ms;
        if slow > 0 && elapsed.as_millis() >= u128::from(slow) {
            let text: String = crate::planner::digest::normalized(sql)
                .chars()
                .take(2000)
                .collect();
            tracing::warn!(
                target: "shardgate::slow_query",
                ms = elapsed.as_millis() as u64,
                user = %self.user.name,
                db = self.db.as_deref().unwrap_or(""),
                digest = %format!("{:016x}", s.digest),
                error = s.error,
                rows = s.rows,
                shards = s.shards,
                "slow query: {text}"
            );
        }
    }
}
