//! Runs plans: takes the session's connection to the planned server (pinning one from the
//! pool on first use), selects the session's database on it, and streams the response.

use std::sync::Arc;

use crate::backend::forward::{forward, Forward, ForwardError};
use crate::backend::{BackendError, ConnKey, Pooled, Pools};
use crate::planner::Route;
use crate::protocol::packet::ErrInfo;
use crate::protocol::response::Scanner;
use crate::protocol::stream::PacketStream;

/// Why a statement could not run; each kind has its own consequence for the session.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No connection could be had: the client gets an error, the session goes on.
    #[error(transparent)]
    Connect(#[from] BackendError),
    /// The server refused to select the session's database on a new connection.
    #[error("{}", .0.message)]
    Database(ErrInfo),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// The backend connections one session holds, at most one per server.
#[derive(Default)]
pub struct Pinned {
    conns: Vec<Pooled>,
}

impl Pinned {
    fn position(&self, addr: &str) -> Option<usize> {
        self.conns.iter().position(|c| &*c.addr == addr)
    }

    pub fn find(&mut self, addr: &str) -> Option<&mut Pooled> {
        let i = self.position(addr)?;
        Some(&mut self.conns[i])
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Closes the connection to `addr` (after an error on it) instead of pooling it.
    pub fn discard(&mut self, addr: &str) {
        if let Some(i) = self.position(addr) {
            self.conns.swap_remove(i).discard();
        }
    }

    /// Gives back every connection but the one to `addr`.
    pub fn release_others(&mut self, addr: &str) {
        self.conns.retain(|c| &*c.addr == addr);
    }
}

/// Who the session is, as far as opening backend connections goes.
pub struct Identity<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub key: ConnKey,
    pub db: Option<&'a str>,
}

/// The session's connection to `route`'s server, opened or taken from the pool if needed,
/// with the session's database selected.
pub async fn connection<'p>(
    pools: &Pools,
    pinned: &'p mut Pinned,
    route: &Route,
    who: &Identity<'_>,
) -> Result<&'p mut Pooled, ExecError> {
    let idx = match pinned.position(&route.addr) {
        Some(i) => i,
        None => {
            let conn = pools
                .get(&route.addr, who.user, who.password, who.key, who.db)
                .await?;
            pinned.conns.push(conn);
            pinned.conns.len() - 1
        }
    };
    match pinned.conns[idx].ensure_db(who.db).await {
        Ok(Ok(())) => Ok(&mut pinned.conns[idx]),
        Ok(Err(e)) => Err(ExecError::Database(e)),
        Err(e) => {
            pinned.discard(&route.addr);
            Err(e.into())
        }
    }
}

/// Runs one command on `route`'s server and streams its response to the client.
pub async fn run(
    pools: &Pools,
    pinned: &mut Pinned,
    client: &mut PacketStream,
    route: &Route,
    who: &Identity<'_>,
    f: Forward<'_>,
) -> Result<Scanner, ExecError> {
    let addr: Arc<str> = route.addr.clone();
    let conn = connection(pools, pinned, route, who).await?;
    match forward(conn, client, f).await {
        Ok(sc) => Ok(sc),
        Err(e) => {
            if matches!(e, ForwardError::Backend { .. }) {
                pinned.discard(&addr);
            }
            Err(e.into())
        }
    }
}
