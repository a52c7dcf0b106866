//! Finishing the groups of a multi-shard read once every shard's rows are folded: each AVG
//! computed from its folded SUM and COUNT and printed as MariaDB prints it, HAVING applied to
//! the merged groups, and the hidden columns (what AVG, HAVING and ORDER BY needed) kept from
//! the client.
//!
//! Pure functions over text-protocol values (`None`: NULL); see `planner::shard::GroupSpec`.

use std::cmp::Ordering;

use crate::executor::merge::{
    compare_values, fold, format_double, ColumnMeta, Fold, ValueKind, NOT_FIXED_DEC,
};
use crate::planner::shard::{AvgColumn, Combine, CompareOp, GroupSpec, Operand, Predicate};
use crate::protocol::wire::Reader;

pub use crate::executor::row_values::Row;

/// MariaDB's default `div_precision_increment`: digits AVG adds to its argument's scale.
const DIV_PRECISION_INCREMENT: u32 = 4;
/// Most fraction digits of a DECIMAL result (DECIMAL_MAX_SCALE).
const DECIMAL_MAX_SCALE: u32 = 38;
const TYPE_DECIMAL: u8 = 0x00;
const TYPE_FLOAT: u8 = 0x04;
const TYPE_DOUBLE: u8 = 0x05;
const TYPE_NEWDECIMAL: u8 = 0xf6;

/// The folded groups made final, in the same order: every AVG of `group` computed, and the
/// groups HAVING does not keep dropped. Hidden columns stay (ORDER BY may use them); call
/// [`visible`] on each row before sending it. `defs` are the shards' column definitions (as
/// [`client_columns`] takes them): they say how each AVG prints.
pub fn finish_groups(
    mut rows: Vec<Row>,
    group: &GroupSpec,
    metas: &[ColumnMeta],
    defs: &[Vec<u8>],
) -> Vec<Row> {
    let formats: Vec<AvgFormat> = group
        .avg
        .iter()
        .map(|a| AvgFormat::of(a, defs, metas))
        .collect();
    for row in &mut rows {
        for (a, format) in group.avg.iter().zip(&formats) {
            let cell = |c: usize| row.get(c).and_then(|v| v.as_deref());
            let value = average(cell(a.sum), cell(a.count), format);
            // Unreadable inputs leave the shards' own value rather than invent one.
            if let (Some(value), Some(slot)) = (value, row.get_mut(a.at)) {
                *slot = value;
            }
        }
    }
    if let Some(having) = &group.having {
        rows.retain(|r| eval(having, r, metas) == Some(true));
    }
    rows
}

/// How one column's values in a group fold. `by_group`: the fold by group that follows the
/// fold by (group, `COUNT(DISTINCT x)`'s `x`), where each distinct `x` adds its one.
pub fn fold_of(c: Combine, by_group: bool) -> Fold {
    match c {
        Combine::First => Fold::First,
        Combine::Count => Fold::Count,
        Combine::Sum => Fold::Sum,
        Combine::Min => Fold::Min,
        Combine::Max => Fold::Max,
        Combine::CountDistinct if by_group => Fold::Count,
        Combine::CountDistinct => Fold::Max,
    }
}

/// For `COUNT(DISTINCT x)`: `rows`, one per (group, `x`) across shards, folded into one per
/// group (`key_of` gives a row's group key). Aggregates without GROUP BY answer one row even
/// when no row matched: counts 0, everything else NULL.
pub fn fold_distinct(
    rows: Vec<Row>,
    group: &GroupSpec,
    kind: &dyn Fn(usize) -> ValueKind,
    key_of: &dyn Fn(&Row) -> Row,
) -> Vec<Row> {
    let folds: Vec<Fold> = group.columns.iter().map(|c| fold_of(*c, true)).collect();
    let mut index: std::collections::HashMap<Row, usize> = std::collections::HashMap::new();
    let mut out: Vec<Row> = Vec::new();
    for row in rows {
        let key = key_of(&row);
        match index.get(&key) {
            Some(&i) => {
                for (c, how) in folds.iter().enumerate() {
                    fold(
                        &mut out[i][c],
                        row.get(c).and_then(|v| v.as_deref()),
                        *how,
                        kind(c),
                    );
                }
            }
            None => {
                index.insert(key, out.len());
                out.push(row);
            }
        }
    }
    if out.is_empty() && group.keys.is_empty() {
        out.push(
            group
                .columns
                .iter()
                .map(|c| {
                    matches!(c, Combine::Count | Combine::CountDistinct).then(|| b"0".to_vec())
                })
                .collect(),
        );
    }
    out
}

