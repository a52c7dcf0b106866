//! Prepared statements on pooled connections.
//!
//! A client's statement may run on any connection of the pool, so each connection keeps the
//! statements prepared on it by SQL text (shared by every session using it), prepares a missing
//! one silently, and an execute is rewritten for it: the server's statement id, and the
//! parameter types when that server statement has not yet been given the ones the client
//! bound (clients send types only on their first execute).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::conn::{BackendConn, BackendError};
use crate::protocol::consts::{cap, com, MAX_PAYLOAD};
use crate::protocol::packet::{parse_err, put_packet, ErrInfo, Frame};

/// Statements a connection holds beyond this are closed oldest-first: servers cap prepared
/// statements globally (`max_prepared_stmt_count`).
const MAX_PER_CONN: usize = 512;

/// One statement prepared on one connection.
#[derive(Debug, Clone)]
pub struct ConnStmt {
    pub id: u32,
    pub params: u16,
    /// The parameter types the server statement was last given.
    pub types: Option<Bytes>,
    used: u64,
}

#[derive(Default)]
pub struct StmtCache {
    by_sql: HashMap<Arc<[u8]>, ConnStmt>,
    clock: u64,
}

impl StmtCache {
    pub fn get_mut(&mut self, sql: &[u8]) -> Option<&mut ConnStmt> {
        self.clock += 1;
        let clock = self.clock;
        let s = self.by_sql.get_mut(sql)?;
        s.used = clock;
        Some(s)
    }

    /// Records a statement; returns server ids the caller must close (a replaced duplicate, or
    /// the least recently used when full).
    pub fn insert(&mut self, sql: Arc<[u8]>, id: u32, params: u16) -> Vec<u32> {
        self.clock += 1;
        let mut close = Vec::new();
        let stmt = ConnStmt {
            id,
            params,
            types: None,
            used: self.clock,
        };
        if let Some(old) = self.by_sql.insert(sql, stmt) {
            close.push(old.id);
        }
        if self.by_sql.len() > MAX_PER_CONN {
            let oldest = self
                .by_sql
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, s)| (k.clone(), s.id));
            if let Some((k, id)) = oldest {
                self.by_sql.remove(&k);
                close.push(id);
            }
        }
        close
    }

    pub fn clear(&mut self) {
        self.by_sql.clear();
    }

    pub fn len(&self) -> usize {
        self.by_sql.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sql.is_empty()
    }
}

/// Sends COM_STMT_CLOSE for `ids` (the server does not answer it).
pub async fn close_statements(conn: &mut BackendConn, ids: &[u32]) -> Result<(), BackendError> {
    let mut out = BytesMut::new();
    for id in ids {
        let mut body = [0u8; 5];
        body[0] = com::STMT_CLOSE;
        body[1..].copy_from_slice(&id.to_le_bytes());
        put_packet(&mut out, 0, &body);
    }
    if out.is_empty() {
        return Ok(());
    }
    conn.io
        .write_all(&out)
        .await
        .map_err(|e| BackendError::Packet {
            addr: conn.addr.to_string(),
            source: e.into(),
        })
}

/// Prepares `sql` on `conn` without a client watching, reading and dropping the metadata.
pub async fn prepare_silently(
    conn: &mut BackendConn,
    sql: &Arc<[u8]>,
) -> Result<Result<ConnStmt, ErrInfo>, BackendError> {
    let addr = conn.addr.to_string();
    let perr = |source| BackendError::Packet {
        addr: addr.clone(),
        source,
    };
    let mut body = Vec::with_capacity(sql.len() + 1);
    body.push(com::STMT_PREPARE);
    body.extend_from_slice(sql);
    let mut out = BytesMut::with_capacity(body.len() + 8);
    put_packet(&mut out, 0, &body);
    conn.in_flight = true;
    conn.io.write_all(&out).await.map_err(|e| perr(e.into()))?;
    let first = conn
        .io
        .read_frame(1 << 24)
        .await
        .map_err(perr)?
        .ok_or(BackendError::Closed { addr: addr.clone() })?;
    let p = first.payload();
    let malformed = || BackendError::Malformed {
        addr: addr.clone(),
        what: "PREPARE response",
    };
    match p.first() {
        Some(0xFF) => {
            conn.in_flight = false;
            return Ok(Err(parse_err(&p).map_err(|_| malformed())?));
        }
        Some(0x00) if p.len() >= 9 => {}
        _ => return Err(malformed()),
    }
    let id = u32::from_le_bytes([p[1], p[2], p[3], p[4]]);
    let cols = u16::from_le_bytes([p[5], p[6]]);
    let params = u16::from_le_bytes([p[7], p[8]]);
    drop(p);
    let eofs = conn.key.framing & cap::DEPRECATE_EOF == 0;
    let mut rest = cols as usize + params as usize;
    if eofs {
        rest += usize::from(cols > 0) + usize::from(params > 0);
    }
    for _ in 0..rest {
        conn.io
            .read_frame(1 << 24)
            .await
            .map_err(perr)?
            .ok_or(BackendError::Closed { addr: addr.clone() })?;
    }
    conn.in_flight = false;
    let close = conn.stmts.insert(sql.clone(), id, params);
    close_statements(conn, &close).await?;
    Ok(Ok(ConnStmt {
        id,
        params,
        types: None,
        used: 0,
    }))
}

