//! Multi-shard reads whose rows must be merged: ORDER BY and LIMIT (k-way merge, LIMIT pushed
//! down as offset + count), and GROUP BY, aggregates and DISTINCT (folded per group). AVG is
//! folded as SUM and COUNT, HAVING applied to the merged groups: the shards' statement carries
//! the hidden columns these need and no HAVING.

use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArguments,
    UnaryOperator, Value,
};
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
///
/// The shards' rows may carry hidden columns after the client's (`visible`) ones: what AVG,
/// HAVING and ORDER BY need that the select list does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// Per result column, hidden ones included.
    pub columns: Vec<Combine>,
    /// Result columns forming the group key; empty: all rows are one group.
    pub keys: Vec<usize>,
    /// Without ORDER BY the merged groups come out ordered by the key (GROUP BY sorts).
    pub sorted_by_key: bool,
    /// Columns the client sees (the select list); the rest are hidden.
    pub visible: usize,
    /// AVGs the proxy computes from folded sums and counts.
    pub avg: Vec<AvgColumn>,
    /// HAVING, evaluated on the merged groups (the shards run the statement without it);
    /// boxed, as every plan would otherwise carry its size.
    pub having: Option<Box<Predicate>>,
    /// With `COUNT(DISTINCT x)`: the hidden column holding `x`. The shards also group by `x`,
    /// so each of their rows is one (group, x) with `COUNT(DISTINCT x)` 1 (0 for NULL); the
    /// proxy folds rows by group and `x` first (a value found on several shards counts once),
    /// then by group, adding those ones.
    pub distinct_arg: Option<usize>,
}

/// An AVG across shards: the shards' own AVG at `at` (kept for its column definition) is
/// replaced by the folded SUM at `sum` divided by the folded COUNT at `count` (same argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgColumn {
    pub at: usize,
    pub sum: usize,
    pub count: usize,
}

/// A HAVING condition over result columns and literals, in SQL's three-valued logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
    Compare(Operand, CompareOp, Operand),
    IsNull {
        value: Operand,
        negated: bool,
    },
    /// `inner IS [NOT] TRUE | FALSE | UNKNOWN` (`is`: `Some(true)`, `Some(false)`, `None`).
    Is {
        inner: Box<Predicate>,
        is: Option<bool>,
        negated: bool,
    },
    Between {
        value: Operand,
        low: Operand,
        high: Operand,
        negated: bool,
    },
    In {
        value: Operand,
        list: Vec<Operand>,
        negated: bool,
    },
    /// A value used as a condition (`HAVING COUNT(*)`): true when it is a non-zero number.
    Value(Operand),
}

/// One side of a HAVING comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    /// A result column (possibly hidden), by index.
    Column(usize),
    /// A number literal as written, sign included: `-2.5`, `10`, `1e3` (exponent: a DOUBLE).
    Number(String),
    /// A string literal's content.
    Text(String),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    /// `<=>`: NULL-safe equality.
    NullSafeEq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
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
    /// `COUNT(DISTINCT x)`: 1 or 0 per (group, x) row, the same on every shard (kept once),
    /// then added up per group.
    CountDistinct,
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

/// What a grouped multi-shard read needs beyond the [`GroupSpec`]: how its SQL changes for
/// the shards and which ORDER BY terms name aggregates.
#[derive(Debug)]
pub(super) struct Grouping {
    spec: GroupSpec,
    /// Select items appended after the client's columns, as SQL.
    hidden: Vec<String>,
    /// Per ORDER BY term: the result column of an aggregate call it names.
    order: Vec<Option<usize>>,
    /// HAVING is evaluated by the proxy: the shards run the statement without it.
    strip_having: bool,
    /// An expression the shards also group by (the argument of `COUNT(DISTINCT ...)`).
    group_by_extra: Option<String>,
}

/// The aggregates the merge folds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agg {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
}

