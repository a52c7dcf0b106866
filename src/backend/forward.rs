//! Sending a client's command to a backend and streaming the response back, packet by packet
//! as it arrives, without decoding rows.

use bytes::Buf;

use super::conn::BackendConn;
use crate::protocol::consts::status;
use crate::protocol::packet::Frame;
use crate::protocol::response::{Expect, Progress, Scanner};
use crate::protocol::stream::PacketStream;

/// Where a forward failed: the side that failed decides what can be saved.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The backend failed; `sent` says whether part of a response already reached the client
    /// (then the client's connection cannot be resynchronised and must be closed).
    #[error("backend {addr}: {msg}")]
    Backend {
        addr: String,
        msg: String,
        sent: bool,
    },
    /// The client went away or sent something it must not; the backend connection is mid-way.
    #[error("client: {0}")]
    Client(String),
    /// The client closed its connection while server connection `connection_id` on `addr`
    /// was still running its statement: that statement holds its locks until it is killed.
    #[error("client: closed while its statement ran on {addr} (connection {connection_id})")]
    ClientGone {
        addr: std::sync::Arc<str>,
        connection_id: u32,
    },
}

/// How a command's response is forwarded.
pub struct Forward<'a> {
    pub command: &'a [u8],
    /// Sequence id of the command's last packet (the response continues from it).
    pub last_seq: u8,
    /// `None` for commands the server does not answer (COM_STMT_CLOSE, SEND_LONG_DATA).
    pub expect: Option<Expect>,
    pub deprecate_eof: bool,
    /// The client did not negotiate CLIENT_SESSION_TRACK: OKs lose their session state.
    pub strip_state: bool,
    pub client_stmt_id: u32,
    pub max_packet: usize,
    /// Runs once the whole response has arrived, before its end reaches the client (the
    /// result cache invalidates what a write changed there).
    pub before_end: Option<&'a (dyn Fn(&Scanner) + Send + Sync)>,
}

/// Runs one command on `backend`, writing the response to `client` as it streams in.
pub async fn forward(
    backend: &mut BackendConn,
    client: &mut PacketStream,
    f: Forward<'_>,
) -> Result<Scanner, ForwardError> {
    let berr = |b: &BackendConn, msg: String, sent: bool| ForwardError::Backend {
        addr: b.addr.to_string(),
        msg,
        sent,
    };
    backend.in_flight = true;
    if let Err(e) = backend.io.write_all(f.command).await {
        return Err(berr(backend, e.to_string(), false));
    }
    let Some(expect) = f.expect else {
        backend.in_flight = false;
        return Ok(Scanner::new(Expect::Single, f.deprecate_eof, 0));
    };
    let mut sc = Scanner::new(expect, f.deprecate_eof, f.last_seq.wrapping_add(1));
    sc.client_stmt_id = f.client_stmt_id;
    sc.strip_state = f.strip_state;
    let mut sent = false;
    // Bytes the client sent already are its next command, not a close.
    let mut watch_client = client.rbuf.is_empty();
    loop {
        let (n, progress) = sc.scan(&mut backend.io.rbuf);
        if let (Progress::Done, Some(hook)) = (&progress, f.before_end) {
            hook(&sc);
        }
        if let (Progress::Done, Some(g)) = (&progress, sc.gtid) {
            // Recorded before the OK reaches the client: a failover from here on knows it.
            backend.wrote(g);
        }
        if n > 0 {
            let cerr = |e: std::io::Error| ForwardError::Client(e.to_string());
            let mut from = 0;
            for &(cut, len) in &sc.cuts {
                client
                    .write_all(&backend.io.rbuf[from..cut])
                    .await
                    .map_err(cerr)?;
                from = cut + len;
            }
            client
                .write_all(&backend.io.rbuf[from..n])
                .await
                .map_err(cerr)?;
            if expect == Expect::Prepare {
                // Nothing is cut from a PREPARE reply: `cuts` only shorten OKs.
                sc.prepare_reply.extend_from_slice(&backend.io.rbuf[..n]);
            }
            backend.io.rbuf.advance(n);
            sent = true;
        }
        match progress {
            Progress::Done => break,
            Progress::LocalInfile => relay_infile(backend, client, &mut sc, f.max_packet).await?,
            Progress::More => {
                let filled = if watch_client {
                    // A client that goes away while its statement runs would leave it running
                    // (and holding its locks) to the end: notice, so the caller can kill it.
                    tokio::select! {
                        biased;
                        r = backend.io.fill() => r,
                        gone = closed(client) => {
                            if gone {
                                backend.broken = true;
                                return Err(ForwardError::ClientGone {
                                    addr: backend.addr.clone(),
                                    connection_id: backend.connection_id,
                                });
                            }
                            // It sent its next command early: that is read after this one.
                            watch_client = false;
                            continue;
                        }
                    }
                } else {
                    backend.io.fill().await
                };
                match filled {
                    Ok(0) => return Err(berr(backend, "closed the connection".into(), sent)),
                    Ok(_) => {}
                    Err(e) => return Err(berr(backend, e.to_string(), sent)),
                }
            }
        }
    }
    backend.in_flight = false;
    backend.broken |= sc.fatal;
    if expect == Expect::Result && !sc.error {
        backend.in_txn = sc.last_ok.status & status::IN_TRANS != 0;
    }
    backend.io.maybe_shrink();
    Ok(sc)
}

/// Waits until the client's socket is readable: `true` when it was closed (EOF or reset),
/// `false` when it sent data (left unread for the command loop).
async fn closed(client: &PacketStream) -> bool {
    let mut probe = [0u8; 1];
    !matches!(client.stream.peek(&mut probe).await, Ok(1..))
}

/// Copies the client's LOCAL INFILE packets to the server up to the empty closing packet.
async fn relay_infile(
    backend: &mut BackendConn,
    client: &mut PacketStream,
    sc: &mut Scanner,
    max_packet: usize,
) -> Result<(), ForwardError> {
    loop {
        let frame: Frame = match client.read_frame(max_packet).await {
            Ok(Some(f)) => f,
            Ok(None) => return Err(ForwardError::Client("closed during LOCAL INFILE".into())),
            Err(e) => return Err(ForwardError::Client(e.to_string())),
        };
        backend
            .io
            .write_all(&frame.raw)
            .await
            .map_err(|e| ForwardError::Backend {
                addr: backend.addr.to_string(),
                msg: e.to_string(),
                sent: true,
            })?;
        if frame.payload_len == 0 {
            sc.after_infile(frame.last_seq);
            return Ok(());
        }
    }
}
