//! The client's side of a multi-shard answer: the one place that numbers its packets, buffers
//! and flushes them, and frames its end (EOF or OK) or its error, so the primitives that build
//! the answer never write to the client themselves.

use std::future::Future;

use bytes::BytesMut;

use crate::protocol::consts::{errcode, status};
use crate::protocol::packet::{put_err, put_ok, put_packet, OkInfo};
use crate::protocol::stream::PacketStream;

/// Flush to the client past this much buffered output.
pub const FLUSH_AT: usize = 64 * 1024;

/// Where the answer's bytes go: the client's connection, or memory in tests.
pub trait ClientWrite: Send {
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl ClientWrite for PacketStream {
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send {
        PacketStream::write_all(self, bytes)
    }
}

impl ClientWrite for Vec<u8> {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// The client went away while the answer was written: the rest is not worth building.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientGone;

/// One answer to one client command.
pub struct ClientSink<'w, W: ClientWrite> {
    client: &'w mut W,
    out: BytesMut,
    /// Sequence id of the answer's first packet.
    first_seq: u8,
    /// Sequence id of the next packet.
    seq: u8,
    /// Some of the answer reached the client already (it can no longer be replaced).
    flushed: bool,
    deprecate_eof: bool,
    caps: u32,
}

impl<'w, W: ClientWrite> ClientSink<'w, W> {
    /// `caps`: the client's capability flags (CLIENT_DEPRECATE_EOF decides the end's form).
    pub fn new(client: &'w mut W, reply_seq: u8, caps: u32) -> Self {
        ClientSink {
            client,
            out: BytesMut::new(),
            first_seq: reply_seq,
            seq: reply_seq,
            flushed: false,
            deprecate_eof: caps & crate::protocol::consts::cap::DEPRECATE_EOF != 0,
            caps,
        }
    }

    pub fn deprecate_eof(&self) -> bool {
        self.deprecate_eof
    }

    /// Adds one packet, flushing past [`FLUSH_AT`].
    pub async fn packet(&mut self, payload: &[u8]) -> Result<(), ClientGone> {
        self.seq = put_packet(&mut self.out, self.seq, payload);
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ClientGone> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.flushed = true;
        let r = self.client.write_all(&self.out).await;
        self.out.clear();
        r.map_err(|_| ClientGone)
    }

    /// Ends a result set: EOF, or an OK with the 0xFE header under DEPRECATE_EOF. No more
    /// results follow whatever the shards said.
    pub async fn end_rows(&mut self, status: u16, warnings: u16) -> Result<(), ClientGone> {
        let st = status & !status::MORE_RESULTS_EXISTS;
        let mut end = Vec::with_capacity(7);
        if self.deprecate_eof {
            end.extend_from_slice(&[0xFE, 0, 0]);
            end.extend_from_slice(&st.to_le_bytes());
            end.extend_from_slice(&warnings.to_le_bytes());
        } else {
            end.push(0xFE);
            end.extend_from_slice(&warnings.to_le_bytes());
            end.extend_from_slice(&st.to_le_bytes());
        }
        self.seq = put_packet(&mut self.out, self.seq, &end);
        self.flush().await
    }

    /// Ends an answer without rows with an OK.
    pub async fn ok(&mut self, status: u16) -> Result<(), ClientGone> {
        let ok = OkInfo {
            status,
            ..Default::default()
        };
        self.seq = put_ok(&mut self.out, self.seq, self.caps, ok);
        self.flush().await
    }

    /// Ends the answer with a server's ERR packet. Whatever was buffered but not yet sent is
    /// dropped first, so a header with no rows never precedes it; what was sent stays, and the
    /// ERR ends it as a server's would end a result set it had begun.
    pub async fn server_error(&mut self, err: &[u8]) -> Result<(), ClientGone> {
        if !self.flushed {
            self.out.clear();
            self.seq = self.first_seq;
        }
        self.seq = put_packet(&mut self.out, self.seq, err);
        self.flush().await
    }

    /// Ends the answer with the proxy's own error (ERR 1105 unless `code` says otherwise).
    pub async fn error(&mut self, code: Option<(u16, &str)>, msg: &str) -> Result<(), ClientGone> {
        if !self.flushed {
            self.out.clear();
            self.seq = self.first_seq;
        }
        let code = code.unwrap_or(errcode::UNKNOWN);
        self.seq = put_err(&mut self.out, self.seq, code, msg);
        self.flush().await
    }

    /// Sends what is buffered (a shard was lost mid-answer: the client gets what there is).
    pub async fn abandon(&mut self) {
        let _ = self.flush().await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::consts::cap;

    /// The packets of `bytes` as (sequence id, payload).
    pub(crate) fn packets(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 4 <= bytes.len() {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], 0]) as usize;
            out.push((bytes[at + 3], bytes[at + 4..at + 4 + len].to_vec()));
            at += 4 + len;
        }
        out
    }

    #[tokio::test]
    async fn packets_are_numbered_from_the_reply_sequence_and_end_with_eof_or_ok() {
        for (caps, end) in [
            (0u32, vec![0xFE, 1, 0, 2, 0]),
            (cap::DEPRECATE_EOF, vec![0xFE, 0, 0, 2, 0, 1, 0]),
        ] {
            let mut client = Vec::new();
            let mut sink = ClientSink::new(&mut client, 1, caps);
            sink.packet(b"a").await.unwrap();
            sink.packet(b"b").await.unwrap();
            sink.end_rows(status::AUTOCOMMIT | status::MORE_RESULTS_EXISTS, 1)
                .await
                .unwrap();
            let got = packets(&client);
            assert_eq!(
                got,
                vec![(1, b"a".to_vec()), (2, b"b".to_vec()), (3, end.clone())]
            );
        }
    }

    #[tokio::test]
    async fn a_server_error_replaces_an_unsent_header_and_follows_sent_rows() {
        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        sink.packet(b"header").await.unwrap();
        sink.server_error(b"\xFFerr").await.unwrap();
        assert_eq!(packets(&client), vec![(1, b"\xFFerr".to_vec())]);

        let mut client = Vec::new();
        let mut sink = ClientSink::new(&mut client, 1, 0);
        let big = vec![7u8; FLUSH_AT];
        sink.packet(&big).await.unwrap(); // flushed: it reached the client
        sink.server_error(b"\xFFerr").await.unwrap();
        let got = packets(&client);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], (2, b"\xFFerr".to_vec()));
    }
}
