//! Architectures: everything that differs between model families, one module per family.
//!
//! The split follows llama.cpp (`src/llama-arch.cpp` holds the facts of each architecture as
//! tables, `src/models/*.cpp` one graph builder each, `convert_hf_to_gguf.py` one model class
//! each) and candle-transformers (one self-contained file per model). A family's module holds:
//!
//! * config.json → [`ModelConfig`], strictly: every key is read and implemented, known to
//!   leave the function unchanged, or refused by name ([`crate::config::HfJson`]);
//! * GGUF metadata ⇄ [`ModelConfig`]: the `<arch>.*` keys llama.cpp reads and writes;
//! * its tensors ([`TensorDef`]): HF name ⇄ GGUF name, shape, and the value transform between
//!   the two layouts (the Q/K row permutation, Gemma's norm weights stored as 1 + w);
//! * the facts llama.cpp's per-architecture quantization rules look at;
//! * the switches of kiln's shared forward pass, as fields of [`ModelConfig`] (norm placement,
//!   activation, Q/K norms, embedding scale, RoPE bases per layer, attention scale,
//!   sliding-window layers, logit soft-capping).
//!
//! Adding an architecture is a new module implementing [`Family`] plus an entry in [`Arch`].

pub mod gemma3;
pub mod llama;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod smollm3;

use std::path::Path;

use crate::config::{HfJson, ModelConfig};
use crate::error::Result;
use crate::gguf::Metadata;

/// The architectures kiln runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama 1–3, SmolLM and other `LlamaForCausalLM` models.
    Llama,
    /// Mistral (a Llama in llama.cpp's eyes: GGUF architecture `llama`).
    Mistral,
    /// Qwen2: q/k/v biases, rotate-half RoPE without the Q/K row permutation.
    Qwen2,
    /// Qwen3: per-head Q/K RMSNorm, head width independent of the model width.
    Qwen3,
    /// SmolLM3: a Llama whose every fourth layer applies no RoPE.
    SmolLM3,
    /// Phi-3 / Phi-4-mini: fused qkv and gate-up matrices, partial rotary, LongRoPE.
    Phi3,
    /// Gemma 3 (text): GeGLU, post-norms, Q/K norms, scaled embeddings, 5:1 local:global
    /// sliding-window layers with their own RoPE base.
    Gemma3,
}

/// Every architecture, in the order error messages list them.
pub const ALL: [Arch; 7] = [
    Arch::Llama,
    Arch::Mistral,
    Arch::Qwen2,
    Arch::Qwen3,
    Arch::SmolLM3,
    Arch::Phi3,
    Arch::Gemma3,
];

impl Arch {
    /// The family's module.
    pub fn family(self) -> &'static dyn Family {
        match self {
            Arch::Llama => &llama::LLAMA,
            Arch::Mistral => &llama::MISTRAL,
            Arch::Qwen2 => &qwen2::QWEN2,
            Arch::Qwen3 => &qwen3::QWEN3,
            Arch::SmolLM3 => &smollm3::SMOLLM3,
            Arch::Phi3 => &phi3::PHI3,
            Arch::Gemma3 => &gemma3::GEMMA3,
        }
    }
    /// The `model_type` of config.json that kiln writes.
    pub fn model_type(self) -> &'static str {
        self.family().model_types()[0]
    }
    /// The GGUF `general.architecture` (and metadata key prefix).
    pub fn gguf_arch(self) -> &'static str {
        self.family().gguf_arch()
    }
    /// The `architectures` entry of config.json.
    pub fn hf_class(self) -> &'static str {
        self.family().hf_class()
    }
    /// True when llama.cpp's converter permutes attn_q / attn_k rows for this architecture
    /// (so the GGUF is run with adjacent-pair RoPE).
    pub fn permutes_qk(self) -> bool {
        self.family().permutes_qk()
    }

    /// The architecture of a config.json `model_type`.
    pub fn from_model_type(t: &str) -> Option<Arch> {
        ALL.into_iter()
            .find(|a| a.family().model_types().contains(&t))
    }

    /// The architecture kiln reads a GGUF `general.architecture` as (`llama` covers Mistral).
    pub fn from_gguf_arch(t: &str) -> Option<Arch> {
        ALL.into_iter().find(|a| a.gguf_arch() == t)
    }
}

/// `model_type`s kiln accepts, for error messages.
pub fn supported_model_types() -> String {
    let mut v: Vec<&str> = ALL
        .iter()
        .flat_map(|a| a.family().model_types().iter().copied())
        .collect();
    v.dedup();
    v.join(", ")
}

/// GGUF architectures kiln runs, for error messages.
pub fn supported_gguf_archs() -> String {
    let mut v: Vec<&str> = ALL.iter().map(|a| a.gguf_arch()).collect();
    v.dedup();
    v.join(", ")
}

