//! Holds the statements of one sharded keyspace while a reshard cutover switches its shard
//! map, and rejects what is left of the transactions that began on the old map.
//!
//! The proxy-wide [`super::gate::Gate`] pauses every session; a cutover must pause only the
//! keyspace it reshards. A [`KeyspaceGate`] works like `Gate` (commands wait at `enter` while a
//! hold is on, a transaction's commands go on so that open transactions can end during the
//! grace period, the holder drains) and adds an epoch: `doom` bumps it, and every transaction
//! opened before the bump ([`TxnToken`]), or during the hold, is refused from then on. Its
//! writes went to the old owner of their rows; committed after the switch they would be lost.
//!
//! The cutover: `hold`, `wait_txns` (the grace period), `doom`, `drain`, publish the new map,
//! release. `doom` then `drain` never misses a command of a doomed transaction: `enter` counts
//! itself in flight before reading the epoch (SeqCst on both sides).
//!
//! Every command of a session on a sharded keyspace enters that keyspace's gate, held or not
//! (two atomics, like the proxy's gate): a command that passed uncounted just before a hold
//! began could write to the old owner after the drain. A doomed transaction is also found
//! through its token (one more load) once the hold is over. [`KeyspaceGates::active`] says
//! whether any hold is on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

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
    /// The command's transaction began before the keyspace switched shards: it must be rolled
    /// back, never committed.
    #[error("the transaction began before its keyspace switched shards")]
    Doomed,
}

/// The epoch of a token doomed from the start (gates' epochs start above it).
const DOOMED: u64 = 0;

#[derive(Debug)]
pub struct KeyspaceGate {
    keyspace: Arc<str>,
    holds: AtomicUsize,
    /// The registry's count of holds over all keyspaces.
    all_holds: Arc<AtomicUsize>,
    in_flight: AtomicUsize,
    /// Transactions opened at an epoch below this one are doomed.
    epoch: AtomicU64,
    open_txns: AtomicUsize,
    /// Bumped on every release; waiters watch it.
    released: watch::Sender<u64>,
}

impl KeyspaceGate {
    fn new(keyspace: &str, all_holds: Arc<AtomicUsize>) -> Self {
        KeyspaceGate {
            keyspace: Arc::from(keyspace),
            holds: AtomicUsize::new(0),
            all_holds,
            in_flight: AtomicUsize::new(0),
            epoch: AtomicU64::new(DOOMED + 1),
            open_txns: AtomicUsize::new(0),
            released: watch::channel(0).0,
        }
    }

    pub fn keyspace(&self) -> &Arc<str> {
        &self.keyspace
    }

    /// Lets a command in. One of a transaction (`txn`, a token of this gate) passes a hold,
    /// unless the transaction is doomed; others wait it out, at most `wait`. A token of
    /// another keyspace's gate does not count as a transaction here.
    pub async fn enter(&self, txn: Option<&TxnToken>, wait: Duration) -> Result<(), Refused> {
        let txn = txn.filter(|t| std::ptr::eq(Arc::as_ptr(&t.gate), self));
        let in_txn = txn.is_some();
        // Read the clock only once a hold makes the command wait.
        let mut deadline: Option<Instant> = None;
        loop {
            // SeqCst here and in `doom`, `acquire` and `drain`: either the holder sees this
            // command counted, or this command sees the hold and the new epoch.
            if in_txn || !self.holding() {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                if txn.is_some_and(|t| t.epoch < self.epoch.load(Ordering::SeqCst)) {
                    self.in_flight.fetch_sub(1, Ordering::SeqCst);
                    return Err(Refused::Doomed);
                }
                if in_txn || !self.holding() {
                    return Ok(());
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            let mut rx = self.released.subscribe();
            if !self.holding() {
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + wait);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(Refused::StillHeld);
            }
        }
    }

    /// The command that `enter`ed has ended.
    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Commands between `enter` and `leave` now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no command is between `enter` and `leave`, at most `limit`; true if it got
    /// there. After `doom`, a doomed transaction's command that got in is counted here.
    pub async fn drain(&self, limit: Duration) -> bool {
        reaches_zero(&self.in_flight, limit).await
    }

    fn holding(&self) -> bool {
        self.holds.load(Ordering::SeqCst) > 0
    }

    /// Whether a hold is on.
    pub fn is_holding(&self) -> bool {
        self.holds.load(Ordering::Relaxed) > 0
    }

    /// Starts holding this keyspace's new commands until the guard drops.
    pub fn hold(&self) -> KeyspaceHold<'_> {
        self.acquire();
        KeyspaceHold { gate: self }
    }

    /// A hold not tied to a borrow; every `acquire` needs one `release`. Holds nest.
    pub fn acquire(&self) {
        // The registry's count first: a session reading `active` false must find no hold here.
        self.all_holds.fetch_add(1, Ordering::SeqCst);
        self.holds.fetch_add(1, Ordering::SeqCst);
    }

    pub fn release(&self) {
        let before = self
            .holds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        let Ok(before) = before else {
            // An extra release: nothing was held.
            return;
        };
        self.all_holds.fetch_sub(1, Ordering::SeqCst);
        if before == 1 {
            self.released.send_modify(|n| *n += 1);
        }
    }

