//! Packet framing: reading whole logical packets (which may span several physical packets of
//! 16 MiB), writing payloads with headers, and the generic OK / ERR / EOF packets.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::consts::{cap, MAX_PAYLOAD};
use super::wire::{put_lenenc, put_lenenc_bytes, Reader, Truncated};

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed in the middle of a packet")]
    Truncated,
    /// `seq` is the sequence id of the header that crossed the limit: a reply follows it.
    #[error("packet of {len} bytes is larger than max_allowed_packet ({max})")]
    TooLarge { len: usize, max: usize, seq: u8 },
    /// The packets arriving on every connection already hold the shared budget's bytes.
    #[error("a {len}-byte packet would pass the bytes of commands still arriving ({max})")]
    OverBudget { len: usize, max: usize, seq: u8 },
    /// The peer stayed silent too long in the middle of a packet.
    #[error("timeout reading a packet")]
    TimedOut { seq: u8 },
}

/// Packets at least this large are counted against a [`ByteBudget`] while they arrive; smaller
/// ones cost less than the count would.
const BUDGETED_FROM: usize = 16 * 1024;

/// Bytes that packets still arriving may hold together, shared by the connections reading
/// them (a client that stalls in the middle of a large packet holds its bytes meanwhile).
#[derive(Debug)]
pub struct ByteBudget {
    used: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl ByteBudget {
    pub fn new(max: usize) -> Self {
        ByteBudget {
            used: std::sync::atomic::AtomicUsize::new(0),
            max,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let before = self.used.fetch_add(n, Relaxed);
        if before.saturating_add(n) > self.max {
            self.used.fetch_sub(n, Relaxed);
            return false;
        }
        true
    }
}

/// What one read holds of a budget; given back when the read ends.
struct Held<'a> {
    budget: Option<&'a ByteBudget>,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.budget {
            b.used
                .fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// One logical packet as it arrived: headers included, so it can be forwarded untouched.
#[derive(Debug, Clone)]
pub struct Frame {
    pub raw: BytesMut,
    /// Sequence id of the last physical packet: a reply continues from it.
    pub last_seq: u8,
    pub payload_len: usize,
}

impl Frame {
    /// The payload without headers; copies only when the packet spans physical packets.
    pub fn payload(&self) -> Cow<'_, [u8]> {
        if self.raw.len() < 4 + MAX_PAYLOAD {
            return Cow::Borrowed(&self.raw[4..]);
        }
        let mut out = Vec::with_capacity(self.raw.len());
        let mut at = 0;
        while at + 4 <= self.raw.len() {
            let len = header_len(&self.raw[at..]);
            let end = (at + 4 + len).min(self.raw.len());
            out.extend_from_slice(&self.raw[at + 4..end]);
            at = end;
        }
        Cow::Owned(out)
    }

    pub fn first_byte(&self) -> Option<u8> {
        self.raw.get(4).copied()
    }
}

/// Payload length from a 4-byte packet header.
#[inline]
pub fn header_len(h: &[u8]) -> usize {
    h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16
}

/// Reads one logical packet. `Ok(None)` means the peer closed cleanly between packets.
/// A packet whose payload exceeds `max` is refused before it is buffered.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Frame>, PacketError> {
    read_frame_within(r, buf, max, ReadLimits::default()).await
}

/// Bounds on one read of a client's command: its large packets' bytes count against `budget`
/// while they arrive, and the peer may stay silent at most `idle` between reads.
#[derive(Clone, Copy, Default)]
pub struct ReadLimits<'a> {
    pub budget: Option<&'a ByteBudget>,
    pub idle: Option<std::time::Duration>,
}

/// Reads more bytes into `buf`, within `idle` (`TimedOut` names the sequence id of the packet
/// begun at the buffer's start).
async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    idle: Option<std::time::Duration>,
) -> Result<usize, PacketError> {
    let Some(idle) = idle else {
        return Ok(r.read_buf(buf).await?);
    };
    match tokio::time::timeout(idle, r.read_buf(buf)).await {
        Ok(n) => Ok(n?),
        Err(_) => Err(PacketError::TimedOut {
            seq: buf.get(3).copied().unwrap_or(0),
        }),
    }
}

