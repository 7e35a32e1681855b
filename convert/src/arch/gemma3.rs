//! Gemma 3, text (`Gemma3ForCausalLM`, `model_type` `gemma3_text`; GGUF architecture `gemma3`).
//!
//! Hugging Face: `modeling_gemma3.py`. Each block is
//!
//! ```text
//! h = x + post_attention_layernorm(attn(input_layernorm(x)))
//! x = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))
//! ```
//!
//! with `Gemma3RMSNorm` computing `norm(x) · (1 + w)` (llama.cpp's converter stores `1 + w`,
//! `Gemma3Model.modify_tensors`), GeGLU with `gelu_pytorch_tanh`, per-head RMSNorm of q and k
//! before RoPE, rotate-half RoPE, scores scaled by `query_pre_attn_scalar^−½`, embeddings
//! scaled by `√hidden_size`, tied output, and the layers in a local:global pattern — local
//! (`sliding_attention`) layers see the last `sliding_window` positions and use RoPE base
//! `rope_local_base_freq` without scaling; global layers see everything with `rope_theta` and
//! `rope_scaling`. llama.cpp: `src/models/gemma3.cpp` (`llama_model_gemma3`), swa pattern 6,
//! `rope.freq_base_swa` default 10000, attention scale `1/√n_embd_head_k` except the 27B's
//! `1/√(n_embd/n_head)`.

use std::path::Path;

use serde_json::{json, Value as Json};

use super::{resolve, Arch, Dim, Family, Row, TensorDef, When, X};
use crate::config::{
    gguf_common, gguf_common_keys, rope_scaling_linear, Activation, HfJson, ModelConfig,
};
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value, ValueType};

/// Gemma 3.
pub struct Gemma3;

pub static GEMMA3: Gemma3 = Gemma3;

use Dim::*;

const HEAD: &[Row] = &[(
    "token_embd.weight",
    "model.embed_tokens.weight",
    &[Vocab, Hidden],
    X::None,
    When::Always,
)];

/// One block (`LLM_ARCH_GEMMA3`'s tensors), names sorted as llama.cpp's loader lists them.
const LAYER: &[Row] = &[
    (
        "attn_k.weight",
        "self_attn.k_proj.weight",
        &[Kv, Hidden],
        X::None,
        When::Always,
    ),
    (
        "attn_k_norm.weight",
        "self_attn.k_norm.weight",
        &[Head],
        X::PlusOne,
        When::Always,
    ),
    (
        "attn_norm.weight",
        "input_layernorm.weight",
        &[Hidden],
        X::PlusOne,
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
        "attn_q.weight",
        "self_attn.q_proj.weight",
        &[Q, Hidden],
        X::None,
        When::Always,
    ),
    (
        "attn_q_norm.weight",
        "self_attn.q_norm.weight",
        &[Head],
        X::PlusOne,
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
        "ffn_down.weight",
        "mlp.down_proj.weight",
        &[Hidden, Ffn],
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
        "ffn_norm.weight",
        "pre_feedforward_layernorm.weight",
        &[Hidden],
        X::PlusOne,
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
        "post_attention_norm.weight",
        "post_attention_layernorm.weight",
        &[Hidden],
        X::PlusOne,
        When::Always,
    ),
    (
        "post_ffw_norm.weight",
        "post_feedforward_layernorm.weight",
        &[Hidden],
        X::PlusOne,
        When::Always,
    ),
];

