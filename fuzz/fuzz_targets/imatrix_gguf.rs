#![no_main]
//! Fuzz target: see `harness::imatrix_gguf`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::imatrix_gguf(&harness::scratch("imatrix_gguf"), data);
});
