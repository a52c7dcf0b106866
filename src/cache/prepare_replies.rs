//! Answers to COM_STMT_PREPARE, kept proxy-wide so that a client preparing a text someone
//! prepared before is answered without a server round trip, as ProxySQL does.
//!
//! A client's statement runs on whichever pooled connection is free, and each connection
//! prepares the text itself on its first execute (`backend::prepared`). Forwarding every
//! client prepare as well made servers prepare each text twice per connection under load
//! (and per query for drivers that prepare, execute and close every statement). The reply a
//! server sent is the same for every client with the same user, database, server, framing and
//! session variables, so it is kept under all of them. DDL through the proxy makes every kept
//! reply unreachable (their column definitions may be stale); DDL sent to the servers around
//! the proxy is not seen, and then a reply's column definitions may be old until the next DDL
//! through the proxy: executes are unaffected (a result carries its own definitions), as with
//! a statement MariaDB itself prepared before an ALTER.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::backend::conn::ConnKey;

/// Texts kept at most: replies are a few hundred bytes, and an application has a bounded set
/// of statement shapes (one that builds texts with literals misses and evicts, harmlessly).
const MAX_REPLIES: usize = 4096;

/// Everything a server's PREPARE reply depends on.
#[derive(Debug, Clone, Copy)]
pub struct ReplyKey<'a> {
    pub user: &'a str,
    pub db: Option<&'a str>,
    pub server: &'a str,
    pub conn: ConnKey,
    /// The session variables' fingerprint (`VarSet::metadata_sig`).
    pub vars: u64,
    pub sql: &'a [u8],
}

impl ReplyKey<'_> {
    fn hash64(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.user.hash(&mut h);
        self.db.hash(&mut h);
        self.server.hash(&mut h);
        self.conn.hash(&mut h);
        self.vars.hash(&mut h);
        self.sql.hash(&mut h);
        h.finish()
    }
}

/// A PREPARE reply as the server sent it, from PREPARE_OK to its last definition.
#[derive(Debug)]
pub struct Reply {
    /// The packets; the statement id in the first one is the client's of the first prepare.
    pub packets: Bytes,
    /// The sequence id of the first packet.
    pub first_seq: u8,
    pub params: u16,
}

impl Reply {
    /// The reply for the client's statement `client_id`, its packets numbered from
    /// `reply_seq`. `None`: the kept packets are not a PREPARE reply.
    pub fn for_client(&self, client_id: u32, reply_seq: u8) -> Option<Vec<u8>> {
        let mut out = self.packets.to_vec();
        if out.get(4) != Some(&0x00) || out.len() < 13 {
            return None;
        }
        out[5..9].copy_from_slice(&client_id.to_le_bytes());
        if reply_seq != self.first_seq {
            crate::protocol::packet::renumber(&mut out, reply_seq);
        }
        Some(out)
    }
}

struct Kept {
    user: Box<str>,
    db: Option<Box<str>>,
    server: Box<str>,
    conn: ConnKey,
    vars: u64,
    sql: Box<[u8]>,
    reply: Arc<Reply>,
}

impl Kept {
    fn is(&self, k: &ReplyKey<'_>) -> bool {
        *self.user == *k.user
            && self.db.as_deref() == k.db
            && *self.server == *k.server
            && self.conn == k.conn
            && self.vars == k.vars
            && *self.sql == *k.sql
    }
}

#[derive(Default)]
pub struct PrepareReplies {
    kept: Mutex<HashMap<u64, Kept>>,
    /// Bumped by DDL: a reply asked for before it (read with `generation`) is not kept.
    generation: AtomicU64,
}

impl PrepareReplies {
    pub fn get(&self, key: &ReplyKey<'_>) -> Option<Arc<Reply>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(&key.hash64())
            .filter(|k| k.is(key))
            .map(|k| k.reply.clone())
    }

    /// To read before a PREPARE is sent, and give to `keep` with its reply.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps a reply asked for at `generation`, unless DDL ran since.
    pub fn keep(&self, key: &ReplyKey<'_>, generation: u64, reply: Reply) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if kept.len() >= MAX_REPLIES {
            // Any one: the map's order is arbitrary, so this is a random eviction.
            if let Some(&victim) = kept.keys().next() {
                kept.remove(&victim);
            }
        }
        kept.insert(
            key.hash64(),
            Kept {
                user: key.user.into(),
                db: key.db.map(Into::into),
                server: key.server.into(),
                conn: key.conn,
                vars: key.vars,
                sql: key.sql.into(),
                reply: Arc::new(reply),
            },
        );
    }

    /// After DDL: no reply kept so far is given again.
    pub fn invalidate(&self) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        kept.clear();
    }

    pub fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::put_packet;
    use bytes::BytesMut;

    fn key<'a>(user: &'a str, sql: &'a [u8]) -> ReplyKey<'a> {
        ReplyKey {
            user,
            db: Some("app"),
            server: "127.0.0.1:1",
            conn: ConnKey {
                framing: 0,
                charset: 45,
                ext: 0,
            },
            vars: 0,
            sql,
        }
    }

    fn reply() -> Reply {
        // PREPARE_OK for statement 7: 0 columns, 1 parameter, then its definition (no EOF:
        // DEPRECATE_EOF).
        let mut out = BytesMut::new();
        let seq = put_packet(&mut out, 1, &[0, 7, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        put_packet(
            &mut out,
            seq,
            b"\x03def\0\0\0\x01?\0\x0c\x3f\0\0\0\0\0\x06\x80\0\0\0\0",
        );
        Reply {
            packets: out.freeze(),
            first_seq: 1,
            params: 1,
        }
    }

    #[test]
    fn a_reply_is_given_for_the_same_key_only() {
        let r = PrepareReplies::default();
        let g = r.generation();
        r.keep(&key("app", b"SELECT ?"), g, reply());
        assert!(r.get(&key("app", b"SELECT ?")).is_some());
        assert!(r.get(&key("other", b"SELECT ?")).is_none());
        assert!(r.get(&key("app", b"SELECT ? ")).is_none());
        let mut vars = key("app", b"SELECT ?");
        vars.vars = 3;
        assert!(r.get(&vars).is_none());
    }

    #[test]
    fn ddl_drops_kept_replies_and_late_ones() {
        let r = PrepareReplies::default();
        let before = r.generation();
        r.keep(&key("app", b"SELECT ?"), before, reply());
        r.invalidate();
        assert!(r.get(&key("app", b"SELECT ?")).is_none());
        // A reply asked for before the DDL, arriving after it.
        r.keep(&key("app", b"SELECT ?"), before, reply());
        assert!(r.is_empty());
        r.keep(&key("app", b"SELECT ?"), r.generation(), reply());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn the_client_gets_its_id_and_sequence() {
        let out = reply().for_client(42, 3).expect("a prepare reply");
        assert_eq!(&out[5..9], &42u32.to_le_bytes());
        assert_eq!(out[3], 3);
        let second = 4 + out[0] as usize;
        assert_eq!(out[second + 3], 4);
        let same = reply().for_client(42, 1).expect("a prepare reply");
        assert_eq!(same[3], 1);
    }

    #[test]
    fn the_number_of_replies_is_bounded() {
        let r = PrepareReplies::default();
        for i in 0..MAX_REPLIES + 10 {
            let sql = format!("SELECT {i}");
            r.keep(&key("app", sql.as_bytes()), 0, reply());
        }
        assert_eq!(r.len(), MAX_REPLIES);
    }
}
