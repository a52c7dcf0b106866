//! Holds the statements of one sharded keyspace that touch the keys a reshard cutover moves,
//! and rejects what is left of the transactions that touched them on the old shard map.
//!
//! The proxy-wide [`super::gate::Gate`] pauses every session; a cutover must pause only the
//! keys it moves. A hold has a scope: the moving keys ([`MovingKeys`]), or every key of the
//! keyspace (`None`). While a hold is on, a command whose keys all stay where they are
//! ([`Touched`], from the planner) runs at once and uncounted: its owner is the same under
//! either map. A command that touches a moving key (or keys the planner cannot name: a
//! scatter, a write to every shard) waits for the release and is then planned on the new
//! map; one of a transaction that began before the hold passes, so that open transactions
//! can end during the grace period. A transaction that would wait at a moving key while it
//! holds rows of keys that stay is rolled back instead (its locks could stall the statements
//! the cutover drains), as MariaDB answers a deadlock.
//!
//! `doom` bumps an epoch, with the scope it dooms: a transaction whose token is older is
//! doomed if it touched a key of that scope (its writes went to the old owner; committed
//! after the switch they would be lost), and goes on otherwise. It is checked lazily, at the
//! transaction's next command.
//!
//! The cutover: `acquire`, `wait_txns` (the grace period), `doom`, `drain`, publish the new
//! map, `release`. `doom` then `drain` never misses a command of a doomed transaction:
//! `enter` counts itself in flight before reading the epoch (SeqCst on both sides), and a
//! command that touches a moving key after the doom waits instead of passing.
//!
//! Every command of a session on a sharded keyspace enters that keyspace's gate, held or not
//! (two atomics, like the proxy's gate): a command that passed uncounted just before a hold
//! began could write to the old owner after the drain. [`KeyspaceGates::active`] says
//! whether any hold is on.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::shardmap::moving::{MovingKeys, Touched};

/// What a hold holds: the commands that touch these keys, or (`None`) every command.
pub type Scope = Option<Arc<MovingKeys>>;

/// The keyspace gates of the proxy, by keyspace name.
#[derive(Debug, Default)]
pub struct KeyspaceGates {
    /// Holds in force over all keyspaces (shared with every gate).
    holds: Arc<AtomicUsize>,
    gates: RwLock<HashMap<Arc<str>, Arc<KeyspaceGate>>>,
}

impl KeyspaceGates {
    /// The gate of `keyspace`, made on first use.
    pub fn gate(&self, keyspace: &str) -> Arc<KeyspaceGate> {
        if let Some(g) = self
            .gates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(keyspace)
        {
            return g.clone();
        }
        let mut gates = self.gates.write().unwrap_or_else(|e| e.into_inner());
        gates
            .entry(Arc::from(keyspace))
            .or_insert_with(|| Arc::new(KeyspaceGate::new(keyspace, self.holds.clone())))
            .clone()
    }

    /// Whether any keyspace gate is held (one load: every command reads it). SeqCst, which
    /// costs what a relaxed load does on x86, so that a command that reads false is ordered
    /// before the hold began.
    pub fn active(&self) -> bool {
        self.holds.load(Ordering::SeqCst) > 0
    }
}

/// Why [`KeyspaceGate::enter`] refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The hold lasted longer than the caller may wait.
    #[error("the keyspace's statements are held for longer than the caller may wait")]
    StillHeld,
    /// The command's transaction touched keys that switched shards since it began: it must
    /// be rolled back, never committed.
    #[error("the transaction touched keys that switched shards since it began")]
    Doomed,
    /// A workflow may switch the keyspace and this proxy's etcd lease is not current: other
    /// proxies may have switched it without this one.
    #[error("the proxy's etcd lease is not current while its keyspace is being resharded")]
    LeaseLapsed,
}

/// How a command got in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    /// Counted in flight: `leave` once it ran.
    Counted,
    /// During a hold, touching no key the hold holds: not counted (nothing to leave).
    Uncounted,
}

/// Dooms remembered for the transactions that have not run a command since; an older one
/// counts as dooming everything.
const DOOM_HISTORY: usize = 64;

