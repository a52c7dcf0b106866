//! Reads that need rows from several shards and whose results merge by concatenation: the
//! statement runs on every shard at once, and the client gets one result set: the first
//! shard's column definitions, every shard's rows as they arrive (shard by shard), one end.

use std::sync::Arc;

use bytes::BytesMut;

use super::route::Choice;
use super::{Session, SessionError};
use std::collections::HashMap;

use crate::executor::merge::{compare_rows, fold, row_values, ColumnMeta, Fold, ValueKind};
use crate::executor::ExecError;
use crate::executor::{binary_row, group};
use crate::planner::classify::{Class, Hint};
use crate::planner::shard::{ColumnRef, GroupSpec, MergeSpec};
use crate::planner::Route;
use crate::protocol::consts::{cap, status};
use crate::protocol::packet::{put_packet, Frame};
use crate::protocol::wire::Reader;

/// Flush to the client past this much buffered output.
const FLUSH_AT: usize = 64 * 1024;

/// What every shard of a multi-shard read runs.
pub(super) enum Request<'a> {
    /// A COM_QUERY of this text (the client's, or the planner's rewrite of it).
    Query(&'a [u8]),
    /// The client's COM_STMT_EXECUTE of its statement `id`; `sql` replaces the statement's
    /// text on the shards (the planner's rewrite, with the same parameters).
    Execute {
        frame: &'a Frame,
        id: u32,
        sql: Option<Arc<[u8]>>,
    },
}

impl Request<'_> {
    /// Rows come in the binary protocol (an execute) rather than as text.
    fn binary(&self) -> bool {
        matches!(self, Request::Execute { .. })
    }
}

/// A shard's row as values in their text forms (the binary protocol's decoded).
fn row_owned(row: &[u8], metas: &[ColumnMeta], binary: bool) -> Option<Vec<Option<Vec<u8>>>> {
    if binary {
        return binary_row::decode_row(row, metas);
    }
    let values = row_values(row, metas.len())?;
    Some(values.into_iter().map(|v| v.map(<[u8]>::to_vec)).collect())
}

/// A merged row for the client, in the protocol its shards answered in.
fn row_packet(values: &[Option<Vec<u8>>], metas: &[ColumnMeta], binary: bool) -> Option<Vec<u8>> {
    if binary {
        binary_row::encode_row(values, metas)
    } else {
        Some(encode_row(values))
    }
}

impl Session {
    /// Every shard's rows one shard after the other (no order asked for, nothing to fold).
    pub(super) async fn scatter(
        &mut self,
        targets: &[Route],
        class: &Arc<Class>,
        hint: Option<Hint>,
        request: &Request<'_>,
        in_txn: bool,
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        let Some(addrs) = self
            .open_shards(targets, class, hint, request, in_txn, reply_seq)
            .await?
        else {
            return Ok(());
        };
        let deprecate_eof = self.caps & cap::DEPRECATE_EOF != 0;
        let mut out = BytesMut::new();
        let mut seq = reply_seq;
        let mut total_warnings: u16 = 0;
        let mut last_status = status::AUTOCOMMIT;
        let mut header_sent = false;
        for (k, addr) in addrs.iter().enumerate() {
            match self.read_header(addr, deprecate_eof).await {
                Ok(Header::Columns(packets)) => {
                    if !header_sent {
                        for p in &packets {
                            seq = put_packet(&mut out, seq, p);
                        }
                        header_sent = true;
                    }
                }
                Ok(Header::NoRows) => continue,
                Ok(Header::Error(err)) => {
                    // An error may end a result set that has begun, as a server's would.
                    self.end_with_error(&mut out, seq, &err, &addrs[k + 1..])
                        .await;
                    return Ok(());
                }
                Err(msg) => return Err(self.end_lost(&out, addr, msg, &addrs[k..]).await),
            }
            loop {
                match self.next_row(addr, deprecate_eof).await {
                    Ok(Next::Row(r)) => {
                        seq = put_packet(&mut out, seq, &r);
                        if out.len() >= FLUSH_AT {
                            if self.io.write_all(&out).await.is_err() {
                                self.discard_all(&addrs[k..]);
                                return Ok(());
                            }
                            out.clear();
                        }
                    }
                    Ok(Next::End { status, warnings }) => {
                        total_warnings = total_warnings.saturating_add(warnings);
                        last_status = status;
                        break;
                    }
                    Ok(Next::Error(e)) => {
                        self.end_with_error(&mut out, seq, &e, &addrs[k + 1..])
                            .await;
                        return Ok(());
                    }
                    Err(msg) => return Err(self.end_lost(&out, addr, msg, &addrs[k..]).await),
                }
            }
        }
        if header_sent {
            end_packet(&mut out, seq, deprecate_eof, last_status, total_warnings);
        } else {
            let ok = crate::protocol::packet::OkInfo {
                status: last_status,
                ..Default::default()
            };
            crate::protocol::packet::put_ok(&mut out, seq, self.caps, ok);
        }
        let _ = self.io.write_all(&out).await;
        Ok(())
    }

