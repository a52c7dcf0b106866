//! What failure handling saw, decided and did, with timestamps: kept in memory (the newest
//! [`KEEP`]), logged and counted as they happen, listed by the admin API.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use crate::clock::{now_ms, now_rfc3339, rfc3339};

/// Events kept for the admin API; older ones are dropped (the log has them all).
pub const KEEP: usize = 2000;

/// One event. `kind` is a fixed word (`detect`, `decide`, `step`, `done`, `failed`, `fence`,
/// `rejoin`, `blip`) so scripts can filter on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Numbered from 1 in the order they happened, so a watcher can ask for what is new.
    pub id: u64,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub at_unix_ms: u64,
    pub kind: String,
    /// The shard (`keyspace/shard`) the event is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The server (`host:port`) the event is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Events {
    inner: Mutex<(u64, VecDeque<Event>)>,
}

impl Events {
    /// Records, logs and counts an event; returns its id.
    pub fn add(
        &self,
        kind: &'static str,
        shard: Option<&str>,
        server: Option<&str>,
        message: impl Into<String>,
    ) -> u64 {
        let message = message.into();
        let ms = now_ms();
        match kind {
            // Acknowledged writes would be lost by a failover: an operator must decide.
            "blocked" => tracing::error!(
                kind,
                shard = shard.unwrap_or("-"),
                server = server.unwrap_or("-"),
                "{message}"
            ),
            "failed" | "detect" | "blip" => tracing::warn!(
                kind,
                shard = shard.unwrap_or("-"),
                server = server.unwrap_or("-"),
                "{message}"
            ),
            _ => tracing::info!(
                kind,
                shard = shard.unwrap_or("-"),
                server = server.unwrap_or("-"),
                "{message}"
            ),
        }
        metrics::counter!("shardgate_ha_events_total", "kind" => kind).increment(1);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let id = g.0;
        if g.1.len() >= KEEP {
            g.1.pop_front();
        }
        g.1.push_back(Event {
            id,
            at: rfc3339(ms),
            at_unix_ms: ms,
            kind: kind.to_string(),
            shard: shard.map(str::to_string),
            server: server.map(str::to_string),
            message,
        });
        id
    }

    /// Events with an id above `after`, oldest first, at most `limit`.
    pub fn since(&self, after: u64, limit: usize) -> Vec<Event> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter()
            .filter(|e| e.id > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The id of the newest event (0: none yet).
    pub fn last_id(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_and_bounded() {
        let ev = Events::default();
        for i in 0..KEEP + 5 {
            ev.add("step", Some("app/s0"), None, format!("step {i}"));
        }
        assert_eq!(ev.last_id(), (KEEP + 5) as u64);
        let all = ev.since(0, usize::MAX);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].id, 6);
        assert_eq!(ev.since(KEEP as u64 + 3, 10).len(), 2);
    }
}
