//! Merge-sort: each shard returns its rows in ORDER BY order, and the client gets them merged
//! (k-way, at most one row held per shard) and trimmed to OFFSET/LIMIT; what the limit leaves
//! unread is drained so the connections can be reused.

use std::cmp::Ordering;

use crate::protocol::consts::status;

use super::concat::abandon;
use super::merge::{compare_rows, ColumnMeta};
use super::merged_read::{Columns, Window};
use super::row_values::{self, Row};
use super::shard_rows::{Lost, Next, ShardRows};
use super::sink::{ClientSink, ClientWrite};

/// A shard's next row as it came, with its values once read (`None`: it could not be read).
type Head = (Vec<u8>, Option<Row>);

/// Where the merge is in each shard's answer, and what the ended ones said.
struct Ends {
    open: Vec<bool>,
    status: u16,
    warnings: u16,
    failure: Option<Vec<u8>>,
}

impl Ends {
    /// Takes note of a shard's `next` packet; a row is given back.
    fn note(&mut self, k: usize, next: Next) -> Option<Vec<u8>> {
        match next {
            Next::Row(r) => return Some(r),
            Next::End { status, warnings } => {
                self.status = status;
                self.warnings = self.warnings.saturating_add(warnings);
            }
            Next::Error(e) => {
                self.failure.get_or_insert(e);
            }
        }
        self.open[k] = false;
        None
    }
}

/// The k-way merge of the shards' rows (their headers read) by `keys` (column, descending).
pub async fn merge_sort<S: ShardRows, W: ClientWrite>(
    shards: &mut S,
    sink: &mut ClientSink<'_, W>,
    keys: &[(usize, bool)],
    columns: &Columns,
    binary: bool,
    window: Window,
) -> Result<(), Lost> {
    let metas = &columns.metas;
    let mut ends = Ends {
        open: columns.open.clone(),
        status: status::AUTOCOMMIT,
        warnings: 0,
        failure: None,
    };
    let mut heads: Vec<Option<Head>> = vec![None; shards.count()];
    let (mut skipped, mut sent) = (0usize, 0usize);
    'merge: loop {
        // Refill every open shard's head.
        for (k, head) in heads.iter_mut().enumerate() {
            if !ends.open[k] || head.is_some() {
                continue;
            }
            let next = match shards.next(k).await {
                Ok(n) => n,
                Err(lost) => return Err(abandon(shards, sink, 0, lost).await),
            };
            if let Some(r) = ends.note(k, next) {
                let values = row_values::decode(&r, metas, binary);
                *head = Some((r, values));
            }
            if ends.failure.is_some() {
                break 'merge;
            }
        }
        let Some(k) = smallest(&heads, keys, metas) else {
            break;
        };
        if sent >= window.take() {
            break;
        }
        let Some((row, _)) = heads[k].take() else {
            break;
        };
        if skipped < window.skip() {
            skipped += 1;
            continue;
        }
        if sink.packet(&row).await.is_err() {
            shards.discard_from(0);
            return Ok(());
        }
        sent += 1;
    }
    drain(shards, &mut ends).await;
    let _ = match ends.failure {
        Some(err) => sink.server_error(&err).await,
        None => sink.end_rows(ends.status, ends.warnings).await,
    };
    Ok(())
}

/// The shard whose head comes first; a row that could not be read is passed on first, as it
/// came.
fn smallest(heads: &[Option<Head>], keys: &[(usize, bool)], metas: &[ColumnMeta]) -> Option<usize> {
    let mut best: Option<(usize, &Row)> = None;
    for (k, head) in heads.iter().enumerate() {
        let Some((_, values)) = head else { continue };
        let Some(v) = values else { return Some(k) };
        if best.is_none_or(|(_, cur)| compare_rows(v, cur, keys, metas) == Ordering::Less) {
            best = Some((k, v));
        }
    }
    best.map(|(k, _)| k)
}

