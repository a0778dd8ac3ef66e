#![no_main]
// The property lives in airlock::fuzzing::path (replayed by `cargo test`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock::fuzzing::path(data));
