//! A multi-shard read whose rows are merged, not concatenated: the shards' headers (the
//! first shard's goes to the client), the ORDER BY terms found among the columns, then a
//! k-way merge (`merge_sort`) or a fold of groups (`fold_groups`).

use crate::planner::shard::{ColumnRef, MergeSpec, OrderKey};

use super::merge::ColumnMeta;
use super::shard_rows::{Header, Lost, ShardRows};
use super::sink::{ClientSink, ClientWrite};
use super::{concat, fold_groups, group, merge_sort};

/// What the shards' headers told: the columns (of the first shard that has a result set) and
/// which shards have rows to read.
pub struct Columns {
    pub metas: Vec<ColumnMeta>,
    /// The column definitions as the shards sent them (payloads).
    pub defs: Vec<Vec<u8>>,
    pub open: Vec<bool>,
}

/// OFFSET and LIMIT of the merged rows.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub offset: u64,
    pub limit: Option<u64>,
}

impl Window {
    pub fn of(spec: &MergeSpec) -> Self {
        Window {
            offset: spec.offset,
            limit: spec.limit,
        }
    }

    pub fn skip(&self) -> usize {
        usize::try_from(self.offset).unwrap_or(usize::MAX)
    }

    pub fn take(&self) -> usize {
        self.limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX))
    }
}

/// Runs a merged read over `shards` (each already sent the statement) into `sink`.
/// `binary`: the rows come in the binary protocol (an execute). `Err`: a shard was lost
/// mid-answer (the client got what was buffered and cannot be resynchronised).
pub async fn merged_read<S: ShardRows, W: ClientWrite>(
    shards: &mut S,
    sink: &mut ClientSink<'_, W>,
    spec: &MergeSpec,
    binary: bool,
) -> Result<(), Lost> {
    let Some(columns) = headers(shards, sink, spec).await? else {
        return Ok(());
    };
    let keys = match order_columns(&spec.order, &columns.metas) {
        Ok(k) => k,
        Err(msg) => {
            shards.discard_from(0);
            let _ = sink.error(None, &msg).await;
            return Ok(());
        }
    };
    let window = Window::of(spec);
    match &spec.group {
        Some(g) => fold_groups::fold_groups(shards, sink, g, &keys, &columns, binary, window).await,
        None => merge_sort::merge_sort(shards, sink, &keys, &columns, binary, window).await,
    }
}

/// Reads every shard's header; the first result set's goes to the client (without the hidden
/// columns of a grouped read). `None`: the answer is over (a shard's ERR, or the client left).
async fn headers<S: ShardRows, W: ClientWrite>(
    shards: &mut S,
    sink: &mut ClientSink<'_, W>,
    spec: &MergeSpec,
) -> Result<Option<Columns>, Lost> {
    let deprecate_eof = sink.deprecate_eof();
    let mut columns = Columns {
        metas: Vec::new(),
        defs: Vec::new(),
        open: vec![true; shards.count()],
    };
    let mut first = true;
    for k in 0..shards.count() {
        match shards.header(k).await {
            Ok(Header::Columns(packets)) => {
                if !first {
                    continue;
                }
                first = false;
                let n = packets
                    .len()
                    .saturating_sub(1 + usize::from(!deprecate_eof));
                columns.defs = packets.iter().skip(1).take(n).cloned().collect();
                columns.metas = columns
                    .defs
                    .iter()
                    .filter_map(|d| ColumnMeta::parse(d))
                    .collect();
                let sent = match &spec.group {
                    // Columns the merge needs but the client did not ask for stay out of the
                    // client's header.
                    Some(g) => {
                        let mut client = vec![group::column_count(g)];
                        client.extend(group::client_columns(&columns.defs, g));
                        if !deprecate_eof {
                            client.extend(packets.last().cloned());
                        }
                        send_all(sink, &client).await
                    }
                    None => send_all(sink, &packets).await,
                };
                if !sent {
                    shards.discard_from(0);
                    return Ok(None);
                }
            }
            Ok(Header::NoRows) => columns.open[k] = false,
            Ok(Header::Error(err)) => {
                // The reply is this ERR alone: the header buffered for the client is dropped.
                shards.discard_from(0);
                let _ = sink.server_error(&err).await;
                return Ok(None);
            }
            Err(lost) => return Err(concat::abandon(shards, sink, 0, lost).await),
        }
    }
    Ok(Some(columns))
}

