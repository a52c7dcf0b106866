//! Which shards of a sharded keyspace a statement touches, read from its parsed form.
//!
//! Pure: the caller gives the statement, the keyspace's table rules and a function from a
//! key value to its shard. Statements whose shard key equalities put every sharded table on
//! one shard run there unchanged; DDL and reference-table writes run on every shard; reads
//! of reference tables alone run on any one; reads needing several shards are scattered and
//! merged (`merge`), multi-row INSERTs split by row and keys taken from sequences (`insert`),
//! writes on several shards run on each. What cannot be done correctly is refused with a
//! message that says what and why. `scope` binds tables to key values; `tokens` reads what
//! the parse tree does not keep.

use sqlparser::ast::{Expr, FromTable, ObjectName, SetExpr, Statement, UnaryOperator, Value};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::planner::text::STAND_IN;
use crate::shardmap::ring::KeyValue;

mod insert;
mod merge;
mod scope;
pub mod shape;
mod tokens;
mod union;

use crate::shardmap::TableRule;
use insert::plan_insert;
pub use insert::{with_generated_keys, Spliced};
use merge::{group_spec, merge_spec};
pub use merge::{
    AvgColumn, ColumnRef, Combine, CompareOp, GroupSpec, MergeSpec, Operand, OrderKey, Predicate,
};
use scope::Scope;
use tokens::{placeholder_number, scan, PLACEHOLDERS};

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
    /// rows (cut from the client's bytes); the client gets one OK with the affected rows summed.
    SplitInsert(Vec<(usize, Spliced)>),
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
    /// An INSERT without a column list into this sharded table, whose column order the
    /// proxy does not know yet: the caller reads it (`TableColumns`) and plans again.
    NeedColumns(String),
    /// Not supported (yet): the client gets ERR 1105 with this text.
    Reject(String),
    /// The parser cannot read it: a syntax error (the server's to report), or a statement
    /// the planner does not know (refused with this text).
    NotUnderstood(String),
}

/// What the planner knows about the keyspace.
pub struct ShardContext<'a> {
    pub rule: &'a dyn Fn(&str) -> Option<&'a TableRule>,
    pub shard_of: &'a dyn Fn(&KeyValue<'_>) -> usize,
    pub allow_scatter_writes: bool,
    /// Shards in the keyspace (a read with no key visits them all).
    pub shard_count: usize,
    /// A table's columns in order, when known (for INSERT without a column list).
    pub columns: &'a dyn Fn(&str) -> Option<std::sync::Arc<[String]>>,
}

fn reject(msg: impl Into<String>) -> ShardPlan {
    ShardPlan::Reject(format!("shardgate: {}", msg.into()))
}

