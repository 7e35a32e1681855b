#![no_main]
//! Fuzz target: see `harness::tokenizer_json`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::tokenizer_json(&harness::scratch("tokenizer_json"), data);
});
