//! Finding where a server's response ends while forwarding it untouched.
//!
//! The scanner looks at packet headers and the first bytes of the few packets that steer the
//! framing (OK, ERR, EOF, column counts); rows are passed through without being read, even
//! when they are larger than the buffer, so a result of any size streams in flat memory.
//! Sequence ids are rewritten on the way so the proxy can interleave its own exchanges.

use super::consts::{status, MAX_PAYLOAD};
use super::packet::{header_len, parse_ok, terminator_status, OkInfo};
use super::track::{self, TrackedGtid};
use super::wire::Reader;

/// What kind of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE: OK, ERR, LOCAL INFILE request or result sets.
    Result,
    /// COM_STMT_PREPARE: PREPARE_OK then parameter and column definitions.
    Prepare,
    /// COM_STMT_FETCH, COM_FIELD_LIST: rows (or definitions) up to a terminator.
    Rows,
    /// Everything else: exactly one packet.
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepParams(u16, u16),
    PrepParamsEof(u16),
    PrepColumns(u16),
    PrepColumnsEof,
    Single,
    Done,
}

/// What the caller must do after a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Forward the consumed bytes and read more from the server.
    More,
    /// The response is complete.
    Done,
    /// The server asked for a LOCAL INFILE upload: relay the client's packets, then call
    /// [`Scanner::after_infile`] and continue.
    LocalInfile,
}

/// Incremental response scanner; one per command.
#[derive(Debug)]
pub struct Scanner {
    deprecate_eof: bool,
    state: State,
    seq: u8,
    /// Payload bytes of the current physical packet still to pass through unread.
    skip: usize,
    /// The next physical packet continues a logical packet longer than 16 MiB.
    continuation: bool,
    /// The last OK or terminator seen (status flags, affected rows, insert id).
    pub last_ok: OkInfo,
    pub error: bool,
    /// Rows of the result sets seen (statistics only).
    pub rows: u64,
    /// The error code of an ERR packet read whole (0: none).
    pub error_code: u16,
    /// The error's SQLSTATE is a connection exception (class 08): the server closes the
    /// connection after sending it.
    pub fatal: bool,
    /// The command was COM_STMT_PREPARE, so a first 0x00 packet is a PREPARE_OK.
    prepare: bool,
    /// Statement id and column/param counts of a PREPARE_OK, as the server sent them.
    pub prepared: Option<(u32, u16, u16)>,
    /// A PREPARE reply's packets as they went to the client (filled by the forward).
    pub prepare_reply: Vec<u8>,
    /// The statement id the client sees in the PREPARE_OK, written over the server's.
    pub client_stmt_id: u32,
    /// The client did not negotiate CLIENT_SESSION_TRACK (the backend connection did): OK
    /// packets lose their session-state part on the way.
    pub strip_state: bool,
    /// The last `last_gtid` an OK of this response reported (a write's GTID).
    pub gtid: Option<TrackedGtid>,
    /// Byte ranges (start, length) of the last `scan`'s buffer that must not reach the client:
    /// session-state parts cut from OK packets whose headers were shortened to match.
    pub cuts: Vec<(usize, usize)>,
    /// The packet `control` just read was an OK (or an OK-style terminator).
    ok_seen: bool,
}

