//! Fuzz target: the shard's incremental WebSocket frame decoder (reads split at fuzzer-chosen points, fragments, masks, the size cap).
//! The properties checked are in `fuzz/src/checks.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomcast_fuzz::checks::frame_decode(data));
