//! Concatenate: every shard's rows one shard after the other, under the first shard's header
//! and one end (no order asked for, nothing to fold).

use crate::protocol::consts::status;

use super::shard_rows::{Header, Lost, Next, ShardRows};
use super::sink::{ClientSink, ClientWrite};

/// Streams the shards' rows to `sink`. A shard's ERR ends the answer (the shards not read to
/// their end are discarded); `Err` when a shard was lost mid-answer (the client got what was
/// buffered and cannot be resynchronised).
pub async fn concat<S: ShardRows, W: ClientWrite>(
    shards: &mut S,
    sink: &mut ClientSink<'_, W>,
) -> Result<(), Lost> {
    let mut warnings: u16 = 0;
    let mut last_status = status::AUTOCOMMIT;
    let mut header_sent = false;
    for k in 0..shards.count() {
        match shards.header(k).await {
            Ok(Header::Columns(packets)) => {
                if !header_sent {
                    for p in &packets {
                        if sink.packet(p).await.is_err() {
                            shards.discard_from(k);
                            return Ok(());
                        }
                    }
                    header_sent = true;
                }
            }
            Ok(Header::NoRows) => continue,
            Ok(Header::Error(err)) => {
                shards.discard_from(k + 1);
                let _ = sink.server_error(&err).await;
                return Ok(());
            }
            Err(lost) => return Err(abandon(shards, sink, k, lost).await),
        }
        loop {
            match shards.next(k).await {
                Ok(Next::Row(r)) => {
                    if sink.packet(&r).await.is_err() {
                        shards.discard_from(k);
                        return Ok(());
                    }
                }
                Ok(Next::End {
                    status,
                    warnings: w,
                }) => {
                    warnings = warnings.saturating_add(w);
                    last_status = status;
                    break;
                }
                Ok(Next::Error(e)) => {
                    shards.discard_from(k + 1);
                    let _ = sink.server_error(&e).await;
                    return Ok(());
                }
                Err(lost) => return Err(abandon(shards, sink, k, lost).await),
            }
        }
    }
    let _ = if header_sent {
        sink.end_rows(last_status, warnings).await
    } else {
        sink.ok(last_status).await
    };
    Ok(())
}

/// Shard `k` was lost: it and the shards after it are discarded, the client gets what is
/// buffered.
pub(super) async fn abandon<S: ShardRows, W: ClientWrite>(
    shards: &mut S,
    sink: &mut ClientSink<'_, W>,
    k: usize,
    lost: Lost,
) -> Lost {
    shards.discard_from(k);
    sink.abandon().await;
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::shard_rows::memory::{shard, text_row, Item, MemoryShards};
    use crate::executor::sink::tests::packets;

    const COLS: &[(&str, u8)] = &[("id", 0x03)];

    #[tokio::test]
    async fn rows_of_every_shard_under_one_header_and_one_end() {
        let mut shards = MemoryShards::new(vec![
            shard(COLS, &[&[Some("1")], &[Some("2")]]),
            shard(COLS, &[]),
            shard(COLS, &[&[Some("3")]]),
        ]);
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        concat(&mut shards, &mut sink).await.unwrap();
        let got = packets(&client);
        // count, definition, EOF, 3 rows, EOF
        assert_eq!(got.len(), 7);
        assert_eq!(got[3].1, text_row(&[Some("1")]));
        assert_eq!(got[5].1, text_row(&[Some("3")]));
        assert_eq!(got[6].1[0], 0xFE);
        let seqs: Vec<u8> = got.iter().map(|p| p.0).collect();
        assert_eq!(seqs, (1..=7).collect::<Vec<u8>>());
        assert!(shards.all_settled());
    }

    #[tokio::test]
    async fn an_error_from_a_later_shard_mid_header_is_the_whole_answer() {
        let mut failing = std::collections::VecDeque::new();
        failing.push_back(Item::Header(Header::Error(
            b"\xFF\x7a\x04#42S02gone".to_vec(),
        )));
        let mut shards = MemoryShards::new(vec![
            shard(COLS, &[&[Some("1")]]),
            failing,
            shard(COLS, &[&[Some("3")]]),
        ]);
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        concat(&mut shards, &mut sink).await.unwrap();
        assert_eq!(
            packets(&client),
            vec![(1, b"\xFF\x7a\x04#42S02gone".to_vec())]
        );
        // The third shard was never read: its connection must not be reused.
        assert!(shards.discarded[2]);
        assert!(shards.all_settled());
    }

    #[tokio::test]
    async fn a_lost_shard_is_reported_and_the_rest_discarded() {
        let mut broken = shard(COLS, &[&[Some("2")]]);
        broken.pop_back();
        broken.push_back(Item::Lost);
        let mut shards = MemoryShards::new(vec![broken, shard(COLS, &[&[Some("3")]])]);
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        let err = concat(&mut shards, &mut sink).await.unwrap_err();
        assert_eq!(err.shard, 0);
        assert!(shards.discarded[0] && shards.discarded[1]);
    }

    #[tokio::test]
    async fn shards_without_rows_answer_one_ok() {
        let ok = || {
            let mut s = std::collections::VecDeque::new();
            s.push_back(Item::Header(Header::NoRows));
            s
        };
        let mut shards = MemoryShards::new(vec![ok(), ok()]);
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        concat(&mut shards, &mut sink).await.unwrap();
        let got = packets(&client);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1[0], 0x00);
    }
}
