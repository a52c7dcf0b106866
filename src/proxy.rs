//! The listener: accepts clients and runs one session task per connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::backend::Pools;
use crate::config::Config;
use crate::planner::Planner;
use crate::protocol::consts::errcode;
use crate::protocol::packet::put_err;
use crate::session::{self, Registry};

/// State every session reads.
pub struct Shared {
    pub config: Config,
    pub planner: Planner,
    pub pools: Pools,
    pub sessions: Arc<Registry>,
    clients: AtomicUsize,
}

impl Shared {
    pub fn new(config: Config) -> Self {
        Shared {
            planner: Planner::new(config.shard_map()),
            pools: Pools::new(config.pool.clone()),
            config,
            sessions: Arc::new(Registry::default()),
            clients: AtomicUsize::new(0),
        }
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// A bound, not yet running, proxy listener.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    pub async fn bind(config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&config.proxy.listen).await?;
        Ok(Proxy {
            listener,
            shared: Arc::new(Shared::new(config)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Accepts clients until the task is dropped.
    pub async fn run(self) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let shared = self.shared.clone();
            let id = shared.sessions.next_id();
            tokio::spawn(async move {
                let n = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
                if n > shared.config.proxy.max_client_connections {
                    let mut out = BytesMut::new();
                    put_err(&mut out, 0, errcode::CON_COUNT, "Too many connections");
                    let mut s = stream;
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut s, &out).await;
                } else if let Err(e) = session::run(stream, shared.clone(), id).await {
                    debug!(%peer, id, error = %e, "client connection ended");
                }
                shared.clients.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

/// Runs the proxy for `config` until Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let proxy = Proxy::bind(config.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.proxy.listen))?;
    info!(listen = %proxy.local_addr()?, "shardgate is accepting MySQL clients");
    tokio::select! {
        _ = proxy.run() => {}
        _ = tokio::signal::ctrl_c() => info!("shutting down"),
    }
    Ok(())
}