async fn send_all<W: ClientWrite>(sink: &mut ClientSink<'_, W>, packets: &[Vec<u8>]) -> bool {
    for p in packets {
        if sink.packet(p).await.is_err() {
            return false;
        }
    }
    true
}

/// ORDER BY terms as (column index, descending); `Err` names a term no column answers to.
pub fn order_columns(
    order: &[OrderKey],
    metas: &[ColumnMeta],
) -> Result<Vec<(usize, bool)>, String> {
    order
        .iter()
        .map(|key| {
            let col = match &key.column {
                ColumnRef::Position(p) => (*p < metas.len()).then_some(*p),
                ColumnRef::Name(n) => metas
                    .iter()
                    .position(|m| m.name.eq_ignore_ascii_case(n))
                    .or_else(|| {
                        metas
                            .iter()
                            .position(|m| m.org_name.eq_ignore_ascii_case(n))
                    }),
            };
            col.map(|c| (c, key.desc)).ok_or_else(|| {
                format!(
                    "shardgate: ORDER BY {:?} on a multi-shard read must name a selected column",
                    key.column
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::shard_rows::memory::{column_def, shard, Item, MemoryShards};
    use crate::executor::sink::tests::packets;

    fn spec(order: Vec<OrderKey>) -> MergeSpec {
        MergeSpec {
            shards: vec![0, 1],
            sql: String::new(),
            order,
            offset: 0,
            limit: None,
            group: None,
        }
    }

    #[test]
    fn order_terms_are_found_by_position_name_or_original_name() {
        let metas: Vec<ColumnMeta> = [column_def("a", 3), column_def("b", 3)]
            .iter()
            .filter_map(|d| ColumnMeta::parse(d))
            .collect();
        let key = |column, desc| OrderKey { column, desc };
        let got = order_columns(
            &[
                key(ColumnRef::Name("B".into()), true),
                key(ColumnRef::Position(0), false),
            ],
            &metas,
        );
        assert_eq!(got, Ok(vec![(1, true), (0, false)]));
        assert!(order_columns(&[key(ColumnRef::Position(2), false)], &metas).is_err());
    }

    #[tokio::test]
    async fn an_unknown_order_term_is_an_error_and_every_shard_is_discarded() {
        let cols: &[(&str, u8)] = &[("a", 3)];
        let mut shards = MemoryShards::new(vec![shard(cols, &[]), shard(cols, &[])]);
        let s = spec(vec![OrderKey {
            column: ColumnRef::Name("zz".into()),
            desc: false,
        }]);
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        merged_read(&mut shards, &mut sink, &s, false)
            .await
            .unwrap();
        let got = packets(&client);
        assert_eq!(got.len(), 1, "the ERR alone, no header: {got:?}");
        assert_eq!(got[0].0, 1);
        assert_eq!(got[0].1[0], 0xFF);
        assert!(shards.discarded.iter().all(|d| *d));
    }

    #[tokio::test]
    async fn an_error_in_a_later_shards_header_replaces_the_first_shards_header() {
        let cols: &[(&str, u8)] = &[("a", 3)];
        let mut failing = std::collections::VecDeque::new();
        failing.push_back(Item::Header(Header::Error(
            b"\xFF\x7a\x04#42S02gone".to_vec(),
        )));
        let mut shards = MemoryShards::new(vec![shard(cols, &[&[Some("1")]]), failing]);
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 3, 0);
        merged_read(&mut shards, &mut sink, &spec(vec![]), false)
            .await
            .unwrap();
        assert_eq!(
            packets(&client),
            vec![(3, b"\xFF\x7a\x04#42S02gone".to_vec())]
        );
        assert!(shards.all_settled());
    }
}
