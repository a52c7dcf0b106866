//! Who may be served: connections still logging in (counted apart, so a flood of them cannot
//! lock out clients that log in), logged-in clients in all and per user, and a delay on
//! logins from an address after repeated failures (MySQL's connection_control idea: the
//! answer is slowed, whatever it is, so guessing passwords costs time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A failure count is forgotten after this long without another failure.
const FAILURES_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);
/// Addresses with failures remembered at most (the oldest are forgotten first).
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct Admission {
    logging_in: AtomicUsize,
    clients: AtomicUsize,
    per_user: Mutex<HashMap<String, usize>>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Why a logged-in client is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum OverLimit {
    /// `max_client_connections` reached.
    Clients,
    /// The user's own `max_connections` (its value) reached.
    User(usize),
}

/// A connection that has not finished logging in; counted until dropped.
pub struct LoginSlot(Arc<Admission>);

impl Drop for LoginSlot {
    fn drop(&mut self) {
        self.0.logging_in.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A logged-in client, counted in all and for its user until dropped.
pub struct ClientSlot {
    admission: Arc<Admission>,
    user: String,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.admission.clients.fetch_sub(1, Ordering::Relaxed);
        self.admission.leave_user(&self.user);
    }
}

impl Admission {
    /// A slot for a connection about to log in, if fewer than `max` are.
    pub fn logging_in(self: &Arc<Self>, max: usize) -> Option<LoginSlot> {
        let n = self.logging_in.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = LoginSlot(self.clone());
        (n <= max).then_some(slot)
    }

    /// Counts a client that logged in as `user`, unless `max_clients` are served or the
    /// user's `user_max`.
    pub fn admit(
        self: &Arc<Self>,
        user: &str,
        max_clients: usize,
        user_max: Option<usize>,
    ) -> Result<ClientSlot, OverLimit> {
        let n = self.clients.fetch_add(1, Ordering::Relaxed) + 1;
        if n > max_clients {
            self.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(OverLimit::Clients);
        }
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_user.entry(user.to_string()).or_insert(0);
        if let Some(max) = user_max.filter(|m| *count >= *m) {
            drop(per_user);
            self.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(OverLimit::User(max));
        }
        *count += 1;
        Ok(ClientSlot {
            admission: self.clone(),
            user: user.to_string(),
        })
    }

    /// Moves a client's count to the user it changed to (COM_CHANGE_USER), within that
    /// user's `user_max`.
    pub fn change_user(
        &self,
        slot: &mut ClientSlot,
        user: &str,
        user_max: Option<usize>,
    ) -> Result<(), OverLimit> {
        if slot.user == user {
            return Ok(());
        }
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_user.entry(user.to_string()).or_insert(0);
        if let Some(max) = user_max.filter(|m| *count >= *m) {
            return Err(OverLimit::User(max));
        }
        *count += 1;
        drop(per_user);
        self.leave_user(&slot.user);
        slot.user = user.to_string();
        Ok(())
    }

    fn leave_user(&self, user: &str) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_user.remove(user);
            }
        }
    }

    /// How long a login from `addr` waits before it is answered: nothing below `threshold`
    /// failures in a row, then `step` per failure past it, at most `max` (`threshold` 0:
    /// never).
    pub fn login_delay(
        &self,
        addr: &str,
        threshold: u32,
        step: Duration,
        max: Duration,
    ) -> Duration {
        if threshold == 0 {
            return Duration::ZERO;
        }
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures
            .get(addr)
            .filter(|(_, at)| at.elapsed() < FAILURES_FORGOTTEN_AFTER)
            .map_or(0, |(n, _)| *n);
        match n.checked_sub(threshold) {
            Some(past) => step.saturating_mul(past + 1).min(max),
            None => Duration::ZERO,
        }
    }

    pub fn login_failed(&self, addr: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(addr) {
            failures.retain(|_, (_, at)| at.elapsed() < FAILURES_FORGOTTEN_AFTER);
            if failures.len() >= MAX_ADDRESSES {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    failures.remove(&k);
                }
            }
        }
        let entry = failures
            .entry(addr.to_string())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURES_FORGOTTEN_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
    }

    pub fn login_succeeded(&self, addr: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(addr);
    }

    /// Connections logging in now, and clients logged in (for the metrics).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.logging_in.load(Ordering::Relaxed),
            self.clients.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_in_progress_are_bounded_apart_from_clients() {
        let a = Arc::new(Admission::default());
        let first = a.logging_in(2).expect("first");
        let _second = a.logging_in(2).expect("second");
        assert!(a.logging_in(2).is_none(), "a third is refused");
        let _client = a
            .admit("app", 10, None)
            .expect("logged-in clients are apart");
        drop(first);
        assert!(a.logging_in(2).is_some(), "a slot freed is taken again");
    }

    #[test]
    fn a_users_limit_counts_its_clients_only() {
        let a = Arc::new(Admission::default());
        let one = a.admit("app", 10, Some(1)).expect("first of app");
        assert_eq!(a.admit("app", 10, Some(1)).err(), Some(OverLimit::User(1)));
        let _other = a.admit("report", 10, Some(1)).expect("another user");
        assert_eq!(a.admit("x", 2, None).err(), Some(OverLimit::Clients));
        drop(one);
        let mut again = a
            .admit("app", 10, Some(1))
            .expect("app again once one left");
        assert_eq!(
            a.change_user(&mut again, "report", Some(1)),
            Err(OverLimit::User(1))
        );
        assert!(a.change_user(&mut again, "other", Some(1)).is_ok());
        assert!(
            a.admit("app", 10, Some(1)).is_ok(),
            "app's count moved away"
        );
    }

    #[test]
    fn the_delay_grows_past_the_threshold_and_a_success_clears_it() {
        let a = Admission::default();
        let step = Duration::from_millis(100);
        let max = Duration::from_millis(250);
        let delay = |a: &Admission| a.login_delay("10.0.0.1", 2, step, max);
        a.login_failed("10.0.0.1");
        assert_eq!(delay(&a), Duration::ZERO);
        a.login_failed("10.0.0.1");
        assert_eq!(delay(&a), step);
        a.login_failed("10.0.0.1");
        assert_eq!(delay(&a), step * 2);
        a.login_failed("10.0.0.1");
        assert_eq!(delay(&a), max);
        assert_eq!(a.login_delay("10.0.0.2", 2, step, max), Duration::ZERO);
        a.login_succeeded("10.0.0.1");
        assert_eq!(delay(&a), Duration::ZERO);
    }
}
