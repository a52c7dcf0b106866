//! The connection-phase packets: the server's initial handshake and the client's response,
//! in both directions (the proxy is a server to clients and a client to MariaDB).

use bytes::{BufMut, BytesMut};

use super::consts::cap;
use super::wire::{put_lenenc_bytes, Reader, Truncated};

/// Initial handshake (protocol 10) as sent by a server.
#[derive(Debug, Clone)]
pub struct ServerHello {
    pub server_version: String,
    pub connection_id: u32,
    pub nonce: Vec<u8>,
    pub caps: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: String,
    /// MariaDB's extended capabilities (`ext_cap`), meaningful without
    /// [`cap::LONG_PASSWORD`].
    pub ext_caps: u32,
}

impl ServerHello {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(10);
        out.put_slice(self.server_version.as_bytes());
        out.put_u8(0);
        out.put_u32_le(self.connection_id);
        out.put_slice(&self.nonce[..8]);
        out.put_u8(0);
        out.put_u16_le(self.caps as u16);
        out.put_u8(self.charset);
        out.put_u16_le(self.status);
        out.put_u16_le((self.caps >> 16) as u16);
        out.put_u8(self.nonce.len() as u8 + 1);
        out.put_slice(&[0u8; 6]);
        out.put_u32_le(self.ext_caps);
        out.put_slice(&self.nonce[8..]);
        out.put_u8(0);
        out.put_slice(self.auth_plugin.as_bytes());
        out.put_u8(0);
    }

    pub fn parse(payload: &[u8]) -> Result<Self, Truncated> {
        let mut r = Reader::new(payload);
        let _protocol = r.u8()?;
        let server_version = String::from_utf8_lossy(r.nul_str()).into_owned();
        let connection_id = r.u32()?;
        let mut nonce = r.take(8)?.to_vec();
        r.u8()?;
        let mut caps = r.u16()? as u32;
        let charset = r.u8()?;
        let status = r.u16()?;
        caps |= (r.u16()? as u32) << 16;
        let auth_len = r.u8()? as usize;
        r.take(6)?;
        let ext_caps = match r.u32()? {
            ext if caps & cap::LONG_PASSWORD == 0 => ext,
            _ => 0,
        };
        if caps & cap::SECURE_CONNECTION != 0 {
            let n = auth_len.saturating_sub(8).max(13);
            let part2 = r.take(n)?;
            // The second part is NUL-terminated; the nonce itself is 20 bytes.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            nonce.extend_from_slice(part2);
        }
        let auth_plugin = if caps & cap::PLUGIN_AUTH != 0 {
            String::from_utf8_lossy(r.nul_str()).into_owned()
        } else {
            super::auth::NATIVE.to_string()
        };
        Ok(ServerHello {
            server_version,
            connection_id,
            nonce,
            caps,
            charset,
            status,
            auth_plugin,
            ext_caps,
        })
    }
}

/// HandshakeResponse41 as sent by a client.
#[derive(Debug, Clone, Default)]
pub struct ClientHello {
    pub caps: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    /// Connection attributes, raw (length-encoded key/value pairs), forwarded to backends.
    pub attrs: Vec<u8>,
    /// MariaDB's extended capabilities (`ext_cap`), in the last 4 filler bytes; only to a
    /// server that announced them (no [`cap::LONG_PASSWORD`], MariaDB's "not MySQL" mark).
    pub ext_caps: u32,
}

/// A client response the proxy cannot accept (pre-4.1 protocol, or malformed).
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("client does not speak protocol 4.1")]
    Pre41,
    #[error(transparent)]
    Truncated(#[from] Truncated),
}

