//! Binary-protocol result rows (those of COM_STMT_EXECUTE) to and from text-protocol values,
//! so the merging in [`super::merge`], written for text rows, also serves prepared statements:
//! shard rows are decoded, compared and folded as text, and the rows sent on are encoded back.
//!
//! Values decode to the text the server would send for them, with two gaps the column
//! definition leaves: ZEROFILL padding (it needs the display width) and the exact digits the
//! server picks for floats without a fixed scale (here the shortest form that reads back to the
//! same value). Both compare equal by value.

use bytes::{BufMut, BytesMut};

use super::merge::ColumnMeta;
use crate::protocol::wire::{put_lenenc_bytes, Reader};

use super::merge::NOT_FIXED_DEC;

/// How the binary protocol carries the values of a column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// MYSQL_TYPE_NULL: no bytes; the value is NULL whatever the bitmap says.
    Null,
    /// A little-endian integer of this many bytes (INT24 travels in 4).
    Int(usize),
    /// A 2-byte integer the text protocol prints with 4 digits.
    Year,
    Float,
    Double,
    /// Length-encoded decimal text.
    Decimal,
    /// Length-encoded bytes: strings, blobs, BIT, JSON, GEOMETRY, ENUM, SET.
    Bytes,
    Date,
    DateTime,
    Time,
}

impl Form {
    /// `None` for types the server never sends in rows.
    fn of(ty: u8) -> Option<Form> {
        Some(match ty {
            0x06 => Form::Null,
            0x01 => Form::Int(1),
            0x02 => Form::Int(2),
            0x03 | 0x09 => Form::Int(4),
            0x08 => Form::Int(8),
            0x0d => Form::Year,
            0x04 => Form::Float,
            0x05 => Form::Double,
            0x00 | 0xf6 => Form::Decimal,
            0x0f | 0x10 | 0xf5 | 0xf7..=0xff => Form::Bytes,
            0x0a => Form::Date,
            0x07 | 0x0c => Form::DateTime,
            0x0b => Form::Time,
            _ => return None,
        })
    }
}

/// The values of a binary-protocol row in their text-protocol forms (`None` for NULL);
/// `None` if the row is malformed, does not match `metas`, or has a column of unknown type.
pub fn decode_row(row: &[u8], metas: &[ColumnMeta]) -> Option<Vec<Option<Vec<u8>>>> {
    let mut r = Reader::new(row);
    if r.u8().ok()? != 0x00 {
        return None;
    }
    let bitmap = r.take(bitmap_len(metas.len())).ok()?;
    let mut out = Vec::with_capacity(metas.len());
    for (i, m) in metas.iter().enumerate() {
        let (byte, bit) = null_bit(i);
        let null = bitmap.get(byte).is_some_and(|b| b & bit != 0);
        out.push(decode_value(&mut r, Form::of(m.ty)?, m, null)?);
    }
    r.is_empty().then_some(out)
}

/// A binary-protocol row of `values` (text-protocol forms, `None` for NULL); `None` if a
/// value cannot be read as its column's type or the counts differ.
pub fn encode_row(values: &[Option<Vec<u8>>], metas: &[ColumnMeta]) -> Option<Vec<u8>> {
    if values.len() != metas.len() {
        return None;
    }
    let mut bitmap = vec![0u8; bitmap_len(metas.len())];
    let mut body = BytesMut::new();
    for (i, (v, m)) in values.iter().zip(metas).enumerate() {
        let form = Form::of(m.ty)?;
        match v {
            Some(v) if form != Form::Null => encode_value(&mut body, v, form, m)?,
            _ => {
                let (byte, bit) = null_bit(i);
                if let Some(b) = bitmap.get_mut(byte) {
                    *b |= bit;
                }
            }
        }
    }
    let mut row = Vec::with_capacity(1 + bitmap.len() + body.len());
    row.push(0x00);
    row.extend_from_slice(&bitmap);
    row.extend_from_slice(&body);
    Some(row)
}

/// A result row's NULL bitmap starts two bits in (the protocol reserves them; the bitmap of
/// COM_STMT_EXECUTE parameters has no such offset).
fn bitmap_len(columns: usize) -> usize {
    (columns + 2).div_ceil(8)
}

/// Byte index and mask of column `i`'s NULL bit.
fn null_bit(i: usize) -> (usize, u8) {
    ((i + 2) / 8, 1u8 << ((i + 2) % 8))
}

