//! The model kiln runs: a pre-norm decoder (Llama, Qwen2, Gemma 3 …) whose weights can each be
//! of any type kiln handles, held zero-copy in whatever storage the loader provides (a
//! memory-mapped GGUF or safetensors file, or owned memory). What differs between
//! architectures reaches the forward as the switches of [`Config`] and the optional tensors
//! of [`Layer`]; which values they take is decided by each architecture's module in `convert`.

use std::sync::Arc;

use quantize::GgmlType;

/// Bytes that outlive the model: a memory map, a vector, a slice of either.
pub trait Storage: Send + Sync {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

impl Storage for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Which RoPE pairing the Q/K rows are laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama.cpp's llama architecture, on Q/K rows its
    /// converter permuted (ggml's `GGML_ROPE_TYPE_NORM`).
    Adjacent,
    /// Halves (x[i], x[i + d/2]): Hugging Face's `rotate_half`, and qwen2 in GGUF
    /// (`GGML_ROPE_TYPE_NEOX`).
    Neox,
}

/// The gate activation of the feed-forward (`act(x·Wgateᵀ) ⊙ x·Wupᵀ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `x·σ(x)` (SwiGLU: Llama, Qwen2).
    #[default]
    Silu,
    /// GELU, tanh approximation (GeGLU: Gemma; PyTorch's `gelu(approximate="tanh")`).
    GeluTanh,
}

/// Sliding-window attention: which layers see only the most recent `window` positions
/// (their own included), and the RoPE base those layers use.
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Positions a query of a windowed layer sees, its own included (query `p` sees keys
    /// `p − window + 1 ..= p`).
    pub window: usize,
    /// `layers[l]`: layer `l` is windowed.
    pub layers: Vec<bool>,
    /// RoPE base of the windowed layers.
    pub rope_theta: f32,
    /// RoPE position divisor of the windowed layers (1 = none; Gemma's local layers are
    /// unscaled).
    pub rope_scale: f32,
}

/// Hyper-parameters of the forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Model width (embedding length).
    pub dim: usize,
    /// SwiGLU inner width.
    pub ffn_dim: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (each serves `n_heads / n_kv_heads` query heads).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the output projection).
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Positions are divided by this before RoPE (linear scaling; 1 = none).
    pub rope_scale: f32,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// Training context length (the longest sequence the model is meant for).
    pub max_ctx: usize,
    /// Gate activation of the feed-forward.
    pub act: Activation,
    /// The embedding rows are multiplied by this (Gemma: √dim); 1 = none.
    pub embed_scale: f32,
    /// `q·k` is multiplied by this; `None` is 1/√head_dim.
    pub attn_scale: Option<f32>,
    /// Logits become `c·tanh(logit / c)` (Gemma's final soft-capping).
    pub final_softcap: Option<f32>,
    /// Sliding-window layers, if any.
    pub swa: Option<SlidingWindow>,
    /// Divisors of each rotated pair's frequency, `head_dim / 2` of them (llama.cpp's
    /// `rope_freqs.weight`: Llama 3's frequency scaling); `None`: 1.
    pub rope_freq_factors: Option<Vec<f32>>,
    /// `no_rope[l]`: layer `l` applies no RoPE (SmolLM3's NoPE layers); empty: every layer
    /// rotates.
    pub no_rope: Vec<bool>,
    /// Dimensions of each head that RoPE rotates, from the first (partial rotary: Phi-4-mini's
    /// `partial_rotary_factor`, llama.cpp's `rope.dimension_count`); 0: the whole head.
    pub rope_dims: usize,
    /// cos and sin are multiplied by this (LongRoPE's attention factor, llama.cpp's
    /// `rope.scaling.attn_factor`); 1 = none.
    pub rope_mscale: f32,
    /// LongRoPE (Phi-3): the frequency divisors for a context longer than the training one,
    /// used instead of [`Config::rope_freq_factors`] by a state holding more positions.
    pub rope_long: Option<LongRope>,
    /// The block's q, k, v are stored as one matrix (GGUF `attn_qkv`: Phi-3).
    pub fused_qkv: bool,
    /// The block's gate and up are stored as one matrix of `2·ffn_dim` rows, gate first (GGUF
    /// `ffn_up`: Phi-3).
    pub fused_gate_up: bool,
}

