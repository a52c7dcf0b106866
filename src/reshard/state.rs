//! A reshard workflow's state: what `reshard status` shows and what a restarted proxy resumes
//! from. Everything here is serializable; it is persisted after every step that changes it
//! (see `store`), so a proxy killed at any point finds the plan, the phase, each table's last
//! copied key, each stream's start and the cutover's step log.

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use crate::shardmap::Keyspace;
use mysql_async::Value;

/// Where a workflow is. The cutover's commit point is the publication of the new shard map:
/// before it the old shards own the moving keys (`Copying`, `Running`), after it the new ones
/// (`Switched`, `Completing`, `Completed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Copying the moving rows, table by table.
    Copying,
    /// Copy done; the catch-up streams apply the sources' changes. Verify and cutover run here.
    Running,
    /// Cutover published the new map; reverse streams keep the old shards current, so a
    /// rollback loses nothing.
    Switched,
    /// Deleting the moved rows from their old shards.
    Completing,
    Completed,
    Cancelled,
    /// Rolled back after a cutover: the old map is in force again.
    RolledBack,
    /// Stopped on an error the workflow cannot get past by itself (see `error`).
    Failed,
}

impl Phase {
    /// Whether the workflow has ended (a new one may start on its keyspace).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::Cancelled | Phase::RolledBack | Phase::Failed
        )
    }

    /// Whether the new map is in force.
    pub fn switched(self) -> bool {
        matches!(self, Phase::Switched | Phase::Completing | Phase::Completed)
    }
}

/// A primary key value as persisted (mysql_async's `Value` has no serde).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    Null,
    Int(i64),
    Uint(u64),
    Double(f64),
    /// Bytes as hex: a string or binary key survives JSON exactly.
    Hex(String),
    Date([u32; 7]),
    Time(bool, [u32; 5]),
}

impl KeyPart {
    pub fn from_value(v: &Value) -> KeyPart {
        match v {
            Value::NULL => KeyPart::Null,
            Value::Int(i) => KeyPart::Int(*i),
            Value::UInt(u) => KeyPart::Uint(*u),
            Value::Float(f) => KeyPart::Double(f64::from(*f)),
            Value::Double(d) => KeyPart::Double(*d),
            Value::Bytes(b) => KeyPart::Hex(hex(b)),
            Value::Date(y, mo, d, h, mi, s, us) => KeyPart::Date([
                u32::from(*y),
                u32::from(*mo),
                u32::from(*d),
                u32::from(*h),
                u32::from(*mi),
                u32::from(*s),
                *us,
            ]),
            Value::Time(neg, d, h, mi, s, us) => KeyPart::Time(
                *neg,
                [*d, u32::from(*h), u32::from(*mi), u32::from(*s), *us],
            ),
        }
    }

    /// None when the persisted text is not what `from_value` writes (a hand-edited file).
    pub fn to_value(&self) -> Option<Value> {
        let narrow = |x: u32| u8::try_from(x).ok();
        Some(match self {
            KeyPart::Null => Value::NULL,
            KeyPart::Int(i) => Value::Int(*i),
            KeyPart::Uint(u) => Value::UInt(*u),
            KeyPart::Double(d) => Value::Double(*d),
            KeyPart::Hex(h) => Value::Bytes(unhex(h)?),
            KeyPart::Date([y, mo, d, h, mi, s, us]) => Value::Date(
                u16::try_from(*y).ok()?,
                narrow(*mo)?,
                narrow(*d)?,
                narrow(*h)?,
                narrow(*mi)?,
                narrow(*s)?,
                *us,
            ),
            KeyPart::Time(neg, [d, h, mi, s, us]) => {
                Value::Time(*neg, *d, narrow(*h)?, narrow(*mi)?, narrow(*s)?, *us)
            }
        })
    }
}

/// A whole key as persisted.
pub fn key_to_parts(key: &[Value]) -> Vec<KeyPart> {
    key.iter().map(KeyPart::from_value).collect()
}

pub fn key_from_parts(parts: &[KeyPart]) -> Option<Vec<Value>> {
    parts.iter().map(KeyPart::to_value).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One table's copy from one source shard to one target shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCopy {
    pub table: String,
    /// `sharded` (rows whose key moves) or `reference` (every row, to a new shard).
    pub kind: String,
    pub source: String,
    pub target: String,
    /// From the plan (information_schema's estimate of the rows that move).
    pub rows_estimated: u64,
    pub rows_read: u64,
    pub rows_copied: u64,
    /// The last primary key copied: where a resumed copy goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<Vec<KeyPart>>,
    pub done: bool,
}

/// Which way a stream carries changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Old owner -> new owner, until the cutover.
    Forward,
    /// New owner -> old owner, from the cutover until `complete` (what makes rollback lossless).
    Reverse,
}

