//! Prepared statements of a session: the id the client sees, and where the statement lives.
//!
//! The proxy hands out its own ids so that statements prepared on different servers (or,
//! later, on pooled connections) never collide.

use std::collections::HashMap;

use crate::planner::Route;

#[derive(Default)]
pub struct Statements {
    by_client_id: HashMap<u32, (Route, u32)>,
    last_id: u32,
}

impl Statements {
    /// The id the next PREPARE_OK will carry.
    pub fn next_id(&self) -> u32 {
        self.last_id.wrapping_add(1).max(1)
    }

    pub fn insert(&mut self, client_id: u32, route: Route, backend_id: u32) {
        self.last_id = client_id;
        self.by_client_id.insert(client_id, (route, backend_id));
    }

    pub fn get(&self, client_id: u32) -> Option<(Route, u32)> {
        self.by_client_id.get(&client_id).cloned()
    }

    pub fn remove(&mut self, client_id: u32) {
        self.by_client_id.remove(&client_id);
    }

    pub fn clear(&mut self) {
        self.by_client_id.clear();
    }
}
