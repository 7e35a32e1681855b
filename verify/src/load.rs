//! Loading a model for kiln's kernel: a GGUF file (memory-mapped, zero-copy, any tensor types)
//! or a Hugging Face checkpoint directory (memory-mapped safetensors run as stored — F32, F16
//! or BF16 — in Hugging Face layout with rotate-half RoPE, no GGUF written first).

use std::path::Path;
use std::sync::Arc;

use convert::arch::Transform;
use convert::lora::{LoraAdapter, LoraSpec};
use convert::source::{HfCheckpoint, ModelSource};
use convert::{Activation, GgmlType, ModelConfig};
use kernels::{Config, Layer, LongRope, Model, RopeStyle, SlidingWindow, Storage, Weight};

/// What can go wrong loading.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Convert(#[from] convert::Error),
    #[error("{path}: {source}")]
    Weight {
        path: String,
        source: kernels::model::WeightError,
    },
    #[error("{path}: tensor `{tensor}` is missing")]
    Missing { path: String, tensor: String },
}

/// File `.1` of a model source: of a GGUF model (one file, or one of a split model's), or a
/// checkpoint's safetensors file.
struct SourceStorage(Arc<ModelSource>, usize);
impl Storage for SourceStorage {
    fn bytes(&self) -> &[u8] {
        match &*self.0 {
            ModelSource::Gguf(g) => g.file.parts()[self.1].bytes(),
            ModelSource::Hf(h) => h.files()[self.1].bytes(),
        }
    }
}

/// LoRA adapters of a load.
#[derive(Debug, Clone, Default)]
pub struct LoraLoad {
    /// Merged into the weights as they are read (`W + s·B·A` in f32): the fine-tuned model
    /// itself, as a reference.
    pub merge: Vec<LoraSpec>,
    /// Applied at run time to the matmuls (`W·x + s·B·(A·x)`), as llama.cpp's `--lora` does.
    pub runtime: Vec<LoraSpec>,
}

impl LoraLoad {
    /// `specs` merged into the weights, nothing at run time.
    pub fn merged(specs: &[LoraSpec]) -> Self {
        LoraLoad {
            merge: specs.to_vec(),
            runtime: Vec::new(),
        }
    }

    /// `specs` applied at run time, nothing merged.
    pub fn runtime(specs: &[LoraSpec]) -> Self {
        LoraLoad {
            merge: Vec::new(),
            runtime: specs.to_vec(),
        }
    }
}

/// The kernel's switches for a configuration, as its architecture's module set them.
pub fn kernel_config(c: &ModelConfig, rope_style: RopeStyle) -> Config {
    Config {
        dim: c.hidden_size,
        ffn_dim: c.intermediate_size,
        n_layers: c.n_layers,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
        vocab: c.vocab_size,
        rms_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta,
        rope_scale: c.rope_scaling_linear.unwrap_or(1.0),
        rope_style,
        max_ctx: c.context_length,
        act: match c.act {
            Activation::Silu => kernels::Activation::Silu,
            Activation::GeluTanh => kernels::Activation::GeluTanh,
        },
        embed_scale: c.embed_scale.unwrap_or(1.0),
        attn_scale: c.query_pre_attn_scalar.map(|_| c.attention_scale()),
        final_softcap: c.final_logit_softcap,
        swa: c.sliding_window.map(|window| SlidingWindow {
            window,
            layers: c.swa_layers.clone(),
            // Local layers run unscaled RoPE with their own base (Gemma 3), or the global
            // base and scaling when the architecture has no separate one (Mistral).
            rope_theta: c.rope_theta_swa.unwrap_or(c.rope_theta),
            rope_scale: if c.rope_theta_swa.is_some() {
                1.0
            } else {
                c.rope_scaling_linear.unwrap_or(1.0)
            },
        }),
        rope_freq_factors: match &c.longrope {
            Some(l) => Some(l.short.clone()),
            None => c.rope_freq_factors.clone(),
        },
        no_rope: c.no_rope_layers.clone(),
        rope_dims: c.rotary_dims.unwrap_or(0),
        rope_mscale: c.longrope.as_ref().map_or(1.0, |l| l.attn_factor),
        rope_long: c.longrope.as_ref().map(|l| LongRope {
            factors: l.long.clone(),
            original_ctx: c.original_context_length.unwrap_or(c.context_length),
        }),
        fused_qkv: c.arch.family().fused(),
        fused_gate_up: c.arch.family().fused(),
    }
}

/// A loaded model and what it was loaded from.
pub struct Loaded {
    /// The model.
    pub model: Model,
    /// The source, for its metadata and tokenizer.
    pub source: Arc<ModelSource>,
}

/// Loads `path` (GGUF file or checkpoint directory).
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    load_with(path, &LoraLoad::default())
}

