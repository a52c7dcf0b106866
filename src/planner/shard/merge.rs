//! Multi-shard reads whose rows must be merged: ORDER BY and LIMIT (k-way merge, LIMIT pushed
//! down as offset + count), and GROUP BY, aggregates and DISTINCT (folded per group).

use sqlparser::ast::{Expr, Value};
use sqlparser::dialect::MySqlDialect;

use super::tokens::{byte_offset, AGGREGATES};

/// How the rows of several shards are merged for ORDER BY / LIMIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSpec {
    pub shards: Vec<usize>,
    /// What every shard runs: the statement, with `LIMIT off, n` turned into `LIMIT off+n`.
    pub sql: String,
    pub order: Vec<OrderKey>,
    pub offset: u64,
    pub limit: Option<u64>,
    /// Rows of the same group (or duplicates) from different shards combine into one.
    pub group: Option<GroupSpec>,
}

/// How rows combine across shards: GROUP BY groups, aggregates without GROUP BY (one group),
/// or DISTINCT (every column is the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// Per result column.
    pub columns: Vec<Combine>,
    /// Result columns forming the group key; empty: all rows are one group.
    pub keys: Vec<usize>,
    /// Without ORDER BY the merged groups come out ordered by the key (GROUP BY sorts).
    pub sorted_by_key: bool,
}

/// How one result column of rows in the same group combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// A group key or a plain column: the first value.
    First,
    Count,
    Sum,
    Min,
    Max,
}

/// One ORDER BY term, by the result column it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    pub column: ColumnRef,
    pub desc: bool,
}

/// A result column: by 0-based position, or by name or alias (matched against the column
/// definitions the shards send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRef {
    Position(usize),
    Name(String),
}

/// How the rows of several shards combine for GROUP BY, aggregates or DISTINCT; `None` when
/// they need not (plain rows). `Err` says what cannot be merged (yet).
pub(super) fn group_spec(
    q: &sqlparser::ast::Query,
    s: &sqlparser::ast::Select,
    aggregates: bool,
) -> Result<Option<GroupSpec>, String> {
    use sqlparser::ast::{FunctionArguments, GroupByExpr, SelectItem};
    if q.fetch.is_some() {
        return Err("has FETCH: not supported".into());
    }
    if s.having.is_some() {
        return Err("has HAVING: merging with HAVING is not supported yet".into());
    }
    let group_by: &[Expr] = match &s.group_by {
        GroupByExpr::Expressions(e, modifiers) if modifiers.is_empty() => e,
        _ => return Err("has a GROUP BY form that is not supported".into()),
    };
    let distinct = s.distinct.is_some();
    if !aggregates && group_by.is_empty() && !distinct {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(s.projection.len());
    let mut names: Vec<Option<String>> = Vec::with_capacity(s.projection.len());
    for item in &s.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            _ => {
                return Err(
                    "selects * with GROUP BY, DISTINCT or aggregates: name the columns".into(),
                )
            }
        };
        let combine = match expr {
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                let distinct_arg = matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment.is_some());
                let kind = match name.as_str() {
                    "count" => Some(Combine::Count),
                    "sum" => Some(Combine::Sum),
                    "min" => Some(Combine::Min),
                    "max" => Some(Combine::Max),
                    "avg" => return Err("uses AVG: select SUM(x) and COUNT(x) and divide".into()),
                    other if AGGREGATES.contains(&other) => {
                        return Err(format!(
                            "uses {}: not supported across shards",
                            other.to_ascii_uppercase()
                        ))
                    }
                    _ => None,
                };
                match kind {
                    Some(_) if distinct_arg => {
                        return Err(format!(
                            "uses {}(DISTINCT ...): not supported across shards",
                            name.to_ascii_uppercase()
                        ))
                    }
                    Some(k) => k,
                    None if contains_aggregate(&expr.to_string()) => {
                        return Err(
                            "has an aggregate inside an expression: select the aggregate itself"
                                .into(),
                        )
                    }
                    None => Combine::First,
                }
            }
            other if contains_aggregate(&other.to_string()) => {
                return Err(
                    "has an aggregate inside an expression: select the aggregate itself".into(),
                )
            }
            _ => Combine::First,
        };
        let name = alias.or_else(|| match expr {
            Expr::Identifier(id) => Some(id.value.clone()),
            Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()),
            _ => None,
        });
        columns.push(combine);
        names.push(name);
    }
    if distinct && columns.iter().any(|c| *c != Combine::First) {
        return Err("uses DISTINCT with aggregates: not supported across shards".into());
    }
    let named = |wanted: &str| {
        names
            .iter()
            .position(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(wanted)))
    };
    let keys: Vec<usize> = if distinct {
        (0..columns.len()).collect()
    } else {
        let mut keys = Vec::with_capacity(group_by.len());
        for g in group_by {
            let at = match g {
                Expr::Identifier(id) => named(&id.value),
                Expr::CompoundIdentifier(parts) => parts.last().and_then(|id| named(&id.value)),
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n.parse::<usize>().ok().and_then(|p| p.checked_sub(1)),
                    _ => None,
                },
                _ => None,
            };
            match at {
                Some(i) if i < columns.len() && columns[i] == Combine::First => keys.push(i),
                _ => {
                    return Err(format!(
                        "groups by {g}, which is not a selected column: select it"
                    ))
                }
            }
        }
        keys
    };
    Ok(Some(GroupSpec {
        columns,
        sorted_by_key: !group_by.is_empty(),
        keys,
    }))
}

