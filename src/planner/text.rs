//! Statements are bytes; sqlparser reads `&str`. The planner parses a copy of the client's
//! bytes with every byte of an invalid UTF-8 sequence replaced by one stand-in byte, so that
//! the copy has the same length and byte offsets as the original. Whatever is sent to a server
//! is cut from the original bytes, never from the copy (`String::from_utf8_lossy` would turn a
//! BLOB's `FF` into `EF BF BD`).

use std::borrow::Cow;

/// Stands in for each byte of an invalid UTF-8 sequence in the parsed copy. A control
/// character: inside a quoted string it changes nothing the planner reads; outside one the
/// parser refuses it, so the copy never reads as a different statement. A string literal
/// holding it is not a usable shard key (its real bytes are unknown to the planner).
pub const STAND_IN: u8 = 0x1A;

/// `sql` as text of the same length: borrowed when it is valid UTF-8.
pub fn parse_copy(sql: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(sql) {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(sql.len());
    let mut rest = sql;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.extend_from_slice(s.as_bytes());
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.extend_from_slice(good);
                let n = e.error_len().unwrap_or(bad.len());
                out.extend(std::iter::repeat_n(STAND_IN, n));
                rest = &bad[n..];
            }
        }
    }
    // Valid by construction: valid runs and ASCII stand-ins.
    Cow::Owned(String::from_utf8(out).unwrap_or_default())
}

/// A statement the planner rewrote from the parsed copy `copy` of `original`, as the bytes to
/// send: the rewrite's own text with the client's bytes wherever it kept the copy's. Found as
/// the common prefix and suffix of copy and rewrite, so it is exact for one edited region;
/// `None` when a stand-in falls inside the edited region (the real bytes cannot be placed).
pub fn restore(original: &[u8], copy: &str, rewritten: &str) -> Option<Vec<u8>> {
    let (c, r) = (copy.as_bytes(), rewritten.as_bytes());
    if original.len() != c.len() {
        return None;
    }
    if original == c {
        return Some(r.to_vec());
    }
    let prefix = c.iter().zip(r).take_while(|(a, b)| a == b).count();
    let room = c.len().min(r.len()) - prefix;
    let suffix = c
        .iter()
        .rev()
        .zip(r.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let edited = &r[prefix..r.len() - suffix];
    if edited.contains(&STAND_IN) {
        return None;
    }
    let mut out = Vec::with_capacity(r.len());
    out.extend_from_slice(&original[..prefix]);
    out.extend_from_slice(edited);
    out.extend_from_slice(&original[original.len() - suffix..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_keeps_every_offset() {
        let raw = b"INSERT INTO t VALUES ('A\xff\x80B', '\xc3\xa9', '\xe2\x82')";
        let copy = parse_copy(raw);
        assert_eq!(copy.len(), raw.len());
        assert_eq!(
            &*copy,
            "INSERT INTO t VALUES ('A\u{1a}\u{1a}B', 'é', '\u{1a}\u{1a}')"
        );
        assert!(matches!(
            parse_copy("SELECT 'é'".as_bytes()),
            Cow::Borrowed(_)
        ));
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(parse_copy(&all).len(), 256);
    }

    #[test]
    fn a_rewrite_gets_the_clients_bytes_back() {
        let raw = b"SELECT b FROM t WHERE b = _binary'\xff\x80' ORDER BY b LIMIT 2, 3";
        let copy = parse_copy(raw);
        let rewritten = copy.replace("LIMIT 2, 3", "LIMIT 5");
        assert_eq!(
            restore(raw, &copy, &rewritten).as_deref(),
            Some(&b"SELECT b FROM t WHERE b = _binary'\xff\x80' ORDER BY b LIMIT 5"[..])
        );
        let head = copy.replace("SELECT b", "SELECT b, COUNT(b)");
        assert_eq!(
            restore(raw, &copy, &head).as_deref(),
            Some(
                &b"SELECT b, COUNT(b) FROM t WHERE b = _binary'\xff\x80' ORDER BY b LIMIT 2, 3"[..]
            )
        );
        // Edits on both sides of the client's bytes: they cannot be placed.
        let both = head.replace("LIMIT 2, 3", "LIMIT 5");
        assert_eq!(restore(raw, &copy, &both), None);
        assert_eq!(
            restore(b"SELECT 1", "SELECT 1", "SELECT 2").as_deref(),
            Some(&b"SELECT 2"[..])
        );
    }
}