/// The column definitions the client gets: the shards' own for the visible columns (an AVG's
/// is the shards' AVG's: type, length and decimals as one server would send them).
pub fn client_columns(defs: &[Vec<u8>], group: &GroupSpec) -> Vec<Vec<u8>> {
    defs.iter().take(group.visible).cloned().collect()
}

/// The payload of the column-count packet the client gets (the first of the result set).
pub fn column_count(group: &GroupSpec) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    crate::protocol::wire::put_lenenc(&mut out, group.visible as u64);
    out.to_vec()
}

/// Drops a row's hidden columns.
pub fn visible(row: &mut Row, group: &GroupSpec) {
    row.truncate(group.visible);
}

/// How an AVG prints: as the server declared its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AvgFormat {
    /// DECIMAL with this many fraction digits (`None`: the sum's scale + 4).
    Exact { decimals: Option<u32> },
    /// DOUBLE with fixed fraction digits, or (`None`) in its shortest exact form.
    Float { decimals: Option<usize> },
}

impl AvgFormat {
    fn of(a: &AvgColumn, defs: &[Vec<u8>], metas: &[ColumnMeta]) -> AvgFormat {
        match defs.get(a.at).and_then(|d| type_and_decimals(d)) {
            Some((TYPE_NEWDECIMAL | TYPE_DECIMAL, d)) => AvgFormat::Exact {
                decimals: Some(u32::from(d).min(DECIMAL_MAX_SCALE)),
            },
            Some((TYPE_DOUBLE | TYPE_FLOAT, d)) => AvgFormat::Float {
                decimals: (d < NOT_FIXED_DEC).then_some(usize::from(d)),
            },
            _ if metas.get(a.at).is_some_and(|m| m.kind == ValueKind::Float) => {
                AvgFormat::Float { decimals: None }
            }
            _ => AvgFormat::Exact { decimals: None },
        }
    }
}

/// A column definition's type byte and decimals (protocol 4.1).
fn type_and_decimals(def: &[u8]) -> Option<(u8, u8)> {
    let mut r = Reader::new(def);
    for _ in 0..6 {
        r.lenenc_bytes().ok()?; // catalog, schema, table, org_table, name, org_name
    }
    crate::protocol::column::skip_extended_metadata(&mut r).ok()?;
    r.lenenc().ok()?; // length of the fixed fields
    r.u16().ok()?; // charset
    r.u32().ok()?; // column length
    let ty = r.u8().ok()?;
    r.u16().ok()?; // flags
    Some((ty, r.u8().ok()?))
}

/// `sum / count` as the AVG's text; `Some(None)` (NULL) without values; `None` if the inputs
/// cannot be read.
fn average(
    sum: Option<&[u8]>,
    count: Option<&[u8]>,
    format: &AvgFormat,
) -> Option<Option<Vec<u8>>> {
    let count: u64 = match count {
        None => 0,
        Some(c) => std::str::from_utf8(c).ok()?.trim().parse().ok()?,
    };
    let (Some(sum), true) = (sum, count > 0) else {
        return Some(None);
    };
    let sum = std::str::from_utf8(sum).ok()?.trim();
    let text = match *format {
        AvgFormat::Exact { decimals } => exact_average(sum, count, decimals)?,
        AvgFormat::Float { decimals } => {
            let avg = sum.parse::<f64>().ok()? / count as f64;
            match decimals {
                Some(d) => format!("{avg:.d$}"),
                None => format_double(avg),
            }
        }
    };
    Some(Some(text.into_bytes()))
}

