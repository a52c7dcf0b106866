//! What failure handling saw, decided and did, with timestamps: kept in memory (the newest
//! [`KEEP`]), logged and counted as they happen, listed by the admin API.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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

/// Wall-clock milliseconds since the epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, as [`rfc3339`] writes it.
pub fn now_rfc3339() -> String {
    rfc3339(now_ms())
}

/// `2026-12-06T23:59:01.123Z` from milliseconds since the epoch (civil date from days, as in
/// Howard Hinnant's public-domain algorithm description).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_601_541_123), "2026-12-06T23:59:01.123Z");
    }

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
