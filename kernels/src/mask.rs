//! Block-sparse attention masks: for each layer and query head, which key blocks each query
//! block may attend to. A pattern keeps the first `sink` blocks (attention sinks), the
//! `window` most recent blocks (always including the query's own block), and any fixed
//! "vertical" key blocks; everything else is skipped by the kernel. Causality always holds.

/// One head's pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl HeadPattern {
    /// True when query block `qb` may attend to key block `kb`.
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
        }
    }

    /// The share of causal blocks computed for a sequence of `n_blocks` blocks.
    pub fn density(&self, n_blocks: usize) -> f64 {
        let total = n_blocks * (n_blocks + 1) / 2;
        let kept: usize = (0..n_blocks)
            .map(|qb| (0..=qb).filter(|&kb| self.allows(qb, kb)).count())
            .sum();
        kept as f64 / total.max(1) as f64
    }
}

/// Patterns for every layer and head, with the block size.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Mean density over layers and heads for `n_blocks` blocks.
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
}
