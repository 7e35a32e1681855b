//! Model hyper-parameters: read from a Hugging Face `config.json` or from GGUF metadata, and
//! written back as either. What each architecture reads and writes is in its module under
//! [`crate::arch`]; this file holds the shared configuration type, the strict config.json
//! reader every family uses, and the GGUF keys all families share.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value as Json};

pub use crate::arch::{supported_model_types, Arch};
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value};

/// The gate activation of the feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// SiLU (SwiGLU).
    #[default]
    Silu,
    /// GELU, tanh approximation (GeGLU, Hugging Face's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// The hyper-parameters of a model, and the switches of kiln's forward pass its architecture
/// sets.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Model width (embedding length).
    pub hidden_size: usize,
    /// Feed-forward inner width.
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
    /// RoPE base frequency (of the global layers, where they differ).
    pub rope_theta: f32,
    /// Linear RoPE scaling factor of the global layers, if any.
    pub rope_scaling_linear: Option<f32>,
    /// True when the output projection is the embedding (no `output.weight`).
    pub tie_word_embeddings: bool,
    /// True when q/k/v projections have biases (qwen2).
    pub qkv_bias: bool,
    /// BOS / EOS token ids from config.json, if given.
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Feed-forward gate activation.
    pub act: Activation,
    /// Post-attention and post-feed-forward RMSNorms (Gemma 2/3).
    pub post_norms: bool,
    /// Per-head RMSNorm of q and k before RoPE (Gemma 3, Qwen3).
    pub qk_norm: bool,
    /// Embeddings multiplied by this (Gemma: √hidden_size).
    pub embed_scale: Option<f32>,
    /// `q·k` scaled by this^−½ (Gemma's `query_pre_attn_scalar`); `None`: head_dim.
    pub query_pre_attn_scalar: Option<f64>,
    /// Final logits soft-capped to ±this (`c·tanh(x/c)`).
    pub final_logit_softcap: Option<f32>,
    /// Sliding-window length of the windowed layers (their query sees this many positions,
    /// its own included).
    pub sliding_window: Option<usize>,
    /// `swa_layers[l]`: layer `l` is windowed (empty: no layer is).
    pub swa_layers: Vec<bool>,
    /// RoPE base of the windowed layers (they use no RoPE scaling).
    pub rope_theta_swa: Option<f32>,
    /// Llama 3's RoPE frequency scaling (`rope_scaling.rope_type = llama3`), as config.json
    /// gives it; `None` from a GGUF whose factors match no parameters kiln can name.
    pub rope_llama3: Option<Llama3Rope>,
    /// Divisors of each rotated pair's RoPE frequency: llama.cpp's `rope_freqs.weight`
    /// (from `rope_llama3`, or read from a GGUF).
    pub rope_freq_factors: Option<Vec<f32>>,
    /// `no_rope_layers[l]`: layer `l` applies no RoPE (SmolLM3); empty: every layer rotates.
    pub no_rope_layers: Vec<bool>,
    /// config.json names `head_dim` (llama.cpp's converter then writes
    /// `attention.key_length` / `value_length` whatever their value).
    pub head_dim_key: bool,
    /// Dimensions of each head RoPE rotates when not all of them (partial rotary: Phi-4-mini's
    /// `partial_rotary_factor`, llama.cpp's `rope.dimension_count`).
    pub rotary_dims: Option<usize>,
    /// LongRoPE (Phi-3's `rope_scaling` type `longrope`): llama.cpp's `rope_factors_long` /
    /// `rope_factors_short` and `rope.scaling.attn_factor`.
    pub longrope: Option<LongRope>,
    /// The context the model was pre-trained at (`original_max_position_embeddings`,
    /// llama.cpp's `rope.scaling.original_context_length`): LongRoPE's long factors apply
    /// beyond it.
    pub original_context_length: Option<usize>,
}

/// LongRoPE's frequency divisors (one per rotated pair) and the factor cos and sin are
/// multiplied by (`_compute_longrope_parameters` of transformers' `modeling_rope_utils.py`).
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    pub long: Vec<f32>,
    pub short: Vec<f32>,
    pub attn_factor: f32,
}