/// Where the parts of a COM_STMT_EXECUTE payload are, for `params` parameters.
struct ExecuteLayout {
    /// Offset of the new-params-bound flag (after the null bitmap); `None` without parameters.
    bound_at: Option<usize>,
    params: usize,
}

impl ExecuteLayout {
    fn new(params: u16) -> Self {
        let params = params as usize;
        let bound_at = (params > 0).then(|| 10 + params.div_ceil(8));
        ExecuteLayout { bound_at, params }
    }
}

/// The parameter types a COM_STMT_EXECUTE `payload` carries (new-params-bound set), if any.
/// The session keeps them even when no server sees this execute (a cache hit): the client
/// will not send them again.
pub fn sent_types(payload: &[u8], params: u16) -> Option<Bytes> {
    let layout = ExecuteLayout::new(params);
    let bound_at = layout.bound_at?;
    if *payload.get(bound_at)? != 1 {
        return None;
    }
    let types = payload.get(bound_at + 1..bound_at + 1 + 2 * layout.params)?;
    Some(Bytes::copy_from_slice(types))
}

/// The client's COM_STMT_EXECUTE made ready for server statement `stmt`: the id replaced and,
/// when the client did not send types because it sent them before (on whichever connection),
/// the types it last sent (`client_types`) put in. Records types the client sends. `None`:
/// the packet is malformed.
pub fn execute_frame(
    frame: &Frame,
    stmt: &mut ConnStmt,
    client_types: &mut Option<Bytes>,
) -> Option<Frame> {
    let layout = ExecuteLayout::new(stmt.params);
    let mut out = frame.clone();
    if out.raw.len() < 9 {
        return None;
    }
    out.raw[5..9].copy_from_slice(&stmt.id.to_le_bytes());
    let Some(bound_at) = layout.bound_at else {
        return Some(out);
    };
    let payload = frame.payload();
    let bound = *payload.get(bound_at)?;
    if bound == 1 {
        let types = payload.get(bound_at + 1..bound_at + 1 + 2 * layout.params)?;
        let types = Bytes::copy_from_slice(types);
        *client_types = Some(types.clone());
        stmt.types = Some(types);
        return Some(out);
    }
    match client_types {
        Some(t) if stmt.types.as_ref() != Some(t) && t.len() == 2 * layout.params => {
            let mut body = BytesMut::with_capacity(payload.len() + t.len());
            body.put_slice(&payload[..bound_at]);
            body.put_u8(1); // new-params-bound
            body.put_slice(t);
            body.put_slice(&payload[bound_at + 1..]);
            body[1..5].copy_from_slice(&stmt.id.to_le_bytes());
            let mut raw = BytesMut::with_capacity(body.len() + 4 * (1 + body.len() / MAX_PAYLOAD));
            put_packet(&mut raw, 0, &body);
            stmt.types = Some(t.clone());
            Some(Frame {
                raw,
                last_seq: frame.last_seq,
                payload_len: body.len(),
            })
        }
        _ => Some(out),
    }
}

