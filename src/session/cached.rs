//! The result cache seen from a session: which reads it may serve (a read a rule caches,
//! deterministic, outside transactions and pins), serving hits, filling misses from what the
//! session writes to its client, and invalidating what writes change before their OK reaches
//! the client.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Session;
use crate::cache::generations::qualified;
use crate::cache::{self, CacheKey, Entry, Flight, Lookup, ResultCache};
use crate::planner::classify::{Class, Hint, Kind};
use crate::protocol::consts::{cap, status};
use crate::protocol::response::Scanner;

/// A read the cache may serve.
pub(super) struct Cacheable {
    cache: Arc<ResultCache>,
    key: Arc<CacheKey>,
    ttl: Duration,
    tables: Vec<String>,
}

/// What to do with a cacheable read.
enum Step {
    /// Answered from the cache.
    Served,
    /// Run it; the session's output is captured. Then `fill`.
    Run {
        flight: Flight,
        hint: Option<Hint>,
        cacheable: Cacheable,
    },
    /// Run it without the cache (another session's read of it could not be cached).
    Bypass,
}

/// What invalidates the cache once a statement's response is complete.
pub(super) type BeforeEnd = Box<dyn Fn(&Scanner) + Send + Sync>;

impl Session {
    /// The cache entry this read would use, if the cache may serve it. `request` is the
    /// statement text, `bound` an execute's parameter types and values.
    pub(super) fn cacheable(
        &self,
        class: &Class,
        hint: Option<Hint>,
        sql: &[u8],
        bound: Option<&[u8]>,
    ) -> Option<Cacheable> {
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
        if !plain_read
            || self.hold.any()
            || !self.vars.autocommit()
            || self.shard_txn.is_some()
            || hint == Some(Hint::Primary)
        {
            return None;
        }
        let db = self.db.as_deref();
        let tables: Vec<String> = class.reads.iter().map(|t| qualified(db, t)).collect();
        let ttl = cache.ttl_for(db, &tables, sql)?;
        let mut request = Vec::with_capacity(sql.len() + bound.map_or(0, <[u8]>::len) + 1);
        request.extend_from_slice(sql);
        if let Some(b) = bound {
            request.push(0);
            request.extend_from_slice(b);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            self.caps & cap::DEPRECATE_EOF,
            self.charset,
            self.vars.sig(),
        )
            .hash(&mut h);
        let key = CacheKey {
            user: Arc::from(self.user.name.as_str()),
            db: db.map(Arc::from),
            context: h.finish(),
            request: request.into_boxed_slice(),
            generations: cache.generations.current(&tables),
        };
        Some(Cacheable {
            cache: cache.clone(),
            key: Arc::new(key),
            ttl,
            tables,
        })
    }

    /// Serves a read from the cache (`None`), or says how to run it: with which hint, and
    /// the flight to `cache_fill` after it ran.
    pub(super) async fn serve_cached(
        &mut self,
        cacheable: Option<Cacheable>,
        hint: Option<Hint>,
        reply_seq: u8,
    ) -> Option<(Option<Hint>, Option<(Flight, Cacheable)>)> {
        let Some(c) = cacheable else {
            return Some((hint, None));
        };
        match self.cache_step(c, hint, reply_seq).await {
            Step::Served => None,
            Step::Bypass => Some((hint, None)),
            Step::Run {
                flight,
                hint,
                cacheable,
            } => Some((hint, Some((flight, cacheable)))),
        }
    }

    /// Serves the read from the cache, or says how to run it.
    async fn cache_step(&mut self, c: Cacheable, hint: Option<Hint>, reply_seq: u8) -> Step {
        match c.cache.lookup(c.key.clone()).await {
            Lookup::Hit(e) => {
                self.send_entry(&e, reply_seq).await;
                Step::Served
            }
            Lookup::Wait(rx) => match cache::wait(rx).await {
                Some(e) => {
                    self.send_entry(&e, reply_seq).await;
                    Step::Served
                }
                None => Step::Bypass,
            },
            Lookup::Lead(flight) => {
                // A replica may not have applied a recent write through the proxy yet: its old
                // rows must not fill the cache.
                let recent = c
                    .cache
                    .generations
                    .written_within(&c.tables, c.cache.fill_from_primary_ms);
                let hint = if recent { Some(Hint::Primary) } else { hint };
                self.io.start_capture(c.cache.max_entry_bytes);
                Step::Run {
                    flight,
                    hint,
                    cacheable: c,
                }
            }
        }
    }

    /// After a led read ran: stores what the client got if it was a whole result (no error,
    /// within `max_entry_bytes`) and no write to its tables came meanwhile.
    pub(super) async fn cache_fill(&mut self, flight: Flight, c: Cacheable, reply_seq: u8) {
        let captured = self.io.take_capture();
        let deprecate_eof = self.caps & cap::DEPRECATE_EOF != 0;
        let unchanged = c.cache.generations.current(&c.tables) == c.key.generations;
        let entry = captured
            .filter(|bytes| unchanged && whole_result(bytes, deprecate_eof))
            .map(|bytes| Arc::new(Entry::new(Bytes::from(bytes), reply_seq, c.ttl)));
        c.cache.complete(flight, entry).await;
    }

    /// Writes a cached response, its sequence ids renumbered if this command's differ.
    async fn send_entry(&mut self, e: &Entry, reply_seq: u8) {
        if e.first_seq == reply_seq {
            let _ = self.io.write_all(&e.packets).await;
            return;
        }
        let mut out = e.packets.to_vec();
        let mut at = 0;
        let mut seq = reply_seq;
        while at + 4 <= out.len() {
            let len = usize::from(out[at])
                | usize::from(out[at + 1]) << 8
                | usize::from(out[at + 2]) << 16;
            out[at + 3] = seq;
            seq = seq.wrapping_add(1);
            at += 4 + len;
        }
        let _ = self.io.write_all(&out).await;
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