/// One value (outer `None`: malformed; inner `None`: NULL).
fn decode_value(
    r: &mut Reader<'_>,
    form: Form,
    m: &ColumnMeta,
    null: bool,
) -> Option<Option<Vec<u8>>> {
    if null {
        return Some(None);
    }
    let text = match form {
        Form::Null => return Some(None),
        Form::Decimal | Form::Bytes => return Some(Some(lenenc_value(r)?.to_vec())),
        Form::Int(width) => read_int(r, width, m.unsigned)?.to_string(),
        Form::Year => year_text(read_int(r, 2, m.unsigned)?),
        Form::Float => {
            let v = f32::from_le_bytes(r.take(4).ok()?.try_into().ok()?);
            float_text(format!("{v:?}"), f64::from(v), m.decimals)
        }
        Form::Double => {
            let v = f64::from_le_bytes(r.take(8).ok()?.try_into().ok()?);
            float_text(format!("{v:?}"), v, m.decimals)
        }
        Form::Date => date_text(&read_stamp(r)?),
        Form::DateTime => datetime_text(&read_stamp(r)?, m.decimals),
        Form::Time => time_text(&read_clock(r)?, m.decimals),
    };
    Some(Some(text.into_bytes()))
}

/// Writes one non-NULL value; `None` if `v` is not a value of the column's type.
fn encode_value(out: &mut BytesMut, v: &[u8], form: Form, m: &ColumnMeta) -> Option<()> {
    let text = || std::str::from_utf8(v).ok();
    match form {
        Form::Null => {}
        Form::Bytes => put_lenenc_bytes(out, v),
        Form::Decimal if is_decimal(v) => put_lenenc_bytes(out, v),
        Form::Decimal => return None,
        Form::Int(width) => put_int(out, text()?, width, m.unsigned)?,
        Form::Year => put_int(out, text()?, 2, m.unsigned)?,
        Form::Float => out.put_f32_le(text()?.parse().ok()?),
        Form::Double => out.put_f64_le(text()?.parse().ok()?),
        Form::Date => match parse_stamp(text()?)? {
            (s, false) => put_stamp(out, &s),
            (_, true) => return None,
        },
        Form::DateTime => put_stamp(out, &parse_stamp(text()?)?.0),
        Form::Time => put_clock(out, &parse_time(text()?)?),
    }
    Some(())
}

/// Length-encoded bytes; the NULL marker (and the undefined 0xFF) cannot start one in a row,
/// where NULL travels in the bitmap.
fn lenenc_value<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    if matches!(r.remaining().first(), Some(0xFB | 0xFF)) {
        return None;
    }
    r.lenenc_bytes().ok()
}

/// A little-endian integer of `width` bytes, sign-extended unless the column is UNSIGNED.
fn read_int(r: &mut Reader<'_>, width: usize, unsigned: bool) -> Option<i128> {
    let bytes = r.take(width).ok()?;
    let mut v = bytes
        .iter()
        .rev()
        .fold(0i128, |acc, b| (acc << 8) | i128::from(*b));
    if !unsigned && bytes.last().is_some_and(|b| b & 0x80 != 0) {
        v -= 1i128 << (8 * width);
    }
    Some(v)
}

/// Writes decimal integer text in `width` bytes, refusing values the type cannot hold.
fn put_int(out: &mut BytesMut, text: &str, width: usize, unsigned: bool) -> Option<()> {
    let v: i128 = text.parse().ok()?;
    let bits = 8 * width;
    let (min, max) = if unsigned {
        (0, (1i128 << bits) - 1)
    } else {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    };
    if v < min || v > max {
        return None;
    }
    out.put_slice(v.to_le_bytes().get(..width)?);
    Some(())
}

/// YEAR columns carry ZEROFILL with width 4: year 0 prints as `0000`.
fn year_text(v: i128) -> String {
    if v < 0 {
        v.to_string()
    } else {
        format!("{v:04}")
    }
}

/// A FLOAT or DOUBLE as the server prints it: with `decimals` fixed digits when the column
/// has a scale, else in `shortest` (Rust's shortest round-trip form, less a trailing `.0`).
fn float_text(shortest: String, exact: f64, decimals: u8) -> String {
    if decimals < NOT_FIXED_DEC {
        return format!("{exact:.prec$}", prec = usize::from(decimals));
    }
    match shortest.strip_suffix(".0") {
        Some(s) => s.to_string(),
        None => shortest,
    }
}

