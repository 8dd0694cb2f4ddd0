//! Fuzz target: `rulehost::fuzzing::import_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rulehost::fuzzing::import_file(data));
