//! Statements on a sharded keyspace: each runs on the shard its shard key names, DDL and
//! reference-table writes on every shard, and a transaction on the shard of its first
//! statement (BEGIN is held back until then, as the shard is not known before).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;

use super::dispatch::Work;
use super::scatter::Request;
use super::statements::StmtShards;
use super::table_columns::columns_unknown;
use super::{identity, Session, SessionError};
use crate::backend::prepared::{param_value, prepare_silently, ParamValue};
use crate::executor::ok_sum::OkSum;
use crate::executor::sequence::{take_ids, SequenceError, SequenceTable};
use crate::executor::split_write::{split_write, HeldConnections, ShardStatements};
use crate::executor::{self, ExecError};
use crate::ha::keyspace_gate::TxnToken;
use crate::planner::classify::{Class, Hint, Kind, Value, VarName};
use crate::planner::shard::{with_generated_keys, Spliced};
use crate::planner::{lex, text, Route, ShardPlan};
use crate::protocol::consts::{com, errcode, status};
use crate::protocol::packet::{put_ok, put_ok_info, Frame, OkInfo};
use crate::shardmap::moving::Touched;
use crate::shardmap::ring::KeyValue;

/// What a write on several shards inserted: rows of one multi-row INSERT (its OK reports
/// "Records: ..."), and the first id a sequence gave them.
struct Inserted {
    multi_row: bool,
    first_id: Option<i64>,
}

/// A split INSERT whose parts do not fit the statement (never expected: refused, not cut short).
const UNSPLIT: &str = "shardgate: the rows of this INSERT could not be cut out for their shards";

/// A write the proxy runs part by part and answers with one OK cannot return rows.
const SPLIT_RETURNING: &str = "shardgate: RETURNING is not supported on a write that runs on several shards (or takes sequence ids)";

/// A multi-shard read rewritten on both sides of bytes that are not UTF-8.
const UNPLACEABLE: &str = "shardgate: this multi-shard read needs a rewrite around bytes that are not valid UTF-8; use a hex literal (X'...') for them";

/// A transaction on a sharded keyspace.
pub struct ShardTxn {
    /// The client's BEGIN / START TRANSACTION, run on the shard once it is known.
    begin: Vec<u8>,
    /// The shard it runs on, once a statement chose one.
    shard: Option<Arc<str>>,
    /// Further shards it opened on, in order (`multi_shard_transactions = "best_effort"`).
    others: Vec<Arc<str>>,
    /// Counts it open on its keyspace's gate: a reshard cutover waits for it, then dooms it
    /// if it touched a moving key.
    token: Option<TxnToken>,
    /// The keys its statements touched so far.
    pub(super) touched: Touched,
    /// The planner (shard map) its statements were planned with: a newer one that moved a
    /// key it touched ends it.
    pub(super) planner: Arc<crate::planner::Planner>,
}

impl ShardTxn {
    pub(super) fn token(&self) -> Option<&TxnToken> {
        self.token.as_ref()
    }
}