/// One binlog stream: the changes of the moving keys from one primary applied to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// Unique per workflow, source and target (`app s0->s2`); also the key of its stored
    /// position on the target (`_shardgate.reshard_position`).
    pub name: String,
    pub direction: Direction,
    /// `sharded` (the moving keys of the keyspace's sharded tables) or `reference` (every row
    /// of its reference tables).
    pub kind: String,
    /// Shard names.
    pub source: String,
    pub target: String,
    /// The GTID position it starts from when the target has none stored yet.
    pub start_position: String,
    /// Live figures (persisted as last seen, for status after a restart).
    #[serde(default)]
    pub applied_position: String,
    #[serde(default)]
    pub transactions: u64,
    #[serde(default)]
    pub rows_applied: u64,
    /// Seconds between the source writing the last applied transaction and its application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Transactions the source wrote that the stream has not applied (as of the last check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_transactions: Option<u64>,
    /// `waiting` (for the copy), `running`, `stopped`, or the last error.
    pub state: String,
}

/// What the last `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `running`, `clean` or `differences`.
    pub state: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub tables: Vec<TableVerify>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.state == "clean"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableVerify {
    pub table: String,
    pub source: String,
    pub target: String,
    pub chunks: u64,
    pub rows_compared: u64,
    /// Primary keys (as SQL literals), at most a hundred of each.
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub different: Vec<String>,
}

/// One cutover (or rollback) attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutoverAttempt {
    /// `cutover` or `rollback`.
    pub kind: String,
    pub started_at: String,
    /// `running`, `switched` or `aborted`.
    pub outcome: String,
    /// Steps done, in order, each with the milliseconds since the attempt started.
    pub steps: Vec<Step>,
    /// How long statements on the keyspace were held (the writers' pause), in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The shard map version it published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    pub at_ms: u64,
}

/// The whole workflow, as persisted and as `reshard status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// `KEYSPACE-<unix ms>`; one workflow per keyspace at a time.
    pub id: String,
    pub keyspace: String,
    pub plan: Plan,
    /// The keyspace as it was at the start (what a rollback publishes again, with the primaries
    /// live then).
    pub before: Keyspace,
    pub phase: Phase,
    pub started_at: String,
    pub updated_at: String,
    /// The proxy running it (its proxy id with etcd, else `local`).
    pub coordinator: String,
    pub tables: Vec<TableCopy>,
    pub streams: Vec<StreamState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyReport>,
    #[serde(default)]
    pub cutovers: Vec<CutoverAttempt>,
    /// `complete`'s progress: rows deleted from the old shards.
    #[serde(default)]
    pub rows_deleted: u64,
    /// The last error (the workflow may still be running: a stream retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `reshard status`: the workflow plus figures computed when asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(flatten)]
    pub workflow: Workflow,
    pub rows_estimated: u64,
    pub rows_copied: u64,
    /// Copy rate since the start, rows per second.
    pub rows_per_second: f64,
    /// Estimated seconds left in the copy (None once done or before any row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// The largest lag among the running streams of the current direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
}

impl Status {
    /// `w` with its figures: sums over its tables and streams, and the copy rate `rate` gives
    /// for the rows copied so far (only the process running the copy knows its clock).
    pub fn new(w: Workflow, rate: impl FnOnce(u64) -> f64) -> Status {
        let rows_estimated: u64 = w.tables.iter().map(|t| t.rows_estimated).sum();
        let rows_copied: u64 = w.tables.iter().map(|t| t.rows_copied).sum();
        let rate = rate(rows_copied);
        let left = rows_estimated.saturating_sub(rows_copied) as f64;
        let eta = (w.phase == Phase::Copying && rate > 0.0).then(|| left / rate);
        let current = if w.phase.switched() {
            Direction::Reverse
        } else {
            Direction::Forward
        };
        let lag = w
            .streams
            .iter()
            .filter(|s| s.direction == current)
            .filter_map(|s| s.lag_seconds)
            .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
        Status {
            workflow: w,
            rows_estimated,
            rows_copied,
            rows_per_second: rate,
            eta_seconds: eta,
            lag_seconds: lag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_json() {
        let key = vec![
            Value::Int(-7),
            Value::UInt(u64::MAX),
            Value::Bytes(vec![0, 0xff, b'a', 0x80]),
            Value::Date(2026, 12, 7, 13, 5, 59, 123_456),
            Value::Time(true, 3, 4, 5, 6, 7),
            Value::NULL,
            Value::Double(1.5),
        ];
        let text = serde_json::to_string(&key_to_parts(&key)).expect("json");
        let back: Vec<KeyPart> = serde_json::from_str(&text).expect("parse");
        assert_eq!(key_from_parts(&back), Some(key));
    }

    #[test]
    fn a_bad_persisted_key_is_none_not_a_panic() {
        assert_eq!(KeyPart::Hex("abc".into()).to_value(), None);
        assert_eq!(KeyPart::Hex("zz".into()).to_value(), None);
        assert_eq!(KeyPart::Date([2026, 300, 1, 0, 0, 0, 0]).to_value(), None);
    }
}
