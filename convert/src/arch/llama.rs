//! Llama and Mistral (`LlamaForCausalLM`, `MistralForCausalLM`; GGUF architecture `llama`).
//!
//! Hugging Face: `modeling_llama.py` / `modeling_mistral.py` — pre-norm blocks, SwiGLU,
//! rotate-half RoPE. llama.cpp: `LlamaModel` in `convert_hf_to_gguf.py` permutes the rows of
//! attn_q / attn_k (`LlamaModel.permute`) so that `src/models/llama.cpp` can run adjacent-pair
//! RoPE (`LLAMA_ROPE_TYPE_NORM`). Mistral's `sliding_window` is honoured as Hugging Face does
//! (every layer windowed) when kiln runs the checkpoint; llama.cpp's `llama` architecture has
//! no window, so the conversion says what the GGUF loses.

use std::path::Path;

use serde_json::json;

use super::{resolve, Arch, Dim, Family, Row, TensorDef, When, X};
use crate::config::{
    gguf_common, gguf_common_keys, rope_scaling, HfJson, LongRope, ModelConfig, RopeScaling,
};
use crate::error::Result;
use crate::gguf::{Metadata, Value};

/// Llama.
pub struct Llama;
/// Mistral.
pub struct Mistral;

pub static LLAMA: Llama = Llama;
pub static MISTRAL: Mistral = Mistral;

use Dim::*;

/// Model-level tensors before the layers.
pub(crate) const HEAD: &[Row] = &[(
    "token_embd.weight",
    "model.embed_tokens.weight",
    &[Vocab, Hidden],
    X::None,
    When::Always,
)];

