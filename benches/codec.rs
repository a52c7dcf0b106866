//! Hot-path cost of the packet codec: scanning a point-select response (what every
//! forwarded query pays) and a 1,000-row result, and reading a client's command frame.
//! Run: `cargo bench --bench codec`.

use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardgate::protocol::packet::{put_packet, read_frame};
use shardgate::protocol::response::{Expect, Scanner};

fn result_set(rows: usize, row: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let mut seq = put_packet(&mut out, 1, &[1]);
    seq = put_packet(&mut out, seq, b"\x03def\x03app\x07sbtest1\x07sbtest1\x01c\x01c\x0c\x21\x00\x78\x00\x00\x00\xfe\x00\x00\x00\x00\x00");
    for _ in 0..rows {
        seq = put_packet(&mut out, seq, row);
    }
    let mut ok = BytesMut::new();
    ok.put_slice(&[0xFE, 0, 0, 2, 0, 0, 0]);
    put_packet(&mut out, seq, &ok);
    out
}

fn scan_all(wire: &BytesMut) -> usize {
    let mut buf = wire.clone();
    let mut sc = Scanner::new(Expect::Result, true, 1);
    let (n, _) = sc.scan(&mut buf);
    n
}

fn bench(c: &mut Criterion) {
    let row: Vec<u8> = std::iter::once(120u8)
        .chain(std::iter::repeat_n(b'x', 120))
        .collect();
    let point = result_set(1, &row);
    let many = result_set(1000, &row);
    let mut g = c.benchmark_group("scan_response");
    g.throughput(Throughput::Elements(1));
    g.bench_function("point_select_1_row", |b| {
        b.iter(|| black_box(scan_all(&point)))
    });
    g.throughput(Throughput::Bytes(many.len() as u64));
    g.bench_function("1000_rows_121_bytes", |b| {
        b.iter(|| black_box(scan_all(&many)))
    });
    g.finish();

    let mut cmd = BytesMut::new();
    let mut q = vec![3u8];
    q.extend_from_slice(b"SELECT c FROM sbtest1 WHERE id=4242");
    put_packet(&mut cmd, 0, &q);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    c.bench_function("read_command_frame", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut src = &cmd[..];
                let mut buf = BytesMut::with_capacity(8192);
                black_box(read_frame(&mut src, &mut buf, 1 << 24).await.ok())
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
