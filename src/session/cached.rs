//! The result cache seen from a session: which reads it may serve (a read a rule caches,
//! deterministic, outside transactions and pins), serving hits, filling misses from what the
//! session writes to its client, and invalidating what writes change before their OK reaches
//! the client.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Session;
use crate::cache::generations::{qualified, Watch};
use crate::cache::{self, Entry, Flight, KeyRef, Lookup};
use crate::planner::classify::{Class, Hint, Kind};
use crate::protocol::consts::{cap, status};
use crate::protocol::response::Scanner;
use crate::protocol::stream::PacketStream;

/// What a read's cache entries share whatever its literals or bound values: the tables it
/// reads, their generation counters, its rule's TTL. Kept with a prepared statement, so a hit
/// on an execute builds no table names and runs no rule.
pub(super) struct Shape {
    /// The session's database when it was worked out (table names are qualified with it).
    db: Option<Arc<str>>,
    /// `None`: no rule caches the read.
    ttl: Option<Duration>,
    tables: Vec<String>,
    watch: Watch,
}

/// A read the cache lacks, run by this session: what `cache_fill` needs after it ran.
pub(super) struct Cacheable {
    shape: Arc<Shape>,
    ttl: Duration,
}

/// A request buffer grown past this by a long statement is given back after the lookup.
const KEEP_REQUEST_BUF: usize = 64 * 1024;

/// What invalidates the cache once a statement's response is complete.
pub(super) type BeforeEnd = Box<dyn Fn(&Scanner) + Send + Sync>;

impl Session {
    /// The shape of a read the cache may serve, if it may serve it now; its `ttl` is `None` when
    /// no rule caches it. `known`: the shape worked out for the statement before, reused if the
    /// session is still in the same database.
    pub(super) fn cache_shape(
        &self,
        class: &Class,
        hint: Option<Hint>,
        sql: &[u8],
        known: Option<&Arc<Shape>>,
    ) -> Option<Arc<Shape>> {
        let cache = self.shared.cache.as_ref()?;
        let plain_read = class.kind == Kind::Read
            && class.deterministic
            && !class.no_cache_hint
            && class.statements == 1
            && class.pins.is_none()
            && !class.uses_previous
            && !class.keeps_for_next
            && !class.reads.is_empty();
        // A transaction must see its own snapshot; a pinned session may have temporary
        // tables shadowing the real ones; a primary hint asks for the freshest rows.
        // (What the last statement left for the next, `hold.next`, is let go when a hit
        // answers instead.)
        if !plain_read
            || self.hold.sticky()
            || !self.vars.autocommit()
            || self.shard_txn.is_some()
            || hint == Some(Hint::Primary)
        {
            return None;
        }
        let db = self.db.as_deref();
        if let Some(k) = known {
            if k.db.as_deref() == db && cache.generations.is_fresh(&k.watch) {
                return Some(k.clone());
            }
        }
        let tables: Vec<String> = class.reads.iter().map(|t| qualified(db, t)).collect();
        Some(Arc::new(Shape {
            db: db.map(Arc::from),
            ttl: cache.ttl_for(db, &tables, sql),
            watch: cache.generations.watch(&tables),
            tables,
        }))
    }

    /// The shape of an execute of prepared statement `client_id` (see `cache_shape`), kept
    /// with the statement; `None` when the cache may not serve it.
    pub(super) fn execute_shape(&mut self, client_id: u32) -> Option<Arc<Shape>> {
        let info = self.stmts.get(client_id)?;
        let shape =
            self.cache_shape(&info.class, info.hint, &info.sql, info.cache_shape.as_ref())?;
        let info = self.stmts.get_mut(client_id)?;
        if !info
            .cache_shape
            .as_ref()
            .is_some_and(|k| Arc::ptr_eq(k, &shape))
        {
            info.cache_shape = Some(shape.clone());
        }
        Some(shape)
    }

    fn sample_cache_hit(&mut self) {
        if let Some(s) = self.sample.as_mut() {
            s.cache_hit = true;
        }
    }

