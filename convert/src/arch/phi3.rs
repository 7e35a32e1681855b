//! Phi-3 and Phi-4-mini (`Phi3ForCausalLM`; GGUF architecture `phi3`).
//!
//! Hugging Face: `modeling_phi3.py` — a Llama block whose q, k, v come from one matrix
//! (`qkv_proj`, rows q then k then v) and whose gate and up come from one (`gate_up_proj`,
//! gate rows first: `gate, up = chunk(2)`), rotate-half RoPE over the first
//! `head_dim · partial_rotary_factor` dimensions of each head (Phi-4-mini: 0.75), LongRoPE
//! (`rope_scaling` type `longrope`: frequency divisors `short_factor` for a sequence within
//! `original_max_position_embeddings`, `long_factor` beyond it, and cos/sin multiplied by
//! `√(1 + ln(max/orig) / ln orig)`), and `sliding_window` over every layer.
//!
//! llama.cpp: `Phi3MiniModel` in `conversion/phi.py` stores both fused matrices as they are
//! (`attn_qkv`, `ffn_up` of `2·n_ff` rows, run as SwiGLU on the halves), writes its own keys
//! only (no `TextModel` defaults: `rope.dimension_count = int(partial · n_embd) // n_head`,
//! `rope.scaling.original_context_length`, `attention.sliding_window`, 0 when none) and the
//! generated `rope_factors_long` / `rope_factors_short` with `rope.scaling.attn_factor`.
//! `src/models/phi3.cpp` picks the long factors when the context exceeds the original one
//! (`llama_model::get_rope_factors`), as Hugging Face does for a sequence that long, and
//! *disables* the sliding window (a warning at load: "Phi SWA is currently disabled"), so a
//! window shorter than the context is a caveat of the GGUF.

use std::path::Path;

use serde_json::json;

use super::llama::{hf_common, HEAD, TAIL};
use super::{resolve, Arch, Dim, Family, Row, TensorDef, When, X};
use crate::config::{gguf_common, gguf_common_keys, HfJson, ModelConfig};
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value};

/// Phi-3.
pub struct Phi3;

pub static PHI3: Phi3 = Phi3;

use Dim::*;

/// One block (`LLM_ARCH_PHI3`'s tensors as the converter writes them).
const LAYER: &[Row] = &[
    (
        "attn_norm.weight",
        "input_layernorm.weight",
        &[Hidden],
        X::None,
        When::Always,
    ),
    (
        "attn_qkv.weight",
        "self_attn.qkv_proj.weight",
        &[Qkv, Hidden],
        X::None,
        When::Always,
    ),
    (
        "attn_output.weight",
        "self_attn.o_proj.weight",
        &[Hidden, Q],
        X::None,
        When::Always,
    ),
    (
        "ffn_norm.weight",
        "post_attention_layernorm.weight",
        &[Hidden],
        X::None,
        When::Always,
    ),
    (
        "ffn_up.weight",
        "mlp.gate_up_proj.weight",
        &[Ffn2, Hidden],
        X::None,
        When::Always,
    ),
    (
        "ffn_down.weight",
        "mlp.down_proj.weight",
        &[Hidden, Ffn],
        X::None,
        When::Always,
    ),
];

/// LongRoPE's attention factor for a model trained at `orig` positions and extended to
/// `max` (`_compute_longrope_parameters`; the converter's `generate_extra_tensors` alike).
fn longrope_attn_factor(max: usize, orig: usize) -> f32 {
    let scale = max as f64 / orig as f64;
    if scale <= 1.0 {
        1.0
    } else {
        (1.0 + scale.ln() / (orig as f64).ln()).sqrt() as f32
    }
}

