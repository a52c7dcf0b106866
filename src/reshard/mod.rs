//! Online resharding of a consistent-hash keyspace (adding or removing a shard while the
//! application writes): the plan (`plan`), what the source servers say about it (`facts`), the
//! copy of the moving rows (`copy`), the catch-up's binlog reader (`binlog`) and the
//! comparison of source and target (`verify`). The workflow (`workflow`, driven through `manager`, persisted by `store` as `state`)
//! runs them in order, then cuts over.

pub mod apply;
pub mod binlog;
mod checking;
mod cleanup;
mod coordination;
pub mod copy;
mod copying;
mod cutover;
pub mod facts;
pub mod manager;
pub mod plan;
pub mod state;
pub mod store;
mod streams;
pub mod verify;
pub mod workflow;
