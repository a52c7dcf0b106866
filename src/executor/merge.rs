//! Ordering rows of several shards: reading text-protocol rows and column definitions, and
//! comparing values the way MariaDB orders them, closely enough for ORDER BY merges.
//!
//! Numbers compare by value (exactly, for integers and decimals), NULL sorts first, binary
//! strings by bytes, other strings case-insensitively with trailing spaces ignored (as the
//! default `_general_ci` collations do for ASCII; accents and other collations may order
//! differently than the server would).

use std::cmp::Ordering;

use crate::protocol::wire::Reader;

/// `decimals` of a column whose fraction digits are not fixed (the server's `NOT_FIXED_DEC`):
/// a DOUBLE printed in its shortest form.
pub const NOT_FIXED_DEC: u8 = 0x1f;

/// What ordering needs from a column definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMeta {
    pub name: String,
    pub org_name: String,
    pub kind: ValueKind,
    /// The protocol's column type byte (`MYSQL_TYPE_*`): how binary-protocol rows carry it.
    pub ty: u8,
    /// UNSIGNED flag: binary-protocol integers carry no sign of their own.
    pub unsigned: bool,
    /// Fraction digits; 0x1f (31) when not fixed. Decides how temporal and float values print.
    pub decimals: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Integers and decimals: compared exactly as decimal text.
    Exact,
    /// FLOAT, DOUBLE: compared as f64.
    Float,
    /// Binary strings, dates and datetimes: compared by bytes.
    Bytes,
    /// TIME: signed and past 99 hours, so compared by value (`-1:00:00` < `100:00:00`).
    Time,
    /// Character strings in a non-binary collation.
    Text,
}

const BINARY_FLAG: u16 = 0x0080;
const BINARY_CHARSET: u16 = 63;

impl ColumnMeta {
    /// From a column definition packet (protocol 4.1).
    pub fn parse(def: &[u8]) -> Option<ColumnMeta> {
        const UNSIGNED_FLAG: u16 = 0x0020;
        let mut r = Reader::new(def);
        for _ in 0..4 {
            r.lenenc_bytes().ok()?; // catalog, schema, table, org_table
        }
        let name = String::from_utf8_lossy(r.lenenc_bytes().ok()?).into_owned();
        let org_name = String::from_utf8_lossy(r.lenenc_bytes().ok()?).into_owned();
        crate::protocol::column::skip_extended_metadata(&mut r).ok()?;
        r.lenenc().ok()?; // length of the fixed fields
        let charset = r.u16().ok()?;
        r.u32().ok()?; // column length
        let ty = r.u8().ok()?;
        let flags = r.u16().ok()?;
        // Tolerated missing, as before this field was read; "not fixed" loses no digits.
        let decimals = r.u8().unwrap_or(NOT_FIXED_DEC);
        let kind = match ty {
            0x00 | 0x01 | 0x02 | 0x03 | 0x08 | 0x09 | 0x0d | 0xf6 => ValueKind::Exact,
            0x04 | 0x05 => ValueKind::Float,
            0x0b | 0x13 => ValueKind::Time,
            0x07 | 0x0a | 0x0c | 0x0e | 0x10 | 0x11 | 0x12 => ValueKind::Bytes,
            _ if flags & BINARY_FLAG != 0 || charset == BINARY_CHARSET => ValueKind::Bytes,
            _ => ValueKind::Text,
        };
        Some(ColumnMeta {
            name,
            org_name,
            kind,
            ty,
            unsigned: flags & UNSIGNED_FLAG != 0,
            decimals,
        })
    }
}

/// The values of a text-protocol row of `n` columns (`None` for SQL NULL).
pub fn row_values(row: &[u8], n: usize) -> Option<Vec<Option<&[u8]>>> {
    let mut r = Reader::new(row);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if r.remaining().first() == Some(&0xFB) {
            r.u8().ok()?;
            out.push(None);
        } else {
            out.push(Some(r.lenenc_bytes().ok()?));
        }
    }
    Some(out)
}