impl Family for Phi3 {
    fn arch(&self) -> Arch {
        Arch::Phi3
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["phi3"]
    }
    fn gguf_arch(&self) -> &'static str {
        "phi3"
    }
    fn hf_class(&self) -> &'static str {
        "Phi3ForCausalLM"
    }
    fn partial_rotary(&self) -> bool {
        true
    }
    fn fused(&self) -> bool {
        true
    }
    fn read_hf(&self, cfg: &HfJson) -> Result<ModelConfig> {
        let mut c = hf_common(cfg, Arch::Phi3, &["longrope"])?;
        let bad = |m: String| Err(Error::unsupported(cfg.path(), m));
        // llama.cpp's phi3 graph has an output projection of n_embd × n_embd.
        if c.n_heads * c.head_dim != c.hidden_size {
            return bad(format!(
                "{} heads of {} are not the width {}: llama.cpp's phi3 needs n_head · head_dim = n_embd",
                c.n_heads, c.head_dim, c.hidden_size
            ));
        }
        // Transformers rotates int(head_dim · p) dimensions, the converter writes
        // int(p · n_embd) // n_head; with head_dim = n_embd / n_head they agree unless the
        // product is fractional.
        let p = cfg.f64("partial_rotary_factor")?.unwrap_or(1.0);
        if !(p > 0.0 && p <= 1.0) {
            return bad(format!("`partial_rotary_factor` = {p} is not in (0, 1]"));
        }
        let hf_dims = (c.head_dim as f64 * p) as usize;
        let gguf_dims = (p * c.hidden_size as f64) as usize / c.n_heads;
        if hf_dims != gguf_dims {
            return bad(format!(
                "`partial_rotary_factor` = {p}: transformers rotates {hf_dims} dimensions, llama.cpp's converter {gguf_dims}"
            ));
        }
        if hf_dims != c.head_dim {
            c.rotary_dims = Some(hf_dims);
        }
        let orig = cfg
            .usize("original_max_position_embeddings")?
            .unwrap_or(4096);
        c.original_context_length = Some(orig);
        if let Some(l) = &mut c.longrope {
            l.attn_factor = longrope_attn_factor(c.context_length, orig);
        }
        // `Phi3Config.sliding_window`: every layer's queries see this many positions.
        if let Some(w) = cfg.usize("sliding_window")? {
            c.sliding_window = Some(w);
            c.swa_layers = vec![true; c.n_layers];
        }
        // Phi3Attention and Phi3MLP have no biases whatever these say; a checkpoint carrying
        // bias tensors would be refused as holding unknown tensors.
        cfg.neutral("attention_bias", &[json!(false)])?;
        cfg.neutral("lm_head_bias", &[json!(false)])?;
        // Phi-4-mini's keys for its remote code (dense attention in every layer, no position
        // interpolation): transformers' Phi3 does not read them, so only these values are
        // the function it runs.
        cfg.neutral("full_attn_mod", &[json!(1)])?;
        cfg.neutral("interpolate_factor", &[json!(1)])?;
        // Dropout (training only).
        cfg.inert(&["resid_pdrop", "embd_pdrop"]);
        Ok(c)
    }
    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig> {
        let mut c = gguf_common(path, md, Arch::Phi3)?;
        c.original_context_length = md
            .u64("phi3.rope.scaling.original_context_length")
            .map(|v| v as usize);
        // llama.cpp runs a phi3 GGUF without its window (kiln runs it as llama.cpp does); the
        // value stays known for an export.
        if let Some(w) = md.u64("phi3.attention.sliding_window").filter(|&w| w > 0) {
            c.sliding_window = Some(w as usize);
            c.swa_layers = vec![false; c.n_layers];
        }
        Ok(c)
    }
    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata) {
        // `Phi3MiniModel.set_gguf_parameters`: its own list, not TextModel's.
        gguf_common_keys(c, md);
        let k = |s: &str| format!("phi3.{s}");
        md.set(
            k("rope.scaling.original_context_length"),
            Value::U32(c.original_context_length.unwrap_or(c.context_length) as u32),
        );
        md.set(
            k("rope.dimension_count"),
            Value::U32(c.rotated_dims() as u32),
        );
        md.set(
            k("attention.sliding_window"),
            Value::U32(c.sliding_window.unwrap_or(0) as u32),
        );
        if let Some(l) = &c.longrope {
            md.set(k("rope.scaling.attn_factor"), Value::F32(l.attn_factor));
        }
    }
    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value {
        let mut v = json!({
            "architectures": [self.hf_class()],
            "model_type": "phi3",
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "vocab_size": c.vocab_size,
            "max_position_embeddings": c.context_length,
            "original_max_position_embeddings": c.original_context_length.unwrap_or(c.context_length),
            "rms_norm_eps": c.rms_norm_eps as f64,
            "rope_theta": c.rope_theta as f64,
            "partial_rotary_factor": c.rotated_dims() as f64 / c.head_dim as f64,
            "tie_word_embeddings": c.tie_word_embeddings,
            "hidden_act": "silu",
            "sliding_window": c.sliding_window,
            "torch_dtype": "float32",
        });
        let o = v.as_object_mut().unwrap();
        if let Some(l) = &c.longrope {
            o.insert(
                "rope_scaling".into(),
                json!({"type": "longrope", "long_factor": l.long, "short_factor": l.short}),
            );
        }
        if let Some(b) = c.bos_token_id {
            o.insert("bos_token_id".into(), b.into());
        }
        if let Some(e) = c.eos_token_id {
            o.insert("eos_token_id".into(), e.into());
        }
        v
    }
    fn tensors(&self, c: &ModelConfig) -> Vec<TensorDef> {
        resolve(c, HEAD, LAYER, TAIL)
    }
    fn gguf_caveat(&self, c: &ModelConfig) -> Option<String> {
        let w = c.sliding_window?;
        (w < c.context_length).then(|| {
            format!(
                "sliding_window = {w} is shorter than the context ({}): llama.cpp disables \
                 Phi-3's sliding window, so the GGUF attends to the whole context (kiln verify \
                 against the checkpoint shows the cost)",
                c.context_length
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_factor_is_the_papers() {
        // Phi-3.5-mini: 131072 over 4096.
        let f = longrope_attn_factor(131072, 4096);
        assert!((f as f64 - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-7);
        assert_eq!(longrope_attn_factor(4096, 4096), 1.0);
    }
}
