//! `kiln convert` and `kiln export`.

use std::path::Path;
use std::time::Instant;

use ::convert::convert::ConvertOptions;
use ::convert::lora::{LoraAdapter, LoraSpec};
use ::convert::ModelSource;
use anyhow::Result;

use super::{human_bytes, ranks};

pub fn convert(
    input: &Path,
    lora: &[LoraSpec],
    output: &Path,
    opts: &ConvertOptions,
) -> Result<i32> {
    let t0 = Instant::now();
    let src = ModelSource::open_with_lora(input, lora)?;
    report_adapters(&src);
    if let ModelSource::Hf(h) = &src {
        if !h.extra.is_empty() {
            eprintln!("kiln: warning: {} checkpoint tensors are not part of the model and are not converted: {}", h.extra.len(), h.extra.join(", "));
        }
    }
    let report = ::convert::convert::convert(&src, output, opts)?;
    for w in &report.warnings {
        eprintln!("kiln: warning: {w}");
    }
    for t in report.tensors.iter().filter(|t| t.note.is_some()) {
        eprintln!(
            "kiln: note: {} stored as {}: {}",
            t.name,
            t.ty,
            t.note.as_deref().unwrap_or("")
        );
    }
    if report.files.len() > 1 || opts.split.is_some() {
        for (p, b) in &report.files {
            println!("wrote {} ({})", p.display(), human_bytes(*b));
        }
    }
    println!(
        "wrote {} ({} tensors, {}) in {:.2}s",
        report.output.display(),
        report.tensors.len(),
        human_bytes(report.file_bytes),
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// `kiln merge`: split files → one GGUF.
pub fn merge(inputs: &[std::path::PathBuf], output: &Path) -> Result<i32> {
    let t0 = Instant::now();
    let r = ::convert::gguf::split::merge(inputs, output)?;
    println!(
        "wrote {} ({} tensors from {} split files, {}) in {:.2}s",
        r.output.display(),
        r.tensors,
        r.files,
        human_bytes(r.bytes),
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

pub fn export(input: &Path, output: &Path, continuous_seed: Option<u64>) -> Result<i32> {
    let t0 = Instant::now();
    let src = ModelSource::open(input)?;
    let r = ::convert::convert::export_with(&src, output, continuous_seed)?;
    for w in &r.warnings {
        eprintln!("kiln: warning: {w}");
    }
    println!(
        "exported {} tensors to {} in {:.2}s",
        r.tensors,
        r.dir.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// Notes on merged adapters.
fn report_adapters(src: &ModelSource) {
    for (a, scale) in src.lora().adapters() {
        for n in &a.notes {
            eprintln!("kiln: note: {}: {n}", a.path.display());
        }
        eprintln!(
            "kiln: merging {} (rank {}, {} tensors: {}) at scale {scale}",
            a.path.display(),
            a.rank,
            a.targets.len() + a.saved.len(),
            a.modules().join(", ")
        );
    }
}

/// `kiln adapter`: a PEFT adapter → llama.cpp's LoRA GGUF.
pub fn adapter(input: &Path, base: &Path, output: &Path, ty: quantize::GgmlType) -> Result<i32> {
    let t0 = Instant::now();
    let base = ModelSource::open(base)?;
    let a = LoraAdapter::open(input, base.config())?;
    for n in &a.notes {
        eprintln!("kiln: note: {}: {n}", a.path.display());
    }
    let r = ::convert::lora::write_adapter(&a, base.config(), output, ty, None, 1.0)?;
    for t in &r.f16_fallbacks {
        eprintln!("kiln: note: {t} stored as F16: its rows do not fit {ty}'s blocks");
    }
    for t in &r.folded {
        eprintln!(
            "kiln: note: {t}: its own scaling is folded into lora_b (llama.cpp has one alpha)"
        );
    }
    println!(
        "wrote {} (LoRA, rank {}, alpha {}, {} tensors adapted: {}; {}) in {:.2}s",
        r.output.display(),
        ranks(&r.ranks),
        r.alpha,
        r.n_targets,
        r.modules.join(", "),
        human_bytes(r.file_bytes),
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}
