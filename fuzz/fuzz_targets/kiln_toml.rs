#![no_main]
//! Fuzz target: see `harness::kiln_toml`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::kiln_toml(&harness::scratch("kiln_toml"), data);
});
