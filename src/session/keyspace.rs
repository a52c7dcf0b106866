//! The session's side of a reshard cutover's keyspace gate (`ha::keyspace_gate`): commands
//! that touch the keys a cutover moves wait, and a transaction that touched them on the old
//! shard map is rolled back instead of committing where its rows no longer live.

use std::sync::Arc;
use std::time::Duration;

use super::statements::StmtShards;
use super::Session;
use crate::backend::prepared::param_value;
use crate::ha::keyspace_gate::{Entered, KeyspaceGate, Refused};
use crate::planner::classify::{classify, Kind};
use crate::planner::text;
use crate::protocol::consts::{com, errcode, status};
use crate::protocol::packet::Frame;
use crate::shardmap::moving::Touched;

/// A command the keyspace gate refused, and the keyspace whose gate it was.
pub(super) struct KeyspaceRefusal {
    pub(super) refused: Refused,
    keyspace: Arc<str>,
}

impl Session {
    /// Passes the gate of the session's keyspace (sharded keyspaces only). `Ok(Some(gate))`:
    /// entered counted, to be left once the command ran.
    pub(super) async fn enter_keyspace_gate(
        &mut self,
        cmd: u8,
        frame: &Frame,
        wait: Duration,
    ) -> Result<Option<Arc<KeyspaceGate>>, KeyspaceRefusal> {
        self.cmd_touched = Touched::Nothing;
        self.cmd_uncounted = false;
        // The client reads no answer to these (an ERR would answer its next command), and
        // they change no rows: the transaction's next command meets the gate.
        if matches!(cmd, com::STMT_CLOSE | com::STMT_SEND_LONG_DATA) {
            return Ok(None);
        }
        // Every command on a sharded keyspace is counted in its gate, held or not: a command
        // that passed uncounted just before a hold began could write to the old owner after
        // the cutover's drain. (Two atomics and a map read, like the proxy's own gate.)
        let shared = self.shared.clone();
        let gate = {
            let planner = shared.planner();
            let Some(keyspace) = planner.sharded_keyspace(&self.plan_ctx()) else {
                return Ok(None);
            };
            match self.shard_txn.as_ref().and_then(|t| t.token()) {
                Some(t) if **t.gate().keyspace() == *keyspace => t.gate().clone(),
                _ => shared.ha.keyspaces.gate(keyspace),
            }
        };
        // The keys it touches: what a hold asks, and what a transaction's doom is judged by
        // (a transaction's keys are noted from its first command, an implicit one's too).
        let in_txn = self.shard_txn.is_some() || !self.vars.autocommit();
        if in_txn || shared.ha.keyspaces.active() {
            self.cmd_touched = self.touched_by(cmd, frame);
        }
        let ctx = crate::planner::PlanContext {
            db: self.db.as_deref(),
            default_keyspace: self.user.default_keyspace.as_deref(),
        };
        if let Some(t) = &mut self.shard_txn {
            t.touched.add(self.cmd_touched.clone());
            // Whatever the gate saw: a transaction never outlives a map that moved its keys.
            let now = shared.planner();
            if !Arc::ptr_eq(&t.planner, &now) {
                if now.moved_since(&t.planner, &ctx, &t.touched) {
                    return Err(KeyspaceRefusal {
                        refused: Refused::Doomed,
                        keyspace: gate.keyspace().clone(),
                    });
                }
                t.planner = now;
            }
        }
        let txn = self
            .shard_txn
            .as_ref()
            .and_then(|t| t.token().map(|token| (token, &t.touched)));
        // Outside a hold `enter` finds a doomed transaction too; this names its keyspace.
        if let Some((t, _)) = txn.filter(|(t, touched)| t.is_doomed(touched)) {
            return Err(KeyspaceRefusal {
                refused: Refused::Doomed,
                keyspace: t.gate().keyspace().clone(),
            });
        }
        if gate.is_armed() {
            if let Some(store) = shared.topology.store() {
                let deadline = std::time::Instant::now() + wait;
                while !store.serves_current() {
                    if std::time::Instant::now() >= deadline {
                        return Err(KeyspaceRefusal {
                            refused: Refused::LeaseLapsed,
                            keyspace: gate.keyspace().clone(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        match gate.enter(txn, &self.cmd_touched, wait).await {
            Ok(Entered::Counted) => Ok(Some(gate)),
            Ok(Entered::Uncounted) => {
                self.cmd_uncounted = true;
                Ok(None)
            }
            Err(refused) => Err(KeyspaceRefusal {
                refused,
                keyspace: gate.keyspace().clone(),
            }),
        }
    }

    /// The keys of the session's sharded keyspace a command touches.
    fn touched_by(&self, cmd: u8, frame: &Frame) -> Touched {
        let planner = self.shared.planner();
        let ctx = self.plan_ctx();
        let payload = frame.payload();
        match cmd {
            com::QUERY => {
                let sql = text::parse_copy(payload.get(1..).unwrap_or_default());
                planner.touched(&sql, &ctx)
            }
            com::STMT_EXECUTE => {
                let id = payload
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let Some(info) = id.and_then(|id| self.stmts.get(id)) else {
                    // Unknown statement: the server's error to give.
                    return Touched::Nothing;
                };
                match info.shards {
                    StmtShards::Key(p) => {
                        let value = param_value(&payload, info.params, info.types.as_deref(), p);
                        match value.and_then(super::sharded::key_value) {
                            Some(key) => planner.key_touched(&ctx, &key),
                            None => Touched::Unknown,
                        }
                    }
                    StmtShards::Fixed => planner.touched(&text::parse_copy(&info.sql), &ctx),
                    StmtShards::Multi => Touched::Unknown,
                }
            }
            com::STMT_BULK_EXECUTE => Touched::Unknown,
            // Session commands: no rows.
            _ => Touched::Nothing,
        }
    }

    /// Answers a command the keyspace gate refused. A doomed transaction is rolled back on
    /// its shards first; the client gets a deadlock error (SQLSTATE 40001), which drivers
    /// retry as a whole transaction, or OK if the command was that ROLLBACK.
    pub(super) async fn keyspace_refused(
        &mut self,
        refusal: KeyspaceRefusal,
        wait: Duration,
        frame: &Frame,
    ) {
        let seq = frame.last_seq.wrapping_add(1);
        let keyspace = refusal.keyspace;
        match refusal.refused {
            Refused::StillHeld => {
                let msg = format!(
                    "shardgate: keyspace {keyspace} is switching shards (reshard cutover) for longer than {} ms; try again",
                    wait.as_millis()
                );
                self.send_err(errcode::UNKNOWN, &msg, seq).await;
            }
            Refused::LeaseLapsed => {
                let msg = format!(
                    "shardgate: keyspace {keyspace} is being resharded and this proxy's etcd lease is not current; it serves the keyspace again once it has re-read the shard map (waited {} ms); try again",
                    wait.as_millis()
                );
                self.send_err(errcode::UNKNOWN, &msg, seq).await;
            }
            Refused::Doomed => {
                self.abort_shard_txn().await;
                if is_rollback(frame) {
                    let st = if self.vars.autocommit() {
                        status::AUTOCOMMIT
                    } else {
                        0
                    };
                    self.send_status_ok(seq, st).await;
                } else {
                    let msg = format!(
                        "shardgate: the transaction was rolled back: its keyspace {keyspace} switched shards (reshard cutover) while it was open; restart it"
                    );
                    self.send_err(errcode::LOCK_DEADLOCK, &msg, seq).await;
                }
                // Its connections no longer carry a transaction.
                self.after_command();
            }
        }
    }
}

/// A COM_QUERY `ROLLBACK [WORK]` (not to a savepoint, not AND CHAIN, which opens the next).
fn is_rollback(frame: &Frame) -> bool {
    let payload = frame.payload();
    if payload.first() != Some(&com::QUERY) {
        return false;
    }
    let sql = &payload[1..];
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    sql[start..]
        .get(..8)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"rollback"))
        && classify(sql).class.kind == Kind::EndTransaction
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::query_frame;

    #[test]
    fn only_a_plain_rollback_is_answered_ok() {
        let rollback = |sql: &str| is_rollback(&query_frame(sql.as_bytes(), 0));
        assert!(rollback("ROLLBACK"));
        assert!(rollback("  rollback work"));
        assert!(
            !rollback("ROLLBACK TO SAVEPOINT a"),
            "the transaction goes on"
        );
        assert!(!rollback("ROLLBACK AND CHAIN"), "opens the next");
        assert!(!rollback("COMMIT"));
        assert!(!rollback("ROLLBACKS"));
        let mut ping = query_frame(b"ROLLBACK", 0).payload().to_vec();
        ping[0] = com::PING;
        assert!(!is_rollback(&crate::session::command_frame(&ping, 0)));
    }
}
