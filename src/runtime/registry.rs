//! The proxy's sessions by connection id, so `KILL id` can find the session a client means.
//!
//! Clients learn the proxy's connection id from the handshake (the id the `mariadb` CLI's
//! Ctrl-C kills); the server behind knows the session by its own connection's id. Proxy ids
//! start at [`FIRST_ID`], far above the ids MariaDB hands out, so a `KILL` naming a server id
//! (as `CONNECTION_ID()` returns) is never mistaken for a proxy id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub const FIRST_ID: u32 = 1 << 30;

/// What other sessions may learn about a session.
pub struct SessionInfo {
    /// Changes with COM_CHANGE_USER.
    user: Mutex<String>,
    /// The server connection the session runs its statements on now (`None` between
    /// statements of a multiplexed session): server address and server-side id.
    backend: Mutex<Option<(Arc<str>, u32)>>,
    /// Notified by `KILL CONNECTION`: the session closes.
    pub killed: Notify,
}

impl SessionInfo {
    pub fn user(&self) -> String {
        self.user.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_user(&self, name: &str) {
        *self.user.lock().unwrap_or_else(|e| e.into_inner()) = name.to_string();
    }

    pub fn backend(&self) -> Option<(Arc<str>, u32)> {
        self.backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_backend(&self, backend: Option<(Arc<str>, u32)>) {
        *self.backend.lock().unwrap_or_else(|e| e.into_inner()) = backend;
    }
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU32,
    sessions: Mutex<HashMap<u32, Arc<SessionInfo>>>,
}

/// Removes its session from the registry when the session ends.
pub struct Registration {
    pub id: u32,
    pub info: Arc<SessionInfo>,
    registry: Arc<Registry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self
            .registry
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        sessions.remove(&self.id);
    }
}

impl Registry {
    /// A fresh connection id for a new client.
    pub fn next_id(&self) -> u32 {
        FIRST_ID
            .wrapping_add(self.next.fetch_add(1, Ordering::Relaxed))
            .max(FIRST_ID)
    }

    pub fn register(self: &Arc<Self>, id: u32, user: &str) -> Registration {
        let info = Arc::new(SessionInfo {
            user: Mutex::new(user.to_string()),
            backend: Mutex::new(None),
            killed: Notify::new(),
        });
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info.clone());
        Registration {
            id,
            info,
            registry: self.clone(),
        }
    }

    pub fn get(&self, id: u32) -> Option<Arc<SessionInfo>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}
