//! Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`; GGUF architecture `qwen2`).
//!
//! Hugging Face: `modeling_qwen2.py` — a Llama block with q/k/v biases. llama.cpp:
//! `Qwen2Model` converts without the Q/K row permutation and `src/models/qwen2.cpp` runs
//! rotate-half RoPE (`LLAMA_ROPE_TYPE_NEOX`).

use std::path::Path;

use super::llama::{hf_common, hf_json, text_model_keys, HEAD, LAYER, TAIL};
use super::{resolve, Arch, Family, TensorDef};
use crate::config::{gguf_common, HfJson, ModelConfig};
use crate::error::Result;
use crate::gguf::Metadata;

/// Qwen2.
pub struct Qwen2;

pub static QWEN2: Qwen2 = Qwen2;

impl Family for Qwen2 {
    fn arch(&self) -> Arch {
        Arch::Qwen2
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["qwen2"]
    }
    fn gguf_arch(&self) -> &'static str {
        "qwen2"
    }
    fn hf_class(&self) -> &'static str {
        "Qwen2ForCausalLM"
    }
    fn read_hf(&self, cfg: &HfJson) -> Result<ModelConfig> {
        let mut c = hf_common(cfg, Arch::Qwen2, &[])?;
        c.qkv_bias = true;
        // `Qwen2Config` drops `sliding_window` unless `use_sliding_window` is set.
        super::qwen3::qwen_window_keys(cfg)?;
        Ok(c)
    }
    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig> {
        let mut c = gguf_common(path, md, Arch::Qwen2)?;
        c.head_dim_key = md.get("qwen2.attention.key_length").is_some();
        c.qkv_bias = true;
        Ok(c)
    }
    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata) {
        text_model_keys(c, md)
    }
    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value {
        hf_json(c)
    }
    fn tensors(&self, c: &ModelConfig) -> Vec<TensorDef> {
        resolve(c, HEAD, LAYER, TAIL)
    }
}
