//! Reads that need rows from several shards and whose results merge by concatenation: the
//! statement runs on every shard at once, and the client gets one result set: the first
//! shard's column definitions, every shard's rows as they arrive (shard by shard), one end.

use std::sync::Arc;

use bytes::BytesMut;

use super::route::Choice;
use super::{identity, Session, SessionError};
use crate::executor::{self, ExecError};
use crate::planner::classify::{Class, Hint};
use crate::planner::Route;
use crate::protocol::consts::{cap, status};
use crate::protocol::packet::{put_packet, Frame};
use crate::protocol::wire::Reader;

/// Flush to the client past this much buffered output.
const FLUSH_AT: usize = 64 * 1024;

/// How a shard's answer ended.
enum End {
    /// Rows done: the terminator's status and warning count.
    Rows { status: u16, warnings: u16 },
    /// The server answered with an error (forwarded to the client).
    Error,
}

impl Session {
    pub(super) async fn scatter(
        &mut self,
        targets: &[Route],
        class: &Arc<Class>,
        hint: Option<Hint>,
        frame: &Frame,
    ) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        // One connection per shard, chosen by the read/write rules within the shard.
        let mut addrs: Vec<Arc<str>> = Vec::with_capacity(targets.len());
        for route in targets {
            let addr = match self.choose(route, class, hint, &[], false) {
                Choice::Replica(r) => r.addr().clone(),
                Choice::Held(a) => a,
                Choice::Primary => route.addr.clone(),
            };
            let addr = match self.connect_for_scatter(&addr, route).await {
                Ok(a) => a,
                Err(e) => return self.report(e, reply_seq).await,
            };
            addrs.push(addr);
        }
        // Send everywhere first, so the shards work in parallel.
        for addr in &addrs {
            let Some(conn) = self.pinned.find(addr) else {
                continue;
            };
            conn.in_flight = true;
            if let Err(e) = conn.io.write_all(&frame.raw).await {
                let msg = format!("shardgate: lost connection to backend {addr}: {e}");
                self.discard_all(&addrs);
                self.send_err(crate::protocol::consts::errcode::UNKNOWN, &msg, reply_seq)
                    .await;
                return Ok(());
            }
        }
        let deprecate_eof = self.caps & cap::DEPRECATE_EOF != 0;
        let mut out = BytesMut::new();
        let mut seq = reply_seq;
        let mut total_warnings: u16 = 0;
        let mut last_status = status::AUTOCOMMIT;
        for (k, addr) in addrs.iter().enumerate() {
            match self
                .relay_shard(addr, k == 0, deprecate_eof, &mut out, &mut seq)
                .await
            {
                Ok(End::Rows { status, warnings }) => {
                    total_warnings = total_warnings.saturating_add(warnings);
                    last_status = status;
                }
                Ok(End::Error) => {
                    // The rest of the shards' answers are not read: close those connections.
                    self.discard_all(&addrs[k + 1..]);
                    let _ = self.io.write_all(&out).await;
                    return Ok(());
                }
                Err(msg) => {
                    self.discard_all(&addrs[k..]);
                    let _ = self.io.write_all(&out).await;
                    return Err(SessionError::Forward(
                        crate::backend::forward::ForwardError::Backend {
                            addr: addr.to_string(),
                            msg,
                            sent: true,
                        },
                    ));
                }
            }
            if out.len() >= FLUSH_AT {
                if self.io.write_all(&out).await.is_err() {
                    self.discard_all(&addrs[k + 1..]);
                    return Ok(());
                }
                out.clear();
            }
        }
        let st = last_status & !status::MORE_RESULTS_EXISTS;
        let mut end = Vec::with_capacity(7);
        if deprecate_eof {
            end.extend_from_slice(&[0xFE, 0, 0]);
            end.extend_from_slice(&st.to_le_bytes());
            end.extend_from_slice(&total_warnings.to_le_bytes());
        } else {
            end.push(0xFE);
            end.extend_from_slice(&total_warnings.to_le_bytes());
            end.extend_from_slice(&st.to_le_bytes());
        }
        put_packet(&mut out, seq, &end);
        let _ = self.io.write_all(&out).await;
        Ok(())
    }

    /// Takes the connection to `addr` (the primary of `route` if a replica cannot be had).
    async fn connect_for_scatter(
        &mut self,
        addr: &Arc<str>,
        route: &Route,
    ) -> Result<Arc<str>, ExecError> {
        let shared = self.shared.clone();
        let who = identity(
            &self.user,
            self.caps,
            self.charset,
            self.db.as_deref(),
            &self.vars,
        );
        let on_replica = *addr != route.addr;
        match executor::connection(&shared.pools, &mut self.pinned, addr, &who).await {
            Ok(_) if !on_replica => return Ok(addr.clone()),
            Ok(_) => {
                if self.replica_caught_up(addr).await {
                    return Ok(addr.clone());
                }
                self.pinned.release(addr);
            }
            Err(_) if on_replica => {
                if let Some(h) = shared.health.get(addr) {
                    h.mark_down();
                }
            }
            Err(e) => return Err(e),
        }
        let who = identity(
            &self.user,
            self.caps,
            self.charset,
            self.db.as_deref(),
            &self.vars,
        );
        executor::connection(&shared.pools, &mut self.pinned, &route.addr, &who).await?;
        Ok(route.addr.clone())
    }

    fn discard_all(&mut self, addrs: &[Arc<str>]) {
        for a in addrs {
            self.pinned.discard(a);
        }
    }

    /// Copies one shard's result set into `out`: its header too if `first`, its rows always,
    /// never its terminator. `Err` when the server failed mid-way (the client cannot be
    /// resynchronised).
    async fn relay_shard(
        &mut self,
        addr: &Arc<str>,
        first: bool,
        deprecate_eof: bool,
        out: &mut BytesMut,
        seq: &mut u8,
    ) -> Result<End, String> {
        let Some(conn) = self.pinned.find(addr) else {
            return Err("no connection held".into());
        };
        let mut read = async || -> Result<Vec<u8>, String> {
            match conn.io.read_frame(1 << 30).await {
                Ok(Some(f)) => Ok(f.payload().into_owned()),
                Ok(None) => Err("closed the connection".into()),
                Err(e) => Err(e.to_string()),
            }
        };
        let head = read().await?;
        match head.first() {
            Some(0xFF) => {
                *seq = put_packet(out, *seq, &head);
                return Ok(End::Error);
            }
            Some(0x00) => {
                // No result set (cannot happen for a SELECT): contributes no rows.
                return Ok(End::Rows {
                    status: status::AUTOCOMMIT,
                    warnings: 0,
                });
            }
            _ => {}
        }
        let columns = Reader::new(&head)
            .lenenc()
            .ok()
            .flatten()
            .ok_or_else(|| "a malformed column count".to_string())?;
        if first {
            *seq = put_packet(out, *seq, &head);
        }
        let defs = columns + u64::from(!deprecate_eof);
        for _ in 0..defs {
            let def = read().await?;
            if first {
                *seq = put_packet(out, *seq, &def);
            }
        }
        loop {
            let p = read().await?;
            match p.first() {
                Some(0xFF) => {
                    *seq = put_packet(out, *seq, &p);
                    return Ok(End::Error);
                }
                Some(0xFE) if p.len() < 0xFF_FFFF && (deprecate_eof || p.len() < 9) => {
                    let (status, warnings) = terminator(&p, deprecate_eof);
                    if let Some(conn) = self.pinned.find(addr) {
                        conn.in_flight = false;
                        conn.io.maybe_shrink();
                    }
                    return Ok(End::Rows { status, warnings });
                }
                _ => {
                    *seq = put_packet(out, *seq, &p);
                }
            }
        }
    }
}

/// Status and warning count of a result set's terminator (EOF, or OK with 0xFE header).
fn terminator(p: &[u8], deprecate_eof: bool) -> (u16, u16) {
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
