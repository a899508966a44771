//! cargo fuzz run pattern — see `docs/fuzzing.md`; the body is `flow_fuzz::pattern`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flow_fuzz::pattern(data));
