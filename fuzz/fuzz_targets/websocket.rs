#![no_main]
// The property lives in airlock::fuzzing::websocket (replayed by `cargo test`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| airlock::fuzzing::websocket(data));
