//! COM_SET_OPTION: multi-statements on or off for this session only.
//!
//! The option is part of the key a server connection is pooled under (`ConnKey::framing`, as
//! CLIENT_MULTI_STATEMENTS at login is), and COM_RESET_CONNECTION does not change it. So a
//! connection that ran the command is re-keyed to what it now does, and only sessions with the
//! same option are given it later; the session takes its later connections with its new
//! option, and the other connections it holds are switched too.

use super::{Session, SessionError};
use crate::planner::Plan;
use crate::protocol::consts::{cap, com};
use crate::protocol::packet::Frame;
use crate::protocol::response::Expect;

impl Session {
    pub(super) async fn set_option(&mut self, frame: Frame) -> Result<(), SessionError> {
        let on = match frame.payload().get(1..3) {
            Some([0, 0]) => Some(true),
            Some([1, 0]) => Some(false),
            _ => None, // the server answers an unknown option with its error
        };
        let plan = self.shared.planner().plan_session(&self.plan_ctx());
        let ran_on = match &plan {
            Plan::Route(r) => Some(r.addr.clone()),
            Plan::Broadcast(rs) => rs.first().map(|r| r.addr.clone()),
            Plan::Reject { .. } => None,
        };
        let Some(sc) = self.execute(plan, &frame, Some(Expect::Single), 0).await? else {
            return Ok(());
        };
        let Some(on) = on.filter(|_| !sc.error) else {
            return Ok(());
        };
        let bit = if on { cap::MULTI_STATEMENTS } else { 0 };
        self.caps = (self.caps & !cap::MULTI_STATEMENTS) | bit;
        let arg = [u8::from(!on), 0];
        for conn in self.pinned.iter_mut() {
            if conn.key.framing & cap::MULTI_STATEMENTS == bit {
                continue;
            }
            // The connection that ran the client's command has the option already.
            let ran = ran_on.as_deref() == Some(&*conn.addr);
            if !ran && !matches!(conn.simple_command(com::SET_OPTION, &arg).await, Ok(Ok(_))) {
                conn.broken = true; // closed rather than given back with the old option
                continue;
            }
            conn.key.framing = (conn.key.framing & !cap::MULTI_STATEMENTS) | bit;
        }
        Ok(())
    }
}