/// Loads `path` with LoRA adapters merged into its weights and/or applied at run time.
pub fn load_with(path: &Path, lora: &LoraLoad) -> Result<Loaded, LoadError> {
    let source = Arc::new(ModelSource::open_with_lora(path, &lora.merge)?);
    let mut model = match &*source {
        ModelSource::Gguf(_) => gguf_model(path, &source)?,
        ModelSource::Hf(_) => hf_model(path, &source)?,
    };
    let gguf_layout = matches!(&*source, ModelSource::Gguf(_));
    for spec in &lora.runtime {
        attach(&mut model, source.config(), spec, gguf_layout)?;
    }
    Ok(Loaded { model, source })
}

/// Adds an adapter's terms to the model's weights, to run at each matmul.
fn attach(
    m: &mut Model,
    c: &ModelConfig,
    spec: &LoraSpec,
    gguf_layout: bool,
) -> Result<(), LoadError> {
    let a = LoraAdapter::open(&spec.path, c)?;
    if !a.saved.is_empty() {
        return Err(LoadError::Convert(convert::Error::Unsupported {
            path: a.file_path().to_path_buf(),
            msg: format!(
                "replaces `{}` whole (modules_to_save), which only a merge applies (merge it with                  the model instead of at run time)",
                a.saved[0].hf
            ),
        }));
    }
    let missing = |t: &str| LoadError::Missing {
        path: a.path.display().to_string(),
        tensor: t.to_string(),
    };
    for t in &a.targets {
        let term = kernels::LoraTerm {
            row0: 0,
            rows: t.rows,
            rank: t.rank,
            a: a.a(t)?.into(),
            b: a.b(t, gguf_layout)?.into(),
            b_row0: 0,
            scale: t.scaling * spec.scale,
        };
        if t.gguf == "output.weight" {
            m.output
                .as_mut()
                .ok_or_else(|| missing(&t.gguf))?
                .lora
                .push(term);
            continue;
        }
        let (layer, name) = t
            .gguf
            .strip_prefix("blk.")
            .and_then(|s| s.split_once('.'))
            .and_then(|(l, n)| Some((l.parse::<usize>().ok()?, n.strip_suffix(".weight")?)))
            .ok_or_else(|| missing(&t.gguf))?;
        let config = m.config.clone();
        let l = m.layers.get_mut(layer).ok_or_else(|| missing(&t.gguf))?;
        let mut w = l.matrix(&config, name).ok_or_else(|| missing(&t.gguf))?;
        w.lora.push(term);
        if !l.set_matrix(&config, name, w) {
            return Err(missing(&t.gguf));
        }
    }
    Ok(())
}

fn build(
    c: &ModelConfig,
    rope: RopeStyle,
    path: &Path,
    mut get: impl FnMut(&str) -> Option<Result<Weight, kernels::model::WeightError>>,
) -> Result<Model, LoadError> {
    let p = path.display().to_string();
    let mut need = |name: &str| -> Result<Weight, LoadError> {
        match get(name) {
            Some(Ok(w)) => Ok(w),
            Some(Err(e)) => Err(LoadError::Weight {
                path: p.clone(),
                source: e,
            }),
            None => Err(LoadError::Missing {
                path: p.clone(),
                tensor: name.to_string(),
            }),
        }
    };
    let token_embd = need("token_embd.weight")?;
    let output = if c.tie_word_embeddings {
        None
    } else {
        Some(need("output.weight")?)
    };
    let output_norm = need("output_norm.weight")?.to_f32();
    let config = kernel_config(c, rope);
    let mut layers = Vec::with_capacity(c.n_layers);
    for i in 0..c.n_layers {
        let mut w = |s: &str| need(&format!("blk.{i}.{s}"));
        // Fused matrices (Phi-3) run as views of their rows; a wrong height is named as the
        // tensor it is.
        let misfit = |name: &str, w: &Weight| LoadError::Weight {
            path: p.clone(),
            source: kernels::model::WeightError {
                what: format!("blk.{i}.{name}"),
                msg: format!("has {} rows, which the config does not split", w.rows),
            },
        };
        let (wq, wk, wv, w_gate, w_up) = if config.fused_qkv {
            let qkv = w("attn_qkv.weight")?;
            let gu = w("ffn_up.weight")?;
            let [q, k, v] = config
                .split_qkv(&qkv)
                .ok_or_else(|| misfit("attn_qkv.weight", &qkv))?;
            let [g, u] = config
                .split_gate_up(&gu)
                .ok_or_else(|| misfit("ffn_up.weight", &gu))?;
            (q, k, v, g, u)
        } else {
            (
                w("attn_q.weight")?,
                w("attn_k.weight")?,
                w("attn_v.weight")?,
                w("ffn_gate.weight")?,
                w("ffn_up.weight")?,
            )
        };
        let bias = c.qkv_bias;
        let (q_norm, k_norm) = if c.qk_norm {
            (
                Some(w("attn_q_norm.weight")?.to_f32()),
                Some(w("attn_k_norm.weight")?.to_f32()),
            )
        } else {
            (None, None)
        };
        let (post_attn_norm, post_ffn_norm) = if c.post_norms {
            (
                Some(w("post_attention_norm.weight")?.to_f32()),
                Some(w("post_ffw_norm.weight")?.to_f32()),
            )
        } else {
            (None, None)
        };
        layers.push(Layer {
            attn_norm: w("attn_norm.weight")?.to_f32(),
            wq,
            wk,
            wv,
            bq: if bias {
                Some(w("attn_q.bias")?.to_f32())
            } else {
                None
            },
            bk: if bias {
                Some(w("attn_k.bias")?.to_f32())
            } else {
                None
            },
            bv: if bias {
                Some(w("attn_v.bias")?.to_f32())
            } else {
                None
            },
            wo: w("attn_output.weight")?,
            ffn_norm: w("ffn_norm.weight")?.to_f32(),
            w_gate,
            w_up,
            w_down: w("ffn_down.weight")?,
            q_norm,
            k_norm,
            post_attn_norm,
            post_ffn_norm,
        });
    }
    let model = Model {
        config,
        token_embd,
        layers,
        output_norm,
        output,
    };
    model
        .validate()
        .map_err(|e| LoadError::Weight { path: p, source: e })?;
    Ok(model)
}

