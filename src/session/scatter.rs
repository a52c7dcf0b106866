//! Reads that need rows from several shards: the session picks each shard's server, takes
//! the connections and sends the statement to all of them; the executor's primitives
//! (`concat`, `merged_read`) read the shards' answers and build the client's.

use std::sync::Arc;

use super::route::Choice;
use super::{Session, SessionError};

use crate::executor::concat::concat;
use crate::executor::merged_read::merged_read;
use crate::executor::shard_rows::HeldShards;
use crate::executor::sink::ClientSink;
use crate::executor::ExecError;
use crate::planner::classify::{Class, Hint};
use crate::planner::shard::MergeSpec;
use crate::planner::Route;
use crate::protocol::consts::cap;
use crate::protocol::packet::Frame;

/// What every shard of a multi-shard read runs.
pub(super) enum Request<'a> {
    /// A COM_QUERY of this text (the client's, or the planner's rewrite of it).
    Query(&'a [u8]),
    /// The client's COM_STMT_EXECUTE of its statement `id`; `sql` replaces the statement's
    /// text on the shards (the planner's rewrite, with the same parameters).
    Execute {
        frame: &'a Frame,
        id: u32,
        sql: Option<Arc<[u8]>>,
    },
}

impl Request<'_> {
    /// Rows come in the binary protocol (an execute) rather than as text.
    fn binary(&self) -> bool {
        matches!(self, Request::Execute { .. })
    }
}

impl Session {
    /// Sends the read to every target, then runs the executor's primitive over the held
    /// connections: concatenation (no order asked for, nothing to fold), or the merge `spec`
    /// describes (ORDER BY, groups, OFFSET/LIMIT: see `executor::merged_read`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn multi_read(
        &mut self,
        targets: &[Route],
        spec: Option<&MergeSpec>,
        class: &Arc<Class>,
        hint: Option<Hint>,
        request: &Request<'_>,
        in_txn: bool,
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        let Some(addrs) = self
            .open_shards(targets, class, hint, request, in_txn, reply_seq)
            .await?
        else {
            return Ok(());
        };
        let mut shards = HeldShards {
            pinned: &mut self.pinned,
            addrs: &addrs,
            deprecate_eof: self.caps & cap::DEPRECATE_EOF != 0,
        };
        let mut sink = ClientSink::new(&mut self.io, reply_seq, self.caps);
        let r = match spec {
            Some(spec) => merged_read(&mut shards, &mut sink, spec, request.binary()).await,
            None => concat(&mut shards, &mut sink).await,
        };
        r.map_err(|lost| {
            let addr = addrs.get(lost.shard).cloned().unwrap_or_else(|| "?".into());
            SessionError::Forward(crate::backend::forward::ForwardError::Backend {
                addr: addr.to_string(),
                msg: lost.msg,
                sent: true,
            })
        })
    }

    /// Takes the connection to `addr` (the primary of `route` if a replica cannot be had,
    /// lacks the session's database or has not applied its last write).
    async fn connect_for_scatter(
        &mut self,
        addr: &Arc<str>,
        route: &Route,
    ) -> Result<Arc<str>, ExecError> {
        let on_replica = *addr != route.addr;
        match self
            .ready_connection(addr, on_replica.then_some(&route.addr))
            .await
        {
            Ok(true) => return Ok(addr.clone()),
            Ok(false) => {}
            // Not replicated there yet: the replica is fine, the primary answers.
            Err(ExecError::Database(_)) if on_replica => self.pinned.release(addr),
            Err(_) if on_replica => {
                if let Some(h) = self.shared.health.get(addr) {
                    h.mark_down();
                }
            }
            Err(e) => return Err(e),
        }
        self.ready_connection(&route.addr, None).await?;
        Ok(route.addr.clone())
    }

    fn discard_all(&mut self, addrs: &[Arc<str>]) {
        for a in addrs {
            self.pinned.discard(a);
        }
    }

    /// Before a request went out to some shards: those it reached must not be reused, the
    /// others are fine.
    fn discard_unsent(&mut self, addrs: &[Arc<str>]) {
        for a in addrs {
            if self.pinned.find(a).is_some_and(|c| c.in_flight) {
                self.pinned.discard(a);
            }
        }
    }
}

impl Session {
    /// Connects to each target's chosen server (its primary inside a transaction) and sends
    /// `request` to all of them; `None` after telling the client why it could not.
    async fn open_shards(
        &mut self,
        targets: &[Route],
        class: &Arc<Class>,
        hint: Option<Hint>,
        request: &Request<'_>,
        in_txn: bool,
        reply_seq: u8,
    ) -> Result<Option<Vec<Arc<str>>>, SessionError> {
        let mut addrs: Vec<Arc<str>> = Vec::with_capacity(targets.len());
        for route in targets {
            let addr = match self.choose(route, class, hint, &[], in_txn) {
                Choice::Replica(r) => r.addr().clone(),
                Choice::Held(a) => a,
                Choice::Primary => route.addr.clone(),
            };
            match self.connect_for_scatter(&addr, route).await {
                Ok(a) => addrs.push(a),
                Err(e) => {
                    self.report(e, reply_seq).await?;
                    return Ok(None);
                }
            }
        }
        let query = match request {
            Request::Query(sql) => Some(super::query_frame(sql, reply_seq.wrapping_sub(1))),
            Request::Execute { .. } => None,
        };
        for addr in &addrs {
            let command = match (&query, request) {
                (Some(q), _) => q.clone(),
                (None, Request::Execute { frame, id, sql }) => {
                    match self.statement_on_conn(addr, frame, *id, sql.as_ref()).await {
                        Ok(Ok(f)) => f,
                        Ok(Err((code, state, msg))) => {
                            self.discard_unsent(&addrs);
                            self.send_err((code, &state), &msg, reply_seq).await;
                            return Ok(None);
                        }
                        Err(e) => {
                            self.discard_all(&addrs);
                            self.report(e, reply_seq).await?;
                            return Ok(None);
                        }
                    }
                }
                (None, Request::Query(_)) => continue,
            };
            let Some(conn) = self.pinned.find(addr) else {
                continue;
            };
            conn.in_flight = true;
            if let Err(e) = conn.io.write_all(&command.raw).await {
                let msg = format!("shardgate: lost connection to backend {addr}: {e}");
                self.discard_all(&addrs);
                self.send_err(crate::protocol::consts::errcode::UNKNOWN, &msg, reply_seq)
                    .await;
                return Ok(None);
            }
        }
        Ok(Some(addrs))
    }
}
