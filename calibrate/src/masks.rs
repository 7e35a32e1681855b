//! Block-sparse attention masks derived from calibration.
//!
//! 1. [`AttentionStats`] observes the forward pass at a long context and accumulates, for every
//!    layer and query head, the attention probability mass of each (query block, key block)
//!    pair.
//! 2. [`derive`] picks per head the cheapest static pattern — attention-sink blocks at the
//!    start, a window of recent blocks, optional fixed "vertical" key blocks — that keeps at
//!    least the coverage target of the attention mass of every query block of that head; a
//!    head that needs dense attention stays dense.
//! 3. [`to_metadata`] / [`from_metadata`] store the patterns in the artifact under versioned
//!    `kiln.attention.*` keys (documented in `docs/attention-masks.md`); tools that do not know
//!    them ignore them and run dense.

use std::sync::Mutex;

use convert::gguf::{Metadata, Value, ValueType};
use kernels::{
    forward, BlockMask, ForwardOptions, HeadPattern, Logits, MatKind, Model, Observer, State,
};
use serde::Serialize;

/// Derivation settings (the `attention_masks` option of a build target, `kiln masks`'s flags).
///
/// With `max_kld`, kiln derives a ladder of masks of each kind, measures each against dense
/// attention on held-out text at `eval_ctx`, and ships the sparsest within the budget; without
/// it, one static mask at `coverage` (the expert knob).
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaskSettings {
    /// Quality budget: the largest mean KLD against dense attention to accept.
    #[serde(default)]
    pub max_kld: Option<f64>,
    /// Share of each head's attention mass to keep (one mask, no ladder).
    #[serde(default)]
    pub coverage: Option<f64>,
    /// Which kinds of mask to consider.
    #[serde(default)]
    pub kind: MaskKind,
    /// Tokens per block.
    #[serde(default = "block_default")]
    pub block: usize,
    /// Calibration context.
    #[serde(default = "ctx_default")]
    pub ctx: usize,
    /// Calibration chunks.
    #[serde(default = "chunks_default")]
    pub chunks: usize,
    /// Context the ladder is evaluated at (default: `ctx`).
    #[serde(default)]
    pub eval_ctx: Option<usize>,
    /// Evaluation chunks of `eval_ctx` tokens.
    #[serde(default = "eval_chunks_default")]
    pub eval_chunks: usize,
    /// Content-aware heads: leading blocks always kept.
    #[serde(default = "sink_default")]
    pub sink: usize,
    /// Content-aware heads: recent blocks always kept, counting the query's own.
    #[serde(default = "window_default")]
    pub window: usize,
}

/// The kinds of mask a derivation considers.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// Both kinds with `max_kld`; static with `coverage` alone.
    #[default]
    Auto,
    /// Sinks, window and vertical blocks, the same for every input.
    Static,
    /// Sinks and window, and key blocks chosen per query (Quest bounds).
    Content,
}

impl std::str::FromStr for MaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(MaskKind::Auto),
            "static" => Ok(MaskKind::Static),
            "content" => Ok(MaskKind::Content),
            _ => Err(format!("mask kind {s:?}: expected auto, static or content")),
        }
    }
}

impl Default for MaskSettings {
    fn default() -> Self {
        MaskSettings {
            max_kld: None,
            coverage: None,
            kind: MaskKind::Auto,
            block: block_default(),
            ctx: ctx_default(),
            chunks: chunks_default(),
            eval_ctx: None,
            eval_chunks: eval_chunks_default(),
            sink: sink_default(),
            window: window_default(),
        }
    }
}

impl MaskSettings {
    /// The coverage of the one static mask when no budget is given.
    pub fn fixed_coverage(&self) -> f64 {
        self.coverage.unwrap_or(0.99)
    }

    /// The evaluation context.
    pub fn eval_ctx(&self) -> usize {
        self.eval_ctx.unwrap_or(self.ctx)
    }