    /// Serves a read from the cache (`None`), or says how to run it: with which hint, and
    /// the flight to `cache_fill` after it ran. The request part of the key (statement text,
    /// then an execute's bound types and values) is in `cache_request`.
    pub(super) async fn serve_cached(
        &mut self,
        shape: Option<Arc<Shape>>,
        hint: Option<Hint>,
        reply_seq: u8,
    ) -> Option<(Option<Hint>, Option<(Flight, Cacheable)>)> {
        let (Some(shape), Some(cache)) = (shape, self.shared.cache.as_deref()) else {
            return Some((hint, None));
        };
        let Some(ttl) = shape.ttl else {
            return Some((hint, None));
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            self.caps & cap::DEPRECATE_EOF,
            // Extended metadata changes the column definitions.
            self.ext_caps,
            self.charset,
            self.vars.sig(),
        )
            .hash(&mut h);
        cache.generations.read(&shape.watch, &mut self.cache_gens);
        let key = KeyRef {
            user: &self.cache_user,
            db: shape.db.as_deref(),
            context: h.finish(),
            request: &self.cache_request,
            generations: &self.cache_gens,
        };
        let lookup = cache.lookup(key).await;
        if self.cache_request.capacity() > KEEP_REQUEST_BUF {
            self.cache_request = Vec::new();
        }
        match lookup {
            Lookup::Hit(e) => {
                self.release_previous();
                send_entry(&mut self.io, &e, reply_seq).await;
                self.sample_cache_hit();
                None
            }
            Lookup::Wait(rx) => match cache::wait(rx).await {
                Some(e) => {
                    self.release_previous();
                    send_entry(&mut self.io, &e, reply_seq).await;
                    self.sample_cache_hit();
                    None
                }
                None => Some((hint, None)),
            },
            Lookup::Lead(flight) => {
                // A replica may not have applied a recent write through the proxy yet: its old
                // rows must not fill the cache.
                let recent = cache
                    .generations
                    .written_within(&shape.tables, cache.fill_from_primary_ms);
                let hint = if recent { Some(Hint::Primary) } else { hint };
                self.io.start_capture(cache.max_entry_bytes);
                Some((hint, Some((flight, Cacheable { shape, ttl }))))
            }
        }
    }

    /// After a led read ran: stores what the client got if it was a whole result (no error,
    /// within `max_entry_bytes`) and no write to its tables came meanwhile.
    pub(super) async fn cache_fill(&mut self, flight: Flight, c: Cacheable, reply_seq: u8) {
        let captured = self.io.take_capture();
        let Some(cache) = self.shared.cache.clone() else {
            return;
        };
        let deprecate_eof = self.caps & cap::DEPRECATE_EOF != 0;
        cache.generations.read(&c.shape.watch, &mut self.cache_gens);
        let unchanged = *self.cache_gens == *flight.key().generations;
        let entry = captured
            .filter(|bytes| unchanged && whole_result(bytes, deprecate_eof))
            .map(|bytes| Arc::new(Entry::new(Bytes::from(bytes), reply_seq, c.ttl)));
        cache.complete(flight, entry).await;
    }

    /// What a statement invalidates once its response is complete, before the client sees
    /// its end: the tables it writes (when it succeeded), and at the end of a transaction
    /// every table the transaction wrote (readers may have filled the cache from before its
    /// commit meanwhile).
    pub(super) fn cache_before_end(&mut self, class: &Class) -> Option<BeforeEnd> {
        let cache = self.shared.cache.clone()?;
        let writes = self.cache_writes(class);
        if writes.is_empty() && self.cache_pending.is_empty() {
            return None;
        }
        if self.hold.txn || !self.vars.autocommit() {
            for t in &writes {
                if !self.cache_pending.contains(t) {
                    self.cache_pending.push(t.clone());
                }
            }
        }
        let pending = self.cache_pending.clone();
        Some(Box::new(move |sc: &Scanner| {
            if !sc.error && !writes.is_empty() {
                cache.invalidate(&writes);
            }
            if sc.last_ok.status & status::IN_TRANS == 0 && !pending.is_empty() {
                cache.invalidate(&pending);
            }
        }))
    }

    /// After a statement: a transaction that ended has nothing pending any more.
    pub(super) fn cache_after_statement(&mut self) {
        if !self.hold.txn && self.vars.autocommit() && self.shard_txn.is_none() {
            self.cache_pending.clear();
        }
    }