impl Scanner {
    /// `seq` is the sequence id the first response packet must carry.
    pub fn new(expect: Expect, deprecate_eof: bool, seq: u8) -> Self {
        let state = match expect {
            Expect::Result | Expect::Prepare => State::First,
            Expect::Rows => State::Rows,
            Expect::Single => State::Single,
        };
        Scanner {
            deprecate_eof,
            state,
            seq,
            skip: 0,
            continuation: false,
            last_ok: OkInfo::default(),
            error: false,
            rows: 0,
            error_code: 0,
            fatal: false,
            prepare: expect == Expect::Prepare,
            prepared: None,
            prepare_reply: Vec::new(),
            client_stmt_id: 0,
            strip_state: false,
            gtid: None,
            cuts: Vec::new(),
            ok_seen: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.skip == 0
    }

    /// The sequence id the next packet of this exchange will carry.
    pub fn next_seq(&self) -> u8 {
        self.seq
    }

    /// Continues after a LOCAL INFILE upload whose last client packet had `last_client_seq`.
    pub fn after_infile(&mut self, last_client_seq: u8) {
        self.seq = last_client_seq.wrapping_add(1);
        self.state = State::First;
    }

    /// Scans `buf` from the start; returns how many bytes may be forwarded now.
    pub fn scan(&mut self, buf: &mut [u8]) -> (usize, Progress) {
        let mut at = 0usize;
        self.cuts.clear();
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() - at);
                at += n;
                self.skip -= n;
                if self.skip > 0 {
                    return (at, Progress::More);
                }
            }
            if self.state == State::Done {
                return (at, Progress::Done);
            }
            let avail = buf.len() - at;
            if avail < 4 {
                return (at, Progress::More);
            }
            let len = header_len(&buf[at..]);
            if self.continuation {
                // The rest of a long packet: no type byte to look at.
                self.commit_header(buf, at, len);
                at += 4;
                self.skip = len;
                continue;
            }
            let first = if len > 0 {
                match buf.get(at + 4) {
                    Some(b) => Some(*b),
                    None => return (at, Progress::More),
                }
            } else {
                None
            };
            if self.needs_whole(first, len) {
                if avail < 4 + len {
                    return (at, Progress::More);
                }
                self.commit_header(buf, at, len);
                let progress = self.control(&mut buf[at + 4..at + 4 + len]);
                // An OK always fits one physical packet; anything else passes as it came.
                if std::mem::take(&mut self.ok_seen) && self.strip_state && len < MAX_PAYLOAD {
                    self.strip(buf, at, len);
                }
                at += 4 + len;
                if progress == Progress::LocalInfile {
                    return (at, progress);
                }
            } else {
                if self.state == State::Single && first == Some(0xFF) {
                    // COM_INIT_DB, COM_PING...: the caller must know a refusal from an OK.
                    self.error = true;
                }
                self.commit_header(buf, at, len);
                self.data_packet();
                at += 4;
                self.skip = len;
            }
        }
    }

    /// Cuts the session state off the OK packet at `at` (payload `len` bytes) for a client
    /// that did not ask for it; the header gets the new length, the cut is left to the caller.
    fn strip(&mut self, buf: &mut [u8], at: usize, len: usize) {
        let Some(new_len) = track::strip_state(&mut buf[at + 4..at + 4 + len]) else {
            return;
        };
        buf[at..at + 3].copy_from_slice(&(new_len as u32).to_le_bytes()[..3]);
        self.cuts.push((at + 4 + new_len, len - new_len));
    }

    fn commit_header(&mut self, buf: &mut [u8], at: usize, len: usize) {
        buf[at + 3] = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.continuation = len == MAX_PAYLOAD;
    }

    /// Packets whose content steers the framing are read whole; rows are streamed.
    fn needs_whole(&self, first: Option<u8>, len: usize) -> bool {
        match self.state {
            // Read whole only to cut an OK's session state (COM_INIT_DB reports the schema).
            State::Single => self.strip_state && first == Some(0x00),
            State::First | State::ColumnsEof | State::PrepParamsEof(_) | State::PrepColumnsEof => {
                true
            }
            _ => matches!(first, Some(0xFF)) || (first == Some(0xFE) && len < MAX_PAYLOAD),
        }
    }

    /// A row or a definition packet, counted but not read.
    fn data_packet(&mut self) {
        self.state = match self.state {
            State::Single => State::Done,
            State::Columns(1) if self.deprecate_eof => State::Rows,
            State::Columns(1) => State::ColumnsEof,
            State::Columns(n) => State::Columns(n - 1),
            State::PrepParams(1, c) => self.after_params(c),
            State::PrepParams(p, c) => State::PrepParams(p - 1, c),
            State::PrepColumns(1) => self.after_prep_columns(),
            State::PrepColumns(n) => State::PrepColumns(n - 1),
            State::Rows => {
                self.rows += 1;
                State::Rows
            }
            s => s,
        };
    }

    fn after_params(&self, columns: u16) -> State {
        if !self.deprecate_eof {
            State::PrepParamsEof(columns)
        } else {
            Self::prep_columns(columns)
        }
    }

    fn prep_columns(columns: u16) -> State {
        if columns > 0 {
            State::PrepColumns(columns)
        } else {
            State::Done
        }
    }

    fn after_prep_columns(&self) -> State {
        if self.deprecate_eof {
            State::Done
        } else {
            State::PrepColumnsEof
        }
    }

    /// An OK, ERR, EOF, column count or PREPARE_OK packet, read whole.
    fn control(&mut self, p: &mut [u8]) -> Progress {
        let first = p.first().copied().unwrap_or(0);
        if first == 0xFF {
            self.error = true;
            self.error_code = p.get(1..3).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
            self.fatal = p.get(3) == Some(&b'#') && p.get(4..6) == Some(b"08".as_slice());
            self.state = State::Done;
            return Progress::More;
        }
        self.state = match self.state {
            State::First => match first {
                0x00 if self.prepare => self.prepare_ok(p),
                0x00 | 0xFE => self.ok_or_terminator(p, true),
                0xFB => {
                    self.state = State::First;
                    return Progress::LocalInfile;
                }
                _ => match Reader::new(p).lenenc() {
                    Ok(Some(n)) if n > 0 => State::Columns(n),
                    _ => State::Done,
                },
            },
            State::ColumnsEof => {
                let st = terminator_status(p, false).unwrap_or(0);
                if st & status::CURSOR_EXISTS != 0 {
                    self.last_ok.status = st;
                    State::Done
                } else {
                    State::Rows
                }
            }
            State::Rows => self.ok_or_terminator(p, false),
            State::PrepParamsEof(c) => Self::prep_columns(c),
            State::PrepColumnsEof => State::Done,
            State::Single => {
                self.ok_or_terminator(p, true);
                State::Done
            }
            s => s,
        };
        Progress::More
    }

    fn ok_or_terminator(&mut self, p: &[u8], is_ok: bool) -> State {
        if is_ok || self.deprecate_eof {
            if let Ok(ok) = parse_ok(p) {
                self.last_ok = ok;
                self.ok_seen = true;
                if ok.status & status::SESSION_STATE_CHANGED != 0 {
                    self.gtid = track::last_gtid(p).or(self.gtid);
                }
            }
        } else if let Ok(st) = terminator_status(p, false) {
            self.last_ok.status = st;
            // An EOF carries the statement's warning count before its status.
            self.last_ok.warnings = u16::from_le_bytes([p[1], p[2]]);
        }
        if self.last_ok.status & status::MORE_RESULTS_EXISTS != 0 {
            State::First
        } else {
            State::Done
        }
    }

    fn prepare_ok(&mut self, p: &mut [u8]) -> State {
        let mut r = Reader::new(p);
        let parsed = (|| {
            r.u8()?;
            let id = r.u32()?;
            let cols = r.u16()?;
            let params = r.u16()?;
            Ok::<_, super::wire::Truncated>((id, cols, params))
        })();
        let Ok((id, cols, params)) = parsed else {
            return State::Done;
        };
        self.prepared = Some((id, cols, params));
        p[1..5].copy_from_slice(&self.client_stmt_id.to_le_bytes());
        if params > 0 {
            State::PrepParams(params, cols)
        } else {
            Self::prep_columns(cols)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::{put_eof, put_packet};
    use bytes::{BufMut, BytesMut};

    fn ok(status: u16) -> Vec<u8> {
        let mut p = vec![0u8, 1, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p
    }

    fn result_set(out: &mut BytesMut, seq: &mut u8, rows: &[&[u8]], deprecate: bool, more: bool) {
        *seq = put_packet(out, *seq, &[1]);
        *seq = put_packet(out, *seq, b"\x03defcolumn");
        if !deprecate {
            *seq = put_eof(out, *seq, 0);
        }
        for r in rows {
            *seq = put_packet(out, *seq, r);
        }
        let st = if more { status::MORE_RESULTS_EXISTS } else { 0 } | status::AUTOCOMMIT;
        if deprecate {
            let mut t = ok(st);
            t[0] = 0xFE;
            *seq = put_packet(out, *seq, &t);
        } else {
            *seq = put_eof(out, *seq, st);
        }
    }

    /// Feeds the response in chunks of `chunk` bytes, as reads from a socket would.
    fn feed(sc: &mut Scanner, wire: &[u8], chunk: usize) -> (usize, Progress) {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut forwarded = 0;
        loop {
            let take = chunk.min(wire.len() - fed);
            buf.put_slice(&wire[fed..fed + take]);
            fed += take;
            let (n, p) = sc.scan(&mut buf);
            let _ = buf.split_to(n);
            forwarded += n;
            if p != Progress::More || fed == wire.len() {
                return (forwarded, p);
            }
        }
    }

    #[test]
    fn two_result_sets_and_a_final_ok_in_any_chunking() {
        for deprecate in [false, true] {
            let mut wire = BytesMut::new();
            let mut seq = 1;
            result_set(&mut wire, &mut seq, &[b"\x01a", b"\xfb"], deprecate, true);
            result_set(&mut wire, &mut seq, &[b"\x01b"], deprecate, true);
            seq = put_packet(&mut wire, seq, &ok(status::AUTOCOMMIT));
            let _ = seq;
            for chunk in [1, 3, 7, 64, 1 << 20] {
                let mut sc = Scanner::new(Expect::Result, deprecate, 1);
                let (n, p) = feed(&mut sc, &wire, chunk);
                assert_eq!((n, p), (wire.len(), Progress::Done), "chunk {chunk}");
                assert_eq!(sc.last_ok.status, status::AUTOCOMMIT);
            }
        }
    }

    #[test]
    fn rows_larger_than_sixteen_mib_stream_without_ending_early() {
        let mut wire = BytesMut::new();
        let mut seq = put_packet(&mut wire, 1, &[1]);
        seq = put_packet(&mut wire, seq, b"\x03def");
        // A row whose first field is 20 MiB: starts with 0xFE (8-byte length).
        let mut row = vec![0xFEu8];
        row.extend_from_slice(&(20u64 << 20).to_le_bytes());
        row.resize(9 + (20 << 20), b'x');
        seq = put_packet(&mut wire, seq, &row);
        let mut t = ok(0);
        t[0] = 0xFE;
        put_packet(&mut wire, seq, &t);
        let mut sc = Scanner::new(Expect::Result, true, 1);
        let (n, p) = feed(&mut sc, &wire, 65536);
        assert_eq!((n, p), (wire.len(), Progress::Done));
    }

    #[test]
    fn prepare_ok_counts_params_and_columns() {
        for deprecate in [false, true] {
            let mut wire = BytesMut::new();
            let mut p = vec![0u8];
            p.extend_from_slice(&7u32.to_le_bytes());
            p.extend_from_slice(&2u16.to_le_bytes()); // columns
            p.extend_from_slice(&3u16.to_le_bytes()); // params
            p.extend_from_slice(&[0, 0, 0]);
            let mut seq = put_packet(&mut wire, 1, &p);
            for _ in 0..3 {
                seq = put_packet(&mut wire, seq, b"\x03def");
            }
            if !deprecate {
                seq = put_eof(&mut wire, seq, 0);
            }
            for _ in 0..2 {
                seq = put_packet(&mut wire, seq, b"\x03def");
            }
            if !deprecate {
                put_eof(&mut wire, seq, 0);
            }
            let mut sc = Scanner::new(Expect::Prepare, deprecate, 1);
            sc.client_stmt_id = 99;
            let mut buf = wire.clone();
            assert_eq!(sc.scan(&mut buf), (wire.len(), Progress::Done));
            assert_eq!(sc.prepared, Some((7, 2, 3)));
            assert_eq!(&buf[5..9], &99u32.to_le_bytes());
            let mut sc = Scanner::new(Expect::Prepare, deprecate, 1);
            assert_eq!(feed(&mut sc, &wire, 5), (wire.len(), Progress::Done));
        }
    }

    #[test]
    fn error_mid_result_ends_it_and_seq_ids_are_rewritten() {
        let mut wire = BytesMut::new();
        let mut seq = put_packet(&mut wire, 9, &[1]);
        seq = put_packet(&mut wire, seq, b"\x03def");
        seq = put_packet(&mut wire, seq, b"\x01a");
        put_packet(&mut wire, seq, b"\xff\x15\x05#70100killed");
        let mut sc = Scanner::new(Expect::Result, true, 1);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(sc.scan(&mut buf), (wire.len(), Progress::Done));
        assert!(sc.error);
        assert_eq!(buf[3], 1);
        assert_eq!(sc.next_seq(), 5);
    }

    #[test]
    fn local_infile_request_pauses_the_scan() {
        let mut wire = BytesMut::new();
        put_packet(&mut wire, 1, b"\xfb/tmp/x");
        let mut sc = Scanner::new(Expect::Result, true, 1);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(sc.scan(&mut buf), (wire.len(), Progress::LocalInfile));
        sc.after_infile(4);
        let mut buf = BytesMut::new();
        put_packet(&mut buf, 5, &ok(0));
        assert_eq!(sc.scan(&mut buf).1, Progress::Done);
    }

    #[test]
    fn a_single_packet_reply_tells_errors_from_oks() {
        let mut wire = BytesMut::new();
        put_packet(&mut wire, 1, b"\xff\x19\x04#42000Unknown database 'x'");
        let mut sc = Scanner::new(Expect::Single, true, 1);
        assert_eq!(feed(&mut sc, &wire, 3).1, Progress::Done);
        assert!(sc.error && !sc.fatal);
        let mut wire = BytesMut::new();
        put_packet(&mut wire, 1, &ok(status::AUTOCOMMIT));
        let mut sc = Scanner::new(Expect::Single, true, 1);
        assert_eq!(feed(&mut sc, &wire, 64).1, Progress::Done);
        assert!(!sc.error);
    }

    /// An OK (or OK terminator) with session state, as a backend sends it to the proxy.
    fn tracked_ok(first: u8, status: u16, info: &[u8]) -> Vec<u8> {
        let mut p = vec![first, 1, 0];
        p.extend_from_slice(&(status | status::SESSION_STATE_CHANGED).to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        p.push(info.len() as u8);
        p.extend_from_slice(info);
        let var = b"\x09last_gtid\x050-1-9";
        p.extend_from_slice(&[var.len() as u8 + 2, 0, var.len() as u8]);
        p.extend_from_slice(var);
        p
    }

    /// What the client gets: the scanned bytes without the cuts.
    fn forwarded(sc: &mut Scanner, wire: &[u8]) -> Vec<u8> {
        let mut buf = BytesMut::from(wire);
        let (n, p) = sc.scan(&mut buf);
        assert_eq!((n, p), (wire.len(), Progress::Done));
        let mut out = Vec::new();
        let mut from = 0;
        for &(cut, len) in &sc.cuts {
            out.extend_from_slice(&buf[from..cut]);
            from = cut + len;
        }
        out.extend_from_slice(&buf[from..n]);
        out
    }

    #[test]
    fn session_state_is_read_and_cut_for_clients_without_tracking() {
        // Two statements' OKs (multi-statement), then a result set ending in an OK terminator.
        let mut wire = BytesMut::new();
        let more = status::MORE_RESULTS_EXISTS | status::AUTOCOMMIT;
        let mut seq = put_packet(&mut wire, 1, &tracked_ok(0, more, b"Rows matched: 1"));
        seq = put_packet(&mut wire, seq, &tracked_ok(0, more, b""));
        seq = put_packet(&mut wire, seq, &[1]);
        seq = put_packet(&mut wire, seq, b"\x03def");
        seq = put_packet(&mut wire, seq, b"\x01a");
        put_packet(&mut wire, seq, &tracked_ok(0xFE, status::AUTOCOMMIT, b""));
        let mut tracking = Scanner::new(Expect::Result, true, 1);
        assert_eq!(
            forwarded(&mut tracking, &wire),
            &wire[..],
            "a tracking client: untouched"
        );
        assert_eq!(tracking.gtid.map(|g| g.to_string()), Some("0-1-9".into()));

        let mut plain = Scanner::new(Expect::Result, true, 1);
        plain.strip_state = true;
        let got = forwarded(&mut plain, &wire);
        let mut want = BytesMut::new();
        let ok = |st: u16, info: &[u8]| {
            let mut p = vec![0u8, 1, 0];
            p.extend_from_slice(&st.to_le_bytes());
            p.extend_from_slice(&[0, 0]);
            if !info.is_empty() {
                p.push(info.len() as u8);
                p.extend_from_slice(info);
            }
            p
        };
        let mut seq = put_packet(&mut want, 1, &ok(more, b"Rows matched: 1"));
        seq = put_packet(&mut want, seq, &ok(more, b""));
        seq = put_packet(&mut want, seq, &[1]);
        seq = put_packet(&mut want, seq, b"\x03def");
        seq = put_packet(&mut want, seq, b"\x01a");
        let mut end = ok(status::AUTOCOMMIT, b"");
        end[0] = 0xFE;
        put_packet(&mut want, seq, &end);
        assert_eq!(got, &want[..]);
        assert_eq!(plain.gtid.map(|g| g.to_string()), Some("0-1-9".into()));

        // COM_INIT_DB's single OK reports the schema change.
        let mut wire = BytesMut::new();
        put_packet(&mut wire, 1, &tracked_ok(0, status::AUTOCOMMIT, b""));
        let mut single = Scanner::new(Expect::Single, true, 1);
        single.strip_state = true;
        let mut want = BytesMut::new();
        put_packet(&mut want, 1, &ok(status::AUTOCOMMIT, b""));
        assert_eq!(forwarded(&mut single, &wire), &want[..]);
    }

    #[test]
    fn a_connection_exception_is_fatal() {
        let mut wire = BytesMut::new();
        put_packet(&mut wire, 1, b"\xff\x84\x04#08S01Got packets out of order");
        let mut sc = Scanner::new(Expect::Result, true, 1);
        assert_eq!(feed(&mut sc, &wire, 64).1, Progress::Done);
        assert!(sc.error && sc.fatal);
    }
}