    /// The settings of the ladder: (kind, coverage target) pairs, cheapest first per kind.
    pub fn ladder(&self) -> Vec<(MaskKind, f64)> {
        if self.max_kld.is_none() {
            let kind = match self.kind {
                MaskKind::Content => MaskKind::Content,
                _ => MaskKind::Static,
            };
            return vec![(kind, self.fixed_coverage())];
        }
        let mut out = Vec::new();
        if self.kind != MaskKind::Content {
            out.extend(STATIC_LADDER.iter().map(|&c| (MaskKind::Static, c)));
        }
        if self.kind != MaskKind::Static {
            out.extend(CONTENT_LADDER.iter().map(|&c| (MaskKind::Content, c)));
        }
        out
    }
}

/// Coverage targets a budgeted derivation tries for static masks.
pub const STATIC_LADDER: [f64; 5] = [0.9, 0.95, 0.98, 0.99, 0.995];
/// Mean-coverage targets a budgeted derivation tries for content-aware masks.
pub const CONTENT_LADDER: [f64; 7] = [0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995];

fn block_default() -> usize {
    64
}
fn ctx_default() -> usize {
    2048
}
fn chunks_default() -> usize {
    2
}
fn eval_chunks_default() -> usize {
    1
}
fn sink_default() -> usize {
    1
}
fn window_default() -> usize {
    2
}

/// Version of the `kiln.attention.*` key set.
pub const MASK_FORMAT_VERSION: u32 = 2;

/// Largest sink and vertical counts the derivation tries.
const MAX_SINK: usize = 4;
const MAX_VERTICAL: usize = 4;

/// Attention mass per (layer, head, query block, key block).
pub struct AttentionStats {
    /// Tokens per block.
    pub block: usize,
    /// Blocks per sequence.
    pub n_blocks: usize,
    n_heads: usize,
    /// `[layer × head]` → `[qb × n_blocks + kb]` mass.
    mass: Vec<Mutex<Vec<f64>>>,
    /// Content-aware selection: sinks and window always kept.
    sink: usize,
    window: usize,
    /// `[layer × head]` → per threshold of [`THRESHOLDS`], what selection at that threshold
    /// would have kept over the observed queries.
    curves: Vec<Mutex<Vec<CurveSum>>>,
}

/// Thresholds (estimated share of the attention kept) the calibration evaluates per head.
pub const THRESHOLDS: [f32; 16] = [
    0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 1.0,
];

/// Sums over the observed queries of one head at one threshold.
#[derive(Debug, Clone, Copy, Default)]
pub struct CurveSum {
    /// Σ share of the true attention mass kept.
    pub coverage: f64,
    /// Σ keys attended.
    pub keys: f64,
    /// Σ causal keys.
    pub causal: f64,
    /// Queries.
    pub n: f64,
}

impl CurveSum {
    /// Adds one query: the share of its true attention kept (at most 1 is counted), the keys
    /// it attended and its causal keys.
    pub fn add(&mut self, coverage: f64, keys: usize, causal: usize) {
        self.coverage += coverage.min(1.0);
        self.keys += keys as f64;
        self.causal += causal as f64;
        self.n += 1.0;
    }

    /// (mean coverage, density) over the queries added.
    pub fn mean(&self) -> (f64, f64) {
        (
            self.coverage / self.n.max(1.0),
            self.keys / self.causal.max(1.0),
        )
    }
}

impl AttentionStats {
    /// Statistics for sequences of `ctx` tokens in blocks of `block`.
    pub fn new(n_layers: usize, n_heads: usize, ctx: usize, block: usize) -> Self {
        let n_blocks = ctx.div_ceil(block.max(1));
        AttentionStats {
            block: block.max(1),
            n_blocks,
            n_heads,
            mass: (0..n_layers * n_heads)
                .map(|_| Mutex::new(vec![0.0; n_blocks * n_blocks]))
                .collect(),
            sink: 1,
            window: 2,
            curves: (0..n_layers * n_heads)
                .map(|_| Mutex::new(vec![CurveSum::default(); THRESHOLDS.len()]))
                .collect(),
        }
    }

    /// The same, calibrating content-aware selection with `sink` and `window` blocks kept.
    pub fn with_selection(mut self, sink: usize, window: usize) -> Self {
        self.sink = sink;
        self.window = window.max(1);
        self
    }