impl Session {
    pub(super) async fn sharded_statement(
        &mut self,
        class: Arc<Class>,
        hint: Option<Hint>,
        frame: Frame,
    ) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let payload = frame.payload();
        let raw = payload.get(1..).unwrap_or_default();
        let sql = text::parse_copy(raw);
        self.implicit_txn();
        // Set again by a statement that runs on one connection.
        let previous = std::mem::take(&mut self.last_server);
        match class.kind {
            Kind::Begin { .. } => {
                // As in MariaDB, a BEGIN inside a transaction commits it first: on every
                // shard it opened (the later ones first, as COMMIT does).
                if self.shard_txn.as_ref().is_some_and(|t| t.shard.is_some()) {
                    if let Err(e) = self.end_shard_txn(b"COMMIT").await {
                        return self.report(e, reply_seq).await;
                    }
                }
                self.shard_txn = Some(self.new_shard_txn(frame.payload()[1..].to_vec()));
                self.send_status_ok(reply_seq, status::IN_TRANS | status::AUTOCOMMIT)
                    .await;
                return Ok(());
            }
            Kind::EndTransaction => {
                let txn = self.shard_txn.take();
                let shard = txn.as_ref().and_then(|t| t.shard.clone());
                let others = txn.map(|t| t.others).unwrap_or_default();
                // Best effort: the shards joined later end first, the first one answers.
                let sql = frame.payload()[1..].to_vec();
                for s in others.iter().rev() {
                    let ctx = self.plan_ctx();
                    let Some(r) = self.shared.planner().shard_route(&ctx, s) else {
                        continue;
                    };
                    if let Err(e) = self.run_quietly(&r.addr, &sql).await {
                        return self.report(e, reply_seq).await;
                    }
                    if let Some(conn) = self.pinned.find(&r.addr) {
                        conn.in_txn = false;
                    }
                }
                let route =
                    shard.and_then(|s| self.shared.planner().shard_route(&self.plan_ctx(), &s));
                match route {
                    Some(r) => {
                        return self
                            .run_statement(&r, &class, hint, Work::Query(&frame))
                            .await
                    }
                    None => {
                        // Nothing ran: nothing to commit or roll back.
                        let st = if self.vars.autocommit() {
                            status::AUTOCOMMIT
                        } else {
                            0
                        };
                        self.send_status_ok(reply_seq, st).await;
                        return Ok(());
                    }
                }
            }
            _ => {}
        }
        let Some((plan, routes)) = self.plan_shards_reading_columns(&sql).await else {
            return Ok(());
        };
        let ctx = self.plan_ctx();
        let in_txn_shard = self.shard_txn.as_ref().and_then(|t| t.shard.clone());
        let route = match plan {
            ShardPlan::Reject(msg) => {
                self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                return Ok(());
            }
            ShardPlan::NeedColumns(table) => {
                self.send_err(errcode::UNKNOWN, &columns_unknown(&table), reply_seq)
                    .await;
                return Ok(());
            }
            ShardPlan::NotUnderstood(msg) => {
                let route = in_txn_shard
                    .as_ref()
                    .and_then(|s| routes.iter().find(|r| &r.shard == s))
                    .unwrap_or(&routes[0]);
                return self.server_judges(route, raw, &msg, reply_seq).await;
            }
            ShardPlan::All => {
                // As MariaDB does, DDL first commits the open transaction (explicit, or
                // implicit with autocommit off): on every shard it opened.
                if class.kind == Kind::Ddl && self.shard_txn.is_some() && !lex::temporary_ddl(raw) {
                    if let Err(e) = self.end_shard_txn(b"COMMIT").await {
                        return self.report(e, reply_seq).await;
                    }
                }
                if self
                    .shard_txn
                    .as_ref()
                    .is_some_and(|t| !t.begin.is_empty() || t.shard.is_some())
                {
                    let msg = "shardgate: reference-table writes and temporary tables inside a transaction are not supported on a sharded keyspace";
                    self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
                    return Ok(());
                }
                let r = self.broadcast(&routes, &class, &frame).await;
                if super::dispatch::changes_definitions(&class) {
                    self.shared.prepare_replies.invalidate();
                    self.shared.planner().table_columns().invalidate();
                }
                return r;
            }
            read @ (ShardPlan::Scatter(_) | ShardPlan::MergeSorted(_)) => {
                let rewritten = match &read {
                    ShardPlan::MergeSorted(spec) => {
                        text::restore(raw, &sql, &spec.sql).map(Cow::Owned)
                    }
                    _ => Some(Cow::Borrowed(raw)),
                };
                let Some(rewritten) = rewritten else {
                    self.send_err(errcode::UNKNOWN, UNPLACEABLE, reply_seq)
                        .await;
                    return Ok(());
                };
                let request = Request::Query(&rewritten);
                return self
                    .multi_shard_read(&read, &routes, &class, hint, &request, reply_seq)
                    .await;
            }
            ShardPlan::Sequence {
                sequence,
                key,
                rows,
            } => {
                return self
                    .insert_with_sequence(&class, raw, &sequence, &key, rows, &routes, reply_seq)
                    .await;
            }
            ShardPlan::SplitInsert(parts) => {
                let Some(parts) = split_parts(&parts, &routes, raw) else {
                    self.send_err(errcode::UNKNOWN, UNSPLIT, reply_seq).await;
                    return Ok(());
                };
                if !self.join_txn_on(&parts, reply_seq).await? {
                    return Ok(());
                }
                let insert = Inserted {
                    multi_row: true,
                    first_id: None,
                };
                return self.write_each(&class, parts, insert, reply_seq).await;
            }
            ShardPlan::ScatterWrite(shards) => {
                let sql = frame.payload()[1..].to_vec();
                let parts: Vec<(Route, Vec<u8>)> = shards
                    .iter()
                    .filter_map(|&i| Some((routes.get(i)?.clone(), sql.clone())))
                    .collect();
                if !self.join_txn_on(&parts, reply_seq).await? {
                    return Ok(());
                }
                let insert = Inserted {
                    multi_row: false,
                    first_id: None,
                };
                return self.write_each(&class, parts, insert, reply_seq).await;
            }
            ShardPlan::One(i) => routes[i].clone(),
            // Anywhere: the transaction's shard if it has one. (A `?` in query text is the
            // server's syntax error to report.)
            ShardPlan::Any | ShardPlan::Param(_) => {
                // Touches no sharded table: the transaction's shard if it has one, else any
                // shard without binding the transaction to it.
                let on_txn_shard = in_txn_shard
                    .as_ref()
                    .and_then(|s| routes.iter().find(|r| &r.shard == s).cloned());
                // SHOW WARNINGS, ROW_COUNT(), FOUND_ROWS()...: the shard whose server ran the
                // previous statement, which holds what they read.
                let of_previous = previous
                    .filter(|_| class.uses_previous)
                    .and_then(|a| self.shared.planner().route_serving(&ctx, &a));
                let route = of_previous
                    .or(on_txn_shard)
                    .unwrap_or_else(|| routes[0].clone());
                // `SET autocommit = 1` commits an implicit transaction: on every shard first, so
                // that a failed commit is this statement's error, as on MariaDB.
                if sets_autocommit_on(&class)
                    && self.shard_txn.as_ref().is_some_and(|t| t.begin.is_empty())
                {
                    if let Err(e) = self.end_shard_txn(b"COMMIT").await {
                        return self.report(e, reply_seq).await;
                    }
                }
                self.run_statement(&route, &class, hint, Work::Query(&frame))
                    .await?;
                self.end_implicit_txn().await;
                return Ok(());
            }
        };
        if !self.bind_txn(&route, reply_seq).await? {
            return Ok(());
        }
        self.run_statement(&route, &class, hint, Work::Query(&frame))
            .await
    }

    /// A write on several shards inside a transaction: the transaction opens on each (best
    /// effort) or, when it would span shards, the write is refused. `false` after answering
    /// the client with an error.
    pub(super) async fn join_txn_on(
        &mut self,
        parts: &[(Route, Vec<u8>)],
        reply_seq: u8,
    ) -> Result<bool, SessionError> {
        if self.shard_txn.is_none() {
            return Ok(true);
        }
        let mut shards: Vec<&Route> = Vec::new();
        for (r, _) in parts {
            if !shards.iter().any(|s| s.shard == r.shard) {
                shards.push(r);
            }
        }
        if shards.len() > 1
            && !self
                .shared
                .planner()
                .multi_shard_best_effort(&self.plan_ctx())
        {
            let msg = "shardgate: a write to several shards inside a transaction is refused (multi_shard_transactions = \"refuse\")";
            self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
            return Ok(false);
        }
        for r in shards {
            if !self.bind_txn(r, reply_seq).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A statement inside a sharded transaction must run on the transaction's shard; the
    /// first one chooses it. `false` when the client was answered with an error instead.
    pub(super) async fn bind_txn(
        &mut self,
        route: &Route,
        reply_seq: u8,
    ) -> Result<bool, SessionError> {
        let Some(txn) = &self.shard_txn else {
            return Ok(true);
        };
        match txn.shard.clone() {
            Some(s)
                if s != route.shard
                    && (txn.others.contains(&route.shard)
                        || self
                            .shared
                            .planner()
                            .multi_shard_best_effort(&self.plan_ctx())) =>
            {
                if self
                    .shard_txn
                    .as_ref()
                    .is_some_and(|t| t.others.contains(&route.shard))
                {
                    return Ok(true);
                }
                // Best effort: the transaction opens on this shard too.
                self.begin_also_on(route, reply_seq).await
            }
            Some(s) if s != route.shard => {
                let msg = format!(
                    "shardgate: this transaction runs on shard {s}; this statement needs shard {}: transactions across shards are refused (multi_shard_transactions = \"refuse\")",
                    route.shard
                );
                self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                Ok(false)
            }
            Some(_) => Ok(true),
            None => self.begin_on(route, reply_seq).await,
        }
    }

    /// Opens the transaction on one more shard (best effort mode); `false` after answering
    /// the client with an error.
    async fn begin_also_on(&mut self, route: &Route, reply_seq: u8) -> Result<bool, SessionError> {
        let begin = self
            .shard_txn
            .as_ref()
            .map(|t| t.begin.clone())
            .unwrap_or_default();
        if !begin.is_empty() {
            if let Err(e) = self.run_quietly(&route.addr, &begin).await {
                self.report(e, reply_seq).await?;
                return Ok(false);
            }
            if let Some(conn) = self.pinned.find(&route.addr) {
                conn.in_txn = true;
            }
        }
        self.hold.txn = true;
        if let Some(t) = &mut self.shard_txn {
            t.others.push(route.shard.clone());
        }
        Ok(true)
    }

    /// Starts the held-back transaction on `route`'s primary; `false` when the client was
    /// answered with an error instead.
    async fn begin_on(&mut self, route: &Route, reply_seq: u8) -> Result<bool, SessionError> {
        let Some(begin) = self.shard_txn.as_ref().map(|t| t.begin.clone()) else {
            return Ok(true);
        };
        if begin.is_empty() {
            // Autocommit off: the statement itself opens the transaction on the shard.
            self.hold.txn = true;
            if let Some(t) = &mut self.shard_txn {
                t.shard = Some(route.shard.clone());
            }
            return Ok(true);
        }
        match self.run_quietly(&route.addr, &begin).await {
            Ok(_) => {
                if let Some(conn) = self.pinned.find(&route.addr) {
                    conn.in_txn = true;
                }
                self.hold.txn = true;
                if let Some(t) = &mut self.shard_txn {
                    t.shard = Some(route.shard.clone());
                }
                Ok(true)
            }
            Err(e) => {
                self.shard_txn = None;
                self.report(e, reply_seq).await?;
                Ok(false)
            }
        }
    }

    /// The same statement on every shard's primary: all but the last answer the proxy, the
    /// last answers the client; the first refusal stops it and reaches the client.
    async fn broadcast(
        &mut self,
        routes: &[Route],
        class: &Arc<Class>,
        frame: &Frame,
    ) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let Some((last, rest)) = routes.split_last() else {
            return Ok(());
        };
        let sql = frame.payload()[1..].to_vec();
        for route in rest {
            if let Err(e) = self.run_quietly(&route.addr, &sql).await {
                return self.report(e, reply_seq).await;
            }
        }
        self.run_statement(last, class, None, Work::Query(frame))
            .await
    }

    /// A write on several shards' primaries, each its own statement (the same UPDATE/DELETE,
    /// or an INSERT's rows for that shard); one OK with the affected rows and warnings summed
    /// and the first insert id. Not atomic: the first error stops it and reaches the client.
    async fn write_each(
        &mut self,
        class: &Class,
        parts: Vec<(Route, Vec<u8>)>,
        insert: Inserted,
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        if parts.first().is_some_and(|(_, sql)| lex::returns_rows(sql)) {
            self.send_err(errcode::NOT_SUPPORTED, SPLIT_RETURNING, reply_seq)
                .await;
            return Ok(());
        }
        let parts: Vec<(Arc<str>, Vec<u8>)> =
            parts.into_iter().map(|(r, sql)| (r.addr, sql)).collect();
        let shared = self.shared.clone();
        let mut held = self.held_connections(&shared.pools);
        let out = split_write(&mut held, &parts, insert.multi_row).await;
        for addr in &out.wrote {
            self.note_write(addr, true).await;
        }
        let mut total = match out.result {
            Ok(total) => total,
            Err(e) => {
                // The shards before it kept their part.
                self.cache_invalidate_now(class);
                return self.report(e, reply_seq).await;
            }
        };
        if let Some(id) = insert.first_id.and_then(|id| u64::try_from(id).ok()) {
            total.ok.last_insert_id = id;
            self.remember_insert_id(id);
        }
        self.cache_invalidate_now(class);
        let mut out = BytesMut::new();
        put_ok_info(&mut out, reply_seq, self.caps, total.ok, &total.info());
        let _ = self.io.write_all(&out).await;
        Ok(())
    }

    /// An INSERT whose rows need shard-key values from a sequence: takes the ids, writes them
    /// into the statement, and runs it on the shard(s) they belong to. The client's OK carries
    /// the first id as its insert id, and `LAST_INSERT_ID()` returns it.
    #[allow(clippy::too_many_arguments)]
    async fn insert_with_sequence(
        &mut self,
        class: &Class,
        sql: &[u8],
        sequence: &str,
        key: &str,
        rows: usize,
        routes: &[Route],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        let Some(ids) = self.take_ids(sequence, rows, reply_seq).await? else {
            return Ok(());
        };
        let Some(text) = with_generated_keys(sql, key, &ids) else {
            let msg = "shardgate: could not add the generated keys to this INSERT's text";
            self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
            return Ok(());
        };
        let ctx = self.plan_ctx();
        let planned = self
            .shared
            .planner()
            .plan_shards(&text::parse_copy(&text), &ctx)
            .map(|(p, _)| p);
        let parts: Vec<(Route, Vec<u8>)> = match planned {
            Some(ShardPlan::One(i)) => routes
                .get(i)
                .map(|r| (r.clone(), text.clone()))
                .into_iter()
                .collect(),
            Some(ShardPlan::SplitInsert(parts)) => {
                split_parts(&parts, routes, &text).unwrap_or_default()
            }
            Some(ShardPlan::Reject(msg)) => {
                self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                return Ok(());
            }
            _ => Vec::new(),
        };
        if parts.is_empty() {
            let msg = "shardgate: the INSERT with generated keys could not be routed";
            self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
            return Ok(());
        }
        if !self.join_txn_on(&parts, reply_seq).await? {
            return Ok(());
        }
        let insert = Inserted {
            multi_row: rows > 1,
            first_id: ids.first().copied(),
        };
        self.write_each(class, parts, insert, reply_seq).await
    }

    /// `n` ids from `sequence` (see `executor::sequence`); `None` after answering the client
    /// with an error.
    async fn take_ids(
        &mut self,
        sequence: &str,
        n: usize,
        reply_seq: u8,
    ) -> Result<Option<Vec<i64>>, SessionError> {
        let place = self.shared.planner().sequence_keyspace(&self.plan_ctx());
        let table = place.as_ref().map(|(keyspace, route)| SequenceTable {
            keyspace,
            addr: &route.addr,
            user: &self.user.name,
            password: &self.secret,
            key: self.conn_key(),
        });
        let shared = self.shared.clone();
        match take_ids(&shared.pools, &shared.sequences, sequence, n, table).await {
            Ok(ids) => Ok(Some(ids)),
            Err(SequenceError::Database(e)) => {
                self.report(ExecError::Database(e), reply_seq).await?;
                Ok(None)
            }
            Err(SequenceError::Connect(e)) => {
                self.report(ExecError::Connect(e), reply_seq).await?;
                Ok(None)
            }
            Err(e) => {
                self.send_err(errcode::UNKNOWN, &e.to_string(), reply_seq)
                    .await;
                Ok(None)
            }
        }
    }

    /// Ends the session's sharded transaction with `sql` (COMMIT or ROLLBACK) on every shard
    /// it opened, the later ones first; the client is not answered.
    async fn end_shard_txn(&mut self, sql: &[u8]) -> Result<(), ExecError> {
        let Some(t) = self.shard_txn.take() else {
            return Ok(());
        };
        let shards: Vec<Arc<str>> = t
            .others
            .iter()
            .rev()
            .chain(t.shard.iter())
            .cloned()
            .collect();
        let mut first_err = None;
        for s in shards {
            let Some(r) = self.shared.planner().shard_route(&self.plan_ctx(), &s) else {
                continue;
            };
            if !self.pinned.find(&r.addr).is_some_and(|c| c.in_txn) {
                continue;
            }
            if let Err(e) = self.run_quietly(&r.addr, sql).await {
                first_err.get_or_insert(e);
            }
            if let Some(conn) = self.pinned.find(&r.addr) {
                conn.in_txn = false;
            }
        }
        // A connection still in the transaction on a shard the map no longer names (a reshard
        // cutover removed it meanwhile): rolled back, whatever ended the rest, so that no
        // write reaches the old owner now and its locks go (they would stall the cleanup).
        let left: Vec<Arc<str>> = self
            .pinned
            .iter_mut()
            .filter(|c| c.in_txn)
            .map(|c| c.addr.clone())
            .collect();
        for addr in left {
            tracing::warn!(server = %addr, "rolling back a transaction on a shard the map no longer names");
            let _ = self.run_quietly(&addr, b"ROLLBACK").await;
            if let Some(conn) = self.pinned.find(&addr) {
                conn.in_txn = false;
            }
        }
        self.hold.txn = self.pinned.in_txn();
        first_err.map_or(Ok(()), Err)
    }

    /// A statement the planner cannot read: a shard's server prepares it (which parses it and
    /// runs nothing), so a syntax error gets the server's own ERR (1064, 42000, "near ...");
    /// one the server can read is refused with the planner's reason, never run on a shard it
    /// may not belong to.
    async fn server_judges(
        &mut self,
        route: &Route,
        sql: &[u8],
        refusal: &str,
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        let shared = self.shared.clone();
        let who = who!(self, self.db.as_deref());
        let held = self.pinned.find(&route.addr).is_some();
        let r = match executor::connection(&shared.pools, &mut self.pinned, &route.addr, &who).await
        {
            Ok(conn) => prepare_silently(conn, &Arc::from(sql))
                .await
                .map_err(ExecError::from),
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.pinned.discard(&route.addr);
        } else if !held {
            self.pinned.release(&route.addr);
        }
        match r {
            Ok(Err(e)) if e.code != errcode::UNSUPPORTED_PS.0 => {
                self.send_err((e.code, &e.state), &e.message, reply_seq)
                    .await;
                Ok(())
            }
            Ok(_) => {
                self.send_err(errcode::UNKNOWN, refusal, reply_seq).await;
                Ok(())
            }
            Err(e) => self.report(e, reply_seq).await,
        }
    }

    /// A deadlock rolled back the statement's shard's part of a multi-shard transaction, as
    /// MariaDB rolls back a whole transaction: the other shards' parts are rolled back too, so
    /// that nothing of it can be committed later.
    pub(super) async fn abort_shard_txn(&mut self) {
        if let Err(e) = self.end_shard_txn(b"ROLLBACK").await {
            tracing::debug!(error = %e, "rolling back a deadlocked transaction's other shards failed");
        }
    }

    /// Runs `sql` (answered by one OK or ERR) on the session's connection to `addr` for the
    /// proxy's own purposes: the client does not see the answer.
    async fn run_quietly(&mut self, addr: &Arc<str>, sql: &[u8]) -> Result<OkInfo, ExecError> {
        Ok(self.run_for_ok(addr, sql).await?.0)
    }

    /// The session's connections, for the executor's statements.
    fn held_connections<'s>(&'s mut self, pools: &'s crate::backend::Pools) -> HeldConnections<'s> {
        let key = self.conn_key();
        HeldConnections {
            pools,
            pinned: &mut self.pinned,
            who: identity(
                &self.user,
                &self.secret,
                key,
                self.db.as_deref(),
                &self.vars,
            ),
        }
    }

    /// [`Session::run_quietly`], with the OK's info text.
    async fn run_for_ok(
        &mut self,
        addr: &Arc<str>,
        sql: &[u8],
    ) -> Result<(OkInfo, Vec<u8>), ExecError> {
        let shared = self.shared.clone();
        let mut held = self.held_connections(&shared.pools);
        held.run_for_ok(addr, sql).await
    }

    /// Where a COM_STMT_PREPARE runs, and on a sharded keyspace where its executes run;
    /// `None` after answering the client with an error.
    /// `uses_previous`: the statement reads what the previous one left (SHOW WARNINGS...), so
    /// it is prepared where that ran, leaving it in place.
    pub(super) async fn prepare_route(
        &mut self,
        frame: &Frame,
        uses_previous: bool,
    ) -> Option<(Route, StmtShards)> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let payload = frame.payload();
        let sql = text::parse_copy(payload.get(1..).unwrap_or_default());
        let planned = self.plan_shards_reading_columns(&sql).await;
        let Some((plan, routes)) = planned else {
            return self.route(reply_seq).await.map(|r| (r, StmtShards::Fixed));
        };
        let ctx = self.plan_ctx();
        let first = routes.first()?.clone();
        match plan {
            ShardPlan::One(i) => Some((routes.get(i).cloned().unwrap_or(first), StmtShards::Fixed)),
            ShardPlan::Any => {
                let previous = self
                    .last_server
                    .as_ref()
                    .filter(|_| uses_previous)
                    .and_then(|a| self.shared.planner().route_serving(&ctx, a));
                Some((previous.unwrap_or(first), StmtShards::Fixed))
            }
            // Prepared anywhere (every shard has the same tables); executed on the shard of
            // the parameter's value, or on several shards.
            ShardPlan::Param(p) => Some((first, StmtShards::Key(p))),
            ShardPlan::Scatter(_) | ShardPlan::ScatterWrite(_) => Some((first, StmtShards::Multi)),
            ShardPlan::MergeSorted(spec) => {
                if lex::placeholders(spec.sql.as_bytes()) != lex::placeholders(sql.as_bytes()) {
                    let msg = "shardgate: this prepared read of several shards would need its parameters rewritten (a parameter in its LIMIT or inside AVG); use literals there";
                    self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
                    return None;
                }
                Some((first, StmtShards::Multi))
            }
            ShardPlan::SplitInsert(_) | ShardPlan::Sequence { .. } => {
                let msg = "shardgate: a prepared INSERT with rows for several shards or taking sequence ids is not supported yet; send it as a query";
                self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
                None
            }
            ShardPlan::All => {
                let msg = "shardgate: prepared DDL and reference-table writes are not supported on a sharded keyspace yet";
                self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
                None
            }
            ShardPlan::Reject(msg) => {
                self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                None
            }
            ShardPlan::NeedColumns(table) => {
                self.send_err(errcode::UNKNOWN, &columns_unknown(&table), reply_seq)
                    .await;
                None
            }
            ShardPlan::NotUnderstood(msg) => {
                let raw = frame.payload();
                let sql = raw.get(1..).unwrap_or_default();
                if let Err(e) = self.server_judges(&first, sql, &msg, reply_seq).await {
                    tracing::debug!(error = %e, "answering a statement the planner cannot read");
                }
                None
            }
        }
    }

    /// Where a COM_STMT_EXECUTE runs: the statement's route, or on a sharded keyspace the
    /// shard of its key parameter (and of the session's transaction). `None` after answering
    /// the client with an error.
    pub(super) async fn execute_route(
        &mut self,
        route: Route,
        frame: &Frame,
        client_id: u32,
    ) -> Result<Option<Route>, SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let Some(info) = self.stmts.get(client_id) else {
            return Ok(Some(route));
        };
        let previous = std::mem::take(&mut self.last_server);
        let route = match info.shards {
            // SHOW WARNINGS, ROW_COUNT()...: where the previous statement ran (see
            // `sharded_statement`).
            StmtShards::Fixed if info.class.uses_previous => previous
                .and_then(|a| self.shared.planner().route_serving(&self.plan_ctx(), &a))
                .unwrap_or(route),
            StmtShards::Fixed | StmtShards::Multi => route,
            StmtShards::Key(p) => {
                let payload = frame.payload();
                let value = param_value(&payload, info.params, info.types.as_deref(), p);
                match self.key_route(value) {
                    Some(r) => r,
                    None => {
                        drop(payload);
                        let msg = unroutable_key(p);
                        self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                        return Ok(None);
                    }
                }
            }
        };
        let sharded = self.shared.planner().is_sharded(&self.plan_ctx());
        if sharded {
            self.implicit_txn();
        }
        if sharded && !self.bind_txn(&route, reply_seq).await? {
            return Ok(None);
        }
        Ok(Some(route))
    }

    /// The shard of a shard-key parameter's value; `None` for a value no shard owns.
    pub(super) fn key_route(&self, value: Option<ParamValue<'_>>) -> Option<Route> {
        let key = key_value(value?)?;
        self.shared.planner().route_for_key(&self.plan_ctx(), &key)
    }

    /// A read on several shards, concatenated or merged. Inside a transaction, with
    /// `multi_shard_transactions = "best_effort"` every shard it reads joins the transaction;
    /// otherwise the transaction's own shard answers from within it and the other shards from
    /// their primaries outside it (where a locking read would take locks no COMMIT releases:
    /// refused).
    pub(super) async fn multi_shard_read(
        &mut self,
        read: &ShardPlan,
        routes: &[Route],
        class: &Arc<Class>,
        hint: Option<Hint>,
        request: &Request<'_>,
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        let pick = |shards: &[usize]| -> Vec<Route> {
            shards
                .iter()
                .filter_map(|&i| routes.get(i).cloned())
                .collect()
        };
        let targets = match read {
            ShardPlan::MergeSorted(spec) => pick(&spec.shards),
            ShardPlan::Scatter(shards) => pick(shards),
            _ => return Ok(()),
        };
        let in_txn = self.shard_txn.is_some();
        if in_txn
            && self
                .shared
                .planner()
                .multi_shard_best_effort(&self.plan_ctx())
        {
            for r in &targets {
                if !self.bind_txn(r, reply_seq).await? {
                    return Ok(());
                }
            }
        } else if in_txn && class.kind == Kind::LockingRead {
            let msg = "shardgate: a locking read of several shards inside a transaction needs multi_shard_transactions = \"best_effort\" (each shard must join the transaction)";
            self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
            return Ok(());
        }
        let spec = match read {
            ShardPlan::MergeSorted(spec) => Some(spec),
            _ => None,
        };
        self.multi_read(&targets, spec, class, hint, request, in_txn, reply_seq)
            .await?;
        self.end_outside_reads().await;
        Ok(())
    }

    /// The shards the session's transaction has opened on.
    fn txn_primaries(&self) -> Vec<Arc<str>> {
        let Some(t) = &self.shard_txn else {
            return Vec::new();
        };
        let ctx = self.plan_ctx();
        t.shard
            .iter()
            .chain(&t.others)
            .filter_map(|s| self.shared.planner().shard_route(&ctx, s))
            .map(|r| r.addr)
            .collect()
    }

    /// Connections a multi-shard read used outside the session's transaction go back to the
    /// pool; with autocommit off the server opened a transaction on each: commit it first
    /// (it only read), so they go back clean and the session's transaction stays where it is.
    async fn end_outside_reads(&mut self) {
        if self.hold.life.is_some() {
            return;
        }
        let keep = self.txn_primaries();
        let mut done = Vec::new();
        for conn in self.pinned.iter_mut() {
            if conn.in_flight || keep.contains(&conn.addr) {
                continue;
            }
            if conn.in_txn {
                match conn.simple_command(com::QUERY, b"COMMIT").await {
                    Ok(Ok(_)) => conn.in_txn = false,
                    _ => conn.broken = true,
                }
            }
            done.push(conn.addr.clone());
        }
        for addr in done {
            self.pinned.release(&addr);
        }
    }

    /// A COM_STMT_EXECUTE of a statement that runs on several shards: planned again (from the
    /// plan cache), its binary rows merged like a query's text rows, its writes run on each
    /// shard's primary.
    pub(super) async fn execute_on_shards(
        &mut self,
        frame: &Frame,
        client_id: u32,
        class: Arc<Class>,
        hint: Option<Hint>,
    ) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let Some(info) = self.stmts.get(client_id) else {
            return Ok(());
        };
        let raw = info.sql.clone();
        let sql = text::parse_copy(&raw);
        let Some((plan, routes)) = self.plan_shards_reading_columns(&sql).await else {
            return Ok(());
        };
        self.implicit_txn();
        match plan {
            read @ (ShardPlan::Scatter(_) | ShardPlan::MergeSorted(_)) => {
                let rewrite = match &read {
                    ShardPlan::MergeSorted(spec) if spec.sql != sql => {
                        match text::restore(&raw, &sql, &spec.sql) {
                            Some(b) => Some(Arc::<[u8]>::from(b)),
                            None => {
                                self.send_err(errcode::UNKNOWN, UNPLACEABLE, reply_seq)
                                    .await;
                                return Ok(());
                            }
                        }
                    }
                    _ => None,
                };
                let request = Request::Execute {
                    frame,
                    id: client_id,
                    sql: rewrite,
                };
                self.multi_shard_read(&read, &routes, &class, hint, &request, reply_seq)
                    .await
            }
            ShardPlan::ScatterWrite(shards) => {
                let targets: Vec<(Route, Vec<u8>)> = shards
                    .iter()
                    .filter_map(|&i| Some((routes.get(i)?.clone(), Vec::new())))
                    .collect();
                if !self.join_txn_on(&targets, reply_seq).await? {
                    return Ok(());
                }
                let commands = targets.into_iter().map(|(r, _)| (r, frame.clone()));
                self.execute_each(&class, commands.collect(), client_id, reply_seq)
                    .await
            }
            ShardPlan::Reject(msg) => {
                self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                Ok(())
            }
            _ => {
                let msg = "shardgate: the shard map changed since this statement was prepared: prepare it again";
                self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
                Ok(())
            }
        }
    }

    /// A prepared write on several shards' primaries, each its command (the client's execute,
    /// or bulk execute of that shard's rows); one OK with the affected rows summed. Not
    /// atomic: the first error stops it and reaches the client.
    pub(super) async fn execute_each(
        &mut self,
        class: &Class,
        targets: Vec<(Route, Frame)>,
        client_id: u32,
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        if self
            .stmts
            .get(client_id)
            .is_some_and(|s| lex::returns_rows(&s.sql))
        {
            self.send_err(errcode::NOT_SUPPORTED, SPLIT_RETURNING, reply_seq)
                .await;
            return Ok(());
        }
        let mut total = OkSum::new(false);
        for (route, frame) in &targets {
            let addr = &route.addr;
            if let Err(e) = self.ready_connection(addr, None).await {
                self.cache_invalidate_now(class);
                return self.report(e, reply_seq).await;
            }
            let command = match self.statement_on_conn(addr, frame, client_id, None).await {
                Ok(Ok(f)) => f,
                Ok(Err((code, state, msg))) => {
                    self.cache_invalidate_now(class);
                    self.send_err((code, &state), &msg, reply_seq).await;
                    return Ok(());
                }
                Err(e) => {
                    self.cache_invalidate_now(class);
                    return self.report(e, reply_seq).await;
                }
            };
            let Some(conn) = self.pinned.find(addr) else {
                continue;
            };
            let payload = command.payload();
            let (cmd, args) = payload.split_first().unwrap_or((&com::STMT_EXECUTE, &[]));
            let r = conn.command_ok(*cmd, args).await;
            match r {
                Ok(Ok((ok, info))) => {
                    conn.in_txn = ok.status & status::IN_TRANS != 0;
                    total.add(&ok, &info);
                    self.note_write(addr, true).await;
                }
                Ok(Err(e)) => {
                    self.cache_invalidate_now(class);
                    return self.report(ExecError::Database(e), reply_seq).await;
                }
                Err(e) => {
                    self.pinned.discard(addr);
                    self.cache_invalidate_now(class);
                    return self.report(ExecError::Connect(e), reply_seq).await;
                }
            }
        }
        self.cache_invalidate_now(class);
        if total.ok.last_insert_id != 0 {
            // The first shard's id (a bulk's first row's); each shard's connection has its own.
            self.remember_insert_id(total.ok.last_insert_id);
        }
        let mut out = BytesMut::new();
        put_ok_info(&mut out, reply_seq, self.caps, total.ok, &total.info());
        let _ = self.io.write_all(&out).await;
        Ok(())
    }

    /// `LAST_INSERT_ID()` of a write the proxy answered itself, on whichever connection serves
    /// the session next.
    fn remember_insert_id(&mut self, id: u64) {
        let var = crate::backend::vars::Var::System("last_insert_id".into());
        self.vars = self.vars.with([(var, Some(id.to_string()))]);
    }

    /// With autocommit off every statement is in a transaction: the first that names a shard
    /// binds it, as after a BEGIN (nothing to send: the server opens it itself).
    pub(super) fn implicit_txn(&mut self) {
        if !self.vars.autocommit() && self.shard_txn.is_none() {
            self.shard_txn = Some(self.new_shard_txn(Vec::new()));
        }
    }

    /// A transaction opening on the session's keyspace (`begin` empty: opened implicitly by
    /// autocommit off), counted open on that keyspace's gate.
    fn new_shard_txn(&self, begin: Vec<u8>) -> ShardTxn {
        let planner = self.shared.planner();
        let token = planner.sharded_keyspace(&self.plan_ctx()).map(|k| {
            let gate = self.shared.ha.keyspaces.gate(k);
            if self.cmd_uncounted {
                gate.txn_begins_uncounted()
            } else {
                gate.txn_begins()
            }
        });
        let planner = planner.clone();
        ShardTxn {
            begin,
            shard: None,
            others: Vec::new(),
            token,
            // An implicit one opens within its first statement.
            touched: self.cmd_touched.clone(),
            planner,
        }
    }

    /// `SET autocommit = 1` commits what autocommit 0 had open; a value only the server knew
    /// (an expression) did so where the SET ran: the other shards' parts commit now.
    async fn end_implicit_txn(&mut self) {
        if self.vars.autocommit() && self.shard_txn.as_ref().is_some_and(|t| t.begin.is_empty()) {
            if let Err(e) = self.end_shard_txn(b"COMMIT").await {
                tracing::warn!(error = %e, "committing a transaction's other shards at SET autocommit = 1 failed");
            }
        }
    }

    pub(super) async fn send_status_ok(&mut self, seq: u8, status: u16) {
        let mut out = BytesMut::new();
        let ok = OkInfo {
            status,
            ..OkInfo::default()
        };
        put_ok(&mut out, seq, self.caps, ok);
        let _ = self.io.write_all(&out).await;
    }
}

