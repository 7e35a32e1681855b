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
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaskSettings {
    /// Share of each head's attention mass to keep.
    #[serde(default = "coverage_default")]
    pub coverage: f64,
    /// Tokens per block.
    #[serde(default = "block_default")]
    pub block: usize,
    /// Calibration context.
    #[serde(default = "ctx_default")]
    pub ctx: usize,
    /// Calibration chunks.
    #[serde(default = "chunks_default")]
    pub chunks: usize,
}

fn coverage_default() -> f64 {
    0.99
}
fn block_default() -> usize {
    64
}
fn ctx_default() -> usize {
    2048
}
fn chunks_default() -> usize {
    2
}

/// Version of the `kiln.attention.*` key set.
pub const MASK_FORMAT_VERSION: u32 = 1;

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
        }
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

    fn attention(&self, layer: usize, head: usize, q_pos: usize, probs: &[f32]) {
        let qb = q_pos / self.block;
        if qb >= self.n_blocks {
            return;
        }
        let mut m = self.mass[layer * self.n_heads + head].lock().unwrap();
        let row = &mut m[qb * self.n_blocks..(qb + 1) * self.n_blocks];
        for (kb, chunk) in probs.chunks(self.block).enumerate() {
            row[kb] += chunk.iter().map(|&p| p as f64).sum::<f64>();
        }
    }
}

/// Runs `model` over `tokens` in independent chunks of `ctx` and collects attention statistics.
pub fn collect(
    model: &Model,
    tokens: &[u32],
    ctx: usize,
    block: usize,
    chunks: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<AttentionStats, kernels::ForwardError> {
    let c = &model.config;
    let stats = AttentionStats::new(c.n_layers, c.n_heads, ctx, block);
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
                    HeadPattern::Dense => usize::MAX,
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
pub fn derive(
    stats: &AttentionStats,
    n_layers: usize,
    target: f64,
) -> (BlockMask, Vec<HeadChoice>) {
    let n = stats.n_blocks;
    let mut patterns = Vec::with_capacity(n_layers);
    let mut report = Vec::new();
    for l in 0..n_layers {
        let mut row = Vec::with_capacity(stats.n_heads);
        for h in 0..stats.n_heads {
            let (p, cov, d) = derive_head(&stats.head(l, h), n, target);
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

/// A short description of a pattern.
pub fn describe(p: &HeadPattern) -> String {
    match p {
        HeadPattern::Dense => "dense".into(),
        HeadPattern::Sparse {
            sink,
            window,
            vertical,
        } => format!("sink {sink} window {window} vertical {vertical:?}"),
    }
}

/// The `kiln.attention.*` keys for `mask`.
pub fn to_metadata(mask: &BlockMask, coverage: f64) -> Vec<(String, Value)> {
    let n_layers = mask.patterns.len();
    let n_heads = mask.patterns.first().map_or(0, |l| l.len());
    let (mut sink, mut window, mut offsets, mut vertical) =
        (Vec::new(), Vec::new(), vec![Value::U32(0)], Vec::new());
    for l in &mask.patterns {
        for p in l {
            match p {
                HeadPattern::Dense => {
                    sink.push(Value::I32(-1));
                    window.push(Value::I32(-1));
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
    if version != MASK_FORMAT_VERSION as u64 {
        return Err(MaskFormatError(format!(
            "version {version} (kiln reads {MASK_FORMAT_VERSION})"
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
    let mut patterns = Vec::with_capacity(nl);
    for l in 0..nl {
        let mut row = Vec::with_capacity(nh);
        for h in 0..nh {
            let i = l * nh + h;
            if sink[i] < 0 || window[i] < 0 {
                row.push(HeadPattern::Dense);
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
                    HeadPattern::Dense,
                ],
            ],
        };
        let mut md = Metadata::new();
        for (k, v) in to_metadata(&mask, 0.99) {
            md.set(k, v);
        }
        assert_eq!(from_metadata(&md).unwrap(), Some(mask));
        assert_eq!(from_metadata(&Metadata::new()).unwrap(), None);
        md.set("kiln.attention.version", Value::U32(99));
        assert!(from_metadata(&md).is_err());
    }
}
