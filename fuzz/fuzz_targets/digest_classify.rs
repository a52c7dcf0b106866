#![no_main]
//! See `shardgate::fuzzing::digest_classify`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgate::fuzzing::digest_classify(data));
