#![no_main]
//! Fuzz target: see `harness::imatrix_dat`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::imatrix_dat(&harness::scratch("imatrix_dat"), data);
});