impl Agg {
    fn name(self) -> &'static str {
        match self {
            Agg::Count | Agg::CountDistinct => "COUNT",
            Agg::Sum => "SUM",
            Agg::Min => "MIN",
            Agg::Max => "MAX",
            Agg::Avg => "AVG",
        }
    }

    /// How shard values fold; an AVG's own value is replaced after folding.
    fn combine(self) -> Combine {
        match self {
            Agg::Count => Combine::Count,
            Agg::CountDistinct => Combine::CountDistinct,
            Agg::Sum => Combine::Sum,
            Agg::Min => Combine::Min,
            Agg::Max => Combine::Max,
            Agg::Avg => Combine::First,
        }
    }
}

/// An aggregate call, e.g. `SUM(o.total)`: the aggregate and its argument as SQL.
struct Call {
    agg: Agg,
    arg: String,
}

impl Call {
    fn sql(&self) -> String {
        match self.agg {
            Agg::CountDistinct => format!("COUNT(DISTINCT {})", self.arg),
            agg => format!("{}({})", agg.name(), self.arg),
        }
    }
}

/// The aggregate `f` calls, if it is one the merge can fold (`Ok(None)`: not an aggregate);
/// `Err` names an aggregate or form it cannot.
fn aggregate_call(f: &Function) -> Result<Option<Call>, String> {
    let name = f.name.to_string().to_ascii_lowercase();
    let agg = match name.as_str() {
        "count" => Agg::Count,
        "sum" => Agg::Sum,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "avg" => Agg::Avg,
        other if AGGREGATES.contains(&other) => {
            return Err(format!(
                "uses {}: not supported across shards",
                other.to_ascii_uppercase()
            ))
        }
        _ => return Ok(None),
    };
    let upper = agg.name();
    if f.over.is_some() {
        return Err(format!(
            "uses {upper}(...) OVER (...): window functions are not supported across shards"
        ));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(format!("calls {upper} without arguments"));
    };
    let distinct = list.duplicate_treatment == Some(DuplicateTreatment::Distinct);
    if distinct && agg != Agg::Count {
        return Err(format!(
            "uses {upper}(DISTINCT ...): not supported across shards (COUNT(DISTINCT ...) is)"
        ));
    }
    let agg = if distinct { Agg::CountDistinct } else { agg };
    let [FunctionArg::Unnamed(arg)] = list.args.as_slice() else {
        return Err(format!(
            "calls {upper} with a form of arguments not supported across shards"
        ));
    };
    if f.filter.is_some() || !f.within_group.is_empty() || !list.clauses.is_empty() {
        return Err(format!(
            "calls {upper} with clauses not supported across shards"
        ));
    }
    let arg = arg.to_string();
    if agg == Agg::Avg && divides(&arg) {
        // A quotient carries more digits than its type shows: each shard's SUM of it is
        // rounded, one server's is not, and the averages would differ.
        return Err(
            "uses AVG over a division (/): not supported across shards (each shard's sum of quotients is rounded)".into(),
        );
    }
    Ok(Some(Call { agg, arg }))
}

/// Whether SQL text divides with `/` (outside string literals); unreadable text counts.
fn divides(sql: &str) -> bool {
    use sqlparser::tokenizer::{Token, Tokenizer};
    Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize()
        .map_or(true, |tokens| tokens.contains(&Token::Div))
}

/// Whether two SQL texts are the same expression: equal, or equal but for letter case where
/// no quoted text could make case matter.
fn same_sql(a: &str, b: &str) -> bool {
    a == b || (!a.contains(['\'', '"']) && a.eq_ignore_ascii_case(b))
}

/// The result columns of a grouped read as they are resolved: the select list, then hidden
/// columns added for AVG, HAVING and ORDER BY.
#[derive(Default)]
struct Columns {
    combine: Vec<Combine>,
    /// Per column: the aggregate call it holds, as SQL (`SUM(amount)`).
    calls: Vec<Option<String>>,
    /// Per visible column: its alias (`AS x`).
    aliases: Vec<Option<String>>,
    /// Per visible column: the column it selects, when it is a plain column reference.
    column_names: Vec<Option<String>>,
    /// GROUP BY terms that are names, with the result column each resolved to.
    group_names: Vec<(String, usize)>,
    hidden: Vec<String>,
    avg: Vec<AvgColumn>,
    /// The arguments of the `COUNT(DISTINCT ...)` calls met, as SQL.
    distinct_args: Vec<String>,
}

