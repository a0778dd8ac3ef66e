#![no_main]
// The property lives in airlock::fuzzing::authority (replayed by `cargo test`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock::fuzzing::authority(data));
