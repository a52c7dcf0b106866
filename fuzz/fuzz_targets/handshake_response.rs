#![no_main]
//! See `shardgate::fuzzing::handshake_response`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgate::fuzzing::handshake_response(data));
