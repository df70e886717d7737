//! `cargo fuzz run upstream_response`: see `webui::fuzzing::upstream_response` for the
//! input and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| webui::fuzzing::upstream_response(data));
