//! COM_STMT_BULK_EXECUTE payloads (MariaDB's `STMT_BULK_OPERATIONS`): where each row of
//! parameters lies in the client's bytes, one parameter of a row (for routing), and a bulk of
//! some of the rows cut from those bytes. Values are only measured, never re-encoded.
//!
//! Layout: 0xFA, statement id u32, flags u16, with `SEND_TYPES_TO_SERVER` two type bytes per
//! parameter, then rows to the end of the payload: per parameter an indicator byte and, for
//! `NONE`, the value in the binary protocol's form of its type.

use std::ops::Range;

use super::prepared::{read_value, ParamValue};

/// Answer with a result set of affected rows and insert ids per row (needs the
/// `BULK_UNIT_RESULTS` capability, which the proxy does not offer).
pub const SEND_UNIT_RESULTS: u16 = 64;
/// The parameter types precede the rows.
pub const SEND_TYPES_TO_SERVER: u16 = 128;

/// Where the rows start when types were sent: command byte, id, flags.
const HEADER: usize = 1 + 4 + 2;

/// Parameter indicators.
const IND_NONE: u8 = 0;
const IND_NULL: u8 = 1;
const IND_DEFAULT: u8 = 2;
const IND_IGNORE: u8 = 3;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BulkError {
    #[error("the command is shorter than its header")]
    Short,
    #[error("the parameter types were not sent")]
    NoTypes,
    #[error("row {row}: unknown parameter indicator {indicator}")]
    Indicator { row: usize, indicator: u8 },
    #[error("row {0} is cut short")]
    RowShort(usize),
}

/// One parameter of one row.
#[derive(Debug, PartialEq)]
pub enum BulkParam<'a> {
    Value(ParamValue<'a>),
    Null,
    /// DEFAULT or IGNORE: the column's default, no value.
    Default,
}

/// A parsed bulk command: byte ranges into the payload it was parsed from.
#[derive(Debug)]
pub struct Bulk {
    pub flags: u16,
    types: Range<usize>,
    pub rows: Vec<Range<usize>>,
}

impl Bulk {
    /// Reads `payload` (from the command byte on) for a statement of `params` parameters.
    pub fn parse(payload: &[u8], params: u16) -> Result<Bulk, BulkError> {
        let flags = payload
            .get(5..HEADER)
            .map(|f| u16::from_le_bytes([f[0], f[1]]))
            .ok_or(BulkError::Short)?;
        if flags & SEND_TYPES_TO_SERVER == 0 {
            return Err(BulkError::NoTypes);
        }
        let params = params as usize;
        let types = HEADER..HEADER + 2 * params;
        let type_bytes = payload.get(types.clone()).ok_or(BulkError::Short)?;
        let mut rows = Vec::new();
        let mut at = types.end;
        // Without parameters a row has no bytes: there is nothing to split.
        while params > 0 && at < payload.len() {
            let row = rows.len();
            let start = at;
            for p in 0..params {
                let indicator = *payload.get(at).ok_or(BulkError::RowShort(row))?;
                at += 1;
                match indicator {
                    IND_NONE => {
                        let (ty, unsigned) = (type_bytes[2 * p], type_bytes[2 * p + 1] & 0x80 != 0);
                        let rest = payload.get(at..).ok_or(BulkError::RowShort(row))?;
                        let (len, _) =
                            read_value(rest, ty, unsigned).ok_or(BulkError::RowShort(row))?;
                        at += len;
                    }
                    IND_NULL | IND_DEFAULT | IND_IGNORE => {}
                    indicator => return Err(BulkError::Indicator { row, indicator }),
                }
            }
            rows.push(start..at);
        }
        Ok(Bulk { flags, types, rows })
    }