/// Reads every open shard to its end (a shard lost meanwhile is discarded).
async fn drain<S: ShardRows>(shards: &mut S, ends: &mut Ends) {
    for k in 0..shards.count() {
        while ends.open[k] {
            match shards.next(k).await {
                Ok(next) => {
                    ends.note(k, next);
                }
                Err(_) => {
                    ends.open[k] = false;
                    shards.discard(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::merged_read::merged_read;
    use crate::executor::shard_rows::memory::{shard, Item, MemoryShards};
    use crate::executor::shard_rows::Next;
    use crate::executor::sink::tests::packets;
    use crate::planner::shard::{ColumnRef, MergeSpec, OrderKey};

    const COLS: &[(&str, u8)] = &[("id", 0x03), ("name", 0xFD)];

    fn spec(desc: bool, offset: u64, limit: Option<u64>) -> MergeSpec {
        MergeSpec {
            shards: vec![0, 1, 2],
            sql: String::new(),
            order: vec![OrderKey {
                column: ColumnRef::Name("id".into()),
                desc,
            }],
            offset,
            limit,
            group: None,
        }
    }

    /// The rows the client got (after the 4 header packets), as their `id` text.
    fn ids(client: &[u8]) -> Vec<Option<String>> {
        let got = packets(client);
        got[4..got.len() - 1]
            .iter()
            .map(|(_, p)| {
                let values = crate::executor::merge::row_values(p, 2).unwrap();
                values[0].map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .collect()
    }

    async fn run(shards: &mut MemoryShards, s: &MergeSpec) -> Vec<u8> {
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        merged_read(shards, &mut sink, s, false).await.unwrap();
        client
    }

    fn three_shards() -> MemoryShards {
        MemoryShards::new(vec![
            shard(COLS, &[&[Some("1"), Some("a")], &[Some("4"), Some("d")]]),
            shard(COLS, &[&[Some("2"), Some("b")], &[Some("10"), Some("j")]]),
            shard(COLS, &[&[Some("3"), Some("c")]]),
        ])
    }

    #[tokio::test]
    async fn rows_come_out_in_order_numbers_as_numbers() {
        let mut shards = three_shards();
        let client = run(&mut shards, &spec(false, 0, None)).await;
        let want: Vec<Option<String>> = ["1", "2", "3", "4", "10"]
            .iter()
            .map(|s| Some(s.to_string()))
            .collect();
        assert_eq!(ids(&client), want);
        assert!(shards.all_settled());
    }

    #[tokio::test]
    async fn offset_and_limit_trim_and_the_rest_is_drained() {
        let mut shards = three_shards();
        let client = run(&mut shards, &spec(false, 1, Some(2))).await;
        assert_eq!(ids(&client), vec![Some("2".into()), Some("3".into())]);
        // Every shard read to its end, none discarded: the connections are reusable.
        assert!(shards.shards.iter().all(|s| s.is_empty()));
        assert!(shards.discarded.iter().all(|d| !d));
    }

    #[tokio::test]
    async fn nulls_sort_first_ascending_and_last_descending() {
        let mk = || {
            MemoryShards::new(vec![
                shard(COLS, &[&[None, Some("x")], &[Some("5"), Some("e")]]),
                shard(COLS, &[&[Some("2"), Some("b")]]),
            ])
        };
        let mut asc = mk();
        let client = run(&mut asc, &spec(false, 0, None)).await;
        assert_eq!(ids(&client), vec![None, Some("2".into()), Some("5".into())]);
        let mut desc = MemoryShards::new(vec![
            shard(COLS, &[&[Some("5"), Some("e")], &[None, Some("x")]]),
            shard(COLS, &[&[Some("2"), Some("b")]]),
        ]);
        let client = run(&mut desc, &spec(true, 0, None)).await;
        assert_eq!(ids(&client), vec![Some("5".into()), Some("2".into()), None]);
    }

    #[tokio::test]
    async fn an_error_on_a_shard_mid_rows_ends_the_answer_framed() {
        let mut failing = shard(COLS, &[&[Some("2"), Some("b")]]);
        failing.pop_back();
        failing.push_back(Item::Next(Next::Error(b"\xFF\x24\x05#HY000boom".to_vec())));
        let mut shards = MemoryShards::new(vec![
            shard(COLS, &[&[Some("1"), Some("a")], &[Some("3"), Some("c")]]),
            failing,
        ]);
        let client = run(&mut shards, &spec(false, 0, None)).await;
        let got = packets(&client);
        let last = got.last().unwrap();
        assert_eq!(last.1, b"\xFF\x24\x05#HY000boom".to_vec());
        // Numbered in one run from the reply's first sequence id.
        let seqs: Vec<u8> = got.iter().map(|p| p.0).collect();
        assert_eq!(seqs, (1..=got.len() as u8).collect::<Vec<u8>>());
        assert!(shards.all_settled());
    }

    #[tokio::test]
    async fn a_lost_shard_discards_every_shard() {
        let mut broken = shard(COLS, &[&[Some("2"), Some("b")]]);
        broken.pop_back();
        broken.push_back(Item::Lost);
        let mut shards = MemoryShards::new(vec![shard(COLS, &[&[Some("1"), Some("a")]]), broken]);
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        let err = merged_read(&mut shards, &mut sink, &spec(false, 0, None), false).await;
        assert_eq!(err.unwrap_err().shard, 1);
        assert!(shards.discarded.iter().all(|d| *d));
    }
}
