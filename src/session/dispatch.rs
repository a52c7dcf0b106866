//! Running one statement: choose its server, take a connection, forward, then update what the
//! session tracks (transaction, variables, holds, last write) and give the connection back
//! unless something holds it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::debug;

use super::route::Choice;
use super::statements::StmtInfo;
use super::{identity, Session, SessionError};
use crate::backend::forward::{Forward, ForwardError};
use crate::backend::prepared::{close_statements, execute_frame, prepare_silently};
use crate::backend::vars::Var;
use crate::backend::BackendError;
use crate::executor::{self, ExecError};
use crate::planner::classify::{Class, Hint, Kind};
use crate::planner::{lex, Route};
use crate::protocol::consts::{cap, errcode};
use crate::protocol::packet::Frame;
use crate::protocol::response::{Expect, Scanner};

/// What to do on the chosen connection.
pub(super) enum Work<'a> {
    /// COM_QUERY.
    Query(&'a Frame),
    /// COM_STMT_PREPARE under the proxy's statement id `id`; the generation of kept PREPARE
    /// replies when it was sent (`PrepareReplies::keep`).
    Prepare(&'a Frame, u32, u64),
    /// COM_STMT_EXECUTE of client statement `id`.
    Execute(&'a Frame, u32),
    /// COM_STMT_SEND_LONG_DATA of client statement `id` (no response).
    LongData(&'a Frame, u32),
}

impl Work<'_> {
    fn frame(&self) -> &Frame {
        match self {
            Work::Query(f) | Work::Prepare(f, ..) | Work::Execute(f, _) | Work::LongData(f, _) => f,
        }
    }
}

/// How a statement attempt ended.
enum Attempt {
    Done(Scanner),
    /// The client was answered with an error; nothing more to do.
    Answered,
    /// The server failed before anything reached the client: try again elsewhere.
    Failed,
    /// The server's pool stayed full: try elsewhere, but the server itself is fine.
    Busy,
    /// The replica has not applied the session's last write in time: use the primary.
    Behind,
    /// The primary could not be reached; the statement was not sent.
    PrimaryDown(BackendError),
}

impl Session {
    pub(super) async fn run_statement(
        &mut self,
        route: &Route,
        class: &Arc<Class>,
        hint: Option<Hint>,
        work: Work<'_>,
    ) -> Result<(), SessionError> {
        if !class.uses_previous {
            self.release_previous();
        }
        if let Some(why) = class.pins {
            if self.hold.life.is_none() {
                debug!(
                    session = self.registration.id,
                    why, "session pinned to its connection"
                );
            }
            self.hold.life.get_or_insert(why);
        }
        let statement = matches!(work, Work::Query(_) | Work::Execute(..));
        let before_end = if statement {
            self.cache_before_end(class)
        } else {
            None
        };
        let r = self
            .run_with_retries(route, class, hint, work, before_end.as_deref())
            .await;
        if statement {
            self.cache_after_statement();
        }
        r
    }

    async fn run_with_retries(
        &mut self,
        route: &Route,
        class: &Arc<Class>,
        hint: Option<Hint>,
        work: Work<'_>,
        before_end: Option<&(dyn Fn(&Scanner) + Send + Sync)>,
    ) -> Result<(), SessionError> {
        let mut exclude: Vec<Arc<str>> = Vec::new();
        let mut force_primary = false;
        let mut tries = 0;
        // Read only once the primary is found unreachable: nothing on the usual path.
        let mut seen_version: Option<u64> = None;
        // The route again from a newer shard map, after a primary change.
        let mut fresh: Option<Route> = None;
        let mut down_until: Option<Instant> = None;
        loop {
            let route = fresh.as_ref().unwrap_or(route);
            tries += 1;
            let choice = self.choose(route, class, hint, &exclude, force_primary);
            let (addr, replica) = match choice {
                Choice::Primary => (route.addr.clone(), None),
                Choice::Replica(r) => (r.addr().clone(), Some(r)),
                Choice::Held(a) => (a, None),
            };
            // A read outside a transaction may be tried again when its server failed before
            // answering (a replica went down, a pooled connection was stale); a write may not:
            // the server may have run it.
            let retry = !self.hold.sticky()
                && (replica.is_some() || (tries < 3 && matches!(class.kind, Kind::Read)));
            let on_replica = replica.is_some();
            match self
                .attempt(&addr, &route.addr, on_replica, retry, &work, before_end)
                .await?
            {
                Attempt::Done(sc) => {
                    self.after_statement(route, &addr, class, hint, &work, &sc)
                        .await;
                    return Ok(());
                }
                Attempt::Answered => return Ok(()),
                Attempt::Failed => {
                    if let Some(r) = &replica {
                        r.mark_down();
                        exclude.push(addr);
                    }
                }
                Attempt::Busy => exclude.push(addr),
                Attempt::Behind => force_primary = true,
                Attempt::PrimaryDown(e) => {
                    // Nothing was sent: wait (bounded) until a failover publishes a new primary
                    // or this one answers again, then run, as the client would have had it come
                    // a moment later.
                    let ha = &self.shared.config.ha;
                    let deadline =
                        *down_until.get_or_insert_with(|| Instant::now() + ha.buffer_timeout());
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !ha.auto_failover || left.is_zero() {
                        let reply_seq = work.frame().last_seq.wrapping_add(1);
                        return self.report(ExecError::Connect(e), reply_seq).await;
                    }
                    let topology = self.shared.topology.clone();
                    let poll = left.min(Duration::from_millis(100));
                    let seen = *seen_version.get_or_insert_with(|| topology.version());
                    // Nothing was sent: a failover's hold must not wait for this statement
                    // to drain (it waits for the map that failover publishes), and it runs
                    // only once the hold ends.
                    let gate = &self.shared.ha.gate;
                    gate.step_aside();
                    let newer = topology.wait_newer(seen, poll).await;
                    let in_txn = self.hold.sticky() || self.shard_txn.is_some();
                    let back = gate.step_back(in_txn, left).await;
                    if newer {
                        seen_version = Some(topology.version());
                    }
                    if back.is_err() {
                        let reply_seq = work.frame().last_seq.wrapping_add(1);
                        return self.report(ExecError::Connect(e), reply_seq).await;
                    }
                    // Always the shard's primary as the map has it now: a new map may have
                    // come before the version was first read, and the old primary, restarted,
                    // must never get this statement.
                    match self.shared.planner().refresh(route) {
                        Some(r) => fresh = Some(r),
                        None => {
                            let reply_seq = work.frame().last_seq.wrapping_add(1);
                            return self.report(ExecError::Connect(e), reply_seq).await;
                        }
                    }
                }
            }
        }
    }

    /// Nobody reads what the last statement left (ROW_COUNT(), warnings): its connection goes
    /// back first, so that a later FOUND_ROWS() cannot find it instead of the right one.
    pub(super) fn release_previous(&mut self) {
        if std::mem::take(&mut self.hold.next) && !self.hold.sticky() {
            self.pinned.release_all();
        }
    }

    /// One try on `addr`. A replica that fails before the client saw anything asks for a retry.
    async fn attempt(
        &mut self,
        addr: &Arc<str>,
        primary: &Arc<str>,
        on_replica: bool,
        retry_ok: bool,
        work: &Work<'_>,
        before_end: Option<&(dyn Fn(&Scanner) + Send + Sync)>,
    ) -> Result<Attempt, SessionError> {
        let frame = work.frame();
        let reply_seq = frame.last_seq.wrapping_add(1);
        let shared = self.shared.clone();
        let statement = matches!(work, Work::Query(_) | Work::Execute(..));
        let check = (on_replica && statement).then_some(primary);
        let got = match self.ready_connection(addr, check).await {
            Ok(true) => Ok(()),
            Ok(false) => return Ok(Attempt::Behind),
            Err(e) => Err(e),
        };
        match got {
            Ok(()) => {}
            Err(ExecError::Connect(BackendError::PoolTimeout { .. })) if on_replica && retry_ok => {
                return Ok(Attempt::Busy)
            }
            // Waiting again for the same full pool would only double the wait.
            Err(e @ ExecError::Connect(BackendError::PoolTimeout { .. })) => {
                return self.report(e, reply_seq).await.map(|()| Attempt::Answered)
            }
            Err(ExecError::Connect(_) | ExecError::Forward(_)) if retry_ok => {
                return Ok(Attempt::Failed)
            }
            Err(ExecError::Connect(
                e @ (BackendError::Connect { .. }
                | BackendError::ConnectTimeout { .. }
                | BackendError::Closed { .. }
                | BackendError::Packet { .. }),
            )) if !on_replica && !self.hold.sticky() => return Ok(Attempt::PrimaryDown(e)),
            // A replica that lacks the session's database (not replicated yet): the primary
            // has the authoritative answer.
            Err(ExecError::Database(_)) if on_replica && !self.hold.sticky() => {
                self.pinned.release(addr);
                return Ok(Attempt::Behind);
            }
            Err(e) => return self.report(e, reply_seq).await.map(|()| Attempt::Answered),
        }
        // Before the statement runs, so that a KILL QUERY from another session reaches it.
        self.record_backend(addr);
        let _busy = match on_replica {
            true => shared.health.get(addr).map(|h| h.start_query()),
            false => None,
        };
        let max_packet = shared.config.proxy.max_allowed_packet;
        type Hook<'h> = Option<&'h (dyn Fn(&Scanner) + Send + Sync)>;
        fn fwd<'f>(
            command: &'f [u8],
            last_seq: u8,
            expect: Option<Expect>,
            client_stmt_id: u32,
            (caps, max_packet, before_end): (u32, usize, Hook<'f>),
        ) -> Forward<'f> {
            Forward {
                command,
                last_seq,
                expect,
                deprecate_eof: caps & cap::DEPRECATE_EOF != 0,
                strip_state: caps & cap::SESSION_TRACK == 0,
                client_stmt_id,
                max_packet,
                before_end,
            }
        }
        let opts = (self.caps, max_packet, before_end);
        let last_seq = frame.last_seq;
        let r = match work {
            Work::Query(f) => {
                executor::forward_on(
                    &mut self.pinned,
                    addr,
                    &mut self.io,
                    fwd(&f.raw, last_seq, Some(Expect::Result), 0, opts),
                )
                .await
            }
            Work::Prepare(f, id, _) => {
                executor::forward_on(
                    &mut self.pinned,
                    addr,
                    &mut self.io,
                    fwd(&f.raw, last_seq, Some(Expect::Prepare), *id, opts),
                )
                .await
            }
            Work::Execute(f, id) | Work::LongData(f, id) => {
                let long_data = matches!(work, Work::LongData(..));
                let rewritten = match self.statement_on_conn(addr, f, *id, None).await {
                    Ok(Ok(frame)) => frame,
                    Ok(Err((code, state, msg))) => {
                        if !long_data {
                            self.send_err((code, &state), &msg, reply_seq).await;
                        }
                        return Ok(Attempt::Answered);
                    }
                    Err(_) if retry_ok => return Ok(Attempt::Failed),
                    Err(e) => return self.report(e, reply_seq).await.map(|()| Attempt::Answered),
                };
                let expect = (!long_data).then_some(Expect::Result);
                executor::forward_on(
                    &mut self.pinned,
                    addr,
                    &mut self.io,
                    fwd(&rewritten.raw, last_seq, expect, 0, opts),
                )
                .await
            }
        };
        self.clear_backend();
        match r {
            Ok(sc) => Ok(Attempt::Done(sc)),
            Err(ExecError::Forward(ForwardError::Backend { sent: false, .. })) if retry_ok => {
                Ok(Attempt::Failed)
            }
            Err(e) => self.report(e, reply_seq).await.map(|()| Attempt::Answered),
        }
    }

    /// Takes the session's connection to `addr` and fits it (database, variables). With
    /// `check_writes` (a replica about to run a statement: its shard's primary), first makes
    /// sure it has applied the session's last write there, before fitting: a lagging replica
    /// may not have the database yet. `Ok(false)`: it has not (the connection is given back).
    pub(super) async fn ready_connection(
        &mut self,
        addr: &Arc<str>,
        check_writes: Option<&Arc<str>>,
    ) -> Result<bool, ExecError> {
        let shared = self.shared.clone();
        let who = who!(self, self.db.as_deref());
        executor::take(&shared.pools, &mut self.pinned, addr, &who).await?;
        if let Some(s) = self.sample.as_mut() {
            s.shards += 1;
        }
        let caught_up = match check_writes {
            Some(primary) => self.replica_caught_up(addr, primary).await,
            None => true,
        };
        if !caught_up {
            self.pinned.release(addr);
            return Ok(false);
        }
        let who = who!(self, self.db.as_deref());
        executor::fit(&mut self.pinned, addr, &who).await?;
        Ok(true)
    }

    /// The client's execute (or long data) made ready for the connection to `addr`, preparing
    /// the statement there first if it is new to it; `sql` replaces the statement's text (a
    /// multi-shard read's rewrite, with the same parameters). `Ok(Err(..))`: a MySQL error for
    /// the client.
    pub(super) async fn statement_on_conn(
        &mut self,
        addr: &Arc<str>,
        frame: &Frame,
        client_id: u32,
        sql: Option<&Arc<[u8]>>,
    ) -> Result<Result<Frame, (u16, String, String)>, ExecError> {
        let unknown = |id| {
            let (code, state) = errcode::UNKNOWN_STMT_HANDLER;
            Ok(Err((
                code,
                state.to_string(),
                format!("Unknown prepared statement handler ({id}) given to mysqld_stmt_execute"),
            )))
        };
        let Some(info) = self.stmts.get_mut(client_id) else {
            return unknown(client_id);
        };
        let Some(conn) = self.pinned.find(addr) else {
            return unknown(client_id);
        };
        let sql = sql.unwrap_or(&info.sql);
        if conn.stmts.get_mut(sql).is_none() {
            match prepare_silently(conn, sql).await? {
                Ok(_) => {}
                Err(e) => return Ok(Err((e.code, e.state, e.message))),
            }
        }
        let Some(stmt) = conn.stmts.get_mut(sql) else {
            return unknown(client_id);
        };
        let malformed = || {
            let (code, state) = errcode::MALFORMED_PACKET;
            Ok(Err((
                code,
                state.to_string(),
                "Malformed communication packet".to_string(),
            )))
        };
        let rewritten = if frame.first_byte() == Some(crate::protocol::consts::com::STMT_EXECUTE) {
            execute_frame(frame, stmt, &mut info.types)
        } else {
            if frame.first_byte() == Some(crate::protocol::consts::com::STMT_BULK_EXECUTE) {
                // A bulk binds its types as an execute does, on the server statement and in
                // the client's eyes: a later execute without types means these.
                let payload = frame.payload();
                let n = 2 * stmt.params as usize;
                stmt.types = payload.get(7..7 + n).map(Bytes::copy_from_slice);
                if stmt.types.is_some() {
                    info.types = stmt.types.clone();
                }
            }
            let mut f = frame.clone();
            if f.raw.len() >= 9 {
                f.raw[5..9].copy_from_slice(&stmt.id.to_le_bytes());
                Some(f)
            } else {
                None
            }
        };
        match rewritten {
            Some(f) => Ok(Ok(f)),
            None => malformed(),
        }
    }

    async fn after_statement(
        &mut self,
        route: &Route,
        addr: &Arc<str>,
        class: &Arc<Class>,
        hint: Option<Hint>,
        work: &Work<'_>,
        sc: &Scanner,
    ) {
        self.last_server = Some(addr.clone());
        if let (Work::Prepare(f, id, generation), Some((server_id, _, params))) =
            (work, sc.prepared)
        {
            let sql: Arc<[u8]> = f.payload()[1..].into();
            self.keep_prepare_reply(route, &sql, *generation, sc, params);
            if let Some(conn) = self.pinned.find(addr) {
                let close = conn.stmts.insert(sql.clone(), server_id, params);
                if let Err(e) = close_statements(conn, &close).await {
                    debug!(error = %e, "closing replaced statements failed");
                    self.pinned.discard(addr);
                }
            }
            let info = StmtInfo::new(sql, class.clone(), hint, route.clone(), params);
            self.stmts.insert(*id, info);
        }
        let statement = matches!(work, Work::Query(_) | Work::Execute(..));
        // ER_LOCK_DEADLOCK: the server rolled its transaction back.
        if sc.error_code == errcode::LOCK_DEADLOCK.0 && self.shard_txn.is_some() {
            self.abort_shard_txn().await;
        }
        if statement {
            if let Some(s) = self.sample.as_mut() {
                s.error |= sc.error;
                s.rows += sc.rows;
            }
            let role = if Arc::ptr_eq(addr, &route.addr) || **addr == *route.addr {
                "primary"
            } else {
                "replica"
            };
            self.query_metrics
                .count(&route.keyspace, &route.shard, role, kind_label(&class.kind));
        }
        if statement && sc.error {
            // SHOW WARNINGS / SHOW ERRORS may follow to explain it.
            self.hold.next = true;
        }
        if statement && !sc.error {
            // From every held connection: a hinted read on a replica does not end the
            // transaction open on the primary.
            self.hold.txn = self.pinned.in_txn();
            if sc.last_ok.last_insert_id != 0 {
                let id = sc.last_ok.last_insert_id.to_string();
                self.vars = self
                    .vars
                    .with([(Var::System("last_insert_id".into()), Some(id))]);
                self.conn_carries_session_vars(addr);
            }
            if changes_definitions(class) {
                self.shared.prepare_replies.invalidate();
            }
            if class.kind == Kind::Ddl && lex::drops_database(&work.frame().payload()[1..]) {
                if let Some(conn) = self.pinned.find(addr) {
                    conn.db = None; // selected again (or found gone) by the next user
                }
            }
            if let Kind::Set(assignments) = &class.kind {
                self.record_set(addr, assignments).await;
            }
            // SHOW WARNINGS and @@warning_count leave the diagnostics they read in place: the
            // connection stays held for the next one reading them (`@@warning_count` after
            // SHOW WARNINGS, on another connection, read 0).
            // A write leaves ROW_COUNT(): held until the next statement shows whether it reads
            // it (another session's write on a pooled connection would answer otherwise).
            self.hold.next = class.keeps_for_next
                || sc.last_ok.warnings > 0
                || class.kind == Kind::Write
                || (class.uses_previous && self.hold.next);
        }
        match work {
            Work::LongData(..) => self.hold.long_data = true,
            Work::Execute(f, _) => {
                self.hold.long_data = false;
                // A cursor keeps server-side state for COM_STMT_FETCH.
                if f.raw.get(9).is_some_and(|flags| flags & 0x07 != 0) && !sc.error {
                    self.hold.life.get_or_insert("cursor");
                }
            }
            _ => {}
        }
        if statement && **addr == *route.addr {
            let wrote = !sc.error
                && matches!(
                    class.kind,
                    Kind::Write | Kind::Ddl | Kind::LockingRead | Kind::Other
                );
            self.note_write(addr, wrote).await;
        }
    }
}

/// Whether a statement may change tables' definitions, so that kept PREPARE replies (their
/// column definitions) may be stale. Multi-statement text may hold DDL.
pub(super) fn changes_definitions(class: &Class) -> bool {
    class.kind == Kind::Ddl || (class.kind == Kind::Other && class.statements > 1)
}

/// The `kind` label of `shardgate_queries_total`.
fn kind_label(kind: &Kind) -> &'static str {
    match kind {
        Kind::Read => "read",
        Kind::LockingRead => "locking_read",
        Kind::Write => "write",
        Kind::Ddl => "ddl",
        _ => "other",
    }
}
