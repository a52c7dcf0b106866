//! `SET` of session and user variables: run on a server, then recorded so that every server
//! connection the session uses later carries the same values (see `backend::vars`).

use tracing::debug;

use super::Session;
use crate::backend::vars::{literal, Var};
use crate::planner::classify::{Assignment, Value, VarName};

fn plain_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Session {
    /// Records a `SET` the server at `addr` accepted. A value given as an expression is read
    /// back from that server; one that cannot be pins the session to the connection.
    pub(super) async fn record_set(&mut self, addr: &str, assignments: &[Assignment]) {
        let mut changes: Vec<(Var, Option<String>)> = Vec::with_capacity(assignments.len());
        for a in assignments {
            let change = match (&a.name, &a.value) {
                (VarName::Names, Value::Literal(t)) if !t.eq_ignore_ascii_case("default") => {
                    (Var::Names, Some(t.clone()))
                }
                (VarName::Names, _) => (Var::Names, None),
                (VarName::System(n), Value::Literal(t)) => {
                    (Var::System(n.clone()), Some(t.clone()))
                }
                (VarName::System(n), Value::Default) => (Var::System(n.clone()), None),
                (VarName::System(n), Value::Expr) if plain_name(n) => {
                    let Some(conn) = self.pinned.find(addr) else {
                        self.hold.life = Some("SET of an expression");
                        return;
                    };
                    match conn.query_value(&format!("SELECT @@SESSION.{n}")).await {
                        Ok(Ok(v)) => (Var::System(n.clone()), Some(literal(v.as_deref()))),
                        other => {
                            debug!(var = %n, ?other, "cannot read a variable back: pinning");
                            self.hold.life = Some("SET of an expression");
                            return;
                        }
                    }
                }
                (VarName::User(n), Value::Literal(t)) if t.eq_ignore_ascii_case("null") => {
                    (Var::User(n.clone()), None)
                }
                (VarName::User(n), Value::Literal(t)) => (Var::User(n.clone()), Some(t.clone())),
                _ => {
                    // The classifier pins these; be safe if it did not.
                    self.hold.life = Some("SET of an expression");
                    return;
                }
            };
            changes.push(change);
        }
        self.vars = self.vars.with(changes);
        self.conn_carries_session_vars(addr);
    }

    /// The connection to `addr` just ran what changed the session's variables, so it carries
    /// them now.
    pub(super) fn conn_carries_session_vars(&mut self, addr: &str) {
        let vars = (!self.vars.is_empty()).then(|| self.vars.clone());
        if let Some(conn) = self.pinned.find(addr) {
            conn.vars = vars;
        }
    }
}