/// What one architecture knows. Implemented once per module.
pub trait Family: Sync {
    /// Which [`Arch`] this is.
    fn arch(&self) -> Arch;
    /// config.json `model_type` values (the first is the one kiln writes).
    fn model_types(&self) -> &'static [&'static str];
    /// GGUF `general.architecture`.
    fn gguf_arch(&self) -> &'static str;
    /// The `architectures` class kiln writes to config.json.
    fn hf_class(&self) -> &'static str;
    /// True when the GGUF layout of attn_q / attn_k is llama.cpp's row permutation (adjacent
    /// RoPE pairs); false for rotate-half (NEOX) architectures.
    fn permutes_qk(&self) -> bool {
        false
    }
    /// True when RoPE may rotate part of each head (llama.cpp's `rope.dimension_count` below
    /// the head width).
    fn partial_rotary(&self) -> bool {
        false
    }
    /// True when the GGUF stores q/k/v as one `attn_qkv` and gate/up as one `ffn_up` of twice
    /// the rows (gate first), as the checkpoint does (Phi-3's `qkv_proj`, `gate_up_proj`).
    fn fused(&self) -> bool {
        false
    }
    /// config.json → configuration. Every key of `cfg` must be consumed (read, declared inert,
    /// or checked to be neutral); [`HfJson::finish`] refuses the rest by name.
    fn read_hf(&self, cfg: &HfJson) -> Result<ModelConfig>;
    /// GGUF metadata → configuration (`path` names the file in errors).
    fn read_gguf(&self, path: &Path, md: &Metadata) -> Result<ModelConfig>;
    /// The `<arch>.*` keys llama.cpp reads, as its converter writes them.
    fn to_gguf(&self, c: &ModelConfig, md: &mut Metadata);
    /// A config.json for the FP32 Hugging Face export.
    fn to_hf_json(&self, c: &ModelConfig) -> serde_json::Value;
    /// Every tensor of the model, in the order kiln writes them.
    fn tensors(&self, c: &ModelConfig) -> Vec<TensorDef>;
    /// Why a GGUF made from this configuration cannot hold the whole function, if it cannot
    /// (e.g. a sliding window llama.cpp's architecture has no key for).
    fn gguf_caveat(&self, _c: &ModelConfig) -> Option<String> {
        None
    }
    /// The facts llama.cpp's per-architecture quantization rules look at.
    fn mix_facts(&self, c: &ModelConfig) -> quantize::mix::ModelFacts {
        quantize::mix::ModelFacts {
            n_layer: c.n_layers,
            n_head: c.n_heads,
            n_head_kv: c.n_kv_heads,
            is_llama_arch: self.gguf_arch() == "llama",
        }
    }
}

/// How a tensor's values change between the Hugging Face layout and the GGUF layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Stored the same way in both.
    None,
    /// llama.cpp's Q/K row permutation over this many heads (`LlamaModel.permute`).
    Permute(usize),
    /// GGUF holds `1 + w` where Hugging Face holds `w` (Gemma's RMSNorm weights:
    /// `Gemma3RMSNorm` multiplies by `1 + weight`, llama.cpp's converter adds the 1).
    PlusOne,
}

impl Transform {
    /// HF values (`rows × cols`, row-major) → GGUF values.
    pub fn to_gguf(self, v: Vec<f32>, rows: usize, cols: usize) -> Vec<f32> {
        match self {
            Transform::None => v,
            Transform::Permute(h) => crate::mapping::permute_rows(&v, rows, cols, h, false),
            Transform::PlusOne => v.into_iter().map(|x| x + 1.0).collect(),
        }
    }
    /// GGUF values → HF values (the inverse).
    pub fn to_hf(self, v: Vec<f32>, rows: usize, cols: usize) -> Vec<f32> {
        match self {
            Transform::None => v,
            Transform::Permute(h) => crate::mapping::permute_rows(&v, rows, cols, h, true),
            Transform::PlusOne => v.into_iter().map(|x| x - 1.0).collect(),
        }
    }
    /// The part of the transform that is elementwise (applied also when the kernel runs a
    /// checkpoint in its own layout, where rows are not permuted).
    pub fn elementwise(self) -> Transform {
        match self {
            Transform::Permute(_) => Transform::None,
            t => t,
        }
    }
}

/// One tensor of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDef {
    /// llama.cpp's name.
    pub gguf: String,
    /// Hugging Face's name.
    pub hf: String,
    /// Shape, outermost first (Hugging Face's order).
    pub shape: Vec<usize>,
    /// HF → GGUF value transform.
    pub transform: Transform,
}

/// A symbolic dimension of a tensor table.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dim {
    Hidden,
    Ffn,
    /// `n_heads · head_dim`.
    Q,
    /// `n_kv_heads · head_dim`.
    Kv,
    /// `(n_heads + 2 · n_kv_heads) · head_dim`: fused q, k, v.
    Qkv,
    /// `2 · intermediate_size`: fused gate and up.
    Ffn2,
    Head,
    Vocab,
}