impl Columns {
    fn note_distinct(&mut self, call: &Call) {
        if call.agg == Agg::CountDistinct
            && !self.distinct_args.iter().any(|a| same_sql(a, &call.arg))
        {
            self.distinct_args.push(call.arg.clone());
        }
    }

    /// The column holding `call`'s value; a hidden one (with what an AVG needs) if none does.
    fn column_of(&mut self, call: &Call) -> usize {
        let sql = call.sql();
        if let Some(i) = self
            .calls
            .iter()
            .position(|c| c.as_deref().is_some_and(|c| same_sql(c, &sql)))
        {
            return i;
        }
        self.note_distinct(call);
        let at = self.combine.len();
        self.combine.push(call.agg.combine());
        self.calls.push(Some(sql.clone()));
        self.hidden.push(sql);
        if call.agg == Agg::Avg {
            self.add_avg(at, &call.arg);
        }
        at
    }

    /// Makes the AVG at `at` computable: its argument's SUM and COUNT, reused or hidden.
    fn add_avg(&mut self, at: usize, arg: &str) {
        let part = |agg| Call {
            agg,
            arg: arg.to_string(),
        };
        let sum = self.column_of(&part(Agg::Sum));
        let count = self.column_of(&part(Agg::Count));
        self.avg.push(AvgColumn { at, sum, count });
    }

    /// The result column a name in HAVING means: a GROUP BY term's (standard SQL's choice),
    /// else a select alias, else a selected column of that name.
    fn named(&self, name: &str, qualified: bool) -> Result<usize, String> {
        if let Some((_, i)) = self
            .group_names
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Ok(*i);
        }
        let matching = |names: &[Option<String>]| -> Vec<usize> {
            names
                .iter()
                .enumerate()
                .filter(|(_, n)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .map(|(i, _)| i)
                .collect()
        };
        let aliases = if qualified {
            Vec::new()
        } else {
            matching(&self.aliases)
        };
        let found = if aliases.is_empty() {
            matching(&self.column_names)
        } else {
            aliases
        };
        match found.as_slice() {
            [i] => Ok(*i),
            [] => Err(format!(
                "has HAVING on {name}, which is not a selected column: select it"
            )),
            _ => Err(format!(
                "has HAVING on {name}, which names several selected columns"
            )),
        }
    }

    /// HAVING as a [`Predicate`], adding hidden columns for the aggregates it needs.
    fn predicate(&mut self, e: &Expr) -> Result<Predicate, String> {
        let boxed = |p| Box::new(p);
        Ok(match e {
            Expr::Nested(inner) => self.predicate(inner)?,
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => Predicate::And(
                    boxed(self.predicate(left)?),
                    boxed(self.predicate(right)?),
                ),
                BinaryOperator::Or => Predicate::Or(
                    boxed(self.predicate(left)?),
                    boxed(self.predicate(right)?),
                ),
                _ => {
                    let op = compare_op(op).ok_or_else(|| {
                        format!("has HAVING with {op}: only comparisons, AND, OR, NOT, IS [NOT] NULL, BETWEEN and IN are supported across shards")
                    })?;
                    Predicate::Compare(self.operand(left)?, op, self.operand(right)?)
                }
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Predicate::Not(boxed(self.predicate(expr)?)),
            Expr::IsNull(v) => Predicate::IsNull {
                value: self.operand(v)?,
                negated: false,
            },
            Expr::IsNotNull(v) => Predicate::IsNull {
                value: self.operand(v)?,
                negated: true,
            },
            Expr::IsTrue(p) | Expr::IsNotTrue(p) => Predicate::Is {
                inner: boxed(self.predicate(p)?),
                is: Some(true),
                negated: matches!(e, Expr::IsNotTrue(_)),
            },
            Expr::IsFalse(p) | Expr::IsNotFalse(p) => Predicate::Is {
                inner: boxed(self.predicate(p)?),
                is: Some(false),
                negated: matches!(e, Expr::IsNotFalse(_)),
            },
            Expr::IsUnknown(p) | Expr::IsNotUnknown(p) => Predicate::Is {
                inner: boxed(self.predicate(p)?),
                is: None,
                negated: matches!(e, Expr::IsNotUnknown(_)),
            },
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => Predicate::Between {
                value: self.operand(expr)?,
                low: self.operand(low)?,
                high: self.operand(high)?,
                negated: *negated,
            },
            Expr::InList {
                expr,
                list,
                negated,
            } => Predicate::In {
                value: self.operand(expr)?,
                list: list
                    .iter()
                    .map(|x| self.operand(x))
                    .collect::<Result<_, _>>()?,
                negated: *negated,
            },
            Expr::Identifier(_)
            | Expr::CompoundIdentifier(_)
            | Expr::Function(_)
            | Expr::Value(_) => Predicate::Value(self.operand(e)?),
            other => {
                return Err(format!(
                    "has HAVING with {other}: only comparisons, AND, OR, NOT, IS [NOT] NULL, BETWEEN and IN over columns, aggregates and literals are supported across shards"
                ))
            }
        })
    }

