#![no_main]
//! See `shardgate::fuzzing::frames_split`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgate::fuzzing::frames_split(data));
