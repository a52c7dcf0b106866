//! Online resharding of a consistent-hash keyspace (adding or removing a shard while the
//! application writes): the plan (`plan`), what the source servers say about it (`facts`).
//! Copy, catch-up, verify and cutover build on these.

pub mod copy;
pub mod facts;
pub mod plan;
pub mod verify;