#[derive(Debug)]
pub struct KeyspaceGate {
    keyspace: Arc<str>,
    holds: AtomicUsize,
    /// The registry's count of holds over all keyspaces.
    all_holds: Arc<AtomicUsize>,
    /// The scopes of the holds in force (one per hold).
    scopes: Mutex<Vec<Scope>>,
    /// Bumped when a hold begins (none was on): tells the transactions that began before it.
    generation: AtomicU64,
    /// The generation in which `doom` last ran: once doomed, a held command of a transaction
    /// no longer passes.
    doomed_in: AtomicU64,
    in_flight: AtomicUsize,
    /// Tokens older than this epoch are checked against the dooms since theirs.
    epoch: AtomicU64,
    /// Each doom's epoch (after it) and scope, oldest first.
    dooms: Mutex<VecDeque<(u64, Scope)>>,
    /// Open transactions by the parity of the generation they began in.
    open_txns: [AtomicUsize; 2],
    /// Bumped on every release; waiters watch it.
    released: watch::Sender<u64>,
    /// A reshard workflow of this keyspace may switch its map (set from the workflows in the
    /// topology store): the proxy serves it only while its etcd lease is current.
    armed: AtomicBool,
    /// Holds in force that switch the map (a cutover's, not a verify's): a transaction that
    /// would wait in one holding rows of keys that stay is rolled back instead.
    switching: AtomicUsize,
}

/// The scope of the holds in force, merged.
enum Held {
    Not,
    Everything,
    Keys(Vec<Arc<MovingKeys>>),
}

impl KeyspaceGate {
    fn new(keyspace: &str, all_holds: Arc<AtomicUsize>) -> Self {
        KeyspaceGate {
            keyspace: Arc::from(keyspace),
            holds: AtomicUsize::new(0),
            all_holds,
            scopes: Mutex::new(Vec::new()),
            generation: AtomicU64::new(1),
            doomed_in: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            epoch: AtomicU64::new(1),
            dooms: Mutex::new(VecDeque::new()),
            open_txns: [AtomicUsize::new(0), AtomicUsize::new(0)],
            released: watch::channel(0).0,
            armed: AtomicBool::new(false),
            switching: AtomicUsize::new(0),
        }
    }

    pub fn keyspace(&self) -> &Arc<str> {
        &self.keyspace
    }

    /// Whether a workflow may switch this keyspace's map (one load per command).
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    pub fn arm(&self, armed: bool) {
        self.armed.store(armed, Ordering::Relaxed);
    }

