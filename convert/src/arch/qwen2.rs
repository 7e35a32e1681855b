//! Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`; GGUF architecture `qwen2`).
//!
//! Hugging Face: `modeling_qwen2.py` — a Llama block with q/k/v biases. llama.cpp:
//! `Qwen2Model` converts without the Q/K row permutation and `src/models/qwen2.cpp` runs
//! rotate-half RoPE (`LLAMA_ROPE_TYPE_NEOX`).

use std::path::Path;

use serde_json::json;

use super::llama::{gguf_keys, hf_common, hf_json, HEAD, LAYER, TAIL};
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
        let mut c = hf_common(cfg, Arch::Qwen2)?;
        c.qkv_bias = true;
        // `Qwen2Config` drops `sliding_window` unless `use_sliding_window` is set, and then
        // windows the layers from `max_window_layers` on: not implemented.
        cfg.neutral("use_sliding_window", &[json!(false)])?;
        cfg.inert(&["sliding_window", "max_window_layers"]);
        if let Some(types) = cfg.get("layer_types") {
            let all_full = types
                .as_array()
                .is_some_and(|t| t.iter().all(|x| x == "full_attention"));
            if !all_full {
                cfg.neutral("layer_types", &[])?;
            }
        }
        Ok(c)
    }
    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig> {
        let mut c = gguf_common(path, md, Arch::Qwen2)?;
        c.qkv_bias = true;
        Ok(c)
    }
    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata) {
        gguf_keys(c, md)
    }
    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value {
        hf_json(c)
    }
    fn tensors(&self, c: &ModelConfig) -> Vec<TensorDef> {
        resolve(c, HEAD, LAYER, TAIL)
    }
}