/// Llama 3's RoPE scaling parameters (`_compute_llama3_parameters` of transformers'
/// `modeling_rope_utils.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Rope {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

impl Llama3Rope {
    /// The frequency divisors of the `dim / 2` rotated pairs for base `theta`, as
    /// `LlamaModel.generate_extra_tensors` of llama.cpp's converter computes `rope_freqs` (in
    /// float32, as its torch tensors: frequency `1 / base^(2i/dim)`, wavelength `2π / f`; 1
    /// above the high-frequency wavelength, `factor` below the low one, and between them
    /// `1 / ((1 − s) / factor + s)` with `s = (L / wavelength − low) / (high − low)`).
    /// The power is rounded once from f64 (torch's float32 `pow` is within an ulp of it).
    pub fn factors(&self, theta: f32, dim: usize) -> Vec<f32> {
        let old = self.original_max_position_embeddings as f64;
        let low_wavelen = (old / self.low_freq_factor) as f32;
        let high_wavelen = (old / self.high_freq_factor) as f32;
        let factor = self.factor as f32;
        let (low, span) = (
            self.low_freq_factor as f32,
            (self.high_freq_factor - self.low_freq_factor) as f32,
        );
        (0..dim / 2)
            .map(|i| {
                let e = (2 * i) as f32 / dim as f32;
                let freq = 1.0f32 / (theta as f64).powf(e as f64) as f32;
                let wavelen = std::f64::consts::TAU as f32 / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (old as f32 / wavelen - low) / span;
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }
            })
            .collect()
    }

    /// The parameters of Meta's Llama 3.x releases whose factors for `theta`, `dim` are `ff`
    /// (the converter writes only the factors, so an export names them back): exactly, or
    /// within 4 ulp where another float32 `pow` computed the frequencies.
    pub fn from_factors(ff: &[f32], theta: f32, dim: usize) -> Option<Llama3Rope> {
        let factor = ff.iter().copied().fold(1.0f32, f32::max) as f64;
        [(1.0, 4.0, 8192usize), (1.0, 4.0, 4096), (1.0, 2.0, 8192)]
            .into_iter()
            .map(|(low, high, old)| Llama3Rope {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: old,
            })
            .find(|p| {
                let mine = p.factors(theta, dim);
                mine.len() == ff.len()
                    && mine
                        .iter()
                        .zip(ff)
                        .all(|(a, b)| (a.to_bits() as i64 - b.to_bits() as i64).abs() <= 4)
            })
    }
}

impl ModelConfig {
    /// A configuration with the Llama defaults for everything the numbers do not say.
    #[allow(clippy::too_many_arguments)]
    pub fn base(
        arch: Arch,
        hidden_size: usize,
        intermediate_size: usize,
        n_layers: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        vocab_size: usize,
    ) -> Self {
        ModelConfig {
            arch,
            hidden_size,
            intermediate_size,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling_linear: None,
            tie_word_embeddings: false,
            qkv_bias: false,
            bos_token_id: None,
            eos_token_id: None,
            act: Activation::Silu,
            post_norms: false,
            qk_norm: false,
            embed_scale: None,
            query_pre_attn_scalar: None,
            final_logit_softcap: None,
            sliding_window: None,
            swa_layers: Vec::new(),
            rope_theta_swa: None,
            rope_llama3: None,
            rope_freq_factors: None,
            no_rope_layers: Vec::new(),
            head_dim_key: false,
            rotary_dims: None,
            longrope: None,
            original_context_length: None,
        }
    }

