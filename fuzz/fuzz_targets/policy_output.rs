//! Fuzz target: `rulehost::fuzzing::policy_output`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rulehost::fuzzing::policy_output(data));
