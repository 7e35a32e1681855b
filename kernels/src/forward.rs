//! The decoder forward pass, in the spirit of llama2.c's `forward`: one readable function,
//! every buffer preallocated in [`State`], no allocation per token. One function serves every
//! architecture kiln runs; the bracketed steps are the switches of [`Config`] and the optional
//! tensors of [`crate::Layer`] (Gemma 3 uses all of them, Llama none).
//!
//! ```text
//! x = embed(tokens) [· embed_scale]                   [T, dim]
//! for each layer l:
//!     h = rmsnorm(x) · attn_norm
//!     q, k, v = h·Wqᵀ (+bq), h·Wkᵀ (+bk), h·Wvᵀ (+bv)   [per-head rmsnorm(q)·q_norm, k likewise]
//!     rope(q), rope(k) with layer l's base;  k, v → cache (a ring of window slots when windowed)
//!     a = attention(q, cache; causal, [window of layer l], [block mask]) · Woᵀ
//!     x += a [→ rmsnorm(a) · post_attn_norm]
//!     h = rmsnorm(x) · ffn_norm
//!     f = (act(h·Wgateᵀ) ⊙ h·Wupᵀ) · Wdownᵀ            act: SiLU or GELU-tanh
//!     x += f [→ rmsnorm(f) · post_ffn_norm]
//! logits = (rmsnorm(x) · output_norm) · Woutputᵀ     [→ c·tanh(logits / c)]
//! ```
//!
//! A batch of tokens (prefill) goes through the batched matmul; one token (decode) is the same
//! code with T = 1. Observers see every matmul input (for the importance matrix) and, when they
//! ask, every attention row (for mask statistics); the default observer compiles to nothing.

use crate::dot;
use crate::mask::BlockMask;
use crate::matmul::{matmul, MatmulMode, MatmulScratch};
use crate::model::{Activation, Config, MatKind, Model, RopeStyle};

/// Sees the forward pass from inside. Every method has an empty default.
pub trait Observer: Sync {
    /// The input `x` (`[n_tok, cols]`) of the matmuls of `kind` in `layer` (`n_layers` for
    /// the output projection).
    fn matmul_input(&self, _layer: usize, _kind: MatKind, _x: &[f32], _n_tok: usize) {}
    /// True when [`Observer::attention`] wants to be called.
    fn wants_attention(&self) -> bool {
        false
    }
    /// The block size for which [`Observer::attention`] also wants each query's Quest bounds
    /// of the complete key blocks (content-aware mask calibration); `None`: no bounds.
    fn attention_bounds_block(&self) -> Option<usize> {
        None
    }
    /// The attention probabilities of `head` in `layer` for the query at position `q_pos`:
    /// `probs[k]` for key positions `0..=q_pos` (zero where a mask excluded the key); and,
    /// when [`Observer::attention_bounds_block`] asks, `bounds[kb]`, the scaled Quest bound
    /// (see [`crate::mask::quest_bounds`]) of each complete key block before the query's
    /// block (empty otherwise, and in windowed layers).
    fn attention(
        &self,
        _layer: usize,
        _head: usize,
        _q_pos: usize,
        _probs: &[f32],
        _bounds: &[f32],
    ) {
    }
    /// The residual stream `x` (`[n_tok, dim]`) entering `layer` (`n_layers`: leaving the
    /// last layer), for [`ForwardOptions::start`].
    fn layer_input(&self, _layer: usize, _x: &[f32], _n_tok: usize) {}
}

/// The observer that observes nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

/// Which positions of a batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, KL divergence).
    All,
    /// The tokens from this index of the batch on.
    From(usize),
    /// None (filling the cache).
    None,
}

/// Options of a forward pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardOptions<'a> {
    /// How quantized matmuls are computed.
    pub mode: MatmulMode,
    /// Block-sparse attention; `None` is dense causal attention.
    pub mask: Option<&'a BlockMask>,
    /// Start inside the model: `(layer, x)` runs only the layers from `layer` on, with `x`
    /// (`[n_tok, dim]`, as [`Observer::layer_input`] saw it) as their input; the caches of
    /// earlier layers are left untouched. Used to measure one tensor's effect cheaply.
    pub start: Option<(usize, &'a [f32])>,
}

/// An activation buffer whose rows start on 64-byte lines when the row length is a multiple
/// of sixteen values, so the sixteen-lane kernels never split a load across two lines (a
/// split load costs the f32 tiles about a fifth of their speed).
#[derive(Debug)]
struct Acts {
    lines: Vec<Line>,
    len: usize,
}

#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
struct Line([f32; 16]);