/// LongRoPE's long-context frequency divisors (llama.cpp's `rope_factors_long`).
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    /// One divisor per rotated pair.
    pub factors: Vec<f32>,
    /// The training context: a state of more positions than this uses `factors`
    /// (llama.cpp's `n_ctx_orig_yarn`, Hugging Face's `original_max_position_embeddings`).
    pub original_ctx: usize,
}

impl Config {
    /// A Llama-style configuration: SwiGLU, no embedding scale, 1/√head_dim attention, every
    /// layer global; the other switches at their neutral values.
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        dim: usize,
        ffn_dim: usize,
        n_layers: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        vocab: usize,
        max_ctx: usize,
    ) -> Self {
        Config {
            dim,
            ffn_dim,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scale: 1.0,
            rope_style: RopeStyle::Neox,
            max_ctx,
            act: Activation::Silu,
            embed_scale: 1.0,
            attn_scale: None,
            final_softcap: None,
            swa: None,
            rope_freq_factors: None,
            no_rope: Vec::new(),
            rope_dims: 0,
            rope_mscale: 1.0,
            rope_long: None,
            fused_qkv: false,
            fused_gate_up: false,
        }
    }

    /// Dimensions of each head RoPE rotates.
    pub fn rotated_dims(&self) -> usize {
        if self.rope_dims == 0 {
            self.head_dim
        } else {
            self.rope_dims
        }
    }

    /// The frequency divisors a state of `ctx` positions uses: LongRoPE's long set beyond
    /// the training context (as llama.cpp's `get_rope_factors` picks by the context size and
    /// Hugging Face's `longrope_frequency_update` by the sequence length), else
    /// [`Config::rope_freq_factors`].
    pub fn freq_factors(&self, ctx: usize) -> Option<&[f32]> {
        match &self.rope_long {
            Some(l) if ctx > l.original_ctx => Some(&l.factors),
            _ => self.rope_freq_factors.as_deref(),
        }
    }

    /// The window of layer `l`, if it is a sliding-window layer.
    pub fn window(&self, l: usize) -> Option<usize> {
        self.swa
            .as_ref()
            .filter(|s| s.layers.get(l).copied().unwrap_or(false))
            .map(|s| s.window)
    }

    /// The RoPE base and position divisor of layer `l`, `None` when it applies no RoPE.
    pub fn rope(&self, l: usize) -> Option<(f32, f32)> {
        if self.no_rope.get(l).copied().unwrap_or(false) {
            return None;
        }
        Some(match &self.swa {
            Some(s) if s.layers.get(l).copied().unwrap_or(false) => (s.rope_theta, s.rope_scale),
            _ => (self.rope_theta, self.rope_scale),
        })
    }

    /// The multiplier of `q·k`.
    pub fn attention_scale(&self) -> f32 {
        self.attn_scale
            .unwrap_or_else(|| 1.0 / (self.head_dim as f32).sqrt())
    }
}

/// A weight matrix `[rows, cols]` (row-major: each row is `cols` values of `ty`), or a vector
/// (`rows = 1`).
#[derive(Clone)]
pub struct Weight {
    /// Storage type.
    pub ty: GgmlType,
    /// Output features (rows).
    pub rows: usize,
    /// Input features (values per row).
    pub cols: usize,
    storage: Arc<dyn Storage>,
    offset: usize,
    row_bytes: usize,
    /// LoRA adapters applied at run time: low-rank terms added to the product.
    pub lora: Vec<LoraTerm>,
}

/// A LoRA adapter's term of a weight, applied at run time (llama.cpp's `build_lora_mm`):
/// rows `row0 .. row0 + rows` of `W·x` gain `scale · B[b_row0 + i] · (A·x)`.
#[derive(Clone)]
pub struct LoraTerm {
    /// First output row it adds to.
    pub row0: usize,
    /// Output rows it adds to.
    pub rows: usize,
    /// Rank.
    pub rank: usize,
    /// `A`, `[rank, cols]` row-major.
    pub a: Arc<[f32]>,
    /// `B`, `[b_rows, rank]` row-major (in the weight's row order).
    pub b: Arc<[f32]>,
    /// First row of `B` used (a row view of a fused matrix uses a part).
    pub b_row0: usize,
    /// `scale · alpha / rank`.
    pub scale: f32,
}