/// A symbolic value transform of a tensor table (the permutations apply only to architectures
/// whose [`Family::permutes_qk`] is true).
#[derive(Debug, Clone, Copy)]
pub(crate) enum X {
    None,
    /// Permuted over the query heads.
    PermQ,
    /// Permuted over the key/value heads.
    PermK,
    PlusOne,
}

/// When a row of a table applies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum When {
    Always,
    /// The model has q/k/v biases.
    Bias,
    /// The output projection is its own tensor.
    Untied,
}

/// One row of a tensor table: GGUF suffix, HF suffix, shape, transform, condition. Layer rows
/// are under `blk.N.` / `model.layers.N.`; model rows use whole names.
pub(crate) type Row = (&'static str, &'static str, &'static [Dim], X, When);

/// Resolves tensor tables against a configuration: `head` rows, every layer's rows, `tail`
/// rows.
pub(crate) fn resolve(
    c: &ModelConfig,
    head: &[Row],
    layer: &[Row],
    tail: &[Row],
) -> Vec<TensorDef> {
    resolve_parts(c, head, &[layer], tail)
}

/// [`resolve`] with a layer made of several tables (a shared block plus a family's additions).
pub(crate) fn resolve_parts(
    c: &ModelConfig,
    head: &[Row],
    layer: &[&[Row]],
    tail: &[Row],
) -> Vec<TensorDef> {
    let dim = |d: Dim| match d {
        Dim::Hidden => c.hidden_size,
        Dim::Ffn => c.intermediate_size,
        Dim::Q => c.n_heads * c.head_dim,
        Dim::Kv => c.n_kv_heads * c.head_dim,
        Dim::Qkv => (c.n_heads + 2 * c.n_kv_heads) * c.head_dim,
        Dim::Ffn2 => 2 * c.intermediate_size,
        Dim::Head => c.head_dim,
        Dim::Vocab => c.vocab_size,
    };
    let applies = |w: When| match w {
        When::Always => true,
        When::Bias => c.qkv_bias,
        When::Untied => !c.tie_word_embeddings,
    };
    let permutes = c.arch.permutes_qk();
    let def = |g: String, h: String, shape: &[Dim], x: X| TensorDef {
        gguf: g,
        hf: h,
        shape: shape.iter().map(|&d| dim(d)).collect(),
        transform: match x {
            X::None => Transform::None,
            X::PermQ if permutes => Transform::Permute(c.n_heads),
            X::PermK if permutes => Transform::Permute(c.n_kv_heads),
            X::PermQ | X::PermK => Transform::None,
            X::PlusOne => Transform::PlusOne,
        },
    };
    let mut out = Vec::new();
    for &(g, h, s, x, w) in head {
        if applies(w) {
            out.push(def(g.into(), h.into(), s, x));
        }
    }
    for n in 0..c.n_layers {
        for &(g, h, s, x, w) in layer.iter().flat_map(|t| t.iter()) {
            if applies(w) {
                out.push(def(
                    format!("blk.{n}.{g}"),
                    format!("model.layers.{n}.{h}"),
                    s,
                    x,
                ));
            }
        }
    }
    for &(g, h, s, x, w) in tail {
        if applies(w) {
            out.push(def(g.into(), h.into(), s, x));
        }
    }
    out
}

/// llama.cpp's tensor of RoPE frequency divisors (Llama 3's scaling).
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// llama.cpp's LongRoPE divisors (Phi-3), for contexts beyond and within the training one.
pub const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
pub const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

/// The tensors a GGUF of `c` holds that no checkpoint tensor maps to: values config.json
/// implies, generated as llama.cpp's converter generates them (`generate_extra_tensors`).
pub fn derived(c: &ModelConfig) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = c
        .rope_freq_factors
        .iter()
        .map(|ff| (ROPE_FREQS.to_string(), ff.clone()))
        .collect();
    if let Some(l) = &c.longrope {
        v.push((ROPE_FACTORS_LONG.to_string(), l.long.clone()));
        v.push((ROPE_FACTORS_SHORT.to_string(), l.short.clone()));
    }
    v
}

/// The transform of GGUF tensor `name` of `c`'s model (`None` for names it does not have).
pub fn transform_of(c: &ModelConfig, gguf_name: &str) -> Transform {
    c.arch
        .family()
        .tensors(c)
        .into_iter()
        .find(|t| t.gguf == gguf_name)
        .map_or(Transform::None, |t| t.transform)
}

/// The Hugging Face name of GGUF tensor `name` of `c`'s model.
pub fn hf_name(c: &ModelConfig, gguf_name: &str) -> Option<String> {
    c.arch
        .family()
        .tensors(c)
        .into_iter()
        .find(|t| t.gguf == gguf_name)
        .map(|t| t.hf)
}