/// One block (`src/llama-arch.cpp`'s LLM_ARCH_LLAMA tensor list, in kiln's write order).
pub(crate) const LAYER: &[Row] = &[
    (
        "attn_norm.weight",
        "input_layernorm.weight",
        &[Hidden],
        X::None,
        When::Always,
    ),
    (
        "attn_q.weight",
        "self_attn.q_proj.weight",
        &[Q, Hidden],
        X::PermQ,
        When::Always,
    ),
    (
        "attn_k.weight",
        "self_attn.k_proj.weight",
        &[Kv, Hidden],
        X::PermK,
        When::Always,
    ),
    (
        "attn_v.weight",
        "self_attn.v_proj.weight",
        &[Kv, Hidden],
        X::None,
        When::Always,
    ),
    (
        "attn_q.bias",
        "self_attn.q_proj.bias",
        &[Q],
        X::PermQ,
        When::Bias,
    ),
    (
        "attn_k.bias",
        "self_attn.k_proj.bias",
        &[Kv],
        X::PermK,
        When::Bias,
    ),
    (
        "attn_v.bias",
        "self_attn.v_proj.bias",
        &[Kv],
        X::None,
        When::Bias,
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
        "ffn_gate.weight",
        "mlp.gate_proj.weight",
        &[Ffn, Hidden],
        X::None,
        When::Always,
    ),
    (
        "ffn_up.weight",
        "mlp.up_proj.weight",
        &[Ffn, Hidden],
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

/// Model-level tensors after the layers.
pub(crate) const TAIL: &[Row] = &[
    (
        "output_norm.weight",
        "model.norm.weight",
        &[Hidden],
        X::None,
        When::Always,
    ),
    (
        "output.weight",
        "lm_head.weight",
        &[Vocab, Hidden],
        X::None,
        When::Untied,
    ),
];

/// The config.json keys of a Llama-style decoder (`LlamaConfig`, `MistralConfig`,
/// `Qwen2Config` … share them); returns the configuration and leaves family keys to the caller.
/// `rope_types`: the RoPE scaling types beyond linear the architecture's llama.cpp graph runs
/// (`llama3` where it reads `rope_freqs.weight`, `longrope` for Phi-3).
pub(crate) fn hf_common(cfg: &HfJson, arch: Arch, rope_types: &[&str]) -> Result<ModelConfig> {
    let hidden = cfg.need_usize("hidden_size")?;
    let n_heads = cfg.need_usize("num_attention_heads")?;
    let mut c = ModelConfig::base(
        arch,
        hidden,
        cfg.need_usize("intermediate_size")?,
        cfg.need_usize("num_hidden_layers")?,
        n_heads,
        cfg.usize("num_key_value_heads")?.unwrap_or(n_heads),
        cfg.usize("head_dim")?
            .unwrap_or(hidden.checked_div(n_heads).unwrap_or(0)),
        cfg.need_usize("vocab_size")?,
    );
    c.context_length = cfg.usize("max_position_embeddings")?.unwrap_or(2048);
    c.rms_norm_eps = cfg.f64("rms_norm_eps")?.unwrap_or(1e-6) as f32;
    // transformers ≥ 4.56 writes `rope_parameters` (rope_theta inside it) instead of
    // `rope_theta` + `rope_scaling`.
    let params = cfg.get("rope_parameters");
    c.rope_theta = match params
        .and_then(|p| p.get("rope_theta"))
        .and_then(|t| t.as_f64())
    {
        Some(t) => t,
        None => cfg.f64("rope_theta")?.unwrap_or(10000.0),
    } as f32;
    let scaling = match params {
        Some(p) => rope_scaling(cfg, "rope_parameters", Some(p), rope_types)?,
        None => rope_scaling(cfg, "rope_scaling", cfg.get("rope_scaling"), rope_types)?,
    };
    match scaling {
        RopeScaling::None => {}
        RopeScaling::Linear(f) => c.rope_scaling_linear = Some(f),
        RopeScaling::Llama3(p) => {
            c.rope_freq_factors = Some(p.factors(c.rope_theta, c.head_dim));
            c.rope_llama3 = Some(p);
        }
        // The attention factor needs the context lengths: the family completes it.
        RopeScaling::LongRope { long, short } => {
            c.longrope = Some(LongRope {
                long,
                short,
                attn_factor: 1.0,
            })
        }
    }
    c.head_dim_key = cfg.get("head_dim").is_some_and(|v| !v.is_null());
    cfg.inert(&["rope_theta", "rope_scaling"]);
    c.tie_word_embeddings = cfg.bool("tie_word_embeddings")?.unwrap_or(false);
    c.bos_token_id = cfg.token_id("bos_token_id");
    c.eos_token_id = cfg.token_id("eos_token_id");
    cfg.neutral("hidden_act", &[json!("silu")])?;
    cfg.neutral("mlp_bias", &[json!(false)])?;
    cfg.neutral("attn_logit_softcapping", &[])?;
    cfg.neutral("final_logit_softcapping", &[])?;
    cfg.neutral("quantization_config", &[])?;
    // Hugging Face splits the matmuls into `pretraining_tp` slices and sums them: the same
    // products, so the function does not change.
    cfg.inert(&["pretraining_tp"]);
    Ok(c)
}

/// The `<arch>.*` keys `TextModel.set_gguf_parameters` writes (Qwen2 and Qwen3 add nothing).
pub(crate) fn text_model_keys(c: &ModelConfig, md: &mut Metadata) {
    gguf_common_keys(c, md);
    let a = c.arch.gguf_arch();
    let k = |s: &str| format!("{a}.{s}");
    if let Some(f) = c.rope_scaling_linear {
        md.set(k("rope.scaling.type"), Value::String("linear".into()));
        md.set(k("rope.scaling.factor"), Value::F32(f));
    }
    if c.head_dim_key || c.head_dim != c.hidden_size / c.n_heads {
        md.set(k("attention.key_length"), Value::U32(c.head_dim as u32));
        md.set(k("attention.value_length"), Value::U32(c.head_dim as u32));
    }
}

/// The `<arch>.*` keys `LlamaModel.set_gguf_parameters` writes: the text-model keys plus the
/// vocabulary size and the rotated dimensions.
pub(crate) fn gguf_keys(c: &ModelConfig, md: &mut Metadata) {
    text_model_keys(c, md);
    let a = c.arch.gguf_arch();
    md.set(format!("{a}.vocab_size"), Value::U32(c.vocab_size as u32));
    md.set(
        format!("{a}.rope.dimension_count"),
        Value::U32(c.head_dim as u32),
    );
}

/// A Llama-style config.json.
pub(crate) fn hf_json(c: &ModelConfig) -> serde_json::Value {
    let mut v = json!({
        "architectures": [c.arch.hf_class()],
        "model_type": c.arch.model_type(),
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.context_length,
        "rms_norm_eps": c.rms_norm_eps as f64,
        "rope_theta": c.rope_theta as f64,
        "tie_word_embeddings": c.tie_word_embeddings,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    let o = v.as_object_mut().unwrap();
    if c.head_dim_key || c.head_dim != c.hidden_size / c.n_heads {
        o.insert("head_dim".into(), c.head_dim.into());
    }
    if let Some(p) = c.rope_llama3 {
        o.insert(
            "rope_scaling".into(),
            json!({
                "rope_type": "llama3",
                "factor": p.factor,
                "low_freq_factor": p.low_freq_factor,
                "high_freq_factor": p.high_freq_factor,
                "original_max_position_embeddings": p.original_max_position_embeddings,
            }),
        );
    }
    if let Some(b) = c.bos_token_id {
        o.insert("bos_token_id".into(), b.into());
    }
    if let Some(e) = c.eos_token_id {
        o.insert("eos_token_id".into(), e.into());
    }
    if let Some(f) = c.rope_scaling_linear {
        o.insert(
            "rope_scaling".into(),
            json!({"type": "linear", "factor": f}),
        );
    }
    v
}

impl Family for Llama {
    fn arch(&self) -> Arch {
        Arch::Llama
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["llama"]
    }
    fn gguf_arch(&self) -> &'static str {
        "llama"
    }
    fn hf_class(&self) -> &'static str {
        "LlamaForCausalLM"
    }
    fn permutes_qk(&self) -> bool {
        true
    }
    fn read_hf(&self, cfg: &HfJson) -> Result<ModelConfig> {
        let mut c = hf_common(cfg, Arch::Llama, &["llama3"])?;
        c.qkv_bias = cfg.bool("attention_bias")?.unwrap_or(false);
        Ok(c)
    }
    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig> {
        let mut c = gguf_common(path, md, Arch::Llama)?;
        c.head_dim_key = md.get("llama.attention.key_length").is_some();
        // A GGUF of llama.cpp's `llama` architecture may carry q/k/v biases.
        c.qkv_bias = false;
        Ok(c)
    }
    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata) {
        gguf_keys(c, md)
    }
    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value {
        let mut v = hf_json(c);
        if c.qkv_bias {
            v["attention_bias"] = true.into();
        }
        v
    }
    fn tensors(&self, c: &ModelConfig) -> Vec<TensorDef> {
        resolve(c, HEAD, LAYER, TAIL)
    }
}

impl Family for Mistral {
    fn arch(&self) -> Arch {
        Arch::Mistral
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["mistral"]
    }
    fn gguf_arch(&self) -> &'static str {
        "llama"
    }
    fn hf_class(&self) -> &'static str {
        "MistralForCausalLM"
    }
    fn permutes_qk(&self) -> bool {
        true
    }
    fn read_hf(&self, cfg: &HfJson) -> Result<ModelConfig> {
        let mut c = hf_common(cfg, Arch::Mistral, &[])?;
        // `MistralConfig.sliding_window`: every layer's queries see this many positions
        // (`sliding_window_causal_mask_function`), unless it covers the whole context.
        if let Some(w) = cfg.usize("sliding_window")? {
            c.sliding_window = Some(w);
            c.swa_layers = vec![true; c.n_layers];
        }
        Ok(c)
    }
    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig> {
        Llama.read_gguf(path, md)
    }
    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata) {
        gguf_keys(c, md)
    }
    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value {
        let mut v = hf_json(c);
        if let Some(w) = c.sliding_window {
            v["sliding_window"] = w.into();
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
                "sliding_window = {w} is shorter than the context ({}): llama.cpp's `llama` \
                 architecture has no sliding window, so the GGUF attends to the whole context \
                 (kiln verify against the checkpoint shows the cost)",
                c.context_length
            )
        })
    }
}