impl Acts {
    fn new(len: usize) -> Self {
        Acts {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }
}

impl std::ops::Deref for Acts {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl std::ops::DerefMut for Acts {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// The working memory of a forward pass: KV cache and activations, sized once.
#[derive(Debug)]
pub struct State {
    /// Longest sequence the cache holds.
    pub max_ctx: usize,
    /// Most tokens per forward call.
    pub max_batch: usize,
    /// Tokens in the cache (the next token's position).
    pub pos: usize,
    /// Store keys and values rounded to f16, as llama.cpp's default KV cache does (its
    /// perplexity and imatrix tools run that way); off, the cache keeps f32.
    pub kv_f16: bool,
    kv_dim: usize,
    /// Per layer: (offset of its cache in `k_cache` / `v_cache`, slots). A global layer has
    /// `max_ctx` slots; a windowed one a ring of `window − 1 + max_batch` (rounded up to
    /// [`dot::ATT_LANES`]) when that is fewer: position `p` lives in slot `p % slots`.
    caches: Vec<(usize, usize)>,
    k_cache: Vec<f32>, // per layer [n_kv_heads, head_dim, slots]: keys transposed
    v_cache: Vec<f32>, // per layer [slots, kv_dim]
    x: Acts,           // [max_batch, dim] residual stream
    xb: Acts,          // [max_batch, dim] normed input / projection output
    q: Acts,           // [max_batch, n_heads·head_dim]
    k: Acts,           // [max_batch, kv_dim]
    v: Acts,           // [max_batch, kv_dim]
    att: Acts,         // [max_batch, n_heads·head_dim] attention output
    scores: Vec<f32>,  // [n_heads · ATTENTION_CHUNKS · QUERY_TILE, max_ctx] rows per task
    hb: Acts,          // [max_batch, max(ffn_dim, dim)]: gate; the post-norms' scratch
    hb2: Acts,         // [max_batch, ffn_dim]
    ropes: Vec<Rope>,  // one table per (base, scale) the layers use
    layer_rope: Vec<Option<usize>>, // layer → index into `ropes` (None: no RoPE)
    /// Logits of the last call: `[n, vocab]` rows for the positions asked for.
    pub logits: Vec<f32>,
    /// Time spent in attention (scores, softmax, values) since the state was made; for the
    /// masked-vs-dense benchmark.
    pub attention_time: std::time::Duration,
    /// Time spent on logits (output norm and projection) since the state was made: a
    /// prefill's time without it is what serving a prompt costs.
    pub output_time: std::time::Duration,
    /// What attention computed since the state was made (density, selection cost).
    pub attention_counts: AttentionCounts,
    /// Per layer: the key-block summaries of content-aware masks, `[kv_head][block][2·hd]`
    /// (maxima, minima of the cached keys), for `summary_block`-token blocks.
    summaries: Vec<Vec<f32>>,
    /// Per layer: how many leading blocks `summaries` holds.
    summarized: Vec<usize>,
    summary_block: usize,
    scratch: MatmulScratch,
}

/// Counters of the attention work (atomics: heads run in parallel).
#[derive(Debug, Default)]
pub struct AttentionCounts {
    /// Key positions the queries attended to (each query's own blocks).
    pub keys: std::sync::atomic::AtomicU64,
    /// Key positions causal attention (with the layers' windows) would attend to.
    pub causal_keys: std::sync::atomic::AtomicU64,
    /// Key positions scored (the union of a query tile's blocks, per query).
    pub computed_keys: std::sync::atomic::AtomicU64,
    /// Nanoseconds spent choosing blocks (content-aware masks: bounds and selection), summed
    /// over the threads that ran attention (thread time, not wall time).
    pub selection_ns: std::sync::atomic::AtomicU64,
    /// Key blocks whose bound a query computed (content-aware masks).
    pub selection_blocks: std::sync::atomic::AtomicU64,
}

impl AttentionCounts {
    /// Attended over causal keys (1 when nothing was counted).
    pub fn density(&self) -> f64 {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.causal_keys.load(Relaxed);
        if c == 0 {
            1.0
        } else {
            self.keys.load(Relaxed) as f64 / c as f64
        }
    }

    /// Thread-seconds spent choosing blocks (summed over threads).
    pub fn selection_s(&self) -> f64 {
        self.selection_ns.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9
    }
}

/// RoPE angles of one base and scale: `cos`, `sin` of
/// `p / scale · base^(−2i/dims) / factor_i` for the `dims / 2` rotated pairs, computed in f64
/// and rounded once (`factor_i`: llama.cpp's `rope_freqs`, 1 without them).
#[derive(Debug)]
struct Rope {
    key: (u32, u32),
    cos: Vec<f32>, // [max_ctx, dims/2]
    sin: Vec<f32>, // [max_ctx, dims/2]
}

impl Rope {
    /// `dims` rotated dimensions; cos and sin multiplied by `mscale` (rounded once).
    fn new(
        theta: f32,
        scale: f32,
        dims: usize,
        factors: Option<&[f32]>,
        mscale: f32,
        max_ctx: usize,
    ) -> Self {
        let half = dims / 2;
        let freq: Vec<f64> = (0..half)
            .map(|i| {
                let f = (theta as f64).powf(-2.0 * i as f64 / dims as f64);
                f / factors.map_or(1.0, |ff| ff[i] as f64)
            })
            .collect();
        let mut cos = vec![0f32; max_ctx * half];
        let mut sin = vec![0f32; max_ctx * half];
        let m = mscale as f64;
        for p in 0..max_ctx {
            let pos = p as f64 / scale as f64;
            for (i, f) in freq.iter().enumerate() {
                let a = pos * f;
                cos[p * half + i] = (a.cos() * m) as f32;
                sin[p * half + i] = (a.sin() * m) as f32;
            }
        }
        Rope {
            key: (theta.to_bits(), scale.to_bits()),
            cos,
            sin,
        }
    }
}

impl State {
    /// Buffers for `model` holding `max_ctx` positions, `max_batch` tokens per call.
    pub fn new(c: &Config, max_ctx: usize, max_batch: usize) -> Self {
        let max_batch = max_batch.clamp(1, max_ctx.max(1));
        let kv_dim = c.n_kv_heads * c.head_dim;
        let q_dim = c.n_heads * c.head_dim;
        let mut ropes: Vec<Rope> = Vec::new();
        let mut layer_rope = Vec::with_capacity(c.n_layers);
        let mut caches = Vec::with_capacity(c.n_layers);
        let mut cache_len = 0;
        for l in 0..c.n_layers {
            let i = c.rope(l).map(|(theta, scale)| {
                let key = (theta.to_bits(), scale.to_bits());
                match ropes.iter().position(|r| r.key == key) {
                    Some(i) => i,
                    None => {
                        let ff = c.freq_factors(max_ctx);
                        let (rd, m) = (c.rotated_dims(), c.rope_mscale);
                        ropes.push(Rope::new(theta, scale, rd, ff, m, max_ctx));
                        ropes.len() - 1
                    }
                }
            });
            layer_rope.push(i);
            let slots = match c.window(l) {
                Some(w) => (w - 1 + max_batch)
                    .next_multiple_of(dot::ATT_LANES)
                    .min(max_ctx),
                None => max_ctx,
            };
            caches.push((cache_len, slots));
            cache_len += slots * kv_dim;
        }
        State {
            max_ctx,
            max_batch,
            pos: 0,
            kv_f16: false,
            kv_dim,
            caches,
            k_cache: vec![0.0; cache_len],
            v_cache: vec![0.0; cache_len],
            x: Acts::new(max_batch * c.dim),
            xb: Acts::new(max_batch * c.dim),
            q: Acts::new(max_batch * q_dim),
            k: Acts::new(max_batch * kv_dim),
            v: Acts::new(max_batch * kv_dim),
            att: Acts::new(max_batch * q_dim),
            scores: vec![0.0; c.n_heads * ATTENTION_CHUNKS * QUERY_TILE * max_ctx],
            hb: Acts::new(max_batch * c.ffn_dim.max(c.dim)),
            hb2: Acts::new(max_batch * c.ffn_dim),
            ropes,
            layer_rope,
            logits: Vec::with_capacity(c.vocab),
            attention_time: std::time::Duration::ZERO,
            output_time: std::time::Duration::ZERO,
            attention_counts: AttentionCounts::default(),
            summaries: vec![Vec::new(); c.n_layers],
            summarized: vec![0; c.n_layers],
            summary_block: 0,
            scratch: MatmulScratch::default(),
        }
    }

