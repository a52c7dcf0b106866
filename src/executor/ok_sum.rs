//! One OK packet for a write that ran on several shards: affected rows and warnings summed,
//! and the info text MariaDB would have written for the whole statement ("Rows matched: 3
//! Changed: 3  Warnings: 0" for an UPDATE, "Records: 3  Duplicates: 0  Warnings: 0" for a
//! multi-row INSERT), summed from the shards' own. Drivers read it: Node mysql2's
//! `changedRows` comes from the UPDATE text.

use crate::protocol::consts::status;
use crate::protocol::packet::OkInfo;

/// The shards' OK packets added up.
#[derive(Debug, Clone)]
pub struct OkSum {
    pub ok: OkInfo,
    /// The numbers of the shards' info texts, summed, and which text it was; `None` before
    /// any shard sent one, or once two shards sent texts of different kinds (then none is sent).
    info: Option<(Kind, [u64; 3])>,
    mixed: bool,
    /// The parts are one multi-row INSERT's rows: a part of one row, which the server
    /// answers without a text, counts as one record.
    rows: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Update,
    Insert,
}

impl OkSum {
    /// For the parts of one statement; `multi_row_insert` when they are the rows of an
    /// INSERT/REPLACE of several rows (MariaDB then reports "Records: ...").
    pub fn new(multi_row_insert: bool) -> Self {
        OkSum {
            ok: OkInfo {
                status: status::AUTOCOMMIT,
                ..OkInfo::default()
            },
            info: None,
            mixed: false,
            rows: multi_row_insert,
        }
    }

    /// Adds one shard's OK and its info text.
    pub fn add(&mut self, ok: &OkInfo, info: &[u8]) {
        self.ok.affected_rows += ok.affected_rows;
        self.ok.warnings = self.ok.warnings.saturating_add(ok.warnings);
        self.ok.status = ok.status & !status::MORE_RESULTS_EXISTS;
        if self.ok.last_insert_id == 0 {
            self.ok.last_insert_id = ok.last_insert_id;
        }
        // A one-row part: one record; a duplicate if it replaced or updated a row (2 affected),
        // or if INSERT IGNORE skipped it (none affected, the duplicate's warning).
        let dup = match ok.affected_rows {
            0 => u64::from(ok.warnings > 0),
            n => n - 1,
        };
        let one_row = (Kind::Insert, [1, dup, ok.warnings.into()]);
        let parsed = match parse(info) {
            None if info.is_empty() && self.rows => Some(one_row),
            p => p,
        };
        let Some((kind, n)) = parsed else {
            self.mixed |= !info.is_empty();
            return;
        };
        match &mut self.info {
            None => self.info = Some((kind, n)),
            Some((k, sum)) if *k == kind => {
                for (s, v) in sum.iter_mut().zip(n) {
                    *s = s.saturating_add(v);
                }
            }
            Some(_) => self.mixed = true,
        }
    }

    /// The info text for the client's OK (empty when the shards sent none).
    pub fn info(&self) -> Vec<u8> {
        match (&self.info, self.mixed) {
            (Some((Kind::Update, [m, c, w])), false) => {
                format!("Rows matched: {m}  Changed: {c}  Warnings: {w}").into_bytes()
            }
            (Some((Kind::Insert, [r, d, w])), false) => {
                format!("Records: {r}  Duplicates: {d}  Warnings: {w}").into_bytes()
            }
            _ => Vec::new(),
        }
    }
}

/// The three numbers of an UPDATE's or a multi-row INSERT's info text.
fn parse(info: &[u8]) -> Option<(Kind, [u64; 3])> {
    let text = std::str::from_utf8(info).ok()?;
    let (kind, labels) = if text.starts_with("Rows matched:") {
        (Kind::Update, ["Rows matched:", "Changed:", "Warnings:"])
    } else if text.starts_with("Records:") {
        (Kind::Insert, ["Records:", "Duplicates:", "Warnings:"])
    } else {
        return None;
    };
    let mut rest = text;
    let mut n = [0u64; 3];
    for (slot, label) in n.iter_mut().zip(labels) {
        rest = rest.trim_start().strip_prefix(label)?.trim_start();
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        *slot = rest[..end].parse().ok()?;
        rest = &rest[end..];
    }
    rest.trim().is_empty().then_some((kind, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(affected: u64, warnings: u16) -> OkInfo {
        OkInfo {
            affected_rows: affected,
            warnings,
            status: status::AUTOCOMMIT,
            ..OkInfo::default()
        }
    }

    #[test]
    fn update_texts_are_summed() {
        let mut s = OkSum::new(false);
        s.add(&ok(2, 0), b"Rows matched: 2  Changed: 2  Warnings: 0");
        s.add(&ok(1, 1), b"Rows matched: 3  Changed: 1  Warnings: 1");
        assert_eq!((s.ok.affected_rows, s.ok.warnings), (3, 1));
        assert_eq!(s.info(), b"Rows matched: 5  Changed: 3  Warnings: 1");
    }

    #[test]
    fn insert_texts_are_summed_and_a_one_row_part_is_one_record() {
        let mut s = OkSum::new(true);
        s.add(&ok(2, 0), b"Records: 2  Duplicates: 0  Warnings: 0");
        // A one-row INSERT on a shard has no info text; REPLACE of an existing row: 2.
        s.add(&ok(1, 0), b"");
        s.add(&ok(2, 1), b"");
        s.add(&ok(3, 0), b"Records: 2  Duplicates: 1  Warnings: 0");
        assert_eq!(s.info(), b"Records: 6  Duplicates: 2  Warnings: 1");
        let mut two = OkSum::new(true);
        two.add(&ok(1, 0), b"");
        two.add(&ok(1, 0), b"");
        assert_eq!(two.info(), b"Records: 2  Duplicates: 0  Warnings: 0");
        // INSERT IGNORE of a duplicate: nothing affected, its warning; ODKU changing nothing.
        let mut ignored = OkSum::new(true);
        ignored.add(&ok(0, 1), b"");
        ignored.add(&ok(0, 0), b"");
        assert_eq!(ignored.info(), b"Records: 2  Duplicates: 1  Warnings: 1");
    }

    #[test]
    fn no_text_or_texts_of_other_kinds_give_none() {
        let mut s = OkSum::new(false);
        s.add(&ok(1, 0), b"");
        assert!(s.info().is_empty());
        s.add(&ok(1, 0), b"Rows matched: 1  Changed: 1  Warnings: 0");
        s.add(&ok(1, 0), b"Records: 1  Duplicates: 0  Warnings: 0");
        assert!(s.info().is_empty());
        let mut t = OkSum::new(false);
        t.add(&ok(1, 0), b"something else");
        assert!(t.info().is_empty());
    }
}