    /// A column, aggregate or literal in HAVING.
    fn operand(&mut self, e: &Expr) -> Result<Operand, String> {
        let unsupported = || {
            format!(
                "has HAVING with {e}: only columns, aggregates and literals can be compared across shards"
            )
        };
        Ok(match e {
            Expr::Nested(inner) => self.operand(inner)?,
            Expr::Identifier(id) => Operand::Column(self.named(&id.value, false)?),
            Expr::CompoundIdentifier(parts) => match parts.last() {
                Some(id) => Operand::Column(self.named(&id.value, true)?),
                None => return Err(unsupported()),
            },
            Expr::Function(f) => match aggregate_call(f)? {
                Some(call) => Operand::Column(self.column_of(&call)),
                None => return Err(unsupported()),
            },
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Operand::Number(n.clone()),
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    Operand::Text(s.clone())
                }
                Value::Boolean(b) => Operand::Number(if *b { "1" } else { "0" }.into()),
                Value::Null => Operand::Null,
                _ => return Err(unsupported()),
            },
            Expr::UnaryOp { op, expr } => match (op, expr.as_ref()) {
                (UnaryOperator::Minus | UnaryOperator::Plus, Expr::Value(v)) => match &v.value {
                    Value::Number(n, _) if *op == UnaryOperator::Minus => match n.strip_prefix('-')
                    {
                        Some(positive) => Operand::Number(positive.to_string()),
                        None => Operand::Number(format!("-{n}")),
                    },
                    Value::Number(n, _) => Operand::Number(n.clone()),
                    _ => return Err(unsupported()),
                },
                _ => return Err(unsupported()),
            },
            _ => return Err(unsupported()),
        })
    }
}

fn compare_op(op: &BinaryOperator) -> Option<CompareOp> {
    Some(match op {
        BinaryOperator::Eq => CompareOp::Eq,
        BinaryOperator::Spaceship => CompareOp::NullSafeEq,
        BinaryOperator::NotEq => CompareOp::NotEq,
        BinaryOperator::Lt => CompareOp::Lt,
        BinaryOperator::LtEq => CompareOp::LtEq,
        BinaryOperator::Gt => CompareOp::Gt,
        BinaryOperator::GtEq => CompareOp::GtEq,
        _ => return None,
    })
}

