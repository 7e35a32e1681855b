//! Evaluation protocols over a token stream: the model runs independent chunks of `ctx`
//! tokens, and every scored position yields its logits and the token that followed.
//!
//! * [`Protocol::LlamaCpp`] — llama-perplexity's: chunk `c` is tokens `[c·ctx, (c+1)·ctx)`,
//!   evaluated from position 0 (its first token replaced by BOS when the model adds one); only
//!   the second half is scored, positions `ctx/2 … ctx−2` predicting the next token.
//! * [`Protocol::Full`] — every position `0 … ctx−2` of each chunk is scored.

use kernels::{forward, ForwardOptions, Logits, MatmulMode, Model, NoObserver, Observer, State};

/// Which positions are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Second half of each chunk (llama.cpp's perplexity and KL-divergence protocol).
    LlamaCpp,
    /// Every position of each chunk.
    Full,
}

impl Protocol {
    /// The first scored position of a chunk of `ctx` tokens.
    pub fn first_scored(self, ctx: usize) -> usize {
        match self {
            Protocol::LlamaCpp => ctx / 2,
            Protocol::Full => 0,
        }
    }
}

/// Options of an evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Most chunks (`None`: as many as the text holds).
    pub chunks: Option<usize>,
    /// Scored positions.
    pub protocol: Protocol,
    /// Tokens per forward call.
    pub batch: usize,
    /// Matmul mode.
    pub mode: MatmulMode,
    /// BOS id to put first in each chunk, when the model adds BOS.
    pub bos: Option<u32>,
}

/// A model and the attention mask it runs with (`None`: dense).
pub type Masked<'a> = (&'a Model, Option<&'a kernels::BlockMask>);

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            ctx: 512,
            chunks: None,
            protocol: Protocol::LlamaCpp,
            batch: 512,
            mode: MatmulMode::Quantized,
            bos: None,
        }
    }
}

/// Errors of an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("the text has {have} tokens, fewer than one chunk of {need}")]
    TooShort { have: usize, need: usize },
    #[error("context {ctx} is too small (at least 2 tokens)")]
    Ctx { ctx: usize },
    #[error(transparent)]
    Forward(#[from] kernels::ForwardError),
}

/// The chunks an evaluation will run.
pub fn n_chunks(n_tokens: usize, opts: &EvalOptions) -> Result<usize, EvalError> {
    if opts.ctx < 2 {
        return Err(EvalError::Ctx { ctx: opts.ctx });
    }
    let avail = n_tokens / opts.ctx;
    if avail == 0 {
        return Err(EvalError::TooShort {
            have: n_tokens,
            need: opts.ctx,
        });
    }
    Ok(opts.chunks.map_or(avail, |c| c.min(avail)).max(1))
}

/// The tokens of chunk `c` as evaluated (BOS substituted first when asked).
pub fn chunk_tokens(tokens: &[u32], c: usize, opts: &EvalOptions) -> Vec<u32> {
    let mut t = tokens[c * opts.ctx..(c + 1) * opts.ctx].to_vec();
    if let Some(b) = opts.bos {
        t[0] = b;
    }
    t
}

/// Runs chunk `c` through `model`, calling `f(j, logits_j, next_token)` for each scored
/// position `j` of the chunk.
pub fn run_chunk<O: Observer>(
    (model, mask): Masked,
    state: &mut State,
    tokens: &[u32],
    c: usize,
    opts: &EvalOptions,
    obs: &O,
    mut f: impl FnMut(usize, &[f32], u32),
) -> Result<(), EvalError> {
    let chunk = chunk_tokens(tokens, c, opts);
    let first = opts.protocol.first_scored(opts.ctx);
    let vocab = model.config.vocab;
    let fo = ForwardOptions {
        mode: opts.mode,
        mask,
        ..Default::default()
    };
    state.reset();
    let mut start = 0;
    while start < opts.ctx {
        let end = (start + opts.batch.max(1)).min(opts.ctx);
        let want = if end > first {
            Logits::From(first.saturating_sub(start))
        } else {
            Logits::None
        };
        forward(model, state, &chunk[start..end], want, fo, obs)?;
        let from = first.max(start);
        for j in from..end {
            if j + 1 >= opts.ctx {
                break;
            }
            let r = j - from;
            f(
                j,
                &state.logits[r * vocab..(r + 1) * vocab],
                tokens[c * opts.ctx + j + 1],
            );
        }
        start = end;
    }
    Ok(())
}

/// Perplexity over `tokens`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Perplexity {
    /// exp(mean NLL).
    pub ppl: f64,
    /// Mean negative log-likelihood.
    pub mean_nll: f64,
    /// Standard error of the mean NLL.
    pub nll_stderr: f64,
    /// Scored predictions.
    pub n_scored: usize,
    /// Chunks run.
    pub chunks: usize,
    /// Running perplexity after each chunk (llama-perplexity prints these).
    pub per_chunk: Vec<f64>,
    /// Share of scored positions whose argmax is the next token.
    pub top1_hit_rate: f64,
}

/// Perplexity of `model` on `tokens` under `opts`.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    opts: &EvalOptions,
) -> Result<Perplexity, EvalError> {
    perplexity_masked(model, None, tokens, opts)
}

/// [`perplexity`] with an attention mask.
pub fn perplexity_masked(
    model: &Model,
    mask: Option<&kernels::BlockMask>,
    tokens: &[u32],
    opts: &EvalOptions,
) -> Result<Perplexity, EvalError> {
    let chunks = n_chunks(tokens.len(), opts)?;
    let mut state = State::new(&model.config, opts.ctx, opts.batch.min(opts.ctx));
    let (mut sum, mut sum2, mut n, mut hits) = (0f64, 0f64, 0usize, 0usize);
    let mut per_chunk = Vec::with_capacity(chunks);
    for c in 0..chunks {
        run_chunk(
            (model, mask),
            &mut state,
            tokens,
            c,
            opts,
            &NoObserver,
            |_, logits, next| {
                let v = kernels::ops::nll(logits, next as usize);
                sum += v;
                sum2 += v * v;
                n += 1;
                hits += (kernels::ops::argmax(logits) == next as usize) as usize;
            },
        )?;
        per_chunk.push((sum / n as f64).exp());
    }
    let mean = sum / n as f64;
    let var = (sum2 / n as f64 - mean * mean).max(0.0);
    Ok(Perplexity {
        ppl: mean.exp(),
        mean_nll: mean,
        nll_stderr: (var / (n.max(2) - 1) as f64).sqrt(),
        n_scored: n,
        chunks,
        per_chunk,
        top1_hit_rate: hits as f64 / n as f64,
    })
}