/// Compares two rows on `keys` (column index, descending).
pub fn compare_rows<A: AsRef<[u8]>, B: AsRef<[u8]>>(
    a: &[Option<A>],
    b: &[Option<B>],
    keys: &[(usize, bool)],
    metas: &[ColumnMeta],
) -> Ordering {
    for &(col, desc) in keys {
        let kind = metas.get(col).map_or(ValueKind::Bytes, |m| m.kind);
        let x = a.get(col).and_then(|v| v.as_ref()).map(AsRef::as_ref);
        let y = b.get(col).and_then(|v| v.as_ref()).map(AsRef::as_ref);
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => compare_values(x, y, kind),
        };
        let o = if desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

pub fn compare_values(x: &[u8], y: &[u8], kind: ValueKind) -> Ordering {
    match kind {
        ValueKind::Exact => compare_decimal(x, y).unwrap_or_else(|| x.cmp(y)),
        ValueKind::Float => {
            let p = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<f64>().ok();
            match (p(x), p(y)) {
                (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
                _ => x.cmp(y),
            }
        }
        ValueKind::Bytes => x.cmp(y),
        ValueKind::Time => match (time_micros(x), time_micros(y)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => x.cmp(y),
        },
        ValueKind::Text => {
            let norm = |v: &[u8]| {
                String::from_utf8_lossy(v)
                    .trim_end_matches(' ')
                    .to_lowercase()
            };
            norm(x).cmp(&norm(y))
        }
    }
}

/// How values of one column of rows in the same group combine (see `planner::shard::Combine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    First,
    Count,
    Sum,
    Min,
    Max,
}

/// Combines `b` into `a` (the accumulated value) for one column.
pub fn fold(a: &mut Option<Vec<u8>>, b: Option<&[u8]>, how: Fold, kind: ValueKind) {
    let Some(b) = b else { return }; // NULL takes no part in COUNT/SUM/MIN/MAX
    let Some(cur) = a.as_deref() else {
        if how != Fold::First {
            *a = Some(b.to_vec());
        }
        return;
    };
    let next = match how {
        Fold::First => return,
        Fold::Count => add_numbers(cur, b, ValueKind::Exact),
        Fold::Sum => add_numbers(cur, b, kind),
        Fold::Min if compare_values(b, cur, kind) == Ordering::Less => Some(b.to_vec()),
        Fold::Max if compare_values(b, cur, kind) == Ordering::Greater => Some(b.to_vec()),
        Fold::Min | Fold::Max => return,
    };
    if let Some(v) = next {
        *a = Some(v);
    }
}

/// `a + b` as text: exact for integers and decimals (when they fit 38 digits), else as f64.
pub fn add_numbers(a: &[u8], b: &[u8], kind: ValueKind) -> Option<Vec<u8>> {
    if kind == ValueKind::Exact {
        if let (Some(x), Some(y)) = (scaled(a), scaled(b)) {
            let scale = x.1.max(y.1);
            let widen = |(m, s): (i128, u32)| m.checked_mul(10i128.checked_pow(scale - s)?);
            if let (Some(xm), Some(ym)) = (widen(x), widen(y)) {
                if let Some(sum) = xm.checked_add(ym) {
                    return Some(format_scaled(sum, scale).into_bytes());
                }
            }
        }
    }
    let f = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<f64>().ok();
    Some(format_double(f(a)? + f(b)?).into_bytes())
}

/// Decimal text as (mantissa, scale): `-12.50` is (-1250, 2).
fn scaled(v: &[u8]) -> Option<(i128, u32)> {
    let (neg, int, frac) = split_decimal(v)?;
    let digits: Vec<u8> = int.iter().chain(frac).copied().collect();
    if digits.len() > 38 {
        return None;
    }
    let mut m: i128 = 0;
    for d in digits {
        m = m * 10 + i128::from(d - b'0');
    }
    Some((if neg { -m } else { m }, u32::try_from(frac.len()).ok()?))
}

fn format_scaled(m: i128, scale: u32) -> String {
    let digits = m.unsigned_abs().to_string();
    let sign = if m < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Exact comparison of decimal text (`-12.50`, `7`, `0.001`); `None` if not decimal text.
fn compare_decimal(x: &[u8], y: &[u8]) -> Option<Ordering> {
    let (xn, xi, xf) = split_decimal(x)?;
    let (yn, yi, yf) = split_decimal(y)?;
    let zero = |i: &[u8], f: &[u8]| i.iter().chain(f).all(|d| *d == b'0');
    let (xz, yz) = (zero(xi, xf), zero(yi, yf));
    let xneg = xn && !xz;
    let yneg = yn && !yz;
    if xneg != yneg {
        return Some(if xneg {
            Ordering::Less
        } else {
            Ordering::Greater
        });
    }
    let magnitude = xi
        .len()
        .cmp(&yi.len())
        .then_with(|| xi.cmp(yi))
        .then_with(|| {
            let len = xf.len().max(yf.len());
            let digit = |f: &[u8], i: usize| f.get(i).copied().unwrap_or(b'0');
            (0..len)
                .map(|i| digit(xf, i).cmp(&digit(yf, i)))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
    Some(if xneg { magnitude.reverse() } else { magnitude })
}

/// Sign, integer digits without leading zeros, fraction digits.
fn split_decimal(v: &[u8]) -> Option<(bool, &[u8], &[u8])> {
    let (neg, rest) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    };
    let (int, frac) = match rest.iter().position(|b| *b == b'.') {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    let start = int.iter().position(|d| *d != b'0').unwrap_or(int.len());
    Some((neg, &int[start..], frac))
}

/// A DOUBLE as MariaDB prints one of unfixed decimals: the shortest digits that read back
/// exactly (up to 17), in plain form for decimal exponents -14..=15 (or when every digit is
/// needed before the point), else as `1.5e16`, `1e-16` (no `+`, no zero padding).
pub fn format_double(x: f64) -> String {
    if !x.is_finite() {
        return "0".into(); // the server has no text for these; it sends 0
    }
    let sign = if x.is_sign_negative() && x != 0.0 {
        "-"
    } else {
        ""
    };
    // `{:e}` gives the shortest exact digits: `1.2345e-5`, `1e16`.
    let scientific = format!("{:e}", x.abs());
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return format!("{x}");
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return format!("{x}");
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let point = exponent + 1; // digits before the decimal point
    if !(point >= -14 && (point <= 15 || len > point)) {
        return format!("{sign}{scientific}");
    }
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        format!("{sign}0.{zeros}{digits}")
    } else if point < len {
        let (int, frac) = digits.split_at(point as usize);
        format!("{sign}{int}.{frac}")
    } else {
        let zeros = "0".repeat((point - len) as usize);
        format!("{sign}{digits}{zeros}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_value() {
        let c = |a: &str, b: &str| compare_values(a.as_bytes(), b.as_bytes(), ValueKind::Exact);
        assert_eq!(c("9", "10"), Ordering::Less);
        assert_eq!(c("-10", "-9"), Ordering::Less);
        assert_eq!(c("1.50", "1.5"), Ordering::Equal);
        assert_eq!(c("0.001", "-0.001"), Ordering::Greater);
        assert_eq!(c("-0", "0.0"), Ordering::Equal);
        assert_eq!(
            c(
                "123456789012345678901234567890",
                "123456789012345678901234567891"
            ),
            Ordering::Less
        );
        let f = |a: &str, b: &str| compare_values(a.as_bytes(), b.as_bytes(), ValueKind::Float);
        assert_eq!(f("1e3", "999.5"), Ordering::Greater);
    }

    #[test]
    fn strings_nulls_and_directions() {
        let t = |a: &str, b: &str| compare_values(a.as_bytes(), b.as_bytes(), ValueKind::Text);
        assert_eq!(t("abc", "ABD"), Ordering::Less);
        assert_eq!(t("abc ", "ABC"), Ordering::Equal);
        assert_eq!(compare_values(b"B", b"a", ValueKind::Bytes), Ordering::Less);
        let metas = vec![
            ColumnMeta {
                name: "a".into(),
                org_name: "a".into(),
                kind: ValueKind::Exact,
                ty: 0x03,
                unsigned: false,
                decimals: 0,
            },
            ColumnMeta {
                name: "b".into(),
                org_name: "b".into(),
                kind: ValueKind::Text,
                ty: 0xfd,
                unsigned: false,
                decimals: 0,
            },
        ];
        let r1: Vec<Option<&[u8]>> = vec![None, Some(b"x")];
        let r2: Vec<Option<&[u8]>> = vec![Some(b"1"), Some(b"y")];
        assert_eq!(
            compare_rows(&r1, &r2, &[(0, false)], &metas),
            Ordering::Less
        );
        assert_eq!(
            compare_rows(&r1, &r2, &[(0, true)], &metas),
            Ordering::Greater
        );
        assert_eq!(
            compare_rows(&r1, &r1, &[(0, false), (1, true)], &metas),
            Ordering::Equal
        );
    }

    #[test]
    fn group_values_fold() {
        let e = ValueKind::Exact;
        assert_eq!(
            add_numbers(b"12.50", b"-0.5", e).as_deref(),
            Some(&b"12.00"[..])
        );
        assert_eq!(add_numbers(b"7", b"35", e).as_deref(), Some(&b"42"[..]));
        assert_eq!(
            add_numbers(b"-0.25", b"0.05", e).as_deref(),
            Some(&b"-0.20"[..])
        );
        let mut acc = Some(b"3".to_vec());
        fold(&mut acc, Some(b"4"), Fold::Count, e);
        assert_eq!(acc.as_deref(), Some(&b"7"[..]));
        let mut acc = None;
        fold(&mut acc, None, Fold::Sum, e);
        assert_eq!(acc, None, "SUM of nothing is NULL");
        fold(&mut acc, Some(b"2.5"), Fold::Sum, e);
        fold(&mut acc, Some(b"1"), Fold::Sum, e);
        assert_eq!(acc.as_deref(), Some(&b"3.5"[..]));
        let mut acc = Some(b"b".to_vec());
        fold(&mut acc, Some(b"A"), Fold::Min, ValueKind::Text);
        assert_eq!(acc.as_deref(), Some(&b"A"[..]));
        fold(&mut acc, Some(b"c"), Fold::Max, ValueKind::Text);
        assert_eq!(acc.as_deref(), Some(&b"c"[..]));
        fold(&mut acc, Some(b"z"), Fold::First, ValueKind::Text);
        assert_eq!(acc.as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn rows_and_definitions_are_read() {
        let row = [1, b'7', 0xFB, 3, b'a', b'b', b'c'];
        assert_eq!(
            row_values(&row, 3),
            Some(vec![Some(&b"7"[..]), None, Some(&b"abc"[..])])
        );
        assert_eq!(row_values(&row[..2], 3), None);
        let mut def = Vec::new();
        for s in ["def", "app", "t", "t", "n", "name"] {
            def.push(s.len() as u8);
            def.extend_from_slice(s.as_bytes());
        }
        def.push(0x0c);
        def.extend_from_slice(&45u16.to_le_bytes());
        def.extend_from_slice(&160u32.to_le_bytes());
        def.push(0xfd);
        def.extend_from_slice(&0u16.to_le_bytes());
        def.extend_from_slice(&[0, 0, 0]);
        let m = ColumnMeta::parse(&def).expect("parsed");
        assert_eq!(
            (m.name.as_str(), m.org_name.as_str(), m.kind),
            ("n", "name", ValueKind::Text)
        );
    }
}

/// A TIME's text form (`[-]H+:MM:SS[.ffffff]`) as signed microseconds.
fn time_micros(v: &[u8]) -> Option<i128> {
    let text = std::str::from_utf8(v).ok()?;
    let (neg, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (clock, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = clock.split(':');
    let h: i128 = parts.next()?.parse().ok()?;
    let m: i128 = parts.next()?.parse().ok()?;
    let s: i128 = parts.next()?.parse().ok()?;
    let digits = frac.get(..frac.len().min(6))?;
    let micros: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse::<i128>().ok()? * 10i128.pow(6 - digits.len() as u32)
    };
    let total = ((h * 60 + m) * 60 + s) * 1_000_000 + micros;
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn times_compare_by_value() {
        let order = [
            "-838:59:59",
            "-100:00:00",
            "-01:00:00.5",
            "-01:00:00",
            "00:00:00",
            "00:00:00.000001",
            "09:59:59",
            "10:00:00",
            "100:00:00",
        ];
        for w in order.windows(2) {
            assert_eq!(
                compare_values(w[0].as_bytes(), w[1].as_bytes(), ValueKind::Time),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
    }
}
