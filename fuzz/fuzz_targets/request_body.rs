//! Fuzz target: `rulehost::fuzzing::request_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rulehost::fuzzing::request_body(data));
