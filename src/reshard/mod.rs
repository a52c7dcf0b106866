//! Online resharding of a consistent-hash keyspace (adding or removing a shard while the
//! application writes): the plan (`plan`), what the source servers say about it (`facts`), the
//! copy of the moving rows (`copy`), the catch-up's binlog reader (`binlog`) and the
//! comparison of source and target (`verify`). Cutover and the workflow build on these.

pub mod apply;
pub mod binlog;
pub mod copy;
pub mod facts;
pub mod plan;
pub mod verify;
