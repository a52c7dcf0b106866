//! One workflow's run: copy, catch-up streams, verify, cutover, complete, cancel.

use std::sync::{Arc, Mutex};

use super::manager::{ReshardError, Reshards, StartRequest};
use super::state::{CutoverAttempt, Status, Workflow};

pub struct Runner {
    pub(super) owner: Arc<Reshards>,
    pub(super) state: Mutex<Workflow>,
}

impl Runner {
    pub fn status(&self) -> Status {
        let w = super::manager::lock(&self.state).clone();
        Status {
            workflow: w,
            rows_estimated: 0,
            rows_copied: 0,
            rows_per_second: 0.0,
            eta_seconds: None,
            lag_seconds: None,
        }
    }

    pub async fn verify(self: Arc<Self>) -> Result<(), ReshardError> {
        Err(ReshardError::Conflict("not built yet".into()))
    }

    pub async fn cutover(
        &self,
        _max_pause: std::time::Duration,
        _rollback: bool,
    ) -> Result<CutoverAttempt, ReshardError> {
        Err(ReshardError::Conflict("not built yet".into()))
    }

    pub async fn complete(self: Arc<Self>) -> Result<(), ReshardError> {
        Err(ReshardError::Conflict("not built yet".into()))
    }

    pub async fn cancel(self: Arc<Self>) -> Result<(), ReshardError> {
        Err(ReshardError::Conflict("not built yet".into()))
    }
}

pub async fn start(_owner: &Arc<Reshards>, _req: StartRequest) -> Result<Status, ReshardError> {
    Err(ReshardError::Conflict("not built yet".into()))
}

pub async fn resume_all(_owner: &Arc<Reshards>) {}