/// One parameter of a COM_STMT_EXECUTE, as far as routing needs it.
#[derive(Debug, PartialEq)]
pub enum ParamValue<'a> {
    Null,
    Int(i128),
    /// Strings and blobs: the bytes as sent.
    Bytes(&'a [u8]),
    /// A DECIMAL's text (`600.0`): a number, as the same literal in query text.
    Decimal(&'a [u8]),
    /// FLOAT or DOUBLE (Node mysql2 binds every JS number as DOUBLE).
    Float(f64),
    /// Dates, times and other types a shard key is not expected to have.
    Other,
}

/// Parameter `index` of a COM_STMT_EXECUTE `payload` for a statement of `params`
/// parameters. `types` are the ones the client bound with an earlier execute, used when this
/// one does not repeat them. `None`: malformed, or types never sent.
pub fn param_value<'a>(
    payload: &'a [u8],
    params: u16,
    types: Option<&[u8]>,
    index: usize,
) -> Option<ParamValue<'a>> {
    let layout = ExecuteLayout::new(params);
    let bound_at = layout.bound_at?;
    if index >= layout.params {
        return None;
    }
    let bitmap = payload.get(10..bound_at)?;
    let mut at = bound_at + 1;
    let types: &[u8] = if *payload.get(bound_at)? == 1 {
        let t = payload.get(at..at + 2 * layout.params)?;
        at += t.len();
        t
    } else {
        types.filter(|t| t.len() == 2 * layout.params)?
    };
    let is_null = |i: usize| bitmap[i / 8] & (1 << (i % 8)) != 0;
    for i in 0..=index {
        if is_null(i) {
            if i == index {
                return Some(ParamValue::Null);
            }
            continue;
        }
        let (ty, unsigned) = (types[2 * i], types[2 * i + 1] & 0x80 != 0);
        let (len, value) = read_value(payload.get(at..)?, ty, unsigned)?;
        if i == index {
            return Some(value);
        }
        at += len;
    }
    None
}

/// The binary-protocol value of type `ty` at the start of `bytes`: its length in bytes and,
/// as far as routing needs it, its value. `None`: cut short.
pub fn read_value(bytes: &[u8], ty: u8, unsigned: bool) -> Option<(usize, ParamValue<'_>)> {
    let fixed = |n: usize| bytes.get(..n);
    Some(match ty {
        0x01 => (1, int(fixed(1)?, unsigned)),
        0x02 | 0x0d => (2, int(fixed(2)?, unsigned)),
        0x03 | 0x09 => (4, int(fixed(4)?, unsigned)),
        0x08 => (8, int(fixed(8)?, unsigned)),
        0x04 => (
            4,
            ParamValue::Float(f32::from_le_bytes(fixed(4)?.try_into().ok()?).into()),
        ),
        0x05 => (
            8,
            ParamValue::Float(f64::from_le_bytes(fixed(8)?.try_into().ok()?)),
        ),
        0x06 => (0, ParamValue::Null),
        0x07 | 0x0a | 0x0b | 0x0c => {
            let n = *bytes.first()? as usize;
            fixed(1 + n)?;
            (1 + n, ParamValue::Other)
        }
        _ => {
            let mut r = crate::protocol::wire::Reader::new(bytes);
            let value = r.lenenc_bytes().ok()?;
            let value = match ty {
                // DECIMAL, NEWDECIMAL
                0x00 | 0xf6 => ParamValue::Decimal(value),
                _ => ParamValue::Bytes(value),
            };
            (bytes.len() - r.remaining().len(), value)
        }
    })
}

