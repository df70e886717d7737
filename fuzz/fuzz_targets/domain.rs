//! `cargo fuzz run domain`: see `webui::fuzzing::domain` for the input and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webui::fuzzing::domain(data));
