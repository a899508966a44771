//! cargo fuzz run label — see `docs/fuzzing.md`; the body is `flow_fuzz::label`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flow_fuzz::label(data));
