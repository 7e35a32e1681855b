//! Block-sparse attention masks derived from calibration text, and stored in an artifact's
//! `kiln.attention.*` keys.

pub use calibrate::masks::MaskSettings;
use std::path::{Path, PathBuf};

use calibrate::masks::{collect, derive, to_metadata, HeadChoice};
use convert::gguf::GgufFile;
use kernels::BlockMask;

use crate::text::{tokenize_files, tokenizer_of};
use crate::{Error, Observer, Result};

/// Derives a mask for `model` (the FP32 reference) from `texts`: the mask and each head's
/// choice.
pub fn derive_mask(
    model: &Path,
    lora: &[convert::lora::LoraSpec],
    texts: &[PathBuf],
    s: &MaskSettings,
    tokenizer_pre: Option<&str>,
    obs: &dyn Observer,
) -> Result<(BlockMask, Vec<HeadChoice>)> {
    if !(s.coverage > 0.0 && s.coverage <= 1.0) {
        return Err(Error::options(format!(
            "coverage {} must be in (0, 1]",
            s.coverage
        )));
    }
    if s.block == 0 || s.ctx < s.block {
        return Err(Error::options(format!(
            "block {} and context {} do not fit",
            s.block, s.ctx
        )));
    }
    let loaded = verify::load::load_with(model, &verify::load::LoraLoad::merged(lora))?;
    let tok = tokenizer_of(&loaded.source, tokenizer_pre)?;
    let tokens = tokenize_files(&tok, texts)?;
    if tokens.len() < s.ctx {
        return Err(Error::options(format!(
            "the calibration text has {} tokens, fewer than one context of {}",
            tokens.len(),
            s.ctx
        )));
    }
    let n = s.chunks.min(tokens.len() / s.ctx);
    let stats = collect(&loaded.model, &tokens, s.ctx, s.block, n, |d, t| {
        obs.step("attention", d, t, "chunks")
    })?;
    obs.finish("attention");
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
