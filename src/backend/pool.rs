//! Bounded connection pools, one per backend server.
//!
//! A permit of the server's semaphore is held by every open connection, idle or busy, so a
//! server never sees more than `max_connections` from this proxy. Sessions give connections
//! back between statements (multiplexing): a connection that carries only session variables
//! goes straight back to the idle list (the next session makes it carry its own, see
//! `vars`); one marked dirty (a transaction, temporary tables, locks) is reset first
//! (COM_RESET_CONNECTION); one returned mid-response is closed.
//!
//! Connection state and how none of it reaches another session (MariaDB 10.11; tests in
//! tests/pool_state.rs and tests/multiplexing.rs):
//! - session and user variables, `SET NAMES`, autocommit, `LAST_INSERT_ID()`: tracked and
//!   replayed (`vars`); a reset clears them.
//! - selected database: kept by a reset; tracked (`BackendConn::db`), matched on take.
//! - role (`SET ROLE`, also prepared, in `EXECUTE IMMEDIATE`, a versioned comment, a routine
//!   or trigger): kept by a reset; the login role is put back on every return for accounts
//!   with roles (`conn::Roles`), and after every pinned session for the others.
//! - multi-statement option (COM_SET_OPTION): kept by a reset; part of the pool key
//!   (`ConnKey::framing`), so only a session with the same option gets the connection.
//! - transaction, `SET TRANSACTION` characteristics, temporary tables, named locks
//!   (`GET_LOCK`), `LOCK TABLES`, SQL `PREPARE`, HANDLER, cursors, a procedure's variables:
//!   the session is pinned, and a reset (which clears all of them) follows before reuse.
//! - protocol prepared statements: shared on purpose (`prepared`), found by their text.
//! - `SET STATEMENT ... FOR`: one statement only. `SET PASSWORD`, `SET DEFAULT ROLE`, grants:
//!   the account's, not the connection's (a pooled connection keeps the default role of its
//!   login). `SET SESSION AUTHORIZATION` does not exist in 10.11.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::conn::{BackendConn, BackendError, ConnKey, ConnectParams};
use crate::config::PoolSection;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as proxy worker `index`. A connection's socket is registered with
/// the event loop of the worker that opened it, so each worker keeps its own idle list and
/// reuses its own connections first (another worker's still work, with a cross-thread wake).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The proxy worker index of this thread (0 off the workers).
pub(crate) fn current_worker() -> usize {
    WORKER.with(|w| w.get())
}

/// An idle connection is closed rather than reused after this long (servers time them out).
const IDLE_MAX_AGE: Duration = Duration::from_secs(300);
/// How long a retired connection may take to be closed by its server before it is dropped.
const RETIRE_WAIT: Duration = Duration::from_secs(1);

/// Connections are boxed: one is moved between the idle lists, `Pooled` and the session's
/// pinned set on every statement, and a pointer moves cheaper than the whole struct.
struct Idle {
    conn: Box<BackendConn>,
    permit: OwnedSemaphorePermit,
}

/// A statement waiting for a connection of a full pool.
struct Waiter {
    /// The proxy worker the statement runs on.
    worker: usize,
    user: String,
    key: ConnKey,
    has_db: bool,
    tx: oneshot::Sender<Idle>,
}

impl Waiter {
    /// As `take_idle` matches: the same user and client framing, and no database selected
    /// for a client that has none.
    fn can_use(&self, conn: &BackendConn) -> bool {
        conn.key == self.key && conn.user == self.user && (self.has_db || conn.db.is_none())
    }
}

/// The pool of one server.
pub struct ServerPool {
    addr: Arc<str>,
    settings: PoolSection,
    permits: Arc<Semaphore>,
    /// Idle connections per worker.
    idle: Vec<Mutex<Vec<Idle>>>,
    /// Statements waiting on a full pool, oldest first: a connection given back goes to the
    /// oldest that can use it, so new arrivals do not overtake them.
    waiters: Mutex<VecDeque<Waiter>>,
    /// The extended capabilities every server seen so far offers (shared by all pools).
    ext: Arc<AtomicU32>,
}

/// A connection checked out of a pool; dropping it gives it back (or closes it).
pub struct Pooled {
    conn: Option<Box<BackendConn>>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<ServerPool>,
}

