//! Session-state tracking in OK packets (CLIENT_SESSION_TRACK).
//!
//! Every backend connection asks MariaDB to report `last_gtid` in the OK packet of the
//! statement that wrote it: the proxy learns each write's GTID without a statement of its
//! own (`SELECT @@last_gtid` would reset `ROW_COUNT()` and cost a round trip). A client that
//! did not negotiate session tracking gets the OK as the server would have sent it: the
//! tracking part cut off, every other byte as it came.

use super::consts::status;
use super::wire::{Reader, Truncated};

/// Session-state entry type of a system variable (name, value).
const TRACK_SYSTEM_VARIABLES: u8 = 0;

/// What the proxy sets on every backend connection (at connect and after each reset): the
/// server's own list, plus `last_gtid`.
pub const TRACK_LAST_GTID: &str = "SET SESSION session_track_system_variables = \
     CONCAT_WS(',', NULLIF(@@GLOBAL.session_track_system_variables, ''), 'last_gtid')";

/// One MariaDB GTID as `last_gtid` reports it: `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl TrackedGtid {
    /// Parses `d-s-n`; `None` for anything else (an empty `last_gtid` included).
    pub fn parse(text: &[u8]) -> Option<TrackedGtid> {
        let text = std::str::from_utf8(text).ok()?;
        let mut it = text.trim().split('-');
        let g = TrackedGtid {
            domain: it.next()?.parse().ok()?,
            server: it.next()?.parse().ok()?,
            seq: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(g)
    }
}

impl std::fmt::Display for TrackedGtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// Where the parts of an OK payload (header byte first) end.
struct Layout {
    /// Offset of the two status bytes.
    status_at: usize,
    status: u16,
    /// End of the warnings field: the OK of a server with nothing more to say ends here.
    fixed_end: usize,
    /// The info text's bytes (without its length) and where its field ends.
    info: (usize, usize),
    /// The session-state bytes (without their length), when the status flag says so.
    state: Option<(usize, usize)>,
}

fn layout(p: &[u8]) -> Result<Layout, Truncated> {
    let mut r = Reader::new(p);
    let at = |r: &Reader| p.len() - r.remaining().len();
    r.u8()?;
    r.lenenc()?;
    r.lenenc()?;
    let status_at = at(&r);
    let status = r.u16()?;
    r.u16()?;
    let fixed_end = at(&r);
    if r.is_empty() {
        return Ok(Layout {
            status_at,
            status,
            fixed_end,
            info: (fixed_end, fixed_end),
            state: None,
        });
    }
    let info_len = r.lenenc_bytes()?.len();
    let info_end = at(&r);
    let state = if status & status::SESSION_STATE_CHANGED != 0 && !r.is_empty() {
        let s = r.lenenc_bytes()?;
        let end = at(&r);
        Some((end - s.len(), end))
    } else {
        None
    };
    Ok(Layout {
        status_at,
        status,
        fixed_end,
        info: (info_end - info_len, info_end),
        state,
    })
}

/// The `last_gtid` an OK payload reports, if any.
pub fn last_gtid(p: &[u8]) -> Option<TrackedGtid> {
    // Most OKs carry no state: the status flag answers without walking the packet.
    let l = layout(p).ok()?;
    let (from, to) = l.state?;
    let mut r = Reader::new(&p[from..to]);
    let mut found = None;
    while !r.is_empty() {
        let kind = r.u8().ok()?;
        let data = r.lenenc_bytes().ok()?;
        if kind != TRACK_SYSTEM_VARIABLES {
            continue;
        }
        let mut d = Reader::new(data);
        let name = d.lenenc_bytes().ok()?;
        let value = d.lenenc_bytes().ok()?;
        if name.eq_ignore_ascii_case(b"last_gtid") {
            found = TrackedGtid::parse(value).or(found);
        }
    }
    found
}

/// Turns an OK payload made for a tracking client into what a client without
/// CLIENT_SESSION_TRACK gets from MariaDB: the session-state flag cleared, the state cut off
/// (and the info field too when it is empty, as the server omits it then). Returns the new
/// length; `None` when the packet needs no change (or is not an OK the proxy can read, which
/// then passes as it came).
pub fn strip_state(p: &mut [u8]) -> Option<usize> {
    let l = layout(p).ok()?;
    if l.status & status::SESSION_STATE_CHANGED == 0 {
        return None;
    }
    let st = (l.status & !status::SESSION_STATE_CHANGED).to_le_bytes();
    p[l.status_at..l.status_at + 2].copy_from_slice(&st);
    Some(if l.info.0 == l.info.1 {
        l.fixed_end
    } else {
        l.info.1
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::put_lenenc_bytes;
    use bytes::{BufMut, BytesMut};

    fn ok(status: u16, info: &[u8], state: Option<&[u8]>) -> Vec<u8> {
        let mut p = BytesMut::new();
        p.put_slice(&[0, 3, 0xFC, 0x10, 0x27]); // 3 rows, insert id 10000
        p.put_u16_le(status);
        p.put_u16_le(1);
        if state.is_some() || !info.is_empty() {
            put_lenenc_bytes(&mut p, info);
        }
        if let Some(s) = state {
            put_lenenc_bytes(&mut p, s);
        }
        p.to_vec()
    }

    fn sysvar(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut d = BytesMut::new();
        put_lenenc_bytes(&mut d, name);
        put_lenenc_bytes(&mut d, value);
        let mut e = BytesMut::new();
        e.put_u8(TRACK_SYSTEM_VARIABLES);
        put_lenenc_bytes(&mut e, &d);
        e.to_vec()
    }

    #[test]
    fn finds_last_gtid_among_other_state() {
        let mut state = vec![1u8, 5, 4, b'a', b'p', b'p', b'2']; // schema entry
        state.extend(sysvar(b"autocommit", b"ON"));
        state.extend(sysvar(b"last_gtid", b"0-11-4207"));
        let with = status::SESSION_STATE_CHANGED | status::AUTOCOMMIT;
        let p = ok(with, b"Rows matched: 3", Some(&state));
        let g = last_gtid(&p).expect("gtid");
        assert_eq!((g.domain, g.server, g.seq), (0, 11, 4207));
        assert_eq!(g.to_string(), "0-11-4207");
        // The flag off: the bytes after the info are not state.
        assert_eq!(last_gtid(&ok(status::AUTOCOMMIT, b"x", None)), None);
        let empty = sysvar(b"last_gtid", b"");
        assert_eq!(last_gtid(&ok(with, b"", Some(&empty))), None);
        assert_eq!(last_gtid(&p[..p.len() - 3]), None, "truncated");
    }

    #[test]
    fn stripping_keeps_every_other_field() {
        let state = sysvar(b"last_gtid", b"0-1-9");
        let with = status::SESSION_STATE_CHANGED | status::AUTOCOMMIT;
        let mut p = ok(with, b"Rows matched: 3  Changed: 3", Some(&state));
        let n = strip_state(&mut p).expect("changed");
        assert_eq!(
            &p[..n],
            &ok(status::AUTOCOMMIT, b"Rows matched: 3  Changed: 3", None)[..]
        );
        let mut p = ok(with, b"", Some(&state));
        let n = strip_state(&mut p).expect("changed");
        assert_eq!(&p[..n], &ok(status::AUTOCOMMIT, b"", None)[..]);
        let mut plain = ok(status::AUTOCOMMIT, b"info", None);
        assert_eq!(strip_state(&mut plain), None);
        let mut short = vec![0u8, 1];
        assert_eq!(strip_state(&mut short), None);
    }
}