    /// Reads `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_hf_json(path, &text)
    }

    /// Parses config.json text (`path` names it in errors): the `model_type` picks the
    /// architecture, whose module reads the rest.
    pub fn from_hf_json(path: &Path, text: &str) -> Result<Self> {
        let v: Json = serde_json::from_str(text)
            .map_err(|e| Error::format(path, format!("not a valid config.json: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::format(path, "not a valid config.json: not a JSON object"))?;
        let cfg = HfJson::new(path, obj);
        let mt = cfg
            .str("model_type")?
            .ok_or_else(|| Error::format(path, "no model_type"))?;
        let arch = Arch::from_model_type(mt).ok_or_else(|| {
            Error::unsupported(
                path,
                format!(
                    "model_type `{mt}` is not supported (kiln converts: {})",
                    supported_model_types()
                ),
            )
        })?;
        let c = arch.family().read_hf(&cfg)?;
        cfg.finish(mt)?;
        c.validate(path)?;
        Ok(c)
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
        let rd = self.rotated_dims();
        if rd == 0 || rd > self.head_dim || !rd.is_multiple_of(2) {
            return bad(format!(
                "RoPE rotates {rd} dimensions of heads of {}: needs an even number, at most the head",
                self.head_dim
            ));
        }
        if let Some(l) = &self.longrope {
            for (k, f) in [("long_factor", &l.long), ("short_factor", &l.short)] {
                if f.len() != rd / 2 {
                    return bad(format!(
                        "LongRoPE's {k} holds {} factors; {rd} rotated dimensions make {} pairs",
                        f.len(),
                        rd / 2
                    ));
                }
            }
        }
        if !(self.rms_norm_eps.is_finite()
            && self.rms_norm_eps > 0.0
            && self.rope_theta.is_finite()
            && self.rope_theta > 0.0)
        {
            return bad("rms_norm_eps and rope_theta must be positive".into());
        }
        if let Some(t) = self.rope_theta_swa {
            if !(t.is_finite() && t > 0.0) {
                return bad(format!(
                    "the sliding-window layers' RoPE base {t} must be positive"
                ));
            }
        }
        if let Some(f) = self.rope_scaling_linear {
            if !(f.is_finite() && f > 0.0) {
                return bad(format!("the RoPE scaling factor {f} must be positive"));
            }
        }
        match self.sliding_window {
            Some(0) => return bad("sliding_window = 0".into()),
            Some(_) if self.swa_layers.len() != self.n_layers => {
                return bad(format!(
                    "{} layer types for {} layers",
                    self.swa_layers.len(),
                    self.n_layers
                ))
            }
            None if self.swa_layers.iter().any(|&s| s) => {
                return bad("sliding-window layers without a sliding_window".into())
            }
            _ => {}
        }
        for (what, v) in [
            ("final_logit_softcapping", self.final_logit_softcap),
            ("the embedding scale", self.embed_scale),
        ] {
            if let Some(x) = v {
                if !(x.is_finite() && x > 0.0) {
                    return bad(format!("{what} {x} must be positive"));
                }
            }
        }
        if let Some(q) = self.query_pre_attn_scalar {
            if !(q.is_finite() && q > 0.0) {
                return bad(format!("query_pre_attn_scalar {q} must be positive"));
            }
        }
        Ok(())
    }

    /// Reads the hyper-parameters from GGUF metadata (`path` names the file in errors).
    pub fn from_gguf(path: &Path, md: &Metadata) -> Result<Self> {
        let arch_name = md
            .str("general.architecture")
            .ok_or_else(|| Error::format(path, "no general.architecture"))?;
        let arch = Arch::from_gguf_arch(arch_name).ok_or_else(|| {
            Error::unsupported(
                path,
                format!(
                    "general.architecture = `{arch_name}` is not supported (kiln runs: {})",
                    crate::arch::supported_gguf_archs()
                ),
            )
        })?;
        let cfg = arch.family().read_gguf(path, md)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// The configuration of a GGUF file: its metadata, whether the output projection is tied
    /// to the embedding, and the RoPE frequency factors of `rope_freqs.weight`.
    pub fn from_gguf_file(file: &crate::gguf::GgufFile) -> Result<Self> {
        let path = file.path();
        let mut c = Self::from_gguf(path, &file.metadata)?;
        c.tie_word_embeddings = file.tensor("output.weight").is_none();
        let rd = c.rotated_dims();
        let pairs = rd / 2;
        let factors = |name: &str| -> Result<Option<Vec<f32>>> {
            let Some(t) = file.tensor(name) else {
                return Ok(None);
            };
            let ff = file.tensor_f32(t)?;
            if ff.len() != pairs {
                return Err(Error::tensor(
                    path,
                    name,
                    format!(
                        "holds {} factors; {rd} rotated dimensions make {pairs} pairs",
                        ff.len()
                    ),
                ));
            }
            Ok(Some(ff))
        };
        if let Some(ff) = factors(crate::arch::ROPE_FREQS)? {
            c.rope_llama3 = Llama3Rope::from_factors(&ff, c.rope_theta, c.head_dim);
            c.rope_freq_factors = Some(ff);
        }
        let (long, short) = (
            factors(crate::arch::ROPE_FACTORS_LONG)?,
            factors(crate::arch::ROPE_FACTORS_SHORT)?,
        );
        match (long, short) {
            (None, None) => {}
            (Some(long), Some(short)) => {
                let key = format!("{}.rope.scaling.attn_factor", c.arch.gguf_arch());
                c.longrope = Some(LongRope {
                    long,
                    short,
                    attn_factor: file.metadata.f64(&key).unwrap_or(1.0) as f32,
                })
            }
            _ => {
                return Err(Error::format(
                    path,
                    "LongRoPE needs both rope_factors_long.weight and rope_factors_short.weight",
                ))
            }
        }
        c.validate(path)?;
        Ok(c)
    }

    /// The `<arch>.*` keys llama.cpp reads.
    pub fn to_gguf(&self, md: &mut Metadata) {
        self.arch.family().to_gguf(self, md)
    }

    /// A Hugging Face config.json for this model (FP32).
    pub fn to_hf_json(&self) -> serde_json::Value {
        self.arch.family().to_hf_json(self)
    }

    /// Dimensions of each head RoPE rotates.
    pub fn rotated_dims(&self) -> usize {
        self.rotary_dims.unwrap_or(self.head_dim)
    }

    /// The multiplier of `q·k` in attention.
    pub fn attention_scale(&self) -> f32 {
        match self.query_pre_attn_scalar {
            Some(q) => q.powf(-0.5) as f32,
            None => 1.0 / (self.head_dim as f32).sqrt(),
        }
    }
}

/// Keys every config.json may carry that do not change a causal LM's function: Hugging
/// Face's `PretrainedConfig` bookkeeping, training-only settings and generation defaults.
pub const INERT_KEYS: &[&str] = &[
    "_name_or_path",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "_commit_hash",
    "add_cross_attention",
    "architectures",
    "attention_dropout",
    "auto_map",
    "bad_words_ids",
    "begin_suppress_tokens",
    "chunk_size_feed_forward",
    "cross_attention_hidden_size",
    "decoder_start_token_id",
    "diversity_penalty",
    "do_sample",
    "dtype",
    "early_stopping",
    "encoder_no_repeat_ngram_size",
    "exponential_decay_length_penalty",
    "finetuning_task",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "id2label",
    "initializer_range",
    "is_decoder",
    "is_encoder_decoder",
    "label2id",
    "length_penalty",
    "max_length",
    "min_length",
    "no_repeat_ngram_size",
    "num_beam_groups",
    "num_beams",
    "num_return_sequences",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "pad_token_id",
    "prefix",
    "problem_type",
    "pruned_heads",
    "remove_invalid_values",
    "repetition_penalty",
    "return_dict",
    "return_dict_in_generate",
    "sep_token_id",
    "suppress_tokens",
    "task_specific_params",
    "temperature",
    "tf_legacy_loss",
    "tie_encoder_decoder",
    "tokenizer_class",
    "top_k",
    "top_p",
    "torch_dtype",
    "torchscript",
    "transformers_version",
    "typical_p",
    "use_bfloat16",
    "use_cache",
    "use_return_dict",
];

/// A config.json object read strictly: every key a family looks at is marked, and
/// [`HfJson::finish`] names any key nobody looked at — kiln never ignores a setting silently.
pub struct HfJson<'a> {
    path: &'a Path,
    obj: &'a Map<String, Json>,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> HfJson<'a> {
    /// Wraps a parsed config.json.
    pub fn new(path: &'a Path, obj: &'a Map<String, Json>) -> Self {
        HfJson {
            path,
            obj,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// The file, for errors.
    pub fn path(&self) -> &Path {
        self.path
    }

    fn mark(&self, k: &str) {
        self.used.borrow_mut().insert(k.to_string());
    }

    /// The raw value of `k` (null counts as absent), marked as read.
    pub fn get(&self, k: &str) -> Option<&'a Json> {
        self.mark(k);
        self.obj.get(k).filter(|v| !v.is_null())
    }

    /// True when `k` is present and not null (marks it read).
    pub fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    fn bad(&self, k: &str, v: &Json, want: &str) -> Error {
        Error::format(self.path, format!("`{k}` = {v} is not {want}"))
    }

    /// A non-negative integer.
    pub fn usize(&self, k: &str) -> Result<Option<usize>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.bad(k, v, "a non-negative integer")),
        }
    }

    /// A required non-negative integer.
    pub fn need_usize(&self, k: &str) -> Result<usize> {
        self.usize(k)?
            .ok_or_else(|| Error::format(self.path, format!("missing `{k}`")))
    }

    /// A number.
    pub fn f64(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(k, v, "a number")),
        }
    }

    /// A boolean.
    pub fn bool(&self, k: &str) -> Result<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(k, v, "true or false")),
        }
    }

    /// A string.
    pub fn str(&self, k: &str) -> Result<Option<&'a str>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(k, v, "a string")),
        }
    }

    /// The first id of a token-id key (a number or a list of numbers).
    pub fn token_id(&self, k: &str) -> Option<u32> {
        match self.get(k) {
            Some(Json::Number(n)) => n.as_u64().map(|x| x as u32),
            Some(Json::Array(a)) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
            _ => None,
        }
    }

    /// Marks keys that do not change the function (bookkeeping, training-only settings).
    pub fn inert(&self, keys: &[&str]) {
        for k in keys {
            self.mark(k);
        }
    }

    /// A key that would change the function in a way kiln does not implement: accepted only
    /// when absent, null, or one of the `neutral` values (compared as JSON).
    pub fn neutral(&self, k: &str, neutral: &[Json]) -> Result<()> {
        match self.get(k) {
            None => Ok(()),
            Some(v) if neutral.contains(v) => Ok(()),
            Some(v) => Err(Error::unsupported(
                self.path,
                format!(
                    "`{k}` = {v} changes the model in a way kiln does not implement{}",
                    match neutral {
                        [] => String::new(),
                        [one] => format!(" (kiln runs {k} = {one})"),
                        many => format!(
                            " (kiln runs {k} = {})",
                            many.iter()
                                .map(|v| v.to_string())
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    }
                ),
            )),
        }
    }

    /// Refuses every key nobody read, named with its value.
    pub fn finish(&self, model_type: &str) -> Result<()> {
        self.inert(INERT_KEYS);
        let used = self.used.borrow();
        let unknown: Vec<String> = self
            .obj
            .iter()
            .filter(|(k, _)| !used.contains(k.as_str()))
            .map(|(k, v)| {
                let s = v.to_string();
                let s = if s.len() > 60 {
                    format!("{}…", &s[..s.floor_char_boundary(60)])
                } else {
                    s
                };
                format!("`{k}` = {s}")
            })
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Error::unsupported(
                self.path,
                format!(
                    "config.json sets {} that kiln does not implement for model_type `{model_type}`; \
                     kiln refuses rather than ignore a setting that may change the model",
                    unknown.join(", ")
                ),
            ))
        }
    }
}

