#![no_main]
// The property lives in airlock::fuzzing::scan_chunks (replayed by `cargo test`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock::fuzzing::scan_chunks(data));