    /// Per threshold of [`THRESHOLDS`]: (mean coverage, density) of `layer`, `head`.
    pub fn curve(&self, layer: usize, head: usize) -> Vec<(f64, f64)> {
        self.curves[layer * self.n_heads + head]
            .lock()
            .unwrap()
            .iter()
            .map(CurveSum::mean)
            .collect()
    }

    /// The accumulated mass of `layer`, `head` as `[qb][kb]` (row-major, `n_blocks²`).
    pub fn head(&self, layer: usize, head: usize) -> Vec<f64> {
        self.mass[layer * self.n_heads + head]
            .lock()
            .unwrap()
            .clone()
    }
}

impl Observer for AttentionStats {
    fn wants_attention(&self) -> bool {
        true
    }

    fn matmul_input(&self, _layer: usize, _kind: MatKind, _x: &[f32], _n_tok: usize) {}

    fn attention_bounds_block(&self) -> Option<usize> {
        Some(self.block)
    }

    fn attention(&self, layer: usize, head: usize, q_pos: usize, probs: &[f32], bounds: &[f32]) {
        let qb = q_pos / self.block;
        if qb >= self.n_blocks {
            return;
        }
        let true_mass: Vec<f64> = probs
            .chunks(self.block)
            .map(|c| c.iter().map(|&p| p as f64).sum::<f64>())
            .collect();
        {
            let mut m = self.mass[layer * self.n_heads + head].lock().unwrap();
            let row = &mut m[qb * self.n_blocks..(qb + 1) * self.n_blocks];
            for (r, &t) in row.iter_mut().zip(&true_mass) {
                *r += t;
            }
        }
        // Windowed layers get no bounds: nothing to calibrate.
        if bounds.len() == qb {
            let mut c = self.curves[layer * self.n_heads + head].lock().unwrap();
            selection_curve(
                bounds,
                &true_mass,
                q_pos,
                self.block,
                self.sink,
                self.window,
                &mut c,
            );
        }
    }
}

/// Adds one query's outcome at every threshold to `sums`: the blocks
/// [`kernels::select_blocks`] keeps for `bounds` (the query's scaled Quest bounds of the
/// complete key blocks), and the share of the query's true attention (`mass` per key block,
/// summing to 1) they hold.
pub fn selection_curve(
    bounds: &[f32],
    mass: &[f64],
    q_pos: usize,
    block: usize,
    sink: usize,
    window: usize,
    sums: &mut [CurveSum],
) {
    let qb = bounds.len();
    let keys_of = |kb: usize| ((kb + 1) * block).min(q_pos + 1) - kb * block;
    let mut keep = vec![false; qb + 1];
    let mut scratch = kernels::SelectScratch::default();
    for (s, &th) in sums.iter_mut().zip(THRESHOLDS.iter()) {
        kernels::select_blocks(bounds, qb, sink, window, th, &mut keep, &mut scratch);
        let (mut cov, mut keys) = (0f64, 0usize);
        for kb in (0..=qb).filter(|&kb| keep[kb]) {
            cov += mass[kb];
            keys += keys_of(kb);
        }
        s.add(cov, keys, q_pos + 1);
    }
}

/// Runs `model` over `tokens` in independent chunks of `ctx` and collects attention statistics.
pub fn collect(
    model: &Model,
    tokens: &[u32],
    ctx: usize,
    block: usize,
    chunks: usize,
    selection: (usize, usize),
    mut progress: impl FnMut(usize, usize),
) -> Result<AttentionStats, kernels::ForwardError> {
    let c = &model.config;
    let stats = AttentionStats::new(c.n_layers, c.n_heads, ctx, block)
        .with_selection(selection.0, selection.1);
    let n = chunks
        .min(tokens.len() / ctx)
        .max(if tokens.len() >= ctx { 1 } else { 0 });
    let mut st = State::new(c, ctx, 512);
    for k in 0..n {
        st.reset();
        for part in tokens[k * ctx..(k + 1) * ctx].chunks(512) {
            forward(
                model,
                &mut st,
                part,
                Logits::None,
                ForwardOptions::default(),
                &stats,
            )?;
        }
        progress(k + 1, n);
    }
    Ok(stats)
}

