//! SmolLM3 (`SmolLM3ForCausalLM`; GGUF architecture `smollm3`).
//!
//! Hugging Face: `modeling_smollm3.py` — a Llama block whose attention skips RoPE where
//! `no_rope_layers[l]` is 0 (`SmolLM3Attention.use_rope`; by default every fourth layer,
//! `no_rope_layer_interval = 4`). llama.cpp: `SmolLM3Model` is a `LlamaModel` (Q/K rows
//! permuted, adjacent-pair RoPE), and `src/models/smollm3.cpp` hard-codes the pattern:
//! layer `il` rotates unless `(il + 1) % 4 == 0` (`n_no_rope_layer_step = 4`, no GGUF key). A
//! config.json with any other pattern cannot be held by a GGUF and is refused by name.

use std::path::Path;

use super::llama::{gguf_keys, hf_common, hf_json, HEAD, LAYER, TAIL};
use super::{resolve, Arch, Family, TensorDef};
use crate::config::{gguf_common, HfJson, ModelConfig};
use crate::error::{Error, Result};
use crate::gguf::Metadata;

/// SmolLM3.
pub struct SmolLM3;

pub static SMOLLM3: SmolLM3 = SmolLM3;

/// llama.cpp's `n_no_rope_layer_step` for `smollm3`.
const NO_ROPE_STEP: usize = 4;

/// `no_rope_layers[l]` of llama.cpp's fixed pattern (true: layer `l` applies no RoPE).
fn llama_cpp_pattern(n_layers: usize) -> Vec<bool> {
    (0..n_layers).map(|l| (l + 1) % NO_ROPE_STEP == 0).collect()
}

impl Family for SmolLM3 {
    fn arch(&self) -> Arch {
        Arch::SmolLM3
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["smollm3"]
    }
    fn gguf_arch(&self) -> &'static str {
        "smollm3"
    }
    fn hf_class(&self) -> &'static str {
        "SmolLM3ForCausalLM"
    }
    fn permutes_qk(&self) -> bool {
        true
    }
    fn read_hf(&self, cfg: &HfJson) -> Result<ModelConfig> {
        // llama.cpp's smollm3 graph passes no frequency factors to RoPE: linear scaling only.
        let mut c = hf_common(cfg, Arch::SmolLM3, &[])?;
        cfg.neutral("attention_bias", &[serde_json::json!(false)])?;
        super::qwen3::qwen_window_keys(cfg)?;
        // `SmolLM3Config`: no_rope_layers[l] = 1 where layer l uses RoPE; its default is
        // `(l + 1) % no_rope_layer_interval != 0`.
        let interval = cfg.usize("no_rope_layer_interval")?.unwrap_or(NO_ROPE_STEP);
        let uses: Vec<bool> = match cfg.get("no_rope_layers").filter(|v| !v.is_null()) {
            Some(v) => {
                let a = v
                    .as_array()
                    .filter(|a| a.len() == c.n_layers)
                    .ok_or_else(|| {
                        Error::format(
                            cfg.path(),
                            format!(
                                "`no_rope_layers` = {v}: needs one 0/1 per layer ({})",
                                c.n_layers
                            ),
                        )
                    })?;
                a.iter()
                    .map(|x| match x.as_u64() {
                        Some(0) => Ok(false),
                        Some(1) => Ok(true),
                        _ => Err(Error::format(
                            cfg.path(),
                            format!("`no_rope_layers` holds {x}; each entry is 0 or 1"),
                        )),
                    })
                    .collect::<Result<_>>()?
            }
            None if interval > 0 => (0..c.n_layers).map(|l| (l + 1) % interval != 0).collect(),
            None => vec![true; c.n_layers],
        };
        c.no_rope_layers = uses.iter().map(|u| !u).collect();
        if c.no_rope_layers != llama_cpp_pattern(c.n_layers) {
            let list: Vec<String> = uses.iter().map(|&u| (u as u8).to_string()).collect();
            return Err(Error::unsupported(
                cfg.path(),
                format!(
                    "`no_rope_layers` = [{}]: llama.cpp's smollm3 skips RoPE exactly on every {NO_ROPE_STEP}th layer (layers 3, 7, …) and has no key for another pattern",
                    list.join(", ")
                ),
            ));
        }
        Ok(c)
    }
    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig> {
        let mut c = gguf_common(path, md, Arch::SmolLM3)?;
        c.head_dim_key = md.get("smollm3.attention.key_length").is_some();
        c.no_rope_layers = llama_cpp_pattern(c.n_layers);
        Ok(c)
    }
    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata) {
        gguf_keys(c, md)
    }
    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value {
        let mut v = hf_json(c);
        v["attention_bias"] = false.into();
        v["no_rope_layer_interval"] = NO_ROPE_STEP.into();
        v["no_rope_layers"] = c
            .no_rope_layers
            .iter()
            .map(|&n| u8::from(!n))
            .collect::<Vec<_>>()
            .into();
        v
    }
    fn tensors(&self, c: &ModelConfig) -> Vec<TensorDef> {
        resolve(c, HEAD, LAYER, TAIL)
    }
}
