//! The MySQL wire protocol as the proxy needs it: framing, handshake and auth, OK/ERR/EOF,
//! and a scanner that finds where a response ends without decoding its rows.

pub mod auth;
pub mod column;
pub mod consts;
pub mod handshake;
pub mod packet;
pub mod response;
pub mod stream;
pub mod track;
pub mod wire;