/// Loads a GGUF file zero-copy.
pub fn load_gguf(path: &Path) -> Result<Model, LoadError> {
    gguf_model(path, &Arc::new(ModelSource::open(path)?))
}

/// A merged tensor as an owned f32 weight.
fn merged(
    src: &ModelSource,
    name: &str,
    hf_rows: bool,
    rows: usize,
    cols: usize,
) -> Result<Weight, kernels::model::WeightError> {
    let v = match src {
        ModelSource::Hf(h) if hf_rows => h.tensor_f32_hf_rows(name),
        _ => src.tensor_f32(name),
    };
    v.map_err(|e| kernels::model::WeightError {
        what: name.to_string(),
        msg: e.to_string(),
    })
    .and_then(|v| Weight::from_f32(name, rows, cols, v))
}

fn gguf_model(path: &Path, source: &Arc<ModelSource>) -> Result<Model, LoadError> {
    let ModelSource::Gguf(g) = &**source else {
        unreachable!("gguf_model of a GGUF source")
    };
    let file = &g.file;
    let c = &g.config;
    let rope = if c.arch.permutes_qk() {
        RopeStyle::Adjacent
    } else {
        RopeStyle::Neox
    };
    let storages: Vec<Arc<dyn Storage>> = (0..file.parts().len())
        .map(|i| Arc::new(SourceStorage(source.clone(), i)) as Arc<dyn Storage>)
        .collect();
    build(c, rope, path, |name| {
        let t = file.tensor(name)?;
        let (rows, cols) = (t.n_rows(), t.row_len());
        if source.lora().touches(name) {
            return Some(merged(source, name, false, rows, cols));
        }
        Some(Weight::new(
            name,
            t.ty,
            rows,
            cols,
            storages[t.part].clone(),
            (file.parts()[t.part].data_offset + t.offset) as usize,
        ))
    })
}

/// Loads a checkpoint directory zero-copy, in Hugging Face layout.
pub fn load_hf(path: &Path) -> Result<Model, LoadError> {
    hf_model(
        path,
        &Arc::new(ModelSource::Hf(Box::new(HfCheckpoint::open(path)?))),
    )
}

fn hf_model(path: &Path, source: &Arc<ModelSource>) -> Result<Model, LoadError> {
    let ModelSource::Hf(ck) = &**source else {
        unreachable!("hf_model of a checkpoint source")
    };
    let c = ck.config.clone();
    let storages: Vec<Arc<dyn Storage>> = (0..ck.files().len())
        .map(|i| Arc::new(SourceStorage(source.clone(), i)) as Arc<dyn Storage>)
        .collect();
    build(&c, RopeStyle::Neox, path, |name| {
        let (fi, t) = ck.raw_tensor(name)?;
        if ck.lora().touches(name) {
            let rows = t.shape[0];
            let cols = t.shape[1..].iter().product();
            return Some(merged(source, name, true, rows, cols));
        }
        // Values the architecture stores differently in HF (Gemma's norms: w for 1 + w) are
        // read as the kernel runs them; everything else is mapped as stored.
        if ck.transform(name).map(Transform::elementwise) != Some(Transform::None) {
            let (rows, cols) = match t.shape.len() {
                1 => (1, t.shape[0]),
                _ => (t.shape[0], t.shape[1..].iter().product()),
            };
            return Some(
                ck.tensor_f32_hf_rows(name)
                    .map_err(|e| kernels::model::WeightError {
                        what: name.to_string(),
                        msg: e.to_string(),
                    })
                    .and_then(|v| Weight::from_f32(name, rows, cols, v)),
            );
        }
        let ty = match t.dtype {
            convert::safetensors::Dtype::F32 => GgmlType::F32,
            convert::safetensors::Dtype::F16 => GgmlType::F16,
            convert::safetensors::Dtype::BF16 => GgmlType::BF16,
        };
        let (rows, cols) = match t.shape.len() {
            1 => (1, t.shape[0]),
            _ => (t.shape[0], t.shape[1..].iter().product()),
        };
        Some(Weight::new(
            name,
            ty,
            rows,
            cols,
            storages[fi].clone(),
            t.start,
        ))
    })
}
