//! Model hyper-parameters: read from a Hugging Face `config.json` or from GGUF metadata, and
//! written back as either.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value};

/// The architectures kiln converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1–3, SmolLM and other `LlamaForCausalLM` models.
    Llama,
    /// Mistral (a Llama in llama.cpp's eyes: GGUF architecture `llama`).
    Mistral,
    /// Qwen2: q/k/v biases, rotate-half RoPE without the Q/K row permutation.
    Qwen2,
}

/// `model_type`s kiln accepts, for error messages.
pub const SUPPORTED_MODEL_TYPES: &str = "llama, mistral, qwen2";

impl Arch {
    /// The `model_type` of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
        }
    }
    /// The GGUF `general.architecture` (and metadata key prefix).
    pub fn gguf_arch(self) -> &'static str {
        match self {
            Arch::Llama | Arch::Mistral => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
    /// The `architectures` entry of config.json.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }
    /// True when llama.cpp's converter permutes attn_q / attn_k rows for this architecture
    /// (so the GGUF is run with adjacent-pair RoPE).
    pub fn permutes_qk(self) -> bool {
        matches!(self, Arch::Llama | Arch::Mistral)
    }
}

/// The hyper-parameters of a Llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Model width (embedding length).
    pub hidden_size: usize,
    /// SwiGLU inner width (feed-forward length).
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Training context length.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// True when the output projection is the embedding (no `output.weight`).
    pub tie_word_embeddings: bool,
    /// True when q/k/v projections have biases (qwen2).
    pub qkv_bias: bool,
    /// Linear RoPE scaling factor, if any.
    pub rope_scaling_linear: Option<f32>,
    /// BOS / EOS token ids from config.json, if given.
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: Option<bool>,
    rope_scaling: Option<serde_json::Value>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn first_id(v: &Option<serde_json::Value>) -> Option<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

