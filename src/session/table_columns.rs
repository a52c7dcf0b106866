//! Planning on a sharded keyspace with the column order of a table that an INSERT without a
//! column list names: read from the keyspace's first shard when the proxy does not know it.

use super::Session;
use crate::planner::table_columns;
use crate::planner::{Route, ShardPlan};

/// The refusal when a table's columns stay unknown.
pub(super) fn columns_unknown(table: &str) -> String {
    format!(
        "shardgate: INSERT without a column list into {table}: its column order is not known (name the columns)"
    )
}

impl Session {
    /// [`crate::planner::Planner::plan_shards`] (`None`: the keyspace is not sharded), reading
    /// a table's columns first when the plan needs them. Never returns `NeedColumns`.
    pub(super) async fn plan_shards_reading_columns(
        &self,
        sql: &str,
    ) -> Option<(ShardPlan, Vec<Route>)> {
        let planner = self.shared.planner();
        let ctx = self.plan_ctx();
        let (plan, routes) = planner
            .plan_shards(sql, &ctx)
            .map(|(p, r)| (p, r.to_vec()))?;
        let ShardPlan::NeedColumns(table) = plan else {
            return Some((plan, routes));
        };
        let keyspace = planner.keyspace_for(&ctx)?.to_string();
        let first = routes.first()?.clone();
        let plan = match self.read_columns(&first, &keyspace, &table).await {
            Ok(Some(columns)) => {
                planner.table_columns().put(&keyspace, &table, columns);
                match planner.plan_shards(sql, &ctx) {
                    Some((ShardPlan::NeedColumns(_), _)) | None => {
                        ShardPlan::Reject(columns_unknown(&table))
                    }
                    Some((plan, _)) => plan,
                }
            }
            Ok(None) => ShardPlan::Reject(format!(
                "shardgate: INSERT without a column list into {table}: shard {} shows no such table to this user",
                first.shard
            )),
            Err(e) => ShardPlan::Reject(format!(
                "shardgate: INSERT without a column list into {table}: its columns could not be read from shard {}: {e}",
                first.shard
            )),
        };
        Some((plan, routes))
    }

    /// `table`'s columns in order on `route`'s primary, as the session's user (`Ok(None)`:
    /// not found).
    async fn read_columns(
        &self,
        route: &Route,
        keyspace: &str,
        table: &str,
    ) -> Result<Option<Vec<String>>, String> {
        let mut conn = self
            .shared
            .pools
            .get(
                &route.addr,
                &self.user.name,
                &self.secret,
                self.conn_key(),
                None,
                0,
            )
            .await
            .map_err(|e| e.to_string())?;
        match conn
            .query_value_at(&table_columns::query(keyspace, table), 1)
            .await
        {
            Ok(Ok(v)) => Ok(table_columns::parse(v.as_deref())),
            // No such table, or not one this user may see.
            Ok(Err(e)) if matches!(e.code, 1146 | 1142 | 1049) => Ok(None),
            Ok(Err(e)) => Err(e.message),
            Err(e) => Err(e.to_string()),
        }
    }
}