impl std::fmt::Debug for LoraTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LoraTerm(rows {}+{}, rank {}, scale {})",
            self.row0, self.rows, self.rank, self.scale
        )
    }
}

impl LoraTerm {
    /// The term of rows `start .. start + n` of its weight, renumbered from 0 (`None` when it
    /// adds to none of them).
    fn view(&self, start: usize, n: usize) -> Option<LoraTerm> {
        let lo = self.row0.max(start);
        let hi = (self.row0 + self.rows).min(start + n);
        (lo < hi).then(|| LoraTerm {
            row0: lo - start,
            rows: hi - lo,
            b_row0: self.b_row0 + (lo - self.row0),
            ..self.clone()
        })
    }

    /// `out[t·out_rows + row0 + i] += scale · B[b_row0 + i] · (A · x[t])` for each token, with
    /// the SIMD f32 dot product (the same bits at every SIMD level), tokens in parallel: the
    /// same bits for a token alone or in a batch, on any thread count.
    pub fn apply(&self, x: &[f32], cols: usize, n_tok: usize, out: &mut [f32], out_rows: usize) {
        use rayon::prelude::*;
        let one = |xt: &[f32], o: &mut [f32], ax: &mut [f32]| {
            for (k, v) in ax.iter_mut().enumerate() {
                *v = crate::dot::vec_dot_f32(&self.a[k * cols..(k + 1) * cols], xt);
            }
            let b0 = self.b_row0 * self.rank;
            let b = &self.b[b0..b0 + self.rows * self.rank];
            for (y, br) in o[self.row0..self.row0 + self.rows]
                .iter_mut()
                .zip(b.chunks_exact(self.rank))
            {
                *y += self.scale * crate::dot::vec_dot_f32(br, ax);
            }
        };
        let (x, out) = (&x[..n_tok * cols], &mut out[..n_tok * out_rows]);
        if n_tok == 1 {
            one(x, out, &mut vec![0f32; self.rank]);
        } else {
            out.par_chunks_mut(out_rows)
                .zip(x.par_chunks(cols))
                .for_each_init(|| vec![0f32; self.rank], |ax, (o, xt)| one(xt, o, ax));
        }
    }
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weight({} [{}, {}])", self.ty, self.rows, self.cols)
    }
}

/// The error of building a weight from bytes that do not fit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {msg}")]
pub struct WeightError {
    pub what: String,
    pub msg: String,
}

impl Weight {
    /// A weight over `storage[offset..]`, checked to hold `rows × cols` values of `ty`.
    pub fn new(
        what: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        storage: Arc<dyn Storage>,
        offset: usize,
    ) -> Result<Self, WeightError> {
        let err = |msg: String| WeightError {
            what: what.to_string(),
            msg,
        };
        let row_bytes = ty.row_size(cols).ok_or_else(|| {
            err(format!(
                "rows of {cols} values do not fit {ty}'s blocks of {}",
                ty.block_size()
            ))
        })?;
        let need = row_bytes * rows;
        let have = storage.bytes().len().saturating_sub(offset);
        if have < need {
            return Err(err(format!(
                "{rows}×{cols} {ty} needs {need} bytes, {have} available"
            )));
        }
        Ok(Weight {
            ty,
            rows,
            cols,
            storage,
            offset,
            row_bytes,
            lora: Vec::new(),
        })
    }

    /// Rows `start .. start + n` as a weight of their own, sharing the storage (each row's
    /// blocks are independent, so a slice of a quantized matrix is a matrix of that type).
    pub fn rows_view(&self, start: usize, n: usize) -> Weight {
        assert!(start + n <= self.rows, "rows {start}+{n} of {}", self.rows);
        Weight {
            rows: n,
            offset: self.offset + start * self.row_bytes,
            lora: self.lora.iter().filter_map(|t| t.view(start, n)).collect(),
            ..self.clone()
        }
    }

