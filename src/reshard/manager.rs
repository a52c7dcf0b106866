//! The proxy's reshard workflows, one per keyspace at a time: what the admin API and the CLI
//! drive (`start`, `status`, `verify`, `cutover`, `rollback`, `complete`, `cancel`). Each
//! workflow runs as tasks of this process (`workflow`); its state is persisted (`store`) after
//! every step, and `resume` picks the unfinished ones up at startup.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plan::{Change, Plan, PlanError};
use super::state::{CutoverAttempt, Status};
use super::store::StateStore;
use super::workflow::Runner;
use crate::ha::Ha;
use crate::topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum ReshardError {
    /// The request names nothing that exists.
    #[error("{0}")]
    NotFound(String),
    /// The request is fine but cannot run now (another workflow, wrong phase, a blocker).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A server or the store failed.
    #[error("{0}")]
    Failed(String),
}

impl From<PlanError> for ReshardError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::UnknownKeyspace(_) => ReshardError::NotFound(e.to_string()),
            _ => ReshardError::Invalid(e.to_string()),
        }
    }
}

/// `reshard start`: the plan's arguments, or a plan (`reshard plan --json`'s output).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default)]
    pub keyspace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<String>,
    /// A plan made earlier: started as it is if the shard map has not changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

impl StartRequest {
    pub fn change(&self) -> Result<Change, PlanError> {
        Change::from_args(self.add.as_deref(), self.remove.as_deref())
    }
}

/// `reshard verify | complete | cancel`: the keyspace whose workflow it is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceRequest {
    pub keyspace: String,
}

/// `reshard cutover | rollback`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverRequest {
    pub keyspace: String,
    /// The longest the keyspace's writes may wait; past it the attempt aborts and the held
    /// statements go on to the old owner (default `DEFAULT_MAX_PAUSE_MS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pause_ms: Option<u64>,
}

pub const DEFAULT_MAX_PAUSE_MS: u64 = 500;

/// Every workflow of this proxy.
pub struct Reshards {
    pub(super) topology: Arc<Topology>,
    pub(super) ha: Arc<Ha>,
    pub(super) store: StateStore,
    /// By keyspace: the latest workflow, running or ended.
    pub(super) runners: Mutex<BTreeMap<String, Arc<Runner>>>,
}

impl Reshards {
    pub fn new(topology: Arc<Topology>, ha: Arc<Ha>) -> Arc<Reshards> {
        let store = StateStore::new(&topology);
        Arc::new(Reshards {
            topology,
            ha,
            store,
            runners: Mutex::new(BTreeMap::new()),
        })
    }

    fn runner(&self, keyspace: &str) -> Result<Arc<Runner>, ReshardError> {
        lock(&self.runners).get(keyspace).cloned().ok_or_else(|| {
            ReshardError::NotFound(format!("no reshard workflow on keyspace {keyspace}"))
        })
    }

    /// The runner of a command: this proxy's, else an error naming the proxy that
    /// coordinates the keyspace's workflow (with etcd).
    async fn coordinated(&self, keyspace: &str) -> Result<Arc<Runner>, ReshardError> {
        match self.runner(keyspace) {
            Ok(r) => Ok(r),
            Err(e) => match self.store.load_shared(keyspace).await {
                Ok(Some(w)) if !w.phase.is_final() => Err(ReshardError::Conflict(format!(
                    "proxy {} coordinates the reshard workflow of keyspace {keyspace}: send the                      command to it",
                    w.coordinator
                ))),
                _ => Err(e),
            },
        }
    }

    /// Every workflow's status (ended ones included, until another starts on the keyspace).
    pub fn status_all(&self) -> Vec<Status> {
        let runners: Vec<Arc<Runner>> = lock(&self.runners).values().cloned().collect();
        runners.iter().map(|r| r.status()).collect()
    }

    /// The keyspace's workflow: this process's runner, else the one another proxy runs (read
    /// from etcd, so any proxy can show it; its copy rate is unknown here, so 0).
    pub async fn status(&self, keyspace: &str) -> Result<Status, ReshardError> {
        if let Ok(r) = self.runner(keyspace) {
            return Ok(r.status());
        }
        match self.store.load_shared(keyspace).await? {
            Some(w) => Ok(Status::new(w, |_| 0.0)),
            None => Err(ReshardError::NotFound(format!(
                "no reshard workflow on keyspace {keyspace}"
            ))),
        }
    }

    /// Plans (unless given a plan), refuses what the catch-up cannot follow, persists the
    /// workflow and starts copying.
    pub async fn start(self: &Arc<Self>, req: StartRequest) -> Result<Status, ReshardError> {
        super::workflow::start(self, req).await
    }

    /// Starts comparing source and target (runs in the background; `status` shows it).
    pub async fn verify(&self, keyspace: &str) -> Result<Status, ReshardError> {
        let r = self.coordinated(keyspace).await?;
        r.clone().verify().await?;
        Ok(r.status())
    }

    /// Switches the moving keys to their new owners (reads and writes together: see the
    /// README), pausing the keyspace's writes at most `max_pause_ms`.
    pub async fn cutover(&self, req: &CutoverRequest) -> Result<CutoverAttempt, ReshardError> {
        let r = self.coordinated(&req.keyspace).await?;
        r.cutover(pause(req.max_pause_ms), false).await
    }

    /// The cutover run backwards (after it) or a cancel (before it).
    pub async fn rollback(&self, req: &CutoverRequest) -> Result<CutoverAttempt, ReshardError> {
        let r = self.coordinated(&req.keyspace).await?;
        r.cutover(pause(req.max_pause_ms), true).await
    }

    /// Deletes the moved rows from their old shards (background, throttled).
    pub async fn complete(&self, keyspace: &str) -> Result<Status, ReshardError> {
        let r = self.coordinated(keyspace).await?;
        r.clone().complete().await?;
        Ok(r.status())
    }

    /// Stops a workflow before its cutover and removes what it copied.
    pub async fn cancel(&self, keyspace: &str) -> Result<Status, ReshardError> {
        let r = self.coordinated(keyspace).await?;
        r.clone().cancel().await?;
        Ok(r.status())
    }

    /// Picks up every unfinished workflow persisted by an earlier run of this proxy.
    pub async fn resume(self: &Arc<Self>) {
        super::workflow::resume_all(self).await;
        if self.topology.store().is_some() {
            tokio::spawn(super::coordination::follow(self.clone()));
        }
    }
}

fn pause(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(DEFAULT_MAX_PAUSE_MS).clamp(10, 60_000))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