/// Decimal text as the server writes it: optional `-`, digits, at most one `.`.
fn is_decimal(v: &[u8]) -> bool {
    let body = v.strip_prefix(b"-").unwrap_or(v);
    body.iter().any(u8::is_ascii_digit)
        && body.iter().all(|b| b.is_ascii_digit() || *b == b'.')
        && body.iter().filter(|b| **b == b'.').count() <= 1
}

/// The fields of a binary DATE, DATETIME or TIMESTAMP.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micro: u32,
}

/// The fields of a binary TIME.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Clock {
    negative: bool,
    days: u32,
    hour: u8,
    minute: u8,
    second: u8,
    micro: u32,
}

/// Length byte 0, 4, 7 or 11, then as many of the fields as it says.
fn read_stamp(r: &mut Reader<'_>) -> Option<Stamp> {
    let len = r.u8().ok()?;
    if !matches!(len, 0 | 4 | 7 | 11) {
        return None;
    }
    let mut s = Stamp::default();
    if len >= 4 {
        s.year = r.u16().ok()?;
        s.month = r.u8().ok()?;
        s.day = r.u8().ok()?;
    }
    if len >= 7 {
        s.hour = r.u8().ok()?;
        s.minute = r.u8().ok()?;
        s.second = r.u8().ok()?;
    }
    if len == 11 {
        s.micro = read_micro(r)?;
    }
    Some(s)
}

/// Length byte 0, 8 or 12, then as many of the fields as it says.
fn read_clock(r: &mut Reader<'_>) -> Option<Clock> {
    let len = r.u8().ok()?;
    if !matches!(len, 0 | 8 | 12) {
        return None;
    }
    let mut c = Clock::default();
    if len >= 8 {
        c.negative = match r.u8().ok()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        c.days = r.u32().ok()?;
        c.hour = r.u8().ok()?;
        c.minute = r.u8().ok()?;
        c.second = r.u8().ok()?;
    }
    if len == 12 {
        c.micro = read_micro(r)?;
    }
    Some(c)
}

/// Microseconds; more than six digits' worth could not print as a fraction.
fn read_micro(r: &mut Reader<'_>) -> Option<u32> {
    r.u32().ok().filter(|m| *m < 1_000_000)
}

/// The shortest form, as the server writes it: fields that are zero from the end are left out.
fn put_stamp(out: &mut BytesMut, s: &Stamp) {
    let len = if s.micro != 0 {
        11
    } else if (s.hour, s.minute, s.second) != (0, 0, 0) {
        7
    } else if (s.year, s.month, s.day) != (0, 0, 0) {
        4
    } else {
        0
    };
    out.put_u8(len);
    if len >= 4 {
        out.put_u16_le(s.year);
        out.put_u8(s.month);
        out.put_u8(s.day);
    }
    if len >= 7 {
        out.put_slice(&[s.hour, s.minute, s.second]);
    }
    if len == 11 {
        out.put_u32_le(s.micro);
    }
}

/// The shortest form, as the server writes it (a zero time loses its sign).
fn put_clock(out: &mut BytesMut, c: &Clock) {
    let len = if c.micro != 0 {
        12
    } else if c.days != 0 || (c.hour, c.minute, c.second) != (0, 0, 0) {
        8
    } else {
        0
    };
    out.put_u8(len);
    if len >= 8 {
        out.put_u8(u8::from(c.negative));
        out.put_u32_le(c.days);
        out.put_slice(&[c.hour, c.minute, c.second]);
    }
    if len == 12 {
        out.put_u32_le(c.micro);
    }
}

fn date_text(s: &Stamp) -> String {
    format!("{:04}-{:02}-{:02}", s.year, s.month, s.day)
}

fn datetime_text(s: &Stamp, decimals: u8) -> String {
    format!(
        "{} {:02}:{:02}:{:02}{}",
        date_text(s),
        s.hour,
        s.minute,
        s.second,
        fraction(s.micro, decimals)
    )
}

