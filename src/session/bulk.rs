//! COM_STMT_BULK_EXECUTE (MariaDB, `ext_cap::STMT_BULK_OPERATIONS`): many rows of parameters
//! for one prepared statement in one command, answered by one OK or ERR (Connector/J's
//! `executeBatch()`). It runs as an execute does: the statement is prepared on the chosen
//! connection if new to it and the command's statement id rewritten; rows are never re-encoded.
//!
//! On a sharded keyspace: a statement on one shard gets the whole command; one routed by a
//! shard-key parameter has its rows grouped by shard, each shard getting one bulk of its rows
//! (cut from the client's bytes) and the client one OK summing theirs; a write of every shard
//! (no key) gets the whole command on each shard, as each row's execute would have run there.

use super::statements::StmtShards;
use super::{command_frame, id_after_command, Session, SessionError};
use crate::backend::bulk::{Bulk, BulkParam, SEND_TYPES_TO_SERVER, SEND_UNIT_RESULTS};
use crate::planner::classify::{Class, Hint, Kind};
use crate::planner::Route;
use crate::protocol::consts::{errcode, ext_cap};
use crate::protocol::packet::Frame;

use super::dispatch::Work;
use super::sharded::unroutable_key;
use std::sync::Arc;

impl Session {
    pub(super) async fn bulk_execute(&mut self, frame: Frame) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        if self.ext_caps & ext_cap::STMT_BULK_OPERATIONS == 0 {
            let msg = "Unknown command 0xfa (bulk operations were not negotiated)";
            self.send_err(errcode::UNKNOWN_COM, msg, reply_seq).await;
            return Ok(());
        }
        let flags = frame
            .raw
            .get(9..11)
            .map(|f| u16::from_le_bytes([f[0], f[1]]));
        let (Some(client_id), Some(flags)) = (id_after_command(&frame), flags) else {
            let msg = "Malformed communication packet";
            self.send_err(errcode::MALFORMED_PACKET, msg, reply_seq)
                .await;
            return Ok(());
        };
        if flags & SEND_TYPES_TO_SERVER == 0 {
            // The server would read the rows with whatever types its statement was last bound
            // with, on a connection other sessions share.
            let msg = "shardgate: COM_STMT_BULK_EXECUTE must send its parameter types";
            self.send_err(errcode::MALFORMED_PACKET, msg, reply_seq)
                .await;
            return Ok(());
        }
        let Some(info) = self.stmts.get(client_id) else {
            let msg = format!(
                "Unknown prepared statement handler ({client_id}) given to mysqld_stmt_bulk_execute"
            );
            self.send_err(errcode::UNKNOWN_STMT_HANDLER, &msg, reply_seq)
                .await;
            return Ok(());
        };
        let route = self.current_route(&info.route);
        let (class, hint, shards) = (info.class.clone(), info.hint, info.shards);
        let params = info.params;
        if !self.shared.planner().is_sharded(&self.plan_ctx()) {
            return self
                .run_statement(&route, &class, hint, Work::Execute(&frame, client_id))
                .await;
        }
        if flags & SEND_UNIT_RESULTS != 0 {
            // Per-row results were not negotiated (the proxy does not offer BULK_UNIT_RESULTS).
            let msg = "shardgate: COM_STMT_BULK_EXECUTE with SEND_UNIT_RESULTS is not supported on a sharded keyspace";
            self.send_err(errcode::NOT_SUPPORTED, msg, reply_seq).await;
            return Ok(());
        }
        match shards {
            StmtShards::Fixed => {
                // Joins the session's transaction as an execute does.
                match self.execute_route(route, &frame, client_id).await? {
                    Some(r) => {
                        self.run_statement(&r, &class, hint, Work::Execute(&frame, client_id))
                            .await
                    }
                    None => Ok(()),
                }
            }
            StmtShards::Multi if matches!(class.kind, Kind::Read | Kind::LockingRead) => {
                // MariaDB's own answer to a bulk of a statement with a result set (a read of
                // one shard gets it from its server, above).
                let msg = "This command is not supported in the prepared statement protocol yet";
                self.send_err(errcode::UNSUPPORTED_PS, msg, reply_seq).await;
                Ok(())
            }
            // A write without a shard key runs on every shard it may touch: each row's execute
            // would have run on each of them, so each gets all the rows.
            StmtShards::Multi => self.execute_on_shards(&frame, client_id, class, hint).await,
            StmtShards::Key(p) => {
                let key = BulkKey {
                    client_id,
                    params,
                    p,
                };
                self.bulk_by_key(&frame, key, route, &class, hint).await
            }
        }
    }

    /// A bulk of a statement routed by its shard-key parameter: the rows grouped by shard
    /// (in the order of their first rows), one bulk per shard. Rows for one shard only: the
    /// client's command as it came.
    async fn bulk_by_key(
        &mut self,
        frame: &Frame,
        key: BulkKey,
        route: Route,
        class: &Arc<Class>,
        hint: Option<Hint>,
    ) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let payload = frame.payload();
        let bulk = match Bulk::parse(&payload, key.params) {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("Malformed communication packet ({e})");
                self.send_err(errcode::MALFORMED_PACKET, &msg, reply_seq)
                    .await;
                return Ok(());
            }
        };
        let mut groups: Vec<(Route, Vec<usize>)> = Vec::new();
        for row in 0..bulk.rows.len() {
            let value = match bulk.param(&payload, row, key.p) {
                Some(BulkParam::Value(v)) => Some(v),
                _ => None,
            };
            let Some(r) = self.key_route(value) else {
                let msg = format!("{} (row {} of the bulk)", unroutable_key(key.p), row + 1);
                self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                return Ok(());
            };
            match groups.iter_mut().find(|(g, _)| g.shard == r.shard) {
                Some((_, rows)) => rows.push(row),
                None => groups.push((r, vec![row])),
            }
        }
        if groups.len() <= 1 {
            let route = groups.pop().map_or(route, |(r, _)| r);
            self.implicit_txn();
            if !self.bind_txn(&route, reply_seq).await? {
                return Ok(());
            }
            return self
                .run_statement(&route, class, hint, Work::Execute(frame, key.client_id))
                .await;
        }
        let commands: Vec<(Route, Frame)> = groups
            .into_iter()
            .map(|(r, rows)| {
                (
                    r,
                    command_frame(&bulk.with_rows(&payload, &rows), frame.last_seq),
                )
            })
            .collect();
        drop(payload);
        // In autocommit each shard's bulk commits on its own (best effort, as a split
        // multi-row INSERT); in a transaction each shard joins it.
        self.implicit_txn();
        let parts: Vec<(Route, Vec<u8>)> = commands
            .iter()
            .map(|(r, _)| (r.clone(), Vec::new()))
            .collect();
        if !self.join_txn_on(&parts, reply_seq).await? {
            return Ok(());
        }
        self.execute_each(class, commands, key.client_id, reply_seq)
            .await
    }
}

/// A bulk's statement: the client's id for it, its parameters, and which is the shard key.
struct BulkKey {
    client_id: u32,
    params: u16,
    p: usize,
}
