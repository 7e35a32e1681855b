//! Block-sparse attention masks: for each layer and query head, which key blocks each query
//! may attend to. Two kinds of head pattern exist besides dense:
//!
//! * **static** ([`HeadPattern::Sparse`]): the first `sink` blocks (attention sinks), the
//!   `window` most recent blocks (always including the query's own block) and any fixed
//!   "vertical" key blocks — the same blocks for every input;
//! * **content-aware** ([`HeadPattern::Select`]): sinks and window always, and per query the
//!   other complete key blocks with the highest Quest bound `Σ_d max(q_d·min_d, q_d·max_d)`
//!   (per-block minimum and maximum of the cached keys), added highest first until their
//!   share of the estimated attention (`Σ exp(scale · bound)` over the query's complete
//!   blocks) reaches the head's threshold — see [`select_blocks`].
//!
//! Everything else is skipped by the kernel. Causality always holds.

/// One head's pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadPattern {
    /// Every causal block.
    Dense,
    /// Sinks, a local window and vertical blocks.
    Sparse {
        /// Blocks at the start always kept.
        sink: usize,
        /// Most recent blocks kept, counting the query's own (≥ 1).
        window: usize,
        /// Further key blocks always kept (sorted).
        vertical: Vec<usize>,
    },
    /// Sinks and a window always, and per query the highest-scoring other key blocks until
    /// their estimated share of the query's attention reaches `threshold` (in (0, 1]).
    Select {
        /// Blocks at the start always kept.
        sink: usize,
        /// Most recent blocks kept, counting the query's own (≥ 1).
        window: usize,
        /// Estimated share of the attention the kept blocks must reach.
        threshold: f32,
    },
}

impl HeadPattern {
    /// True when query block `qb` always attends to key block `kb` (for a content-aware head:
    /// its sinks and window, the blocks kept whatever the input).
    #[inline]
    pub fn allows(&self, qb: usize, kb: usize) -> bool {
        if kb > qb {
            return false;
        }
        match self {
            HeadPattern::Dense => true,
            HeadPattern::Sparse {
                sink,
                window,
                vertical,
            } => kb < *sink || qb - kb < (*window).max(1) || vertical.binary_search(&kb).is_ok(),
            HeadPattern::Select { sink, window, .. } => kb < *sink || qb - kb < (*window).max(1),
        }
    }

    /// True for a content-aware pattern (blocks chosen per query).
    pub fn is_select(&self) -> bool {
        matches!(self, HeadPattern::Select { .. })
    }

    /// The share of causal blocks computed for a sequence of `n_blocks` blocks (for a
    /// content-aware head, the share it always computes: a lower bound).
    pub fn density(&self, n_blocks: usize) -> f64 {
        let total = n_blocks * (n_blocks + 1) / 2;
        let kept: usize = (0..n_blocks)
            .map(|qb| (0..=qb).filter(|&kb| self.allows(qb, kb)).count())
            .sum();
        kept as f64 / total.max(1) as f64
    }
}

/// Patterns for every layer and head, with the block size.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockMask {
    /// Tokens per block.
    pub block: usize,
    /// `patterns[layer][head]`.
    pub patterns: Vec<Vec<HeadPattern>>,
}

impl BlockMask {
    /// A mask with every head dense.
    pub fn dense(block: usize, n_layers: usize, n_heads: usize) -> Self {
        BlockMask {
            block: block.max(1),
            patterns: vec![vec![HeadPattern::Dense; n_heads]; n_layers],
        }
    }

    /// The pattern of `head` in `layer` (dense if the mask does not cover it).
    #[inline]
    pub fn pattern(&self, layer: usize, head: usize) -> &HeadPattern {
        const DENSE: HeadPattern = HeadPattern::Dense;
        self.patterns
            .get(layer)
            .and_then(|l| l.get(head))
            .unwrap_or(&DENSE)
    }

    /// True when some head chooses its blocks per query.
    pub fn is_select(&self) -> bool {
        self.patterns.iter().flatten().any(HeadPattern::is_select)
    }

