//! A 1 GiB result passes through the proxy in flat memory: rows are streamed as they
//! arrive, never buffered whole. Its own test binary, so the proxy process is fresh and its
//! peak resident memory (VmHWM) belongs to this test alone.

mod common;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

#[tokio::test]
async fn one_gib_result_streams_in_flat_memory() {
    let env = common::env();
    let mut c = Conn::new(Opts::from_url(&env.proxy_url("app")).expect("url"))
        .await
        .expect("connect");
    let (_, hwm_before) = env.proxy_memory_kib();
    const ROWS: u64 = 1024;
    const ROW_BYTES: u64 = 1 << 20;
    let mut result = c
        .query_iter(format!(
            "SELECT seq, REPEAT(CHAR(65 + seq % 26), {ROW_BYTES}) FROM seq_1_to_{ROWS}"
        ))
        .await
        .expect("query");
    let mut bytes = 0u64;
    let mut rows = 0u64;
    result
        .for_each(|row| {
            let (seq, s): (u64, Vec<u8>) = mysql_async::from_row(row);
            assert_eq!(s.len() as u64, ROW_BYTES);
            assert_eq!(s[0], b'A' + (seq % 26) as u8);
            bytes += s.len() as u64;
            rows += 1;
        })
        .await
        .expect("stream");
    drop(result);
    assert_eq!(rows, ROWS);
    assert_eq!(bytes, 1 << 30);
    let (rss, hwm) = env.proxy_memory_kib();
    eprintln!("proxy memory: VmHWM before {hwm_before} KiB, after {hwm} KiB, VmRSS {rss} KiB");
    // 1 GiB went through; the proxy's peak grew by less than 32 MiB.
    assert!(
        hwm < hwm_before + 32 * 1024,
        "proxy peak memory grew from {hwm_before} KiB to {hwm} KiB"
    );
}