/// What the derivation chose for one head.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeadChoice {
    pub layer: usize,
    pub head: usize,
    /// `dense`, or `sink S window W vertical [..]`.
    pub pattern: String,
    /// Share of its calibration attention mass the pattern keeps, for the worst query block.
    pub coverage: f64,
    /// Share of causal blocks computed at the calibration length.
    pub density: f64,
}

/// Share of `mass` (`[qb][kb]`, `n` blocks) that `p` keeps, for the worst query block: every
/// query block must keep the target share of its own attention, so late queries, whose
/// attention spreads over the most keys, are not traded against early ones.
fn coverage_of(p: &HeadPattern, mass: &[f64], n: usize) -> f64 {
    let mut worst = 1.0f64;
    for qb in 0..n {
        let (mut kept, mut total) = (0.0, 0.0);
        for kb in 0..=qb {
            let m = mass[qb * n + kb];
            total += m;
            if p.allows(qb, kb) {
                kept += m;
            }
        }
        if total > 0.0 {
            worst = worst.min(kept / total);
        }
    }
    worst
}

/// The cheapest pattern for one head's `mass` that keeps `target` of it.
pub fn derive_head(mass: &[f64], n: usize, target: f64) -> (HeadPattern, f64, f64) {
    let dense = (HeadPattern::Dense, 1.0, 1.0);
    if target >= 1.0 {
        return dense;
    }
    let mut best = dense;
    for sink in 0..=MAX_SINK.min(n) {
        for window in 1..=n {
            let mut vertical: Vec<usize> = Vec::new();
            let mut p = HeadPattern::Sparse {
                sink,
                window,
                vertical: vertical.clone(),
            };
            let mut cov = coverage_of(&p, mass, n);
            // Verticals: the key blocks holding the most mass the pattern still misses.
            while cov < target && vertical.len() < MAX_VERTICAL {
                let mut missed = vec![0.0; n];
                for qb in 0..n {
                    for kb in 0..=qb {
                        if !p.allows(qb, kb) {
                            missed[kb] += mass[qb * n + kb];
                        }
                    }
                }
                let Some((kb, &m)) = missed.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))
                else {
                    break;
                };
                if m <= 0.0 {
                    break;
                }
                vertical.push(kb);
                vertical.sort_unstable();
                p = HeadPattern::Sparse {
                    sink,
                    window,
                    vertical: vertical.clone(),
                };
                cov = coverage_of(&p, mass, n);
            }
            if cov >= target {
                let d = p.density(n);
                // Cheapest first; on a tie, the pattern with fewer vertical blocks.
                let nv = |q: &HeadPattern| match q {
                    HeadPattern::Sparse { vertical, .. } => vertical.len(),
                    _ => usize::MAX,
                };
                if d < best.2 - 1e-12 || ((d - best.2).abs() <= 1e-12 && nv(&p) < nv(&best.0)) {
                    best = (p, cov, d);
                }
                break; // wider windows only cost more for this sink
            }
        }
    }
    best
}

/// Derives a mask from `stats` for `target` coverage; returns it and what was chosen per head.
/// Heads of `windowed` layers stay dense: their window is already local.
pub fn derive(
    stats: &AttentionStats,
    n_layers: usize,
    target: f64,
    windowed: &dyn Fn(usize) -> bool,
) -> (BlockMask, Vec<HeadChoice>) {
    let n = stats.n_blocks;
    each_head(stats, n_layers, windowed, |l, h| {
        derive_head(&stats.head(l, h), n, target)
    })
}

/// The mask and report of `choose(layer, head)` → (pattern, coverage, density) for every head
/// (dense for the heads of `windowed` layers).
fn each_head(
    stats: &AttentionStats,
    n_layers: usize,
    windowed: &dyn Fn(usize) -> bool,
    choose: impl Fn(usize, usize) -> (HeadPattern, f64, f64),
) -> (BlockMask, Vec<HeadChoice>) {
    let mut patterns = Vec::with_capacity(n_layers);
    let mut report = Vec::new();
    for l in 0..n_layers {
        let mut row = Vec::with_capacity(stats.n_heads);
        for h in 0..stats.n_heads {
            let (p, cov, d) = if windowed(l) {
                (HeadPattern::Dense, 1.0, 1.0)
            } else {
                choose(l, h)
            };
            report.push(HeadChoice {
                layer: l,
                head: h,
                pattern: describe(&p),
                coverage: cov,
                density: d,
            });
            row.push(p);
        }
        patterns.push(row);
    }
    (
        BlockMask {
            block: stats.block,
            patterns,
        },
        report,
    )
}