/// Each shard's part of a split INSERT, cut from `client` (the statement that was planned);
/// `None` if one cannot be (no row may be left out).
fn split_parts(
    parts: &[(usize, Spliced)],
    routes: &[Route],
    client: &[u8],
) -> Option<Vec<(Route, Vec<u8>)>> {
    parts
        .iter()
        .map(|(i, s)| Some((routes.get(*i)?.clone(), s.render(client)?)))
        .collect()
}

/// Why a shard-key parameter (`p`, from 0) cannot route its execute.
pub(super) fn unroutable_key(p: usize) -> String {
    format!(
        "shardgate: parameter {} is the shard key: it must be an integer, a string or a number without a fraction, not NULL, a number with a fraction or a date",
        p + 1
    )
}

/// A SET that turns autocommit on by a literal or DEFAULT.
fn sets_autocommit_on(class: &Class) -> bool {
    let Kind::Set(assignments) = &class.kind else {
        return false;
    };
    assignments.iter().any(|a| {
        a.name == VarName::System("autocommit".into())
            && match &a.value {
                Value::Literal(v) => !crate::backend::vars::is_off(v),
                Value::Default => true,
                Value::Expr => false,
            }
    })
}

/// A shard-key parameter's value as the ring hashes it; `None` for one no shard owns.
pub(super) fn key_value(value: ParamValue<'_>) -> Option<KeyValue<'_>> {
    Some(match value {
        ParamValue::Int(v) => KeyValue::Int(v),
        ParamValue::Bytes(b) => KeyValue::from_string_content(b),
        ParamValue::Decimal(d) => KeyValue::from_number_text(d),
        ParamValue::Float(f) => KeyValue::from_double(f)?,
        ParamValue::Null | ParamValue::Other => return None,
    })
}