    /// Lets a command in. `txn` is the command's transaction (a token of this gate; one of
    /// another keyspace's gate is ignored) with the keys it touched so far, this command's
    /// included; `now` is what this command touches.
    ///
    /// No hold: counted. Held: a command that touches none of the held keys goes uncounted;
    /// one of a transaction that began before the hold goes counted until the doom; others
    /// wait for the release, at most `wait`. A doomed transaction is refused.
    pub async fn enter(
        &self,
        txn: Option<(&TxnToken, &Touched)>,
        now: &Touched,
        wait: Duration,
    ) -> Result<Entered, Refused> {
        let txn = txn.filter(|(t, _)| std::ptr::eq(Arc::as_ptr(&t.gate), self));
        // Read the clock only once a hold makes the command wait.
        let mut deadline: Option<Instant> = None;
        loop {
            // SeqCst here and in `doom`, `acquire` and `drain`: either the holder sees this
            // command counted, or this command sees the hold and the new epoch.
            if !self.holding() {
                if let Some(r) = self.count(txn, || !self.holding()) {
                    return r;
                }
            }
            let mut rx = self.released.subscribe();
            let held = self.held();
            if matches!(held, Held::Not) {
                continue;
            }
            if txn.is_some_and(|(t, touched)| self.dooms_since(t, touched)) {
                return Err(Refused::Doomed);
            }
            let passes = txn.is_some_and(|(t, _)| self.passes_hold(t));
            if let Held::Keys(sets) = &held {
                if !sets.iter().any(|m| now.meets(m)) {
                    return Ok(Entered::Uncounted);
                }
                // A transaction that would wait here holding rows of keys that stay (locks
                // taken while those ran on) could stall the statements the cutover drains:
                // it is rolled back instead, as a deadlock would be.
                if !passes
                    && self.switching.load(Ordering::SeqCst) > 0
                    && txn.is_some_and(|(_, touched)| holds_staying(touched, sets))
                {
                    return Err(Refused::Doomed);
                }
            }
            if passes {
                if let Some(r) = self.count(txn, || txn.is_some_and(|(t, _)| self.passes_hold(t))) {
                    return r;
                }
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + wait);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(Refused::StillHeld);
            }
        }
    }

    /// Counts a command in flight, then checks that its transaction is not doomed and that
    /// what let it in (`still`) holds after the count; `None` (uncounted again) when it no
    /// longer does.
    fn count(
        &self,
        txn: Option<(&TxnToken, &Touched)>,
        still: impl Fn() -> bool,
    ) -> Option<Result<Entered, Refused>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if txn.is_some_and(|(t, touched)| self.dooms_since(t, touched)) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Some(Err(Refused::Doomed));
        }
        if still() {
            return Some(Ok(Entered::Counted));
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// A held command of a transaction that began before this hold, before the doom, goes on.
    fn passes_hold(&self, t: &TxnToken) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        t.generation < generation && self.doomed_in.load(Ordering::SeqCst) != generation
    }

    /// The command that `enter`ed counted has ended.
    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Commands between `enter` and `leave` now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no counted command is between `enter` and `leave`, at most `limit`; true
    /// if it got there. After `doom`, a doomed transaction's command that got in is counted.
    pub async fn drain(&self, limit: Duration) -> bool {
        reaches_zero(&self.in_flight, limit).await
    }

    fn holding(&self) -> bool {
        self.holds.load(Ordering::SeqCst) > 0
    }

    fn held(&self) -> Held {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if scopes.is_empty() {
            return Held::Not;
        }
        let mut keys = Vec::with_capacity(scopes.len());
        for s in scopes.iter() {
            match s {
                Some(m) => keys.push(m.clone()),
                None => return Held::Everything,
            }
        }
        Held::Keys(keys)
    }

    /// Whether a hold is on.
    pub fn is_holding(&self) -> bool {
        self.holds.load(Ordering::Relaxed) > 0
    }

    /// Starts holding this keyspace's commands that touch `scope` until the guard drops.
    pub fn hold(&self, scope: Scope) -> KeyspaceHold<'_> {
        self.acquire(scope.clone());
        KeyspaceHold { gate: self, scope }
    }

    /// A hold not tied to a borrow; every `acquire` needs one `release` of the same scope.
    /// Holds nest (what any of them holds is held).
    pub fn acquire(&self, scope: Scope) {
        {
            let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
            if scopes.is_empty() {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            // The scope before the counts: a command that sees the hold finds its scope.
            scopes.push(scope);
        }
        // The registry's count first: a session reading `active` false must find no hold here.
        self.all_holds.fetch_add(1, Ordering::SeqCst);
        self.holds.fetch_add(1, Ordering::SeqCst);
    }

    /// `acquire` for a hold that switches the map (a cutover's): see `switching`.
    pub fn acquire_switching(&self, scope: Scope) {
        self.switching.fetch_add(1, Ordering::SeqCst);
        self.acquire(scope);
    }

    pub fn release_switching(&self, scope: &Scope) {
        self.release(scope);
        let _ = self
            .switching
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    pub fn release(&self, scope: &Scope) {
        {
            let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
            let same = |s: &Scope| match (s, scope) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            let Some(at) = scopes.iter().position(same) else {
                // An extra release: nothing was held.
                return;
            };
            scopes.remove(at);
        }
        self.holds.fetch_sub(1, Ordering::SeqCst);
        self.all_holds.fetch_sub(1, Ordering::SeqCst);
        if !self.holding() {
            self.released.send_modify(|n| *n += 1);
        }
    }

    /// Dooms every transaction open now that touched `scope`'s keys (all with `None`): their
    /// next command is refused with [`Refused::Doomed`]. Call it while holding; then `drain`
    /// waits for any command of theirs that got in before.
    pub fn doom(&self, scope: Scope) {
        let mut dooms = self.dooms.lock().unwrap_or_else(|e| e.into_inner());
        self.doomed_in
            .store(self.generation.load(Ordering::SeqCst), Ordering::SeqCst);
        let epoch = self.epoch.load(Ordering::SeqCst) + 1;
        dooms.push_back((epoch, scope));
        if dooms.len() > DOOM_HISTORY {
            dooms.pop_front();
        }
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The epoch `doom` bumps.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Whether a doom since `t` was taken hits the keys `touched`; if none does, the token
    /// is brought up to date (one load when no doom came).
    fn dooms_since(&self, t: &TxnToken, touched: &Touched) -> bool {
        let seen = t.epoch.load(Ordering::SeqCst);
        if seen >= self.epoch.load(Ordering::SeqCst) {
            return false;
        }
        let dooms = self.dooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&(oldest, _)) = dooms.front() else {
            return true;
        };
        if oldest > seen + 1 {
            // Older dooms are forgotten: one of them may have hit it.
            return true;
        }
        let hit = dooms
            .iter()
            .filter(|(e, _)| *e > seen)
            .any(|(_, scope)| scope.as_ref().is_none_or(|m| touched.meets(m)));
        if !hit {
            if let Some(&(last, _)) = dooms.back() {
                t.epoch.store(last, Ordering::SeqCst);
            }
        }
        hit
    }

    /// A transaction opens on this keyspace; it is counted open until the token drops.
    ///
    /// One that opens while a hold is on is taken as opened before the hold's doom: it may
    /// have opened within a command that got in before the hold and touched moving keys on
    /// the old map. Its commands that touch held keys wait for the release.
    pub fn txn_begins(self: &Arc<Self>) -> TxnToken {
        self.begin(false)
    }

    /// A transaction opens within a command that entered uncounted during a hold (see
    /// `Entered::Uncounted`): that command reached no moving key, so only later dooms can hit
    /// it.
    pub fn txn_begins_uncounted(self: &Arc<Self>) -> TxnToken {
        self.begin(true)
    }

    fn begin(self: &Arc<Self>, uncounted: bool) -> TxnToken {
        let generation = {
            // Under the scopes' lock: a hold's generation and its scope come together.
            let _scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
            self.generation.load(Ordering::SeqCst)
        };
        self.open_txns[(generation & 1) as usize].fetch_add(1, Ordering::SeqCst);
        // The epoch before the hold: reading no hold, the epoch read is older than any doom
        // of a hold that begins later (SeqCst here, in `acquire` and in `doom`).
        let mut epoch = self.epoch.load(Ordering::SeqCst);
        if !uncounted && self.holding() && self.doomed_in.load(Ordering::SeqCst) == generation {
            epoch = epoch.saturating_sub(1);
        }
        TxnToken {
            epoch: AtomicU64::new(epoch),
            generation,
            gate: self.clone(),
        }
    }

    /// Transactions open on this keyspace (tokens alive), doomed ones included.
    pub fn open_txns(&self) -> usize {
        self.open_txns
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .sum()
    }

    /// Waits until the transactions that began before the hold in force (since the hold
    /// before it) have ended, at most `limit`; true if they did. The grace period in which
    /// open transactions may still end.
    pub async fn wait_txns(&self, limit: Duration) -> bool {
        let before = self.generation.load(Ordering::SeqCst).wrapping_sub(1);
        reaches_zero(&self.open_txns[(before & 1) as usize], limit).await
    }
}

/// Whether `touched` names a key that none of `sets` moves.
fn holds_staying(touched: &Touched, sets: &[Arc<MovingKeys>]) -> bool {
    match touched {
        Touched::Keys(keys) => keys.iter().any(|&h| !sets.iter().any(|m| m.contains(h))),
        Touched::Nothing | Touched::Unknown => false,
    }
}

/// Polls `count` until it is 0, at most `limit`; true if it got there.
async fn reaches_zero(count: &AtomicUsize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// A transaction open on a keyspace, from its first statement until it ends.
#[derive(Debug)]
pub struct TxnToken {
    /// The gate's epoch it is checked up to.
    epoch: AtomicU64,
    /// The gate's generation when it began.
    generation: u64,
    gate: Arc<KeyspaceGate>,
}

impl TxnToken {
    pub fn gate(&self) -> &Arc<KeyspaceGate> {
        &self.gate
    }

    /// Whether a `doom` since the transaction was last checked hits the keys it touched
    /// (what a session checks when no hold is on, as then `enter` finds it too).
    pub fn is_doomed(&self, touched: &Touched) -> bool {
        self.gate.dooms_since(self, touched)
    }
}

impl Drop for TxnToken {
    fn drop(&mut self) {
        self.gate.open_txns[(self.generation & 1) as usize].fetch_sub(1, Ordering::SeqCst);
    }
}

/// A keyspace hold in force; dropping it lets the waiting commands go.
pub struct KeyspaceHold<'a> {
    gate: &'a KeyspaceGate,
    scope: Scope,
}

impl KeyspaceHold<'_> {
    /// Waits until no counted command is running, at most `limit`; true if it got there.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.gate.drain(limit).await
    }
}

