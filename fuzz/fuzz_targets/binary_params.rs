#![no_main]
//! See `shardgate::fuzzing::binary_params`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgate::fuzzing::binary_params(data));
