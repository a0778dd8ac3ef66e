#![no_main]
// The property lives in airlock::fuzzing::content_decoders (replayed by `cargo test`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock::fuzzing::content_decoders(data));
