//! Runs commands on servers: takes the session's connection to the chosen server (from the
//! pool unless the session holds one), makes it carry the session's database and variables,
//! and streams the response.

pub mod binary_row;
pub mod concat;
pub mod fold_groups;
pub mod group;
pub mod merge;
pub mod merge_sort;
pub mod merged_read;
pub mod ok_sum;
pub mod row_values;
pub mod sequence;
pub mod shard_rows;
pub mod sink;
pub mod split_write;

use std::sync::Arc;

use crate::backend::forward::{forward, Forward, ForwardError};
use crate::backend::vars::VarSet;
use crate::backend::{BackendError, ConnKey, Pooled, Pools};
use crate::protocol::packet::ErrInfo;
use crate::protocol::response::Scanner;
use crate::protocol::stream::PacketStream;

/// Why a statement could not run; each kind has its own consequence for the session.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No connection could be had: the client gets an error, the session goes on.
    #[error(transparent)]
    Connect(#[from] BackendError),
    /// The server refused to take the session's database or variables on a connection.
    #[error("{}", .0.message)]
    Database(ErrInfo),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// The backend connections one session holds, at most one per server. Between statements a
/// multiplexed session holds none; see `session::hold`.
#[derive(Default)]
pub struct Pinned {
    conns: Vec<Pooled>,
}

impl Pinned {
    /// Gives every connection back to its pool.
    pub fn release_all(&mut self) {
        self.conns.clear();
    }

    /// Gives back the connection to `addr`.
    pub fn release(&mut self, addr: &str) {
        if let Some(i) = self.position(addr) {
            self.conns.swap_remove(i);
        }
    }

    /// Marks every held connection as carrying state only a reset clears.
    pub fn mark_dirty(&mut self) {
        for c in &mut self.conns {
            c.dirty = true;
        }
    }

    /// A held connection has an open transaction.
    pub fn in_txn(&self) -> bool {
        self.conns.iter().any(|c| c.in_txn)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Pooled> {
        self.conns.iter_mut()
    }

    /// The address of a held connection among `addrs`.
    pub fn held_among<'a>(&self, mut addrs: impl Iterator<Item = &'a str>) -> Option<Arc<str>> {
        addrs.find_map(|a| {
            self.conns
                .iter()
                .find(|c| &*c.addr == a)
                .map(|c| c.addr.clone())
        })
    }

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
}

/// Who the session is, as far as opening backend connections goes.
pub struct Identity<'a> {
    pub user: &'a str,
    pub password: &'a crate::protocol::auth::Secret,
    pub key: ConnKey,
    pub db: Option<&'a str>,
    /// Session variables every connection the session uses must carry.
    pub vars: Option<&'a Arc<VarSet>>,
}

/// The session's connection to `addr`, taken from the pool (or opened) if it holds none,
/// with the session's database selected and its variables set.
pub async fn connection<'p>(
    pools: &Pools,
    pinned: &'p mut Pinned,
    addr: &str,
    who: &Identity<'_>,
) -> Result<&'p mut Pooled, ExecError> {
    take(pools, pinned, addr, who).await?;
    fit(pinned, addr, who).await
}

/// Makes sure the session holds a connection to `addr`, as it is (see [`fit`]).
pub async fn take(
    pools: &Pools,
    pinned: &mut Pinned,
    addr: &str,
    who: &Identity<'_>,
) -> Result<(), ExecError> {
    if pinned.position(addr).is_none() {
        let sig = who.vars.map_or(0, |v| v.sig());
        let conn = pools
            .get(addr, who.user, who.password, who.key, who.db, sig)
            .await?;
        pinned.conns.push(conn);
    }
    Ok(())
}

/// Selects the session's database and sets its variables on the held connection to `addr`.
pub async fn fit<'p>(
    pinned: &'p mut Pinned,
    addr: &str,
    who: &Identity<'_>,
) -> Result<&'p mut Pooled, ExecError> {
    let Some(idx) = pinned.position(addr) else {
        return Err(ExecError::Forward(ForwardError::Backend {
            addr: addr.to_string(),
            msg: "no connection held".into(),
            sent: false,
        }));
    };
    let conn = &mut pinned.conns[idx];
    let mut ready = conn.ensure_db(who.db).await;
    if let (Ok(Ok(())), Some(vars)) = (&ready, who.vars) {
        ready = conn.sync_vars(vars).await;
    }
    match ready {
        Ok(Ok(())) => Ok(&mut pinned.conns[idx]),
        Ok(Err(e)) => Err(ExecError::Database(e)),
        Err(e) => {
            pinned.discard(addr);
            Err(e.into())
        }
    }
}

/// Runs one command on `addr` and streams its response to the client.
pub async fn run(
    pools: &Pools,
    pinned: &mut Pinned,
    client: &mut PacketStream,
    addr: &Arc<str>,
    who: &Identity<'_>,
    f: Forward<'_>,
) -> Result<Scanner, ExecError> {
    connection(pools, pinned, addr, who).await?;
    forward_on(pinned, addr, client, f).await
}

/// Forwards a command on the held connection to `addr` (see [`connection`]).
pub async fn forward_on(
    pinned: &mut Pinned,
    addr: &Arc<str>,
    client: &mut PacketStream,
    f: Forward<'_>,
) -> Result<Scanner, ExecError> {
    let addr = addr.clone();
    let Some(conn) = pinned.find(&addr) else {
        return Err(ExecError::Forward(ForwardError::Backend {
            addr: addr.to_string(),
            msg: "no connection held".into(),
            sent: false,
        }));
    };
    match forward(conn, client, f).await {
        Ok(sc) => Ok(sc),
        Err(e) => {
            if matches!(
                e,
                ForwardError::Backend { .. } | ForwardError::ClientGone { .. }
            ) {
                pinned.discard(&addr);
            }
            Err(e.into())
        }
    }
}
