//! Which shards of a sharded keyspace a statement touches, read from its parsed form.
//!
//! Pure: the caller gives the statement, the keyspace's table rules and a function from a
//! key value to its shard. Statements whose shard key equalities put every sharded table on
//! one shard run there unchanged; DDL and reference-table writes run on every shard; reads
//! of reference tables alone run on any one. Everything else is refused with a message that
//! says what is missing (scatter-gather and split statements come next).

use std::collections::BTreeSet;

use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, Insert, JoinConstraint, JoinOperator, ObjectName, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins, UnaryOperator, Value,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::shardmap::ring::KeyValue;
use crate::shardmap::TableRule;

/// Where a statement on a sharded keyspace runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardPlan {
    /// This shard (index in the keyspace's shard list).
    One(usize),
    /// Every shard's primary, the same statement (DDL, reference-table writes).
    All,
    /// Any one shard: only reference tables, or no table at all.
    Any,
    /// A prepared statement whose shard is the one of its parameter (0-based) at execute.
    Param(usize),
    /// A read on these shards (indexes, ascending) whose results are the concatenation of
    /// theirs: no ORDER BY, LIMIT, grouping, DISTINCT or aggregate to merge.
    Scatter(Vec<usize>),
    /// An UPDATE or DELETE on these shards' primaries, each changing its own rows; the
    /// client gets one OK with the affected rows summed.
    ScatterWrite(Vec<usize>),
    /// A multi-row INSERT split by row: per shard, the statement with only that shard's
    /// rows; the client gets one OK with the affected rows summed.
    SplitInsert(Vec<(usize, String)>),
    /// A read on several shards whose rows are merged in order and trimmed to a LIMIT.
    MergeSorted(MergeSpec),
    /// An INSERT without its shard key into a table whose key comes from a sequence: the
    /// caller takes `rows` ids from `sequence`, adds them with [`with_generated_keys`] and
    /// plans the result.
    Sequence {
        sequence: String,
        key: String,
        rows: usize,
    },
    /// Not supported (yet): the client gets ERR 1105 with this text.
    Reject(String),
}

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

/// What the planner knows about the keyspace.
pub struct ShardContext<'a> {
    pub rule: &'a dyn Fn(&str) -> Option<&'a TableRule>,
    pub shard_of: &'a dyn Fn(&KeyValue<'_>) -> usize,
    pub allow_scatter_writes: bool,
    /// Shards in the keyspace (a read with no key visits them all).
    pub shard_count: usize,
}

fn reject(msg: impl Into<String>) -> ShardPlan {
    ShardPlan::Reject(format!("shardgate: {}", msg.into()))
}

