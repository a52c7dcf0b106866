//! The shards' answers to one multi-shard read, packet by packet, behind a small trait: the
//! session's held connections in the proxy, rows in memory in the primitives' tests.

use std::future::Future;
use std::sync::Arc;

use crate::protocol::consts::status;
use crate::protocol::wire::Reader;

use super::Pinned;

/// A shard's result-set header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// Column count and definitions (and the EOF after them without DEPRECATE_EOF), as
    /// payloads to forward as they are.
    Columns(Vec<Vec<u8>>),
    /// An OK: no result set.
    NoRows,
    /// An ERR packet's payload, which ends the shard's answer.
    Error(Vec<u8>),
}

/// The next packet of a shard's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Row(Vec<u8>),
    End {
        status: u16,
        warnings: u16,
    },
    /// An ERR packet's payload, which ends the shard's answer.
    Error(Vec<u8>),
}

/// Shard `shard` (an index into the read's shards) failed mid-answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub shard: usize,
    pub msg: String,
}

/// The shards of one read, by index. A shard whose answer is not read to its end must be
/// discarded: its connection is mid-answer.
pub trait ShardRows: Send {
    fn count(&self) -> usize;
    fn header(&mut self, shard: usize) -> impl Future<Output = Result<Header, Lost>> + Send;
    fn next(&mut self, shard: usize) -> impl Future<Output = Result<Next, Lost>> + Send;
    fn discard(&mut self, shard: usize);

    fn discard_from(&mut self, first: usize) {
        for k in first..self.count() {
            self.discard(k);
        }
    }
}

/// Status and warning count of a result set's terminator (EOF, or OK with the 0xFE header).
pub fn terminator(p: &[u8], deprecate_eof: bool) -> (u16, u16) {
    let mut r = Reader::new(p);
    let _ = r.u8();
    if deprecate_eof {
        let _ = r.lenenc();
        let _ = r.lenenc();
        let status = r.u16().unwrap_or(status::AUTOCOMMIT);
        let warnings = r.u16().unwrap_or(0);
        (status, warnings)
    } else {
        let warnings = r.u16().unwrap_or(0);
        let status = r.u16().unwrap_or(status::AUTOCOMMIT);
        (status, warnings)
    }
}

/// Whether a row-stream payload is its terminator rather than a row (a row can start with
/// 0xFE too: a length-encoded string of 2^24 bytes or more).
fn is_terminator(p: &[u8], deprecate_eof: bool) -> bool {
    p.first() == Some(&0xFE) && p.len() < 0xFF_FFFF && (deprecate_eof || p.len() < 9)
}

/// The shards' answers on the connections a session holds, one per address.
pub struct HeldShards<'a> {
    pub pinned: &'a mut Pinned,
    pub addrs: &'a [Arc<str>],
    pub deprecate_eof: bool,
}

impl HeldShards<'_> {
    async fn payload(&mut self, shard: usize) -> Result<Vec<u8>, Lost> {
        let lost = |msg: String| Lost { shard, msg };
        let addr = self
            .addrs
            .get(shard)
            .ok_or_else(|| lost("no such shard".into()))?;
        let conn = self
            .pinned
            .find(addr)
            .ok_or_else(|| lost("no connection held".into()))?;
        match conn.io.read_frame(1 << 30).await {
            Ok(Some(f)) => Ok(f.payload().into_owned()),
            Ok(None) => Err(lost("closed the connection".into())),
            Err(e) => Err(lost(e.to_string())),
        }
    }

    /// The shard's answer is over: its connection can be reused.
    fn answered(&mut self, shard: usize, end: Option<u16>) {
        let Some(conn) = self.addrs.get(shard).and_then(|a| self.pinned.find(a)) else {
            return;
        };
        conn.in_flight = false;
        if let Some(status) = end {
            conn.io.maybe_shrink();
            conn.in_txn = status & status::IN_TRANS != 0;
        }
    }
}

