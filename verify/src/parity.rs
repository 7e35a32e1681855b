//! Parity of candidates against a reference: both run over the same tokens in the same
//! process, chunk by chunk (the reference once per chunk, however many candidates), and each
//! scored position's logits are compared on the spot — no logits file is ever written.
//!
//! Per candidate: KL divergence KL(reference ‖ candidate) over the full vocabulary (mean,
//! median, p99, max), top-1 agreement, both perplexities and their ratio, and Δp — how much
//! probability the candidate moves off the token that actually came next — the statistics
//! llama-perplexity's `--kl-divergence` reports.

use kernels::{Model, NoObserver, State};
use serde::{Deserialize, Serialize};

use crate::eval::{n_chunks, run_chunk, EvalError, EvalOptions, Masked};

/// Distribution statistics of one quantity over the scored positions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub mean: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    /// Statistics of `v` (sorted in place).
    pub fn of(v: &mut [f64]) -> Self {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let i = p * (v.len() - 1) as f64;
            let (lo, hi) = (i.floor() as usize, i.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (i - lo as f64)
        };
        Stats {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            median: q(0.5),
            p99: q(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// One candidate's parity with the reference.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Parity {
    /// KL(reference ‖ candidate) per position.
    pub kld: Stats,
    /// Share of positions where both models' most likely token agree (0–1).
    pub top1: f64,
    /// Perplexity of the reference.
    pub ppl_reference: f64,
    /// Perplexity of the candidate.
    pub ppl_candidate: f64,
    /// `ppl_candidate / ppl_reference`.
    pub ppl_ratio: f64,
    /// Δp = p_candidate(next) − p_reference(next): mean and RMS.
    pub delta_p_mean: f64,
    pub delta_p_rms: f64,
    /// Scored positions.
    pub n_scored: usize,
    /// Chunks run.
    pub chunks: usize,
}

struct Acc {
    kld: Vec<f64>,
    same: usize,
    nll_c: f64,
    dp: f64,
    dp2: f64,
}

/// log-softmax of `x` into `out` (f64).
fn log_softmax(x: &[f32], out: &mut [f64]) {
    let lse = kernels::ops::logsumexp(x);
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v as f64 - lse;
    }
}

/// Compares each candidate with `reference` over `tokens`. `progress(done, total)` is called
/// after each chunk.
pub fn compare(
    reference: &Model,
    candidates: &[&Model],
    tokens: &[u32],
    opts: &EvalOptions,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<Parity>, EvalError> {
    let masked: Vec<Masked> = candidates.iter().map(|&m| (m, None)).collect();
    compare_masked((reference, None), &masked, tokens, opts, progress)
}

/// [`compare`] with attention masks on the reference and the candidates.
pub fn compare_masked(
    reference: Masked,
    candidates: &[Masked],
    tokens: &[u32],
    opts: &EvalOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Parity>, EvalError> {
    let chunks = n_chunks(tokens.len(), opts)?;
    let (reference, ref_mask) = reference;
    let vocab = reference.config.vocab;
    let first = opts.protocol.first_scored(opts.ctx);
    let per_chunk = opts.ctx - 1 - first;
    let batch = opts.batch.min(opts.ctx);
    let mut st_ref = State::new(&reference.config, opts.ctx, batch);
    let mut states: Vec<State> = candidates
        .iter()
        .map(|(m, _)| State::new(&m.config, opts.ctx, batch))
        .collect();
    let mut accs: Vec<Acc> = candidates
        .iter()
        .map(|_| Acc {
            kld: Vec::new(),
            same: 0,
            nll_c: 0.0,
            dp: 0.0,
            dp2: 0.0,
        })
        .collect();
    let mut nll_r = 0f64;
    let mut ref_logp = vec![0f64; per_chunk * vocab];
    let mut ref_top = vec![0usize; per_chunk];
    let mut next = vec![0u32; per_chunk];
    let mut lq = vec![0f64; vocab];
    for c in 0..chunks {
        run_chunk(
            (reference, ref_mask),
            &mut st_ref,
            tokens,
            c,
            opts,
            &NoObserver,
            |j, logits, nx| {
                let k = j - first;
                log_softmax(logits, &mut ref_logp[k * vocab..(k + 1) * vocab]);
                ref_top[k] = kernels::ops::argmax(logits);
                next[k] = nx;
                nll_r -= ref_logp[k * vocab + nx as usize];
            },
        )?;
        for ((&(m, mask), st), acc) in candidates
            .iter()
            .zip(states.iter_mut())
            .zip(accs.iter_mut())
        {
            run_chunk(
                (m, mask),
                st,
                tokens,
                c,
                opts,
                &NoObserver,
                |j, logits, nx| {
                    let k = j - first;
                    let lp = &ref_logp[k * vocab..(k + 1) * vocab];
                    log_softmax(logits, &mut lq);
                    let kld: f64 = lp.iter().zip(&lq).map(|(&a, &b)| a.exp() * (a - b)).sum();
                    acc.kld.push(kld.max(0.0));
                    acc.same += (kernels::ops::argmax(logits) == ref_top[k]) as usize;
                    acc.nll_c -= lq[nx as usize];
                    let d = lq[nx as usize].exp() - lp[nx as usize].exp();
                    acc.dp += d;
                    acc.dp2 += d * d;
                },
            )?;
        }
        progress(c + 1, chunks);
    }
    let n = chunks * per_chunk;
    let ppl_r = (nll_r / n as f64).exp();
    Ok(accs
        .into_iter()
        .map(|mut a| {
            let ppl_c = (a.nll_c / n as f64).exp();
            Parity {
                kld: Stats::of(&mut a.kld),
                top1: a.same as f64 / n as f64,
                ppl_reference: ppl_r,
                ppl_candidate: ppl_c,
                ppl_ratio: ppl_c / ppl_r,
                delta_p_mean: a.dp / n as f64,
                delta_p_rms: (a.dp2 / n as f64).sqrt(),
                n_scored: n,
                chunks,
            }
        })
        .collect())
}

/// Thresholds a candidate must meet. `None` = not checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Thresholds {
    /// Largest mean KLD.
    pub max_kld: Option<f64>,
    /// Largest 99th-percentile KLD.
    pub max_kld_p99: Option<f64>,
    /// Smallest top-1 agreement (0–1).
    pub min_top1: Option<f64>,
    /// Largest perplexity ratio.
    pub max_ppl_ratio: Option<f64>,
}

impl Thresholds {
    /// `self`, with any threshold it leaves unset taken from `defaults`.
    pub fn or(&self, defaults: &Thresholds) -> Thresholds {
        Thresholds {
            max_kld: self.max_kld.or(defaults.max_kld),
            max_kld_p99: self.max_kld_p99.or(defaults.max_kld_p99),
            min_top1: self.min_top1.or(defaults.min_top1),
            max_ppl_ratio: self.max_ppl_ratio.or(defaults.max_ppl_ratio),
        }
    }

    /// The checks of `p` against these thresholds.
    pub fn check(&self, p: &Parity) -> Vec<Check> {
        let mut v = Vec::new();
        let mut add = |name: &str, limit: Option<f64>, value: f64, upper: bool| {
            if let Some(l) = limit {
                v.push(Check {
                    name: name.into(),
                    limit: l,
                    value,
                    pass: if upper { value <= l } else { value >= l },
                });
            }
        };
        add("kld_mean", self.max_kld, p.kld.mean, true);
        add("kld_p99", self.max_kld_p99, p.kld.p99, true);
        add("top1", self.min_top1, p.top1, false);
        add("ppl_ratio", self.max_ppl_ratio, p.ppl_ratio, true);
        v
    }
}

/// One threshold check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// Which quantity (`kld_mean`, `kld_p99`, `top1`, `ppl_ratio`).
    pub name: String,
    /// The threshold.
    pub limit: f64,
    /// The measured value.
    pub value: f64,
    /// True when the value is on the right side of the threshold.
    pub pass: bool,
}

impl Check {
    /// A one-line description.
    pub fn describe(&self) -> String {
        let op = if self.name == "top1" { ">=" } else { "<=" };
        format!(
            "{}: {:.6} {} {} ({})",
            self.name,
            self.value,
            if self.pass {
                op
            } else if op == ">=" {
                "<"
            } else {
                ">"
            },
            self.limit,
            if self.pass { "pass" } else { "FAIL" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_quantiles() {
        let mut v: Vec<f64> = (0..=100).map(|x| x as f64).collect();
        let s = Stats::of(&mut v);
        assert_eq!((s.mean, s.median, s.p99, s.max), (50.0, 50.0, 99.0, 100.0));
    }

    #[test]
    fn thresholds_merge_and_check() {
        let d = Thresholds {
            max_kld: Some(0.1),
            min_top1: Some(0.9),
            ..Default::default()
        };
        let t = Thresholds {
            max_kld: Some(0.01),
            ..Default::default()
        }
        .or(&d);
        let p = Parity {
            kld: Stats {
                mean: 0.05,
                ..Default::default()
            },
            top1: 0.95,
            ppl_ratio: 1.0,
            ..Default::default()
        };
        let c = t.check(&p);
        assert_eq!(c.len(), 2);
        assert!(!c[0].pass && c[1].pass);
        assert!(c[0].describe().contains("FAIL"));
    }
}
