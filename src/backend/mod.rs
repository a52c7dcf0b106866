//! Connections to MariaDB servers: opening them, pooling them, streaming their results.

pub mod conn;
pub mod forward;
pub mod pool;

pub use conn::{BackendConn, BackendError, ConnKey};
pub use pool::{Pooled, Pools};