    /// Takes the connection to `addr` (the primary of `route` if a replica cannot be had,
    /// lacks the session's database or has not applied its last write).
    async fn connect_for_scatter(
        &mut self,
        addr: &Arc<str>,
        route: &Route,
    ) -> Result<Arc<str>, ExecError> {
        let on_replica = *addr != route.addr;
        match self
            .ready_connection(addr, on_replica.then_some(&route.addr))
            .await
        {
            Ok(true) => return Ok(addr.clone()),
            Ok(false) => {}
            // Not replicated there yet: the replica is fine, the primary answers.
            Err(ExecError::Database(_)) if on_replica => self.pinned.release(addr),
            Err(_) if on_replica => {
                if let Some(h) = self.shared.health.get(addr) {
                    h.mark_down();
                }
            }
            Err(e) => return Err(e),
        }
        self.ready_connection(&route.addr, None).await?;
        Ok(route.addr.clone())
    }

    /// Ends a multi-shard answer with a shard's error after what is buffered; the shards not
    /// read to their end are closed.
    async fn end_with_error(
        &mut self,
        out: &mut BytesMut,
        seq: u8,
        err: &[u8],
        unread: &[Arc<str>],
    ) {
        put_packet(out, seq, err);
        self.discard_all(unread);
        let _ = self.io.write_all(out).await;
    }

    /// A shard failed mid-answer: the client gets what is buffered and cannot be
    /// resynchronised.
    async fn end_lost(
        &mut self,
        out: &BytesMut,
        addr: &Arc<str>,
        msg: String,
        unread: &[Arc<str>],
    ) -> SessionError {
        self.discard_all(unread);
        let _ = self.io.write_all(out).await;
        lost(addr, msg)
    }

    fn discard_all(&mut self, addrs: &[Arc<str>]) {
        for a in addrs {
            self.pinned.discard(a);
        }
    }

    /// Before a request went out to some shards: those it reached must not be reused, the
    /// others are fine.
    fn discard_unsent(&mut self, addrs: &[Arc<str>]) {
        for a in addrs {
            if self.pinned.find(a).is_some_and(|c| c.in_flight) {
                self.pinned.discard(a);
            }
        }
    }
}

/// Status and warning count of a result set's terminator (EOF, or OK with 0xFE header).
fn terminator(p: &[u8], deprecate_eof: bool) -> (u16, u16) {
    let mut r = Reader::new(p);
    let _ = r.u8();
    if deprecate_eof {
        let _ = r.lenenc();
        let _ = r.lenenc();
        let status = r.u16().unwrap_or(status::AUTOCOMMIT);
        let warnings = r.u16().unwrap_or(0);
        (status, warnings)
    } else {
        let warnings = r.u16().unwrap_or(0);
        let status = r.u16().unwrap_or(status::AUTOCOMMIT);
        (status, warnings)
    }
}

/// Most bytes of rows a grouped merge holds before it gives up with an error.
const MAX_MERGE_BYTES: usize = 64 << 20;

