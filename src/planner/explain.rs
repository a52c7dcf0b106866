//! `shardgate explain`: what the planner does with a statement, in words, without running it.

use std::fmt::Write;

use super::classify::{classify_uncached, Kind};
use super::{PlanContext, Planner, Route, ShardPlan};

fn servers(r: &Route) -> String {
    let replicas: Vec<&str> = r.replicas.addrs().collect();
    if replicas.is_empty() {
        format!("{} (primary {})", r.shard, r.addr)
    } else {
        format!(
            "{} (primary {}, replicas {})",
            r.shard,
            r.addr,
            replicas.join(", ")
        )
    }
}

/// Which server of a shard the read/write split picks for this kind of statement.
fn role(kind: &Kind) -> &'static str {
    match kind {
        Kind::Read => "a replica (outside transactions, autocommit on), else the primary",
        Kind::Begin { read_only: true } => "one replica for the whole transaction",
        _ => "the primary",
    }
}

/// A human-readable plan for `sql` in the session context `ctx`.
pub fn explain(planner: &Planner, sql: &str, ctx: &PlanContext<'_>) -> String {
    let mut out = String::new();
    let class = classify_uncached(sql.as_bytes());
    let keyspace = planner.keyspace_for(ctx).unwrap_or("(none)");
    let _ = writeln!(out, "statement: {sql}");
    let _ = writeln!(out, "kind: {:?}", class.kind).map(|_| ());
    if let Some(why) = class.pins {
        let _ = writeln!(
            out,
            "session: pinned to its primary connection from here on ({why})"
        );
    }
    let Some((plan, routes)) = planner.plan_shards(sql, ctx) else {
        let _ = writeln!(out, "keyspace: {keyspace} (unsharded)");
        match planner.plan_session(ctx) {
            super::Plan::Route(r) => {
                let _ = writeln!(out, "runs on: shard {}", servers(&r));
                let _ = writeln!(out, "server: {}", role(&class.kind));
                let _ = writeln!(out, "results: streamed back as the server sends them");
            }
            other => {
                let _ = writeln!(out, "refused: {other:?}");
            }
        }
        return out;
    };
    let names: Vec<&str> = routes.iter().map(|r| &*r.shard).collect();
    let _ = writeln!(
        out,
        "keyspace: {keyspace} (consistent_hash over {} shards: {})",
        routes.len(),
        names.join(", ")
    );
    match plan {
        ShardPlan::One(i) => {
            let _ = writeln!(out, "runs on: one shard, {}", servers(&routes[i]));
            let _ = writeln!(out, "server: {}", role(&class.kind));
            let _ = writeln!(out, "results: streamed back unchanged");
        }
        ShardPlan::Any => {
            let _ = writeln!(
                out,
                "runs on: any one shard (reference tables or no table): {}",
                servers(&routes[0])
            );
            let _ = writeln!(out, "server: {}", role(&class.kind));
            let _ = writeln!(out, "results: streamed back unchanged");
        }
        ShardPlan::Param(p) => {
            let _ = writeln!(
                out,
                "runs on: the shard owning the value of parameter {} at each execute",
                p + 1
            );
            let _ = writeln!(out, "server: {}", role(&class.kind));
            let _ = writeln!(out, "results: streamed back unchanged");
        }
        ShardPlan::All => {
            let _ = writeln!(out, "runs on: every shard's primary, one after the other:");
            for r in routes {
                let _ = writeln!(out, "  {}", servers(r));
            }
            let _ = writeln!(
                out,
                "results: the last shard's answer; the first error stops it and is returned"
            );
        }
        ShardPlan::Scatter(shards) => {
            let _ = writeln!(out, "runs on: these shards at once:");
            for i in shards {
                let _ = writeln!(out, "  {}", servers(&routes[i]));
            }
            let _ = writeln!(out, "server: {} of each", role(&class.kind));
            let _ = writeln!(
                out,
                "results: concatenated into one result set (the first shard's column definitions, every shard's rows)"
            );
        }
        ShardPlan::ScatterWrite(shards) => {
            let _ = writeln!(
                out,
                "runs on: these shards' primaries, one after the other:"
            );
            for i in shards {
                let _ = writeln!(out, "  {}", servers(&routes[i]));
            }
            let _ = writeln!(
                out,
                "results: one OK with the affected rows summed; not atomic across shards (the first error stops it)"
            );
        }
        ShardPlan::MergeSorted(spec) => {
            let _ = writeln!(
                out,
                "runs on: these shards at once, each running: {}",
                spec.sql
            );
            for &i in &spec.shards {
                let _ = writeln!(out, "  {}", servers(&routes[i]));
            }
            let keys: Vec<String> = spec
                .order
                .iter()
                .map(|k| {
                    let col = match &k.column {
                        super::shard::ColumnRef::Position(p) => format!("column {}", p + 1),
                        super::shard::ColumnRef::Name(n) => n.clone(),
                    };
                    format!("{col} {}", if k.desc { "DESC" } else { "ASC" })
                })
                .collect();
            let order = if keys.is_empty() {
                "in shard order".to_string()
            } else {
                format!("merged in order of {}", keys.join(", "))
            };
            let limit = match spec.limit {
                Some(n) => format!("; rows {}..{} kept", spec.offset + 1, spec.offset + n),
                None => String::new(),
            };
            match &spec.group {
                Some(g) => {
                    let what = if g.keys.is_empty() {
                        "all rows form one group".to_string()
                    } else {
                        let cols: Vec<String> =
                            g.keys.iter().map(|k| format!("column {}", k + 1)).collect();
                        format!("grouped by {}", cols.join(", "))
                    };
                    let order = if spec.order.is_empty() && g.sorted_by_key {
                        "ordered by the group key".to_string()
                    } else {
                        order
                    };
                    let distinct = match g.distinct_arg {
                        Some(c) => format!(
                            "; COUNT(DISTINCT) folds by group and column {} first, so a value found on several shards counts once",
                            c + 1
                        ),
                        None => String::new(),
                    };
                    let _ = writeln!(
                        out,
                        "results: one result set; the shards' rows {what}, folded (COUNT and SUM added, MIN and MAX compared, other columns from the first row{distinct}), {order}{limit} (all groups held in memory, at most 64 MiB)"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "results: one result set, rows {order}{limit} (at most one row per shard held at a time)"
                    );
                }
            }
        }
        ShardPlan::Sequence {
            sequence,
            key,
            rows,
        } => {
            let _ = writeln!(
                out,
                "runs on: the shard(s) of {rows} new {key} value(s) taken from sequence {sequence} (in blocks), added to the statement"
            );
            let _ = writeln!(
                out,
                "results: one OK whose insert id (and LAST_INSERT_ID()) is the first new {key}"
            );
        }
        ShardPlan::SplitInsert(parts) => {
            let _ = writeln!(out, "runs on: split by row, one INSERT per shard:");
            for (i, part) in parts {
                let text = part.render(sql.as_bytes()).unwrap_or_default();
                let text = String::from_utf8_lossy(&text);
                let _ = writeln!(out, "  {}: {text}", servers(&routes[i]));
            }
            let _ = writeln!(
                out,
                "results: one OK with the affected rows summed; not atomic across shards (the first error stops it)"
            );
        }
        ShardPlan::Reject(msg) => {
            let _ = writeln!(out, "refused: ERR 1105 (HY000) {msg}");
        }
        ShardPlan::NeedColumns(table) => {
            let _ = writeln!(
                out,
                "an INSERT without a column list: the shard of each row is found once the column order of {table} is read from the keyspace's first shard"
            );
        }
        ShardPlan::NotUnderstood(msg) => {
            let _ = writeln!(
                out,
                "not understood: a shard's server prepares it (runs nothing); its syntax error is the answer, else ERR 1105 (HY000) {msg}"
            );
        }
    }
    out
}
