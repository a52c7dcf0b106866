//! Online resharding (issue 15): the pieces of copy, catch-up, verify and cutover.

pub mod binlog;