/// A RoPE scaling of config.json.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// None (absent, null or type `default`).
    None,
    /// Positions divided by the factor.
    Linear(f32),
    /// Llama 3's frequency scaling.
    Llama3(Llama3Rope),
    /// LongRoPE (Phi-3): divisors for long and short contexts.
    LongRope { long: Vec<f32>, short: Vec<f32> },
}

/// The RoPE scaling of a `rope_scaling` / `rope_parameters` object, checked key by key (a key
/// kiln does not read is an error naming it, as is an unsupported type — with the types kiln
/// handles). `llama3` is accepted only where `allow_llama3` (the architectures whose llama.cpp
/// graph reads `rope_freqs.weight`).
pub fn rope_scaling(
    cfg: &HfJson,
    key: &str,
    v: Option<&Json>,
    extra: &[&str],
) -> Result<RopeScaling> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let ty = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("");
    let handled = ["none", "default", "linear"]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let unsupported = || {
        Error::unsupported(
            cfg.path(),
            format!("`{key}` = {v}: RoPE scaling type `{ty}` is not supported (kiln handles: {handled})"),
        )
    };
    let known: &[&str] = match ty {
        "default" => &[],
        "linear" => &["factor"],
        "llama3" if extra.contains(&"llama3") => &[
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ],
        // Phi-3's configuration takes exactly these (`Phi3Config._rope_scaling_validation`),
        // `su` being LongRoPE's old name. Its `yarn` alias is refused: transformers runs it as
        // LongRoPE, llama.cpp's converter as YaRN's attention factor.
        "longrope" | "su" if extra.contains(&"longrope") => &["long_factor", "short_factor"],
        _ => return Err(unsupported()),
    };
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            if !matches!(k.as_str(), "rope_type" | "type" | "rope_theta")
                && !known.contains(&k.as_str())
            {
                return Err(Error::unsupported(
                    cfg.path(),
                    format!("`{key}.{k}` = {x} is not a key kiln reads for RoPE scaling type `{ty}` (it reads: {})", known.join(", ")),
                ));
            }
        }
    }
    let num = |k: &str| -> Result<f64> {
        v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
            Error::format(
                cfg.path(),
                format!("`{key}` of type `{ty}` needs a number `{k}`"),
            )
        })
    };
    let list = |k: &str| -> Result<Vec<f32>> {
        v.get(k)
            .and_then(|x| x.as_array())
            .and_then(|a| a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect())
            .filter(|l: &Vec<f32>| l.iter().all(|f| f.is_finite() && *f > 0.0))
            .ok_or_else(|| {
                Error::format(
                    cfg.path(),
                    format!("`{key}` of type `{ty}` needs `{k}`: a list of positive numbers"),
                )
            })
    };
    Ok(match ty {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear(num("factor")? as f32),
        "longrope" | "su" => RopeScaling::LongRope {
            long: list("long_factor")?,
            short: list("short_factor")?,
        },
        _ => {
            let p = Llama3Rope {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            };
            if p.high_freq_factor <= p.low_freq_factor || p.factor < 1.0 {
                return Err(Error::format(
                    cfg.path(),
                    format!("`{key}` = {v}: llama3 scaling needs high_freq_factor > low_freq_factor and factor ≥ 1"),
                ));
            }
            RopeScaling::Llama3(p)
        }
    })
}

