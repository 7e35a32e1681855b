#![no_main]
//! Fuzz target: see `harness::config_json`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::config_json(&harness::scratch("config_json"), data);
});
