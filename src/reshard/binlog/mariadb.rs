//! MariaDB's own binlog events, which mysql_common does not know: the GTID that opens every
//! event group, and the event types the reader must recognise to refuse or skip them.

use std::fmt;

use crate::ha::gtid::GtidPos;

/// GTID_EVENT: opens an event group (a transaction, or one DDL statement).
pub const GTID_EVENT: u8 = 0xA2;
/// MariaDB event types from ANNOTATE_ROWS (0xA0) to the compressed rows events (0xAD).
pub const FIRST_MARIADB_EVENT: u8 = 0xA0;
/// QUERY_COMPRESSED_EVENT .. DELETE_ROWS_COMPRESSED_EVENT: written with `log_bin_compress=ON`.
pub const COMPRESSED_EVENTS: std::ops::RangeInclusive<u8> = 0xA5..=0xAD;

/// The group is one statement without BEGIN/COMMIT (DDL): it ends after its one query event.
const FL_STANDALONE: u8 = 0x01;
/// An 8-byte commit id follows the flags.
const FL_GROUP_COMMIT_ID: u8 = 0x02;
/// The group is the first phase of an XA transaction (ends with XA PREPARE).
const FL_PREPARED_XA: u8 = 0x40;

/// One transaction's MariaDB GTID, `domain-server-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrxGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl TrxGtid {
    /// Parses one `domain-server-seq` (what `@@last_gtid` shows).
    pub fn parse(text: &str) -> Option<TrxGtid> {
        let mut it = GtidPos::parse(text)?.0.into_iter();
        let (domain, g) = it.next()?;
        if it.next().is_some() {
            return None;
        }
        Some(TrxGtid {
            domain,
            server: g.server,
            seq: g.seq,
        })
    }
}

impl fmt::Display for TrxGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// A GTID event's body, read from its raw bytes (checksum already cut off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GtidEvent {
    pub gtid: TrxGtid,
    pub standalone: bool,
    pub prepared_xa: bool,
}

/// Parses a GTID event body: seq u64 LE, domain u32 LE, flags u8, then (ignored here) the
/// commit id when `flags & FL_GROUP_COMMIT_ID` and the XA id for XA groups. `server` comes
/// from the event header. None if the body is too short for what its flags announce.
pub fn parse_gtid_event(server: u32, body: &[u8]) -> Option<GtidEvent> {
    let seq = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
    let flags = *body.get(12)?;
    if flags & FL_GROUP_COMMIT_ID != 0 && body.len() < 21 {
        return None;
    }
    Some(GtidEvent {
        gtid: TrxGtid {
            domain,
            server,
            seq,
        },
        standalone: flags & FL_STANDALONE != 0,
        prepared_xa: flags & FL_PREPARED_XA != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(seq: u64, domain: u32, flags: u8, tail: &[u8]) -> Vec<u8> {
        let mut b = seq.to_le_bytes().to_vec();
        b.extend_from_slice(&domain.to_le_bytes());
        b.push(flags);
        b.extend_from_slice(tail);
        b
    }

    #[test]
    fn parses_gtid_bodies() {
        // Transactional group with a commit id (flags 0x0e: commit id, transactional, parallel).
        let e = parse_gtid_event(7, &body(0x0102_0304_0506_0708, 3, 0x0e, &[9; 8]))
            .expect("with commit id");
        assert_eq!(
            e.gtid,
            TrxGtid {
                domain: 3,
                server: 7,
                seq: 0x0102_0304_0506_0708
            }
        );
        assert!(!e.standalone && !e.prepared_xa);
        assert_eq!(e.gtid.to_string(), "3-7-72623859790382856");
        assert_eq!(TrxGtid::parse("3-7-72623859790382856"), Some(e.gtid));
        assert_eq!(TrxGtid::parse("0-1-2,1-1-2"), None);
        assert_eq!(TrxGtid::parse(""), None);

        // DDL: standalone, padded to the 19-byte post-header.
        let e = parse_gtid_event(1, &body(5, 0, 0x21, &[0; 6])).expect("ddl");
        assert!(e.standalone);
        assert!(
            parse_gtid_event(1, &body(5, 0, 0x41, &[0; 6]))
                .expect("xa")
                .prepared_xa
        );
    }

    #[test]
    fn short_bodies_are_refused() {
        assert!(parse_gtid_event(1, &[0; 12]).is_none());
        assert!(
            parse_gtid_event(1, &body(1, 0, 0x02, &[0; 6])).is_none(),
            "commit id announced, not there"
        );
    }
}