impl std::ops::Deref for Pooled {
    type Target = BackendConn;
    fn deref(&self) -> &BackendConn {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut BackendConn {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Pooled {
    /// Closes the connection instead of returning it (after an error on it).
    pub fn discard(mut self) {
        self.conn = None;
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        if conn.in_flight || conn.broken {
            // Mid-response or closed by the server: closing it frees the permit.
            metrics::counter!("shardgate_pool_connections_closed_total").increment(1);
            return;
        }
        let clean = !conn.dirty && !conn.in_txn;
        if clean && !conn.roles.changeable() {
            self.pool.put_idle(conn, permit);
            return;
        }
        let pool = self.pool.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { pool.clean_then_idle(conn, permit, clean).await });
        }
    }
}

/// Closes an idle connection the pool no longer wants, keeping its permit until the server
/// has closed its side: dropping the socket alone frees the slot while the server still counts
/// the connection, and a new one opened meanwhile would take the server one over
/// `max_connections`.
fn retire(idle: Idle) {
    let Idle { mut conn, permit } = idle;
    metrics::counter!("shardgate_pool_connections_closed_total").increment(1);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let quit = [1, 0, 0, 0, crate::protocol::consts::com::QUIT];
        let closed = async {
            if conn.io.write_all(&quit).await.is_ok() {
                while matches!(conn.io.fill().await, Ok(1..)) {}
            }
        };
        let _ = tokio::time::timeout(RETIRE_WAIT, closed).await;
        drop(conn);
        drop(permit);
    });
}

impl ServerPool {
    fn new(addr: &str, settings: &PoolSection, workers: usize, ext: Arc<AtomicU32>) -> Self {
        ServerPool {
            addr: addr.into(),
            settings: settings.clone(),
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            idle: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            waiters: Mutex::new(VecDeque::new()),
            ext,
        }
    }

    /// Resets a connection unless `clean`, and puts its login role back, off the client's
    /// path; one that fails either is closed.
    async fn clean_then_idle(
        self: Arc<Self>,
        mut conn: Box<BackendConn>,
        permit: OwnedSemaphorePermit,
        clean: bool,
    ) {
        if !clean && !matches!(conn.reset().await, Ok(Ok(()))) {
            return;
        }
        if let Ok(Ok(())) = conn.restore_role(!clean).await {
            self.put_idle(conn, permit);
        }
    }

    /// Keeps a returned connection for reuse. Above `max_idle` (per worker, its share),
    /// connections are closed only once idle for `idle_timeout_ms`: under a load above
    /// `max_idle` every connection is in recent use and none is closed and reopened (with
    /// its prepared statements) between statements.
    fn put_idle(&self, mut conn: Box<BackendConn>, permit: OwnedSemaphorePermit) {
        let now = Instant::now();
        conn.last_used = now;
        let Some(given) = self.hand_over(Idle { conn, permit }) else {
            return;
        };
        let list = &self.idle[given.conn.worker.min(self.idle.len() - 1)];
        let mut idle = list.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(given);
        let surplus = self.shrink(&mut idle, now);
        drop(idle);
        surplus.into_iter().for_each(retire);
    }

