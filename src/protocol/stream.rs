//! A TCP connection carrying MySQL packets, with its own read buffer: used for clients and
//! for backend connections alike.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::packet::{read_frame, read_frame_within, ByteBudget, Frame, PacketError, ReadLimits};

/// Initial read buffer; it grows only while a large packet is being assembled.
const READ_BUF: usize = 8 * 1024;
/// A buffer grown past this is given back once it is empty, so idle connections stay small.
const SHRINK_ABOVE: usize = 256 * 1024;

pub struct PacketStream {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
    /// A copy of what is written, for the result cache.
    capture: Option<Capture>,
}

/// Bytes written while capturing, up to a limit (past it the copy is given up).
struct Capture {
    bytes: Vec<u8>,
    limit: usize,
    overflow: bool,
}

impl PacketStream {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        PacketStream {
            stream,
            rbuf: BytesMut::new(),
            capture: None,
        }
    }

    /// Reads one logical packet of at most `max` payload bytes; `None` on a clean close.
    pub async fn read_frame(&mut self, max: usize) -> Result<Option<Frame>, PacketError> {
        if self.rbuf.capacity() == 0 {
            self.rbuf.reserve(READ_BUF);
        }
        let f = read_frame(&mut self.stream, &mut self.rbuf, max).await;
        self.maybe_shrink();
        f
    }

    /// Reads a client's command: its first byte may take however long (an idle client), then
    /// the client may stay silent at most `idle` between reads (MariaDB's
    /// `net_read_timeout`); while a large packet arrives its bytes count against `budget`.
    pub async fn read_command(
        &mut self,
        max: usize,
        budget: &ByteBudget,
        idle: std::time::Duration,
    ) -> Result<Option<Frame>, PacketError> {
        if self.rbuf.capacity() == 0 {
            self.rbuf.reserve(READ_BUF);
        }
        if self.rbuf.is_empty() && self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Ok(None);
        }
        let limits = ReadLimits {
            budget: Some(budget),
            idle: Some(idle),
        };
        let f = read_frame_within(&mut self.stream, &mut self.rbuf, max, limits).await;
        self.maybe_shrink();
        f
    }

    /// Reads more bytes into the buffer; 0 means the peer closed.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(READ_BUF.max(self.rbuf.len()));
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    pub async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        if let Some(c) = &mut self.capture {
            if !c.overflow {
                if c.bytes.len() + b.len() > c.limit {
                    c.overflow = true;
                    c.bytes = Vec::new();
                } else {
                    c.bytes.extend_from_slice(b);
                }
            }
        }
        self.stream.write_all(b).await
    }

    /// Keeps a copy of everything written from now on, up to `limit` bytes.
    pub fn start_capture(&mut self, limit: usize) {
        self.capture = Some(Capture {
            bytes: Vec::new(),
            limit,
            overflow: false,
        });
    }

    /// What was written since `start_capture`; `None` past its limit.
    pub fn take_capture(&mut self) -> Option<Vec<u8>> {
        let c = self.capture.take()?;
        (!c.overflow).then_some(c.bytes)
    }

    pub fn maybe_shrink(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > SHRINK_ABOVE {
            self.rbuf = BytesMut::new();
        }
    }
}