impl ModelConfig {
    /// Reads `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_hf_json(path, &text)
    }

    /// Parses config.json text (`path` names it in errors).
    pub fn from_hf_json(path: &Path, text: &str) -> Result<Self> {
        let c: HfConfig = serde_json::from_str(text)
            .map_err(|e| Error::format(path, format!("not a valid config.json: {e}")))?;
        let mt = c
            .model_type
            .as_deref()
            .ok_or_else(|| Error::format(path, "no model_type"))?;
        let arch = match mt {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(Error::unsupported(
                    path,
                    format!("model_type `{other}` is not supported (kiln converts: {SUPPORTED_MODEL_TYPES})"),
                ))
            }
        };
        let need = |v: Option<usize>, k: &str| {
            v.ok_or_else(|| Error::format(path, format!("missing `{k}`")))
        };
        let hidden_size = need(c.hidden_size, "hidden_size")?;
        let n_heads = need(c.num_attention_heads, "num_attention_heads")?;
        let rope_scaling_linear = match &c.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let ty = v
                    .get("type")
                    .or_else(|| v.get("rope_type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                let factor = v.get("factor").and_then(|f| f.as_f64());
                match (ty, factor) {
                    ("linear", Some(f)) => Some(f as f32),
                    _ => {
                        return Err(Error::unsupported(
                            path,
                            format!(
                                "rope_scaling {v} is not supported (kiln handles none or linear)"
                            ),
                        ))
                    }
                }
            }
        };
        let cfg = ModelConfig {
            arch,
            hidden_size,
            intermediate_size: need(c.intermediate_size, "intermediate_size")?,
            n_layers: need(c.num_hidden_layers, "num_hidden_layers")?,
            n_heads,
            n_kv_heads: c.num_key_value_heads.unwrap_or(n_heads),
            head_dim: c
                .head_dim
                .unwrap_or(hidden_size.checked_div(n_heads).unwrap_or(0)),
            vocab_size: need(c.vocab_size, "vocab_size")?,
            context_length: c.max_position_embeddings.unwrap_or(2048),
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: c.rope_theta.unwrap_or(10000.0) as f32,
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2 || c.attention_bias.unwrap_or(false),
            rope_scaling_linear,
            bos_token_id: first_id(&c.bos_token_id),
            eos_token_id: first_id(&c.eos_token_id),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks the numbers fit together.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::format(path, m));
        let dims = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.n_layers),
            ("num_attention_heads", self.n_heads),
            ("num_key_value_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
        ];
        for (k, v) in dims {
            if v == 0 || v > 1 << 24 {
                return bad(format!("{k} = {v} is out of range"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} is odd: RoPE rotates pairs",
                self.head_dim
            ));
        }
        if !(self.rms_norm_eps.is_finite()
            && self.rms_norm_eps > 0.0
            && self.rope_theta.is_finite()
            && self.rope_theta > 0.0)
        {
            return bad("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Reads the hyper-parameters from GGUF metadata (`path` names the file in errors).
    pub fn from_gguf(path: &Path, md: &Metadata) -> Result<Self> {
        let arch_name = md
            .str("general.architecture")
            .ok_or_else(|| Error::format(path, "no general.architecture"))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(Error::unsupported(
                    path,
                    format!("architecture `{other}` is not supported (kiln runs llama and qwen2)"),
                ))
            }
        };
        let a = arch.gguf_arch();
        let u = |k: &str| {
            md.u64(&format!("{a}.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| Error::format(path, format!("missing {a}.{k}")))
        };
        let hidden_size = u("embedding_length")?;
        let n_heads = u("attention.head_count")?;
        let vocab_size = match md.u64(&format!("{a}.vocab_size")) {
            Some(v) => v as usize,
            None => md
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(|t| t.len())
                .ok_or_else(|| Error::format(path, format!("missing {a}.vocab_size")))?,
        };
        let head_dim = md
            .u64(&format!("{a}.attention.key_length"))
            .or_else(|| md.u64(&format!("{a}.rope.dimension_count")))
            .map(|v| v as usize)
            .unwrap_or(hidden_size / n_heads.max(1));
        let cfg = ModelConfig {
            arch,
            hidden_size,
            intermediate_size: u("feed_forward_length")?,
            n_layers: u("block_count")?,
            n_heads,
            n_kv_heads: md
                .u64(&format!("{a}.attention.head_count_kv"))
                .map(|v| v as usize)
                .unwrap_or(n_heads),
            head_dim,
            vocab_size,
            context_length: u("context_length")?,
            rms_norm_eps: md
                .f64(&format!("{a}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f32,
            rope_theta: md.f64(&format!("{a}.rope.freq_base")).unwrap_or(10000.0) as f32,
            tie_word_embeddings: false,
            qkv_bias: arch == Arch::Qwen2,
            rope_scaling_linear: match md.str(&format!("{a}.rope.scaling.type")) {
                Some("linear") => md
                    .f64(&format!("{a}.rope.scaling.factor"))
                    .map(|f| f as f32),
                _ => None,
            },
            bos_token_id: md.u64("tokenizer.ggml.bos_token_id").map(|v| v as u32),
            eos_token_id: md.u64("tokenizer.ggml.eos_token_id").map(|v| v as u32),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The `<arch>.*` keys llama.cpp reads.
    pub fn to_gguf(&self, md: &mut Metadata) {
        let a = self.arch.gguf_arch();
        let k = |s: &str| format!("{a}.{s}");
        md.set(k("context_length"), Value::U32(self.context_length as u32));
        md.set(k("embedding_length"), Value::U32(self.hidden_size as u32));
        md.set(k("block_count"), Value::U32(self.n_layers as u32));
        md.set(
            k("feed_forward_length"),
            Value::U32(self.intermediate_size as u32),
        );
        md.set(k("attention.head_count"), Value::U32(self.n_heads as u32));
        md.set(
            k("attention.head_count_kv"),
            Value::U32(self.n_kv_heads as u32),
        );
        md.set(k("rope.freq_base"), Value::F32(self.rope_theta));
        md.set(
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(self.rms_norm_eps),
        );
        if self.head_dim != self.hidden_size / self.n_heads {
            md.set(k("attention.key_length"), Value::U32(self.head_dim as u32));
            md.set(
                k("attention.value_length"),
                Value::U32(self.head_dim as u32),
            );
        }
        md.set(k("vocab_size"), Value::U32(self.vocab_size as u32));
        md.set(k("rope.dimension_count"), Value::U32(self.head_dim as u32));
        if let Some(f) = self.rope_scaling_linear {
            md.set(k("rope.scaling.type"), Value::String("linear".into()));
            md.set(k("rope.scaling.factor"), Value::F32(f));
        }
    }

    /// A Hugging Face config.json for this model (FP32).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [self.arch.hf_class()],
            "model_type": self.arch.model_type(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.context_length,
            "rms_norm_eps": self.rms_norm_eps as f64,
            "rope_theta": self.rope_theta as f64,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        let o = v.as_object_mut().unwrap();
        if let Some(b) = self.bos_token_id {
            o.insert("bos_token_id".into(), b.into());
        }
        if let Some(e) = self.eos_token_id {
            o.insert("eos_token_id".into(), e.into());
        }
        if let Some(f) = self.rope_scaling_linear {
            o.insert(
                "rope_scaling".into(),
                serde_json::json!({"type": "linear", "factor": f}),
            );
        }
        if self.arch == Arch::Llama && self.qkv_bias {
            o.insert("attention_bias".into(), true.into());
        }
        v
    }
}