    /// Gives a connection to the oldest waiting statement that can use it, on the worker whose
    /// event loop the connection's socket is registered with if one waits there (a socket
    /// used from another worker's thread costs a cross-thread wake-up per read: handing
    /// connections over in strict arrival order cost a third more CPU per statement at 256
    /// clients on 64 connections). Waking all waiters for each connection, as before, made a
    /// full pool poll every one of them per statement. When statements wait but none can use
    /// it (another user or framing), it is closed so that its permit lets one of them open
    /// its own. `Some`: nobody waits.
    fn hand_over(&self, mut idle: Idle) -> Option<Idle> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.retain(|w| !w.tx.is_closed());
        if waiters.is_empty() {
            return Some(idle);
        }
        loop {
            let worker = idle.conn.worker;
            let at = waiters
                .iter()
                .position(|w| w.worker == worker && w.can_use(&idle.conn))
                .or_else(|| waiters.iter().position(|w| w.can_use(&idle.conn)));
            let Some(at) = at else { break };
            let Some(w) = waiters.remove(at) else { break };
            match w.tx.send(idle) {
                Ok(()) => return None,
                // It stopped waiting meanwhile.
                Err(back) => idle = back,
            }
        }
        let anyone = !waiters.is_empty();
        drop(waiters);
        if anyone {
            retire(idle);
            return None;
        }
        Some(idle)
    }

    /// The connections of one worker's idle list above its share of `max_idle` that have been
    /// idle for `idle_timeout_ms`, taken out of the list (oldest first).
    fn shrink(&self, idle: &mut Vec<Idle>, now: Instant) -> Vec<Idle> {
        let floor = self.settings.max_idle.div_ceil(self.idle.len());
        if idle.len() <= floor {
            return Vec::new();
        }
        let timeout = Duration::from_millis(self.settings.idle_timeout_ms);
        let mut out = Vec::new();
        while idle.len() > floor {
            let Some((oldest, at)) = idle
                .iter()
                .enumerate()
                .map(|(i, c)| (i, c.conn.last_used))
                .min_by_key(|&(_, at)| at)
            else {
                break;
            };
            if now.saturating_duration_since(at) < timeout {
                break;
            }
            out.push(idle.swap_remove(oldest));
        }
        out
    }

    /// Takes an idle connection opened for `user` and `key`, dropping stale ones on the way.
    ///
    /// A database cannot be unselected on a MariaDB connection, so a client that selected none
    /// only gets a connection that has none; others prefer one already on their database and
    /// carrying their variables (`sig`), which then needs no round trip to fit.
    fn take_idle(&self, user: &str, key: ConnKey, db: Option<&str>, sig: u64) -> Option<Idle> {
        let own = current_worker() % self.idle.len();
        let mut order = (0..self.idle.len()).map(|i| (own + i) % self.idle.len());
        order.find_map(|w| {
            let mut idle = self.idle[w].lock().unwrap_or_else(|e| e.into_inner());
            // One clock read and no allocation unless something is stale: this runs for every
            // statement, over every idle connection of the list.
            let now = Instant::now();
            let stale = |i: &Idle| now.saturating_duration_since(i.conn.last_used) >= IDLE_MAX_AGE;
            while let Some(at) = idle.iter().position(stale) {
                retire(idle.swap_remove(at));
            }
            self.shrink(&mut idle, now).into_iter().for_each(retire);
            let fits = |i: &Idle| i.conn.key == key && i.conn.user == user;
            let same_db = |i: &Idle| fits(i) && i.conn.db.as_deref() == db;
            let sig_of = |i: &Idle| i.conn.vars.as_ref().map_or(0, |v| v.sig());
            let pos = idle
                .iter()
                .rposition(|i| same_db(i) && sig_of(i) == sig)
                .or_else(|| idle.iter().rposition(same_db))
                .or_else(|| db.and_then(|_| idle.iter().rposition(fits)))?;
            Some(idle.swap_remove(pos))
        })
    }

    /// Closes one idle connection that a request for `user`, `key` and `db` could not use
    /// (another user, framing or charset; a database selected when the request has none), to
    /// make room under the limit. One it could use is left for it or another waiter.
    /// (Evicting any connection made a full pool close and reopen connections all the time:
    /// every waiter that lost the race for a returned connection closed the next one.)
    fn evict_unfit(&self, user: &str, key: ConnKey, db: Option<&str>) -> bool {
        self.idle.iter().any(|list| {
            let mut idle = list.lock().unwrap_or_else(|e| e.into_inner());
            let unfit = idle.iter().position(|i| {
                i.conn.key != key || i.conn.user != user || (db.is_none() && i.conn.db.is_some())
            });
            match unfit {
                Some(at) => {
                    retire(idle.remove(at));
                    true
                }
                None => false,
            }
        })
    }

    async fn get(
        self: &Arc<Self>,
        user: &str,
        password: &crate::protocol::auth::Secret,
        key: ConnKey,
        db: Option<&str>,
        sig: u64,
    ) -> Result<Pooled, BackendError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.wait_timeout_ms);
        let pooled = |idle: Idle| Pooled {
            conn: Some(idle.conn),
            permit: Some(idle.permit),
            pool: self.clone(),
        };
        if let Some(idle) = self.take_idle(user, key, db, sig) {
            return Ok(pooled(idle));
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Queued first, then one more look: a connection given back between the first
                // look and the queueing is then either in the idle list or handed over.
                let (tx, mut rx) = oneshot::channel();
                self.waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(Waiter {
                        worker: current_worker(),
                        user: user.to_string(),
                        key,
                        has_db: db.is_some(),
                        tx,
                    });
                // Leaving the queue: a connection handed over meanwhile is given back.
                let leave = |rx: &mut oneshot::Receiver<Idle>| {
                    rx.close();
                    if let Ok(idle) = rx.try_recv() {
                        self.put_idle(idle.conn, idle.permit);
                    }
                };
                if let Some(idle) = self.take_idle(user, key, db, sig) {
                    leave(&mut rx);
                    return Ok(pooled(idle));
                }
                // An idle connection of another user or charset makes room: its permit comes
                // back once the server has closed it, which the wait below sees.
                self.evict_unfit(user, key, db);
                tokio::select! {
                    given = &mut rx => match given {
                        Ok(idle) => return Ok(pooled(idle)),
                        Err(_) => return Err(self.timeout()),
                    },
                    p = self.permits.clone().acquire_owned() => match p {
                        Ok(p) => {
                            leave(&mut rx);
                            p
                        }
                        Err(_) => return Err(self.timeout()),
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        rx.close();
                        return match rx.try_recv() {
                            Ok(idle) => Ok(pooled(idle)),
                            Err(_) => Err(self.timeout()),
                        };
                    }
                }
            }
        };
        let mut conn = BackendConn::connect(ConnectParams {
            addr: &self.addr,
            user,
            password,
            key,
            db,
            timeout: Duration::from_millis(self.settings.connect_timeout_ms),
        })
        .await?;
        metrics::counter!("shardgate_pool_connections_opened_total").increment(1);
        self.ext.fetch_and(conn.server_ext, Ordering::Relaxed);
        conn.worker = current_worker();
        Ok(Pooled {
            conn: Some(Box::new(conn)),
            permit: Some(permit),
            pool: self.clone(),
        })
    }

    /// Open connections (busy, idle, being opened or reset) and the idle ones, read from the
    /// semaphore and the idle lists: nothing extra is counted on the data path.
    pub fn usage(&self) -> PoolUsage {
        let open = self
            .settings
            .max_connections
            .saturating_sub(self.permits.available_permits());
        let idle = self
            .idle
            .iter()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum();
        PoolUsage {
            open,
            idle,
            max: self.settings.max_connections,
        }
    }

    fn timeout(&self) -> BackendError {
        BackendError::PoolTimeout {
            addr: self.addr.to_string(),
            max: self.settings.max_connections,
            ms: self.settings.wait_timeout_ms,
        }
    }
}