/// [`read_frame`] within `limits`.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
    limits: ReadLimits<'_>,
) -> Result<Option<Frame>, PacketError> {
    let budget = limits.budget;
    let mut held = Held { budget, bytes: 0 };
    let mut at = 0usize; // start of the physical packet being read, within buf
    let mut total = 0usize;
    loop {
        while buf.len() < at + 4 {
            if fill(r, buf, limits.idle).await? == 0 {
                return if buf.is_empty() {
                    Ok(None)
                } else {
                    Err(PacketError::Truncated)
                };
            }
        }
        let len = header_len(&buf[at..]);
        total += len;
        if total > max {
            return Err(PacketError::TooLarge {
                len: total,
                max,
                seq: buf[at + 3],
            });
        }
        if let Some(b) = budget.filter(|_| len >= BUDGETED_FROM) {
            if !b.take(len) {
                return Err(PacketError::OverBudget {
                    len: total,
                    max: b.max,
                    seq: buf[at + 3],
                });
            }
            held.bytes += len;
        }
        let end = at + 4 + len;
        if buf.capacity() < end {
            buf.reserve(end - buf.len());
        }
        while buf.len() < end {
            if fill(r, buf, limits.idle).await? == 0 {
                return Err(PacketError::Truncated);
            }
        }
        let last_seq = buf[at + 3];
        at = end;
        if len < MAX_PAYLOAD {
            drop(held);
            return Ok(Some(Frame {
                raw: buf.split_to(at),
                last_seq,
                payload_len: total,
            }));
        }
    }
}

/// Numbers the whole packets in `packets` from `seq` on (a kept answer given to a command whose
/// sequence differs from the one it was kept for).
pub fn renumber(packets: &mut [u8], mut seq: u8) {
    let mut at = 0;
    while at + 4 <= packets.len() {
        let len = usize::from(packets[at])
            | usize::from(packets[at + 1]) << 8
            | usize::from(packets[at + 2]) << 16;
        packets[at + 3] = seq;
        seq = seq.wrapping_add(1);
        at += 4 + len;
    }
}

/// Appends `payload` as packets starting at `seq`; returns the next sequence id.
pub fn put_packet(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
    if chunks.peek().is_none() {
        out.put_slice(&[0, 0, 0, seq]);
        return seq.wrapping_add(1);
    }
    let mut last_len = 0;
    for c in chunks {
        out.put_uint_le(c.len() as u64, 3);
        out.put_u8(seq);
        out.put_slice(c);
        seq = seq.wrapping_add(1);
        last_len = c.len();
    }
    if last_len == MAX_PAYLOAD {
        out.put_slice(&[0, 0, 0, seq]);
        seq = seq.wrapping_add(1);
    }
    seq
}

/// The fields of an OK packet (or an OK-style result terminator) that the proxy reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// Parses an OK packet (header 0x00, or 0xFE for a DEPRECATE_EOF terminator).
pub fn parse_ok(payload: &[u8]) -> Result<OkInfo, Truncated> {
    let mut r = Reader::new(payload);
    r.u8()?;
    let affected_rows = r.lenenc()?.unwrap_or(0);
    let last_insert_id = r.lenenc()?.unwrap_or(0);
    let status = r.u16()?;
    let warnings = r.u16()?;
    Ok(OkInfo {
        affected_rows,
        last_insert_id,
        status,
        warnings,
    })
}

/// Status flags of a result terminator: an EOF packet, or an OK when DEPRECATE_EOF is on.
pub fn terminator_status(payload: &[u8], deprecate_eof: bool) -> Result<u16, Truncated> {
    if deprecate_eof {
        return Ok(parse_ok(payload)?.status);
    }
    let mut r = Reader::new(payload);
    r.u8()?;
    r.u16()?; // warnings
    r.u16()
}

/// An ERR packet's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    pub state: String,
    pub message: String,
}

pub fn parse_err(payload: &[u8]) -> Result<ErrInfo, Truncated> {
    let mut r = Reader::new(payload);
    r.u8()?;
    let code = r.u16()?;
    let mut state = String::new();
    if r.remaining().first() == Some(&b'#') {
        r.u8()?;
        state = String::from_utf8_lossy(r.take(5)?).into_owned();
    }
    Ok(ErrInfo {
        code,
        state,
        message: String::from_utf8_lossy(r.remaining()).into_owned(),
    })
}

/// Appends an OK packet as the client's capabilities expect it.
pub fn put_ok(out: &mut BytesMut, seq: u8, caps: u32, ok: OkInfo) -> u8 {
    put_ok_info(out, seq, caps, ok, b"")
}

/// Appends an OK packet carrying a human-readable `info` ("Rows matched: ..."), which some
/// drivers parse (Node mysql2's `changedRows`).
pub fn put_ok_info(out: &mut BytesMut, seq: u8, caps: u32, ok: OkInfo, info: &[u8]) -> u8 {
    let mut p = BytesMut::with_capacity(16 + info.len());
    p.put_u8(0);
    put_lenenc(&mut p, ok.affected_rows);
    put_lenenc(&mut p, ok.last_insert_id);
    p.put_u16_le(ok.status);
    p.put_u16_le(ok.warnings);
    // Length-encoded with or without session tracking, as MariaDB writes it.
    if caps & cap::SESSION_TRACK != 0 || !info.is_empty() {
        put_lenenc_bytes(&mut p, info);
    }
    put_packet(out, seq, &p)
}

