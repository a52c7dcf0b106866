//! `KILL` and COM_PROCESS_KILL: the proxy's connection ids are turned into the server
//! connections behind them.

use super::{query_frame, Session, SessionError, FIRST_ID};
use crate::planner::{lex, Plan, Replicas, Route};
use crate::protocol::packet::Frame;
use crate::protocol::response::Expect;

impl Session {
    /// `KILL [QUERY|CONNECTION] id` and COM_PROCESS_KILL. A proxy connection id is turned into
    /// the server connection running that session's statement, if one runs, and the statement
    /// is killed there (server connections are shared, so never the connection itself); a
    /// KILL CONNECTION then ends the session. Any other id is a server's own and passes
    /// through.
    pub(super) async fn kill(
        &mut self,
        kill: lex::Kill,
        frame: &Frame,
    ) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let plan = self.shared.planner().plan_session(&self.plan_ctx());
        let Ok(id) = u32::try_from(kill.id) else {
            self.execute(plan, frame, Some(Expect::Result), 0).await?;
            return Ok(());
        };
        if id < FIRST_ID {
            self.execute(plan, frame, Some(Expect::Result), 0).await?;
            return Ok(());
        }
        let Some(target) = self.shared.sessions.get(id) else {
            let msg = format!("Unknown thread id: {id}");
            self.send_err((1094, "HY000"), &msg, reply_seq).await;
            return Ok(());
        };
        if target.user() != self.user.name {
            let msg = format!("You are not owner of thread {id}");
            self.send_err((1095, "HY000"), &msg, reply_seq).await;
            return Ok(());
        }
        match target.backend() {
            Some((addr, server_id)) => {
                // Only the statement: the server connection goes back to the pool and may
                // serve other sessions; the session itself ends below.
                let sql = format!(
                    "KILL {}QUERY {server_id}",
                    kill.modifier.map(|m| format!("{m} ")).unwrap_or_default(),
                );
                let frame = query_frame(sql.as_bytes(), frame.last_seq);
                let route = Route {
                    keyspace: "".into(),
                    shard: "".into(),
                    addr,
                    replicas: Replicas::none(),
                };
                self.execute(Plan::Route(route), &frame, Some(Expect::Result), 0)
                    .await?;
            }
            None => {
                if !kill.query_only {
                    target.killed.notify_one();
                    self.wait_gone(id).await;
                }
                self.send_ok(reply_seq).await;
                return Ok(());
            }
        }
        if !kill.query_only {
            target.killed.notify_one();
            self.wait_gone(id).await;
        }
        Ok(())
    }

    /// Waits (at most a second) until session `id` has ended, so that a client told the
    /// KILL succeeded finds the victim's connection closed on its next command. The victim
    /// runs on its own worker and may not have seen the notification yet.
    async fn wait_gone(&self, id: u32) {
        if id == self.registration.id {
            return; // itself: it ends after this answer
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.shared.sessions.get(id).is_some() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}
