//! Connections to MariaDB servers: opening them, pooling them, streaming their results.

pub mod applied;
pub mod balance;
pub mod bulk;
pub mod conn;
pub mod forward;
pub mod health;
pub mod pool;
pub mod prepared;
pub mod vars;

pub use balance::choose_replica;
pub use conn::{BackendConn, BackendError, ConnKey};
pub use health::{
    spawn_monitor, try_spawn_monitor, Health, MonitorError, MonitorHandle, Outstanding,
    ServerHealth,
};
pub use pool::{Pooled, Pools};
