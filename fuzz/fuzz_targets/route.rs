//! `cargo fuzz run route`: see `webui::fuzzing::route` for the input and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webui::fuzzing::route(data));