impl ClientHello {
    pub fn parse(payload: &[u8]) -> Result<Self, HelloError> {
        let mut r = Reader::new(payload);
        let caps = r.u32()?;
        if caps & cap::PROTOCOL_41 == 0 {
            return Err(HelloError::Pre41);
        }
        let max_packet = r.u32()?;
        let charset = r.u8()?;
        r.take(19)?;
        let ext_caps = r.u32()?;
        let user = String::from_utf8_lossy(r.nul_str()).into_owned();
        let auth_response = if caps & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes()?.to_vec()
        } else if caps & cap::SECURE_CONNECTION != 0 {
            let n = r.u8()? as usize;
            r.take(n)?.to_vec()
        } else {
            r.nul_str().to_vec()
        };
        let database = if caps & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
            Some(String::from_utf8_lossy(r.nul_str()).into_owned()).filter(|d| !d.is_empty())
        } else {
            None
        };
        let auth_plugin = if caps & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            Some(String::from_utf8_lossy(r.nul_str()).into_owned())
        } else {
            None
        };
        let attrs = if caps & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
            r.lenenc_bytes()?.to_vec()
        } else {
            Vec::new()
        };
        Ok(ClientHello {
            caps,
            max_packet,
            charset,
            user,
            auth_response,
            database,
            auth_plugin,
            attrs,
            ext_caps,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.caps);
        out.put_u32_le(self.max_packet);
        out.put_u8(self.charset);
        out.put_slice(&[0u8; 19]);
        out.put_u32_le(self.ext_caps);
        out.put_slice(self.user.as_bytes());
        out.put_u8(0);
        put_lenenc_bytes(out, &self.auth_response);
        if self.caps & cap::CONNECT_WITH_DB != 0 {
            out.put_slice(self.database.as_deref().unwrap_or("").as_bytes());
            out.put_u8(0);
        }
        if self.caps & cap::PLUGIN_AUTH != 0 {
            out.put_slice(self.auth_plugin.as_deref().unwrap_or("").as_bytes());
            out.put_u8(0);
        }
        if self.caps & cap::CONNECT_ATTRS != 0 {
            put_lenenc_bytes(out, &self.attrs);
        }
    }
}

/// An AuthSwitchRequest (0xFE): plugin name and its data.
pub fn parse_auth_switch(payload: &[u8]) -> Result<(String, Vec<u8>), Truncated> {
    let mut r = Reader::new(payload);
    r.u8()?;
    let plugin = String::from_utf8_lossy(r.nul_str()).into_owned();
    let data = r.remaining();
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    Ok((plugin, data.to_vec()))
}

pub fn put_auth_switch(out: &mut BytesMut, plugin: &str, nonce: &[u8]) {
    out.put_u8(0xFE);
    out.put_slice(plugin.as_bytes());
    out.put_u8(0);
    out.put_slice(nonce);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hello_round_trips() {
        let hello = ServerHello {
            server_version: "5.5.5-10.11.99-MariaDB-shardgate".into(),
            connection_id: 42,
            nonce: (1..=20).collect(),
            caps: cap::SERVER_OFFER,
            charset: 45,
            status: 2,
            auth_plugin: "mysql_native_password".into(),
            ext_caps: 0,
        };
        let mut b = BytesMut::new();
        hello.encode(&mut b);
        let back = ServerHello::parse(&b).expect("parse");
        assert_eq!(back.ext_caps, 0, "a 'MySQL' server has none");
        let mariadb = ServerHello {
            caps: cap::SERVER_OFFER & !cap::LONG_PASSWORD,
            ext_caps: 0b1100,
            ..hello.clone()
        };
        b.clear();
        mariadb.encode(&mut b);
        assert_eq!(ServerHello::parse(&b).expect("parse").ext_caps, 0b1100);
        b.clear();
        hello.encode(&mut b);
        let back = ServerHello::parse(&b).expect("parse");
        assert_eq!(back.nonce, hello.nonce);
        assert_eq!(back.caps, hello.caps);
        assert_eq!(back.server_version, hello.server_version);
        assert_eq!(back.auth_plugin, hello.auth_plugin);
    }

    #[test]
    fn client_hello_round_trips_and_rejects_garbage() {
        let hello = ClientHello {
            caps: cap::PROTOCOL_41
                | cap::SECURE_CONNECTION
                | cap::PLUGIN_AUTH
                | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | cap::CONNECT_WITH_DB
                | cap::CONNECT_ATTRS,
            max_packet: 1 << 24,
            charset: 45,
            user: "app".into(),
            auth_response: vec![9; 20],
            database: Some("app".into()),
            auth_plugin: Some("mysql_native_password".into()),
            attrs: vec![3, b'a', b'b', b'c', 1, b'x'],
            ext_caps: 1 << 3,
        };
        let mut b = BytesMut::new();
        hello.encode(&mut b);
        let back = ClientHello::parse(&b).expect("parse");
        assert_eq!(back.user, "app");
        assert_eq!(back.auth_response, hello.auth_response);
        assert_eq!(back.database.as_deref(), Some("app"));
        assert_eq!(back.attrs, hello.attrs);
        assert_eq!(back.ext_caps, 1 << 3);
        for cut in 0..40 {
            assert!(ClientHello::parse(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            ClientHello::parse(&[0; 40]),
            Err(HelloError::Pre41)
        ));
    }
}
