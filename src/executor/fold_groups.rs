//! Aggregate/group: every shard's rows read and rows of the same group (GROUP BY, aggregates
//! without it, DISTINCT) folded into one, then finished (AVG, HAVING), ordered (ORDER BY, else
//! the group key when GROUP BY sorts) and trimmed to OFFSET/LIMIT. Holds at most
//! [`MAX_MERGE_BYTES`] of rows.

use std::collections::HashMap;

use crate::planner::shard::GroupSpec;
use crate::protocol::consts::status;

use super::merge::{compare_rows, fold, ColumnMeta, Fold, ValueKind};
use super::merged_read::{Columns, Window};
use super::row_values::{self, group_key, Row};
use super::shard_rows::{Lost, Next, ShardRows};
use super::sink::{ClientSink, ClientWrite};
use super::{concat, group};

/// Most bytes of rows a grouped merge holds before it gives up with an error.
pub const MAX_MERGE_BYTES: usize = 64 << 20;

/// What the fold produced.
enum Folded {
    /// The folded rows, not yet finished nor ordered.
    Rows {
        rows: Vec<Row>,
        status: u16,
        warnings: u16,
    },
    /// A shard's ERR packet (the other shards were read to their end).
    Error(Vec<u8>),
    /// Past the byte bound.
    TooBig,
}

/// Folds the shards' rows (their headers read) and sends the groups.
pub async fn fold_groups<S: ShardRows, W: ClientWrite>(
    shards: &mut S,
    sink: &mut ClientSink<'_, W>,
    group: &GroupSpec,
    keys: &[(usize, bool)],
    columns: &Columns,
    binary: bool,
    window: Window,
) -> Result<(), Lost> {
    let folded = match read_and_fold(shards, group, columns, binary, MAX_MERGE_BYTES).await {
        Ok(f) => f,
        Err(lost) => return Err(concat::abandon(shards, sink, 0, lost).await),
    };
    let (rows, status, warnings) = match folded {
        Folded::Rows {
            rows,
            status,
            warnings,
        } => (rows, status, warnings),
        Folded::Error(e) => {
            let _ = sink.server_error(&e).await;
            return Ok(());
        }
        Folded::TooBig => {
            let msg = format!(
                "shardgate: merging this read's groups needs more than {} MiB; add a shard key to the WHERE clause or narrow it",
                MAX_MERGE_BYTES >> 20
            );
            let _ = sink.error(None, &msg).await;
            return Ok(());
        }
    };
    let metas = &columns.metas;
    let rows = finish(rows, group, keys, columns);
    let shown = &metas[..group.visible.min(metas.len())];
    for row in rows.into_iter().skip(window.skip()).take(window.take()) {
        let mut row = row;
        group::visible(&mut row, group);
        let Some(packet) = row_values::encode(&row, shown, binary) else {
            let msg = "shardgate: a merged value could not be encoded for the binary protocol";
            let _ = sink.error(None, msg).await;
            return Ok(());
        };
        if sink.packet(&packet).await.is_err() {
            return Ok(());
        }
    }
    let _ = sink.end_rows(status, warnings).await;
    Ok(())
}

/// The folded groups made final (AVG, HAVING) and ordered.
fn finish(
    rows: Vec<Row>,
    group: &GroupSpec,
    keys: &[(usize, bool)],
    columns: &Columns,
) -> Vec<Row> {
    let metas = &columns.metas;
    let kind = |c: usize| metas.get(c).map_or(ValueKind::Bytes, |m| m.kind);
    let rows = if group.distinct_arg.is_some() {
        group::fold_distinct(rows, group, &kind, &|r| key_of(r, &group.keys, metas))
    } else {
        rows
    };
    // AVG from its hidden SUM and COUNT, then HAVING: before ordering, which may use them.
    let mut rows = group::finish_groups(rows, group, metas, &columns.defs);
    let order: Vec<(usize, bool)> = if !keys.is_empty() {
        keys.to_vec()
    } else if group.sorted_by_key {
        group.keys.iter().map(|&c| (c, false)).collect()
    } else {
        Vec::new()
    };
    if !order.is_empty() {
        rows.sort_by(|a, b| compare_rows(a, b, &order, metas));
    }
    rows
}

/// A row's key over `cols`, values as the server groups them.
fn key_of(values: &Row, cols: &[usize], metas: &[ColumnMeta]) -> Row {
    cols.iter()
        .map(|&c| {
            let kind = metas.get(c).map_or(ValueKind::Bytes, |m| m.kind);
            values
                .get(c)
                .and_then(|v| v.as_deref())
                .map(|v| group_key(v, kind))
        })
        .collect()
}

