//! # convert — checkpoints in, GGUF out
//!
//! Reads Hugging Face checkpoint directories (config.json, safetensors, tokenizer.json) and
//! GGUF files, maps tensor names to llama.cpp's conventions, and writes GGUF v3. It uses
//! `quantize`'s type table for every tensor type it names.
//!
//! Status: the reader and writer arrive with the convert issue; today this crate only
//! re-exports the type table it will be built on.

pub use quantize::GgmlType;
