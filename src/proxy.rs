//! The listener side: worker threads that accept clients and run one session task each.
//!
//! Each worker is a single-threaded tokio runtime with its own listening socket on the same
//! address (SO_REUSEPORT: the kernel spreads connections over them), so a session and its
//! backend connections live on one thread. Measured on 2 cores against tokio's work-stealing
//! runtime, that cut the proxy's CPU per point select by about a quarter: most of the
//! difference was threads waking each other (see the closing note of issue 2).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::backend::health::{spawn_monitor, MonitorHandle};
use crate::backend::pool;
use crate::config::Config;
use crate::ha::HaHandle;
use crate::protocol::consts::errcode;
use crate::protocol::packet::put_err;
use crate::runtime::{worker_count, Shared};
use crate::session;

/// Stack of each worker thread (see where the workers are spawned).
pub const WORKER_STACK: usize = 8 << 20;

/// A running proxy: its workers accept clients until [`Proxy::shutdown`].
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    monitor: MonitorHandle,
    ha: Option<HaHandle>,
}

impl Proxy {
    /// Binds the listening sockets (errors surface here) and starts the workers.
    pub fn start(config: Config) -> std::io::Result<Self> {
        let shared = Arc::new(
            Shared::new(config)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        );
        let wanted: SocketAddr = shared
            .config
            .proxy
            .listen
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let n = worker_count(&shared.config);
        // The first bind resolves port 0; the others share whatever port it got.
        let first = reuseport_listener(wanted)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..n {
            listeners.push(reuseport_listener(addr)?);
        }
        let (stop, stopped) = watch::channel(false);
        let mut workers = Vec::with_capacity(n);
        for (i, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            let stopped = stopped.clone();
            // Parsing a deeply nested statement recurses (sqlparser stops at 50 levels); the
            // fuzzed shard planner needed more than the default 2 MiB at that depth in a
            // debug build. Untouched stack costs no memory.
            let handle = std::thread::Builder::new()
                .name(format!("shardgate-w{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || worker(i, listener, shared, stopped))?;
            workers.push(handle);
        }
        shared.accepting.store(true, Ordering::Relaxed);
        crate::ha::follow::start(
            shared.topology.clone(),
            shared.ha.clone(),
            shared.cache.clone(),
        );
        let monitor = spawn_monitor(shared.health.clone(), shared.config.monitor.clone());
        let ha = match crate::ha::spawn(shared.ha.clone()) {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(error = %e, "cannot start the failure detector: no automatic failover");
                None
            }
        };
        Ok(Proxy {
            addr,
            shared,
            stop,
            workers,
            monitor,
            ha,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the workers share (tests reach the gates through it).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, ends every worker (and the sessions on it) and waits for them.
    pub fn shutdown(self) {
        self.shared.accepting.store(false, Ordering::Relaxed);
        if let Some(store) = self.shared.topology.store() {
            // Leaves the cluster at once (its lease revoked) instead of after the lease TTL.
            let _ = store.block_on({
                let s = store.clone();
                async move {
                    s.close().await;
                    Ok(())
                }
            });
        }
        drop(self.ha);
        drop(self.monitor);
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn worker(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    pool::set_worker(index);
    // No signal or process driver: they cost a lock and a pipe read on every turn of the
    // loop (about 3% of the worker's user CPU under point selects), and workers use neither.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!(worker = index, error = %e, "cannot start a worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                warn!(worker = index, error = %e, "cannot register the listener");
                return;
            }
        };
        tokio::select! {
            _ = accept_loop(listener, shared) => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    });
}

/// Accepts clients forever, one session task each.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let id = shared.sessions.next_id();
        tokio::spawn(async move {
            let max = shared.config.proxy.max_unauthenticated_connections;
            let Some(login) = shared.admission.logging_in(max) else {
                metrics::counter!("shardgate_clients_refused_total", "reason" => "logging_in")
                    .increment(1);
                let mut out = BytesMut::new();
                put_err(&mut out, 0, errcode::CON_COUNT, "Too many connections");
                let mut s = stream;
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, &out).await;
                return;
            };
            if let Err(e) = session::run(stream, shared.clone(), id, login).await {
                debug!(%peer, id, error = %e, "client connection ended");
            }
        });
    }
}