    /// Parameter `index` of row `row` of `payload` (the one parsed); `None` past the end.
    pub fn param<'a>(&self, payload: &'a [u8], row: usize, index: usize) -> Option<BulkParam<'a>> {
        let range = self.rows.get(row)?.clone();
        let bytes = payload.get(range)?;
        let types = payload.get(self.types.clone())?;
        let mut at = 0;
        for p in 0..=index {
            let indicator = *bytes.get(at)?;
            at += 1;
            let value = match indicator {
                IND_NONE => {
                    let (ty, unsigned) = (*types.get(2 * p)?, types.get(2 * p + 1)? & 0x80 != 0);
                    let (len, value) = read_value(bytes.get(at..)?, ty, unsigned)?;
                    at += len;
                    BulkParam::Value(value)
                }
                IND_NULL => BulkParam::Null,
                _ => BulkParam::Default,
            };
            if p == index {
                return Some(value);
            }
        }
        None
    }

    /// A bulk command of `rows` (indexes, in order) of `payload`: its header and types, then
    /// those rows' bytes as the client sent them.
    pub fn with_rows(&self, payload: &[u8], rows: &[usize]) -> Vec<u8> {
        let head = payload.get(..self.types.end).unwrap_or_default();
        let size = rows
            .iter()
            .filter_map(|&r| self.rows.get(r))
            .map(|r| r.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(head.len() + size);
        out.extend_from_slice(head);
        for r in rows.iter().filter_map(|&r| self.rows.get(r)) {
            out.extend_from_slice(payload.get(r.clone()).unwrap_or_default());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bulk of (LONGLONG, BLOB, TINY unsigned) rows for statement 9.
    fn payload(rows: &[(Option<i64>, &[u8], u8)]) -> Vec<u8> {
        let mut p = vec![0xFA];
        p.extend_from_slice(&9u32.to_le_bytes());
        p.extend_from_slice(&SEND_TYPES_TO_SERVER.to_le_bytes());
        p.extend_from_slice(&[0x08, 0, 0xFC, 0, 0x01, 0x80]);
        for (id, blob, tiny) in rows {
            match id {
                Some(v) => {
                    p.push(IND_NONE);
                    p.extend_from_slice(&v.to_le_bytes());
                }
                None => p.push(IND_NULL),
            }
            p.push(IND_NONE);
            p.push(blob.len() as u8);
            p.extend_from_slice(blob);
            p.push(IND_NONE);
            p.push(*tiny);
        }
        p
    }

    #[test]
    fn rows_are_found_and_their_parameters_read() {
        let all: Vec<u8> = (0..=249u8).collect(); // a one-byte length
        let p = payload(&[(Some(7), b"ab", 200), (None, &all, 1), (Some(-3), b"", 0)]);
        let bulk = Bulk::parse(&p, 3).expect("parses");
        assert_eq!(bulk.rows.len(), 3);
        assert_eq!(bulk.rows[0], 13..13 + 9 + 4 + 2);
        assert_eq!(
            bulk.param(&p, 0, 0),
            Some(BulkParam::Value(ParamValue::Int(7)))
        );
        assert_eq!(bulk.param(&p, 1, 0), Some(BulkParam::Null));
        assert_eq!(
            bulk.param(&p, 1, 1),
            Some(BulkParam::Value(ParamValue::Bytes(&all)))
        );
        assert_eq!(
            bulk.param(&p, 0, 2),
            Some(BulkParam::Value(ParamValue::Int(200))),
            "unsigned"
        );
        assert_eq!(
            bulk.param(&p, 2, 0),
            Some(BulkParam::Value(ParamValue::Int(-3)))
        );
        assert_eq!(bulk.param(&p, 3, 0), None);
    }

    #[test]
    fn a_bulk_of_some_rows_is_the_clients_bytes() {
        let p = payload(&[
            (Some(1), b"x", 1),
            (Some(2), b"\xff\x80", 2),
            (Some(3), b"", 3),
        ]);
        let bulk = Bulk::parse(&p, 3).expect("parses");
        let part = bulk.with_rows(&p, &[0, 2]);
        let want = payload(&[(Some(1), b"x", 1), (Some(3), b"", 3)]);
        assert_eq!(part, want);
        let again = Bulk::parse(&part, 3).expect("parses");
        assert_eq!(again.rows.len(), 2);
    }

    #[test]
    fn malformed_commands_are_errors() {
        let p = payload(&[(Some(1), b"x", 1)]);
        assert_eq!(Bulk::parse(&p[..6], 3).err(), Some(BulkError::Short));
        assert_eq!(Bulk::parse(&p[..15], 3).err(), Some(BulkError::RowShort(0)));
        let mut no_types = p.clone();
        no_types[5] = 0;
        assert_eq!(Bulk::parse(&no_types, 3).err(), Some(BulkError::NoTypes));
        let mut bad = p.clone();
        bad[13] = 9;
        assert_eq!(
            Bulk::parse(&bad, 3).err(),
            Some(BulkError::Indicator {
                row: 0,
                indicator: 9
            })
        );
        // DEFAULT and IGNORE carry no value.
        let mut d = p[..13].to_vec();
        d.extend_from_slice(&[IND_DEFAULT, IND_IGNORE, IND_NONE, 5]);
        let bulk = Bulk::parse(&d, 3).expect("parses");
        assert_eq!(bulk.param(&d, 0, 1), Some(BulkParam::Default));
        assert_eq!(bulk.rows, vec![13..17]);
    }
}