/// Derives a content-aware mask from `stats`: per head, the lowest threshold of
/// [`THRESHOLDS`] whose calibrated mean coverage reaches `target` (a head that needs them all
/// stays dense; windowed layers stay as they are).
pub fn derive_select(
    stats: &AttentionStats,
    n_layers: usize,
    target: f64,
    windowed: &dyn Fn(usize) -> bool,
) -> (BlockMask, Vec<HeadChoice>) {
    each_head(stats, n_layers, windowed, |l, h| {
        let curve = stats.curve(l, h);
        let pick = curve
            .iter()
            .position(|&(cov, _)| cov >= target)
            .filter(|&i| THRESHOLDS[i] < 1.0);
        match pick {
            Some(i) => (
                HeadPattern::Select {
                    sink: stats.sink,
                    window: stats.window,
                    threshold: THRESHOLDS[i],
                },
                curve[i].0,
                curve[i].1,
            ),
            None => (HeadPattern::Dense, 1.0, 1.0),
        }
    })
}

/// A short description of a pattern.
pub fn describe(p: &HeadPattern) -> String {
    match p {
        HeadPattern::Dense => "dense".into(),
        HeadPattern::Sparse {
            sink,
            window,
            vertical,
        } => format!("sink {sink} window {window} vertical {vertical:?}"),
        HeadPattern::Select {
            sink,
            window,
            threshold,
        } => format!("sink {sink} window {window} select {threshold}"),
    }
}

/// The `kiln.attention.*` keys for `mask`.
pub fn to_metadata(mask: &BlockMask, coverage: f64) -> Vec<(String, Value)> {
    let n_layers = mask.patterns.len();
    let n_heads = mask.patterns.first().map_or(0, |l| l.len());
    let (mut sink, mut window, mut offsets, mut vertical) =
        (Vec::new(), Vec::new(), vec![Value::U32(0)], Vec::new());
    let mut threshold = Vec::new();
    for l in &mask.patterns {
        for p in l {
            threshold.push(Value::F32(match p {
                HeadPattern::Select { threshold, .. } => *threshold,
                _ => -1.0,
            }));
            match p {
                HeadPattern::Dense => {
                    sink.push(Value::I32(-1));
                    window.push(Value::I32(-1));
                }
                HeadPattern::Select {
                    sink: s, window: w, ..
                } => {
                    sink.push(Value::I32(*s as i32));
                    window.push(Value::I32(*w as i32));
                }
                HeadPattern::Sparse {
                    sink: s,
                    window: w,
                    vertical: v,
                } => {
                    sink.push(Value::I32(*s as i32));
                    window.push(Value::I32(*w as i32));
                    vertical.extend(v.iter().map(|&k| Value::U32(k as u32)));
                }
            }
            offsets.push(Value::U32(vertical.len() as u32));
        }
    }
    vec![
        (
            "kiln.attention.version".into(),
            Value::U32(MASK_FORMAT_VERSION),
        ),
        (
            "kiln.attention.block_size".into(),
            Value::U32(mask.block as u32),
        ),
        (
            "kiln.attention.coverage".into(),
            Value::F32(coverage as f32),
        ),
        (
            "kiln.attention.layer_count".into(),
            Value::U32(n_layers as u32),
        ),
        (
            "kiln.attention.head_count".into(),
            Value::U32(n_heads as u32),
        ),
        (
            "kiln.attention.sink".into(),
            Value::Array(ValueType::I32, sink),
        ),
        (
            "kiln.attention.window".into(),
            Value::Array(ValueType::I32, window),
        ),
        (
            "kiln.attention.vertical_offsets".into(),
            Value::Array(ValueType::U32, offsets),
        ),
        (
            "kiln.attention.vertical".into(),
            Value::Array(ValueType::U32, vertical),
        ),
        (
            "kiln.attention.threshold".into(),
            Value::Array(ValueType::F32, threshold),
        ),
    ]
}

