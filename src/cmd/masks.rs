//! `kiln masks`: derive block-sparse attention masks from calibration text and store them in a
//! copy of an artifact.

pub use calibrate::masks::MaskSettings;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use calibrate::masks::{collect, derive, to_metadata, HeadChoice};
use convert::gguf::GgufFile;
use kernels::BlockMask;

use super::infer::{tokenize_file, tokenizer_of};
use super::progress::Progress;

/// Derives a mask for `model` (the FP32 reference) from `texts`.
pub fn derive_mask(
    model: &Path,
    texts: &[PathBuf],
    s: &MaskSettings,
    tokenizer_pre: Option<&str>,
    quiet: bool,
) -> Result<(BlockMask, Vec<HeadChoice>)> {
    if !(s.coverage > 0.0 && s.coverage <= 1.0) {
        bail!("coverage {} must be in (0, 1]", s.coverage);
    }
    if s.block == 0 || s.ctx < s.block {
        bail!("block {} and context {} do not fit", s.block, s.ctx);
    }
    let loaded = verify::load::load(model)?;
    let tok = tokenizer_of(&loaded.source, tokenizer_pre)?;
    let mut tokens = Vec::new();
    for t in texts {
        tokens.extend(tokenize_file(&tok, t)?);
    }
    if tokens.len() < s.ctx {
        bail!(
            "the calibration text has {} tokens, fewer than one context of {}",
            tokens.len(),
            s.ctx
        );
    }
    let n = s.chunks.min(tokens.len() / s.ctx);
    let p = Progress::new("attention", n, quiet);
    let stats = collect(&loaded.model, &tokens, s.ctx, s.block, n, |d, t| {
        p.step(d, t, "chunks")
    })?;
    p.finish();
    Ok(derive(&stats, loaded.model.config.n_layers, s.coverage))
}

/// Copies `input` to `output` with `mask`'s keys added (tensors byte for byte).
pub fn write_with_mask(input: &Path, output: &Path, mask: &BlockMask, coverage: f64) -> Result<()> {
    let g = GgufFile::open(input)?;
    let mut md = g.metadata.clone();
    for (k, v) in to_metadata(mask, coverage) {
        md.set(k, v);
    }
    g.write_with_metadata(md, output)?;
    Ok(())
}

pub struct MasksArgs<'a> {
    pub model: &'a Path,
    pub texts: &'a [PathBuf],
    pub settings: MaskSettings,
    pub artifact: Option<&'a Path>,
    pub output: Option<&'a Path>,
    pub json: bool,
    pub quiet: bool,
}

pub fn masks_cmd(a: MasksArgs) -> Result<i32> {
    let (mask, report) = derive_mask(a.model, a.texts, &a.settings, None, a.quiet)?;
    let n_blocks = a.settings.ctx / a.settings.block;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:>5} {:>4}  {:>8} {:>8}  pattern",
            "layer", "head", "coverage", "density"
        );
        for h in &report {
            println!(
                "{:>5} {:>4}  {:>8.4} {:>8.3}  {}",
                h.layer, h.head, h.coverage, h.density, h.pattern
            );
        }
        let dense = report.iter().filter(|h| h.pattern == "dense").count();
        println!(
            "\nmean density at {} tokens: {:.3} ({} of {} heads dense), block {}, coverage target {}",
            a.settings.ctx,
            mask.density(n_blocks),
            dense,
            report.len(),
            a.settings.block,
            a.settings.coverage
        );
    }
    match (a.artifact, a.output) {
        (Some(i), Some(o)) => {
            write_with_mask(i, o, &mask, a.settings.coverage)?;
            eprintln!("wrote {} with the mask", o.display());
        }
        (None, None) => {}
        _ => bail!("--artifact and -o go together"),
    }
    Ok(0)
}