/// `sum / count` as MariaDB's AVG of an exact type prints it, `decimals` fraction digits (the
/// sum's scale + 4 if `None`). The server divides in base-10^9 words: the quotient keeps whole
/// words of fraction digits (at least the sum's scale + div_precision_increment) and is cut
/// there, then rounded half away from zero to `decimals` when that is fewer digits. So a
/// scale of 5 (+4 = 9, one whole word) is cut, not rounded: 0.00002 / 3 is 0.000006666.
fn exact_average(sum: &str, count: u64, decimals: Option<u32>) -> Option<String> {
    let (negative, int, frac) = split_decimal(sum)?;
    let scale = u32::try_from(frac.len()).ok()?;
    let decimals = decimals.unwrap_or((scale + DIV_PRECISION_INCREMENT).min(DECIMAL_MAX_SCALE));
    // The increment the server used (decimals is capped at 38, the increment then unknown).
    let increment = if decimals < DECIMAL_MAX_SCALE {
        decimals.saturating_sub(scale)
    } else {
        DIV_PRECISION_INCREMENT.max(DECIMAL_MAX_SCALE.saturating_sub(scale))
    };
    let words = |digits: u32| digits.div_ceil(9) * 9;
    let dividend_frac = words(scale);
    let kept = words(dividend_frac + increment.saturating_sub(dividend_frac - scale));
    // The sum's digits scaled to `kept` fraction digits, divided by the count.
    let mut digits: Vec<u8> = int.iter().chain(frac).map(|d| d - b'0').collect();
    digits.resize(digits.len() + (kept - scale) as usize, 0);
    let sum_is_zero = digits.iter().all(|d| *d == 0);
    let mut quotient = divide(&digits, count);
    let negative = if kept > decimals {
        let dropped = (kept - decimals) as usize;
        let keep = quotient.len().saturating_sub(dropped);
        let round_up = quotient.get(keep).is_some_and(|d| *d >= 5);
        quotient.truncate(keep);
        if round_up {
            increment_digits(&mut quotient);
        }
        // Rounding makes a zero positive; a quotient cut to zero keeps its sign.
        negative && quotient.iter().any(|d| *d != 0)
    } else {
        quotient.resize(quotient.len() + (decimals - kept) as usize, 0);
        negative && !sum_is_zero
    };
    Some(format_digits(negative, &quotient, decimals as usize))
}

