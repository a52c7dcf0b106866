#![no_main]
//! See `shardgate::fuzzing::packet_reader`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgate::fuzzing::packet_reader(data));
