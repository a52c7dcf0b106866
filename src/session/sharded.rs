//! Statements on a sharded keyspace: each runs on the shard its shard key names, DDL and
//! reference-table writes on every shard, and a transaction on the shard of its first
//! statement (BEGIN is held back until then, as the shard is not known before).

use std::sync::Arc;

use bytes::BytesMut;

use super::dispatch::Work;
use super::{identity, Session, SessionError};
use crate::executor::{self, ExecError};
use crate::planner::classify::{Class, Hint, Kind};
use crate::planner::{Route, ShardPlan};
use crate::protocol::consts::{com, errcode, status};
use crate::protocol::packet::{put_ok, Frame, OkInfo};

/// A transaction on a sharded keyspace.
pub struct ShardTxn {
    /// The client's BEGIN / START TRANSACTION, run on the shard once it is known.
    begin: Vec<u8>,
    /// The shard it runs on, once a statement chose one.
    shard: Option<Arc<str>>,
}

impl Session {
    pub(super) async fn sharded_statement(
        &mut self,
        class: Arc<Class>,
        hint: Option<Hint>,
        frame: Frame,
    ) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let sql = String::from_utf8_lossy(&frame.payload()[1..]).into_owned();
        if !self.vars.autocommit() {
            let msg = "shardgate: autocommit=0 is not supported on a sharded keyspace yet; use BEGIN ... COMMIT";
            self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
            return Ok(());
        }
        match class.kind {
            Kind::Begin { .. } if self.shard_txn.as_ref().is_none_or(|t| t.shard.is_none()) => {
                self.shard_txn = Some(ShardTxn {
                    begin: frame.payload()[1..].to_vec(),
                    shard: None,
                });
                self.send_status_ok(reply_seq, status::IN_TRANS | status::AUTOCOMMIT)
                    .await;
                return Ok(());
            }
            Kind::EndTransaction => {
                let shard = self.shard_txn.take().and_then(|t| t.shard);
                let route =
                    shard.and_then(|s| self.shared.planner.shard_route(&self.plan_ctx(), &s));
                match route {
                    Some(r) => {
                        return self
                            .run_statement(&r, &class, hint, Work::Query(&frame))
                            .await
                    }
                    None => {
                        // Nothing ran: nothing to commit or roll back.
                        self.send_status_ok(reply_seq, status::AUTOCOMMIT).await;
                        return Ok(());
                    }
                }
            }
            _ => {}
        }
        let ctx = self.plan_ctx();
        let Some((plan, routes)) = self.shared.planner.plan_shards(&sql, &ctx) else {
            return Ok(());
        };
        let routes: Vec<Route> = routes.to_vec();
        let in_txn_shard = self.shard_txn.as_ref().and_then(|t| t.shard.clone());
        let route = match plan {
            ShardPlan::Reject(msg) => {
                self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                return Ok(());
            }
            ShardPlan::All => {
                if self.shard_txn.is_some() {
                    let msg = "shardgate: DDL and reference-table writes inside a transaction are not supported on a sharded keyspace";
                    self.send_err(errcode::UNKNOWN, msg, reply_seq).await;
                    return Ok(());
                }
                return self.broadcast(&routes, &class, &frame).await;
            }
            ShardPlan::One(i) => routes[i].clone(),
            // Anywhere: the transaction's shard if it has one.
            ShardPlan::Any => match &in_txn_shard {
                Some(s) => routes
                    .iter()
                    .find(|r| &r.shard == s)
                    .cloned()
                    .unwrap_or_else(|| routes[0].clone()),
                None => routes[0].clone(),
            },
        };
        if self.shard_txn.is_some() {
            match in_txn_shard {
                Some(s) if s != route.shard => {
                    let msg = format!(
                        "shardgate: this transaction runs on shard {s}; this statement needs shard {}: transactions across shards are refused (multi_shard_transactions = \"refuse\")",
                        route.shard
                    );
                    self.send_err(errcode::UNKNOWN, &msg, reply_seq).await;
                    return Ok(());
                }
                Some(_) => {}
                None => {
                    if !self.begin_on(&route, reply_seq).await? {
                        return Ok(());
                    }
                }
            }
        }
        self.run_statement(&route, &class, hint, Work::Query(&frame))
            .await
    }

    /// Starts the held-back transaction on `route`'s primary; `false` when the client was
    /// answered with an error instead.
    async fn begin_on(&mut self, route: &Route, reply_seq: u8) -> Result<bool, SessionError> {
        let Some(begin) = self.shard_txn.as_ref().map(|t| t.begin.clone()) else {
            return Ok(true);
        };
        let shared = self.shared.clone();
        let who = identity(
            &self.user,
            self.caps,
            self.charset,
            self.db.as_deref(),
            &self.vars,
        );
        let r = match executor::connection(&shared.pools, &mut self.pinned, &route.addr, &who).await
        {
            Ok(conn) => match conn.simple_command(com::QUERY, &begin).await {
                Ok(Ok(_)) => {
                    conn.in_txn = true;
                    Ok(())
                }
                Ok(Err(e)) => Err(ExecError::Database(e)),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
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
        let shared = self.shared.clone();
        for route in rest {
            let who = identity(
                &self.user,
                self.caps,
                self.charset,
                self.db.as_deref(),
                &self.vars,
            );
            let r = match executor::connection(&shared.pools, &mut self.pinned, &route.addr, &who)
                .await
            {
                Ok(conn) => match conn.simple_command(com::QUERY, &sql).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(ExecError::Database(e)),
                    Err(e) => {
                        self.pinned.discard(&route.addr);
                        Err(e.into())
                    }
                },
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                return self.report(e, reply_seq).await;
            }
        }
        self.run_statement(last, class, None, Work::Query(frame))
            .await
    }

    async fn send_status_ok(&mut self, seq: u8, status: u16) {
        let mut out = BytesMut::new();
        let ok = OkInfo {
            status,
            ..OkInfo::default()
        };
        put_ok(&mut out, seq, self.caps, ok);
        let _ = self.io.write_all(&out).await;
    }
}
