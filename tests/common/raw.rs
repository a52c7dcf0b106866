//! A client of the raw MySQL protocol for tests: it chooses the capabilities it logs in with
//! (MariaDB's extended ones too) and sends commands no driver exposes (COM_SET_OPTION,
//! COM_STMT_BULK_EXECUTE). It reads what comes back without interpreting rows.
#![allow(dead_code)]

use bytes::BytesMut;

use shardgate::protocol::auth::scramble_native;
use shardgate::protocol::consts::cap;
use shardgate::protocol::handshake::{ClientHello, ServerHello};
use shardgate::protocol::packet::{parse_err, parse_ok, put_packet};
use shardgate::protocol::stream::PacketStream;

/// A client of the raw protocol, to choose the capabilities it logs in with and to send
/// commands no driver exposes (COM_SET_OPTION).
pub struct Raw {
    io: PacketStream,
}

/// One response: OK (affected rows), ERR (code), EOF, or a result set's packets.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Ok(u64),
    Err(u16, String),
    Eof,
    Rows {
        columns: Vec<Vec<u8>>,
        rows: Vec<Vec<u8>>,
    },
}

const MORE_RESULTS: u16 = 0x0008;

impl Raw {
    /// Logs in as `user` with `caps` (plus what every 4.1 client sends) and MariaDB's
    /// extended capabilities `ext` (sent only if the server announced them).
    pub async fn login(
        port: u16,
        user: &str,
        password: &str,
        caps: u32,
        ext: u32,
    ) -> (Raw, ServerHello) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut io = PacketStream::new(tcp);
        let hello = io
            .read_frame(1 << 20)
            .await
            .expect("greeting")
            .expect("greeting");
        let server = ServerHello::parse(&hello.payload()).expect("server hello");
        let caps = caps
            | cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH
            | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | cap::CONNECT_WITH_DB;
        let mut body = BytesMut::new();
        ClientHello {
            caps,
            max_packet: 1 << 24,
            charset: 45,
            user: user.into(),
            auth_response: scramble_native(&server.nonce, password.as_bytes()),
            database: Some("app".into()),
            auth_plugin: Some("mysql_native_password".into()),
            attrs: Vec::new(),
            ext_caps: if server.caps & cap::LONG_PASSWORD == 0 {
                ext
            } else {
                0
            },
        }
        .encode(&mut body);
        let mut out = BytesMut::new();
        put_packet(&mut out, hello.last_seq.wrapping_add(1), &body);
        io.write_all(&out).await.expect("login");
        let ok = io
            .read_frame(1 << 24)
            .await
            .expect("login reply")
            .expect("login reply");
        assert_eq!(
            ok.first_byte(),
            Some(0),
            "login of {user}: {:?}",
            parse_err(&ok.payload())
        );
        (Raw { io }, server)
    }

    /// Writes `bytes` as they are (a packet cut short, say).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("send");
    }

    /// The next packet, or `None` once the proxy closed the connection.
    pub async fn try_packet(&mut self) -> Option<Vec<u8>> {
        let f = self.io.read_frame(1 << 24).await.ok()??;
        Some(f.payload().to_vec())
    }

    pub async fn send(&mut self, payload: &[u8]) {
        let mut out = BytesMut::new();
        put_packet(&mut out, 0, payload);
        self.io.write_all(&out).await.expect("send");
    }

    pub async fn packet(&mut self) -> Vec<u8> {
        let f = self
            .io
            .read_frame(1 << 24)
            .await
            .expect("read")
            .expect("closed");
        f.payload().to_vec()
    }

    /// Reads one response (no DEPRECATE_EOF: result sets end in EOF packets); whether more
    /// follow.
    pub async fn reply(&mut self) -> (Reply, bool) {
        let first = self.packet().await;
        match <[u8]>::first(&first) {
            Some(0x00) => {
                let ok = parse_ok(&first).expect("ok");
                (Reply::Ok(ok.affected_rows), ok.status & MORE_RESULTS != 0)
            }
            Some(0xFF) => {
                let e = parse_err(&first).expect("err");
                (Reply::Err(e.code, e.message), false)
            }
            Some(0xFE) => (Reply::Eof, false),
            _ => {
                let n = first[0] as usize; // under 251 columns in these tests
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    columns.push(self.packet().await);
                }
                let eof = self.packet().await;
                assert_eq!(
                    <[u8]>::first(&eof),
                    Some(&0xFE),
                    "EOF after column definitions"
                );
                let mut rows = Vec::new();
                loop {
                    let p = self.packet().await;
                    if <[u8]>::first(&p) == Some(&0xFE) && p.len() < 9 {
                        let status = u16::from_le_bytes([p[3], p[4]]);
                        return (Reply::Rows { columns, rows }, status & MORE_RESULTS != 0);
                    }
                    rows.push(p);
                }
            }
        }
    }

    /// Sends a command; every response it produced.
    pub async fn command(&mut self, payload: &[u8]) -> Vec<Reply> {
        self.send(payload).await;
        let mut all = Vec::new();
        loop {
            let (r, more) = self.reply().await;
            all.push(r);
            if !more {
                return all;
            }
        }
    }

    pub async fn query(&mut self, sql: &str) -> Vec<Reply> {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        self.command(&p).await
    }

    /// COM_SET_OPTION: multi-statements on (0) or off (1).
    pub async fn set_multi_statements(&mut self, on: bool) -> Vec<Reply> {
        self.command(&[0x1B, if on { 0 } else { 1 }, 0]).await
    }

    /// COM_STMT_PREPARE: the statement id, or the server's error code.
    pub async fn prepare(&mut self, sql: &str) -> Result<u32, u16> {
        let mut p = vec![0x16];
        p.extend_from_slice(sql.as_bytes());
        self.send(&p).await;
        let first = self.packet().await;
        if <[u8]>::first(&first) == Some(&0xFF) {
            return Err(parse_err(&first).expect("err").code);
        }
        let id = u32::from_le_bytes([first[1], first[2], first[3], first[4]]);
        let columns = u16::from_le_bytes([first[5], first[6]]);
        let params = u16::from_le_bytes([first[7], first[8]]);
        for n in [params, columns] {
            if n > 0 {
                for _ in 0..=n {
                    self.packet().await; // the definitions and their EOF
                }
            }
        }
        Ok(id)
    }

    pub async fn quit(mut self) {
        self.send(&[0x01]).await;
    }
}