/// `[-]HH:MM:SS[.ffffff]`: days fold into the hours, as the text protocol has no days.
fn time_text(c: &Clock, decimals: u8) -> String {
    let hours = u64::from(c.days) * 24 + u64::from(c.hour);
    format!(
        "{}{hours:02}:{:02}:{:02}{}",
        if c.negative { "-" } else { "" },
        c.minute,
        c.second,
        fraction(c.micro, decimals)
    )
}

/// `.ffffff` cut to the column's fraction digits; a column without a fixed number shows
/// all six, and only when there is a fraction.
fn fraction(micro: u32, decimals: u8) -> String {
    let digits = match decimals {
        0 => 0,
        1..=6 => usize::from(decimals),
        _ if micro == 0 => 0,
        _ => 6,
    };
    let six = format!("{micro:06}");
    match six.get(..digits) {
        Some(f) if digits > 0 => format!(".{f}"),
        _ => String::new(),
    }
}

/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]]`, and whether it has the time part.
fn parse_stamp(t: &str) -> Option<(Stamp, bool)> {
    let (date, time) = match t.split_once(' ') {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let mut parts = date.split('-');
    let mut s = Stamp {
        year: digits(parts.next()?)?,
        month: digits(parts.next()?)?,
        day: digits(parts.next()?)?,
        ..Stamp::default()
    };
    if parts.next().is_some() {
        return None;
    }
    if let Some(time) = time {
        let (hour, minute, second, micro) = parse_hms(time)?;
        s.hour = u8::try_from(hour).ok()?;
        (s.minute, s.second, s.micro) = (minute, second, micro);
    }
    Some((s, time.is_some()))
}

/// `[-]H…H:MM:SS[.ffffff]`, the hours beyond a day going back into days.
fn parse_time(t: &str) -> Option<Clock> {
    let (negative, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t),
    };
    let (hours, minute, second, micro) = parse_hms(body)?;
    Some(Clock {
        negative,
        days: u32::try_from(hours / 24).ok()?,
        hour: u8::try_from(hours % 24).ok()?,
        minute,
        second,
        micro,
    })
}

/// `H:M:S[.f]` as hours, minutes, seconds and microseconds.
fn parse_hms(t: &str) -> Option<(u64, u8, u8, u32)> {
    let (hms, micro) = match t.split_once('.') {
        Some((hms, f)) => (hms, parse_micro(f)?),
        None => (t, 0),
    };
    let mut parts = hms.split(':');
    let hms = (
        digits(parts.next()?)?,
        digits(parts.next()?)?,
        digits(parts.next()?)?,
        micro,
    );
    parts.next().is_none().then_some(hms)
}

/// One to six fraction digits as microseconds (`5` is 500000).
fn parse_micro(f: &str) -> Option<u32> {
    if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = f.bytes().chain(std::iter::repeat(b'0')).take(6);
    Some(padded.fold(0, |m, d| m * 10 + u32::from(d - b'0')))
}

/// Plain decimal digits (no sign, which `str::parse` would take) as a number.
fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::merge::ValueKind;

    fn col(ty: u8, unsigned: bool, decimals: u8) -> ColumnMeta {
        ColumnMeta {
            name: "c".into(),
            org_name: "c".into(),
            kind: ValueKind::Bytes,
            ty,
            unsigned,
            decimals,
        }
    }

    fn vals(texts: &[Option<&str>]) -> Vec<Option<Vec<u8>>> {
        texts
            .iter()
            .map(|t| t.map(|s| s.as_bytes().to_vec()))
            .collect()
    }

    /// Encodes `texts`, checks they decode back unchanged, and returns the row.
    fn round_trip(metas: &[ColumnMeta], texts: &[Option<&str>]) -> Vec<u8> {
        let values = vals(texts);
        let row = encode_row(&values, metas).expect("encodes");
        assert_eq!(decode_row(&row, metas), Some(values), "row {row:?}");
        row
    }

    /// The value bytes of a one-column row (after the header and a 1-byte bitmap).
    fn body(meta: ColumnMeta, text: &str) -> Vec<u8> {
        let row = round_trip(&[meta], &[Some(text)]);
        row.get(2..).expect("body").to_vec()
    }

    #[test]
    fn signed_integers_of_every_width() {
        let cases: [(u8, &[&str]); 5] = [
            (0x01, &["-128", "127", "0", "-1"]),
            (0x02, &["-32768", "32767"]),
            (0x03, &["-2147483648", "2147483647"]),
            (0x09, &["-8388608", "8388607"]),
            (0x08, &["-9223372036854775808", "9223372036854775807"]),
        ];
        for (ty, texts) in cases {
            for t in texts {
                round_trip(&[col(ty, false, 0)], &[Some(t)]);
            }
        }
        assert_eq!(body(col(0x03, false, 0), "-2"), [0xfe, 0xff, 0xff, 0xff]);
        assert_eq!(body(col(0x02, false, 0), "258"), [0x02, 0x01]);
    }

    #[test]
    fn unsigned_integers_reach_their_maximum() {
        for (ty, max) in [
            (0x01, "255"),
            (0x02, "65535"),
            (0x03, "4294967295"),
            (0x09, "4294967295"),
            (0x08, "18446744073709551615"),
        ] {
            round_trip(&[col(ty, true, 0)], &[Some(max)]);
        }
        assert_eq!(body(col(0x08, true, 0), "18446744073709551615"), [0xff; 8]);
        let row = [0x00, 0x00, 0xff];
        assert_eq!(
            decode_row(&row, &[col(0x01, true, 0)]),
            Some(vals(&[Some("255")]))
        );
        assert_eq!(
            decode_row(&row, &[col(0x01, false, 0)]),
            Some(vals(&[Some("-1")]))
        );
    }

    #[test]
    fn integers_out_of_range_or_not_integers_are_refused() {
        for (ty, unsigned, text) in [
            (0x01, false, "128"),
            (0x01, true, "256"),
            (0x01, true, "-1"),
            (0x02, false, "-32769"),
            (0x08, true, "18446744073709551616"),
            (0x08, false, "9223372036854775808"),
            (0x03, false, "1.5"),
            (0x03, false, ""),
            (0x03, false, "12a"),
            (0x0d, true, "x"),
        ] {
            assert_eq!(
                encode_row(&vals(&[Some(text)]), &[col(ty, unsigned, 0)]),
                None,
                "{text} as {ty:#x}"
            );
        }
    }

    #[test]
    fn year_prints_four_digits() {
        let y = col(0x0d, true, 0);
        round_trip(std::slice::from_ref(&y), &[Some("2024")]);
        assert_eq!(body(y.clone(), "0000"), [0, 0]);
        assert_eq!(decode_row(&[0, 0, 5, 0], &[y]), Some(vals(&[Some("0005")])));
    }

    #[test]
    fn floats_print_shortest_or_with_fixed_digits() {
        let double = col(0x05, false, NOT_FIXED_DEC);
        let float = col(0x04, false, NOT_FIXED_DEC);
        for t in ["1.5", "100", "1e20", "0.1", "-0.25", "-1.5e-7", "0"] {
            round_trip(&[double.clone(), float.clone()], &[Some(t), Some(t)]);
        }
        assert_eq!(body(double.clone(), "1.5"), 1.5f64.to_le_bytes());
        assert_eq!(body(float.clone(), "0.1"), 0.1f32.to_le_bytes());
        let third = f64::to_le_bytes(1.0 / 3.0);
        let mut row = vec![0, 0];
        row.extend_from_slice(&third);
        let text = decode_row(&row, &[double]).expect("decodes");
        let printed = text.first().cloned().flatten().expect("value");
        let parsed: f64 = std::str::from_utf8(&printed)
            .expect("utf8")
            .parse()
            .expect("parses");
        assert_eq!(parsed, 1.0 / 3.0);
        round_trip(&[col(0x05, false, 2)], &[Some("1.50")]);
        round_trip(&[col(0x04, false, 3)], &[Some("-2.125")]);
        assert_eq!(
            encode_row(&vals(&[Some("one")]), &[col(0x05, false, 31)]),
            None
        );
    }

    #[test]
    fn decimals_and_byte_strings_pass_unchanged() {
        let big = "9".repeat(65);
        let long = "x".repeat(300);
        let metas: Vec<ColumnMeta> = [
            0xf6, 0x00, 0xf6, 0x0f, 0xfd, 0xfe, 0xfc, 0xf9, 0xfa, 0xfb, 0xf7, 0xf8, 0x10, 0xf5,
            0xff,
        ]
        .into_iter()
        .map(|ty| col(ty, false, 0))
        .collect();
        let texts = [
            Some("-12.50"),
            Some("0.001"),
            Some(big.as_str()),
            Some("héllo"),
            Some(""),
            Some("fixed"),
            Some(long.as_str()),
            Some("tiny"),
            Some("medium"),
            Some("long"),
            Some("red"),
            Some("a,b"),
            Some("\u{1}"),
            Some("{\"a\": 1}"),
            Some("\0\0\0\0\u{1}"),
        ];
        let row = round_trip(&metas, &texts);
        assert!(
            row.windows(3).any(|w| w == [0xfc, 0x2c, 0x01]),
            "300 is 0xFC-encoded"
        );
        let bit = [0x00, 0x00, 0x02, 0x01, 0xff];
        assert_eq!(
            decode_row(&bit, &[col(0x10, true, 0)]),
            Some(vec![Some(vec![0x01, 0xff])])
        );
        for bad in ["1e5", "12a", "", "-", "1.2.3", "+1"] {
            assert_eq!(
                encode_row(&vals(&[Some(bad)]), &[col(0xf6, false, 2)]),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn dates_and_datetimes_take_the_shortest_form() {
        let date = col(0x0a, false, 0);
        let dt = col(0x0c, false, 0);
        let dt6 = col(0x0c, false, 6);
        let ts = col(0x07, false, 0);
        assert_eq!(body(date.clone(), "2024-02-29"), [4, 0xe8, 0x07, 2, 29]);
        assert_eq!(body(date.clone(), "0000-00-00"), [0]);
        assert_eq!(body(dt.clone(), "0000-00-00 00:00:00"), [0]);
        assert_eq!(
            body(dt.clone(), "2024-02-29 00:00:00"),
            [4, 0xe8, 0x07, 2, 29]
        );
        assert_eq!(
            body(ts.clone(), "1999-12-31 23:59:58"),
            [7, 0xcf, 0x07, 12, 31, 23, 59, 58]
        );
        assert_eq!(
            body(dt6.clone(), "2024-02-29 13:14:15.123456"),
            [11, 0xe8, 0x07, 2, 29, 13, 14, 15, 0x40, 0xe2, 0x01, 0x00]
        );
        assert_eq!(body(dt6.clone(), "2024-02-29 13:14:15.000000").len(), 8);
        round_trip(
            std::slice::from_ref(&dt6),
            &[Some("0000-00-00 00:00:00.000000")],
        );
        round_trip(
            &[col(0x07, false, 6)],
            &[Some("2038-01-19 03:14:07.999999")],
        );
        let values = vals(&[Some("2024-02-29 13:14:15")]);
        assert_eq!(
            encode_row(&values, std::slice::from_ref(&date)),
            None,
            "DATE has no time"
        );
        for bad in [
            "2024-02",
            "2024-02-29-1",
            "2024-2x-01",
            "2024-02-29 25",
            "70000-01-01",
        ] {
            assert_eq!(
                encode_row(&vals(&[Some(bad)]), std::slice::from_ref(&dt)),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            encode_row(&vals(&[Some("2024-02-29 01:02:03.1234567")]), &[dt6]),
            None
        );
    }

    #[test]
    fn fractions_follow_the_column_decimals() {
        let micros = [
            0x00, 0x00, 11, 0xe8, 0x07, 1, 2, 3, 4, 5, 0x40, 0xe2, 0x01, 0x00,
        ];
        let no_micros = [0x00, 0x00, 4, 0xe8, 0x07, 1, 2];
        let show = |row: &[u8], decimals| {
            let v = decode_row(row, &[col(0x0c, false, decimals)]).expect("decodes");
            String::from_utf8(v.into_iter().flatten().flatten().collect()).expect("utf8")
        };
        assert_eq!(show(&micros, 0), "2024-01-02 03:04:05");
        assert_eq!(show(&micros, 3), "2024-01-02 03:04:05.123");
        assert_eq!(show(&micros, 6), "2024-01-02 03:04:05.123456");
        assert_eq!(show(&micros, NOT_FIXED_DEC), "2024-01-02 03:04:05.123456");
        assert_eq!(show(&no_micros, NOT_FIXED_DEC), "2024-01-02 00:00:00");
        assert_eq!(show(&no_micros, 2), "2024-01-02 00:00:00.00");
        let small = [0x00, 0x00, 11, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0];
        assert_eq!(show(&small, NOT_FIXED_DEC), "0000-00-00 00:00:00.000005");
        let date = decode_row(&micros, &[col(0x0a, false, 6)]).expect("decodes");
        assert_eq!(date, vals(&[Some("2024-01-02")]));
    }

    #[test]
    fn times_fold_days_into_hours() {
        let t6 = col(0x0b, false, 6);
        let t0 = col(0x0b, false, 0);
        assert_eq!(
            body(t6.clone(), "-50:10:20.500000"),
            [12, 1, 2, 0, 0, 0, 2, 10, 20, 0x20, 0xa1, 0x07, 0x00]
        );
        assert_eq!(
            body(t0.clone(), "838:59:59"),
            [8, 0, 34, 0, 0, 0, 22, 59, 59]
        );
        assert_eq!(body(t0.clone(), "00:00:00"), [0]);
        round_trip(std::slice::from_ref(&t0), &[Some("-00:00:01")]);
        round_trip(std::slice::from_ref(&t0), &[Some("-100:00:00")]);
        round_trip(&[col(0x0b, false, 3)], &[Some("00:00:00.000")]);
        let neg_zero = [0x00, 0x00, 8, 1, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            decode_row(&neg_zero, std::slice::from_ref(&t0)),
            Some(vals(&[Some("-00:00:00")]))
        );
        let signed_zero = encode_row(&vals(&[Some("-00:00:00")]), std::slice::from_ref(&t0));
        assert_eq!(
            signed_zero,
            Some(vec![0x00, 0x00, 0]),
            "zero loses its sign"
        );
        for bad in [
            "12:00",
            "1:2:3:4",
            "-",
            "12:00:00.",
            "aa:00:00",
            "999999999999:00:00",
        ] {
            assert_eq!(
                encode_row(&vals(&[Some(bad)]), std::slice::from_ref(&t0)),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn nulls_land_in_the_offset_bitmap() {
        let metas: Vec<ColumnMeta> = (0..14).map(|_| col(0x03, false, 0)).collect();
        let texts: Vec<Option<String>> = (0..14)
            .map(|i| (![0, 7, 8, 13].contains(&i)).then(|| i.to_string()))
            .collect();
        let refs: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
        let row = round_trip(&metas, &refs);
        assert_eq!(row.get(..3), Some(&[0x00, 0x04, 0x86][..]));
        assert_eq!(row.len(), 3 + 10 * 4);
        let null_type = [col(0x06, false, 0), col(0x03, false, 0)];
        let row = encode_row(&vals(&[Some("x"), Some("1")]), &null_type).expect("encodes");
        assert_eq!(row, [0x00, 0x04, 1, 0, 0, 0]);
        let unmarked = [0x00, 0x00, 1, 0, 0, 0];
        assert_eq!(
            decode_row(&unmarked, &null_type),
            Some(vals(&[None, Some("1")]))
        );
        round_trip(&[], &[]);
    }

    #[test]
    fn malformed_rows_are_refused() {
        let metas = [
            col(0x03, false, 0),
            col(0xfd, false, 0),
            col(0x0c, false, 6),
            col(0x0b, false, 6),
            col(0x05, false, NOT_FIXED_DEC),
        ];
        let row = round_trip(
            &metas,
            &[
                Some("7"),
                Some("abc"),
                Some("2024-01-02 03:04:05.000006"),
                Some("-01:00:00.500000"),
                Some("2.5"),
            ],
        );
        for cut in 0..row.len() {
            assert_eq!(decode_row(row.get(..cut).expect("prefix"), &metas), None);
        }
        let mut longer = row.clone();
        longer.push(0);
        assert_eq!(decode_row(&longer, &metas), None, "trailing byte");
        let mut header = row.clone();
        header[0] = 0x01;
        assert_eq!(decode_row(&header, &metas), None, "header");
        let one = |ty, bytes: &[u8]| {
            let mut r = vec![0x00, 0x00];
            r.extend_from_slice(bytes);
            decode_row(&r, &[col(ty, false, 6)])
        };
        assert_eq!(one(0x0c, &[5, 1, 2, 3, 4, 5]), None, "date length 5");
        assert_eq!(one(0x0b, &[3, 0, 0, 0]), None, "time length 3");
        assert_eq!(one(0x0b, &[8, 2, 0, 0, 0, 0, 1, 2, 3]), None, "sign byte 2");
        let too_many_micros = [11, 0, 0, 1, 1, 0, 0, 0, 0x40, 0x42, 0x0f, 0x00];
        assert_eq!(one(0x0c, &too_many_micros), None, "1000000 micros");
        assert_eq!(one(0xfd, &[0xfb]), None, "NULL marker as a length");
        assert_eq!(one(0xfd, &[0xff]), None, "0xFF as a length");
        assert_eq!(one(0x11, &[0]), None, "TIMESTAMP2 is internal");
        assert_eq!(encode_row(&vals(&[Some("1")]), &metas), None, "count");
        assert_eq!(
            encode_row(&vals(&[Some("1")]), &[col(0x13, false, 0)]),
            None
        );
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random and mutated rows never panic; what decodes and encodes is stable after one trip.
    #[test]
    fn random_bytes_never_panic() {
        const TYPES: [u8; 27] = [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
            0x0f, 0x10, 0x11, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe,
        ];
        static FILL: [u8; 8] = [0x85; 8];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let (mut decoded, mut stable) = (0, 0);
        for round in 0..5000 {
            let metas: Vec<ColumnMeta> = (0..rng.below(6))
                .map(|_| {
                    let ty = TYPES[rng.below(TYPES.len())];
                    let decimals = [0, 2, 6, NOT_FIXED_DEC][rng.below(4)];
                    col(ty, rng.below(2) == 1, decimals)
                })
                .collect();
            let row: Vec<u8> = if round % 2 == 0 {
                let len = rng.below(40);
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut row = vec![0u8; 1 + bitmap_len(metas.len())];
                for (i, m) in metas.iter().enumerate() {
                    if rng.below(5) == 0 {
                        let (byte, bit) = null_bit(i);
                        row[1 + byte] |= bit;
                        continue;
                    }
                    let value: &[u8] = match Form::of(m.ty) {
                        Some(Form::Int(w)) => &FILL[..w],
                        Some(Form::Year) => &[0xd0, 0x07],
                        Some(Form::Float) => &[1, 2, 3, 4],
                        Some(Form::Double) => &[1, 2, 3, 4, 5, 6, 7, 8],
                        Some(Form::Date | Form::DateTime) => &[7, 0xe8, 7, 1, 2, 3, 4, 5],
                        Some(Form::Time) => &[8, 1, 0, 0, 0, 0, 1, 2, 3],
                        Some(Form::Decimal) => b"\x04-1.5",
                        Some(Form::Null) | None => &[],
                        Some(Form::Bytes) => b"\x03abc",
                    };
                    row.extend_from_slice(value);
                }
                for _ in 0..rng.below(3) {
                    if !row.is_empty() {
                        let i = rng.below(row.len());
                        row[i] = rng.next() as u8;
                    }
                }
                if rng.below(4) == 0 {
                    row.truncate(row.len().saturating_sub(1));
                }
                row
            };
            let Some(values) = decode_row(&row, &metas) else {
                continue;
            };
            decoded += 1;
            let Some(once) = encode_row(&values, &metas) else {
                continue;
            };
            let again = decode_row(&once, &metas).expect("own encoding decodes");
            assert_eq!(encode_row(&again, &metas), Some(once), "row {row:?}");
            stable += 1;
        }
        assert!(decoded > 500, "only {decoded} rows decoded");
        assert!(stable > 300, "only {stable} rows re-encoded");
    }

    #[test]
    fn column_definitions_carry_type_flags_and_decimals() {
        let mut def = Vec::new();
        for s in ["def", "app", "t", "t", "n", "n"] {
            def.push(s.len() as u8);
            def.extend_from_slice(s.as_bytes());
        }
        def.push(0x0c);
        def.extend_from_slice(&63u16.to_le_bytes());
        def.extend_from_slice(&20u32.to_le_bytes());
        def.push(0x08);
        def.extend_from_slice(&0x0021u16.to_le_bytes());
        def.extend_from_slice(&[0, 0, 0]);
        let m = ColumnMeta::parse(&def).expect("parsed");
        assert_eq!((m.ty, m.unsigned, m.decimals), (0x08, true, 0));
        let short = def.get(..def.len() - 3).expect("prefix");
        let m = ColumnMeta::parse(short).expect("parsed without decimals");
        assert_eq!(m.decimals, NOT_FIXED_DEC);
    }
}
