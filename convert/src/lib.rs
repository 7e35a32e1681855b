//! # convert — checkpoints in, GGUF out (and back)
//!
//! * [`source`]: a Hugging Face checkpoint directory (config.json, `model.safetensors` or
//!   sharded with `model.safetensors.index.json`, F32/F16/BF16) or a GGUF file, validated and
//!   seen the same way: hyper-parameters, base metadata, tensors under llama.cpp's names in
//!   llama.cpp's layout, loaded one at a time from a memory map.
//! * [`gguf`]: GGUF v3 metadata values, a strict capped reader and a streaming writer.
//! * [`safetensors`]: the checkpoint file format, header validated before use.
//! * [`arch`]: one module per architecture — config.json and GGUF keys, tensor names and
//!   value transforms, the switches of kiln's forward pass, quantization-rule facts.
//! * [`mapping`]: lookups over the architecture tables, the Q/K row permutation.
//! * [`tokenizer`]: tokenizer.json ↔ `tokenizer.ggml.*`, with llama.cpp's pre-tokenizer
//!   detection, and kiln's text tokenizer.
//! * [`convert`]: `kiln convert` (checkpoint → GGUF) and `kiln export` (GGUF → checkpoint).
//! * [`lora`]: LoRA adapters (PEFT directories, llama.cpp LoRA GGUFs) checked against a base
//!   and merged into its weights as they are read.
//! * [`atomic`]: output files appear whole or not at all.
//!
//! Errors ([`Error`]) name the file, and the tensor where there is one.

pub mod arch;
pub mod atomic;
pub mod card;
pub mod config;
pub mod convert;
mod error;
pub mod gguf;
pub mod inspect;
pub mod lora;
pub mod mapping;
pub mod safetensors;
pub mod source;
pub mod testing;
pub mod tokenizer;

pub use arch::Arch;
pub use config::{Activation, ModelConfig};
pub use error::{Error, Result};
pub use quantize::GgmlType;
pub use source::{HfCheckpoint, ModelSource, SourceTensor};
