//! Where workflows are persisted: etcd (`<prefix>/reshard/<keyspace>`) when the topology is
//! shared, so any proxy can show them; else a JSON file per keyspace next to the state file
//! (`<state_file>.reshard-<keyspace>.json`); with neither, in memory only (the README says a
//! proxy without a state file cannot resume a workflow after a restart).

use std::path::PathBuf;
use std::sync::Arc;

use super::manager::ReshardError;
use super::state::Workflow;
use crate::topology::{EtcdStore, Topology};

pub enum StateStore {
    Etcd(Arc<EtcdStore>),
    Files(PathBuf),
    Memory,
}

impl StateStore {
    pub fn new(topology: &Topology) -> StateStore {
        if let Some(s) = topology.store() {
            return StateStore::Etcd(s.clone());
        }
        match topology.state_file() {
            Some(f) => StateStore::Files(f.to_path_buf()),
            None => StateStore::Memory,
        }
    }

    fn file(base: &std::path::Path, keyspace: &str) -> PathBuf {
        let mut name = base.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".reshard-{keyspace}.json"));
        base.with_file_name(name)
    }

    pub async fn save(&self, w: &Workflow) -> Result<(), ReshardError> {
        let text = serde_json::to_vec_pretty(w)
            .map_err(|e| ReshardError::Failed(format!("encoding the workflow: {e}")))?;
        match self {
            StateStore::Etcd(s) => {
                // Only the holder of the workflow's lock writes it; a workflow that ended
                // gives the lock up (the next one on the keyspace claims it).
                let lock = s.keys.reshard_lock(&w.keyspace);
                let when = vec![etcd_client::Compare::value(
                    lock.clone(),
                    etcd_client::CompareOp::Equal,
                    s.id.as_bytes().to_vec(),
                )];
                let mut then = vec![etcd_client::TxnOp::put(
                    s.keys.reshard(&w.keyspace),
                    text,
                    None,
                )];
                if w.phase.is_final() {
                    then.push(etcd_client::TxnOp::delete(lock, None));
                }
                match s.txn(when, then).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(ReshardError::Conflict(format!(
                        "keyspace {}: this proxy does not hold the workflow's coordinator lock                          (another proxy took it over)",
                        w.keyspace
                    ))),
                    Err(e) => Err(ReshardError::Failed(format!("saving the workflow: {e}"))),
                }
            }
            StateStore::Files(base) => {
                let file = Self::file(base, &w.keyspace);
                let tmp = file.with_extension("tmp");
                let err = |e: std::io::Error| {
                    ReshardError::Failed(format!("saving the workflow to {}: {e}", file.display()))
                };
                // Renamed into place: a crash leaves the old state or the new, never half.
                tokio::fs::write(&tmp, text).await.map_err(err)?;
                tokio::fs::rename(&tmp, &file).await.map_err(err)
            }
            StateStore::Memory => Ok(()),
        }
    }

    /// The workflow persisted for `keyspace` in etcd, which another proxy may be running (None
    /// when there is none or the store is not shared: then only this process runs workflows).
    pub async fn load_shared(&self, keyspace: &str) -> Result<Option<Workflow>, ReshardError> {
        let StateStore::Etcd(s) = self else {
            return Ok(None);
        };
        let Some((text, _)) = s
            .get(s.keys.reshard(keyspace))
            .await
            .map_err(|e| ReshardError::Failed(format!("reading the workflow: {e}")))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&text).map(Some).map_err(|e| {
            ReshardError::Failed(format!(
                "the stored workflow of {keyspace} is unreadable: {e}"
            ))
        })
    }

    /// Every persisted workflow (unreadable ones are logged and skipped).
    pub async fn load_all(&self) -> Result<Vec<Workflow>, ReshardError> {
        let mut texts: Vec<(String, Vec<u8>)> = Vec::new();
        match self {
            StateStore::Etcd(s) => {
                texts = s
                    .list(s.keys.reshards())
                    .await
                    .map_err(|e| ReshardError::Failed(format!("reading workflows: {e}")))?;
            }
            StateStore::Files(base) => {
                let dir = base
                    .parent()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(|| PathBuf::from("."));
                let prefix = format!(
                    "{}.reshard-",
                    base.file_name().unwrap_or_default().to_string_lossy()
                );
                let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                    return Ok(Vec::new());
                };
                while let Ok(Some(e)) = entries.next_entry().await {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(&prefix) && name.ends_with(".json") {
                        if let Ok(t) = tokio::fs::read(e.path()).await {
                            texts.push((e.path().display().to_string(), t));
                        }
                    }
                }
            }
            StateStore::Memory => {}
        }
        let mut out = Vec::new();
        for (from, t) in texts {
            match serde_json::from_slice::<Workflow>(&t) {
                Ok(w) => out.push(w),
                Err(e) => {
                    tracing::warn!(%from, error = %e, "skipping an unreadable reshard workflow")
                }
            }
        }
        Ok(out)
    }
}