/// Reads every open shard to its end, folding rows by group (and, with COUNT(DISTINCT x), by
/// x too: see `GroupSpec::distinct_arg`). Past `max_bytes` or after a shard's ERR the rest is
/// read and dropped, so every connection stays usable.
async fn read_and_fold<S: ShardRows>(
    shards: &mut S,
    group: &GroupSpec,
    columns: &Columns,
    binary: bool,
    max_bytes: usize,
) -> Result<Folded, Lost> {
    let metas = &columns.metas;
    let kind = |c: usize| metas.get(c).map_or(ValueKind::Bytes, |m| m.kind);
    let folds: Vec<Fold> = group
        .columns
        .iter()
        .map(|c| group::fold_of(*c, false))
        .collect();
    let first_keys: Vec<usize> = group
        .keys
        .iter()
        .copied()
        .chain(group.distinct_arg)
        .collect();
    let mut index: HashMap<Row, usize> = HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut bytes = 0usize;
    let (mut status_out, mut warnings_out) = (status::AUTOCOMMIT, 0u16);
    let mut failure = None;
    let mut too_big = false;
    for (k, open) in columns.open.iter().enumerate() {
        let mut open = *open;
        while open {
            let row = match shards.next(k).await? {
                Next::Row(r) => r,
                Next::End { status, warnings } => {
                    open = false;
                    status_out = status;
                    warnings_out = warnings_out.saturating_add(warnings);
                    continue;
                }
                Next::Error(e) => {
                    open = false;
                    failure.get_or_insert(e);
                    continue;
                }
            };
            if failure.is_some() || too_big {
                continue;
            }
            let Some(values) = row_values::decode(&row, metas, binary) else {
                return Err(Lost {
                    shard: k,
                    msg: "sent a row that could not be read".into(),
                });
            };
            let key = key_of(&values, &first_keys, metas);
            match index.get(&key) {
                Some(&i) => {
                    for (c, how) in folds.iter().enumerate() {
                        let v = values.get(c).and_then(|v| v.as_deref());
                        fold(&mut rows[i][c], v, *how, kind(c));
                    }
                }
                None => {
                    bytes += row.len() + key.iter().flatten().map(Vec::len).sum::<usize>();
                    if bytes > max_bytes {
                        too_big = true;
                        continue;
                    }
                    index.insert(key, rows.len());
                    rows.push(values);
                }
            }
        }
    }
    Ok(match (failure, too_big) {
        (Some(e), _) => Folded::Error(e),
        (None, true) => Folded::TooBig,
        (None, false) => Folded::Rows {
            rows,
            status: status_out,
            warnings: warnings_out,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::merge::row_values as text_values;
    use crate::executor::merged_read::merged_read;
    use crate::executor::shard_rows::memory::{shard, MemoryShards};
    use crate::executor::sink::tests::packets;
    use crate::planner::shard::{Combine, MergeSpec};

    const COLS: &[(&str, u8)] = &[("name", 0xFD), ("n", 0x03)];

    /// `SELECT name, COUNT(*) ... GROUP BY name` as the planner describes it.
    fn count_by_name() -> MergeSpec {
        MergeSpec {
            shards: vec![0, 1],
            sql: String::new(),
            order: vec![],
            offset: 0,
            limit: None,
            group: Some(GroupSpec {
                columns: vec![Combine::First, Combine::Count],
                keys: vec![0],
                sorted_by_key: true,
                visible: 2,
                avg: vec![],
                having: None,
                distinct_arg: None,
            }),
        }
    }

    fn rows_of(client: &[u8]) -> Vec<(String, String)> {
        let got = packets(client);
        got[4..got.len() - 1]
            .iter()
            .map(|(_, p)| {
                let v = text_values(p, 2).unwrap();
                let s =
                    |x: Option<&[u8]>| String::from_utf8_lossy(x.unwrap_or(b"NULL")).into_owned();
                (s(v[0]), s(v[1]))
            })
            .collect()
    }

    #[tokio::test]
    async fn groups_of_several_shards_fold_into_one_row_sorted_by_key() {
        let mut shards = MemoryShards::new(vec![
            shard(COLS, &[&[Some("b"), Some("2")], &[Some("a"), Some("1")]]),
            shard(COLS, &[&[Some("B "), Some("3")], &[Some("c"), Some("5")]]),
        ]);
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        merged_read(&mut shards, &mut sink, &count_by_name(), false)
            .await
            .unwrap();
        let want = [("a", "1"), ("b", "5"), ("c", "5")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec();
        assert_eq!(rows_of(&client), want);
        assert!(shards.all_settled());
    }

    #[tokio::test]
    async fn past_the_memory_bound_the_shards_are_read_to_their_end_and_an_error_sent() {
        let mut shards = MemoryShards::new(vec![
            shard(COLS, &[&[Some("a"), Some("1")], &[Some("b"), Some("1")]]),
            shard(COLS, &[&[Some("c"), Some("1")]]),
        ]);
        let spec = count_by_name();
        let group = spec.group.clone().unwrap();
        let columns = Columns {
            metas: COLS
                .iter()
                .filter_map(|(n, t)| {
                    ColumnMeta::parse(&crate::executor::shard_rows::memory::column_def(n, *t))
                })
                .collect(),
            defs: vec![],
            open: vec![true, true],
        };
        // Headers are read by the caller in the proxy; here they are skipped by hand.
        for k in 0..2 {
            shards.header(k).await.unwrap();
        }
        let folded = read_and_fold(&mut shards, &group, &columns, false, 8)
            .await
            .unwrap();
        assert!(matches!(folded, Folded::TooBig));
        assert!(
            shards.all_settled(),
            "every row was read: the connections are reusable"
        );
    }
}
