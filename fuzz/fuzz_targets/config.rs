#![no_main]
// The property lives in airlock::fuzzing::config (replayed by `cargo test`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock::fuzzing::config(data));