/// Plans one statement (`sql` must hold exactly one).
pub fn plan(sql: &str, cx: &ShardContext<'_>) -> ShardPlan {
    let statements = match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(s) => s,
        Err(e) => {
            return reject(format!(
                "cannot route this statement on a sharded keyspace (not understood: {e})"
            ))
        }
    };
    let [statement] = statements.as_slice() else {
        return reject("several statements in one query are not supported on a sharded keyspace");
    };
    let own_select = usize::from(matches!(statement, Statement::Query(_)));
    let Some(tokens) = scan(sql) else {
        return reject("cannot route this statement on a sharded keyspace (not understood)");
    };
    if tokens.selects > own_select {
        return reject("subqueries, UNION and WITH are not supported on a sharded keyspace yet");
    }
    PLACEHOLDERS.with(|p| *p.borrow_mut() = tokens.placeholders);
    match statement {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(s) => {
                let mut scope = Scope::default();
                for twj in &s.from {
                    if let Err(e) = scope.add_from(twj, cx) {
                        return reject(e);
                    }
                }
                if let Some(w) = &s.selection {
                    scope.add_condition(w);
                }
                let plan = scope.decide_read(cx, None, cx.shard_count);
                let ShardPlan::Scatter(shards) = plan else {
                    return plan;
                };
                // Several shards: what their results need to become one.
                let grouping = match group_spec(q, s, tokens.aggregates) {
                    Ok(g) => g,
                    Err(e) => {
                        return reject(format!(
                            "this SELECT needs rows from {} shards and {e}",
                            shards.len()
                        ))
                    }
                };
                if grouping.is_none() && q.order_by.is_none() && q.limit_clause.is_none() {
                    return ShardPlan::Scatter(shards);
                }
                match merge_spec(q, sql, shards, grouping) {
                    Ok(spec) => ShardPlan::MergeSorted(spec),
                    Err(e) => reject(e),
                }
            }
            _ => reject(
                "UNION and other compound queries are not supported on a sharded keyspace yet",
            ),
        },
        Statement::Insert(ins) => plan_insert(ins, sql, cx),
        Statement::Update(u) => {
            let mut scope = Scope::default();
            if let Err(e) = scope.add_from(&u.table, cx) {
                return reject(e);
            }
            if u.from.is_some() {
                return reject("UPDATE ... FROM is not supported on a sharded keyspace");
            }
            for a in &u.assignments {
                let target = a.target.to_string();
                let column = target.rsplit('.').next().unwrap_or(&target);
                if scope.is_shard_key_column(column) {
                    return reject(format!(
                        "UPDATE may not change shard key column {column}: the row would belong to another shard (delete and insert it instead)"
                    ));
                }
            }
            if let Some(w) = &u.selection {
                scope.add_condition(w);
            }
            scope.decide_write(cx, "UPDATE")
        }
        Statement::Delete(d) => {
            let mut scope = Scope::default();
            let from = match &d.from {
                FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
            };
            for twj in from {
                if let Err(e) = scope.add_from(twj, cx) {
                    return reject(e);
                }
            }
            if d.using.is_some() || !d.tables.is_empty() {
                return reject("multi-table DELETE is not supported on a sharded keyspace");
            }
            if let Some(w) = &d.selection {
                scope.add_condition(w);
            }
            scope.decide_write(cx, "DELETE")
        }
        Statement::CreateTable(_)
        | Statement::AlterTable(_)
        | Statement::CreateIndex(_)
        | Statement::Drop { .. }
        | Statement::Truncate(_)
        | Statement::CreateView(_) => ShardPlan::All,
        // Session and server statements that read no sharded rows: any shard answers.
        Statement::Set(_)
        | Statement::Use(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowFunctions { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ExplainTable { .. }
        | Statement::Explain { .. }
        | Statement::Kill { .. }
        | Statement::Flush { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::StartTransaction { .. } => ShardPlan::Any,
        other => reject(format!(
            "{} statements are not supported on a sharded keyspace yet",
            statement_name(other)
        )),
    }
}

/// The statement's leading keyword(s), for messages.
fn statement_name(s: &Statement) -> String {
    let text = s.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

/// What the planner needs from the token stream.
struct Scanned {
    /// SELECT keywords outside strings and comments: subqueries, CTEs and UNIONs can read
    /// sharded tables from places the planner does not look.
    selects: usize,
    /// Where each `?` is, in order: a placeholder's number is its position here.
    placeholders: Vec<(u64, u64)>,
    /// An aggregate function is called somewhere (its per-shard results would need merging).
    aggregates: bool,
}

fn scan(sql: &str) -> Option<Scanned> {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let mut out = Scanned {
        selects: 0,
        placeholders: Vec::new(),
        aggregates: false,
    };
    let significant: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    out.aggregates = significant.windows(2).any(|w| {
        matches!((w[0], w[1]), (Token::Word(word), Token::LParen) if AGGREGATES.iter().any(|a| word.value.eq_ignore_ascii_case(a)))
    });
    for t in &tokens {
        match &t.token {
            Token::Word(w) if w.keyword == Keyword::SELECT => out.selects += 1,
            Token::Placeholder(_) => out
                .placeholders
                .push((t.span.start.line, t.span.start.column)),
            _ => {}
        }
    }
    Some(out)
}

/// Functions whose per-shard results cannot simply be concatenated.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "group_concat",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bit_and",
    "bit_or",
    "bit_xor",
    "json_arrayagg",
    "json_objectagg",
];

thread_local! {
    /// The placeholders of the statement being planned (planning is synchronous).
    static PLACEHOLDERS: std::cell::RefCell<Vec<(u64, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The number of the placeholder at `span`.
fn placeholder_number(span: &sqlparser::tokenizer::Span) -> Option<usize> {
    let at = (span.start.line, span.start.column);
    PLACEHOLDERS.with(|p| p.borrow().iter().position(|x| *x == at))
}

fn plan_insert(ins: &Insert, sql: &str, cx: &ShardContext<'_>) -> ShardPlan {
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
    let Some(pos) = ins
        .columns
        .iter()
        .position(|c| c.to_string().trim_matches('`').eq_ignore_ascii_case(key))
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
    let Some(parts) = values_rows(sql) else {
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
            let rows: Vec<&str> = parts
                .rows
                .iter()
                .zip(&row_shards)
                .filter(|(_, s)| **s == shard)
                .map(|(r, _)| &sql[r.clone()])
                .collect();
            let text = format!(
                "{}{}{}",
                &sql[..parts.head_end],
                rows.join(", "),
                &sql[parts.tail_start..]
            );
            (shard, text)
        })
        .collect();
    ShardPlan::SplitInsert(statements)
}

/// How the rows of several shards combine for GROUP BY, aggregates or DISTINCT; `None` when
/// they need not (plain rows). `Err` says what cannot be merged (yet).
fn group_spec(
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
fn merge_spec(
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

/// A tokenizer location (1-based line and character column) as a byte offset.
fn byte_offset(sql: &str, at: sqlparser::tokenizer::Location) -> Option<usize> {
    let line_start = if at.line <= 1 {
        0
    } else {
        sql.match_indices('\n')
            .nth(usize::try_from(at.line).ok()? - 2)
            .map(|(i, _)| i + 1)?
    };
    let col = usize::try_from(at.column).ok()?.checked_sub(1)?;
    let rest = &sql[line_start..];
    match rest.char_indices().nth(col) {
        Some((i, _)) => Some(line_start + i),
        None if rest.chars().count() == col => Some(line_start + rest.len()),
        None => None,
    }
}

/// The INSERT `sql` with column `key` and one generated id per row added: first in the
/// column list and first in each row. `None` if its text cannot be taken apart.
pub fn with_generated_keys(sql: &str, key: &str, ids: &[i64]) -> Option<String> {
    let parts = values_rows(sql)?;
    if parts.rows.len() != ids.len() {
        return None;
    }
    let head = &sql[..parts.head_end];
    let open = first_paren(head)?;
    let mut out = String::with_capacity(sql.len() + ids.len() * 12);
    out.push_str(&head[..=open]);
    out.push_str(&format!("`{}`, ", key.replace('`', "``")));
    out.push_str(&head[open + 1..]);
    let mut at = parts.head_end;
    for (row, id) in parts.rows.iter().zip(ids) {
        out.push_str(&sql[at..=row.start]);
        out.push_str(&format!("{id}, "));
        at = row.start + 1;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// The first `(` outside quotes and comments.
fn first_paren(text: &str) -> Option<usize> {
    let b = text.as_bytes();
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
                i = text[i + 2..].find("*/").map(|e| i + 2 + e + 1)?;
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
fn values_rows(sql: &str) -> Option<ValuesRows> {
    let b = sql.as_bytes();
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
                i = sql[i + 2..].find("*/").map(|e| i + 2 + e + 1)?;
            }
            b'#' => i = sql[i..].find('\n').map(|e| i + e)?,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map(|e| i + e).unwrap_or(b.len());
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
                let word = &sql[i..end];
                if word.eq_ignore_ascii_case("values") || word.eq_ignore_ascii_case("value") {
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

/// An owned key literal.
enum OwnedKey {
    Number(String),
    Text(String),
}

impl OwnedKey {
    fn as_key(&self) -> KeyValue<'_> {
        match self {
            OwnedKey::Number(n) => KeyValue::from_number_text(n.as_bytes()),
            OwnedKey::Text(s) => KeyValue::from_string_content(s.as_bytes()),
        }
    }
}

enum Key {
    Value(OwnedKey),
    /// A prepared statement's parameter, by number.
    Param(usize),
    /// `= NULL` matches no row.
    Null,
}

fn key_value(e: &Expr) -> Option<Key> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(Key::Value(OwnedKey::Number(n.clone()))),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                Some(Key::Value(OwnedKey::Text(s.clone())))
            }
            Value::Null => Some(Key::Null),
            Value::Placeholder(_) => placeholder_number(&v.span).map(Key::Param),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Some(Key::Value(OwnedKey::Number(format!("-{n}")))),
                _ => None,
            },
            _ => None,
        },
        Expr::Nested(inner) => key_value(inner),
        _ => None,
    }
}

fn table_name(name: &ObjectName) -> String {
    let s = name.to_string();
    let last = s.rsplit('.').next().unwrap_or(&s);
    last.trim_matches('`').to_string()
}

/// A sharded table in a statement: how it is referred to and the key values it is bound to.
struct Bound {
    table: String,
    alias: Option<String>,
    key: String,
    values: Option<Vec<OwnedKey>>,
    /// Bound to a prepared statement's parameter instead of literals.
    param: Option<usize>,
    /// Matches nothing (`key = NULL`).
    empty: bool,
}

#[derive(Default)]
struct Scope {
    sharded: Vec<Bound>,
    reference_only: bool,
    any_table: bool,
    /// Equalities between two shard-key columns: (table index, table index).
    joins: Vec<(usize, usize)>,
}

impl Scope {
    fn add_from(&mut self, twj: &TableWithJoins, cx: &ShardContext<'_>) -> Result<(), String> {
        self.add_factor(&twj.relation, cx)?;
        for j in &twj.joins {
            self.add_factor(&j.relation, cx)?;
            let constraint = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::CrossJoin(c) => c,
                _ => return Err("this kind of JOIN is not supported on a sharded keyspace".into()),
            };
            if let JoinConstraint::On(e) = constraint {
                self.add_condition(e);
            }
        }
        Ok(())
    }

    fn add_factor(&mut self, f: &TableFactor, cx: &ShardContext<'_>) -> Result<(), String> {
        let TableFactor::Table { name, alias, .. } = f else {
            return Err(
                "subqueries and derived tables are not supported on a sharded keyspace yet".into(),
            );
        };
        let table = table_name(name);
        self.any_table = true;
        let Some(rule) = (cx.rule)(&table) else {
            return Err(format!(
                "table {table} is not in the shard map: say in the map whether it is sharded (shard_key) or a reference table"
            ));
        };
        if rule.reference {
            self.reference_only = self.sharded.is_empty();
            return Ok(());
        }
        let Some(key) = rule.shard_key.clone() else {
            return Err(format!("table {table} has no shard key in the shard map"));
        };
        self.reference_only = false;
        self.sharded.push(Bound {
            table,
            alias: alias.as_ref().map(|a| a.name.value.clone()),
            key,
            values: None,
            param: None,
            empty: false,
        });
        Ok(())
    }

    fn is_shard_key_column(&self, column: &str) -> bool {
        let column = column.trim_matches('`');
        self.sharded
            .iter()
            .any(|b| b.key.eq_ignore_ascii_case(column))
    }

    /// The sharded table a column reference means, if it is that table's shard key.
    fn key_column(&self, e: &Expr) -> Option<usize> {
        let (qualifier, column) = match e {
            Expr::Identifier(id) => (None, id.value.as_str()),
            Expr::CompoundIdentifier(parts) => {
                let n = parts.len();
                if n < 2 {
                    return None;
                }
                (
                    Some(parts[n - 2].value.as_str()),
                    parts[n - 1].value.as_str(),
                )
            }
            Expr::Nested(inner) => return self.key_column(inner),
            _ => return None,
        };
        let matches: Vec<usize> = self
            .sharded
            .iter()
            .enumerate()
            .filter(|(_, b)| b.key.eq_ignore_ascii_case(column))
            .filter(|(_, b)| match qualifier {
                None => true,
                Some(q) => {
                    b.alias
                        .as_deref()
                        .is_some_and(|a| a.eq_ignore_ascii_case(q))
                        || (b.alias.is_none() && b.table.eq_ignore_ascii_case(q))
                }
            })
            .map(|(i, _)| i)
            .collect();
        match matches.as_slice() {
            [i] => Some(*i),
            _ => None, // ambiguous or not a key: no routing information
        }
    }

    /// Records what a WHERE or ON condition says about shard keys: only top-level AND terms
    /// count (an OR could reach any shard).
    fn add_condition(&mut self, e: &Expr) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                self.add_condition(left);
                self.add_condition(right);
            }
            Expr::Nested(inner) => self.add_condition(inner),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let (l, r) = (self.key_column(left), self.key_column(right));
                match (l, r) {
                    (Some(a), Some(b)) if a != b => self.joins.push((a, b)),
                    (Some(t), None) => self.bind(t, key_value(right)),
                    (None, Some(t)) => self.bind(t, key_value(left)),
                    _ => {}
                }
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } => {
                if let Some(t) = self.key_column(expr) {
                    let mut values = Vec::new();
                    for item in list {
                        match key_value(item) {
                            Some(Key::Value(v)) => values.push(v),
                            Some(Key::Null) => {}
                            // A parameter in a list: no one shard known at prepare time.
                            Some(Key::Param(_)) | None => return,
                        }
                    }
                    if values.is_empty() {
                        self.sharded[t].empty = true;
                    } else if self.sharded[t].values.is_none() {
                        self.sharded[t].values = Some(values);
                    }
                }
            }
            _ => {}
        }
    }

    fn bind(&mut self, t: usize, key: Option<Key>) {
        let b = &mut self.sharded[t];
        if b.values.is_some() || b.param.is_some() {
            return;
        }
        match key {
            Some(Key::Value(v)) => b.values = Some(vec![v]),
            Some(Key::Param(i)) => b.param = Some(i),
            Some(Key::Null) => b.empty = true,
            None => {}
        }
    }

    /// The one parameter every sharded table is bound to (directly or by a key join), if
    /// the bindings are parameters; `Err` when they mix parameters with literals or several
    /// parameters.
    fn param(&self) -> Result<Option<usize>, String> {
        let mut params: Vec<usize> = self.sharded.iter().filter_map(|b| b.param).collect();
        if params.is_empty() {
            return Ok(None);
        }
        params.sort_unstable();
        params.dedup();
        let bound = |i: usize| {
            self.sharded[i].param.is_some()
                || self.joins.iter().any(|&(a, b)| {
                    (a == i && self.sharded[b].param.is_some())
                        || (b == i && self.sharded[a].param.is_some())
                })
        };
        let literals = self.sharded.iter().any(|b| b.values.is_some() || b.empty);
        match params.as_slice() {
            [p] if !literals && (0..self.sharded.len()).all(bound) => Ok(Some(*p)),
            _ => Err("a prepared statement whose shard keys come from several parameters or from parameters and literals is not supported yet".into()),
        }
    }

    /// Shards each sharded table is bound to, after spreading bindings over key equalities.
    fn shards(&self, cx: &ShardContext<'_>) -> Result<BTreeSet<usize>, String> {
        let n = self.sharded.len();
        let mut sets: Vec<Option<BTreeSet<usize>>> = self
            .sharded
            .iter()
            .map(|b| {
                if b.empty {
                    Some(BTreeSet::new())
                } else {
                    b.values
                        .as_ref()
                        .map(|vs| vs.iter().map(|v| (cx.shard_of)(&v.as_key())).collect())
                }
            })
            .collect();
        // Tables joined on their shard keys live on the same shards.
        for _ in 0..n {
            for &(a, b) in &self.joins {
                if sets[a].is_none() {
                    sets[a] = sets[b].clone();
                }
                if sets[b].is_none() {
                    sets[b] = sets[a].clone();
                }
            }
        }
        let mut all = BTreeSet::new();
        for (i, s) in sets.into_iter().enumerate() {
            match s {
                Some(s) => all.extend(s),
                None => {
                    let b = &self.sharded[i];
                    return Err(format!(
                        "no value for shard key {}.{} in WHERE: statements that must visit every shard (scatter-gather) are not supported yet",
                        b.table, b.key
                    ));
                }
            }
        }
        Ok(all)
    }

    /// A read: one shard when its keys say so, else every shard it needs, if its results
    /// merge by concatenation (`merge` names what would need more).
    fn decide_read(&self, cx: &ShardContext<'_>, merge: Option<&str>, shards: usize) -> ShardPlan {
        if self.sharded.is_empty() || self.param().is_err() || matches!(self.param(), Ok(Some(_))) {
            return self.decide(cx, "SELECT");
        }
        let needed: Vec<usize> = match self.shards(cx) {
            Ok(s) if s.len() <= 1 => return self.decide(cx, "SELECT"),
            Ok(s) => s.into_iter().collect(),
            Err(_) => (0..shards).collect(),
        };
        match merge {
            None => ShardPlan::Scatter(needed),
            Some(what) => reject(format!(
                "this SELECT needs rows from {} shards and has {what}: merging such results is not supported yet (reads without ORDER BY, LIMIT, GROUP BY, DISTINCT or aggregates are)",
                needed.len()
            )),
        }
    }

    fn decide(&self, cx: &ShardContext<'_>, what: &str) -> ShardPlan {
        if self.sharded.is_empty() {
            return ShardPlan::Any;
        }
        match self.param() {
            Ok(Some(p)) => return ShardPlan::Param(p),
            Ok(None) => {}
            Err(e) => return reject(e),
        }
        match self.shards(cx) {
            Err(e) => reject(e),
            Ok(s) => match s.len() {
                0 => ShardPlan::Any, // `key = NULL` or `IN (NULL)`: no row anywhere
                1 => ShardPlan::One(s.into_iter().next().unwrap_or(0)),
                n => reject(format!(
                    "this {what} needs rows from {n} shards (an IN list or a join spanning shards); multi-shard statements are not supported yet"
                )),
            },
        }
    }

    fn decide_write(&self, cx: &ShardContext<'_>, what: &str) -> ShardPlan {
        if self.sharded.is_empty() {
            return if self.any_table && self.reference_only {
                ShardPlan::All
            } else {
                ShardPlan::Any
            };
        }
        match self.param() {
            Ok(Some(p)) => return ShardPlan::Param(p),
            Ok(None) => {}
            Err(e) => return reject(e),
        }
        match self.shards(cx) {
            Err(_) if cx.allow_scatter_writes => {
                ShardPlan::ScatterWrite((0..cx.shard_count).collect())
            }
            Err(_) => {
                let b = &self.sharded[0];
                reject(format!(
                    "{what} on sharded table {} needs its shard key {} in WHERE (or allow_scatter_writes in the keyspace)",
                    b.table, b.key
                ))
            }
            Ok(s) => match s.len() {
                0 => ShardPlan::Any,
                1 => ShardPlan::One(s.into_iter().next().unwrap_or(0)),
                _ => ShardPlan::ScatterWrite(s.into_iter().collect()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shardmap::ring::key_hash;

    fn rules() -> std::collections::BTreeMap<String, TableRule> {
        let mut m = std::collections::BTreeMap::new();
        let sharded = |k: &str| TableRule {
            shard_key: Some(k.into()),
            ..TableRule::default()
        };
        m.insert("users".to_string(), sharded("id"));
        m.insert("orders".to_string(), sharded("user_id"));
        m.insert(
            "countries".to_string(),
            TableRule {
                reference: true,
                ..TableRule::default()
            },
        );
        m
    }

    fn run(sql: &str) -> ShardPlan {
        let r = rules();
        let rule = |t: &str| r.get(t);
        // Two shards by the hash's low bit: enough to tell shards apart in tests.
        let shard_of = |k: &KeyValue<'_>| (key_hash(k) & 1) as usize;
        let cx = ShardContext {
            rule: &rule,
            shard_of: &shard_of,
            allow_scatter_writes: false,
            shard_count: 2,
        };
        plan(sql, &cx)
    }

    fn shard(k: &str) -> usize {
        (key_hash(&KeyValue::from_number_text(k.as_bytes())) & 1) as usize
    }

    #[test]
    fn point_statements_go_to_their_keys_shard() {
        let s = ShardPlan::One(shard("42"));
        assert_eq!(run("SELECT * FROM users WHERE id = 42"), s);
        assert_eq!(run("SELECT * FROM users WHERE id = '42'"), s);
        assert_eq!(
            run("SELECT * FROM users u WHERE 42 = u.id AND name = 'x'"),
            s
        );
        assert_eq!(run("UPDATE users SET name = 'y' WHERE id = 42"), s);
        assert_eq!(run("DELETE FROM users WHERE id = 42"), s);
        assert_eq!(run("INSERT INTO users (id, name) VALUES (42, 'a')"), s);
        assert_eq!(
            run("INSERT INTO users (id, name) VALUES (42, 'a') ON DUPLICATE KEY UPDATE name = 'b'"),
            s
        );
        assert_eq!(run("REPLACE INTO users (id, name) VALUES (42, 'a')"), s);
        assert_eq!(
            run("SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 42"),
            s
        );
        assert_eq!(
            run("SELECT * FROM users u JOIN countries c ON c.code = u.cc WHERE u.id = 42"),
            s
        );
    }

    #[test]
    fn reference_tables_and_ddl() {
        assert_eq!(run("SELECT * FROM countries"), ShardPlan::Any);
        assert_eq!(run("SELECT 1"), ShardPlan::Any);
        assert_eq!(
            run("INSERT INTO countries (code) VALUES ('FR')"),
            ShardPlan::All
        );
        assert_eq!(run("UPDATE countries SET name = 'x'"), ShardPlan::All);
        assert_eq!(
            run("CREATE TABLE users (id INT PRIMARY KEY)"),
            ShardPlan::All
        );
        assert_eq!(run("ALTER TABLE users ADD COLUMN x INT"), ShardPlan::All);
        assert_eq!(run("DROP TABLE users"), ShardPlan::All);
        assert_eq!(run("SELECT * FROM users WHERE id = NULL"), ShardPlan::Any);
    }

    #[test]
    fn what_is_not_supported_is_refused_with_the_reason() {
        let refused = |sql: &str, needle: &str| match run(sql) {
            ShardPlan::Reject(m) => assert!(m.contains(needle), "{sql}: {m}"),
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(run("SELECT * FROM users"), ShardPlan::Scatter(vec![0, 1]));
        assert_eq!(
            run("SELECT name FROM users WHERE id = 1 OR id = 2"),
            ShardPlan::Scatter(vec![0, 1])
        );
        assert_eq!(
            run("SELECT id, name AS n FROM users ORDER BY n DESC, 1 LIMIT 5, 10"),
            ShardPlan::MergeSorted(MergeSpec {
                shards: vec![0, 1],
                sql: "SELECT id, name AS n FROM users ORDER BY n DESC, 1 LIMIT 15".into(),
                order: vec![
                    OrderKey {
                        column: ColumnRef::Name("n".into()),
                        desc: true
                    },
                    OrderKey {
                        column: ColumnRef::Position(0),
                        desc: false
                    }
                ],
                offset: 5,
                limit: Some(10),
                group: None,
            })
        );
        match run("SELECT name, COUNT(*) AS c, SUM(id), MAX(id) FROM users GROUP BY name ORDER BY c DESC LIMIT 2") {
            ShardPlan::MergeSorted(spec) => {
                assert_eq!(
                    spec.sql,
                    "SELECT name, COUNT(*) AS c, SUM(id), MAX(id) FROM users GROUP BY name ORDER BY c DESC "
                );
                let g = spec.group.expect("grouped");
                assert_eq!(
                    g.columns,
                    vec![Combine::First, Combine::Count, Combine::Sum, Combine::Max]
                );
                assert_eq!((g.keys, g.sorted_by_key), (vec![0], true));
            }
            other => panic!("{other:?}"),
        }
        match run("SELECT DISTINCT name FROM users LIMIT 3") {
            ShardPlan::MergeSorted(spec) => {
                assert_eq!(spec.sql, "SELECT DISTINCT name FROM users LIMIT 3");
                assert_eq!(spec.group.map(|g| g.keys), Some(vec![0]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run("SELECT MIN(id) FROM users"),
            ShardPlan::MergeSorted(_)
        ));
        // One shard runs anything itself.
        assert_eq!(
            run("SELECT AVG(id) FROM users WHERE id = 42 GROUP BY name HAVING COUNT(*) > 1"),
            ShardPlan::One(shard("42"))
        );
        refused("SELECT AVG(id) FROM users", "AVG");
        refused("SELECT COUNT(DISTINCT name) FROM users", "DISTINCT");
        refused(
            "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1",
            "HAVING",
        );
        refused("SELECT COUNT(*) + 1 FROM users", "inside an expression");
        refused(
            "SELECT id, COUNT(*) FROM users GROUP BY name",
            "not a selected column",
        );

        match run("SELECT id FROM users WHERE name = 'é'\nLIMIT 2 OFFSET 3") {
            ShardPlan::MergeSorted(spec) => {
                assert_eq!(spec.sql, "SELECT id FROM users WHERE name = 'é'\nLIMIT 5");
                assert_eq!((spec.offset, spec.limit, spec.order.len()), (3, Some(2), 0));
            }
            other => panic!("{other:?}"),
        }
        refused(
            "SELECT * FROM users ORDER BY id + 1",
            "select it with an alias",
        );
        refused(
            "UPDATE users SET name = 'x' WHERE name = 'y'",
            "needs its shard key id",
        );
        refused(
            "UPDATE users SET id = 7 WHERE id = 42",
            "may not change shard key",
        );
        refused(
            "INSERT INTO users (name) VALUES ('a')",
            "must name its shard key column id",
        );
        assert_eq!(
            with_generated_keys(
                "INSERT INTO `t` (name, n) VALUES ('a(', 1), ('b', 2) ON DUPLICATE KEY UPDATE n = 3",
                "id",
                &[10, 11]
            )
            .as_deref(),
            Some("INSERT INTO `t` (`id`, name, n) VALUES (10, 'a(', 1), (11, 'b', 2) ON DUPLICATE KEY UPDATE n = 3")
        );
        assert_eq!(
            run("INSERT INTO users (name, id) VALUES (?, ?)"),
            ShardPlan::Param(1)
        );
        assert_eq!(run("SELECT c FROM users WHERE id = ?"), ShardPlan::Param(0));
        assert_eq!(
            run("SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.name = ? AND u.id = ?"),
            ShardPlan::Param(1)
        );
        assert_eq!(
            run("UPDATE users SET name = ? WHERE id = ?"),
            ShardPlan::Param(1)
        );
        refused(
            "SELECT * FROM users u JOIN orders o ON 1 = 1 WHERE u.id = ? AND o.user_id = 5",
            "several parameters",
        );
        assert_eq!(
            run("SELECT * FROM users WHERE id IN (?, ?)"),
            ShardPlan::Scatter(vec![0, 1])
        );
        refused(
            "INSERT INTO users (id) VALUES (NULL)",
            "literal value or a parameter",
        );
        refused("SELECT * FROM nowhere WHERE id = 1", "not in the shard map");
        refused("SELECT * FROM (SELECT 1) x", "subqueries");
        refused("SELECT (SELECT COUNT(*) FROM users)", "subqueries");
        refused(
            "DELETE FROM users WHERE id IN (SELECT id FROM orders)",
            "subqueries",
        );
        refused("CALL p()", "CALL");
        assert_eq!(run("SELECT 'select' FROM countries"), ShardPlan::Any);
        refused("INSERT INTO users (id) SELECT 1", "not supported");
        // Two keys that land on different shards.
        let (a, b) = (1..100)
            .map(|i| i.to_string())
            .fold((None, None), |(a, b), k| match shard(&k) {
                0 if a.is_none() => (Some(k), b),
                1 if b.is_none() => (a, Some(k)),
                _ => (a, b),
            });
        let (a, b) = (a.expect("a key on 0"), b.expect("a key on 1"));
        assert_eq!(
            run(&format!("SELECT * FROM users WHERE id IN ({a}, {b})")),
            ShardPlan::Scatter(vec![0, 1])
        );
        assert_eq!(
            run(&format!(
                "INSERT INTO users (id, name) VALUES ({a}, 'x,(y)'), ({b}, 'it''s'), ({a}, \"q\") ON DUPLICATE KEY UPDATE name = 'z'"
            )),
            ShardPlan::SplitInsert(vec![
                (
                    0,
                    format!("INSERT INTO users (id, name) VALUES ({a}, 'x,(y)'), ({a}, \"q\") ON DUPLICATE KEY UPDATE name = 'z'")
                ),
                (
                    1,
                    format!("INSERT INTO users (id, name) VALUES ({b}, 'it''s') ON DUPLICATE KEY UPDATE name = 'z'")
                ),
            ])
        );
        assert_eq!(
            run(&format!("DELETE FROM users WHERE id IN ({a}, {b})")),
            ShardPlan::ScatterWrite(vec![0, 1])
        );
        assert_eq!(
            run(&format!("SELECT * FROM users WHERE id IN ({a}, {a})")),
            ShardPlan::One(0)
        );
    }
}