fn int<'a>(b: &[u8], unsigned: bool) -> ParamValue<'a> {
    let mut le = [0u8; 8];
    le[..b.len()].copy_from_slice(b);
    let raw = u64::from_le_bytes(le);
    if unsigned {
        return ParamValue::Int(raw as i128);
    }
    // Sign-extend from the value's own width.
    let shift = 64 - b.len() * 8;
    ParamValue::Int((((raw << shift) as i64) >> shift) as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute(id: u32, params: u16, bound: Option<&[u8]>, values: &[u8]) -> Frame {
        let mut body = vec![com::STMT_EXECUTE];
        body.extend_from_slice(&id.to_le_bytes());
        body.push(0);
        body.extend_from_slice(&1u32.to_le_bytes());
        if params > 0 {
            body.extend(std::iter::repeat_n(0, (params as usize).div_ceil(8)));
            match bound {
                Some(t) => {
                    body.push(1);
                    body.extend_from_slice(t);
                }
                None => body.push(0),
            }
            body.extend_from_slice(values);
        }
        let mut raw = BytesMut::new();
        put_packet(&mut raw, 0, &body);
        Frame {
            raw,
            last_seq: 0,
            payload_len: body.len(),
        }
    }

    #[test]
    fn types_are_recorded_and_replayed_on_a_fresh_statement() {
        let mut client_types = None;
        let mut on_a = ConnStmt {
            id: 40,
            params: 1,
            types: None,
            used: 0,
        };
        let f = execute(7, 1, Some(&[8, 0]), &[5, 0, 0, 0, 0, 0, 0, 0]);
        let out = execute_frame(&f, &mut on_a, &mut client_types).expect("ok");
        assert_eq!(&out.raw[5..9], &40u32.to_le_bytes());
        assert_eq!(client_types.as_deref(), Some(&[8u8, 0][..]));
        // The next execute does not repeat the types; a connection that never saw them
        // gets them put back in.
        let f = execute(7, 1, None, &[6, 0, 0, 0, 0, 0, 0, 0]);
        let mut on_b = ConnStmt {
            id: 3,
            params: 1,
            types: None,
            used: 0,
        };
        let out = execute_frame(&f, &mut on_b, &mut client_types).expect("ok");
        let p = out.payload();
        assert_eq!(&p[1..5], &3u32.to_le_bytes());
        assert_eq!(&p[10..], &[0, 1, 8, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        // Same connection again: nothing to add.
        let out = execute_frame(&f, &mut on_b, &mut client_types).expect("ok");
        assert_eq!(out.payload_len, f.payload_len);
        assert!(execute_frame(&execute(7, 9, None, &[]), &mut on_b, &mut client_types).is_some());
    }

    #[test]
    fn parameters_are_read_for_routing() {
        // (string 'abc', NULL, tiny -3, longlong 42), types sent.
        let types = [0xfe, 0, 0x06, 0, 0x01, 0, 0x08, 0];
        let mut values = vec![3, b'a', b'b', b'c', 0xfd];
        values.extend_from_slice(&42i64.to_le_bytes());
        let mut f = execute(1, 4, Some(&types), &values);
        // Null bitmap: parameter 1 is NULL.
        f.raw[4 + 10] = 0b0000_0010;
        let p = f.payload();
        assert_eq!(param_value(&p, 4, None, 0), Some(ParamValue::Bytes(b"abc")));
        assert_eq!(param_value(&p, 4, None, 1), Some(ParamValue::Null));
        assert_eq!(param_value(&p, 4, None, 2), Some(ParamValue::Int(-3)));
        assert_eq!(param_value(&p, 4, None, 3), Some(ParamValue::Int(42)));
        assert_eq!(param_value(&p, 4, None, 4), None);
        // Types from an earlier execute.
        let mut values = vec![1, b'x', 0];
        values.extend_from_slice(&7i64.to_le_bytes());
        let f = execute(1, 4, None, &values);
        let p = f.payload();
        assert_eq!(
            param_value(&p, 4, Some(&types), 3),
            Some(ParamValue::Int(7))
        );
        assert_eq!(param_value(&p, 4, None, 3), None, "types never sent");
        // DOUBLE 600.0, FLOAT 2.5, NEWDECIMAL '7.0'.
        let types = [0x05, 0, 0x04, 0, 0xf6, 0];
        let mut values = 600.0f64.to_le_bytes().to_vec();
        values.extend_from_slice(&2.5f32.to_le_bytes());
        values.extend_from_slice(&[3, b'7', b'.', b'0']);
        let f = execute(1, 3, Some(&types), &values);
        let p = f.payload();
        assert_eq!(param_value(&p, 3, None, 0), Some(ParamValue::Float(600.0)));
        assert_eq!(param_value(&p, 3, None, 1), Some(ParamValue::Float(2.5)));
        assert_eq!(
            param_value(&p, 3, None, 2),
            Some(ParamValue::Decimal(b"7.0"))
        );
    }

    #[test]
    fn a_full_cache_closes_the_least_recently_used() {
        let mut c = StmtCache::default();
        for i in 0..MAX_PER_CONN as u32 {
            assert!(c.insert(format!("s{i}").as_bytes().into(), i, 0).is_empty());
        }
        assert!(c.get_mut(b"s0").is_some());
        let closed = c.insert(b"new".as_slice().into(), 9999, 0);
        assert_eq!(closed, vec![1]);
        assert_eq!(c.insert(b"new".as_slice().into(), 10000, 0), vec![9999]);
    }
}