/// Decimal text as sign, integer digits and fraction digits; `None` if not decimal text.
fn split_decimal(v: &str) -> Option<(bool, &[u8], &[u8])> {
    let (negative, rest) = match v.as_bytes().first() {
        Some(b'-') => (true, &v.as_bytes()[1..]),
        Some(b'+') => (false, &v.as_bytes()[1..]),
        _ => (false, v.as_bytes()),
    };
    let (int, frac) = match rest.iter().position(|b| *b == b'.') {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let all_digits = int.iter().chain(frac).all(u8::is_ascii_digit);
    (all_digits && !(int.is_empty() && frac.is_empty())).then_some((negative, int, frac))
}

/// Long division of decimal digits (most significant first) by `divisor`: the quotient's
/// digits, as many as the dividend's.
fn divide(digits: &[u8], divisor: u64) -> Vec<u8> {
    let divisor = u128::from(divisor);
    let mut remainder: u128 = 0;
    digits
        .iter()
        .map(|d| {
            let current = remainder * 10 + u128::from(*d);
            remainder = current % divisor;
            // A digit: current < 10 * divisor.
            (current / divisor) as u8
        })
        .collect()
}

/// Adds one to the number the digits spell, growing it by a digit on carry out.
fn increment_digits(digits: &mut Vec<u8>) {
    for d in digits.iter_mut().rev() {
        if *d == 9 {
            *d = 0;
        } else {
            *d += 1;
            return;
        }
    }
    digits.insert(0, 1);
}

/// Digits with `decimals` of them after the point, without leading zeros.
fn format_digits(negative: bool, digits: &[u8], decimals: usize) -> String {
    let split = digits.len().saturating_sub(decimals);
    let (int, frac) = digits.split_at(split);
    let start = int.iter().position(|d| *d != 0).unwrap_or(int.len());
    let mut out = String::with_capacity(digits.len() + 3);
    if negative {
        out.push('-');
    }
    if start == int.len() {
        out.push('0');
    }
    out.extend(int[start..].iter().map(|d| char::from(b'0' + d)));
    if decimals > 0 {
        out.push('.');
        // Fewer digits than decimals: leading fraction zeros.
        out.extend(std::iter::repeat_n('0', decimals - frac.len()));
        out.extend(frac.iter().map(|d| char::from(b'0' + d)));
    }
    out
}

/// A value in a HAVING comparison.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Null,
    /// An integer or decimal, as text.
    Exact(&'a [u8]),
    Float(f64),
    /// A string: of a column of this kind, or (`None`) a literal, which takes the other
    /// side's collation.
    Str(&'a [u8], Option<ValueKind>),
}

fn value<'a>(o: &'a Operand, row: &'a [Option<Vec<u8>>], metas: &[ColumnMeta]) -> Val<'a> {
    match o {
        Operand::Null => Val::Null,
        Operand::Number(n) if n.contains(['e', 'E']) => Val::Float(text_to_f64(n.as_bytes())),
        Operand::Number(n) => Val::Exact(n.as_bytes()),
        Operand::Text(t) => Val::Str(t.as_bytes(), None),
        Operand::Column(c) => {
            let Some(v) = row.get(*c).and_then(|v| v.as_deref()) else {
                return Val::Null;
            };
            let kind = metas.get(*c).map_or(ValueKind::Bytes, |m| m.kind);
            if kind == ValueKind::Exact {
                Val::Exact(v)
            } else if kind == ValueKind::Float {
                Val::Float(text_to_f64(v))
            } else {
                Val::Str(v, Some(kind))
            }
        }
    }
}

/// How two values compare, as MariaDB compares them; `None` when either is NULL. Strings
/// compare in the column's collation, integers and decimals exactly, anything else mixed
/// (a number with a string, a DOUBLE with a decimal) as DOUBLEs.
fn compare(a: Val<'_>, b: Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Null, _) | (_, Val::Null) => None,
        (Val::Str(x, kx), Val::Str(y, ky)) => {
            let kind = match (kx, ky) {
                (Some(p), Some(q)) if p != q => ValueKind::Bytes,
                (Some(k), _) | (_, Some(k)) => k,
                (None, None) => ValueKind::Text,
            };
            Some(compare_values(x, y, kind))
        }
        (Val::Exact(x), Val::Exact(y)) => Some(compare_values(x, y, ValueKind::Exact)),
        (a, b) => number(a).partial_cmp(&number(b)),
    }
}

fn number(v: Val<'_>) -> f64 {
    match v {
        Val::Null => 0.0,
        Val::Float(f) => f,
        Val::Exact(t) | Val::Str(t, _) => text_to_f64(t),
    }
}

/// A string as a DOUBLE the way MariaDB converts one: its longest numeric prefix (leading
/// spaces skipped), 0 without one.
fn text_to_f64(v: &[u8]) -> f64 {
    let text = String::from_utf8_lossy(v);
    let t = text.trim_start();
    let b = t.as_bytes();
    let digits_from = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut end = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_end = digits_from(end);
    let mut has_digits = int_end > end;
    end = int_end;
    if b.get(end) == Some(&b'.') {
        let frac_end = digits_from(end + 1);
        has_digits |= frac_end > end + 1;
        end = frac_end;
    }
    if !has_digits {
        return 0.0;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
        let exp_end = digits_from(end + 1 + sign);
        if exp_end > end + 1 + sign {
            end = exp_end;
        }
    }
    t[..end].parse().unwrap_or(0.0)
}

/// A value as a condition: a non-zero number is true.
fn truth(v: Val<'_>) -> Option<bool> {
    match v {
        Val::Null => None,
        Val::Exact(t) => Some(compare_values(t, b"0", ValueKind::Exact) != Ordering::Equal),
        other => Some(number(other) != 0.0),
    }
}

fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// HAVING on one row, in three-valued logic (`None`: unknown, which does not keep the row).
fn eval(p: &Predicate, row: &[Option<Vec<u8>>], metas: &[ColumnMeta]) -> Option<bool> {
    match p {
        Predicate::And(a, b) => and(eval(a, row, metas), eval(b, row, metas)),
        Predicate::Or(a, b) => or(eval(a, row, metas), eval(b, row, metas)),
        Predicate::Not(a) => eval(a, row, metas).map(|t| !t),
        Predicate::Compare(a, CompareOp::NullSafeEq, b) => {
            match (value(a, row, metas), value(b, row, metas)) {
                (Val::Null, Val::Null) => Some(true),
                (Val::Null, _) | (_, Val::Null) => Some(false),
                (x, y) => Some(compare(x, y) == Some(Ordering::Equal)),
            }
        }
        Predicate::Compare(a, op, b) => {
            compare(value(a, row, metas), value(b, row, metas)).map(|o| match op {
                CompareOp::Eq | CompareOp::NullSafeEq => o == Ordering::Equal,
                CompareOp::NotEq => o != Ordering::Equal,
                CompareOp::Lt => o == Ordering::Less,
                CompareOp::LtEq => o != Ordering::Greater,
                CompareOp::Gt => o == Ordering::Greater,
                CompareOp::GtEq => o != Ordering::Less,
            })
        }
        Predicate::IsNull { value: v, negated } => {
            Some(matches!(value(v, row, metas), Val::Null) != *negated)
        }
        Predicate::Is { inner, is, negated } => Some((eval(inner, row, metas) == *is) != *negated),
        Predicate::Between {
            value: v,
            low,
            high,
            negated,
        } => {
            let x = value(v, row, metas);
            let within = and(
                compare(x, value(low, row, metas)).map(|o| o != Ordering::Less),
                compare(x, value(high, row, metas)).map(|o| o != Ordering::Greater),
            );
            within.map(|t| t != *negated)
        }
        Predicate::In {
            value: v,
            list,
            negated,
        } => {
            let x = value(v, row, metas);
            let mut unknown = false;
            for item in list {
                match compare(x, value(item, row, metas)) {
                    Some(Ordering::Equal) => return Some(!*negated),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            (!unknown).then_some(*negated)
        }
        Predicate::Value(o) => truth(value(o, row, metas)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column definition packet: name, type byte, decimals; charset 45 (utf8mb4_general_ci).
    fn def(name: &str, ty: u8, decimals: u8) -> Vec<u8> {
        let mut d = Vec::new();
        for s in ["def", "app", "", "", name, ""] {
            d.push(s.len() as u8);
            d.extend_from_slice(s.as_bytes());
        }
        d.push(0x0c);
        d.extend_from_slice(&45u16.to_le_bytes());
        d.extend_from_slice(&20u32.to_le_bytes());
        d.push(ty);
        d.extend_from_slice(&0u16.to_le_bytes());
        d.push(decimals);
        d.extend_from_slice(&[0, 0]);
        d
    }

    fn metas(defs: &[Vec<u8>]) -> Vec<ColumnMeta> {
        defs.iter()
            .map(|d| ColumnMeta::parse(d).expect("definition"))
            .collect()
    }

    fn row(values: &[Option<&str>]) -> Row {
        values
            .iter()
            .map(|v| v.map(|v| v.as_bytes().to_vec()))
            .collect()
    }

    fn spec(visible: usize, avg: Vec<AvgColumn>, having: Option<Predicate>) -> GroupSpec {
        GroupSpec {
            columns: Vec::new(),
            keys: Vec::new(),
            sorted_by_key: false,
            visible,
            avg,
            having: having.map(Box::new),
            distinct_arg: None,
        }
    }

    #[test]
    fn count_distinct_adds_one_per_distinct_value_of_each_group() {
        use crate::executor::merge::ValueKind;
        // Columns: group, COUNT(DISTINCT x) (1, or 0 for NULL), COUNT(*), hidden x; rows as
        // the fold by (group, x) leaves them: one per distinct x.
        let g = GroupSpec {
            columns: vec![
                Combine::First,
                Combine::CountDistinct,
                Combine::Count,
                Combine::First,
            ],
            keys: vec![0],
            distinct_arg: Some(3),
            ..spec(3, Vec::new(), None)
        };
        let rows = vec![
            row(&[Some("a"), Some("1"), Some("2"), Some("x")]),
            row(&[Some("b"), Some("0"), Some("5"), None]),
            row(&[Some("a"), Some("1"), Some("3"), Some("y")]),
            row(&[Some("b"), Some("1"), Some("1"), Some("z")]),
        ];
        let kind = |c: usize| {
            if c == 0 {
                ValueKind::Bytes
            } else {
                ValueKind::Exact
            }
        };
        let key_of = |r: &Row| vec![r[0].clone()];
        let got = fold_distinct(rows, &g, &kind, &key_of);
        assert_eq!(
            got,
            vec![
                row(&[Some("a"), Some("2"), Some("5"), Some("x")]),
                row(&[Some("b"), Some("1"), Some("6"), None]),
            ]
        );
        // No GROUP BY and no row at all: one row, counts 0, the rest NULL.
        let g = GroupSpec {
            keys: Vec::new(),
            ..g
        };
        let none = fold_distinct(Vec::new(), &g, &kind, &|_| Vec::new());
        assert_eq!(none, vec![row(&[None, Some("0"), Some("0"), None])]);
    }

    #[test]
    fn exact_averages_print_as_mariadb_prints_them() {
        // Each from MariaDB 10.11: AVG over INT, DECIMAL(10,5), DECIMAL(10,2),
        // DECIMAL(65,30) and BIGINT UNSIGNED.
        let cases = [
            ("5", 3, 4, "1.6667"),
            ("-5", 3, 4, "-1.6667"),
            ("-1", 3, 4, "-0.3333"),
            ("0.00002", 3, 9, "0.000006666"),
            ("6.06", 3, 6, "2.020000"),
            ("0.04", 27, 6, "0.001481"),
            ("0.57", 385, 6, "0.001481"),
            (
                "6.875000000000000000000000000000",
                3,
                34,
                "2.2916666666666666666666666666666667",
            ),
            ("55340232221128654845", 3, 4, "18446744073709551615.0000"),
            ("0", 7, 4, "0.0000"),
            // Rounded to zero: unsigned; cut to zero: the sign stays.
            ("-1", 100000, 4, "0.0000"),
            ("-0.00001", 100000, 9, "-0.000000000"),
            ("9.99995", 1, 9, "9.999950000"),
            ("19.9999", 2, 8, "9.99995000"),
            ("0.99995", 1, 4, "1.0000"),
        ];
        for (sum, count, decimals, want) in cases {
            assert_eq!(
                exact_average(sum, count, Some(decimals)).as_deref(),
                Some(want),
                "{sum} / {count}"
            );
        }
        assert_eq!(exact_average("7", 2, None).as_deref(), Some("3.5000"));
        assert_eq!(exact_average("1.5e3", 2, None), None);
        let mut nines = vec![9, 9];
        increment_digits(&mut nines);
        assert_eq!(nines, vec![1, 0, 0]);
    }

    #[test]
    fn doubles_print_as_mariadb_prints_them() {
        let cases = [
            (1e15, "1e15"),
            (1e14, "100000000000000"),
            (123456789012345678.0, "1.2345678901234568e17"),
            (1.5e16, "1.5e16"),
            (1e-15, "0.000000000000001"),
            (1e-16, "1e-16"),
            (1.25e-15, "0.00000000000000125"),
            (-2.5e20, "-2.5e20"),
            (1e308, "1e308"),
            (5e-324, "5e-324"),
            (0.0, "0"),
            (123456789012345.6, "123456789012345.6"),
            (1234567890123456.7, "1234567890123456.8"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-1e-5, "-0.00001"),
            (0.7000000000000001 / 3.0, "0.23333333333333336"),
            (5e15, "5e15"),
            (-3.0, "-3"),
            (241.5, "241.5"),
        ];
        for (x, want) in cases {
            assert_eq!(format_double(x), want, "{x:e}");
        }
    }

    #[test]
    fn averages_replace_the_shards_values() {
        // AVG(i), AVG(f), AVG(f2) with f2 DOUBLE(10,2), then hidden sums and counts.
        let defs = vec![
            def("AVG(i)", TYPE_NEWDECIMAL, 4),
            def("AVG(f)", TYPE_DOUBLE, 31),
            def("AVG(f2)", TYPE_DOUBLE, 6),
            def("SUM(i)", TYPE_NEWDECIMAL, 0),
            def("COUNT(i)", 0x08, 0),
            def("SUM(f)", TYPE_DOUBLE, 31),
            def("COUNT(f)", 0x08, 0),
            def("SUM(f2)", TYPE_DOUBLE, 2),
            def("COUNT(f2)", 0x08, 0),
        ];
        let group = spec(
            3,
            vec![
                AvgColumn {
                    at: 0,
                    sum: 3,
                    count: 4,
                },
                AvgColumn {
                    at: 1,
                    sum: 5,
                    count: 6,
                },
                AvgColumn {
                    at: 2,
                    sum: 7,
                    count: 8,
                },
            ],
            None,
        );
        let rows = vec![
            row(&[
                Some("9.9"),
                Some("9.9"),
                Some("9.9"),
                Some("5"),
                Some("3"),
                Some("0.7000000000000001"),
                Some("3"),
                Some("7.50"),
                Some("3"),
            ]),
            // No values: NULL, whatever the shards said.
            row(&[
                Some("1.0000"),
                Some("1"),
                Some("1.000000"),
                None,
                Some("0"),
                None,
                Some("0"),
                None,
                None,
            ]),
        ];
        let out = finish_groups(rows, &group, &metas(&defs), &defs);
        let shown = |r: &Row| -> Vec<Option<String>> {
            r.iter()
                .take(3)
                .map(|v| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()))
                .collect()
        };
        assert_eq!(
            shown(&out[0]),
            vec![
                Some("1.6667".to_string()),
                Some("0.23333333333333336".to_string()),
                Some("2.500000".to_string())
            ]
        );
        assert_eq!(shown(&out[1]), vec![None, None, None]);
        assert_eq!(out[0].len(), 9, "hidden columns stay for ORDER BY");
        let mut first = out[0].clone();
        visible(&mut first, &group);
        assert_eq!(first.len(), 3);
        assert_eq!(client_columns(&defs, &group), defs[..3].to_vec());
        assert_eq!(column_count(&group), vec![3]);
    }

    #[test]
    fn having_keeps_only_rows_it_makes_true() {
        // name (text), c = COUNT(*), a = AVG(x) decimal, m = MAX(score) double.
        let defs = vec![
            def("name", 0xfd, 0),
            def("c", 0x08, 0),
            def("a", TYPE_NEWDECIMAL, 4),
            def("m", TYPE_DOUBLE, 31),
        ];
        let metas = metas(&defs);
        let rows = vec![
            row(&[Some("Alpha "), Some("3"), Some("2.5000"), Some("1.5")]),
            row(&[Some("bravo"), Some("1"), None, Some("10")]),
            row(&[None, Some("12"), Some("-0.5000"), None]),
        ];
        let col = Operand::Column;
        let num = |n: &str| Operand::Number(n.into());
        let text = |t: &str| Operand::Text(t.into());
        let cmp = |a, op, b| Predicate::Compare(a, op, b);
        let kept = |p: Predicate| -> Vec<usize> {
            let group = spec(4, Vec::new(), Some(p));
            let out = finish_groups(rows.clone(), &group, &metas, &defs);
            out.iter()
                .map(|r| rows.iter().position(|x| x == r).expect("a row"))
                .collect()
        };
        assert_eq!(kept(cmp(col(1), CompareOp::Gt, num("1"))), vec![0, 2]);
        // Exact: 2.5000 = 2.5; as text they differ.
        assert_eq!(kept(cmp(col(2), CompareOp::Eq, num("2.5"))), vec![0]);
        assert_eq!(kept(cmp(col(2), CompareOp::Lt, num("1e1"))), vec![0, 2]);
        // Case and trailing spaces do not count in a _ci collation.
        assert_eq!(kept(cmp(col(0), CompareOp::Eq, text("ALPHA"))), vec![0]);
        assert_eq!(kept(cmp(col(0), CompareOp::NotEq, text("alpha"))), vec![1]);
        assert_eq!(
            kept(cmp(col(0), CompareOp::NullSafeEq, Operand::Null)),
            vec![2]
        );
        assert_eq!(kept(cmp(col(3), CompareOp::GtEq, text("10abc"))), vec![1]);
        // NULL makes comparisons unknown, NOT of unknown is unknown.
        assert_eq!(
            kept(Predicate::Not(Box::new(cmp(
                col(2),
                CompareOp::Gt,
                num("0")
            )))),
            vec![2]
        );
        assert_eq!(
            kept(Predicate::Or(
                Box::new(cmp(col(2), CompareOp::Gt, num("0"))),
                Box::new(Predicate::IsNull {
                    value: col(3),
                    negated: false
                })
            )),
            vec![0, 2]
        );
        assert_eq!(
            kept(Predicate::And(
                Box::new(cmp(col(1), CompareOp::LtEq, num("3"))),
                Box::new(Predicate::Value(col(2)))
            )),
            vec![0]
        );
        assert_eq!(
            kept(Predicate::Is {
                inner: Box::new(cmp(col(2), CompareOp::Gt, num("0"))),
                is: Some(false),
                negated: true
            }),
            vec![0, 1]
        );
        assert_eq!(
            kept(Predicate::Between {
                value: col(1),
                low: num("1"),
                high: num("3"),
                negated: true
            }),
            vec![2]
        );
        // IN: a match is true; no match with a NULL in the list is unknown.
        assert_eq!(
            kept(Predicate::In {
                value: col(1),
                list: vec![num("3"), num("12")],
                negated: false
            }),
            vec![0, 2]
        );
        assert_eq!(
            kept(Predicate::In {
                value: col(1),
                list: vec![num("3"), Operand::Null],
                negated: true
            }),
            Vec::<usize>::new()
        );
        assert_eq!(
            kept(Predicate::In {
                value: col(0),
                list: vec![text("BRAVO"), text("x")],
                negated: false
            }),
            vec![1]
        );
    }

    #[test]
    fn strings_read_as_numbers_by_their_prefix() {
        assert_eq!(text_to_f64(b" 12abc"), 12.0);
        assert_eq!(text_to_f64(b"-1.5e2x"), -150.0);
        assert_eq!(text_to_f64(b"1e"), 1.0);
        assert_eq!(text_to_f64(b".5"), 0.5);
        assert_eq!(text_to_f64(b"abc"), 0.0);
        assert_eq!(text_to_f64(b"-"), 0.0);
    }
}