impl Drop for KeyspaceHold<'_> {
    fn drop(&mut self) {
        self.gate.release(&self.scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shardmap::moving::RingChange;
    use crate::shardmap::ring::{key_hash, KeyValue, Ring};

    const NO: &Touched = &Touched::Nothing;

    /// The keys 2 -> 3 shards moves, a key that moves and one that stays.
    fn moving() -> (Scope, Touched, Touched) {
        let two = Ring::new(&["s1", "s2"], 64);
        let three = Ring::new(&["s1", "s2", "s3"], 64);
        let m = RingChange::of(&two, 64, &three, 64).moving();
        let hashes = (0..100i128).map(|k| key_hash(&KeyValue::Int(k)));
        let mover = hashes
            .clone()
            .find(|&h| m.contains(h))
            .expect("a key moves");
        let stayer = hashes
            .clone()
            .find(|&h| !m.contains(h))
            .expect("a key stays");
        (
            Some(Arc::new(m)),
            Touched::Keys(vec![mover]),
            Touched::Keys(vec![stayer]),
        )
    }

    #[tokio::test]
    async fn commands_wait_while_held_and_go_on_release() {
        let gates = KeyspaceGates::default();
        assert!(!gates.active(), "nothing held");
        let gate = gates.gate("ks");
        let other = gates.gate("other");
        let hold = gate.hold(None);
        assert!(gates.active());
        assert!(hold.drain(Duration::from_millis(10)).await);
        assert_eq!(
            gate.enter(None, NO, Duration::from_millis(20)).await,
            Err(Refused::StillHeld)
        );
        // Only this keyspace is held.
        assert_eq!(
            other.enter(None, NO, Duration::ZERO).await,
            Ok(Entered::Counted)
        );
        other.leave();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter(None, NO, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "waits while held");
        drop(hold);
        assert!(!gates.active(), "released");
        assert_eq!(waiter.await.expect("task"), Ok(Entered::Counted));
        assert_eq!(gate.in_flight(), 1);
        gate.leave();
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_scoped_hold_holds_only_the_moving_keys() {
        let (scope, mover, stayer) = moving();
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let hold = gate.hold(scope.clone());
        // Keys that stay, and commands with no sharded rows, run at once, uncounted: the
        // drain does not wait for them.
        for t in [&stayer, NO] {
            assert_eq!(
                gate.enter(None, t, Duration::ZERO).await,
                Ok(Entered::Uncounted)
            );
        }
        assert_eq!(gate.in_flight(), 0);
        // A moving key, or keys the planner cannot name, wait.
        for t in [&mover, &Touched::Unknown] {
            assert_eq!(
                gate.enter(None, t, Duration::from_millis(10)).await,
                Err(Refused::StillHeld)
            );
        }
        // A second hold of every key nests: now everything waits until it ends.
        gate.acquire(None);
        assert_eq!(
            gate.enter(None, &stayer, Duration::from_millis(10)).await,
            Err(Refused::StillHeld)
        );
        gate.release(&None);
        let g = gate.clone();
        let m = mover.clone();
        let waiter = tokio::spawn(async move { g.enter(None, &m, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "a moving key waits");
        drop(hold);
        assert_eq!(waiter.await.expect("task"), Ok(Entered::Counted));
        gate.leave();
        assert!(!gates.active());
    }

    #[tokio::test]
    async fn holds_nest_and_an_extra_release_does_not_wrap() {
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let own = gate.hold(None);
        gate.acquire(None);
        drop(own);
        assert!(gates.active() && gate.is_holding(), "one hold is still on");
        gate.release(&None);
        gate.release(&None);
        let (scope, _, _) = moving();
        gate.release(&scope);
        assert!(!gates.active() && !gate.is_holding());
        assert_eq!(
            gate.enter(None, NO, Duration::ZERO).await,
            Ok(Entered::Counted)
        );
        gate.leave();
    }

    #[tokio::test]
    async fn a_transaction_passes_the_hold_until_doomed() {
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let before = gate.txn_begins();
        let all = Touched::Unknown;
        let hold = gate.hold(None);
        assert_eq!(
            gate.enter(Some((&before, &all)), &all, Duration::ZERO)
                .await,
            Ok(Entered::Counted),
            "a transaction's command passes the hold"
        );
        assert!(!hold.drain(Duration::from_millis(20)).await, "in flight");
        gate.leave();
        // A token of another keyspace does not let a command through this hold.
        let elsewhere = gates.gate("other").txn_begins();
        assert_eq!(
            gate.enter(Some((&elsewhere, &all)), &all, Duration::ZERO)
                .await,
            Err(Refused::StillHeld)
        );
        gate.doom(None);
        assert!(before.is_doomed(&all));
        assert_eq!(
            gate.enter(Some((&before, &all)), &all, Duration::ZERO)
                .await,
            Err(Refused::Doomed)
        );
        assert_eq!(gate.in_flight(), 0, "a refused command is not counted");
        // Opened during the hold, after the doom: it may have touched keys on the old map.
        let during = gate.txn_begins();
        assert!(during.is_doomed(&all));
        drop(hold);
        // Still doomed after the hold; one opened after it passes.
        for t in [&before, &during] {
            assert_eq!(
                gate.enter(Some((t, &all)), &all, Duration::ZERO).await,
                Err(Refused::Doomed)
            );
        }
        let after = gate.txn_begins();
        assert!(!after.is_doomed(&all));
        let _hold = gate.hold(None);
        assert_eq!(
            gate.enter(Some((&after, &all)), &all, Duration::ZERO).await,
            Ok(Entered::Counted),
            "opened after the doom"
        );
        gate.leave();
    }

    #[tokio::test]
    async fn a_doom_hits_only_transactions_that_touched_moving_keys() {
        let (scope, mover, stayer) = moving();
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let moved_txn = gate.txn_begins();
        let stayed_txn = gate.txn_begins();
        gate.acquire_switching(scope.clone());
        // Before the doom, a transaction from before the hold may still touch a moving key
        // (counted: the drain waits for it).
        assert_eq!(
            gate.enter(Some((&moved_txn, &mover)), &mover, Duration::ZERO)
                .await,
            Ok(Entered::Counted)
        );
        gate.leave();
        assert!(
            !gate.wait_txns(Duration::from_millis(10)).await,
            "two transactions from before the hold are open"
        );
        // One that begins during the hold does not count in the grace period, and its
        // moving keys wait.
        let during = gate.txn_begins();
        assert_eq!(
            gate.enter(Some((&during, &mover)), &mover, Duration::from_millis(10))
                .await,
            Err(Refused::StillHeld)
        );
        // Its keys that stay run on; once it holds their rows, a moving key rolls it back
        // instead of making it wait with their locks.
        assert_eq!(
            gate.enter(Some((&during, &stayer)), &stayer, Duration::ZERO)
                .await,
            Ok(Entered::Uncounted)
        );
        let mut held_rows = stayer.clone();
        held_rows.add(mover.clone());
        assert_eq!(
            gate.enter(Some((&during, &held_rows)), &mover, Duration::ZERO)
                .await,
            Err(Refused::Doomed)
        );
        assert_eq!(
            gate.enter(Some((&during, NO)), NO, Duration::ZERO).await,
            Ok(Entered::Uncounted),
            "statements with no rows go on"
        );
        gate.doom(scope.clone());
        assert!(moved_txn.is_doomed(&mover));
        assert!(!stayed_txn.is_doomed(&stayer), "it goes on");
        assert!(!during.is_doomed(&Touched::Nothing));
        assert_eq!(
            gate.enter(Some((&stayed_txn, &stayer)), &stayer, Duration::ZERO)
                .await,
            Ok(Entered::Uncounted)
        );
        // After the doom, a moving key of a transaction that went on does not reach the old
        // owner: it holds rows of keys that stay, so it is rolled back rather than wait.
        let mut both = stayer.clone();
        both.add(mover.clone());
        assert_eq!(
            gate.enter(
                Some((&stayed_txn, &both)),
                &mover,
                Duration::from_millis(10)
            )
            .await,
            Err(Refused::Doomed)
        );
        // One opened now by a BEGIN (uncounted) waits for the new map at a moving key, and
        // is not doomed by the doom before it.
        let fresh = gate.txn_begins_uncounted();
        assert_eq!(
            gate.enter(Some((&fresh, &mover)), &mover, Duration::from_millis(10))
                .await,
            Err(Refused::StillHeld)
        );
        // A transaction opening now, within a command that got in before the hold, is
        // judged by the keys that command touched.
        let late = gate.txn_begins();
        assert!(late.is_doomed(&mover));
        let late_clean = gate.txn_begins();
        assert!(!late_clean.is_doomed(&stayer));
        gate.release_switching(&scope);
        // After the release the new map is in force: its keys run.
        assert_eq!(
            gate.enter(Some((&fresh, &mover)), &mover, Duration::ZERO)
                .await,
            Ok(Entered::Counted)
        );
        gate.leave();
        assert!(moved_txn.is_doomed(&mover), "doomed stays doomed");
    }

    #[tokio::test]
    async fn only_a_switching_hold_rolls_back_a_transaction_holding_rows_that_stay() {
        let (scope, mover, stayer) = moving();
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        // A verify's hold: nothing is switched, a transaction waits as any statement does.
        let hold = gate.hold(scope.clone());
        let txn = gate.txn_begins_uncounted();
        let mut both = stayer.clone();
        both.add(mover.clone());
        assert_eq!(
            gate.enter(Some((&txn, &both)), &mover, Duration::from_millis(10))
                .await,
            Err(Refused::StillHeld)
        );
        drop(hold);
        gate.acquire_switching(scope.clone());
        let txn = gate.txn_begins_uncounted();
        assert_eq!(
            gate.enter(Some((&txn, &both)), &mover, Duration::from_millis(10))
                .await,
            Err(Refused::Doomed)
        );
        gate.release_switching(&scope);
        gate.release_switching(&scope);
        assert!(!gate.is_holding());
    }

    #[tokio::test]
    async fn forgotten_dooms_doom() {
        let (scope, _, stayer) = moving();
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let old = gate.txn_begins();
        for _ in 0..=DOOM_HISTORY {
            gate.doom(scope.clone());
        }
        assert!(old.is_doomed(&stayer), "too many dooms ago to tell");
        let new = gate.txn_begins();
        gate.doom(scope);
        assert!(!new.is_doomed(&stayer));
    }

    #[tokio::test]
    async fn drain_after_doom_waits_for_a_command_that_got_in_before() {
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let txn = gate.txn_begins();
        let all = Touched::Unknown;
        let hold = gate.hold(None);
        assert_eq!(
            gate.enter(Some((&txn, &all)), &all, Duration::ZERO).await,
            Ok(Entered::Counted),
            "in before the doom"
        );
        gate.doom(None);
        assert!(
            !hold.drain(Duration::from_millis(20)).await,
            "the command that got in is still running"
        );
        let g = gate.clone();
        let ended = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            g.leave();
        });
        assert!(hold.drain(Duration::from_secs(5)).await);
        ended.await.expect("task");
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test]
    async fn tokens_count_open_transactions() {
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        assert!(
            Arc::ptr_eq(&gate, &gates.gate("ks")),
            "one gate per keyspace"
        );
        let a = gate.txn_begins();
        let b = gate.txn_begins();
        assert_eq!(gate.open_txns(), 2);
        drop(a);
        assert_eq!(gate.open_txns(), 1);
        let hold = gate.hold(None);
        let during = gate.txn_begins();
        assert_eq!(gate.open_txns(), 2);
        assert!(!gate.wait_txns(Duration::from_millis(20)).await, "one open");
        let ended = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(b);
        });
        assert!(
            gate.wait_txns(Duration::from_secs(5)).await,
            "the one begun during the hold is not waited for"
        );
        ended.await.expect("task");
        drop(during);
        assert_eq!(gate.open_txns(), 0);
        drop(hold);
        assert!(!gates.active(), "nothing held");
    }
}