impl ShardRows for HeldShards<'_> {
    fn count(&self) -> usize {
        self.addrs.len()
    }

    async fn header(&mut self, shard: usize) -> Result<Header, Lost> {
        let head = self.payload(shard).await?;
        match head.first() {
            Some(0xFF) => {
                self.answered(shard, None);
                return Ok(Header::Error(head));
            }
            Some(0x00) => {
                self.answered(shard, None);
                return Ok(Header::NoRows);
            }
            _ => {}
        }
        let columns = Reader::new(&head)
            .lenenc()
            .ok()
            .flatten()
            .ok_or_else(|| Lost {
                shard,
                msg: "a malformed column count".into(),
            })?;
        let mut packets = vec![head];
        for _ in 0..columns {
            packets.push(self.payload(shard).await?);
        }
        if !self.deprecate_eof {
            // The EOF after the definitions is forwarded with them (it is not a definition).
            packets.push(self.payload(shard).await?);
        }
        Ok(Header::Columns(packets))
    }

    async fn next(&mut self, shard: usize) -> Result<Next, Lost> {
        let p = self.payload(shard).await?;
        if p.first() == Some(&0xFF) {
            self.answered(shard, None);
            return Ok(Next::Error(p));
        }
        if is_terminator(&p, self.deprecate_eof) {
            let (status, warnings) = terminator(&p, self.deprecate_eof);
            self.answered(shard, Some(status));
            return Ok(Next::End { status, warnings });
        }
        Ok(Next::Row(p))
    }

    fn discard(&mut self, shard: usize) {
        if let Some(addr) = self.addrs.get(shard) {
            self.pinned.discard(addr);
        }
    }
}

#[cfg(test)]
pub(crate) mod memory {
    //! Shards whose answers are lists of packets, for the primitives' tests.
    use std::collections::VecDeque;

    use super::*;

    /// One shard's answer as it will be read.
    pub enum Item {
        Header(Header),
        Next(Next),
        /// The connection breaks here.
        Lost,
    }

    pub struct MemoryShards {
        pub shards: Vec<VecDeque<Item>>,
        pub discarded: Vec<bool>,
    }

    /// A text-protocol row of `values` (`None`: NULL).
    pub fn text_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        for v in values {
            match v {
                None => out.extend_from_slice(&[0xFB]),
                Some(v) => crate::protocol::wire::put_lenenc_bytes(&mut out, v.as_bytes()),
            }
        }
        out.to_vec()
    }

    /// A column definition of `name` with MySQL type `ty` (0x03 LONG, 0xFD VAR_STRING).
    pub fn column_def(name: &str, ty: u8) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        for s in ["def", "db", "t", "t", name, name] {
            crate::protocol::wire::put_lenenc_bytes(&mut out, s.as_bytes());
        }
        out.extend_from_slice(&[0x0C, 33, 0, 255, 0, 0, 0, ty, 0, 0, 0, 0, 0]);
        out.to_vec()
    }

    /// A shard answering `columns` then `rows` (each a list of values), ending with an EOF
    /// without DEPRECATE_EOF.
    pub fn shard(columns: &[(&str, u8)], rows: &[&[Option<&str>]]) -> VecDeque<Item> {
        let mut header = vec![vec![columns.len() as u8]];
        header.extend(columns.iter().map(|(n, t)| column_def(n, *t)));
        header.push(vec![0xFE, 0, 0, 2, 0]);
        let mut items: VecDeque<Item> = VecDeque::new();
        items.push_back(Item::Header(Header::Columns(header)));
        for r in rows {
            items.push_back(Item::Next(Next::Row(text_row(r))));
        }
        items.push_back(Item::Next(Next::End {
            status: status::AUTOCOMMIT,
            warnings: 0,
        }));
        items
    }

    impl MemoryShards {
        pub fn new(shards: Vec<VecDeque<Item>>) -> Self {
            let discarded = vec![false; shards.len()];
            MemoryShards { shards, discarded }
        }

        /// Every shard was either read to its end or discarded.
        pub fn all_settled(&self) -> bool {
            self.shards
                .iter()
                .zip(&self.discarded)
                .all(|(s, d)| *d || s.is_empty())
        }

        fn pop(&mut self, shard: usize) -> Result<Item, Lost> {
            self.shards
                .get_mut(shard)
                .and_then(VecDeque::pop_front)
                .ok_or(Lost {
                    shard,
                    msg: "read past the answer".into(),
                })
        }
    }

    impl ShardRows for MemoryShards {
        fn count(&self) -> usize {
            self.shards.len()
        }

        async fn header(&mut self, shard: usize) -> Result<Header, Lost> {
            match self.pop(shard)? {
                Item::Header(h) => Ok(h),
                _ => Err(Lost {
                    shard,
                    msg: "lost (or a row where the header is)".into(),
                }),
            }
        }

        async fn next(&mut self, shard: usize) -> Result<Next, Lost> {
            match self.pop(shard)? {
                Item::Next(n) => Ok(n),
                _ => Err(Lost {
                    shard,
                    msg: "lost (or a header where a row is)".into(),
                }),
            }
        }

        fn discard(&mut self, shard: usize) {
            if let Some(d) = self.discarded.get_mut(shard) {
                *d = true;
            }
        }
    }
}
