//! Fuzz target: the acceptor's HTTP request-head parser and token lookup (query, Bearer, cookie, percent-decoding, API routing).
//! The properties checked are in `fuzz/src/checks.rs`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roomcast_fuzz::checks::http_head(data));
