//! The importance matrix of a model on calibration text (`kiln calibrate`), or one shard's
//! partial of it (`--shard i/N`, summed exactly by `kiln imatrix merge`).

use convert::lora::LoraSpec;
use std::path::{Path, PathBuf};
use verify::load::LoraLoad;

use calibrate::{CalibOptions, Imatrix};
use convert::ModelSource;

use crate::text::{file_name, load_with_tokenizer, tokenize_files};
use crate::{Error, Observer, Result};

/// One calibration: what to measure and where to write it.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The FP32 model (checkpoint directory or GGUF).
    pub model: PathBuf,
    /// LoRA adapters merged into the model first (`--lora`).
    pub lora: Vec<LoraSpec>,
    /// Texts, tokenized one after the other.
    pub texts: Vec<PathBuf>,
    /// Tokens per chunk.
    pub ctx: usize,
    /// At most this many chunks (all the text holds when `None`).
    pub chunks: Option<usize>,
    /// Collect `output.weight`'s input too.
    pub process_output: bool,
    /// Shard `(i, n)`: only the chunks of shard `i` of `n`, written as a partial imatrix.
    pub shard: Option<(usize, usize)>,
    /// The file to write (`.gguf`, or llama.cpp's legacy `.dat`).
    pub output: PathBuf,
}

/// Computes the importance matrix of `c` and writes it to `c.output`. Warns (through `obs`)
/// about weight matrices the text left without statistics.
pub fn calibrate(c: &Calibration, obs: &dyn Observer) -> Result<Imatrix> {
    if c.shard.is_some() && c.output.extension().is_some_and(|e| e == "dat") {
        return Err(Error::options(format!(
            "{}: a partial imatrix (--shard) is written as GGUF; .dat cannot carry its exact sums",
            c.output.display()
        )));
    }
    let (loaded, tok) = load_with_tokenizer(&c.model, &LoraLoad::merged(&c.lora))?;
    let tokens = tokenize_files(&tok, &c.texts)?;
    let opts = CalibOptions {
        ctx: c.ctx,
        chunks: c.chunks,
        bos: if tok.add_bos { tok.bos } else { None },
        process_output: c.process_output,
        datasets: c.texts.iter().map(|t| file_name(t)).collect(),
        kv_f16: true,
    };
    let step = |d, t| obs.step("calibrate", d, t, "chunks");
    let m = match c.shard {
        None => calibrate::calibrate(&loaded.model, &tokens, &opts, step)?,
        Some(sh) => calibrate::calibrate_shard(&loaded.model, &tokens, &opts, sh, step)?,
    };
    obs.finish("calibrate");
    for w in m.coverage(&matmul_weights(&loaded.source, c.process_output)) {
        obs.warn(&w);
    }
    m.write(&c.output)?;
    Ok(m)
}

/// The weight matrices an imatrix should cover, with their input widths.
pub fn matmul_weights(src: &ModelSource, process_output: bool) -> Vec<(String, usize)> {
    src.tensors()
        .iter()
        .filter(|t| t.dims.len() == 2 && t.name.starts_with("blk.") && t.name.ends_with(".weight"))
        .chain(
            src.tensors()
                .iter()
                .filter(|t| process_output && t.name == "output.weight"),
        )
        .map(|t| (t.name.clone(), t.row_len()))
        .collect()
}

/// What [`merge`] wrote.
pub struct Merged {
    pub imatrix: Imatrix,
    /// The inputs were one calibration's shards (partials), summed exactly.
    pub from_shards: bool,
}

/// Sums importance matrices (whole files as llama-imatrix's `--in-file` does, or every shard's
/// partial exactly) and writes the result to `output`.
pub fn merge(inputs: &[PathBuf], output: &Path) -> Result<Merged> {
    let mut ms = Vec::with_capacity(inputs.len());
    for p in inputs {
        ms.push((Imatrix::read(p)?, p.clone()));
    }
    let from_shards = ms.iter().any(|(m, _)| m.partial.is_some());
    let imatrix = Imatrix::merge(&ms)?;
    imatrix.write(output)?;
    Ok(Merged {
        imatrix,
        from_shards,
    })
}