/// How the rows of several shards combine for GROUP BY, aggregates or DISTINCT; `None` when
/// they need not (plain rows). `Err` says what cannot be merged (yet).
pub(super) fn group_spec(
    q: &sqlparser::ast::Query,
    s: &sqlparser::ast::Select,
    sql: &str,
    aggregates: bool,
) -> Result<Option<Grouping>, String> {
    use sqlparser::ast::{GroupByExpr, OrderByKind, SelectItem};
    if q.fetch.is_some() {
        return Err("has FETCH: not supported".into());
    }
    let group_by: &[Expr] = match &s.group_by {
        GroupByExpr::Expressions(e, modifiers) if modifiers.is_empty() => e,
        _ => return Err("has a GROUP BY form that is not supported".into()),
    };
    let distinct = s.distinct.is_some();
    // Without groups or aggregates HAVING filters rows as WHERE does: each shard applies it.
    if !aggregates && group_by.is_empty() && !distinct {
        return Ok(None);
    }
    let mut cols = Columns::default();
    let mut avgs = Vec::new();
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
        let call = match expr {
            Expr::Function(f) => aggregate_call(f)?,
            _ => None,
        };
        if call.is_none() && contains_aggregate(&expr.to_string()) {
            return Err(
                "has an aggregate inside an expression: select the aggregate itself".into(),
            );
        }
        let column_name = match expr {
            Expr::Identifier(id) => Some(id.value.clone()),
            Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()),
            _ => None,
        };
        if let Some(c) = call.as_ref().filter(|c| c.agg == Agg::Avg) {
            avgs.push((cols.combine.len(), c.arg.clone()));
        }
        if let Some(c) = &call {
            cols.note_distinct(c);
        }
        cols.combine
            .push(call.as_ref().map_or(Combine::First, |c| c.agg.combine()));
        cols.calls.push(call.as_ref().map(Call::sql));
        cols.aliases.push(alias);
        cols.column_names.push(column_name);
    }
    let visible = cols.combine.len();
    if distinct && cols.combine.iter().any(|c| *c != Combine::First) {
        return Err("uses DISTINCT with aggregates: not supported across shards".into());
    }
    // A GROUP BY name: an item's alias or column, else an aliased item's column.
    let named = |wanted: &str| {
        let is = |n: Option<&str>| n.is_some_and(|n| n.eq_ignore_ascii_case(wanted));
        (0..visible)
            .find(|&i| {
                is(cols.aliases[i]
                    .as_deref()
                    .or(cols.column_names[i].as_deref()))
            })
            .or_else(|| (0..visible).find(|&i| is(cols.column_names[i].as_deref())))
    };
    let keys: Vec<usize> = if distinct {
        (0..visible).collect()
    } else {
        let mut keys = Vec::with_capacity(group_by.len());
        let mut group_names = Vec::new();
        for g in group_by {
            let name = match g {
                Expr::Identifier(id) => Some(&id.value),
                Expr::CompoundIdentifier(parts) => parts.last().map(|id| &id.value),
                _ => None,
            };
            let at = match g {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n.parse::<usize>().ok().and_then(|p| p.checked_sub(1)),
                    _ => None,
                },
                _ => name.and_then(|n| named(n)),
            };
            match at {
                Some(i) if i < visible && cols.combine[i] == Combine::First => {
                    keys.push(i);
                    if let Some(n) = name {
                        group_names.push((n.clone(), i));
                    }
                }
                _ => {
                    return Err(format!(
                        "groups by {g}, which is not a selected column: select it"
                    ))
                }
            }
        }
        cols.group_names = group_names;
        keys
    };
    for (at, arg) in avgs {
        cols.add_avg(at, &arg);
    }
    // With groups (or aggregates) HAVING needs whole groups: the proxy applies it after merging.
    let strip_having = s.having.is_some() && (aggregates || !group_by.is_empty());
    if let Some(op) = select_text(sql).and_then(|t| t.having_misread) {
        if strip_having {
            return Err(format!(
                "has HAVING with {op}: not supported across shards (AND, OR and NOT are)"
            ));
        }
    }
    let having = match &s.having {
        Some(h) if strip_having => Some(Box::new(cols.predicate(h)?)),
        _ => None,
    };
    let mut order = Vec::new();
    if let Some(ob) = &q.order_by {
        if let OrderByKind::Expressions(exprs) = &ob.kind {
            for e in exprs {
                let at = match &e.expr {
                    Expr::Function(f) => aggregate_call(f)?.map(|call| cols.column_of(&call)),
                    _ => None,
                };
                order.push(at);
            }
        }
    }
    if distinct && !cols.hidden.is_empty() {
        return Err(
            "uses DISTINCT with aggregates in HAVING or ORDER BY: not supported across shards"
                .into(),
        );
    }
    let distinct_arg = match cols.distinct_args.as_slice() {
        [] => None,
        [arg] => {
            let at = cols.combine.len();
            cols.combine.push(Combine::First);
            cols.calls.push(None);
            cols.hidden.push(arg.clone());
            Some((at, arg.clone()))
        }
        _ => {
            return Err(
                "uses COUNT(DISTINCT ...) of several expressions: not supported across shards (of one expression it is)"
                    .into(),
            )
        }
    };
    Ok(Some(Grouping {
        spec: GroupSpec {
            columns: cols.combine,
            keys,
            sorted_by_key: !group_by.is_empty(),
            visible,
            avg: cols.avg,
            having,
            distinct_arg: distinct_arg.as_ref().map(|(at, _)| *at),
        },
        hidden: cols.hidden,
        group_by_extra: distinct_arg.map(|(_, arg)| arg),
        order,
        strip_having,
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
    grouping: Option<Grouping>,
) -> Result<MergeSpec, String> {
    use sqlparser::ast::{LimitClause, OrderByKind, OrderBySort};
    let visible = grouping.as_ref().map(|g| g.spec.visible);
    let mut order = Vec::new();
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(exprs) = &ob.kind else {
            return Err("ORDER BY ALL is not supported".into());
        };
        for (i, e) in exprs.iter().enumerate() {
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
            // An aggregate call: the (possibly hidden) column group_spec resolved it to.
            let aggregate = grouping
                .as_ref()
                .and_then(|g| g.order.get(i).copied().flatten());
            let column = match aggregate {
                Some(at) => ColumnRef::Position(at),
                None => order_column(&e.expr, visible)?,
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
    let sql = match &grouping {
        Some(g) if !g.hidden.is_empty() || g.strip_having => {
            rewrite_select(sql, &g.hidden, g.strip_having, g.group_by_extra.as_deref())?
        }
        _ => sql.to_string(),
    };
    let rewrite_failed =
        || "the LIMIT clause of this multi-shard read could not be rewritten".to_string();
    // A group's rows may sit beyond any one shard's first rows, and HAVING may drop any of
    // them: grouped reads fetch every group and limit after merging.
    let grouped = grouping.as_ref().is_some_and(|g| {
        g.spec.columns.iter().any(|c| *c != Combine::First)
            || g.spec.sorted_by_key
            || g.spec.having.is_some()
    });
    let shard_sql = match (offset, limit) {
        (_, Some(_)) if grouped => rewrite_limit(&sql, None).ok_or_else(rewrite_failed)?,
        (0, _) | (_, None) => sql,
        (off, Some(n)) => {
            rewrite_limit(&sql, Some(off.saturating_add(n))).ok_or_else(rewrite_failed)?
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
        group: grouping.map(|g| g.spec),
    })
}

/// The result column an ORDER BY term names; `visible`: how many columns the client sees, when
/// known.
fn order_column(e: &Expr, visible: Option<usize>) -> Result<ColumnRef, String> {
    Ok(match e {
        Expr::Identifier(id) => ColumnRef::Name(id.value.clone()),
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(id) => ColumnRef::Name(id.value.clone()),
            None => return Err("an empty ORDER BY name".into()),
        },
        Expr::Value(v) => match &v.value {
            // Hidden columns follow the visible ones: a position must not reach them.
            Value::Number(n, _) => match n.parse::<usize>() {
                Ok(p) if p >= 1 && visible.is_none_or(|v| p <= v) => {
                    ColumnRef::Position(p - 1)
                }
                _ => return Err(format!("ORDER BY {n}: not a column position")),
            },
            _ => return Err("ORDER BY a constant".into()),
        },
        other => {
            return Err(format!(
                "this SELECT reads several shards and orders by the expression {other}: select it with an alias and order by the alias"
            ))
        }
    })
}

/// Where the parts of a SELECT that the merge rewrites are, as byte offsets.
struct SelectText {
    /// Just after the last select item.
    items_end: usize,
    /// The HAVING clause, up to the next clause.
    having: Option<std::ops::Range<usize>>,
    /// An operator in HAVING that the parser reads with another precedence than MariaDB does
    /// (`&&`, `XOR`): the parse tree cannot be trusted.
    having_misread: Option<&'static str>,
    /// Just after the FROM ... [WHERE ...] [GROUP BY ...] part (where a GROUP BY list ends or
    /// one would go), and whether it has a GROUP BY.
    grouping_end: usize,
    has_group_by: bool,
}

/// A keyword that starts a clause after HAVING (so ends it, or the part before it).
fn ends_having(k: sqlparser::keywords::Keyword) -> bool {
    use sqlparser::keywords::Keyword;
    matches!(
        k,
        Keyword::ORDER
            | Keyword::LIMIT
            | Keyword::WINDOW
            | Keyword::FOR
            | Keyword::LOCK
            | Keyword::INTO
            | Keyword::PROCEDURE
            | Keyword::UNION
            | Keyword::FETCH
            | Keyword::OFFSET
    )
}

fn select_text(sql: &str) -> Option<SelectText> {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let mut depth = 0i32;
    let mut from = None;
    let mut last_item = None;
    let mut having = None;
    let mut having_end = None;
    let mut having_misread = None;
    let mut group_by = false;
    // The first clause after FROM/WHERE/GROUP BY, and the last token before it.
    let mut tail = None;
    let mut last_before_tail = None;
    for (i, t) in tokens.iter().enumerate() {
        let in_having = having.is_some() && having_end.is_none();
        if depth == 0 && from.is_some() && tail.is_none() {
            let clause = match &t.token {
                Token::Word(w) if w.quote_style.is_none() => {
                    w.keyword == Keyword::HAVING || ends_having(w.keyword)
                }
                Token::SemiColon => true,
                _ => false,
            };
            if clause {
                tail = Some(i);
            } else if !matches!(t.token, Token::Whitespace(_)) {
                last_before_tail = Some(i);
            }
        }
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w) if depth == 0 && w.quote_style.is_none() => match w.keyword {
                Keyword::FROM if from.is_none() => from = Some(i),
                Keyword::GROUP if from.is_some() && tail.is_none() => group_by = true,
                Keyword::HAVING if having.is_none() => having = Some(i),
                Keyword::XOR if in_having => having_misread = Some("XOR"),
                k if in_having && ends_having(k) => having_end = Some(i),
                _ => {}
            },
            Token::SemiColon if depth == 0 && in_having => having_end = Some(i),
            Token::Overlap if in_having => having_misread = Some("&&"),
            _ => {}
        }
        if from.is_none() && !matches!(t.token, Token::Whitespace(_)) {
            last_item = Some(i);
        }
    }
    let at = |i: usize, end: bool| {
        let span = tokens.get(i)?.span;
        byte_offset(sql, if end { span.end } else { span.start })
    };
    from?;
    let having = match having {
        Some(h) => Some(
            at(h, false)?..match having_end {
                Some(e) => at(e, false)?,
                None => sql.len(),
            },
        ),
        None => None,
    };
    Some(SelectText {
        items_end: at(last_item?, true)?,
        having,
        having_misread,
        grouping_end: at(last_before_tail?, true)?,
        has_group_by: group_by,
    })
}

/// `sql` as the shards run it: `hidden` select items appended to the select list, HAVING
/// removed (`strip_having`) and `group_by` added to the GROUP BY list (or as one).
fn rewrite_select(
    sql: &str,
    hidden: &[String],
    strip_having: bool,
    group_by: Option<&str>,
) -> Result<String, String> {
    let failed = || "the select list of this multi-shard read could not be rewritten".to_string();
    let text = select_text(sql).ok_or_else(failed)?;
    let mut out = sql.to_string();
    // Edited from the end, so each earlier offset still holds: HAVING, GROUP BY, select list.
    if strip_having {
        out.replace_range(text.having.ok_or_else(failed)?, "");
    }
    if let Some(g) = group_by {
        let extra = if text.has_group_by {
            format!(", {g}")
        } else {
            format!(" GROUP BY {g}")
        };
        out.insert_str(text.grouping_end, &extra);
    }
    if !hidden.is_empty() {
        out.insert_str(text.items_end, &format!(", {}", hidden.join(", ")));
    }
    Ok(out)
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
