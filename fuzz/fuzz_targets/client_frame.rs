//! Fuzz target: the shard's JSON decoder that turns a text frame into a request.
//! The properties checked are in `fuzz/src/checks.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomcast_fuzz::checks::client_frame(data));