    /// Mean density over layers and heads for `n_blocks` blocks (for content-aware heads,
    /// their sinks and window only: the density the kernel measures is the real one).
    pub fn density(&self, n_blocks: usize) -> f64 {
        let all: Vec<f64> = self
            .patterns
            .iter()
            .flatten()
            .map(|p| p.density(n_blocks))
            .collect();
        all.iter().sum::<f64>() / all.len().max(1) as f64
    }
}

/// Scratch of [`select_blocks`].
#[derive(Debug, Default)]
pub struct SelectScratch {
    w: Vec<f32>,
    bin: Vec<u8>,
    members: Vec<u32>,
}

/// Estimated weights per bin are grouped `1 / BIN_SCALE` nats apart; blocks more than
/// `BINS / BIN_SCALE` nats below the best share the last bin.
const BINS: usize = 48;
const BIN_SCALE: f32 = 2.0;

/// The content-aware choice of one query in query block `qb` (`qb` complete key blocks before
/// it): `bound[kb]` for `kb < qb` is the scaled Quest bound of key block `kb`; `keep[kb]` is
/// set for every block the query attends to (its own block, the sinks, the window, and the
/// chosen ones).
///
/// A block's estimated share of the attention is `exp(bound − max) / Σ exp(bound − max)`
/// over the complete blocks (the attention softmax's exponential and lane sums). Sinks and window count as kept; the other blocks are taken in
/// order of falling estimate until the kept share reaches `threshold`. The order is by bins
/// half a nat wide (one pass, no sort: the selection runs for every query and head), and
/// inside the bin where the threshold falls by estimate, then age (older first). Every step
/// is a fixed sequence of f32 operations on values that depend only on the query and the
/// cached keys, so a query picks the same blocks alone or in any batch.
pub fn select_blocks(
    bound: &[f32],
    qb: usize,
    sink: usize,
    window: usize,
    threshold: f32,
    keep: &mut [bool],
    s: &mut SelectScratch,
) {
    let window = window.max(1);
    for (kb, k) in keep.iter_mut().enumerate().take(qb + 1) {
        // A threshold of 1 keeps every block (f32 sums cannot tell it from 1 − ε).
        *k = kb < sink || qb - kb < window || threshold >= 1.0;
    }
    // Candidates: complete blocks neither sink nor window.
    let cand_end = (qb + 1).saturating_sub(window).min(qb);
    if cand_end <= sink {
        return;
    }
    // exp(bound − max) with the softmax's SIMD exponential (the same bits at every level).
    s.w.clear();
    s.w.extend_from_slice(&bound[..qb]);
    let max = crate::dot::max_f32(&s.w);
    let mut lanes = [0f32; crate::dot::ATT_LANES];
    crate::dot::attn_exp(&mut s.w, 0..qb, max, &mut lanes);
    let total = crate::dot::lanes_sum(&lanes);
    let mut kept = 0f32;
    for (kb, &w) in s.w.iter().enumerate() {
        if keep[kb] {
            kept += w;
        }
    }
    let goal = threshold * total;
    if kept >= goal {
        return;
    }
    let mut bin_sum = [0f32; BINS];
    s.bin.clear();
    s.bin.resize(qb, 0);
    for kb in sink..cand_end {
        let b = (((max - bound[kb]) * BIN_SCALE) as usize).min(BINS - 1);
        s.bin[kb] = b as u8;
        bin_sum[b] += s.w[kb];
    }
    // Whole bins while they do not reach the goal; then the bin that does, block by block.
    let mut last = BINS;
    for (b, &sum) in bin_sum.iter().enumerate() {
        if kept + sum >= goal {
            last = b;
            break;
        }
        kept += sum;
    }
    for kb in sink..cand_end {
        if (s.bin[kb] as usize) < last {
            keep[kb] = true;
        }
    }
    if last == BINS {
        return;
    }
    s.members.clear();
    s.members.extend(
        (sink..cand_end)
            .filter(|&kb| s.bin[kb] as usize == last)
            .map(|kb| kb as u32),
    );
    let w = &s.w;
    s.members
        .sort_unstable_by(|&a, &b| w[b as usize].total_cmp(&w[a as usize]).then(a.cmp(&b)));
    for &kb in &s.members {
        keep[kb as usize] = true;
        kept += w[kb as usize];
        if kept >= goal {
            break;
        }
    }
}

