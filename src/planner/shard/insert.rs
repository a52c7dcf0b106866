//! INSERTs on sharded tables: which shard each row goes to, splitting a multi-row INSERT by
//! row, and adding generated keys from a sequence. The VALUES rows are cut out of the
//! client's own text (never re-printed from the parse tree, which re-escapes strings).

use std::collections::BTreeSet;
use std::ops::Range;

use sqlparser::ast::{Insert, SetExpr, TableObject};

use crate::planner::lex::find;

use super::{key_value, reject, table_name, Key, ShardContext, ShardPlan};

pub(super) fn plan_insert(ins: &Insert, sql: &str, cx: &ShardContext<'_>) -> ShardPlan {
    let TableObject::TableName(name) = &ins.table else {
        return reject("INSERT into a table function is not supported");
    };
    let table = table_name(name);
    let Some(rule) = (cx.rule)(&table) else {
        return reject(format!(
            "table {table} is not in the shard map: say in the map whether it is sharded (shard_key) or a reference table"
        ));
    };
    if rule.reference {
        return ShardPlan::All;
    }
    let Some(key) = rule.shard_key.as_deref() else {
        return reject(format!("table {table} has no shard key in the shard map"));
    };
    // Without a column list the values are in the table's column order.
    let no_list = ins.columns.is_empty()
        && matches!(
            ins.source.as_ref().map(|q| q.body.as_ref()),
            Some(SetExpr::Values(_))
        );
    let table_columns = if no_list {
        match (cx.columns)(&table) {
            Some(c) => Some(c),
            None => return ShardPlan::NeedColumns(table),
        }
    } else {
        None
    };
    let named: Vec<String> = match &table_columns {
        Some(c) => c.to_vec(),
        None => ins.columns.iter().map(|c| c.to_string()).collect(),
    };
    let Some(pos) = named
        .iter()
        .position(|c| c.trim_matches('`').eq_ignore_ascii_case(key))
    else {
        let rows = match ins.source.as_ref().map(|q| q.body.as_ref()) {
            Some(SetExpr::Values(v)) if !ins.columns.is_empty() => v.rows.len(),
            _ => 0,
        };
        return match &rule.sequence {
            Some(seq) if rows > 0 => ShardPlan::Sequence {
                sequence: seq.clone(),
                key: key.to_string(),
                rows,
            },
            _ => reject(format!(
                "INSERT into sharded table {table} must name its shard key column {key} with a value (or the table needs a sequence in the shard map and a column list)"
            )),
        };
    };
    if let Some(sqlparser::ast::OnInsert::DuplicateKeyUpdate(assignments)) = &ins.on {
        if assignments.iter().any(|a| {
            a.target
                .to_string()
                .trim_matches('`')
                .eq_ignore_ascii_case(key)
        }) {
            return reject(format!(
                "ON DUPLICATE KEY UPDATE may not change shard key column {key}"
            ));
        }
    }
    let Some(source) = &ins.source else {
        return reject("INSERT ... SET is not supported on a sharded table yet");
    };
    let SetExpr::Values(values) = source.body.as_ref() else {
        return reject("INSERT ... SELECT is not supported on a sharded table");
    };
    if let Some(columns) = &table_columns {
        if let Some(n) = values.rows.iter().position(|r| r.len() != columns.len()) {
            // Known columns that do not fit may be stale (DDL around the proxy): never guess.
            return reject(format!(
                "INSERT into {table} without a column list: row {} has {} values and the table has {} columns",
                n + 1,
                values.rows[n].len(),
                columns.len()
            ));
        }
    }
    let mut shards = BTreeSet::new();
    let mut row_shards = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        let Some(v) = row.get(pos) else {
            return reject("an INSERT row has fewer values than columns");
        };
        match key_value(v) {
            Some(Key::Value(k)) => {
                let shard = (cx.shard_of)(&k.as_key());
                shards.insert(shard);
                row_shards.push(shard);
            }
            Some(Key::Param(i)) if values.rows.len() == 1 => return ShardPlan::Param(i),
            Some(Key::Param(_)) => {
                return reject(format!(
                    "a prepared multi-row INSERT into sharded table {table} is not supported yet"
                ))
            }
            Some(Key::Null) | None => {
                return reject(format!(
                    "INSERT into sharded table {table}: the shard key {key} must be a literal value or a parameter (not NULL or an expression)"
                ))
            }
        }
    }
    if shards.len() == 1 {
        return ShardPlan::One(shards.into_iter().next().unwrap_or(0));
    }
    let Some(parts) = values_rows(sql.as_bytes()) else {
        return reject(format!(
            "this multi-row INSERT into {table} has rows for {} shards and its VALUES list could not be split",
            shards.len()
        ));
    };
    if parts.rows.len() != row_shards.len() {
        return reject("the VALUES rows of this INSERT could not be matched to its parsed rows");
    }
    let statements = shards
        .into_iter()
        .map(|shard| {
            let mut pieces = vec![Piece::Client(0..parts.head_end)];
            let rows = parts
                .rows
                .iter()
                .zip(&row_shards)
                .filter(|(_, s)| **s == shard);
            for (n, (r, _)) in rows.enumerate() {
                if n > 0 {
                    pieces.push(Piece::Own(b", ".to_vec()));
                }
                pieces.push(Piece::Client(r.clone()));
            }
            pieces.push(Piece::Client(parts.tail_start..sql.len()));
            (shard, Spliced(pieces))
        })
        .collect();
    ShardPlan::SplitInsert(statements)
}

