//! The tables of a statement and what its WHERE and ON conditions bind their shard keys to.

use std::collections::BTreeSet;

use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, TableFactor, TableWithJoins,
};

use super::{key_value, reject, table_name, Key, OwnedKey, ShardContext, ShardPlan};

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
pub(super) struct Scope {
    sharded: Vec<Bound>,
    reference_only: bool,
    any_table: bool,
    /// Equalities between two shard-key columns: (table index, table index).
    joins: Vec<(usize, usize)>,
}

impl Scope {
    /// The tables of a SELECT and what its WHERE binds their keys to.
    pub(super) fn of_select(
        s: &sqlparser::ast::Select,
        cx: &ShardContext<'_>,
    ) -> Result<Scope, String> {
        let mut scope = Scope::default();
        for twj in &s.from {
            scope.add_from(twj, cx)?;
        }
        if let Some(w) = &s.selection {
            scope.add_condition(w);
        }
        Ok(scope)
    }

    pub(super) fn add_from(
        &mut self,
        twj: &TableWithJoins,
        cx: &ShardContext<'_>,
    ) -> Result<(), String> {
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

    pub(super) fn is_shard_key_column(&self, column: &str) -> bool {
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
    pub(super) fn add_condition(&mut self, e: &Expr) {
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
    pub(super) fn decide_read(
        &self,
        cx: &ShardContext<'_>,
        merge: Option<&str>,
        shards: usize,
    ) -> ShardPlan {
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

    pub(super) fn decide(&self, cx: &ShardContext<'_>, what: &str) -> ShardPlan {
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

    pub(super) fn decide_write(&self, cx: &ShardContext<'_>, what: &str) -> ShardPlan {
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
