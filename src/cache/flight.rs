//! Single flight: while one session runs a read the cache lacks, sessions asking for the same
//! key wait for its result instead of sending the same query to the backend.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use super::{CacheKey, Entry, KeyHash};

/// What a finished flight hands its waiters: the entry, or `None` (not cacheable: they run
/// the read themselves).
type Outcome = Option<Option<Arc<Entry>>>;

#[derive(Default)]
pub struct Flights {
    running: Mutex<HashMap<Arc<CacheKey>, watch::Receiver<Outcome>>>,
}

/// The session that runs the read; dropped unfinished (client gone, error), its waiters run
/// the read themselves.
pub struct Flight {
    key: Arc<CacheKey>,
    done: watch::Sender<Outcome>,
}

impl Flight {
    pub fn key(&self) -> &Arc<CacheKey> {
        &self.key
    }
}

pub enum Lookup {
    Hit(Arc<Entry>),
    /// Run the read, then `ResultCache::complete` the flight.
    Lead(Flight),
    /// Another session runs it: `wait` for its outcome.
    Wait(watch::Receiver<Outcome>),
}

/// The outcome of another session's flight: `None` when its read could not be cached.
pub async fn wait(mut rx: watch::Receiver<Outcome>) -> Option<Arc<Entry>> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().flatten(),
        Err(_) => None,
    }
}

impl Flights {
    /// Joins the flight for `key`, or leads a new one; looks at the cache again under the
    /// lock, so a flight that finished since the caller's miss is not run twice.
    pub(super) async fn join(
        &self,
        entries: &moka::future::Cache<Arc<CacheKey>, Arc<Entry>, KeyHash>,
        key: Arc<CacheKey>,
    ) -> Lookup {
        let mut running = self.running.lock().await;
        if let Some(rx) = running.get(&key) {
            // A leader that went away without finishing leaves a closed channel behind.
            if rx.has_changed().is_ok() {
                return Lookup::Wait(rx.clone());
            }
        }
        if let Some(e) = entries.get(&key).await {
            return Lookup::Hit(e);
        }
        let (done, rx) = watch::channel(None);
        running.insert(key.clone(), rx);
        Lookup::Lead(Flight { key, done })
    }

    pub(super) async fn finish(&self, flight: Flight, entry: Option<Arc<Entry>>) {
        let mut running = self.running.lock().await;
        running.remove(&flight.key);
        let _ = flight.done.send(Some(entry));
    }
}
