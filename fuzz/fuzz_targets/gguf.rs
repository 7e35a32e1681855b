#![no_main]
//! Fuzz target: see `harness::gguf`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::gguf(&harness::scratch("gguf"), data);
});
