//! A TCP connection carrying MySQL packets, with its own read buffer: used for clients and
//! for backend connections alike.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::packet::{read_frame, Frame, PacketError};

/// Initial read buffer; it grows only while a large packet is being assembled.
const READ_BUF: usize = 8 * 1024;
/// A buffer grown past this is given back once it is empty, so idle connections stay small.
const SHRINK_ABOVE: usize = 256 * 1024;

pub struct PacketStream {
    pub stream: TcpStream,
    pub rbuf: BytesMut,
}

impl PacketStream {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        PacketStream {
            stream,
            rbuf: BytesMut::new(),
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

    /// Reads more bytes into the buffer; 0 means the peer closed.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(READ_BUF.max(self.rbuf.len()));
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    pub async fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(b).await
    }

    pub fn maybe_shrink(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > SHRINK_ABOVE {
            self.rbuf = BytesMut::new();
        }
    }
}
