//! The session's current database: `USE`, COM_INIT_DB, and the database named at login.

use super::{identity, Session, SessionError};
use crate::executor::{self, ExecError};
use crate::planner::{Plan, PlanContext};
use crate::protocol::consts::{com, errcode};
use crate::protocol::packet::Frame;
use crate::protocol::response::Expect;

impl Session {
    /// `USE db` or COM_INIT_DB: runs on the server of the keyspace `db` selects (which may
    /// not be the current one), and becomes the session's database if the server accepts it.
    pub(super) async fn change_db(
        &mut self,
        db: String,
        frame: &Frame,
    ) -> Result<(), SessionError> {
        let plan = self.shared.planner().plan_session(&PlanContext {
            db: Some(&db),
            default_keyspace: self.user.default_keyspace.as_deref(),
        });
        let target = match &plan {
            Plan::Route(r) => Some(r.addr.clone()),
            Plan::Reject { .. } | Plan::Broadcast(_) => None,
        };
        let expect = if frame.first_byte() == Some(com::QUERY) {
            Expect::Result
        } else {
            Expect::Single
        };
        // The command itself selects the database on the target connection.
        let sc = self.execute_on(plan, frame, Some(expect), 0, false).await?;
        if sc.is_some_and(|sc| !sc.error) {
            if let Some(conn) = target.and_then(|a| self.pinned.find(&a)) {
                conn.db = Some(db.clone());
            }
            self.db = Some(db);
        }
        Ok(())
    }

    /// A database named at login that is not a keyspace must exist, as on a direct
    /// connection: check it on its server now, and refuse the login (ERR 1049) if not.
    pub(super) async fn check_login_database(&mut self, seq: u8) -> bool {
        let Some(db) = self.db.clone() else {
            return true;
        };
        if self.shared.planner().is_keyspace(&db) {
            return true;
        }
        let Plan::Route(route) = self.shared.planner().plan_session(&self.plan_ctx()) else {
            return true; // the first statement reports why the keyspace cannot be served
        };
        let shared = self.shared.clone();
        let who = who!(self, self.db.as_deref());
        let r = match executor::connection(&shared.pools, &mut self.pinned, &route.addr, &who).await
        {
            Ok(conn) => {
                // A pooled connection may still record a database dropped since: ask the
                // server every time.
                conn.db = None;
                match conn.ensure_db(Some(&db)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(ExecError::Database(e)),
                    Err(e) => {
                        self.pinned.discard(&route.addr);
                        Err(e.into())
                    }
                }
            }
            Err(e) => Err(e),
        };
        let failure = match r {
            Ok(_) => return true,
            Err(ExecError::Database(err)) => ((err.code, err.state), err.message),
            Err(ExecError::Connect(e)) => {
                let (code, state, msg) = e.client_error();
                ((code, state), msg)
            }
            Err(ExecError::Forward(e)) => ((errcode::UNKNOWN.0, "HY000".into()), e.to_string()),
        };
        let ((code, state), msg) = failure;
        self.send_err((code, &state), &msg, seq).await;
        false
    }
}