    /// The weights' rows one after the other (a fused matrix of its parts). A view when the
    /// parts lie next to each other in one storage (as the views [`Weight::rows_view`] made of
    /// one matrix do), else a copy; `None` when their types or widths differ.
    pub fn stack(parts: &[&Weight]) -> Option<Weight> {
        let first = *parts.first()?;
        if parts
            .iter()
            .any(|w| w.ty != first.ty || w.cols != first.cols)
        {
            return None;
        }
        let rows = parts.iter().map(|w| w.rows).sum();
        let mut lora = Vec::new();
        let mut row0 = 0;
        for w in parts {
            lora.extend(w.lora.iter().map(|t| LoraTerm {
                row0: t.row0 + row0,
                ..t.clone()
            }));
            row0 += w.rows;
        }
        let adjacent = parts.windows(2).all(|p| {
            Arc::ptr_eq(&p[0].storage, &p[1].storage)
                && p[0].offset + p[0].rows * p[0].row_bytes == p[1].offset
        });
        if adjacent {
            return Some(Weight {
                rows,
                lora,
                ..first.clone()
            });
        }
        let bytes: Vec<u8> = parts
            .iter()
            .flat_map(|w| w.bytes().iter().copied())
            .collect();
        Some(Weight {
            rows,
            storage: Arc::new(bytes),
            offset: 0,
            lora,
            ..first.clone()
        })
    }

    /// An owned f32 weight.
    pub fn from_f32(
        what: &str,
        rows: usize,
        cols: usize,
        v: Vec<f32>,
    ) -> Result<Self, WeightError> {
        let bytes: Vec<u8> = bytemuck::cast_slice(&v).to_vec();
        Self::new(what, GgmlType::F32, rows, cols, Arc::new(bytes), 0)
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// All rows' bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.storage.bytes()[self.offset..self.offset + self.row_bytes * self.rows]
    }

    /// Row `r`'s bytes.
    pub fn row(&self, r: usize) -> &[u8] {
        let s = self.offset + r * self.row_bytes;
        &self.storage.bytes()[s..s + self.row_bytes]
    }

    /// Row `r` as f32.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        quantize::dequantize_into(self.ty, self.row(r), &mut out[..self.cols])
            .expect("row size checked at construction");
    }

    /// All values as f32 (for small vectors: norms, biases).
    pub fn to_f32(&self) -> Vec<f32> {
        quantize::dequantize(self.ty, self.bytes(), self.rows * self.cols)
            .expect("size checked at construction")
    }
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Layer {
    /// RMSNorm weight before attention, `[dim]`.
    pub attn_norm: Vec<f32>,
    /// Query projection, `[n_heads·head_dim, dim]`.
    pub wq: Weight,
    /// Key projection, `[n_kv_heads·head_dim, dim]`.
    pub wk: Weight,
    /// Value projection, `[n_kv_heads·head_dim, dim]`.
    pub wv: Weight,
    /// Optional q/k/v biases (qwen2), `[n_heads·head_dim]`, `[n_kv_heads·head_dim]` ×2.
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Attention output projection, `[dim, n_heads·head_dim]`.
    pub wo: Weight,
    /// RMSNorm weight before the feed-forward, `[dim]`.
    pub ffn_norm: Vec<f32>,
    /// SwiGLU gate, `[ffn_dim, dim]`.
    pub w_gate: Weight,
    /// SwiGLU up, `[ffn_dim, dim]`.
    pub w_up: Weight,
    /// SwiGLU down, `[dim, ffn_dim]`.
    pub w_down: Weight,
    /// Per-head RMSNorm weights of q and k before RoPE (Gemma 3, Qwen3), `[head_dim]`.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// RMSNorm weights applied to the attention and feed-forward outputs before they join
    /// the residual stream (Gemma 2/3's post-norms), `[dim]`.
    pub post_attn_norm: Option<Vec<f32>>,
    pub post_ffn_norm: Option<Vec<f32>>,
}

