//! COM_STMT_BULK_EXECUTE (MariaDB, `ext_cap::STMT_BULK_OPERATIONS`): many rows of parameters
//! for one prepared statement in one command, answered by one OK or ERR (Connector/J's
//! `executeBatch()`). On an unsharded keyspace it runs as an execute does: the statement is
//! prepared on the chosen connection if new to it and the command's statement id rewritten; the
//! rows are forwarded untouched. On a sharded keyspace it is refused (its rows would have to be
//! split between shards) and not offered (see `handshake::offered_ext`).

use super::{id_after_command, Session, SessionError};
use crate::protocol::consts::{errcode, ext_cap};
use crate::protocol::packet::Frame;

use super::dispatch::Work;

/// The bulk flag saying parameter types precede the rows.
const SEND_TYPES_TO_SERVER: u16 = 128;

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
        if self.shared.planner().is_sharded(&self.plan_ctx()) {
            let msg = "shardgate: COM_STMT_BULK_EXECUTE is not supported on a sharded keyspace \
                       (its rows would be split between shards); execute the statement once per row";
            self.send_err(errcode::NOT_SUPPORTED, msg, reply_seq).await;
            return Ok(());
        }
        let route = self.current_route(&info.route);
        let (class, hint) = (info.class.clone(), info.hint);
        self.run_statement(&route, &class, hint, Work::Execute(&frame, client_id))
            .await
    }
}