const TAIL: &[Row] = &[
    (
        "output_norm.weight",
        "model.norm.weight",
        &[Hidden],
        X::PlusOne,
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

/// llama.cpp's local:global pattern for gemma3 (`load_swa_pattern(ml, 6)`): layer `l` is local
/// unless `l % n == n − 1`.
fn pattern(n_layers: usize, n: usize) -> Vec<bool> {
    (0..n_layers).map(|l| n == 0 || l % n < n - 1).collect()
}

/// The `n` of a layer list that follows [`pattern`], if it does.
fn pattern_of(layers: &[bool]) -> Option<usize> {
    (1..=layers.len().max(1)).find(|&n| pattern(layers.len(), n) == layers)
}

/// The attention scale llama.cpp uses (`llama_model_gemma3::load_arch_hparams`), as a
/// `query_pre_attn_scalar`: `n_embd / n_head` for the 27B (62 layers), else the head width.
fn llama_cpp_query_scalar(c: &ModelConfig) -> f64 {
    if c.n_layers == 62 {
        (c.hidden_size / c.n_heads) as f64
    } else {
        c.head_dim as f64
    }
}

impl Gemma3 {
    fn switches(c: &mut ModelConfig) {
        c.act = Activation::GeluTanh;
        c.post_norms = true;
        c.qk_norm = true;
        c.embed_scale = Some((c.hidden_size as f64).sqrt() as f32);
    }
}

impl Family for Gemma3 {
    fn arch(&self) -> Arch {
        Arch::Gemma3
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["gemma3_text"]
    }
    fn gguf_arch(&self) -> &'static str {
        "gemma3"
    }
    fn hf_class(&self) -> &'static str {
        "Gemma3ForCausalLM"
    }

    fn read_hf(&self, cfg: &HfJson) -> Result<ModelConfig> {
        // `Gemma3TextConfig`'s defaults for what the file leaves out.
        let hidden = cfg.need_usize("hidden_size")?;
        let n_layers = cfg.need_usize("num_hidden_layers")?;
        let mut c = ModelConfig::base(
            Arch::Gemma3,
            hidden,
            cfg.need_usize("intermediate_size")?,
            n_layers,
            cfg.need_usize("num_attention_heads")?,
            cfg.need_usize("num_key_value_heads")?,
            cfg.usize("head_dim")?.unwrap_or(256),
            cfg.need_usize("vocab_size")?,
        );
        Self::switches(&mut c);
        c.context_length = cfg.usize("max_position_embeddings")?.unwrap_or(131_072);
        c.rms_norm_eps = cfg.f64("rms_norm_eps")?.unwrap_or(1e-6) as f32;
        c.tie_word_embeddings = cfg.bool("tie_word_embeddings")?.unwrap_or(true);
        c.bos_token_id = cfg.token_id("bos_token_id");
        c.eos_token_id = cfg.token_id("eos_token_id");
        c.query_pre_attn_scalar = Some(cfg.f64("query_pre_attn_scalar")?.unwrap_or(256.0));
        c.final_logit_softcap = cfg.f64("final_logit_softcapping")?.map(|v| v as f32);
        cfg.neutral("hidden_activation", &[json!("gelu_pytorch_tanh")])?;
        // Gemma 1's key; Gemma3MLP reads `hidden_activation` only.
        cfg.inert(&["hidden_act", "cache_implementation"]);
        cfg.neutral("attn_logit_softcapping", &[])?;
        cfg.neutral("attention_bias", &[json!(false)])?;
        cfg.neutral("use_bidirectional_attention", &[json!(false)])?;
        cfg.neutral("quantization_config", &[])?;
        // RoPE: `rope_parameters` per layer type (transformers ≥ 4.56), or the older
        // `rope_theta` + `rope_scaling` (global) and `rope_local_base_freq` (local).
        if let Some(p) = cfg.get("rope_parameters") {
            let full = p.get("full_attention").unwrap_or(p);
            c.rope_theta = full
                .get("rope_theta")
                .and_then(Json::as_f64)
                .unwrap_or(1_000_000.0) as f32;
            c.rope_scaling_linear =
                rope_scaling_linear(cfg, "rope_parameters.full_attention", Some(full))?;
            if let Some(local) = p.get("sliding_attention") {
                if rope_scaling_linear(cfg, "rope_parameters.sliding_attention", Some(local))?
                    .is_some()
                {
                    return Err(Error::unsupported(
                        cfg.path(),
                        "`rope_parameters.sliding_attention` scales RoPE on the local layers: not implemented (Hugging Face and llama.cpp leave them unscaled)",
                    ));
                }
                c.rope_theta_swa = local
                    .get("rope_theta")
                    .and_then(Json::as_f64)
                    .map(|t| t as f32);
            }
            cfg.inert(&["rope_theta", "rope_scaling", "rope_local_base_freq"]);
        } else {
            c.rope_theta = cfg.f64("rope_theta")?.unwrap_or(1_000_000.0) as f32;
            c.rope_scaling_linear =
                rope_scaling_linear(cfg, "rope_scaling", cfg.get("rope_scaling"))?;
        }
        if c.rope_theta_swa.is_none() {
            c.rope_theta_swa = Some(cfg.f64("rope_local_base_freq")?.unwrap_or(10_000.0) as f32);
        }
        // Which layers are local: `layer_types`, else every `sliding_window_pattern`-th layer is
        // global (older configs; `_sliding_window_pattern` is how newer ones keep it).
        let layers = match cfg.get("layer_types") {
            Some(t) => {
                let list = t.as_array().ok_or_else(|| {
                    Error::format(cfg.path(), format!("`layer_types` = {t} is not a list"))
                })?;
                let mut out = Vec::with_capacity(list.len());
                for x in list {
                    out.push(match x.as_str() {
                        Some("sliding_attention") => true,
                        Some("full_attention") => false,
                        _ => {
                            return Err(Error::unsupported(
                                cfg.path(),
                                format!("`layer_types` entry {x} is not supported (kiln runs sliding_attention and full_attention)"),
                            ))
                        }
                    });
                }
                cfg.inert(&["sliding_window_pattern", "_sliding_window_pattern"]);
                out
            }
            None => {
                let n = match cfg.usize("sliding_window_pattern")? {
                    Some(n) => n,
                    None => cfg.usize("_sliding_window_pattern")?.unwrap_or(6),
                };
                cfg.inert(&["_sliding_window_pattern"]);
                pattern(n_layers, n)
            }
        };
        if layers.len() != n_layers {
            return Err(Error::format(
                cfg.path(),
                format!(
                    "`layer_types` lists {} layers, num_hidden_layers is {n_layers}",
                    layers.len()
                ),
            ));
        }
        let window = cfg.usize("sliding_window")?.unwrap_or(4096);
        if layers.iter().any(|&s| s) {
            c.sliding_window = Some(window);
            c.swa_layers = layers;
        }
        Ok(c)
    }

    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig> {
        let mut c = gguf_common(path, md, Arch::Gemma3)?;
        Self::switches(&mut c);
        c.tie_word_embeddings = true;
        c.query_pre_attn_scalar = Some(llama_cpp_query_scalar(&c));
        c.final_logit_softcap = md
            .f64("gemma3.final_logit_softcapping")
            .filter(|&v| v != 0.0)
            .map(|v| v as f32);
        if let Some(w) = md.u64("gemma3.attention.sliding_window").filter(|&w| w > 0) {
            c.sliding_window = Some(w as usize);
            c.swa_layers = match md.get("gemma3.attention.sliding_window_pattern") {
                None => pattern(c.n_layers, 6),
                Some(Value::Array(_, items)) => {
                    let mut v: Vec<bool> = items
                        .iter()
                        .map(|x| x.as_u64().map(|n| n != 0).or_else(|| x.as_bool()))
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            Error::format(
                                path,
                                "gemma3.attention.sliding_window_pattern holds a non-integer",
                            )
                        })?;
                    v.resize(c.n_layers, false);
                    v
                }
                Some(x) => pattern(
                    c.n_layers,
                    x.as_u64().ok_or_else(|| {
                        Error::format(
                            path,
                            "gemma3.attention.sliding_window_pattern is not a number",
                        )
                    })? as usize,
                ),
            };
            c.rope_theta_swa = Some(md.f64("gemma3.rope.freq_base_swa").unwrap_or(10_000.0) as f32);
        }
        Ok(c)
    }

    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata) {
        gguf_common_keys(c, md);
        let k = |s: &str| format!("gemma3.{s}");
        if let Some(f) = c.rope_scaling_linear {
            md.set(k("rope.scaling.type"), Value::String("linear".into()));
            md.set(k("rope.scaling.factor"), Value::F32(f));
        }
        if let Some(t) = c.rope_theta_swa {
            md.set(k("rope.freq_base_swa"), Value::F32(t));
        }
        md.set(k("attention.key_length"), Value::U32(c.head_dim as u32));
        md.set(k("attention.value_length"), Value::U32(c.head_dim as u32));
        if let Some(f) = c.final_logit_softcap {
            md.set(k("final_logit_softcapping"), Value::F32(f));
        }
        if let Some(w) = c.sliding_window {
            md.set(k("attention.sliding_window"), Value::U32(w as u32));
            // llama.cpp assumes llama_model_gemma3's pattern of 6 unless told otherwise.
            if c.swa_layers != pattern(c.n_layers, 6) {
                md.set(
                    k("attention.sliding_window_pattern"),
                    Value::Array(
                        ValueType::Bool,
                        c.swa_layers.iter().map(|&s| Value::Bool(s)).collect(),
                    ),
                );
            }
        }
    }

    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value {
        let types: Vec<&str> = (0..c.n_layers)
            .map(|l| {
                if c.swa_layers.get(l).copied().unwrap_or(false) {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        let mut v = json!({
            "architectures": [self.hf_class()],
            "model_type": "gemma3_text",
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.n_layers,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "vocab_size": c.vocab_size,
            "max_position_embeddings": c.context_length,
            "rms_norm_eps": c.rms_norm_eps as f64,
            "rope_theta": c.rope_theta as f64,
            "rope_local_base_freq": c.rope_theta_swa.unwrap_or(10_000.0) as f64,
            "rope_scaling": c.rope_scaling_linear.map(|f| json!({"rope_type": "linear", "factor": f})),
            "query_pre_attn_scalar": c.query_pre_attn_scalar.unwrap_or(c.head_dim as f64),
            "sliding_window": c.sliding_window.unwrap_or(c.context_length),
            "layer_types": types,
            "final_logit_softcapping": c.final_logit_softcap,
            "attn_logit_softcapping": null,
            "hidden_activation": "gelu_pytorch_tanh",
            "attention_bias": false,
            "tie_word_embeddings": c.tie_word_embeddings,
            "torch_dtype": "float32",
        });
        let o = v.as_object_mut().unwrap();
        // Older transformers (4.50 – 4.55) read the pattern instead of `layer_types`.
        if let Some(n) = pattern_of(&c.swa_layers).filter(|_| c.sliding_window.is_some()) {
            o.insert("sliding_window_pattern".into(), n.into());
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

    fn mix_facts(&self, c: &ModelConfig) -> quantize::mix::ModelFacts {
        quantize::mix::ModelFacts {
            n_layer: c.n_layers,
            n_head: c.n_heads,
            n_head_kv: c.n_kv_heads,
            is_llama_arch: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_local_one_global_as_llama_cpp() {
        let p = pattern(18, 6);
        let global: Vec<usize> = (0..18).filter(|&l| !p[l]).collect();
        assert_eq!(global, vec![5, 11, 17]);
        assert_eq!(pattern_of(&p), Some(6));
        assert_eq!(pattern(4, 1), vec![false; 4]);
    }
}
