//! shardgate: a MySQL wire-protocol routing and sharding proxy.
//!
//! Data flows one way: `session` -> `planner` -> `executor` -> `backend` (see DESIGN.md).

pub mod admin;
pub mod backend;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod digests;
pub mod executor;
pub mod fuzzing;
pub mod gtid;
pub mod ha;
pub mod planner;
pub mod protocol;
pub mod proxy;
pub mod query_metrics;
pub mod reshard;
pub mod runtime;
pub mod sandbox;
pub mod session;
pub mod shardmap;
pub mod table_def;
pub mod tomlfile;
pub mod topology;