/// How much of one server's pool is in use, for the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolUsage {
    pub open: usize,
    pub idle: usize,
    /// `pool.max_connections`.
    pub max: usize,
}

/// All server pools of the proxy, created on first use.
pub struct Pools {
    settings: PoolSection,
    workers: usize,
    servers: Mutex<HashMap<String, Arc<ServerPool>>>,
    /// MariaDB extended capabilities all servers seen offer; `UNKNOWN` before the first.
    ext: Arc<AtomicU32>,
}

/// No server seen yet: nothing is offered.
const UNKNOWN: u32 = u32::MAX;

impl Pools {
    pub fn new(settings: PoolSection, workers: usize) -> Self {
        Pools {
            settings,
            workers,
            servers: Mutex::new(HashMap::new()),
            ext: Arc::new(AtomicU32::new(UNKNOWN)),
        }
    }

    /// Records what a server offers (its greeting's extended capabilities): what clients are
    /// offered is what every server seen offers.
    pub fn learn_ext(&self, server_ext: u32) {
        self.ext.fetch_and(server_ext, Ordering::Relaxed);
    }

    /// The MariaDB extended capabilities every server seen offers (0 before any).
    pub fn backend_ext(&self) -> u32 {
        match self.ext.load(Ordering::Relaxed) {
            UNKNOWN => 0,
            ext => ext,
        }
    }

    pub fn server(&self, addr: &str) -> Arc<ServerPool> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = servers.get(addr) {
            return pool.clone();
        }
        servers
            .entry(addr.to_string())
            .or_insert_with(|| {
                let ext = self.ext.clone();
                Arc::new(ServerPool::new(addr, &self.settings, self.workers, ext))
            })
            .clone()
    }

    /// `addr`'s pool use; all 0 (but `max`) when nothing opened one yet, without creating it.
    pub fn usage(&self, addr: &str) -> PoolUsage {
        let pool = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .cloned();
        pool.map_or(
            PoolUsage {
                max: self.settings.max_connections,
                ..PoolUsage::default()
            },
            |p| p.usage(),
        )
    }

    /// A connection to `addr` for `user`, with the client's framing and charset, preferably
    /// with `db` selected and carrying variables whose signature is `sig`.
    pub async fn get(
        &self,
        addr: &str,
        user: &str,
        password: &crate::protocol::auth::Secret,
        key: ConnKey,
        db: Option<&str>,
        sig: u64,
    ) -> Result<Pooled, BackendError> {
        self.server(addr).get(user, password, key, db, sig).await
    }
}
