#![no_main]
//! See `shardgate::fuzzing::response_scanner`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgate::fuzzing::response_scanner(data));
