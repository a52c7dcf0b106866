//! Holds statements while a shard's primary changes, so they wait and then run on the new
//! primary instead of failing.
//!
//! Every client command passes `enter` and `leave`. While a hold is on, commands wait at
//! `enter` (bounded by `failover_buffer_timeout_ms`), except those of sessions inside a
//! transaction: their transaction lives on the old primary and must be able to finish there.
//! The holder drains: it waits until no command is between `enter` and `leave`.
//!
//! Holds nest (a count): this proxy's own switchover and another proxy's coordinated hold
//! (`ha::follow`) may overlap; commands go when the last one ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Debug)]
pub struct Gate {
    holds: AtomicUsize,
    in_flight: AtomicUsize,
    /// Bumped on every release; waiters watch it.
    released: watch::Sender<u64>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            holds: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            released: watch::channel(0).0,
        }
    }
}

/// The hold lasted longer than the caller may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StillHeld;

impl Gate {
    /// Lets a command in, first waiting out a hold unless `in_transaction`.
    pub async fn enter(&self, in_transaction: bool, wait: Duration) -> Result<(), StillHeld> {
        // Read the clock only once a hold makes the command wait (every command passes here).
        let mut deadline: Option<Instant> = None;
        loop {
            // SeqCst on both sides (here and in `drain`): either the holder sees this command
            // counted, or this command sees the hold.
            if in_transaction || !self.holding() {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                if in_transaction || !self.holding() {
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
                return Err(StillHeld);
            }
        }
    }

    /// The command that `enter`ed has ended.
    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// The command that `enter`ed waits for something other than a server (a new primary,
    /// having sent nothing): a holder's drain need not wait for it, and it must not make the
    /// holder wait, since what it waits for may come only once the holder is done.
    pub fn step_aside(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Back in after `step_aside`, waiting out a hold as `enter` does. Counted in even when
    /// the hold outlasts `wait`, so that the command's `leave` stays balanced.
    pub async fn step_back(&self, in_transaction: bool, wait: Duration) -> Result<(), StillHeld> {
        let r = self.enter(in_transaction, wait).await;
        if r.is_err() {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    fn holding(&self) -> bool {
        self.holds.load(Ordering::SeqCst) > 0
    }

    /// Whether a hold is on (cheap: one load).
    pub fn is_holding(&self) -> bool {
        self.holds.load(Ordering::Relaxed) > 0
    }

    /// Starts holding new commands until the guard drops.
    pub fn hold(&self) -> HoldGuard<'_> {
        self.acquire();
        HoldGuard { gate: self }
    }

    /// A hold not tied to a borrow (one that another proxy coordinates); every `acquire` needs
    /// one `release`.
    pub fn acquire(&self) {
        self.holds.fetch_add(1, Ordering::SeqCst);
    }

    pub fn release(&self) {
        let before = self
            .holds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if before == Ok(1) {
            self.released.send_modify(|n| *n += 1);
        }
    }

    /// Waits until no command is running (transactions' commands may still come), at most
    /// `limit`; true if it got there.
    pub async fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.in_flight() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Commands between `enter` and `leave` now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// A hold in force; dropping it lets the waiting commands go.
pub struct HoldGuard<'a> {
    gate: &'a Gate,
}

impl HoldGuard<'_> {
    /// Waits until no command is running (transactions' commands may still come), at most
    /// `limit`; true if it got there.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.gate.drain(limit).await
    }
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn commands_wait_for_the_release_and_transactions_pass() {
        let gate = Arc::new(Gate::default());
        let hold = gate.hold();
        assert!(hold.drain(Duration::from_millis(10)).await);
        // A transaction's command passes the hold.
        gate.enter(true, Duration::ZERO)
            .await
            .expect("in transaction");
        assert!(
            !hold.drain(Duration::from_millis(20)).await,
            "one in flight"
        );
        gate.leave();
        // Others wait; one with no time to wait is refused.
        assert_eq!(
            gate.enter(false, Duration::from_millis(20)).await,
            Err(StillHeld)
        );
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter(false, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished(), "waits while held");
        drop(hold);
        waiter.await.expect("task").expect("let in after release");
        assert_eq!(gate.in_flight(), 1);
        gate.leave();
        assert_eq!(gate.in_flight(), 0);
    }

    #[tokio::test]
    async fn holds_nest_and_commands_go_when_the_last_ends() {
        let gate = Arc::new(Gate::default());
        let own = gate.hold();
        gate.acquire();
        drop(own);
        assert!(gate.is_holding(), "another proxy's hold is still on");
        assert_eq!(
            gate.enter(false, Duration::from_millis(20)).await,
            Err(StillHeld)
        );
        gate.release();
        assert!(!gate.is_holding());
        gate.enter(false, Duration::ZERO).await.expect("released");
        gate.leave();
        gate.release();
        assert!(!gate.is_holding(), "an extra release does not wrap around");
    }

    #[tokio::test]
    async fn a_command_waiting_for_a_new_primary_does_not_stall_the_drain() {
        let gate = Arc::new(Gate::default());
        gate.enter(false, Duration::ZERO).await.expect("no hold");
        gate.step_aside();
        let hold = gate.hold();
        assert!(
            hold.drain(Duration::from_millis(10)).await,
            "nothing running"
        );
        let g = gate.clone();
        let back = tokio::spawn(async move { g.step_back(false, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!back.is_finished(), "back in only after the hold");
        drop(hold);
        back.await.expect("task").expect("back after release");
        assert_eq!(gate.in_flight(), 1);
        gate.leave();
        // A hold outlasting the wait: refused, but counted in for the command's leave.
        let _hold = gate.hold();
        gate.enter(true, Duration::ZERO)
            .await
            .expect("in transaction");
        gate.step_aside();
        assert_eq!(
            gate.step_back(false, Duration::from_millis(10)).await,
            Err(StillHeld)
        );
        assert_eq!(gate.in_flight(), 1);
        gate.leave();
        assert_eq!(gate.in_flight(), 0);
    }
}