/// What a grouped merge produced.
enum Folded {
    /// The merged rows, in output order.
    Rows {
        rows: Vec<Vec<Option<Vec<u8>>>>,
        status: u16,
        warnings: u16,
    },
    /// A shard's ERR packet (the other shards were read to their end).
    Error(Vec<u8>),
    /// Past [`MAX_MERGE_BYTES`].
    TooBig,
}

/// A text-protocol row from owned values.
fn encode_row(values: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for v in values {
        match v {
            None => out.extend_from_slice(&[0xFB]),
            Some(v) => crate::protocol::wire::put_lenenc_bytes(&mut out, v),
        }
    }
    out.to_vec()
}

impl Session {
    /// Reads every shard's rows and folds rows of the same group into one (GROUP BY,
    /// aggregates, DISTINCT), then orders them: by ORDER BY `keys`, else by the group key when
    /// GROUP BY sorts. Holds at most [`MAX_MERGE_BYTES`].
    async fn fold_groups(
        &mut self,
        addrs: &[Arc<str>],
        open: &mut [bool],
        group: &GroupSpec,
        keys: &[(usize, bool)],
        (metas, defs): (&[ColumnMeta], &[Vec<u8>]),
        binary: bool,
    ) -> Result<Folded, (Arc<str>, String)> {
        let deprecate_eof = self.caps & cap::DEPRECATE_EOF != 0;
        let folds: Vec<Fold> = group
            .columns
            .iter()
            .map(|c| group::fold_of(*c, false))
            .collect();
        let kind = |c: usize| metas.get(c).map_or(ValueKind::Bytes, |m| m.kind);
        // With COUNT(DISTINCT x), rows fold by group and x first (see `GroupSpec::distinct_arg`).
        let first_keys: Vec<usize> = group
            .keys
            .iter()
            .copied()
            .chain(group.distinct_arg)
            .collect();
        let key_of = |values: &Vec<Option<Vec<u8>>>, cols: &[usize]| -> Vec<Option<Vec<u8>>> {
            cols.iter()
                .map(|&c| {
                    values
                        .get(c)
                        .and_then(|v| v.as_deref())
                        .map(|v| group_key(v, kind(c)))
                })
                .collect()
        };
        let mut index: HashMap<Vec<Option<Vec<u8>>>, usize> = HashMap::new();
        let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
        let mut bytes = 0usize;
        let mut status_out = status::AUTOCOMMIT;
        let mut warnings_out: u16 = 0;
        let mut failure = None;
        let mut too_big = false;
        for (k, addr) in addrs.iter().enumerate() {
            while open[k] {
                let next = self
                    .next_row(addr, deprecate_eof)
                    .await
                    .map_err(|m| (addr.clone(), m))?;
                let row = match next {
                    Next::Row(r) => r,
                    Next::End { status, warnings } => {
                        open[k] = false;
                        status_out = status;
                        warnings_out = warnings_out.saturating_add(warnings);
                        continue;
                    }
                    Next::Error(e) => {
                        open[k] = false;
                        failure.get_or_insert(e);
                        continue;
                    }
                };
                if failure.is_some() || too_big {
                    continue; // read to the end, so the connection stays usable
                }
                let Some(values) = row_owned(&row, metas, binary) else {
                    return Err((addr.clone(), "sent a row that could not be read".into()));
                };
                let key = key_of(&values, &first_keys);
                match index.get(&key) {
                    Some(&i) => {
                        for (c, how) in folds.iter().enumerate() {
                            let v = values.get(c).and_then(|v| v.as_deref());
                            fold(&mut rows[i][c], v, *how, kind(c));
                        }
                    }
                    None => {
                        bytes += row.len() + key.iter().flatten().map(Vec::len).sum::<usize>();
                        if bytes > MAX_MERGE_BYTES {
                            too_big = true;
                            continue;
                        }
                        index.insert(key, rows.len());
                        rows.push(values);
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Ok(Folded::Error(e));
        }
        if too_big {
            return Ok(Folded::TooBig);
        }
        if group.distinct_arg.is_some() {
            rows = group::fold_distinct(rows, group, &kind, &|r| key_of(r, &group.keys));
        }
        // AVG from its hidden SUM and COUNT, then HAVING: before ordering, which may use them.
        let mut rows = group::finish_groups(rows, group, metas, defs);
        let order: Vec<(usize, bool)> = if !keys.is_empty() {
            keys.to_vec()
        } else if group.sorted_by_key {
            group.keys.iter().map(|&c| (c, false)).collect()
        } else {
            Vec::new()
        };
        if !order.is_empty() {
            rows.sort_by(|a, b| compare_rows(a, b, &order, metas));
        }
        Ok(Folded::Rows {
            rows,
            status: status_out,
            warnings: warnings_out,
        })
    }
}

/// A value as a group key: strings of case-insensitive collations compare as the server
/// groups them (case and trailing spaces aside).
fn group_key(v: &[u8], kind: ValueKind) -> Vec<u8> {
    match kind {
        ValueKind::Text => String::from_utf8_lossy(v)
            .trim_end_matches(' ')
            .to_lowercase()
            .into_bytes(),
        _ => v.to_vec(),
    }
}

/// The next packet of a shard's rows.
enum Next {
    Row(Vec<u8>),
    End {
        status: u16,
        warnings: u16,
    },
    /// An ERR packet (payload), which ends the shard's answer.
    Error(Vec<u8>),
}

impl Session {
    /// A read on several shards merged in ORDER BY order (k-way: each shard returns its rows
    /// sorted, at most one row per shard is held) and trimmed to OFFSET/LIMIT.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn merge_sorted(
        &mut self,
        targets: &[Route],
        spec: &MergeSpec,
        class: &Arc<Class>,
        hint: Option<Hint>,
        request: &Request<'_>,
        in_txn: bool,
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        let binary = request.binary();
        let Some(addrs) = self
            .open_shards(targets, class, hint, request, in_txn, reply_seq)
            .await?
        else {
            return Ok(());
        };
        let deprecate_eof = self.caps & cap::DEPRECATE_EOF != 0;
        let mut out = BytesMut::new();
        let mut seq = reply_seq;
        // Headers: the first shard's goes to the client; its definitions give names and types.
        let mut metas: Vec<ColumnMeta> = Vec::new();
        let mut defs: Vec<Vec<u8>> = Vec::new();
        let mut open = vec![true; addrs.len()];
        for (k, addr) in addrs.iter().enumerate() {
            match self.read_header(addr, deprecate_eof).await {
                Ok(Header::Columns(packets)) => {
                    if metas.is_empty() {
                        let n = packets
                            .len()
                            .saturating_sub(1 + usize::from(!deprecate_eof));
                        defs = packets.iter().skip(1).take(n).cloned().collect();
                        match &spec.group {
                            // Columns the merge needs but the client did not ask for stay
                            // out of the client's header.
                            Some(g) => {
                                seq = put_packet(&mut out, seq, &group::column_count(g));
                                for d in group::client_columns(&defs, g) {
                                    seq = put_packet(&mut out, seq, &d);
                                }
                                if !deprecate_eof {
                                    if let Some(eof) = packets.last() {
                                        seq = put_packet(&mut out, seq, eof);
                                    }
                                }
                            }
                            None => {
                                for p in &packets {
                                    seq = put_packet(&mut out, seq, p);
                                }
                            }
                        }
                        metas = defs.iter().filter_map(|d| ColumnMeta::parse(d)).collect();
                    }
                }
                Ok(Header::NoRows) => open[k] = false,
                Ok(Header::Error(err)) => {
                    // The reply is this ERR alone: an earlier shard's header, still buffered,
                    // never reaches the client.
                    out.clear();
                    put_packet(&mut out, reply_seq, &err);
                    self.discard_all(&addrs);
                    let _ = self.io.write_all(&out).await;
                    return Ok(());
                }
                Err(msg) => {
                    self.discard_all(&addrs);
                    return Err(lost(addr, msg));
                }
            }
        }
        // ORDER BY terms as column indexes of the result.
        let mut keys = Vec::with_capacity(spec.order.len());
        for key in &spec.order {
            let col = match &key.column {
                ColumnRef::Position(p) => (*p < metas.len()).then_some(*p),
                ColumnRef::Name(n) => metas
                    .iter()
                    .position(|m| m.name.eq_ignore_ascii_case(n))
                    .or_else(|| {
                        metas
                            .iter()
                            .position(|m| m.org_name.eq_ignore_ascii_case(n))
                    }),
            };
            let Some(col) = col else {
                self.discard_all(&addrs);
                let msg = format!(
                    "shardgate: ORDER BY {:?} on a multi-shard read must name a selected column",
                    key.column
                );
                self.send_err(crate::protocol::consts::errcode::UNKNOWN, &msg, reply_seq)
                    .await;
                return Ok(());
            };
            keys.push((col, key.desc));
        }
        if let Some(group) = &spec.group {
            let merged = self
                .fold_groups(&addrs, &mut open, group, &keys, (&metas, &defs), binary)
                .await;
            return match merged {
                Ok(Folded::Rows {
                    rows,
                    status,
                    warnings,
                }) => {
                    for row in rows
                        .iter()
                        .skip(usize::try_from(spec.offset).unwrap_or(usize::MAX))
                        .take(
                            spec.limit
                                .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX)),
                        )
                    {
                        let mut row = row.clone();
                        group::visible(&mut row, group);
                        let shown = &metas[..group.visible.min(metas.len())];
                        match row_packet(&row, shown, binary) {
                            Some(p) => seq = put_packet(&mut out, seq, &p),
                            None => {
                                let msg = "shardgate: a merged value could not be encoded for the binary protocol";
                                crate::protocol::packet::put_err(
                                    &mut out,
                                    seq,
                                    crate::protocol::consts::errcode::UNKNOWN,
                                    msg,
                                );
                                let _ = self.io.write_all(&out).await;
                                return Ok(());
                            }
                        }
                    }
                    end_packet(&mut out, seq, deprecate_eof, status, warnings);
                    let _ = self.io.write_all(&out).await;
                    Ok(())
                }
                Ok(Folded::Error(e)) => {
                    self.end_with_error(&mut out, seq, &e, &addrs).await;
                    Ok(())
                }
                Ok(Folded::TooBig) => {
                    self.discard_all(&addrs);
                    let msg = format!(
                        "shardgate: merging this read's groups needs more than {} MiB; add a shard key to the WHERE clause or narrow it",
                        MAX_MERGE_BYTES >> 20
                    );
                    self.send_err(crate::protocol::consts::errcode::UNKNOWN, &msg, reply_seq)
                        .await;
                    Ok(())
                }
                Err((addr, msg)) => Err(self.end_lost(&out, &addr, msg, &addrs).await),
            };
        }
        // Each shard's next row, with its values once read (`None`: it could not be read).
        type Head = (Vec<u8>, Option<Vec<Option<Vec<u8>>>>);
        let mut heads: Vec<Option<Head>> = vec![None; addrs.len()];
        let mut total_warnings: u16 = 0;
        let mut last_status = status::AUTOCOMMIT;
        let mut skipped = 0u64;
        let mut sent = 0u64;
        let mut failure: Option<Vec<u8>> = None;
        'merge: loop {
            // Refill every open shard's head.
            for k in 0..addrs.len() {
                if !open[k] || heads[k].is_some() {
                    continue;
                }
                match self.next_row(&addrs[k], deprecate_eof).await {
                    Ok(Next::Row(r)) => {
                        let values = row_owned(&r, &metas, binary);
                        heads[k] = Some((r, values));
                    }
                    Ok(Next::End { status, warnings }) => {
                        open[k] = false;
                        total_warnings = total_warnings.saturating_add(warnings);
                        last_status = status;
                    }
                    Ok(Next::Error(e)) => {
                        open[k] = false;
                        failure = Some(e);
                        break 'merge;
                    }
                    Err(msg) => {
                        self.discard_all(&addrs);
                        let _ = self.io.write_all(&out).await;
                        return Err(lost(&addrs[k], msg));
                    }
                }
            }
            let best = {
                let mut best: Option<usize> = None;
                for (k, head) in heads.iter().enumerate() {
                    match head {
                        None => {}
                        // A row that cannot be read is passed on as it came, first.
                        Some((_, None)) => {
                            best = Some(k);
                            break;
                        }
                        Some((_, Some(v))) => {
                            let better = match best.and_then(|b| heads[b].as_ref()) {
                                Some((_, Some(cur))) => {
                                    compare_rows(v, cur, &keys, &metas) == std::cmp::Ordering::Less
                                }
                                _ => true,
                            };
                            if better {
                                best = Some(k);
                            }
                        }
                    }
                }
                best
            };
            let Some(k) = best else { break };
            let Some((row, values)) = heads[k].take() else {
                break;
            };
            if skipped < spec.offset {
                skipped += 1;
                continue;
            }
            if spec.limit.is_some_and(|l| sent >= l) {
                heads[k] = Some((row, values));
                break;
            }
            seq = put_packet(&mut out, seq, &row);
            sent += 1;
            if out.len() >= FLUSH_AT {
                if self.io.write_all(&out).await.is_err() {
                    self.discard_all(&addrs);
                    return Ok(());
                }
                out.clear();
            }
        }
        // Whatever the limit left unread is drained so the connections can be reused.
        for k in 0..addrs.len() {
            while open[k] {
                match self.next_row(&addrs[k], deprecate_eof).await {
                    Ok(Next::Row(_)) => {}
                    Ok(Next::End { status, warnings }) => {
                        open[k] = false;
                        total_warnings = total_warnings.saturating_add(warnings);
                        last_status = status;
                    }
                    Ok(Next::Error(e)) => {
                        open[k] = false;
                        failure.get_or_insert(e);
                    }
                    Err(_) => {
                        open[k] = false;
                        self.pinned.discard(&addrs[k]);
                    }
                }
            }
        }
        if let Some(err) = failure {
            put_packet(&mut out, seq, &err);
            let _ = self.io.write_all(&out).await;
            return Ok(());
        }
        end_packet(&mut out, seq, deprecate_eof, last_status, total_warnings);
        let _ = self.io.write_all(&out).await;
        Ok(())
    }

    /// Connects to each target's chosen server (its primary inside a transaction) and sends
    /// `request` to all of them; `None` after telling the client why it could not.
    async fn open_shards(
        &mut self,
        targets: &[Route],
        class: &Arc<Class>,
        hint: Option<Hint>,
        request: &Request<'_>,
        in_txn: bool,
        reply_seq: u8,
    ) -> Result<Option<Vec<Arc<str>>>, SessionError> {
        let mut addrs: Vec<Arc<str>> = Vec::with_capacity(targets.len());
        for route in targets {
            let addr = match self.choose(route, class, hint, &[], in_txn) {
                Choice::Replica(r) => r.addr().clone(),
                Choice::Held(a) => a,
                Choice::Primary => route.addr.clone(),
            };
            match self.connect_for_scatter(&addr, route).await {
                Ok(a) => addrs.push(a),
                Err(e) => {
                    self.report(e, reply_seq).await?;
                    return Ok(None);
                }
            }
        }
        let query = match request {
            Request::Query(sql) => Some(super::query_frame(sql, reply_seq.wrapping_sub(1))),
            Request::Execute { .. } => None,
        };
        for addr in &addrs {
            let command = match (&query, request) {
                (Some(q), _) => q.clone(),
                (None, Request::Execute { frame, id, sql }) => {
                    match self.statement_on_conn(addr, frame, *id, sql.as_ref()).await {
                        Ok(Ok(f)) => f,
                        Ok(Err((code, state, msg))) => {
                            self.discard_unsent(&addrs);
                            self.send_err((code, &state), &msg, reply_seq).await;
                            return Ok(None);
                        }
                        Err(e) => {
                            self.discard_all(&addrs);
                            self.report(e, reply_seq).await?;
                            return Ok(None);
                        }
                    }
                }
                (None, Request::Query(_)) => continue,
            };
            let Some(conn) = self.pinned.find(addr) else {
                continue;
            };
            conn.in_flight = true;
            if let Err(e) = conn.io.write_all(&command.raw).await {
                let msg = format!("shardgate: lost connection to backend {addr}: {e}");
                self.discard_all(&addrs);
                self.send_err(crate::protocol::consts::errcode::UNKNOWN, &msg, reply_seq)
                    .await;
                return Ok(None);
            }
        }
        Ok(Some(addrs))
    }

    /// A shard's result-set header: the column count and definitions (and the EOF after them
    /// without DEPRECATE_EOF), as payloads.
    async fn read_header(
        &mut self,
        addr: &Arc<str>,
        deprecate_eof: bool,
    ) -> Result<Header, String> {
        let Some(conn) = self.pinned.find(addr) else {
            return Err("no connection held".into());
        };
        let head = read_payload(conn).await?;
        match head.first() {
            Some(0xFF) => {
                conn.in_flight = false;
                return Ok(Header::Error(head));
            }
            Some(0x00) => {
                conn.in_flight = false;
                return Ok(Header::NoRows);
            }
            _ => {}
        }
        let columns = Reader::new(&head)
            .lenenc()
            .ok()
            .flatten()
            .ok_or_else(|| "a malformed column count".to_string())?;
        let mut packets = vec![head];
        for _ in 0..columns {
            packets.push(read_payload(conn).await?);
        }
        if !deprecate_eof {
            // The EOF after the definitions is forwarded with them (it is not a definition).
            let eof = read_payload(conn).await?;
            packets.push(eof);
        }
        Ok(Header::Columns(packets))
    }

    async fn next_row(&mut self, addr: &Arc<str>, deprecate_eof: bool) -> Result<Next, String> {
        let Some(conn) = self.pinned.find(addr) else {
            return Err("no connection held".into());
        };
        let p = read_payload(conn).await?;
        match p.first() {
            Some(0xFF) => {
                conn.in_flight = false;
                Ok(Next::Error(p))
            }
            Some(0xFE) if p.len() < 0xFF_FFFF && (deprecate_eof || p.len() < 9) => {
                conn.in_flight = false;
                conn.io.maybe_shrink();
                let (status, warnings) = terminator(&p, deprecate_eof);
                conn.in_txn = status & status::IN_TRANS != 0;
                Ok(Next::End { status, warnings })
            }
            _ => Ok(Next::Row(p)),
        }
    }
}