/// The keys recording a budgeted derivation: the budget, and the chosen mask's measured KLD
/// against dense attention and the context it was measured at.
pub fn budget_metadata(max_kld: f64, kld: f64, ctx: usize) -> Vec<(String, Value)> {
    vec![
        ("kiln.attention.max_kld".into(), Value::F32(max_kld as f32)),
        ("kiln.attention.kld".into(), Value::F32(kld as f32)),
        ("kiln.attention.eval_ctx".into(), Value::U32(ctx as u32)),
    ]
}

/// The error of `kiln.attention.*` keys that do not describe a mask.
#[derive(Debug, Clone, thiserror::Error)]
#[error("kiln.attention keys: {0}")]
pub struct MaskFormatError(pub String);

/// The mask stored in `md`, if any.
pub fn from_metadata(md: &Metadata) -> Result<Option<BlockMask>, MaskFormatError> {
    let Some(version) = md.u64("kiln.attention.version") else {
        return Ok(None);
    };
    let bad = |m: &str| MaskFormatError(m.to_string());
    if version != 1 && version != MASK_FORMAT_VERSION as u64 {
        return Err(MaskFormatError(format!(
            "version {version} (kiln reads 1 and {MASK_FORMAT_VERSION})"
        )));
    }
    let block = md
        .u64("kiln.attention.block_size")
        .filter(|&b| b > 0)
        .ok_or_else(|| bad("no block_size"))? as usize;
    let nl = md
        .u64("kiln.attention.layer_count")
        .ok_or_else(|| bad("no layer_count"))? as usize;
    let nh = md
        .u64("kiln.attention.head_count")
        .ok_or_else(|| bad("no head_count"))? as usize;
    let ints = |k: &str| -> Result<Vec<i64>, MaskFormatError> {
        md.get(k)
            .and_then(Value::as_array)
            .ok_or_else(|| MaskFormatError(format!("no {k}")))?
            .iter()
            .map(|v| match v {
                Value::I32(x) => Ok(*x as i64),
                Value::U32(x) => Ok(*x as i64),
                _ => Err(MaskFormatError(format!("{k} holds a non-integer"))),
            })
            .collect()
    };
    let (sink, window, offs, vert) = (
        ints("kiln.attention.sink")?,
        ints("kiln.attention.window")?,
        ints("kiln.attention.vertical_offsets")?,
        ints("kiln.attention.vertical")?,
    );
    let n = nl
        .checked_mul(nh)
        .filter(|&n| n <= 1 << 20)
        .ok_or_else(|| bad("layer × head count out of range"))?;
    if sink.len() != n || window.len() != n || offs.len() != n + 1 {
        return Err(bad("array lengths do not match layer_count × head_count"));
    }
    // Version 2: a threshold per head, ≥ 0 for a content-aware head.
    let threshold: Vec<f32> = if version >= 2 {
        let t: Vec<f32> = md
            .get("kiln.attention.threshold")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no threshold (version 2)"))?
            .iter()
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                _ => Err(bad("threshold holds a non-f32")),
            })
            .collect::<Result<_, _>>()?;
        if t.len() != n {
            return Err(bad(
                "threshold length does not match layer_count × head_count",
            ));
        }
        if t.iter().any(|&x| x.is_nan() || x > 1.0) {
            return Err(bad("a threshold is NaN or above 1"));
        }
        t
    } else {
        vec![-1.0; n]
    };
    let mut patterns = Vec::with_capacity(nl);
    for l in 0..nl {
        let mut row = Vec::with_capacity(nh);
        for h in 0..nh {
            let i = l * nh + h;
            if sink[i] < 0 || window[i] < 0 {
                row.push(HeadPattern::Dense);
                continue;
            }
            if threshold[i] >= 0.0 {
                row.push(HeadPattern::Select {
                    sink: sink[i] as usize,
                    window: (window[i] as usize).max(1),
                    threshold: threshold[i],
                });
                continue;
            }
            let (a, b) = (offs[i], offs[i + 1]);
            if a < 0 || b < a || b as usize > vert.len() {
                return Err(bad("vertical_offsets out of range"));
            }
            let mut v: Vec<usize> = vert[a as usize..b as usize]
                .iter()
                .map(|&k| k as usize)
                .collect();
            v.sort_unstable();
            row.push(HeadPattern::Sparse {
                sink: sink[i] as usize,
                window: (window[i] as usize).max(1),
                vertical: v,
            });
        }
        patterns.push(row);
    }
    Ok(Some(BlockMask { block, patterns }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_finds_local_heads_and_keeps_diffuse_ones_dense() {
        let n = 16;
        // A local head: mass on the diagonal block and the first block.
        let mut local = vec![0.0; n * n];
        // A diffuse head: uniform over all causal blocks.
        let mut diffuse = vec![0.0; n * n];
        for qb in 0..n {
            local[qb * n + qb] += 0.9;
            local[qb * n] += 0.1;
            for kb in 0..=qb {
                diffuse[qb * n + kb] = 1.0 / (qb + 1) as f64;
            }
        }
        let (p, cov, d) = derive_head(&local, n, 0.99);
        assert_eq!(
            p,
            HeadPattern::Sparse {
                sink: 1,
                window: 1,
                vertical: vec![]
            }
        );
        assert!(cov >= 0.99 && d < 0.25, "{cov} {d}");
        let (p, _, d) = derive_head(&diffuse, n, 0.99);
        assert!(d > 0.9, "diffuse head stays (nearly) dense: {p:?}");
        assert_eq!(derive_head(&local, n, 1.0).0, HeadPattern::Dense);
    }

    #[test]
    fn content_aware_calibration_picks_the_lowest_threshold_reaching_the_target() {
        // One head, blocks of 4, queries in block 8: the bounds point at block 3, where the
        // true attention is too; the window is the query's own block.
        let stats = AttentionStats::new(1, 1, 36, 4).with_selection(1, 1);
        let mut bounds = vec![-30f32; 8];
        bounds[3] = 0.0;
        for q_pos in 32..36 {
            let mut probs = vec![0f32; q_pos + 1];
            probs[13] = 0.9; // block 3
            probs[q_pos] = 0.1; // own block
            stats.attention(0, 0, q_pos, &probs, &bounds);
        }
        let curve = stats.curve(0, 0);
        // Every threshold takes block 3 first: coverage 1 at density (4 + own) / causal.
        assert!(
            curve.iter().all(|&(c, _)| (c - 1.0).abs() < 1e-6),
            "{curve:?}"
        );
        let (mask, report) = derive_select(&stats, 1, 0.99, &|_| false);
        assert_eq!(
            mask.patterns[0][0],
            HeadPattern::Select {
                sink: 1,
                window: 1,
                threshold: THRESHOLDS[0]
            }
        );
        assert!(report[0].density < 0.4, "{report:?}");
        // A windowed layer keeps its window: dense here.
        let (mask, _) = derive_select(&stats, 1, 0.99, &|_| true);
        assert_eq!(mask.patterns[0][0], HeadPattern::Dense);
    }

    #[test]
    fn metadata_round_trips() {
        let mask = BlockMask {
            block: 64,
            patterns: vec![
                vec![
                    HeadPattern::Dense,
                    HeadPattern::Sparse {
                        sink: 1,
                        window: 4,
                        vertical: vec![3, 9],
                    },
                ],
                vec![
                    HeadPattern::Sparse {
                        sink: 0,
                        window: 2,
                        vertical: vec![],
                    },
                    HeadPattern::Select {
                        sink: 1,
                        window: 2,
                        threshold: 0.95,
                    },
                ],
            ],
        };
        let mut md = Metadata::new();
        for (k, v) in to_metadata(&mask, 0.99) {
            md.set(k, v);
        }
        assert_eq!(from_metadata(&md).unwrap(), Some(mask.clone()));
        assert_eq!(from_metadata(&Metadata::new()).unwrap(), None);
        // A version-1 file (no thresholds) still loads: its heads are static.
        let mut v1 = md.clone();
        v1.set("kiln.attention.version", Value::U32(1));
        v1.remove("kiln.attention.threshold");
        let got = from_metadata(&v1).unwrap().unwrap();
        assert_eq!(got.patterns[0], mask.patterns[0]);
        md.set("kiln.attention.version", Value::U32(99));
        assert!(from_metadata(&md).is_err());
    }
}