    /// Dooms every transaction open now: their next command is refused with
    /// [`Refused::Doomed`]. Call it while holding (transactions opening during the hold are
    /// doomed already); then `drain` waits for any doomed command that got in before.
    pub fn doom(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The epoch `doom` bumps.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A transaction opens on this keyspace; it is counted open until the token drops.
    ///
    /// One that opens while a hold is on is doomed from the start: it opens within a command
    /// that got in before the hold, or one of a transaction (BEGIN or COMMIT AND CHAIN ending
    /// the last), and its statements would be planned on the map being replaced.
    pub fn txn_begins(self: &Arc<Self>) -> TxnToken {
        self.open_txns.fetch_add(1, Ordering::SeqCst);
        // The epoch before the hold: reading no hold, the epoch read is older than any doom
        // of a hold that begins later (SeqCst here, in `acquire` and in `doom`).
        let epoch = self.epoch.load(Ordering::SeqCst);
        TxnToken {
            epoch: if self.holding() { DOOMED } else { epoch },
            gate: self.clone(),
        }
    }

    /// Transactions open on this keyspace (tokens alive), doomed ones included.
    pub fn open_txns(&self) -> usize {
        self.open_txns.load(Ordering::SeqCst)
    }

    /// Waits until no transaction is open, at most `limit`; true if it got there. While held,
    /// no new one opens (its BEGIN waits at `enter`), so this is the grace period in which
    /// open transactions may still end.
    pub async fn wait_txns(&self, limit: Duration) -> bool {
        reaches_zero(&self.open_txns, limit).await
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
    epoch: u64,
    gate: Arc<KeyspaceGate>,
}

impl TxnToken {
    pub fn gate(&self) -> &Arc<KeyspaceGate> {
        &self.gate
    }

    /// Whether a `doom` came since the transaction opened (one load; what a session checks
    /// when no hold is on, as `enter` is not called then).
    pub fn is_doomed(&self) -> bool {
        self.epoch < self.gate.epoch.load(Ordering::SeqCst)
    }
}

impl Drop for TxnToken {
    fn drop(&mut self) {
        self.gate.open_txns.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A keyspace hold in force; dropping it lets the waiting commands go.
pub struct KeyspaceHold<'a> {
    gate: &'a KeyspaceGate,
}

impl KeyspaceHold<'_> {
    /// Waits until no command is running, at most `limit`; true if it got there.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.gate.drain(limit).await
    }
}

impl Drop for KeyspaceHold<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_wait_while_held_and_go_on_release() {
        let gates = KeyspaceGates::default();
        assert!(!gates.active(), "nothing held");
        let gate = gates.gate("ks");
        let other = gates.gate("other");
        let hold = gate.hold();
        assert!(gates.active());
        assert!(hold.drain(Duration::from_millis(10)).await);
        assert_eq!(
            gate.enter(None, Duration::from_millis(20)).await,
            Err(Refused::StillHeld)
        );
        // Only this keyspace is held.
        other
            .enter(None, Duration::ZERO)
            .await
            .expect("other keyspace");
        other.leave();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter(None, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "waits while held");
        drop(hold);
        assert!(!gates.active(), "released");
        waiter.await.expect("task").expect("let in after release");
        assert_eq!(gate.in_flight(), 1);
        gate.leave();
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test]
    async fn holds_nest_and_an_extra_release_does_not_wrap() {
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let own = gate.hold();
        gate.acquire();
        drop(own);
        assert!(gates.active() && gate.is_holding(), "one hold is still on");
        gate.release();
        gate.release();
        assert!(!gates.active() && !gate.is_holding());
        gate.enter(None, Duration::ZERO).await.expect("released");
        gate.leave();
    }

    #[tokio::test]
    async fn a_transaction_passes_the_hold_until_doomed() {
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let before = gate.txn_begins();
        let hold = gate.hold();
        gate.enter(Some(&before), Duration::ZERO)
            .await
            .expect("a transaction's command passes the hold");
        assert!(!hold.drain(Duration::from_millis(20)).await, "in flight");
        gate.leave();
        // A token of another keyspace does not let a command through this hold.
        let elsewhere = gates.gate("other").txn_begins();
        assert_eq!(
            gate.enter(Some(&elsewhere), Duration::ZERO).await,
            Err(Refused::StillHeld)
        );
        gate.doom();
        assert!(before.is_doomed());
        assert_eq!(
            gate.enter(Some(&before), Duration::ZERO).await,
            Err(Refused::Doomed)
        );
        assert_eq!(gate.in_flight(), 0, "a refused command is not counted");
        // Opened during the hold, after the doom: on the old map too.
        let during = gate.txn_begins();
        assert!(during.is_doomed());
        drop(hold);
        // Still doomed after the hold; one opened after it passes.
        for t in [&before, &during] {
            assert_eq!(
                gate.enter(Some(t), Duration::ZERO).await,
                Err(Refused::Doomed)
            );
        }
        let after = gate.txn_begins();
        assert!(!after.is_doomed());
        let _hold = gate.hold();
        gate.enter(Some(&after), Duration::ZERO)
            .await
            .expect("opened after the doom");
        gate.leave();
    }

    #[tokio::test]
    async fn drain_after_doom_waits_for_a_command_that_got_in_before() {
        let gates = KeyspaceGates::default();
        let gate = gates.gate("ks");
        let txn = gate.txn_begins();
        let hold = gate.hold();
        gate.enter(Some(&txn), Duration::ZERO)
            .await
            .expect("in before the doom");
        gate.doom();
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
        assert!(!gate.wait_txns(Duration::from_millis(20)).await, "one open");
        let ended = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(b);
        });
        assert!(gate.wait_txns(Duration::from_secs(5)).await);
        ended.await.expect("task");
        assert_eq!(gate.open_txns(), 0);
        assert!(!gates.active(), "nothing held");
    }
}
