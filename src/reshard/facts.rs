//! What a source primary says about a keyspace's tables and binlog: the inputs of a plan's
//! row estimates and of `reshard start`'s refusals.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::{Plan, SourceFacts};
use crate::ha::server::{Creds, Server};
use crate::ha::HaError;
use crate::shardmap::ShardMap;

/// `schema`'s base tables on `server`: estimated rows, those without a primary key, and the
/// binlog settings the catch-up needs.
pub async fn read(server: &mut Server, schema: &str) -> Result<SourceFacts, HaError> {
    let schema = schema.replace('\\', "\\\\").replace('\'', "\\'");
    let rows: BTreeMap<String, u64> = server
        .pairs(&format!(
            "SELECT TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = '{schema}' AND TABLE_TYPE = 'BASE TABLE'"
        ))
        .await?
        .into_iter()
        .map(|(t, n)| (t, n.parse().unwrap_or(0)))
        .collect();
    // Two one-table queries, the difference taken here: MariaDB 10.11.19 crashes (signal 11
    // in create_tmp_table_for_schema) within a few dozen runs of the LEFT JOIN of TABLES and
    // TABLE_CONSTRAINTS that said this in one query, which took a source primary down at
    // `reshard start`.
    let keyed: BTreeSet<String> = server
        .pairs(&format!(
            "SELECT TABLE_NAME, '' FROM information_schema.TABLE_CONSTRAINTS \
             WHERE TABLE_SCHEMA = '{schema}' AND CONSTRAINT_TYPE = 'PRIMARY KEY'"
        ))
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let no_primary_key = rows
        .keys()
        .filter(|t| !keyed.contains(*t))
        .cloned()
        .collect();
    let vars = server
        .pairs("SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format")
        .await?;
    let image = server.value("SELECT @@GLOBAL.binlog_row_image").await?;
    let (log_bin, format) = vars.into_iter().next().unwrap_or_default();
    Ok(SourceFacts {
        rows,
        no_primary_key,
        binlog_format: format,
        binlog_row_image: image,
        log_bin: log_bin == "1",
    })
}

/// Reads every current shard's facts (the keyspace's name is its database's) and estimates
/// `plan` with them. A source that does not answer is a blocker, not an error: the plan is
/// still worth printing.
pub async fn estimate(plan: &mut Plan, map: &ShardMap, creds: &Creds) {
    let mut facts = BTreeMap::new();
    let mut unreachable = Vec::new();
    let shards = map
        .keyspace
        .get(&plan.keyspace)
        .map(|k| k.shards.clone())
        .unwrap_or_default();
    for shard in shards {
        // A connection lost once is not yet a dead primary.
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            let got = async {
                let mut s = Server::connect(&shard.primary, creds).await?;
                let f = read(&mut s, &plan.keyspace).await;
                s.close().await;
                f
            };
            match got.await {
                Ok(f) => {
                    facts.insert(shard.name.clone(), f);
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            unreachable.push(format!(
                "{}: primary {} did not answer: {e}",
                shard.name, shard.primary
            ));
        }
    }
    plan.estimate(&facts);
    plan.blockers.extend(unreachable);
}
