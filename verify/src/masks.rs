//! A ladder of attention masks measured against dense attention on the same weights: per
//! setting, the KL divergence and top-1 agreement of the next-token distributions, the
//! density the kernel really computed, and the time of attention, of the whole prefill
//! (logits excluded) and of decode at a filled context — dense measured in the same run, so
//! every speed figure is a ratio of two measurements taken side by side.

use kernels::{forward, BlockMask, ForwardError, ForwardOptions, Logits, Model, NoObserver, State};
use std::sync::atomic::Ordering::Relaxed;

use crate::report::MaskPoint;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct LadderOptions {
    /// Tokens per evaluated sequence.
    pub ctx: usize,
    /// Sequences (consecutive `ctx`-token chunks of the text).
    pub chunks: usize,
    /// Tokens per forward call of the prefill.
    pub batch: usize,
    /// Tokens decoded one at a time after the last sequence (0: no decode figure).
    pub decode: usize,
}

/// One entry of the ladder: its kind, its setting and its mask (`None`: dense).
pub struct Rung<'a> {
    pub kind: String,
    pub setting: f64,
    pub mask: Option<&'a BlockMask>,
}

/// The error of a ladder evaluation.
#[derive(Debug, thiserror::Error)]
pub enum LadderError {
    #[error("the evaluation text has {have} tokens, fewer than one context of {ctx}")]
    TooShort { have: usize, ctx: usize },
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

#[derive(Default)]
struct Acc {
    kld: Vec<f64>,
    same: usize,
    attention: f64,
    prefill: f64,
    selection: f64,
    keys: u64,
    causal: u64,
    computed: u64,
    sel_blocks: u64,
    decode_tps: Option<f64>,
}

/// Measures `rungs` (dense first) on `tokens`. The scored positions are the second half of each
/// sequence (llama.cpp's perplexity convention: every scored token has at least `ctx / 2`
/// tokens of context). `progress(done, total)` after each run.
pub fn evaluate(
    model: &Model,
    rungs: &[Rung],
    tokens: &[u32],
    o: &LadderOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<MaskPoint>, LadderError> {
    let c = &model.config;
    let ctx = o.ctx;
    let chunks = o.chunks.min(tokens.len() / ctx.max(1));
    if chunks == 0 || ctx < 4 {
        return Err(LadderError::TooShort {
            have: tokens.len(),
            ctx,
        });
    }
    let first = ctx / 2;
    let vocab = c.vocab;
    let mut st = State::new(c, ctx + o.decode, o.batch);
    let mut ref_lp = vec![0f32; (ctx - first) * vocab];
    let mut ref_top = vec![0usize; ctx - first];
    let mut lq = vec![0f64; vocab];
    let mut accs: Vec<Acc> = rungs.iter().map(|_| Acc::default()).collect();
    let total = chunks * rungs.len();
    for ch in 0..chunks {
        let seq = &tokens[ch * ctx..(ch + 1) * ctx];
        for (i, (rung, acc)) in rungs.iter().zip(accs.iter_mut()).enumerate() {
            let fo = ForwardOptions {
                mask: rung.mask,
                ..Default::default()
            };
            st.reset();
            let (a0, o0) = (st.attention_time, st.output_time);
            let cnt = &st.attention_counts;
            let (k0, c0, s0, u0, b0) = (
                cnt.keys.load(Relaxed),
                cnt.causal_keys.load(Relaxed),
                cnt.selection_ns.load(Relaxed),
                cnt.computed_keys.load(Relaxed),
                cnt.selection_blocks.load(Relaxed),
            );
            let mut elapsed = 0f64;
            let mut at = 0;
            for part in seq.chunks(o.batch) {
                let from = first.saturating_sub(at);
                let logits = if from >= part.len() {
                    Logits::None
                } else {
                    Logits::From(from)
                };
                let t = std::time::Instant::now();
                forward(model, &mut st, part, logits, fo, &NoObserver)?;
                elapsed += t.elapsed().as_secs_f64();
                for (r, row) in st.logits.chunks(vocab).enumerate() {
                    let k = at + from + r - first;
                    let top = kernels::ops::argmax(row);
                    let lse = kernels::ops::logsumexp(row);
                    if i == 0 {
                        for (o, &v) in ref_lp[k * vocab..(k + 1) * vocab].iter_mut().zip(row) {
                            *o = (v as f64 - lse) as f32;
                        }
                        ref_top[k] = top;
                    } else {
                        for (o, &v) in lq.iter_mut().zip(row) {
                            *o = v as f64 - lse;
                        }
                        let lp = &ref_lp[k * vocab..(k + 1) * vocab];
                        let kld: f64 = lp
                            .iter()
                            .zip(&lq)
                            .map(|(&a, &b)| (a as f64).exp() * (a as f64 - b))
                            .sum();
                        acc.kld.push(kld.max(0.0));
                        acc.same += (top == ref_top[k]) as usize;
                    }
                }
                at += part.len();
            }
            let cnt = &st.attention_counts;
            acc.keys += cnt.keys.load(Relaxed) - k0;
            acc.causal += cnt.causal_keys.load(Relaxed) - c0;
            acc.computed += cnt.computed_keys.load(Relaxed) - u0;
            acc.sel_blocks += cnt.selection_blocks.load(Relaxed) - b0;
            acc.selection += (cnt.selection_ns.load(Relaxed) - s0) as f64 * 1e-9;
            acc.attention += (st.attention_time - a0).as_secs_f64();
            acc.prefill += elapsed - (st.output_time - o0).as_secs_f64();
            if ch + 1 == chunks && o.decode > 0 {
                // Decode at the filled context: the text's next tokens, one at a time.
                let next = |k: usize| tokens[((ch + 1) * ctx + k) % tokens.len()];
                let t = std::time::Instant::now();
                for k in 0..o.decode {
                    forward(model, &mut st, &[next(k)], Logits::Last, fo, &NoObserver)?;
                }
                acc.decode_tps = Some(o.decode as f64 / t.elapsed().as_secs_f64().max(1e-9));
            }
            progress(ch * rungs.len() + i + 1, total);
        }
    }
    let dense = (accs[0].attention, accs[0].prefill, accs[0].decode_tps);
    Ok(rungs
        .iter()
        .zip(accs)
        .map(|(r, mut a)| {
            let n = (chunks * (ctx - first)) as f64;
            let (kld, p99) = if a.kld.is_empty() {
                (0.0, 0.0)
            } else {
                a.kld.sort_by(f64::total_cmp);
                let p = a.kld[((a.kld.len() - 1) as f64 * 0.99).round() as usize];
                (a.kld.iter().sum::<f64>() / a.kld.len() as f64, p)
            };
            MaskPoint {
                kind: r.kind.clone(),
                setting: r.setting,
                ctx,
                density: if a.causal == 0 {
                    1.0
                } else {
                    a.keys as f64 / a.causal as f64
                },
                computed: if a.causal == 0 {
                    1.0
                } else {
                    a.computed as f64 / a.causal as f64
                },
                cost: if a.causal == 0 {
                    1.0
                } else {
                    (a.computed as f64 + SELECTION_KEYS_PER_BLOCK * a.sel_blocks as f64)
                        / a.causal as f64
                },
                kld,
                kld_p99: p99,
                top1: if r.mask.is_none() {
                    1.0
                } else {
                    a.same as f64 / n
                },
                attention_s: a.attention,
                prefill_s: a.prefill,
                selection_s: a.selection,
                attention_speedup: dense.0 / a.attention.max(1e-12),
                prefill_speedup: dense.1 / a.prefill.max(1e-12),
                decode_tps: a.decode_tps,
                decode_speedup: dense.2.zip(a.decode_tps).map(|(d, m)| m / d),
                chosen: false,
            }
        })
        .collect())
}

/// What computing one key block's Quest bound and taking part in the selection costs, in keys
/// scored: measured with SmolLM2 at 8192 tokens on this project's machine (22 ns per block
/// against 5.3 ns per key of dense attention, both per thread).
pub const SELECTION_KEYS_PER_BLOCK: f64 = 4.0;

/// The index of the cheapest point whose mean KLD is within `max_kld` (dense, index 0, when
/// none is; a budget of 0 always gives dense). Cheapest by [`MaskPoint::cost`] — keys scored
/// plus the selection's work, counted, not timed — so the same text gives the same choice on
/// any machine, where timings would not.
pub fn choose(points: &[MaskPoint], max_kld: f64) -> usize {
    if max_kld <= 0.0 {
        return 0;
    }
    let mut best = 0;
    for (i, p) in points.iter().enumerate().skip(1) {
        if p.kld <= max_kld && p.cost < points[best].cost {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_ships_the_cheapest_point_within_it() {
        let p = |kld: f64, cost: f64| MaskPoint {
            kld,
            cost,
            ..Default::default()
        };
        let pts = [p(0.0, 1.0), p(0.02, 0.3), p(0.008, 0.5), p(0.001, 0.7)];
        assert_eq!(choose(&pts, 0.01), 2);
        assert_eq!(choose(&pts, 0.05), 1);
        assert_eq!(choose(&pts, 0.0005), 0, "nothing within: dense");
        assert_eq!(choose(&pts, 0.0), 0, "a budget of 0 is dense");
    }
}