    /// Empties the cache (the next token is at position 0).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.summarized.fill(0);
    }

    /// Floats held by the key and value caches (windowed layers hold only their ring).
    pub fn cache_floats(&self) -> usize {
        self.k_cache.len() + self.v_cache.len()
    }
}

/// The error of a forward call that does not fit its state.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    #[error("{n} tokens exceed the batch size {max}")]
    Batch { n: usize, max: usize },
    #[error("position {end} exceeds the context of {max} tokens")]
    Context { end: usize, max: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    Token { id: u32, vocab: usize },
    #[error("start at layer {layer} with {len} residual values (the batch needs {want})")]
    Start {
        layer: usize,
        len: usize,
        want: usize,
    },
}

/// Σx² in f64, then `x / sqrt(mean + eps) · w`, as ggml's `rms_norm` (f64 sum).
fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// A state buffer shared by token-parallel tasks, each writing only its own rows.
#[derive(Clone, Copy)]
struct Rows(*mut f32);
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

impl Rows {
    /// `len` floats from `at`.
    ///
    /// # Safety
    /// The range lies inside the buffer and no other live slice overlaps it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row<'a>(&self, at: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }
}

/// Runs `f` over ranges of the batch's `n` tokens on the team, or over all of them on this
/// thread when the batch is too small to pay for it. Per-token work, so the results do not
/// depend on the split.
fn par_tokens(n: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    const MIN_PER_TASK: usize = 16;
    let tasks = (crate::team::threads() * 2).min(n / MIN_PER_TASK);
    if tasks <= 1 {
        return f(0..n);
    }
    let per = n.div_ceil(tasks);
    crate::team::for_each(n.div_ceil(per), &|i| f(i * per..((i + 1) * per).min(n)));
}

/// `out[t] = rmsnorm(x[t]) ⊙ w` for every token row of `dim` floats.
fn norm_rows(x: &[f32], out: &mut [f32], dim: usize, w: &[f32], eps: f32) {
    let o = Rows(out.as_mut_ptr());
    par_tokens(x.len() / dim, &|range| {
        for t in range {
            // SAFETY: row t of `out` is this task's alone.
            rmsnorm(
                unsafe { o.row(t * dim, dim) },
                &x[t * dim..(t + 1) * dim],
                w,
                eps,
            );
        }
    });
}

/// The residual: `x += d`, token rows of `dim` floats.
fn add_rows(x: &mut [f32], d: &[f32], dim: usize) {
    let xp = Rows(x.as_mut_ptr());
    par_tokens(x.len() / dim, &|range| {
        // SAFETY: the rows of `range` are this task's alone.
        let xs = unsafe { xp.row(range.start * dim, range.len() * dim) };
        for (x, &d) in xs.iter_mut().zip(&d[range.start * dim..range.end * dim]) {
            *x += d;
        }
    });
}

/// Rotates the first `rd` dimensions of each head of one token's q or k (`n_heads ×
/// head_dim`) to the position of `cos`, `sin` (`rd / 2` pairs each); the rest pass through
/// (partial rotary).
fn rope(v: &mut [f32], head_dim: usize, rd: usize, cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = rd / 2;
    for h in v.chunks_exact_mut(head_dim) {
        match style {
            RopeStyle::Adjacent => {
                for i in 0..half {
                    let (a, b) = (h[2 * i], h[2 * i + 1]);
                    h[2 * i] = a * cos[i] - b * sin[i];
                    h[2 * i + 1] = a * sin[i] + b * cos[i];
                }
            }
            RopeStyle::Neox => {
                for i in 0..half {
                    let (a, b) = (h[i], h[i + half]);
                    h[i] = a * cos[i] - b * sin[i];
                    h[i + half] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}

fn add_bias(x: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        for row in x.chunks_exact_mut(b.len()) {
            for (v, &bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        }
    }
}

#[inline]
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `x = rmsnorm(x) · w` for every head of every token row (per-head Q/K norms).
fn norm_heads(x: &mut [f32], head_dim: usize, w: &[f32], eps: f32) {
    let xp = Rows(x.as_mut_ptr());
    let len = x.len();
    let heads = len / head_dim;
    par_tokens(heads, &|range| {
        let mut tmp = [0f32; 1024];
        for h in range {
            // SAFETY: head h's values are this task's alone.
            let v = unsafe { xp.row(h * head_dim, head_dim) };
            if head_dim <= tmp.len() {
                let t = &mut tmp[..head_dim];
                t.copy_from_slice(v);
                rmsnorm(v, t, w, eps);
            } else {
                let t = v.to_vec();
                rmsnorm(v, &t, w, eps);
            }
        }
    });
}

/// `x = rmsnorm(x) · w` in place for every token row of `dim` floats, using `tmp`.
fn norm_rows_in_place(x: &mut [f32], tmp: &mut [f32], dim: usize, w: &[f32], eps: f32) {
    let n = x.len();
    tmp[..n].copy_from_slice(x);
    norm_rows(&tmp[..n], x, dim, w, eps);
}

/// Runs `tokens` (positions `state.pos ..`) through `model`, appending to the cache. Logits
/// for the positions `logits` asks for land in `state.logits`.
pub fn forward<O: Observer>(
    model: &Model,
    state: &mut State,
    tokens: &[u32],
    logits: Logits,
    opts: ForwardOptions,
    obs: &O,
) -> Result<(), ForwardError> {
    let c = &model.config;
    let n = tokens.len();
    if n > state.max_batch {
        return Err(ForwardError::Batch {
            n,
            max: state.max_batch,
        });
    }
    if state.pos + n > state.max_ctx {
        return Err(ForwardError::Context {
            end: state.pos + n,
            max: state.max_ctx,
        });
    }
    if let Some(&id) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
        return Err(ForwardError::Token { id, vocab: c.vocab });
    }
    let (dim, hd, kv_dim) = (c.dim, c.head_dim, state.kv_dim);
    let q_dim = c.n_heads * hd;
    let rd = c.rotated_dims();
    let half = rd / 2;
    let pos0 = state.pos;
    let mode = opts.mode;

    let first = match opts.start {
        Some((l, x)) => {
            if l > model.layers.len() || x.len() != n * dim {
                return Err(ForwardError::Start {
                    layer: l,
                    len: x.len(),
                    want: n * dim,
                });
            }
            state.x[..n * dim].copy_from_slice(x);
            l
        }
        None => {
            for (t, &tok) in tokens.iter().enumerate() {
                let row = &mut state.x[t * dim..(t + 1) * dim];
                model.token_embd.row_f32(tok as usize, row);
                if c.embed_scale != 1.0 {
                    row.iter_mut().for_each(|v| *v *= c.embed_scale);
                }
            }
            0
        }
    };

    for (l, layer) in model.layers.iter().enumerate().skip(first) {
        obs.layer_input(l, &state.x[..n * dim], n);
        // Attention block.
        norm_rows(
            &state.x[..n * dim],
            &mut state.xb[..n * dim],
            dim,
            &layer.attn_norm,
            c.rms_eps,
        );
        let xb = &state.xb[..n * dim];
        obs.matmul_input(l, MatKind::Qkv, xb, n);
        matmul(
            &layer.wq,
            xb,
            n,
            &mut state.q[..n * q_dim],
            &mut state.scratch,
            mode,
        );
        matmul(
            &layer.wk,
            xb,
            n,
            &mut state.k[..n * kv_dim],
            &mut state.scratch,
            mode,
        );
        matmul(
            &layer.wv,
            xb,
            n,
            &mut state.v[..n * kv_dim],
            &mut state.scratch,
            mode,
        );
        add_bias(&mut state.q[..n * q_dim], &layer.bq);
        add_bias(&mut state.k[..n * kv_dim], &layer.bk);
        add_bias(&mut state.v[..n * kv_dim], &layer.bv);
        if let Some(w) = &layer.q_norm {
            norm_heads(&mut state.q[..n * q_dim], hd, w, c.rms_eps);
        }
        if let Some(w) = &layer.k_norm {
            norm_heads(&mut state.k[..n * kv_dim], hd, w, c.rms_eps);
        }
        {
            // Each token rotates its own q and k rows and writes its own cache rows.
            let (qp, kp) = (Rows(state.q.as_mut_ptr()), Rows(state.k.as_mut_ptr()));
            let (kc, vc) = (
                Rows(state.k_cache.as_mut_ptr()),
                Rows(state.v_cache.as_mut_ptr()),
            );
            let table = state.layer_rope[l].map(|i| &state.ropes[i]);
            let v = &state.v[..n * kv_dim];
            let (off, slots) = state.caches[l];
            let (kv_f16, style) = (state.kv_f16, c.rope_style);
            par_tokens(n, &|range| {
                for t in range {
                    let p = pos0 + t;
                    let slot = p % slots;
                    let at = off + slot * kv_dim;
                    // SAFETY: token t's rows of q and k, and cache entries at position p, are
                    // written by this task alone and lie inside their buffers.
                    let (q, k, vcr) = unsafe {
                        (
                            qp.row(t * q_dim, q_dim),
                            kp.row(t * kv_dim, kv_dim),
                            vc.row(at, kv_dim),
                        )
                    };
                    if let Some(r) = table {
                        let (cs, sn) = (
                            &r.cos[p * half..(p + 1) * half],
                            &r.sin[p * half..(p + 1) * half],
                        );
                        rope(q, hd, rd, cs, sn, style);
                        rope(k, hd, rd, cs, sn, style);
                    }
                    vcr.copy_from_slice(&v[t * kv_dim..(t + 1) * kv_dim]);
                    let round = |x: f32| {
                        if kv_f16 {
                            half::f16::from_f32(x).to_f32()
                        } else {
                            x
                        }
                    };
                    vcr.iter_mut().for_each(|x| *x = round(*x));
                    // Keys go in transposed: element e of kv head g is row g·hd + e of the
                    // layer's cache, i.e. row i for i in 0..kv_dim, `slots` floats per row.
                    for (i, &x) in k.iter().enumerate() {
                        // SAFETY: column `slot` of the row, this token's alone (the batch's
                        // positions are fewer than the slots, so no two share a slot).
                        unsafe { *kc.row(off + i * slots + slot, 1).as_mut_ptr() = round(x) };
                    }
                }
            });
        }
        let t_att = std::time::Instant::now();
        attention(model, state, l, n, opts.mask, obs);
        state.attention_time += t_att.elapsed();
        obs.matmul_input(l, MatKind::AttnOutput, &state.att[..n * q_dim], n);
        matmul(
            &layer.wo,
            &state.att[..n * q_dim],
            n,
            &mut state.xb[..n * dim],
            &mut state.scratch,
            mode,
        );
        if let Some(w) = &layer.post_attn_norm {
            norm_rows_in_place(&mut state.xb[..n * dim], &mut state.hb, dim, w, c.rms_eps);
        }
        add_rows(&mut state.x[..n * dim], &state.xb[..n * dim], dim);

        // Feed-forward block.
        norm_rows(
            &state.x[..n * dim],
            &mut state.xb[..n * dim],
            dim,
            &layer.ffn_norm,
            c.rms_eps,
        );
        let f = c.ffn_dim;
        obs.matmul_input(l, MatKind::GateUp, &state.xb[..n * dim], n);
        matmul(
            &layer.w_gate,
            &state.xb[..n * dim],
            n,
            &mut state.hb[..n * f],
            &mut state.scratch,
            mode,
        );
        matmul(
            &layer.w_up,
            &state.xb[..n * dim],
            n,
            &mut state.hb2[..n * f],
            &mut state.scratch,
            mode,
        );
        {
            let hb = Rows(state.hb.as_mut_ptr());
            let hb2 = &state.hb2[..n * f];
            let act = c.act;
            par_tokens(n, &|range| {
                // SAFETY: the rows of `range` are this task's alone, inside `hb`.
                let g = unsafe { hb.row(range.start * f, range.len() * f) };
                let u = &hb2[range.start * f..range.end * f];
                match act {
                    Activation::Silu => {
                        for (g, &u) in g.iter_mut().zip(u) {
                            *g = silu(*g) * u;
                        }
                    }
                    Activation::GeluTanh => dot::gelu_mul(g, u),
                }
            });
        }
        obs.matmul_input(l, MatKind::Down, &state.hb[..n * f], n);
        matmul(
            &layer.w_down,
            &state.hb[..n * f],
            n,
            &mut state.xb[..n * dim],
            &mut state.scratch,
            mode,
        );
        if let Some(w) = &layer.post_ffn_norm {
            norm_rows_in_place(&mut state.xb[..n * dim], &mut state.hb, dim, w, c.rms_eps);
        }
        add_rows(&mut state.x[..n * dim], &state.xb[..n * dim], dim);
    }
    obs.layer_input(model.layers.len(), &state.x[..n * dim], n);
    state.pos += n;

    let (first, count) = match logits {
        Logits::None => (n, 0),
        Logits::Last => (n - 1, 1),
        Logits::All => (0, n),
        Logits::From(i) => (i.min(n), n - i.min(n)),
    };
    state.logits.clear();
    if count > 0 {
        let t_out = std::time::Instant::now();
        for t in first..n {
            let r = t - first;
            rmsnorm(
                &mut state.xb[r * dim..(r + 1) * dim],
                &state.x[t * dim..(t + 1) * dim],
                &model.output_norm,
                c.rms_eps,
            );
        }
        obs.matmul_input(c.n_layers, MatKind::Output, &state.xb[..count * dim], count);
        state.logits.resize(count * c.vocab, 0.0);
        matmul(
            model.output_weight(),
            &state.xb[..count * dim],
            count,
            &mut state.logits,
            &mut state.scratch,
            mode,
        );
        if let Some(cap) = c.final_softcap {
            state
                .logits
                .iter_mut()
                .for_each(|v| *v = crate::dot::tanh_ref(*v / cap) * cap);
        }
        state.output_time += t_out.elapsed();
    }
    Ok(())
}

/// Causal grouped-query attention for the `n` newest tokens of layer `l`, heads in parallel.
///
/// Queries go in tiles of up to [`QUERY_TILE`] consecutive tokens of one head: their scores
/// against the transposed key cache come from one pass over the keys, then each query's
/// softmax (max, exponentials summed in lanes tied to key slots, see [`dot::attn_exp`]), then
/// the weighted values of the whole tile from one pass over the value rows, normalized at the
/// end. A key the tile covers but a query may not see — newer than it, or older than its
/// window — gets weight 0 in that query's row, which leaves its sums exactly as they were,
/// and every step is the same per-query arithmetic whatever the tile: a query gives the same
/// bits alone (decode) or in any batch.
///
/// One path serves dense, windowed and block-masked attention: the keys a query sees are the
/// causal range, cut at token granularity to the layer's window, minus the key blocks a mask
/// excludes (skipped: no scores, no exponentials, no values). Key positions map to cache slots
/// (`p % slots`, a ring for windowed layers); a range that wraps is taken as its two pieces in
/// position order, and the slot count is a multiple of the lanes, so the arithmetic is the
/// same as without a ring.
fn attention<O: Observer>(
    model: &Model,
    state: &mut State,
    l: usize,
    n: usize,
    mask: Option<&crate::mask::BlockMask>,
    obs: &O,
) {
    use crate::mask::HeadPattern;
    use std::sync::atomic::Ordering::Relaxed;
    let c = &model.config;
    let hd = c.head_dim;
    let q_dim = c.n_heads * hd;
    let kv_dim = state.kv_dim;
    let group = c.n_heads / c.n_kv_heads;
    let pos0 = state.pos;
    let max_ctx = state.max_ctx;
    let scale = c.attention_scale();
    let window = c.window(l);
    let (off, slots) = state.caches[l];
    let watch = obs.wants_attention();
    // Content-aware heads (global layers only: a windowed layer keeps its window) and the
    // calibration observer need the summaries of the key blocks completed so far.
    let layer_selects = window.is_none()
        && mask.is_some_and(|m| {
            m.patterns
                .get(l)
                .is_some_and(|r| r.iter().any(|p| p.is_select()))
        });
    let summary_block = match (layer_selects, window, obs.attention_bounds_block()) {
        (true, _, _) => mask.map(|m| m.block),
        (false, None, Some(b)) if watch => Some(b.max(1)),
        _ => None,
    };
    if let Some(b) = summary_block {
        summarize(state, l, pos0 + n, b, c.n_kv_heads, hd);
    }
    let n_summary = max_ctx.div_ceil(state.summary_block.max(1));
    let summaries = &state.summaries[l];
    let counts = &state.attention_counts;
    let kc = &state.k_cache[off..off + kv_dim * slots];
    let vc = &state.v_cache[off..off + slots * kv_dim];
    let q = &state.q;
    // The block size of the bounds the observer sees, if it asks for them.
    let obs_bounds =
        summary_block.filter(|_| watch && obs.attention_bounds_block() == summary_block);
    // The oldest position query `p` sees.
    let lo = |p: usize| window.map_or(0, |w| (p + 1).saturating_sub(w));
    // Each task owns QUERY_TILE scores rows; each head writes only its own columns of `att`.
    let att_ptr = AttOut(state.att.as_mut_ptr());
    let scores_ptr = AttOut(state.scores.as_mut_ptr());
    // Queries `ts` of head `h`, with QUERY_TILE scores rows of `max_ctx` floats.
    let rows = |h: usize, ts: std::ops::Range<usize>, scores: &mut [f32]| {
        let att = att_ptr;
        let g = h / group;
        // A dense pattern is no mask: the same single key range, the same bits. A
        // content-aware head of a windowed layer runs as the layer does (windowed).
        let (pattern, block) = match mask {
            Some(m) => match m.pattern(l, h) {
                HeadPattern::Dense => (None, usize::MAX),
                HeadPattern::Select { .. } if !layer_selects => (None, usize::MAX),
                p => (Some(p), m.block),
            },
            None => (None, usize::MAX),
        };
        let select = match pattern {
            Some(&HeadPattern::Select {
                sink,
                window,
                threshold,
            }) => Some((sink, window, threshold)),
            _ => None,
        };
        let summary = if summary_block.is_some() {
            &summaries[g * n_summary * 2 * hd..(g + 1) * n_summary * 2 * hd]
        } else {
            &summaries[..0]
        };
        // Per query of the tile, the key blocks it attends to (content-aware heads), and
        // their union, which the tile's passes over keys and values cover.
        // (Empty for other heads: decode runs this for every head of every token.)
        let nb = if select.is_some() { n_summary + 1 } else { 0 };
        let mut keep = vec![false; QUERY_TILE * nb];
        let mut union = vec![false; nb];
        let mut bound = vec![0f32; nb.saturating_sub(1)];
        let mut qq = vec![0f32; if nb > 0 { 2 * hd } else { 0 }];
        let mut scratch = crate::mask::SelectScratch::default();
        // Key position ranges (merged blocks, ascending): the tile's, and each query's own.
        let mut tile_r: Vec<(usize, usize)> = Vec::new();
        let per_query = if nb > 0 { QUERY_TILE } else { 0 };
        let mut own_r: Vec<Vec<(usize, usize)>> = vec![Vec::new(); per_query];
        let mut not_r: Vec<Vec<(usize, usize)>> = vec![Vec::new(); per_query];
        let kt = dot::Strided {
            data: &kc[g * hd * slots..(g + 1) * hd * slots],
            stride: slots,
        };
        let vs = dot::Strided {
            data: &vc[g * hd..],
            stride: kv_dim,
        };
        let mut t = ts.start;
        while t < ts.end {
            // The tile: consecutive queries, all in one query block of the mask.
            let p0 = pos0 + t;
            let block_end = (p0 / block).saturating_add(1).saturating_mul(block) - pos0;
            let nq = QUERY_TILE.min(ts.end - t).min(block_end - t);
            let last = p0 + nq - 1;
            let qb = p0 / block;
            match (pattern, select) {
                (None, _) => {}
                (Some(_), Some((sink, win, threshold))) => {
                    let t_sel = std::time::Instant::now();
                    union[..=qb].fill(false);
                    for j in 0..nq {
                        let qj = &q[(t + j) * q_dim + h * hd..(t + j) * q_dim + (h + 1) * hd];
                        crate::mask::quest_query(qj, &mut qq);
                        crate::mask::quest_bounds(&qq, summary, qb, scale, &mut bound);
                        let kj = &mut keep[j * nb..(j + 1) * nb];
                        crate::mask::select_blocks(
                            &bound,
                            qb,
                            sink,
                            win,
                            threshold,
                            kj,
                            &mut scratch,
                        );
                        for (u, &k) in union.iter_mut().zip(kj.iter()).take(qb + 1) {
                            *u |= k;
                        }
                    }
                    merge_blocks(&mut tile_r, qb, block, |kb| union[kb]);
                    for j in 0..nq {
                        let kj = &keep[j * nb..(j + 1) * nb];
                        merge_blocks(&mut own_r[j], qb, block, |kb| kj[kb]);
                        merge_blocks(&mut not_r[j], qb, block, |kb| union[kb] && !kj[kb]);
                    }
                    counts
                        .selection_ns
                        .fetch_add(t_sel.elapsed().as_nanos() as u64, Relaxed);
                    counts.selection_blocks.fetch_add((qb * nq) as u64, Relaxed);
                }
                (Some(pat), None) => merge_blocks(&mut tile_r, qb, block, |kb| pat.allows(qb, kb)),
            }
            // Which key blocks a range walk covers.
            #[derive(Clone, Copy)]
            enum Set {
                /// The tile's: what any of its queries attends to.
                Tile,
                /// Query `j`'s own.
                Query(usize),
                /// The tile's but not query `j`'s.
                TileNotQuery(usize),
            }
            let (tile_r, own_r, not_r) = (&tile_r, &own_r, &not_r);
            // The cache slots of the key positions `from..end` in `set` (adjacent blocks
            // merged, so a dense pattern is one range), each split where the ring wraps, in
            // position order.
            let for_each_range =
                |from: usize, end: usize, set: Set, f: &mut dyn FnMut(std::ops::Range<usize>)| {
                    let mut emit = |a: usize, b: usize| {
                        if a >= b {
                            return;
                        }
                        let (sa, len) = (a % slots, b - a);
                        if sa + len <= slots {
                            f(sa..sa + len);
                        } else {
                            f(sa..slots);
                            f(0..sa + len - slots);
                        }
                    };
                    let list = match (pattern, select.is_some(), set) {
                        (None, _, Set::TileNotQuery(_)) => return,
                        (None, _, _) => return emit(from, end),
                        (Some(_), false, Set::TileNotQuery(_)) => return,
                        (Some(_), false, _) | (Some(_), true, Set::Tile) => tile_r,
                        (Some(_), true, Set::Query(j)) => &own_r[j],
                        (Some(_), true, Set::TileNotQuery(j)) => &not_r[j],
                    };
                    for &(a, b) in list {
                        emit(a.max(from), b.min(end));
                    }
                };
            let q_tile = dot::Strided {
                data: &q[t * q_dim + h * hd..],
                stride: q_dim,
            };
            let first = lo(p0);
            for_each_range(first, last + 1, Set::Tile, &mut |keys| {
                let out = dot::StridedMut {
                    data: &mut *scores,
                    stride: max_ctx,
                };
                dot::attn_scores(q_tile, nq, kt, hd, keys, scale, out);
            });
            let mut inv = [0f32; QUERY_TILE];
            let (mut attended, mut causal, mut computed) = (0u64, 0u64, 0u64);
            for (j, inv) in inv.iter_mut().enumerate().take(nq) {
                let p = p0 + j;
                let row = &mut scores[j * max_ctx..(j + 1) * max_ctx];
                let mut max = f32::NEG_INFINITY;
                for_each_range(lo(p), p + 1, Set::Query(j), &mut |keys| {
                    attended += keys.len() as u64;
                    max = max.max(dot::max_f32(&row[keys]))
                });
                causal += (p + 1 - lo(p)) as u64;
                for_each_range(lo(p), p + 1, Set::Tile, &mut |keys| {
                    computed += keys.len() as u64
                });
                let mut lanes = [0f32; dot::ATT_LANES];
                for_each_range(lo(p), p + 1, Set::Query(j), &mut |keys| {
                    dot::attn_exp(row, keys, max, &mut lanes)
                });
                *inv = 1.0 / dot::lanes_sum(&lanes);
                // Keys the tile covers that this query does not see weigh nothing here.
                for_each_range(first, lo(p), Set::Tile, &mut |keys| row[keys].fill(0.0));
                for_each_range(p + 1, last + 1, Set::Tile, &mut |keys| row[keys].fill(0.0));
                for_each_range(lo(p), p + 1, Set::TileNotQuery(j), &mut |keys| {
                    row[keys].fill(0.0)
                });
            }
            counts.keys.fetch_add(attended, Relaxed);
            counts.causal_keys.fetch_add(causal, Relaxed);
            counts.computed_keys.fetch_add(computed, Relaxed);
            // SAFETY: head h writes only att[t.., h·hd .. (h+1)·hd], disjoint across heads
            // and across the tasks of one head (different tokens).
            let out_all = unsafe {
                std::slice::from_raw_parts_mut(att.0.add(t * q_dim + h * hd), (nq - 1) * q_dim + hd)
            };
            for j in 0..nq {
                out_all[j * q_dim..j * q_dim + hd].fill(0.0);
            }
            for_each_range(first, last + 1, Set::Tile, &mut |keys| {
                let p = dot::Strided {
                    data: &*scores,
                    stride: max_ctx,
                };
                let out = dot::StridedMut {
                    data: &mut *out_all,
                    stride: q_dim,
                };
                dot::attn_values(p, nq, vs, hd, keys, out);
            });
            for (j, &inv) in inv.iter().enumerate().take(nq) {
                out_all[j * q_dim..j * q_dim + hd]
                    .iter_mut()
                    .for_each(|o| *o *= inv);
                if watch {
                    // The observer sees probabilities by key position 0..=p, zero where the
                    // window or the mask excluded the key.
                    let p = p0 + j;
                    let row = &scores[j * max_ctx..(j + 1) * max_ctx];
                    let mut probs = vec![0f32; p + 1];
                    let mut at = lo(p);
                    for_each_range(lo(p), p + 1, Set::Query(j), &mut |keys| {
                        // Ranges come in position order; skip what the mask left out.
                        let start = keys.start;
                        let pos = position_of(start, at, slots);
                        for (k, &w) in keys.clone().zip(&row[keys.clone()]) {
                            probs[pos + (k - start)] = w * inv;
                        }
                        at = pos + keys.len();
                    });
                    let mut ob = Vec::new();
                    if let Some(b) = obs_bounds {
                        let nqb = p / b;
                        ob = vec![0f32; nqb];
                        let qj = &q[(t + j) * q_dim + h * hd..(t + j) * q_dim + (h + 1) * hd];
                        let mut qq = vec![0f32; 2 * hd];
                        crate::mask::quest_query(qj, &mut qq);
                        crate::mask::quest_bounds(&qq, summary, nqb, scale, &mut ob);
                    }
                    obs.attention(l, h, p, &probs, &ob);
                }
            }
            t += nq;
        }
    };
    // Without an observer, each head's queries are split into chunks so that the two
    // threads' shares even out (nine heads on two threads leave one idle a ninth of the
    // time); the latest, costliest chunks go first. Every query row is computed the same way
    // whichever task runs it. An observer sees each head's rows in order, from one task.
    let chunks = if watch {
        1
    } else {
        (n / 32).clamp(1, ATTENTION_CHUNKS)
    };
    let per = n.div_ceil(chunks);
    crate::team::for_each(c.n_heads * chunks, &|i| {
        let sp = scores_ptr;
        let (k, h) = (chunks - 1 - i / c.n_heads, i % c.n_heads);
        let len = QUERY_TILE * max_ctx;
        // SAFETY: task i owns scores rows i·QUERY_TILE .. (i+1)·QUERY_TILE.
        let scores = unsafe { std::slice::from_raw_parts_mut(sp.0.add(i * len), len) };
        rows(h, k * per..((k + 1) * per).min(n), scores);
    });
}

/// The merged position ranges of the blocks `0..=qb` that `allowed` keeps, ascending (the last
/// open to the end).
#[inline]
fn merge_blocks(
    out: &mut Vec<(usize, usize)>,
    qb: usize,
    block: usize,
    allowed: impl Fn(usize) -> bool,
) {
    out.clear();
    let mut open: Option<usize> = None;
    for kb in 0..=qb {
        if allowed(kb) {
            open.get_or_insert(kb * block);
        } else if let Some(a) = open.take() {
            out.push((a, kb * block));
        }
    }
    if let Some(a) = open {
        out.push((a, usize::MAX));
    }
}

/// Brings layer `l`'s key-block summaries up to the blocks complete at position `end`: per kv
/// head and block of `block` tokens, the maximum then the minimum of each key dimension (exact
/// whatever the order, so the same in any batch). Global layers only (slot = position).
fn summarize(state: &mut State, l: usize, end: usize, block: usize, n_kv: usize, hd: usize) {
    if state.summary_block != block {
        state.summary_block = block;
        state.summarized.fill(0);
        state.summaries.iter_mut().for_each(Vec::clear);
    }
    let n_blocks = state.max_ctx.div_ceil(block);
    let (off, slots) = state.caches[l];
    let s = &mut state.summaries[l];
    if s.is_empty() {
        s.resize(n_kv * n_blocks * 2 * hd, 0.0);
    }
    let kc = &state.k_cache[off..off + n_kv * hd * slots];
    let complete = end / block;
    for kb in state.summarized[l]..complete {
        for g in 0..n_kv {
            let at = (g * n_blocks + kb) * 2 * hd;
            for d in 0..hd {
                let keys =
                    &kc[(g * hd + d) * slots + kb * block..(g * hd + d) * slots + (kb + 1) * block];
                let (mn, mx) = keys
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &k| {
                        (a.min(k), b.max(k))
                    });
                s[at + d] = mx;
                s[at + hd + d] = mn;
            }
        }
    }
    state.summarized[l] = state.summarized[l].max(complete);
}

/// The key position held in `slot`, the first position at or after `from` that maps to it.
fn position_of(slot: usize, from: usize, slots: usize) -> usize {
    let s = from % slots;
    if slot >= s {
        from + (slot - s)
    } else {
        from + (slots - s) + slot
    }
}

/// The most query chunks attention splits one head's batch into.
const ATTENTION_CHUNKS: usize = 4;

/// Queries of one head that share a pass over the keys and values.
const QUERY_TILE: usize = 4;

#[derive(Clone, Copy)]
struct AttOut(*mut f32);
unsafe impl Send for AttOut {}
unsafe impl Sync for AttOut {}