/// Plans one statement (`sql` must hold exactly one).
pub fn plan(sql: &str, cx: &ShardContext<'_>) -> ShardPlan {
    let statements = match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(s) => s,
        Err(e) => {
            return ShardPlan::NotUnderstood(format!(
                "shardgate: cannot route this statement on a sharded keyspace (not understood: {e})"
            ))
        }
    };
    let [statement] = statements.as_slice() else {
        return reject("several statements in one query are not supported on a sharded keyspace");
    };
    let own_select = usize::from(matches!(statement, Statement::Query(_)));
    let Some(tokens) = scan(sql) else {
        return ShardPlan::NotUnderstood(
            "shardgate: cannot route this statement on a sharded keyspace (not understood)".into(),
        );
    };
    PLACEHOLDERS.with(|p| *p.borrow_mut() = tokens.placeholders);
    if let Statement::Query(q) = statement {
        if matches!(q.body.as_ref(), SetExpr::SetOperation { .. }) {
            return union::plan_union(q, sql, cx, tokens.selects, tokens.aggregates);
        }
    }
    if tokens.selects > own_select {
        return reject("subqueries, UNION and WITH are not supported on a sharded keyspace yet");
    }
    match statement {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Select(s) => {
                let scope = match Scope::of_select(s, cx) {
                    Ok(scope) => scope,
                    Err(e) => return reject(e),
                };
                let plan = scope.decide_read(cx, None, cx.shard_count);
                let ShardPlan::Scatter(shards) = plan else {
                    return plan;
                };
                // Several shards: what their results need to become one.
                let grouping = match group_spec(q, s, sql, tokens.aggregates) {
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
            _ => reject("this compound query is not supported on a sharded keyspace yet"),
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
            // A stand-in for bytes that are not UTF-8: the key's real bytes are not known here.
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s)
                if s.as_bytes().contains(&STAND_IN) =>
            {
                None
            }
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
        // `users` has a known column order; other tables have none yet.
        let columns = |t: &str| {
            (t == "users")
                .then(|| std::sync::Arc::from(vec!["name".to_string(), "id".into(), "cc".into()]))
        };
        let cx = ShardContext {
            rule: &rule,
            shard_of: &shard_of,
            allow_scatter_writes: false,
            shard_count: 2,
            columns: &columns,
        };
        plan(sql, &cx)
    }

    fn shard(k: &str) -> usize {
        (key_hash(&KeyValue::from_number_text(k.as_bytes())) & 1) as usize
    }

    /// A number key on the other shard than `k`'s.
    fn key_off(k: &str) -> String {
        (1..100)
            .map(|n| n.to_string())
            .find(|n| shard(n) != shard(k))
            .unwrap_or_default()
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
        refused(
            "SELECT COUNT(DISTINCT name), COUNT(DISTINCT id) FROM users",
            "COUNT(DISTINCT ...) of several expressions",
        );
        refused("SELECT SUM(DISTINCT id) FROM users", "SUM(DISTINCT ...)");
        refused("SELECT GROUP_CONCAT(name) FROM users", "GROUP_CONCAT");
        refused("SELECT COUNT(*) OVER () FROM users", "window functions");
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
                b"INSERT INTO `t` (name, n) VALUES ('a(', 1), (_binary'\xff\x80)', 2) ON DUPLICATE KEY UPDATE n = 3",
                "id",
                &[10, 11]
            )
            .as_deref(),
            Some(&b"INSERT INTO `t` (`id`, name, n) VALUES (10, 'a(', 1), (11, _binary'\xff\x80)', 2) ON DUPLICATE KEY UPDATE n = 3"[..])
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
        let split = format!(
            "INSERT INTO users (id, name) VALUES ({a}, 'x,(y)'), ({b}, 'it''s'), ({a}, \"q\") ON DUPLICATE KEY UPDATE name = 'z'"
        );
        let ShardPlan::SplitInsert(parts) = run(&split) else {
            panic!("not split: {split}");
        };
        let rendered: Vec<(usize, String)> = parts
            .iter()
            .map(|(i, s)| {
                let text = s.render(split.as_bytes()).expect("fits");
                (*i, String::from_utf8(text).expect("utf8"))
            })
            .collect();
        assert_eq!(
            rendered,
            vec![
                (
                    0,
                    format!("INSERT INTO users (id, name) VALUES ({a}, 'x,(y)'), ({a}, \"q\") ON DUPLICATE KEY UPDATE name = 'z'")
                ),
                (
                    1,
                    format!("INSERT INTO users (id, name) VALUES ({b}, 'it''s') ON DUPLICATE KEY UPDATE name = 'z'")
                ),
            ]
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

    fn merged(sql: &str) -> MergeSpec {
        match run(sql) {
            ShardPlan::MergeSorted(spec) => spec,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn count_distinct_groups_the_shards_by_its_argument_too() {
        // Without GROUP BY: one, by the argument, in a hidden column after the client's.
        let spec = merged("SELECT COUNT(DISTINCT name), COUNT(*) AS n FROM users WHERE id > 3");
        assert_eq!(
            spec.sql,
            "SELECT COUNT(DISTINCT name), COUNT(*) AS n, name FROM users WHERE id > 3 GROUP BY name"
        );
        let g = spec.group.expect("group");
        assert_eq!(
            g.columns,
            vec![Combine::CountDistinct, Combine::Count, Combine::First]
        );
        assert_eq!(
            (g.keys.clone(), g.visible, g.distinct_arg),
            (vec![], 2, Some(2))
        );
        // With GROUP BY, HAVING (stripped, evaluated by the proxy) and ORDER BY ... LIMIT (not
        // pushed down: groups are whole only after the merge).
        let spec = merged(
            "SELECT score, COUNT(DISTINCT name) AS c FROM users GROUP BY score HAVING c > 1 ORDER BY c DESC LIMIT 3",
        );
        assert_eq!(
            spec.sql,
            "SELECT score, COUNT(DISTINCT name) AS c, name FROM users GROUP BY score, name ORDER BY c DESC "
        );
        let g = spec.group.expect("group");
        assert_eq!(g.keys, vec![0]);
        assert_eq!(g.distinct_arg, Some(2));
        assert!(g.having.is_some());
        assert_eq!(spec.limit, Some(3));
        // Only in HAVING: a hidden COUNT(DISTINCT ...) column too.
        let spec =
            merged("SELECT score FROM users GROUP BY score HAVING COUNT(DISTINCT name) >= 2");
        assert_eq!(
            spec.sql,
            "SELECT score, COUNT(DISTINCT name), name FROM users GROUP BY score, name "
        );
        let g = spec.group.expect("group");
        assert_eq!(
            g.columns,
            vec![Combine::First, Combine::CountDistinct, Combine::First]
        );
        assert_eq!(g.distinct_arg, Some(2));
    }

    #[test]
    fn avg_is_folded_from_sum_and_count_in_hidden_columns() {
        let spec = merged("SELECT AVG(amount) FROM users");
        assert_eq!(
            spec.sql,
            "SELECT AVG(amount), SUM(amount), COUNT(amount) FROM users"
        );
        let g = spec.group.expect("grouped");
        assert_eq!(
            g.columns,
            vec![Combine::First, Combine::Sum, Combine::Count]
        );
        assert_eq!((g.visible, g.keys.len()), (1, 0));
        assert_eq!(
            g.avg,
            vec![AvgColumn {
                at: 0,
                sum: 1,
                count: 2
            }]
        );
        // Selected SUM and COUNT of the same argument are reused; COUNT(*) is not COUNT(x).
        let spec = merged(
            "SELECT name, sum(score), AVG(score) AS a, COUNT(*), count(SCORE) FROM users GROUP BY name",
        );
        assert_eq!(
            spec.sql,
            "SELECT name, sum(score), AVG(score) AS a, COUNT(*), count(SCORE) FROM users GROUP BY name"
        );
        let g = spec.group.expect("grouped");
        assert_eq!(g.visible, 5);
        assert_eq!(
            g.avg,
            vec![AvgColumn {
                at: 2,
                sum: 1,
                count: 4
            }]
        );
        assert_eq!(g.having, None);
        // Two AVGs of one argument share their hidden SUM and COUNT.
        let g = merged("SELECT AVG(id), AVG(id) AS b FROM users")
            .group
            .expect("grouped");
        assert_eq!(g.columns.len(), 4);
        assert_eq!(g.avg[0].sum, g.avg[1].sum);
        assert!(matches!(
            run("SELECT COUNT(ALL id) FROM users"),
            ShardPlan::MergeSorted(_)
        ));
    }

    #[test]
    fn having_is_evaluated_after_merging() {
        let spec = merged(
            "SELECT name, AVG(score) AS a, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1 AND a >= -2.5 ORDER BY a DESC LIMIT 3",
        );
        assert_eq!(
            spec.sql,
            "SELECT name, AVG(score) AS a, COUNT(*), SUM(score), COUNT(score) FROM users GROUP BY name ORDER BY a DESC "
        );
        assert_eq!((spec.offset, spec.limit), (0, Some(3)));
        let g = spec.group.expect("grouped");
        assert_eq!(
            g.having,
            Some(Box::new(Predicate::And(
                Box::new(Predicate::Compare(
                    Operand::Column(2),
                    CompareOp::Gt,
                    Operand::Number("1".into())
                )),
                Box::new(Predicate::Compare(
                    Operand::Column(1),
                    CompareOp::GtEq,
                    Operand::Number("-2.5".into())
                )),
            )))
        );
        // Aggregates only HAVING uses become hidden columns; names resolve to GROUP BY terms,
        // aliases and selected columns.
        let spec = merged(
            "SELECT name AS n, score FROM users GROUP BY n, score HAVING (MAX(id) > 10 OR avg(id) IS NULL) AND NOT name IN ('a', \"b\", NULL) AND score BETWEEN 1 AND 5 AND n <=> 'x' AND COUNT(*)",
        );
        assert_eq!(
            spec.sql,
            "SELECT name AS n, score, MAX(id), AVG(id), SUM(id), COUNT(id), COUNT(*) FROM users GROUP BY n, score "
        );
        let g = spec.group.expect("grouped");
        assert_eq!(g.visible, 2);
        assert_eq!(
            g.columns,
            vec![
                Combine::First,
                Combine::First,
                Combine::Max,
                Combine::First,
                Combine::Sum,
                Combine::Count,
                Combine::Count
            ]
        );
        assert_eq!(
            g.avg,
            vec![AvgColumn {
                at: 3,
                sum: 4,
                count: 5
            }]
        );
        let text = format!("{:?}", g.having);
        for part in [
            "Compare(Column(2), Gt, Number(\"10\"))",
            "IsNull { value: Column(3), negated: false }",
            "Not(In { value: Column(0), list: [Text(\"a\"), Text(\"b\"), Null], negated: false })",
            "Between { value: Column(1), low: Number(\"1\"), high: Number(\"5\"), negated: false }",
            "Compare(Column(0), NullSafeEq, Text(\"x\"))",
            "Value(Column(6))",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        // ORDER BY an aggregate: its column, hidden if not selected.
        let spec = merged(
            "SELECT name, COUNT(*) FROM users GROUP BY name ORDER BY count(*) DESC, SUM(id), name",
        );
        assert_eq!(
            spec.sql,
            "SELECT name, COUNT(*), SUM(id) FROM users GROUP BY name ORDER BY count(*) DESC, SUM(id), name"
        );
        let columns: Vec<ColumnRef> = spec.order.into_iter().map(|k| k.column).collect();
        assert_eq!(
            columns,
            vec![
                ColumnRef::Position(1),
                ColumnRef::Position(2),
                ColumnRef::Name("name".into())
            ]
        );
        // Aggregates without GROUP BY: one group, filtered.
        let spec = merged("SELECT COUNT(*) FROM users HAVING COUNT(*) > 5 LIMIT 1;");
        assert_eq!(spec.sql, "SELECT COUNT(*) FROM users ;");
        assert!(spec.group.expect("grouped").having.is_some());
        // Without groups or aggregates HAVING filters rows: the shards apply it themselves.
        assert_eq!(
            run("SELECT id FROM users HAVING id > 3"),
            ShardPlan::Scatter(vec![0, 1])
        );
        let spec = merged("SELECT DISTINCT name FROM users HAVING name > 'b'");
        assert_eq!(
            spec.sql,
            "SELECT DISTINCT name FROM users HAVING name > 'b'"
        );
        assert_eq!(spec.group.expect("distinct").having, None);
    }

    #[test]
    fn having_that_cannot_be_merged_is_refused() {
        let refused = |sql: &str, needle: &str| match run(sql) {
            ShardPlan::Reject(m) => assert!(m.contains(needle), "{sql}: {m}"),
            other => panic!("{sql}: {other:?}"),
        };
        let grouped = "SELECT name, COUNT(*) AS c FROM users GROUP BY name HAVING";
        refused(
            &format!("{grouped} COUNT(DISTINCT id) > 1 AND COUNT(DISTINCT score) > 1"),
            "COUNT(DISTINCT ...) of several expressions",
        );
        refused(
            &format!("{grouped} AVG(DISTINCT id) > 1"),
            "AVG(DISTINCT ...)",
        );
        refused(&format!("{grouped} GROUP_CONCAT(id) = '1'"), "GROUP_CONCAT");
        refused(
            &format!("{grouped} score > 1"),
            "score, which is not a selected",
        );
        refused(&format!("{grouped} c + 1 > 2"), "HAVING with c + 1");
        refused(
            &format!("{grouped} name LIKE 'a%'"),
            "HAVING with name LIKE",
        );
        refused(&format!("{grouped} c > 1 && c < 5"), "&&");
        refused(&format!("{grouped} c > 1 XOR c < 5"), "HAVING with XOR");
        refused(
            &format!("{grouped} UPPER(name) = 'A'"),
            "HAVING with UPPER(name)",
        );
        refused(
            "SELECT name AS x, id AS x, COUNT(*) FROM users GROUP BY 1, 2 HAVING x > 1",
            "several selected columns",
        );
        refused(
            "SELECT DISTINCT name FROM users GROUP BY name HAVING COUNT(*) > 1",
            "DISTINCT",
        );
        refused(
            "SELECT name, COUNT(*) FROM users GROUP BY name ORDER BY 3",
            "not a column position",
        );
        refused("SELECT AVG(id) * 2 FROM users", "inside an expression");
        refused("SELECT AVG(id / 7) FROM users", "AVG over a division");
        refused(
            &format!("{grouped} AVG(score / 2) > 1"),
            "AVG over a division",
        );
        assert!(matches!(
            run("SELECT AVG(id DIV 7), AVG(name = 'a/b') FROM users"),
            ShardPlan::MergeSorted(_)
        ));
        // A column grouped by its own name while selected under an alias is still selected.
        let g = merged("SELECT name AS n, COUNT(*) FROM users GROUP BY name HAVING name > 'b'")
            .group
            .expect("grouped");
        assert_eq!(g.keys, vec![0]);
        assert_eq!(
            g.having,
            Some(Box::new(Predicate::Compare(
                Operand::Column(0),
                CompareOp::Gt,
                Operand::Text("b".into())
            )))
        );
    }

    #[test]
    fn union_all_runs_on_the_shards_its_branches_need() {
        let refused = |sql: &str, needle: &str| match run(sql) {
            ShardPlan::Reject(m) => assert!(m.contains(needle), "{sql}: {m}"),
            other => panic!("{sql}: {other:?}"),
        };
        // Both branches on one shard: the whole statement runs there, reference tables too.
        let (a, other) = (shard("42"), key_off("42"));
        assert_eq!(
            run("SELECT id FROM users WHERE id = 42 UNION SELECT user_id FROM orders WHERE user_id = 42"),
            ShardPlan::One(a)
        );
        assert_eq!(
            run("SELECT id FROM users WHERE id = 42 UNION ALL SELECT 1 FROM countries"),
            ShardPlan::One(a)
        );
        assert_eq!(
            run("SELECT code FROM countries UNION SELECT 'x'"),
            ShardPlan::Any
        );
        // Two shards: concatenated, or merged in the union's order.
        assert_eq!(
            run(&format!(
                "SELECT id FROM users WHERE id = 42 UNION ALL SELECT id FROM users WHERE id = {other}"
            )),
            ShardPlan::Scatter(vec![0, 1])
        );
        assert_eq!(
            run("SELECT id, name FROM users UNION ALL (SELECT user_id, note FROM orders)"),
            ShardPlan::Scatter(vec![0, 1])
        );
        match run("SELECT id FROM users WHERE id < 5 UNION ALL SELECT user_id FROM orders ORDER BY id DESC LIMIT 2, 3") {
            ShardPlan::MergeSorted(spec) => {
                assert_eq!(
                    spec.sql,
                    "SELECT id FROM users WHERE id < 5 UNION ALL SELECT user_id FROM orders ORDER BY id DESC LIMIT 5"
                );
                assert_eq!((spec.offset, spec.limit), (2, Some(3)));
                assert_eq!(spec.order.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        refused(
            "SELECT id FROM users UNION SELECT user_id FROM orders",
            "only UNION ALL",
        );
        refused(
            "SELECT id FROM users UNION ALL SELECT 1 FROM countries",
            "reference tables",
        );
        refused(
            "SELECT COUNT(*) FROM users UNION ALL SELECT user_id FROM orders",
            "aggregates",
        );
        refused(
            "SELECT DISTINCT name FROM users UNION ALL SELECT note FROM orders",
            "DISTINCT",
        );
        refused(
            "(SELECT id FROM users ORDER BY id LIMIT 2) UNION ALL SELECT user_id FROM orders",
            "its own ORDER BY",
        );
        refused(
            "SELECT id FROM users UNION ALL SELECT user_id FROM orders WHERE user_id IN (SELECT id FROM users)",
            "subqueries",
        );
    }

    #[test]
    fn inserts_without_a_column_list_use_the_tables_column_order() {
        // The test context knows `users` as (name, id, cc): the key is the second value.
        let (a, other) = (shard("42"), key_off("42"));
        assert_eq!(
            run("INSERT INTO users VALUES ('x', 42, 'fr')"),
            ShardPlan::One(a)
        );
        assert_eq!(
            run("REPLACE INTO users VALUES ('x', 42, 'fr')"),
            ShardPlan::One(a)
        );
        assert_eq!(
            run("INSERT INTO users VALUES (?, ?, ?)"),
            ShardPlan::Param(1)
        );
        match run(&format!(
            "INSERT INTO users VALUES ('x', 42, 'fr'), ('y', {other}, 'de')"
        )) {
            ShardPlan::SplitInsert(parts) => assert_eq!(parts.len(), 2),
            p => panic!("{p:?}"),
        }
        match run("INSERT INTO users VALUES ('x', 42)") {
            ShardPlan::Reject(m) => {
                assert!(
                    m.contains("row 1 has 2 values and the table has 3 columns"),
                    "{m}"
                )
            }
            p => panic!("{p:?}"),
        }
        // Not known yet: the caller reads the columns and plans again.
        assert_eq!(
            run("INSERT INTO orders VALUES (42, 1)"),
            ShardPlan::NeedColumns("orders".into())
        );
        // A column list is used as before, whatever the table's order.
        assert_eq!(
            run("INSERT INTO orders (user_id, n) VALUES (42, 1)"),
            ShardPlan::One(a)
        );
    }
}
