//! PLACEHOLDER until the ksgate branch merges (same API).
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct KeyspaceGates;
impl KeyspaceGates {
    pub fn gate(&self, _k: &str) -> Arc<KeyspaceGate> {
        Arc::new(KeyspaceGate)
    }
}
pub struct KeyspaceGate;
impl KeyspaceGate {
    pub fn acquire(&self) {}
    pub fn release(&self) {}
    pub fn doom(&self) {}
    pub fn open_txns(&self) -> usize {
        0
    }
    pub fn in_flight(&self) -> usize {
        0
    }
    pub async fn wait_txns(&self, _l: Duration) -> bool {
        true
    }
    pub async fn drain(&self, _l: Duration) -> bool {
        true
    }
}
