//! Block-sparse attention masks derived from calibration text, chosen by a quality budget on
//! held-out text, and stored in an artifact's `kiln.attention.*` keys.

pub use calibrate::masks::{MaskKind, MaskSettings};
use std::path::{Path, PathBuf};

use calibrate::masks::{budget_metadata, collect, derive, derive_select, to_metadata, HeadChoice};
use convert::gguf::GgufFile;
use kernels::BlockMask;
use verify::masks::{choose, evaluate, LadderOptions, Rung};
use verify::report::MaskPoint;

use crate::text::{tokenize_files, tokenizer_of};
use crate::{Error, Observer, Result};

/// Tokens decoded at the filled context for each rung's decode figure.
pub const DECODE_TOKENS: usize = 32;

/// What a derivation produced.
#[derive(Debug, Clone)]
pub struct MaskOutcome {
    /// The mask to ship (all heads dense when the budget admits no sparse setting).
    pub mask: BlockMask,
    /// Each head's choice in the shipped mask.
    pub choices: Vec<HeadChoice>,
    /// `static`, `content` or `dense`.
    pub kind: String,
    /// The shipped setting's coverage target.
    pub coverage: f64,
    /// The measured ladder, dense first, the shipped point marked (empty without a budget).
    pub curve: Vec<MaskPoint>,
}

impl MaskOutcome {
    /// The `kiln.attention.*` keys of the shipped mask.
    pub fn metadata(&self, s: &MaskSettings) -> Vec<(String, convert::gguf::Value)> {
        let mut md = to_metadata(&self.mask, self.coverage);
        if let (Some(max), Some(p)) = (s.max_kld, self.curve.iter().find(|p| p.chosen)) {
            md.extend(budget_metadata(max, p.kld, p.ctx));
        }
        md
    }
}

fn check(s: &MaskSettings) -> Result<()> {
    if let Some(c) = s.coverage {
        if !(c > 0.0 && c <= 1.0) {
            return Err(Error::options(format!("coverage {c} must be in (0, 1]")));
        }
    }
    if let Some(k) = s.max_kld {
        if k.is_nan() || k < 0.0 {
            return Err(Error::options(format!("max_kld {k} must be ≥ 0")));
        }
        if s.coverage.is_some() {
            return Err(Error::options(
                "give max_kld (a quality budget) or coverage (one mask), not both",
            ));
        }
    }
    if s.block == 0 || s.ctx < s.block || s.eval_ctx() < s.block {
        return Err(Error::options(format!(
            "block {} and contexts {} / {} do not fit",
            s.block,
            s.ctx,
            s.eval_ctx()
        )));
    }
    if s.window == 0 {
        return Err(Error::options("window must be ≥ 1 block"));
    }
    Ok(())
}

/// Derives a mask for `model` (the FP32 reference) from `texts`; with a budget, measures the
/// ladder on `eval_texts` (held out: not the calibration text) — on the weights of `shipped`
/// when given (the artifact the mask goes into: its dense run is what the budget is against),
/// else on `model`'s — and ships the cheapest setting within it.
#[allow(clippy::too_many_arguments)]
pub fn derive_mask(
    model: &Path,
    lora: &[convert::lora::LoraSpec],
    texts: &[PathBuf],
    eval_texts: &[PathBuf],
    shipped: Option<&Path>,
    s: &MaskSettings,
    tokenizer_pre: Option<&str>,
    obs: &dyn Observer,
) -> Result<MaskOutcome> {
    check(s)?;
    let loaded = verify::load::load_with(model, &verify::load::LoraLoad::merged(lora))?;
    let m = &loaded.model;
    let tok = tokenizer_of(&loaded.source, tokenizer_pre)?;
    let tokens = tokenize_files(&tok, texts)?;
    if tokens.len() < s.ctx {
        return Err(Error::options(format!(
            "the calibration text has {} tokens, fewer than one context of {}",
            tokens.len(),
            s.ctx
        )));
    }
    let eval_tokens = if s.max_kld.is_some() {
        if eval_texts.is_empty() {
            return Err(Error::options(
                "a quality budget (max_kld) needs held-out evaluation text",
            ));
        }
        let t = tokenize_files(&tok, eval_texts)?;
        if t.len() < s.eval_ctx() {
            return Err(Error::options(format!(
                "the evaluation text has {} tokens, fewer than one context of {}",
                t.len(),
                s.eval_ctx()
            )));
        }
        t
    } else {
        Vec::new()
    };
    let n = s.chunks.min(tokens.len() / s.ctx);
    let stats = collect(m, &tokens, s.ctx, s.block, n, (s.sink, s.window), |d, t| {
        obs.step("attention", d, t, "chunks")
    })?;
    obs.finish("attention");
    let nl = m.config.n_layers;
    let windowed = |l: usize| m.config.window(l).is_some();
    let derived: Vec<(MaskKind, f64, BlockMask, Vec<HeadChoice>)> = s
        .ladder()
        .into_iter()
        .map(|(kind, cov)| {
            let (mask, ch) = match kind {
                MaskKind::Content => derive_select(&stats, nl, cov, &windowed),
                _ => derive(&stats, nl, cov, &windowed),
            };
            (kind, cov, mask, ch)
        })
        .collect();
    let name = |k: MaskKind| match k {
        MaskKind::Content => "content",
        _ => "static",
    };
    let Some(max_kld) = s.max_kld else {
        let (kind, cov, mask, choices) = derived.into_iter().next().expect("one setting");
        return Ok(MaskOutcome {
            mask,
            choices,
            kind: name(kind).into(),
            coverage: cov,
            curve: Vec::new(),
        });
    };
    let mut rungs = vec![Rung {
        kind: "dense".into(),
        setting: 1.0,
        mask: None,
    }];
    rungs.extend(derived.iter().map(|(k, c, mask, _)| Rung {
        kind: name(*k).into(),
        setting: *c,
        mask: Some(mask),
    }));
    let opts = LadderOptions {
        ctx: s.eval_ctx(),
        chunks: s.eval_chunks.max(1),
        batch: 512,
        decode: DECODE_TOKENS,
    };
    let artifact = shipped.map(verify::load::load).transpose()?;
    let em = artifact.as_ref().map_or(m, |a| &a.model);
    let mut curve = evaluate(em, &rungs, &eval_tokens, &opts, |d, t| {
        obs.step("mask ladder", d, t, "runs")
    })
    .map_err(|e| match e {
        verify::masks::LadderError::Forward(f) => Error::Forward(f),
        e => Error::options(format!("mask ladder: {e}")),
    })?;
    obs.finish("mask ladder");
    let best = choose(&curve, max_kld);
    curve[best].chosen = true;
    if best == 0 {
        return Ok(MaskOutcome {
            choices: Vec::new(),
            mask: BlockMask::dense(s.block, nl, m.config.n_heads),
            kind: "dense".into(),
            coverage: 1.0,
            curve,
        });
    }
    let (kind, cov, mask, choices) = derived.into_iter().nth(best - 1).expect("in the ladder");
    Ok(MaskOutcome {
        mask,
        choices,
        kind: name(kind).into(),
        coverage: cov,
        curve,
    })
}

/// Copies `input` to `output` with the mask's keys added (tensors byte for byte).
pub fn write_with_mask(
    input: &Path,
    output: &Path,
    keys: Vec<(String, convert::gguf::Value)>,
) -> Result<()> {
    let g = GgufFile::open(input)?;
    let mut md = g.metadata.clone();
    for (k, v) in keys {
        md.set(k, v);
    }
    g.write_with_metadata(md, output)?;
    Ok(())
}
