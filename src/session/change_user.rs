//! COM_CHANGE_USER: a new login on an open connection (PHP's persistent connections and some
//! pools use it to reset a connection). The client is authenticated against the configured
//! users as at login; its server connections go back to the pool (which resets them) and the
//! session starts over as the new user.

use super::handshake::{authenticate, Credentials};
use super::{Session, SessionError};
use crate::protocol::consts::{cap, errcode};
use crate::protocol::packet::Frame;
use crate::protocol::wire::{Reader, Truncated};

/// The fields of a COM_CHANGE_USER packet.
struct ChangeUser {
    user: String,
    response: Vec<u8>,
    db: Option<String>,
    charset: Option<u8>,
    plugin: Option<String>,
}

fn parse(payload: &[u8], caps: u32) -> Result<ChangeUser, Truncated> {
    let mut r = Reader::new(payload);
    r.u8()?; // command
    let user = String::from_utf8_lossy(r.nul_str()).into_owned();
    let response = if caps & cap::SECURE_CONNECTION != 0 {
        let n = r.u8()? as usize;
        r.take(n)?.to_vec()
    } else {
        r.nul_str().to_vec()
    };
    let db = Some(String::from_utf8_lossy(r.nul_str()).into_owned()).filter(|d| !d.is_empty());
    let charset = if r.remaining().len() >= 2 {
        Some(r.u16()? as u8)
    } else {
        None
    };
    let plugin = (caps & cap::PLUGIN_AUTH != 0 && !r.is_empty())
        .then(|| String::from_utf8_lossy(r.nul_str()).into_owned());
    Ok(ChangeUser {
        user,
        response,
        db,
        charset,
        plugin,
    })
}

impl Session {
    pub(super) async fn change_user(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let reply_seq = frame.last_seq.wrapping_add(1);
        let Ok(req) = parse(&frame.payload(), self.caps) else {
            let msg = "Malformed communication packet";
            self.send_err(errcode::MALFORMED_PACKET, msg, reply_seq)
                .await;
            return Ok(());
        };
        let shared = self.shared.clone();
        let creds = Credentials {
            user: &req.user,
            plugin: req.plugin.as_deref(),
            response: req.response,
            seq: reply_seq,
        };
        // A failed change closes the connection, as MariaDB does.
        let (user, secret, ok_seq) =
            authenticate(&mut self.io, &shared, &self.nonce, creds, &self.peer_ip).await?;
        let admission = shared.admission.clone();
        if let Err(over) =
            admission.change_user(&mut self.admitted, &user.name, user.max_connections)
        {
            let (code, msg) = super::refusal(&user.name, over);
            self.send_err(code, &msg, ok_seq).await;
            return Err(SessionError::ChangeUserRefused(msg));
        }
        self.forget_state();
        self.recorded_backend = None;
        self.registration.info.set_user(&user.name);
        self.cache_user = std::sync::Arc::from(user.name.as_str());
        self.user = user;
        self.secret = secret;
        self.db = req.db;
        if let Some(cs) = req.charset {
            self.charset = cs;
        }
        if !self.check_login_database(ok_seq).await {
            return Err(SessionError::ChangeUserDatabase);
        }
        self.send_ok(ok_seq).await;
        Ok(())
    }
}
