//! COM_STMT_PREPARE: answered from a server's earlier reply to the same text when one is
//! kept (`cache::prepare_replies`), else prepared on a server and its reply kept. Either way
//! the session records the statement; executes prepare it on the connections they run on.

use std::sync::Arc;

use super::dispatch::Work;
use super::statements::StmtInfo;
use super::{Session, SessionError};
use crate::cache::prepare_replies::{Reply, ReplyKey};
use crate::planner::classify::{classify, Class, Classified, Hint};
use crate::planner::Route;
use crate::protocol::packet::Frame;
use crate::protocol::response::Scanner;

/// Replies longer than this (thousands of columns) are not kept.
const MAX_KEPT_REPLY: usize = 64 * 1024;

impl Session {
    pub(super) async fn prepare(&mut self, frame: Frame) -> Result<(), SessionError> {
        let Classified { class, hint, .. } = classify(&frame.payload()[1..]);
        let Some((route, shards)) = self.prepare_route(&frame, class.uses_previous).await else {
            return Ok(());
        };
        let id = self.stmts.next_id();
        if !self
            .prepare_from_kept(&route, &class, hint, &frame, id)
            .await
        {
            let generation = self.shared.prepare_replies.generation();
            self.run_statement(&route, &class, hint, Work::Prepare(&frame, id, generation))
                .await?;
        }
        if let Some(info) = self.stmts.get_mut(id) {
            info.shards = shards;
        }
        Ok(())
    }

    fn reply_key<'a>(&'a self, route: &'a Route, sql: &'a [u8]) -> ReplyKey<'a> {
        ReplyKey {
            user: &self.user.name,
            db: self.db.as_deref(),
            server: &route.addr,
            conn: self.conn_key(),
            vars: self.vars.metadata_sig(),
            sql,
        }
    }

    /// Answers the client from a kept reply; `false`: none fits, the server must prepare.
    async fn prepare_from_kept(
        &mut self,
        route: &Route,
        class: &Arc<Class>,
        hint: Option<Hint>,
        frame: &Frame,
        id: u32,
    ) -> bool {
        // These run where the previous statement ran or pin the session: the server must see
        // them.
        if class.uses_previous || class.pins.is_some() {
            return false;
        }
        let payload = frame.payload();
        let sql = &payload[1..];
        let reply = self.shared.prepare_replies.get(&self.reply_key(route, sql));
        let Some(out) = reply
            .as_ref()
            .and_then(|r| r.for_client(id, frame.last_seq.wrapping_add(1)))
        else {
            metrics::counter!("shardgate_prepare_replies_total", "from" => "server").increment(1);
            return false;
        };
        let params = reply.map_or(0, |r| r.params);
        let sql: Arc<[u8]> = sql.into();
        drop(payload);
        // As a prepare sent to a server: what the previous statement left is not read now.
        self.release_previous();
        let _ = self.io.write_all(&out).await;
        metrics::counter!("shardgate_prepare_replies_total", "from" => "kept").increment(1);
        self.stmts.insert(
            id,
            StmtInfo::new(sql, class.clone(), hint, route.clone(), params),
        );
        true
    }

    /// Keeps the reply a server just sent to the client's PREPARE.
    pub(super) fn keep_prepare_reply(
        &self,
        route: &Route,
        sql: &[u8],
        generation: u64,
        sc: &Scanner,
        params: u16,
    ) {
        if sc.error || sc.prepare_reply.is_empty() || sc.prepare_reply.len() > MAX_KEPT_REPLY {
            return;
        }
        // PREPARE_OK's warning count (payload bytes 10-11): a later client could not read
        // those warnings with SHOW WARNINGS, so such a reply goes to the server each time.
        let warnings = sc.prepare_reply.get(14..16);
        if warnings.is_none_or(|w| w != [0, 0]) {
            return;
        }
        let reply = Reply {
            packets: sc.prepare_reply.clone().into(),
            first_seq: sc.prepare_reply.get(3).copied().unwrap_or(1),
            params,
        };
        let key = self.reply_key(route, sql);
        self.shared.prepare_replies.keep(&key, generation, reply);
    }
}