    /// For writes the proxy answers itself (on several shards): invalidates their tables now.
    pub(super) fn cache_invalidate_now(&mut self, class: &Class) {
        let Some(cache) = self.shared.cache.clone() else {
            return;
        };
        let writes = self.cache_writes(class);
        cache.invalidate(&writes);
        if self.shard_txn.is_some() || !self.vars.autocommit() {
            for t in writes {
                if !self.cache_pending.contains(&t) {
                    self.cache_pending.push(t);
                }
            }
        }
    }

    /// The `db.table` names a statement changes; `db.` (all of the session's database) when
    /// it writes but names no table (CALL, multi-statement text...).
    fn cache_writes(&self, class: &Class) -> Vec<String> {
        let db = self.db.as_deref();
        let writes = matches!(class.kind, Kind::Write | Kind::Ddl)
            || (class.kind == Kind::Other && (class.statements > 1 || !class.writes.is_empty()));
        if !writes {
            return Vec::new();
        }
        if class.writes.is_empty() {
            return vec![format!("{}.", db.unwrap_or("").to_ascii_lowercase())];
        }
        class.writes.iter().map(|t| qualified(db, t)).collect()
    }
}

/// Writes a cached response, its sequence ids renumbered if this command's differ.
async fn send_entry(io: &mut PacketStream, e: &Entry, reply_seq: u8) {
    if e.first_seq == reply_seq {
        let _ = io.write_all(&e.packets).await;
        return;
    }
    let mut out = e.packets.to_vec();
    crate::protocol::packet::renumber(&mut out, reply_seq);
    let _ = io.write_all(&out).await;
}

/// Whether captured packets are one whole answer without an error or warnings: no packet is
/// an ERR, and the last one (the result's end) counts no warnings, which a later SHOW WARNINGS
/// could not find on any server connection.
fn whole_result(bytes: &[u8], deprecate_eof: bool) -> bool {
    let mut at = 0;
    let mut last = None;
    while at + 4 <= bytes.len() {
        let len = usize::from(bytes[at])
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]) << 16;
        if bytes.get(at + 4) == Some(&0xFF) && len < 0xFF_FFFF {
            return false;
        }
        last = bytes.get(at + 4..at + 4 + len);
        at += 4 + len;
    }
    at == bytes.len() && last.is_some_and(|end| end_warnings(end, deprecate_eof) == Some(0))
}

/// The warning count of a result's end: an EOF (`FE warnings status`), or an OK (`00`, or `FE`
/// under DEPRECATE_EOF: affected rows, insert id, status, warnings).
fn end_warnings(end: &[u8], deprecate_eof: bool) -> Option<u16> {
    let u16_at = |i: usize| Some(u16::from_le_bytes([*end.get(i)?, *end.get(i + 1)?]));
    match end.first()? {
        0xFE if !deprecate_eof => u16_at(1),
        0x00 | 0xFE => {
            let mut r = crate::protocol::wire::Reader::new(end.get(1..)?);
            r.lenenc().ok()?;
            r.lenenc().ok()?;
            r.u16().ok()?;
            r.u16().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![payload.len() as u8, 0, 0, seq];
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn only_whole_answers_without_errors_or_warnings_are_kept() {
        let header = packet(1, &[1]);
        let row = packet(2, &[1, b'x']);
        let eof = |w: u8| packet(3, &[0xFE, w, 0, 2, 0]);
        let ok_end = |w: u8| packet(3, &[0xFE, 0, 0, 2, 0, w, 0]);
        let whole = |parts: &[&[u8]]| whole_result(&parts.concat(), false);
        let whole_ok = |parts: &[&[u8]]| whole_result(&parts.concat(), true);
        assert!(whole(&[&header, &row, &eof(0)]));
        assert!(whole_ok(&[&header, &row, &ok_end(0)]));
        assert!(!whole(&[&header, &row, &eof(1)]), "warnings");
        assert!(!whole_ok(&[&header, &row, &ok_end(2)]), "warnings");
        assert!(!whole(&[&header, &packet(2, &[0xFF, 0x10, 0x04])]), "error");
        assert!(!whole(&[&header, &row[..3]]), "cut short");
        assert!(!whole(&[]), "nothing");
    }
}