/// The info text of an OK packet (empty if none). MariaDB writes it length-encoded with or
/// without session tracking (the protocol documents the rest of the packet for the latter: a
/// text whose length prefix does not fit is taken that way).
pub fn ok_info_text(payload: &[u8]) -> &[u8] {
    let mut r = Reader::new(payload);
    let fixed = (|| {
        r.u8()?;
        r.lenenc()?;
        r.lenenc()?;
        r.u16()?;
        r.u16()
    })();
    if fixed.is_err() || r.remaining().is_empty() {
        return b"";
    }
    let rest = r.remaining();
    r.lenenc_bytes().unwrap_or(rest)
}

/// Appends an ERR packet with code, SQLSTATE and message.
pub fn put_err(out: &mut BytesMut, seq: u8, (code, state): (u16, &str), msg: &str) -> u8 {
    let mut p = BytesMut::with_capacity(9 + msg.len());
    p.put_u8(0xFF);
    p.put_u16_le(code);
    p.put_u8(b'#');
    p.put_slice(&state.as_bytes()[..5.min(state.len())]);
    p.put_slice(msg.as_bytes());
    put_packet(out, seq, &p)
}

/// Appends an EOF packet (used only when the client did not ask for DEPRECATE_EOF).
pub fn put_eof(out: &mut BytesMut, seq: u8, status: u16) -> u8 {
    let mut p = BytesMut::with_capacity(5);
    p.put_u8(0xFE);
    p.put_u16_le(0);
    p.put_u16_le(status);
    put_packet(out, seq, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_info_text_round_trips() {
        let info = b"Rows matched: 3  Changed: 3  Warnings: 0";
        for caps in [0, cap::SESSION_TRACK] {
            let mut out = BytesMut::new();
            put_ok_info(&mut out, 1, caps, OkInfo::default(), info);
            assert_eq!(ok_info_text(&out[4..]), info);
        }
        let mut out = BytesMut::new();
        put_ok(&mut out, 1, 0, OkInfo::default());
        assert_eq!(ok_info_text(&out[4..]), b"");
        // Unprefixed text to the end of the packet.
        assert_eq!(ok_info_text(b"\0\0\0\x02\0\0\0Records: 2"), b"Records: 2");
    }

    #[tokio::test]
    async fn reads_a_packet_spanning_physical_packets() {
        let payload: Vec<u8> = (0..(MAX_PAYLOAD * 2 + 10)).map(|i| i as u8).collect();
        let mut wire = BytesMut::new();
        assert_eq!(put_packet(&mut wire, 0, &payload), 3);
        let mut src = &wire[..];
        let mut buf = BytesMut::new();
        let f = read_frame(&mut src, &mut buf, 64 << 20)
            .await
            .expect("read")
            .expect("frame");
        assert_eq!(f.last_seq, 2);
        assert_eq!(f.payload_len, payload.len());
        assert_eq!(&f.payload()[..], &payload[..]);
    }

    #[tokio::test]
    async fn an_exact_multiple_ends_with_an_empty_packet() {
        let payload = vec![7u8; MAX_PAYLOAD];
        let mut wire = BytesMut::new();
        assert_eq!(put_packet(&mut wire, 5, &payload), 7);
        let mut src = &wire[..];
        let f = read_frame(&mut src, &mut BytesMut::new(), 1 << 30)
            .await
            .expect("read")
            .expect("frame");
        assert_eq!(f.payload().len(), MAX_PAYLOAD);
    }

    #[tokio::test]
    async fn oversized_and_truncated_packets_are_errors() {
        let mut wire = BytesMut::new();
        put_packet(&mut wire, 0, &[1u8; 2000]);
        let mut src = &wire[..];
        let e = read_frame(&mut src, &mut BytesMut::new(), 1000).await;
        assert!(matches!(
            e,
            Err(PacketError::TooLarge {
                len: 2000,
                seq: 0,
                ..
            })
        ));
        let mut src = &wire[..100];
        let e = read_frame(&mut src, &mut BytesMut::new(), 1 << 20).await;
        assert!(matches!(e, Err(PacketError::Truncated)));
        let mut src: &[u8] = &[];
        assert!(read_frame(&mut src, &mut BytesMut::new(), 10)
            .await
            .expect("clean eof")
            .is_none());
    }

    #[test]
    fn ok_and_err_round_trip() {
        let mut out = BytesMut::new();
        let ok = OkInfo {
            affected_rows: 3,
            last_insert_id: 70000,
            status: 2,
            warnings: 1,
        };
        put_ok(&mut out, 1, cap::SESSION_TRACK, ok);
        assert_eq!(parse_ok(&out[4..]), Ok(ok));
        let mut out = BytesMut::new();
        put_err(&mut out, 1, (1064, "42000"), "syntax");
        let e = parse_err(&out[4..]).expect("err");
        assert_eq!(
            (e.code, e.state.as_str(), e.message.as_str()),
            (1064, "42000", "syntax")
        );
    }
}