/// The proxy and its admin HTTP API, running.
pub struct Running {
    proxy: Proxy,
    admin: tokio::task::JoinHandle<()>,
    upkeep: Option<tokio::task::JoinHandle<()>>,
    pub admin_addr: std::net::SocketAddr,
}

impl Running {
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.proxy.local_addr()
    }

    /// Stops the admin API and the workers.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.admin.abort();
        if let Some(u) = self.upkeep {
            u.abort();
        }
        let proxy = self.proxy;
        tokio::task::spawn_blocking(move || proxy.shutdown()).await?;
        Ok(())
    }
}

/// Starts the MySQL workers for `config` and, on this runtime, the admin HTTP API
/// (`crate::admin`).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    // Before anything records a metric: what is recorded without a recorder is lost.
    let _ = crate::admin::metrics::handle();
    // Bound before the workers start, so a taken admin port fails the start, not later.
    let admin_listener = crate::admin::bind(&config.proxy.admin_listen).await?;
    let admin_addr = admin_listener.local_addr()?;
    let listen = config.proxy.listen.clone();
    let ext = probe_ext_caps(&config).await;
    let proxy =
        Proxy::start(config).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    if let Some(ext) = ext {
        proxy.shared.pools.learn_ext(ext);
    }
    let admin_state = crate::admin::AdminState::new(proxy.shared.clone());
    if admin_state.token.is_none() {
        warn!(
            admin = %admin_addr,
            "proxy.admin_token is not set: the admin API answers 401 to all but /healthz"
        );
    }
    if proxy.shared.cache.is_some() {
        crate::admin::metrics::register_cache_series();
    }
    let upkeep = admin_state
        .metrics
        .clone()
        .map(|h| tokio::spawn(crate::admin::metrics::upkeep(h)));
    // Workflows an earlier run of this proxy left unfinished go on (or end) here, before the
    // admin API answers: a status asked at once must find them.
    proxy.shared.reshards.resume().await;
    let admin = tokio::spawn(async move {
        if let Err(e) = crate::admin::serve(admin_listener, admin_state).await {
            warn!(error = %e, "the admin API stopped");
        }
    });
    info!(
        listen = %proxy.local_addr(),
        admin = %admin_addr,
        workers = worker_count(&proxy.shared.config),
        "shardgate is accepting MySQL clients"
    );
    Ok(Running {
        proxy,
        admin,
        upkeep,
        admin_addr,
    })
}

/// The MariaDB extended capabilities all configured servers announce, read from their
/// greetings (no login) before clients are greeted; `None` if none answered within a second
/// (then the first server connection tells).
async fn probe_ext_caps(config: &Config) -> Option<u32> {
    let map = config.shard_map();
    let addrs: Vec<String> = map
        .keyspace
        .values()
        .flat_map(|k| &k.shards)
        .flat_map(|s| std::iter::once(s.primary.clone()).chain(s.replica_addrs().map(String::from)))
        .collect();
    let timeout = std::time::Duration::from_secs(1);
    let mut probes = tokio::task::JoinSet::new();
    for addr in addrs {
        probes.spawn(async move { crate::backend::conn::greeting_ext_caps(&addr, timeout).await });
    }
    let mut all: Option<u32> = None;
    while let Some(seen) = probes.join_next().await {
        if let Ok(Some(ext)) = seen {
            all = Some(all.map_or(ext, |a| a & ext));
        }
    }
    all
}

/// Runs the proxy for `config` until Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    let r = tokio::signal::ctrl_c().await;
    info!("shutting down");
    running.stop().await?;
    r?;
    Ok(())
}
