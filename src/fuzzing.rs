//! What each fuzz target checks (`fuzz/fuzz_targets/`), here so that the same checks replay
//! the kept corpora and crashes under stable `cargo test` (`tests/fuzz_regressions.rs`).
//! Every function takes arbitrary bytes and must return without panicking; some also check a
//! property (the frames of a stream do not depend on how it is split).

use std::sync::OnceLock;

use bytes::BytesMut;

use crate::planner::{PlanContext, Planner};
use crate::protocol::packet::{read_frame, Frame};
use crate::protocol::response::{Expect, Scanner};

/// A fuzz target's check of one input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name: each with its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("packet_reader", packet_reader),
    ("frames_split", frames_split),
    ("response_scanner", response_scanner),
    ("handshake_response", handshake_response),
    ("binary_params", binary_params),
    ("digest_classify", digest_classify),
    ("shard_planner", shard_planner),
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("a runtime for the fuzz checks: {e}"))
    })
}

/// Every frame of `stream` as the packet reader reads it, reading from chunks cut at `cuts`.
fn frames(stream: &[u8], cuts: &[usize], max: usize) -> Vec<Result<Frame, String>> {
    let reader = Chunks::new(stream, cuts);
    runtime().block_on(async move {
        let mut reader = reader;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            match read_frame(&mut reader, &mut buf, max).await {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    })
}

/// Bytes handed to the reader in chunks, as a socket may.
struct Chunks {
    chunks: std::collections::VecDeque<Vec<u8>>,
}

impl Chunks {
    fn new(data: &[u8], cuts: &[usize]) -> Self {
        let mut chunks = std::collections::VecDeque::new();
        let mut at = 0;
        for &c in cuts {
            let c = c.min(data.len());
            if c > at {
                chunks.push_back(data[at..c].to_vec());
                at = c;
            }
        }
        chunks.push_back(data[at..].to_vec());
        Chunks { chunks }
    }
}

impl tokio::io::AsyncRead for Chunks {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(mut chunk) = self.chunks.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.chunks.push_front(chunk.split_off(n));
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// Small limits so that the "too large" path is reached too.
const MAX_FRAME: usize = 1 << 16;

pub fn packet_reader(data: &[u8]) {
    let _ = frames(data, &[], MAX_FRAME);
}

/// The first two bytes choose where the stream is cut; the frames must be the same as read
/// whole.
pub fn frames_split(data: &[u8]) {
    let (cut_seed, stream) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as usize, rest),
        _ => return,
    };
    let whole = frames(stream, &[], MAX_FRAME);
    let step = cut_seed % 7 + 1;
    let cuts: Vec<usize> = (0..stream.len())
        .filter(|i| (i + cut_seed) % step == 0)
        .collect();
    let split = frames(stream, &cuts, MAX_FRAME);
    let view = |fs: &[Result<Frame, String>]| -> Vec<Result<(Vec<u8>, u8), String>> {
        fs.iter()
            .map(|f| match f {
                Ok(f) => Ok((f.raw.to_vec(), f.last_seq)),
                Err(e) => Err(e.clone()),
            })
            .collect()
    };
    assert_eq!(
        view(&whole),
        view(&split),
        "cut every {step} bytes from {cut_seed}"
    );
}

/// The first byte chooses the expected response and EOF mode; the scanner must consume the
/// rest without panicking and never claim more bytes than there are.
pub fn response_scanner(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let expect = match mode % 4 {
        0 => Expect::Result,
        1 => Expect::Prepare,
        2 => Expect::Rows,
        _ => Expect::Single,
    };
    let mut sc = Scanner::new(expect, mode & 4 != 0, 1);
    let mut buf = rest.to_vec();
    let mut at = 0;
    for _ in 0..64 {
        let (n, progress) = sc.scan(&mut buf[at..]);
        assert!(n <= buf.len() - at, "scanned past the buffer");
        at += n;
        if n == 0 || matches!(progress, crate::protocol::response::Progress::Done) {
            break;
        }
    }
}

pub fn handshake_response(data: &[u8]) {
    if let Ok(hello) = crate::protocol::handshake::ClientHello::parse(data) {
        let mut out = BytesMut::new();
        hello.encode(&mut out);
    }
    let _ = crate::protocol::handshake::parse_auth_switch(data);
    let _ = crate::protocol::handshake::ServerHello::parse(data);
}

/// The first two bytes give the statement's parameter count; the rest is a COM_STMT_EXECUTE.
pub fn binary_params(data: &[u8]) {
    let (params, payload) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) % 64, rest),
        _ => return,
    };
    let types = crate::backend::prepared::sent_types(payload, params);
    for i in 0..usize::from(params) {
        let _ = crate::backend::prepared::param_value(payload, params, types.as_deref(), i);
    }
}

pub fn digest_classify(data: &[u8]) {
    let _ = crate::planner::digest::digest(data);
    let _ = crate::planner::classify::classify_uncached(data);
    let _ = crate::planner::lex::use_database(data);
    let _ = crate::planner::lex::kill_statement(data);
}

fn planner() -> &'static Planner {
    static P: OnceLock<Planner> = OnceLock::new();
    P.get_or_init(|| {
        let map: crate::shardmap::ShardMap = toml::from_str(
            r#"
            [keyspace.app]
            sharding = "consistent_hash"
            [keyspace.app.tables.t]
            shard_key = "id"
            [keyspace.app.tables.u]
            shard_key = "k"
            [keyspace.app.tables.r]
            reference = true
            [[keyspace.app.shards]]
            name = "s0"
            primary = "127.0.0.1:1"
            [[keyspace.app.shards]]
            name = "s1"
            primary = "127.0.0.1:2"
            "#,
        )
        .unwrap_or_else(|e| panic!("the fuzz shard map: {e}"));
        let health = crate::backend::health::Health::new(&map);
        Planner::new(map, &health, true, |_| std::time::Duration::from_secs(10))
    })
}

pub fn shard_planner(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = PlanContext {
        db: Some("app"),
        default_keyspace: None,
    };
    let _ = planner().plan_shards_uncached(sql, &ctx);
    let _ = planner().plan_shards(sql, &ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_do_not_depend_on_where_the_stream_is_cut() {
        // Three packets, one spanning two physical packets of the small limit's size, then
        // one cut short.
        let mut stream = Vec::new();
        for (seq, payload) in [(0u8, b"\x03SELECT 1".to_vec()), (1, vec![7u8; 300])] {
            let len = (payload.len() as u32).to_le_bytes();
            stream.extend_from_slice(&[len[0], len[1], len[2], seq]);
            stream.extend_from_slice(&payload);
        }
        stream.extend_from_slice(&[10, 0, 0, 2, 1, 2]);
        for seed in 0..64u16 {
            let mut data = seed.to_le_bytes().to_vec();
            data.extend_from_slice(&stream);
            frames_split(&data);
        }
        let whole = frames(&stream, &[], MAX_FRAME);
        assert_eq!(whole.len(), 3);
        assert!(whole[2].is_err(), "the last packet is cut short");
    }

    #[test]
    fn every_check_takes_empty_and_short_input() {
        for (_, check) in TARGETS {
            check(&[]);
            check(&[0]);
            check(&[0xFF, 0xFF, 0xFF, 0xFF]);
        }
    }
}