impl Config {
    /// The weight matrices of a block under their GGUF names (`blk.N.<name>.weight`): q, k,
    /// v (or the fused qkv), the output projection, gate and up (or the fused up), down.
    pub fn block_matrices(&self) -> Vec<&'static str> {
        [
            MatKind::Qkv,
            MatKind::AttnOutput,
            MatKind::GateUp,
            MatKind::Down,
        ]
        .into_iter()
        .flat_map(|k| self.readers(k).iter().copied())
        .collect()
    }

    /// A fused q/k/v matrix (`attn_qkv`) as views of its q, k and v rows; `None` when it does
    /// not have `(n_heads + 2·n_kv_heads)·head_dim` rows.
    pub fn split_qkv(&self, w: &Weight) -> Option<[Weight; 3]> {
        let (q, kv) = (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        );
        (w.rows == q + 2 * kv).then(|| {
            [
                w.rows_view(0, q),
                w.rows_view(q, kv),
                w.rows_view(q + kv, kv),
            ]
        })
    }

    /// A fused gate/up matrix (`ffn_up` of `2·ffn_dim` rows, gate first) as views of its gate
    /// and up rows; `None` when the rows do not fit.
    pub fn split_gate_up(&self, w: &Weight) -> Option<[Weight; 2]> {
        let f = self.ffn_dim;
        (w.rows == 2 * f).then(|| [w.rows_view(0, f), w.rows_view(f, f)])
    }

    /// The block matrices (GGUF names, as [`Config::block_matrices`]) that read input `kind`.
    pub fn readers(&self, kind: MatKind) -> &'static [&'static str] {
        match kind {
            MatKind::Qkv if self.fused_qkv => &["attn_qkv"],
            MatKind::Qkv => &["attn_q", "attn_k", "attn_v"],
            MatKind::AttnOutput => &["attn_output"],
            MatKind::GateUp if self.fused_gate_up => &["ffn_up"],
            MatKind::GateUp => &["ffn_gate", "ffn_up"],
            MatKind::Down => &["ffn_down"],
            MatKind::Output => &[],
        }
    }
}

impl Layer {
    /// The block matrix called `name` in the GGUF (one of [`Config::block_matrices`]): a fused
    /// one is its parts stacked (a view of the fused storage they were loaded from).
    pub fn matrix(&self, c: &Config, name: &str) -> Option<Weight> {
        match name {
            "attn_qkv" if c.fused_qkv => Weight::stack(&[&self.wq, &self.wk, &self.wv]),
            "ffn_up" if c.fused_gate_up => Weight::stack(&[&self.w_gate, &self.w_up]),
            "attn_q" if !c.fused_qkv => Some(self.wq.clone()),
            "attn_k" if !c.fused_qkv => Some(self.wk.clone()),
            "attn_v" if !c.fused_qkv => Some(self.wv.clone()),
            "ffn_gate" if !c.fused_gate_up => Some(self.w_gate.clone()),
            "ffn_up" => Some(self.w_up.clone()),
            "attn_output" => Some(self.wo.clone()),
            "ffn_down" => Some(self.w_down.clone()),
            _ => None,
        }
    }

    /// Replaces the block matrix called `name` (a fused one is split into its parts' rows);
    /// false when the block has no such matrix or `w`'s rows do not fit it.
    pub fn set_matrix(&mut self, c: &Config, name: &str, w: Weight) -> bool {
        match name {
            "attn_qkv" if c.fused_qkv => match c.split_qkv(&w) {
                Some([q, k, v]) => (self.wq, self.wk, self.wv) = (q, k, v),
                None => return false,
            },
            "ffn_up" if c.fused_gate_up => match c.split_gate_up(&w) {
                Some([g, u]) => (self.w_gate, self.w_up) = (g, u),
                None => return false,
            },
            "attn_q" if !c.fused_qkv => self.wq = w,
            "attn_k" if !c.fused_qkv => self.wk = w,
            "attn_v" if !c.fused_qkv => self.wv = w,
            "ffn_gate" if !c.fused_gate_up => self.w_gate = w,
            "ffn_up" => self.w_up = w,
            "attn_output" => self.wo = w,
            "ffn_down" => self.w_down = w,
            _ => return false,
        }
        true
    }
}

/// A whole model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Hyper-parameters.
    pub config: Config,
    /// Token embeddings, `[vocab, dim]`.
    pub token_embd: Weight,
    /// Blocks.
    pub layers: Vec<Layer>,
    /// Final RMSNorm weight, `[dim]`.
    pub output_norm: Vec<f32>,
    /// Output projection, `[vocab, dim]`; `None` when tied to `token_embd`.
    pub output: Option<Weight>,
}

/// Which matrix of a block a matmul input belongs to (for observers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatKind {
    /// The shared input of attn_q, attn_k and attn_v.
    Qkv,
    /// attn_output.
    AttnOutput,
    /// The shared input of ffn_gate and ffn_up.
    GateUp,
    /// ffn_down.
    Down,
    /// The output projection (layer index is `n_layers`).
    Output,
}

