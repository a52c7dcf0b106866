//! `UNION ALL` on a sharded keyspace. Every row of a sharded table lives on one shard, so the
//! whole statement sent to each shard its branches need returns, concatenated, the rows one
//! server would: a branch whose key puts it on one shard finds nothing on the others. What
//! that argument does not cover is refused: a branch reading only reference tables (its rows
//! would come once per shard), aggregates, groups and DISTINCT in a branch (each shard would
//! answer for its own rows), and UNION without ALL (duplicates between shards would stay).
//! An ORDER BY or LIMIT of the whole union is merged like a single SELECT's.

use std::collections::BTreeSet;

use sqlparser::ast::{Query, Select, SetExpr, SetOperator, SetQuantifier};

use super::merge::merge_spec;
use super::scope::Scope;
use super::{reject, ShardContext, ShardPlan};

/// One leaf SELECT of a compound query, and whether it is joined by anything but UNION ALL.
struct Branches<'a> {
    selects: Vec<&'a Select>,
    only_union_all: bool,
    /// A branch in parentheses with its own ORDER BY or LIMIT.
    own_order: bool,
}

fn collect<'a>(body: &'a SetExpr, out: &mut Branches<'a>) -> Result<(), String> {
    match body {
        SetExpr::Select(s) => out.selects.push(s),
        SetExpr::Query(q) => {
            out.own_order |= q.order_by.is_some() || q.limit_clause.is_some();
            collect(&q.body, out)?;
        }
        SetExpr::SetOperation {
            op,
            set_quantifier,
            left,
            right,
        } => {
            out.only_union_all &=
                *op == SetOperator::Union && *set_quantifier == SetQuantifier::All;
            collect(left, out)?;
            collect(right, out)?;
        }
        _ => return Err("this compound query has a part that is not a SELECT".into()),
    }
    Ok(())
}

/// Plans a compound query (`q.body` is a set operation); `selects` is how many SELECT
/// keywords the statement holds (more than its branches: a subquery).
pub(super) fn plan_union(
    q: &Query,
    sql: &str,
    cx: &ShardContext<'_>,
    selects: usize,
    aggregates: bool,
) -> ShardPlan {
    let mut b = Branches {
        selects: Vec::new(),
        only_union_all: true,
        own_order: false,
    };
    if let Err(e) = collect(&q.body, &mut b) {
        return reject(e);
    }
    if selects > b.selects.len() || q.with.is_some() {
        return reject("subqueries and WITH are not supported on a sharded keyspace yet");
    }
    let mut shards = BTreeSet::new();
    let mut reference_only = 0;
    let mut merged_branch = aggregates;
    for s in &b.selects {
        let scope = match Scope::of_select(s, cx) {
            Ok(scope) => scope,
            Err(e) => return reject(e),
        };
        merged_branch |= s.distinct.is_some() || s.having.is_some() || has_groups(s);
        match scope.decide_read(cx, None, cx.shard_count) {
            ShardPlan::Any => reference_only += 1,
            ShardPlan::One(i) => {
                shards.insert(i);
            }
            ShardPlan::Scatter(v) => shards.extend(v),
            // Placed at execute on one branch: every shard is right for that branch.
            ShardPlan::Param(_) => shards.extend(0..cx.shard_count),
            other => return other,
        }
    }
    match shards.len() {
        0 => return ShardPlan::Any,
        1 => return ShardPlan::One(shards.into_iter().next().unwrap_or(0)),
        _ => {}
    }
    let n = shards.len();
    if !b.only_union_all {
        return reject(format!(
            "this compound query needs rows from {n} shards: only UNION ALL is supported across shards (UNION would keep duplicates found on different shards)"
        ));
    }
    if reference_only > 0 {
        return reject(format!(
            "this UNION ALL needs rows from {n} shards and has a branch reading only reference tables, whose rows would come once per shard"
        ));
    }
    if merged_branch {
        return reject(format!(
            "this UNION ALL needs rows from {n} shards and a branch has aggregates, GROUP BY, HAVING or DISTINCT, which each shard would answer for its own rows"
        ));
    }
    if b.own_order {
        return reject(format!(
            "this UNION ALL needs rows from {n} shards and a branch has its own ORDER BY or LIMIT"
        ));
    }
    let shards: Vec<usize> = shards.into_iter().collect();
    if q.order_by.is_none() && q.limit_clause.is_none() {
        return ShardPlan::Scatter(shards);
    }
    match merge_spec(q, sql, shards, None) {
        Ok(spec) => ShardPlan::MergeSorted(spec),
        Err(e) => reject(e),
    }
}

fn has_groups(s: &Select) -> bool {
    match &s.group_by {
        sqlparser::ast::GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        sqlparser::ast::GroupByExpr::All(_) => true,
    }
}
