//! cargo fuzz run build_eval — see `docs/fuzzing.md`; the body is `flow_fuzz::build_eval`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flow_fuzz::build_eval(data));