impl Model {
    /// The output projection (the embedding when tied).
    pub fn output_weight(&self) -> &Weight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Checks every shape against the config.
    pub fn validate(&self) -> Result<(), WeightError> {
        let c = &self.config;
        let q = c.n_heads * c.head_dim;
        let kv = c.n_kv_heads * c.head_dim;
        let chk = |w: &Weight, rows: usize, cols: usize, what: String| {
            if w.rows != rows || w.cols != cols {
                Err(WeightError {
                    what,
                    msg: format!(
                        "is [{}, {}], the config implies [{rows}, {cols}]",
                        w.rows, w.cols
                    ),
                })
            } else {
                Ok(())
            }
        };
        let vec = |v: &[f32], n: usize, what: String| {
            if v.len() != n {
                Err(WeightError {
                    what,
                    msg: format!("has {} values, the config implies {n}", v.len()),
                })
            } else {
                Ok(())
            }
        };
        if c.n_kv_heads == 0
            || !c.n_heads.is_multiple_of(c.n_kv_heads)
            || !c.head_dim.is_multiple_of(2)
            || !c.rotated_dims().is_multiple_of(2)
            || c.rotated_dims() > c.head_dim
            || [
                c.rope_freq_factors.as_ref(),
                c.rope_long.as_ref().map(|l| &l.factors),
            ]
            .into_iter()
            .flatten()
            .any(|f| f.len() != c.rotated_dims() / 2)
            || c.swa
                .as_ref()
                .is_some_and(|s| s.window == 0 || s.layers.len() != c.n_layers)
        {
            return Err(WeightError {
                what: "config".into(),
                msg: format!("{c:?} is inconsistent"),
            });
        }
        chk(&self.token_embd, c.vocab, c.dim, "token_embd".into())?;
        if let Some(o) = &self.output {
            chk(o, c.vocab, c.dim, "output".into())?;
        }
        vec(&self.output_norm, c.dim, "output_norm".into())?;
        if self.layers.len() != c.n_layers {
            return Err(WeightError {
                what: "layers".into(),
                msg: format!("{} layers, config says {}", self.layers.len(), c.n_layers),
            });
        }
        for (i, l) in self.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}");
            vec(&l.attn_norm, c.dim, n("attn_norm"))?;
            vec(&l.ffn_norm, c.dim, n("ffn_norm"))?;
            chk(&l.wq, q, c.dim, n("attn_q"))?;
            chk(&l.wk, kv, c.dim, n("attn_k"))?;
            chk(&l.wv, kv, c.dim, n("attn_v"))?;
            chk(&l.wo, c.dim, q, n("attn_output"))?;
            chk(&l.w_gate, c.ffn_dim, c.dim, n("ffn_gate"))?;
            chk(&l.w_up, c.ffn_dim, c.dim, n("ffn_up"))?;
            chk(&l.w_down, c.dim, c.ffn_dim, n("ffn_down"))?;
            for (b, len, s) in [
                (&l.bq, q, "attn_q.bias"),
                (&l.bk, kv, "attn_k.bias"),
                (&l.bv, kv, "attn_v.bias"),
                (&l.q_norm, c.head_dim, "attn_q_norm"),
                (&l.k_norm, c.head_dim, "attn_k_norm"),
                (&l.post_attn_norm, c.dim, "post_attention_norm"),
                (&l.post_ffn_norm, c.dim, "post_ffw_norm"),
            ] {
                if let Some(b) = b {
                    vec(b, len, n(s))?;
                }
            }
        }
        Ok(())
    }

    /// Bytes of all weights.
    pub fn weight_bytes(&self) -> usize {
        let mut n = self.token_embd.bytes().len()
            + self.output.as_ref().map_or(0, |o| o.bytes().len())
            + 4 * self.output_norm.len();
        for l in &self.layers {
            for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                n += w.bytes().len();
            }
            n += 4 * (l.attn_norm.len() + l.ffn_norm.len());
            for v in [&l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm]
                .into_iter()
                .chain([&l.post_attn_norm, &l.post_ffn_norm])
                .flatten()
            {
                n += 4 * v.len();
            }
        }
        n
    }
}