/// [`rope_scaling`] for the architectures that take only linear scaling: `None` or the factor.
pub fn rope_scaling_linear(cfg: &HfJson, key: &str, v: Option<&Json>) -> Result<Option<f32>> {
    Ok(match rope_scaling(cfg, key, v, &[])? {
        RopeScaling::Linear(f) => Some(f),
        _ => None,
    })
}

/// Reads the GGUF keys every family shares; the family adds its own.
pub(crate) fn gguf_common(path: &Path, md: &Metadata, arch: Arch) -> Result<ModelConfig> {
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
    // llama.cpp: n_embd_head_k = key_length or n_embd / n_head; n_rot = dimension_count or
    // n_embd_head_k.
    let head_dim = md
        .u64(&format!("{a}.attention.key_length"))
        .map(|v| v as usize)
        .unwrap_or(hidden_size / n_heads.max(1));
    if let Some(v) = md.u64(&format!("{a}.attention.value_length")) {
        if v as usize != head_dim {
            return Err(Error::unsupported(
                path,
                format!("{a}.attention.value_length = {v} differs from the key length {head_dim} (kiln runs equal widths)"),
            ));
        }
    }
    let mut c = ModelConfig::base(
        arch,
        hidden_size,
        u("feed_forward_length")?,
        u("block_count")?,
        n_heads,
        md.u64(&format!("{a}.attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_heads),
        head_dim,
        vocab_size,
    );
    c.context_length = u("context_length")?;
    c.rms_norm_eps = md
        .f64(&format!("{a}.attention.layer_norm_rms_epsilon"))
        .unwrap_or(1e-5) as f32;
    c.rope_theta = md.f64(&format!("{a}.rope.freq_base")).unwrap_or(10000.0) as f32;
    c.rope_scaling_linear = match md.str(&format!("{a}.rope.scaling.type")) {
        None | Some("none") => None,
        Some("linear") => md
            .f64(&format!("{a}.rope.scaling.factor"))
            .filter(|&f| f != 1.0)
            .map(|f| f as f32),
        Some(other) => {
            return Err(Error::unsupported(
                path,
                format!(
                "{a}.rope.scaling.type = `{other}` is not supported (kiln handles: none, linear)"
            ),
            ))
        }
    };
    if let Some(d) = md.u64(&format!("{a}.rope.dimension_count")) {
        if d as usize != head_dim {
            if !arch.family().partial_rotary() {
                return Err(Error::unsupported(
                    path,
                    format!("{a}.rope.dimension_count = {d} rotates part of a head of {head_dim} (kiln rotates part of a head only for: phi3)"),
                ));
            }
            c.rotary_dims = Some(d as usize);
        }
    }
    c.bos_token_id = md.u64("tokenizer.ggml.bos_token_id").map(|v| v as u32);
    c.eos_token_id = md.u64("tokenizer.ggml.eos_token_id").map(|v| v as u32);
    Ok(c)
}

/// Writes the GGUF keys every family shares (as `TextModel.set_gguf_parameters` does).
pub(crate) fn gguf_common_keys(c: &ModelConfig, md: &mut Metadata) {
    let a = c.arch.gguf_arch();
    let k = |s: &str| format!("{a}.{s}");
    md.set(k("context_length"), Value::U32(c.context_length as u32));
    md.set(k("embedding_length"), Value::U32(c.hidden_size as u32));
    md.set(k("block_count"), Value::U32(c.n_layers as u32));
    md.set(
        k("feed_forward_length"),
        Value::U32(c.intermediate_size as u32),
    );
    md.set(k("attention.head_count"), Value::U32(c.n_heads as u32));
    md.set(
        k("attention.head_count_kv"),
        Value::U32(c.n_kv_heads as u32),
    );
    md.set(k("rope.freq_base"), Value::F32(c.rope_theta));
    md.set(
        k("attention.layer_norm_rms_epsilon"),
        Value::F32(c.rms_norm_eps),
    );
}

#[cfg(test)]
mod tests {
    use super::Llama3Rope;

    #[test]
    fn llama3_factors_span_the_three_regimes_and_name_their_parameters_back() {
        // Llama 3.1 8B: base 500000, heads of 128, factor 8, low 1, high 4, 8192.
        let p = Llama3Rope {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let ff = p.factors(500_000.0, 128);
        assert_eq!(ff.len(), 64);
        // High frequencies (wavelength < 2048) unscaled, low ones (> 8192) divided by 8,
        // the band between interpolated monotonically.
        let wavelen = |i: usize| std::f64::consts::TAU * 500_000f64.powf(2.0 * i as f64 / 128.0);
        for (i, &f) in ff.iter().enumerate() {
            match wavelen(i) {
                w if w < 2048.0 => assert_eq!(f, 1.0, "{i}"),
                w if w > 8192.0 => assert_eq!(f, 8.0, "{i}"),
                _ => assert!(f > 1.0 && f < 8.0, "{i}: {f}"),
            }
        }
        assert!(ff.windows(2).all(|w| w[0] <= w[1]));
        assert!(ff.iter().any(|&f| f > 1.0 && f < 8.0));
        assert_eq!(Llama3Rope::from_factors(&ff, 500_000.0, 128), Some(p));
        // A factor an ulp away (another float32 pow) still names them; a different set not.
        let mut near = ff.clone();
        let i = ff.iter().position(|&f| f > 1.0 && f < 8.0).unwrap();
        near[i] = f32::from_bits(near[i].to_bits() + 1);
        assert_eq!(Llama3Rope::from_factors(&near, 500_000.0, 128), Some(p));
        let mut far = ff.clone();
        far[i] *= 1.01;
        assert_eq!(Llama3Rope::from_factors(&far, 500_000.0, 128), None);
    }
}
