//! `cargo fuzz run config`: see `webui::fuzzing::config` for the input and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webui::fuzzing::config(data));