/// A statement made of ranges of the client's statement and text of the proxy's own: what a
/// split INSERT sends each shard. Rendered from the client's bytes, since the planner read a
/// copy of them (`planner::text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spliced(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Client(Range<usize>),
    Own(Vec<u8>),
}

impl Spliced {
    /// The statement, cut from `client` (the statement the plan was made from); `None` if a
    /// range does not fit it.
    pub fn render(&self, client: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(client.len());
        for p in &self.0 {
            match p {
                Piece::Client(r) => out.extend_from_slice(client.get(r.clone())?),
                Piece::Own(b) => out.extend_from_slice(b),
            }
        }
        Some(out)
    }
}

/// The INSERT `sql` with column `key` and one generated id per row added: first in the
/// column list and first in each row. `None` if its text cannot be taken apart.
pub fn with_generated_keys(sql: &[u8], key: &str, ids: &[i64]) -> Option<Vec<u8>> {
    let parts = values_rows(sql)?;
    if parts.rows.len() != ids.len() {
        return None;
    }
    let head = &sql[..parts.head_end];
    let open = first_paren(head)?;
    let mut out = Vec::with_capacity(sql.len() + ids.len() * 12);
    out.extend_from_slice(&head[..=open]);
    out.extend_from_slice(format!("`{}`, ", key.replace('`', "``")).as_bytes());
    out.extend_from_slice(&head[open + 1..]);
    let mut at = parts.head_end;
    for (row, id) in parts.rows.iter().zip(ids) {
        out.extend_from_slice(&sql[at..=row.start]);
        out.extend_from_slice(format!("{id}, ").as_bytes());
        at = row.start + 1;
    }
    out.extend_from_slice(&sql[at..]);
    Some(out)
}

/// The first `(` outside quotes and comments.
fn first_paren(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' && q != b'`' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = find(b, i + 2, b"*/")? + 1;
            }
            b'(' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Where the rows of an INSERT's VALUES list are in its text.
struct ValuesRows {
    /// The text before the first row (`INSERT ... VALUES `).
    head_end: usize,
    /// Each row, parentheses included.
    rows: Vec<std::ops::Range<usize>>,
    /// Where the text after the last row starts (` ON DUPLICATE KEY UPDATE ...` or nothing).
    tail_start: usize,
}

/// Finds the rows of the VALUES (or VALUE) list by scanning bytes: quotes (`'`, `"`, with
/// backslash and doubled-quote escapes), backquoted names and comments are skipped, so a
/// parenthesis or comma inside them does not count.
fn values_rows(b: &[u8]) -> Option<ValuesRows> {
    let mut i = 0;
    let mut depth = 0usize;
    let mut head_end = None;
    let mut rows = Vec::new();
    let mut row_start = 0;
    let mut tail_start = None;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'\\' && c != b'`' {
                        i += 2;
                        continue;
                    }
                    if b[i] == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = find(b, i + 2, b"*/")? + 1;
            }
            b'#' => i = find(b, i, b"\n")?,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = find(b, i, b"\n").unwrap_or(b.len());
            }
            b'(' => {
                if depth == 0 && head_end.is_some() && tail_start.is_none() {
                    row_start = i;
                }
                depth += 1;
            }
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 && head_end.is_some() && tail_start.is_none() {
                    rows.push(row_start..i + 1);
                }
            }
            _ if depth == 0 && head_end.is_none() && c.is_ascii_alphabetic() => {
                let end = b[i..]
                    .iter()
                    .position(|x| !x.is_ascii_alphanumeric() && *x != b'_')
                    .map_or(b.len(), |e| i + e);
                let word = &b[i..end];
                if word.eq_ignore_ascii_case(b"values") || word.eq_ignore_ascii_case(b"value") {
                    head_end = Some(end);
                }
                i = end;
                continue;
            }
            _ if depth == 0
                && head_end.is_some()
                && tail_start.is_none()
                && !rows.is_empty()
                && c.is_ascii_alphabetic() =>
            {
                tail_start = Some(i);
            }
            _ => {}
        }
        i += 1;
    }
    head_end?;
    Some(ValuesRows {
        head_end: rows.first()?.start,
        tail_start: rows.last()?.end,
        rows,
    })
}
