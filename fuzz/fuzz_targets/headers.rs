//! `cargo fuzz run headers`: see `webui::fuzzing::headers` for the input and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webui::fuzzing::headers(data));