enum Header {
    /// Column count, definitions (and EOF), to forward as they are.
    Columns(Vec<Vec<u8>>),
    /// An OK: no result set.
    NoRows,
    Error(Vec<u8>),
}

async fn read_payload(conn: &mut crate::backend::Pooled) -> Result<Vec<u8>, String> {
    match conn.io.read_frame(1 << 30).await {
        Ok(Some(f)) => Ok(f.payload().into_owned()),
        Ok(None) => Err("closed the connection".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn lost(addr: &Arc<str>, msg: String) -> SessionError {
    SessionError::Forward(crate::backend::forward::ForwardError::Backend {
        addr: addr.to_string(),
        msg,
        sent: true,
    })
}

/// The end of a result set: EOF, or an OK with the 0xFE header under DEPRECATE_EOF.
fn end_packet(out: &mut BytesMut, seq: u8, deprecate_eof: bool, status: u16, warnings: u16) {
    let st = status & !status::MORE_RESULTS_EXISTS;
    let mut end = Vec::with_capacity(7);
    if deprecate_eof {
        end.extend_from_slice(&[0xFE, 0, 0]);
        end.extend_from_slice(&st.to_le_bytes());
        end.extend_from_slice(&warnings.to_le_bytes());
    } else {
        end.push(0xFE);
        end.extend_from_slice(&warnings.to_le_bytes());
        end.extend_from_slice(&st.to_le_bytes());
    }
    put_packet(out, seq, &end);
}