/// The query side of the Quest bound: `[max(q, 0); min(q, 0)]` (2·hd values), so that
/// `Σ_d max(q_d·min_d, q_d·max_d) = [q⁺; q⁻] · [max; min]` is one dot product.
pub fn quest_query(q: &[f32], out: &mut [f32]) {
    let hd = q.len();
    for d in 0..hd {
        out[d] = q[d].max(0.0);
        out[hd + d] = q[d].min(0.0);
    }
}

/// The scaled Quest bound `scale · Σ_d max(q_d·min_d, q_d·max_d)` of each of `n` key blocks
/// whose summaries are `summary[kb · 2·hd ..]` (`hd` maxima then `hd` minima), from
/// `qq = quest_query(q)`.
pub fn quest_bounds(qq: &[f32], summary: &[f32], n: usize, scale: f32, out: &mut [f32]) {
    let h2 = qq.len();
    for (kb, o) in out.iter_mut().enumerate().take(n) {
        *o = crate::dot::vec_dot_f32(qq, &summary[kb * h2..(kb + 1) * h2]) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_causal_and_keep_sinks_window_and_verticals() {
        let p = HeadPattern::Sparse {
            sink: 1,
            window: 2,
            vertical: vec![4],
        };
        assert!(p.allows(7, 0) && p.allows(7, 7) && p.allows(7, 6) && p.allows(7, 4));
        assert!(!p.allows(7, 5) && !p.allows(7, 1) && !p.allows(3, 4));
        assert_eq!(HeadPattern::Dense.density(8), 1.0);
        let d = p.density(32);
        assert!(d > 0.2 && d < 0.25, "{d}");
    }

    #[test]
    fn selection_keeps_sinks_window_and_the_strongest_blocks_until_the_threshold() {
        // Block 3 holds most of the estimated attention, block 5 a little, the rest nothing.
        let mut bound = vec![-20f32; 8];
        bound[3] = 5.0;
        bound[5] = 3.0;
        let (mut keep, mut order) = (vec![false; 9], SelectScratch::default());
        select_blocks(&bound, 8, 1, 2, 0.8, &mut keep, &mut order);
        let kept: Vec<usize> = (0..9).filter(|&k| keep[k]).collect();
        assert_eq!(kept, vec![0, 3, 7, 8]);
        select_blocks(&bound, 8, 1, 2, 0.99, &mut keep, &mut order);
        let kept: Vec<usize> = (0..9).filter(|&k| keep[k]).collect();
        assert_eq!(kept, vec![0, 3, 5, 7, 8]);
        // Threshold 1 keeps everything.
        select_blocks(&bound, 8, 1, 2, 1.0, &mut keep, &mut order);
        assert!(keep[..9].iter().all(|&k| k));
        // Blocks in one bin go by estimate: 4 (2.9) before 2 (2.8) before 1.
        let bound = [-20.0, 2.0, 2.8, -20.0, 2.9, -20.0, -20.0, -20.0f32];
        select_blocks(&bound, 8, 1, 2, 0.5, &mut keep, &mut order);
        let kept: Vec<usize> = (0..9).filter(|&k| keep[k]).collect();
        assert_eq!(kept, vec![0, 2, 4, 7, 8]);
        // The Quest bound is at least every key's score.
        let (hd, keys) = (4, [[1.0f32, -2.0, 0.5, 3.0], [-1.0, 0.0, 2.0, -3.0]]);
        let q = [0.5f32, -1.0, 2.0, 0.25];
        let mut s = vec![0f32; 2 * hd];
        for d in 0..hd {
            s[d] = keys[0][d].max(keys[1][d]);
            s[hd + d] = keys[0][d].min(keys[1][d]);
        }
        let (mut qq, mut b) = ([0f32; 8], [0f32]);
        quest_query(&q, &mut qq);
        quest_bounds(&qq, &s, 1, 1.0, &mut b);
        let want: f32 = (0..hd).map(|d| (q[d] * s[hd + d]).max(q[d] * s[d])).sum();
        assert!((b[0] - want).abs() < 1e-5, "{} {want}", b[0]);
        for k in keys {
            let dot: f32 = q.iter().zip(k).map(|(a, b)| a * b).sum();
            assert!(b[0] >= dot);
        }
    }
}
