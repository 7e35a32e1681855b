//! Qwen3 (`Qwen3ForCausalLM`; GGUF architecture `qwen3`).
//!
//! Hugging Face: `modeling_qwen3.py` — a Qwen2 block without q/k/v biases (unless
//! `attention_bias`), with an RMSNorm over each head of q and of k before RoPE
//! (`Qwen3Attention.q_norm` / `k_norm`, weights stored as is), and `head_dim` independent of
//! the width (Qwen3-0.6B: 16 heads of 128 in a width of 1024). llama.cpp: `Qwen3Model` converts
//! as Qwen2 does (no Q/K row permutation; `src/models/qwen3.cpp` runs rotate-half RoPE) and
//! writes `attention.key_length` / `value_length` from `head_dim`.

use std::path::Path;

use serde_json::json;

use super::llama::{hf_common, hf_json, text_model_keys, HEAD, LAYER, TAIL};
use super::{resolve_parts, Arch, Dim, Family, Row, TensorDef, When, X};
use crate::config::{gguf_common, HfJson, ModelConfig};
use crate::error::Result;
use crate::gguf::Metadata;

/// Qwen3.
pub struct Qwen3;

pub static QWEN3: Qwen3 = Qwen3;

/// The per-head norms added to the Llama block (`LLM_ARCH_QWEN3`'s `attn_q_norm`,
/// `attn_k_norm`).
const QK_NORM: &[Row] = &[
    (
        "attn_q_norm.weight",
        "self_attn.q_norm.weight",
        &[Dim::Head],
        X::None,
        When::Always,
    ),
    (
        "attn_k_norm.weight",
        "self_attn.k_norm.weight",
        &[Dim::Head],
        X::None,
        When::Always,
    ),
];

/// Qwen's sliding-window keys (`Qwen2Config`, `Qwen3Config`): `use_sliding_window` windows
/// the layers from `max_window_layers` on, which kiln does not implement, so it must be off;
/// then `sliding_window` and `max_window_layers` say nothing, and `layer_types` (when given)
/// must be all `full_attention`.
pub(crate) fn qwen_window_keys(cfg: &HfJson) -> Result<()> {
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
    Ok(())
}

impl Family for Qwen3 {
    fn arch(&self) -> Arch {
        Arch::Qwen3
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["qwen3"]
    }
    fn gguf_arch(&self) -> &'static str {
        "qwen3"
    }
    fn hf_class(&self) -> &'static str {
        "Qwen3ForCausalLM"
    }
    fn read_hf(&self, cfg: &HfJson) -> Result<ModelConfig> {
        let mut c = hf_common(cfg, Arch::Qwen3, &[])?;
        c.qkv_bias = cfg.bool("attention_bias")?.unwrap_or(false);
        c.qk_norm = true;
        qwen_window_keys(cfg)?;
        Ok(c)
    }
    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig> {
        let mut c = gguf_common(path, md, Arch::Qwen3)?;
        c.head_dim_key = md.get("qwen3.attention.key_length").is_some();
        c.qk_norm = true;
        Ok(c)
    }
    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata) {
        text_model_keys(c, md)
    }
    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value {
        let mut v = hf_json(c);
        v["attention_bias"] = c.qkv_bias.into();
        v
    }
    fn tensors(&self, c: &ModelConfig) -> Vec<TensorDef> {
        resolve_parts(c, HEAD, &[LAYER, QK_NORM], TAIL)
    }
}
