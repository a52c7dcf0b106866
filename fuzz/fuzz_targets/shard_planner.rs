#![no_main]
//! See `shardgate::fuzzing::shard_planner`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgate::fuzzing::shard_planner(data));