/// Whether expression text calls an aggregate function.
fn contains_aggregate(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    AGGREGATES.iter().any(|a| {
        lower.match_indices(a).any(|(i, _)| {
            let starts_word = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
            starts_word && lower[i + a.len()..].trim_start().starts_with('(')
        })
    })
}

/// The ORDER BY terms and LIMIT of a multi-shard read, and the statement the shards run.
pub(super) fn merge_spec(
    q: &sqlparser::ast::Query,
    sql: &str,
    shards: Vec<usize>,
    group: Option<GroupSpec>,
) -> Result<MergeSpec, String> {
    use sqlparser::ast::{LimitClause, OrderByKind, OrderBySort};
    let mut order = Vec::new();
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(exprs) = &ob.kind else {
            return Err("ORDER BY ALL is not supported".into());
        };
        for e in exprs {
            if e.options.nulls_first.is_some() {
                return Err("NULLS FIRST/LAST is not supported".into());
            }
            let desc = match &e.options.sort {
                None | Some(OrderBySort::Asc) => false,
                Some(OrderBySort::Desc) => true,
                Some(OrderBySort::Using(_)) => {
                    return Err("ORDER BY ... USING is not supported".into())
                }
            };
            let column = match &e.expr {
                Expr::Identifier(id) => ColumnRef::Name(id.value.clone()),
                Expr::CompoundIdentifier(parts) => match parts.last() {
                    Some(id) => ColumnRef::Name(id.value.clone()),
                    None => return Err("an empty ORDER BY name".into()),
                },
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => match n.parse::<usize>() {
                        Ok(p) if p >= 1 => ColumnRef::Position(p - 1),
                        _ => return Err(format!("ORDER BY {n}: not a column position")),
                    },
                    _ => return Err("ORDER BY a constant".into()),
                },
                other => {
                    return Err(format!(
                        "this SELECT reads several shards and orders by the expression {other}: select it with an alias and order by the alias"
                    ))
                }
            };
            order.push(OrderKey { column, desc });
        }
    }
    let number = |e: &Expr| -> Result<u64, String> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<u64>().map_err(|_| format!("LIMIT {n}")),
                _ => Err("LIMIT takes literal numbers here".into()),
            },
            _ => Err("LIMIT takes literal numbers on a multi-shard read".into()),
        }
    };
    let (offset, limit) = match &q.limit_clause {
        None => (0, None),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err("LIMIT BY is not supported".into());
            }
            let off = match offset {
                Some(o) => number(&o.value)?,
                None => 0,
            };
            let lim = match limit {
                Some(l) => Some(number(l)?),
                None => None,
            };
            (off, lim)
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
            (number(offset)?, Some(number(limit)?))
        }
    };
    let rewrite_failed =
        || "the LIMIT clause of this multi-shard read could not be rewritten".to_string();
    // A group's rows may sit beyond any one shard's first rows: grouped reads fetch every
    // group and limit after merging.
    let grouped = group
        .as_ref()
        .is_some_and(|g| g.columns.iter().any(|c| *c != Combine::First) || g.sorted_by_key);
    let shard_sql = match (offset, limit) {
        (_, Some(_)) if grouped => rewrite_limit(sql, None).ok_or_else(rewrite_failed)?,
        (0, _) | (_, None) => sql.to_string(),
        (off, Some(n)) => {
            rewrite_limit(sql, Some(off.saturating_add(n))).ok_or_else(rewrite_failed)?
        }
    };
    if offset > 0 && limit.is_none() {
        return Err("OFFSET without LIMIT on a multi-shard read is not supported".into());
    }
    Ok(MergeSpec {
        shards,
        sql: shard_sql,
        order,
        offset,
        limit,
        group,
    })
}

/// `sql` with its last top-level LIMIT clause replaced by `LIMIT n` (the shards must each
/// return the first `offset + count` rows; the proxy skips the offset after merging), or
/// removed (`None`).
fn rewrite_limit(sql: &str, n: Option<u64>) -> Option<String> {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let mut depth = 0i32;
    let mut limit_at = None;
    for (i, t) in tokens.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w) if w.keyword == Keyword::LIMIT && depth == 0 => limit_at = Some(i),
            _ => {}
        }
    }
    let start = limit_at?;
    // The clause: numbers, a comma and OFFSET, with whitespace between.
    let mut end = start;
    for (i, t) in tokens.iter().enumerate().skip(start + 1) {
        match &t.token {
            Token::Whitespace(_) => {}
            Token::Number(..) | Token::Comma => end = i,
            Token::Word(w) if w.keyword == Keyword::OFFSET => end = i,
            _ => break,
        }
    }
    let from = byte_offset(sql, tokens[start].span.start)?;
    let to = byte_offset(sql, tokens[end].span.end)?;
    let clause = n.map(|n| format!("LIMIT {n}")).unwrap_or_default();
    Some(format!("{}{clause}{}", &sql[..from], &sql[to..]))
}
