//! Small numeric helpers on logits: log-softmax pieces, argmax, sampling.

/// log Σ exp(x), in f64.
pub fn logsumexp(x: &[f32]) -> f64 {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let s: f64 = x.iter().map(|&v| ((v as f64) - max).exp()).sum();
    max + s.ln()
}

/// Index of the largest value (the first one on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Negative log-likelihood of `target` under the softmax of `logits`.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    logsumexp(logits) - logits[target] as f64
}

/// A small seeded generator (xorshift64*) for sampling; same seed, same text.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks a token: greedy when `temp <= 0`, else from softmax(logits / temp) restricted to the
/// `top_k` most likely tokens (0 = all).
pub fn sample(logits: &[f32], temp: f32, top_k: usize, rng: &mut Rng) -> usize {
    if temp <= 0.0 {
        return argmax(logits);
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if top_k > 0 && top_k < idx.len() {
        idx.select_nth_unstable_by(top_k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(top_k);
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / temp) as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.uniform() * total;
    for (k, &wk) in w.iter().enumerate() {
        if u < wk {
            return idx[k];
        }
        u -= wk;
    }
    idx[idx.len() - 1]
}
