//! `kiln calibrate`, `kiln imatrix` and `kiln quantize`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use calibrate::{CalibOptions, Imatrix};
use convert::convert::{write_model, PlannedTensor, SplitOptions, WriteOptions};
use convert::gguf::Value;
use convert::ModelSource;
use quantize::mix::{self, Ftype, MixOptions, TensorDesc};
use quantize::GgmlType;

use super::human_bytes;
use super::infer::{load_with_tokenizer, tokenize_file};
use super::progress::Progress;

pub struct CalibrateArgs<'a> {
    pub model: &'a Path,
    pub texts: &'a [PathBuf],
    pub ctx: usize,
    pub chunks: Option<usize>,
    pub process_output: bool,
    pub output: &'a Path,
    /// `i/N`: one shard of the chunks, written as a partial imatrix.
    pub shard: Option<&'a str>,
    pub quiet: bool,
}

pub fn calibrate_cmd(a: CalibrateArgs) -> Result<i32> {
    let shard = a
        .shard
        .map(|s| convert::gguf::split::parse_shard(s).map_err(|e| anyhow::anyhow!("--shard: {e}")))
        .transpose()?;
    if shard.is_some() && a.output.extension().is_some_and(|e| e == "dat") {
        anyhow::bail!(
            "{}: a partial imatrix (--shard) is written as GGUF; .dat cannot carry its exact sums",
            a.output.display()
        );
    }
    let t0 = Instant::now();
    let (loaded, tok) = load_with_tokenizer(a.model)?;
    let mut tokens = Vec::new();
    let mut names = Vec::new();
    for t in a.texts {
        tokens.extend(tokenize_file(&tok, t)?);
        names.push(
            t.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    let opts = CalibOptions {
        ctx: a.ctx,
        chunks: a.chunks,
        bos: if tok.add_bos { tok.bos } else { None },
        process_output: a.process_output,
        datasets: names,
        kv_f16: true,
    };
    let mut n = a.chunks.map_or(tokens.len() / a.ctx.max(1), |c| {
        c.min(tokens.len() / a.ctx.max(1))
    });
    if let Some((i, k)) = shard {
        let (from, to) = calibrate::imatrix::shard_chunks(n, i, k.max(1));
        n = to - from;
    }
    let p = Progress::new("calibrate", n, a.quiet);
    let m = match shard {
        None => calibrate::calibrate(&loaded.model, &tokens, &opts, |d, t| p.step(d, t, "chunks"))?,
        Some(sh) => calibrate::calibrate_shard(&loaded.model, &tokens, &opts, sh, |d, t| {
            p.step(d, t, "chunks")
        })?,
    };
    p.finish();
    let expected = matmul_weights(&loaded.source, a.process_output);
    for w in m.coverage(&expected) {
        eprintln!("kiln: warning: {w}");
    }
    m.write(a.output)?;
    println!(
        "wrote {} ({} entries, {} chunks of {} tokens) in {:.1}s",
        a.output.display(),
        m.entries.len(),
        m.chunk_count,
        m.chunk_size,
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// The weight matrices an imatrix should cover, with their input widths.
fn matmul_weights(src: &ModelSource, process_output: bool) -> Vec<(String, usize)> {
    src.tensors()
        .iter()
        .filter(|t| t.dims.len() == 2 && t.name.starts_with("blk.") && t.name.ends_with(".weight"))
        .chain(
            src.tensors()
                .iter()
                .filter(|t| process_output && (t.name == "output.weight")),
        )
        .map(|t| (t.name.clone(), t.row_len()))
        .collect()
}

/// `kiln imatrix merge`.
pub fn imatrix_merge_cmd(inputs: &[PathBuf], output: &Path) -> Result<i32> {
    let mut ms = Vec::with_capacity(inputs.len());
    for p in inputs {
        ms.push((Imatrix::read(p)?, p.clone()));
    }
    let partial = ms.iter().any(|(m, _)| m.partial.is_some());
    let m = Imatrix::merge(&ms)?;
    m.write(output)?;
    println!(
        "wrote {} ({} entries, {} chunks of {} tokens) from {} {}",
        output.display(),
        m.entries.len(),
        m.chunk_count,
        m.chunk_size,
        inputs.len(),
        if partial { "shards, exactly" } else { "files" }
    );
    Ok(0)
}

pub fn imatrix_cmd(input: &Path, output: Option<&Path>) -> Result<i32> {
    let m = Imatrix::read(input)?;
    println!(
        "{}: {} entries, {} chunks of {} tokens, datasets {:?}{}",
        input.display(),
        m.entries.len(),
        m.chunk_count,
        m.chunk_size,
        m.datasets,
        m.partial
            .as_ref()
            .map(|p| format!(" (partial: shard {} of {})", p.shard + 1, p.of))
            .unwrap_or_default()
    );
    if let Some(o) = output {
        m.write(o)?;
        println!("wrote {}", o.display());
    }
    Ok(0)
}

pub struct QuantizeArgs<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub ftype: Ftype,
    pub imatrix: Option<&'a Path>,
    pub tensor_types: &'a [String],
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    pub pure: bool,
    pub dry_run: bool,
    pub tokenizer_pre: Option<String>,
    pub method: super::method::MethodSpec,
    /// Split files, or one shard of them.
    pub split: Option<SplitOptions>,
    pub quiet: bool,
}

/// What a quantization wrote.
pub struct Quantized {
    pub report: convert::convert::ConvertReport,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Parameters of the model.
    pub n_params: u64,
}

/// Parses `--tensor-type REGEX=TYPE` options.
pub fn parse_overrides(specs: &[String]) -> Result<Vec<(regex::Regex, GgmlType)>> {
    Ok(quantize::mix::parse_overrides(specs)?)
}

pub fn quantize_cmd(a: QuantizeArgs) -> Result<i32> {
    let t0 = Instant::now();
    if a.split.is_some_and(|s| s.only.is_some()) && a.method.any() {
        anyhow::bail!(
            "--shard with --method is not supported: kiln's methods (search, awq, gptq, alloc) measure the whole model; quantize shards with the reference quantizers and --imatrix"
        );
    }
    let src = ModelSource::open(a.input)?;
    let imatrix = match a.imatrix {
        Some(p) => Some((Imatrix::read(p)?, p)),
        None => None,
    };
    let opts = MixOptions {
        has_imatrix: imatrix.is_some(),
        pure: a.pure,
        output_tensor_type: a.output_tensor_type,
        token_embedding_type: a.token_embedding_type,
        overrides: parse_overrides(a.tensor_types)?,
    };
    let applied = super::method::apply(
        &a.method,
        a.input,
        a.ftype,
        &opts,
        imatrix.as_ref().map(|(m, _)| m),
        a.tokenizer_pre.as_deref(),
        &mut Default::default(),
        a.quiet,
    )?;
    let mut opts = opts;
    opts.overrides.extend(applied.overrides);
    if let Some(al) = &applied.allocation {
        let mut counts = std::collections::BTreeMap::new();
        for t in &al.tensors {
            *counts.entry(t.ty.name()).or_insert(0usize) += 1;
        }
        eprintln!(
            "alloc: {} of {} matrix bytes, predicted KLD {:.5}; types {:?}",
            al.used, al.budget, al.predicted_kld, counts
        );
    }
    if a.dry_run {
        let (choices, descs, n_params, total) = plan(&src, a.ftype, &opts)?;
        println!(
            "{:<32} {:<14} {:<6} {:>10}  reason",
            "tensor", "shape", "type", "bytes"
        );
        for (ch, d) in choices.iter().zip(&descs) {
            let shape: Vec<String> = d.dims.iter().rev().map(|x| x.to_string()).collect();
            let bytes = ch.ty.row_size(d.dims[0] as usize).unwrap_or(0) as u64
                * d.dims.iter().skip(1).product::<u64>();
            println!(
                "{:<32} {:<14} {:<6} {:>10}  {}",
                ch.name,
                shape.join("×"),
                ch.ty.name(),
                bytes,
                ch.reason
            );
        }
        println!(
            "\ntotal {} tensors: {} ({:.3} bits per weight, {:.1}% of FP32's {})",
            choices.len(),
            human_bytes(total),
            total as f64 * 8.0 / n_params as f64,
            100.0 * total as f64 / (n_params * 4) as f64,
            human_bytes(n_params * 4)
        );
        return Ok(0);
    }
    let q = quantize_to(
        &src,
        a.output,
        a.ftype,
        imatrix.as_ref().map(|(m, p)| (m, *p)),
        None,
        opts,
        a.tensor_types,
        a.tokenizer_pre.clone(),
        applied.metadata,
        &applied.quantizer,
        a.split,
        a.quiet,
    )?;
    if let Some(t) = a.method.target_size {
        if q.report.file_bytes > t {
            let _ = std::fs::remove_file(&q.report.output);
            anyhow::bail!(
                "{}: {} bytes exceed --target-size {t}; removed",
                q.report.output.display(),
                q.report.file_bytes
            );
        }
    }
    for w in &q.report.warnings {
        eprintln!("kiln: warning: {w}");
    }
    if let Some(sp) = a.split {
        for (p, b) in &q.report.files {
            println!("wrote {} ({})", p.display(), human_bytes(*b));
        }
        let what = match sp.only {
            Some(i) => format!("shard {} of {}", i + 1, sp.policy_count().unwrap_or(0)),
            None => format!("{} split files", q.report.files.len()),
        };
        println!(
            "{what} of a {}-tensor model at {:.3} bits per weight, in {:.2}s",
            q.report.tensors.len(),
            q.tensor_bytes as f64 * 8.0 / q.n_params as f64,
            t0.elapsed().as_secs_f64()
        );
        return Ok(0);
    }
    println!(
        "wrote {} ({}, {:.3} bits per weight) in {:.2}s",
        q.report.output.display(),
        human_bytes(q.report.file_bytes),
        q.tensor_bytes as f64 * 8.0 / q.n_params as f64,
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// The per-tensor plan, the descriptions it was made from, parameters and tensor bytes.
pub fn plan(
    src: &ModelSource,
    ftype: Ftype,
    opts: &MixOptions,
) -> Result<(Vec<mix::Choice>, Vec<TensorDesc>, u64, u64)> {
    let c = src.config();
    // llama.cpp's per-architecture rules look at these (the architecture's module says).
    let facts = c.arch.family().mix_facts(c);
    let descs: Vec<TensorDesc> = src
        .tensors()
        .iter()
        .map(|t| TensorDesc {
            name: t.name.clone(),
            dims: t.dims.clone(),
            current: t.stored,
        })
        .collect();
    let choices = mix::plan(&descs, &facts, ftype, opts)?;
    let n_params: u64 = src.tensors().iter().map(|t| t.n_elements() as u64).sum();
    let total: u64 = choices
        .iter()
        .zip(&descs)
        .map(|(ch, d)| {
            ch.ty.row_size(d.dims[0] as usize).unwrap_or(0) as u64
                * d.dims.iter().skip(1).product::<u64>()
        })
        .sum();
    Ok((choices, descs, n_params, total))
}

/// Quantizes `src` to `out` with llama.cpp's mix for `ftype`, importance-weighted by
/// `imatrix` (the matrix and the path it came from) when given, with llama.cpp's
/// `quantize.imatrix.*` keys and kiln's provenance keys. `quantize.imatrix.file` records the
/// path as given (as llama-quantize does) unless `imatrix_name` names it otherwise.
#[allow(clippy::too_many_arguments)]
pub fn quantize_to(
    src: &ModelSource,
    out: &Path,
    ftype: Ftype,
    imatrix: Option<(&Imatrix, &Path)>,
    imatrix_name: Option<&str>,
    opts: MixOptions,
    tensor_types: &[String],
    tokenizer_pre: Option<String>,
    extra_meta: Vec<(String, Value)>,
    quantizer: &super::method::TensorQuantizer,
    split: Option<SplitOptions>,
    quiet: bool,
) -> Result<Quantized> {
    let (choices, descs, n_params, total) = plan(src, ftype, &opts)?;
    let report = std::thread::scope(|s| -> Result<convert::convert::ConvertReport> {
        // Only the file carrying the metadata needs the source digest (a shard of another
        // file reads nothing of the source but its own tensors).
        let carries_metadata = !matches!(split.and_then(|s| s.only), Some(i) if i != 0);
        let h = carries_metadata.then(|| s.spawn(|| src.sha256()));
        let mut extra: Vec<(String, Value)> = extra_meta;
        if let Some((m, p)) = imatrix {
            let name = imatrix_name
                .map(str::to_string)
                .unwrap_or_else(|| p.display().to_string());
            extra.push(("quantize.imatrix.file".into(), Value::String(name)));
            if let Some(d) = m.datasets.first() {
                extra.push(("quantize.imatrix.dataset".into(), Value::String(d.clone())));
            }
            extra.push((
                "quantize.imatrix.entries_count".into(),
                Value::U32(m.entries.len() as u32),
            ));
            extra.push((
                "quantize.imatrix.chunks_count".into(),
                Value::U32(m.chunk_count),
            ));
            extra.push(("kiln.imatrix.sha256".into(), Value::String(file_sha256(p)?)));
        }
        let options = serde_json::json!({
            "type": ftype.name(), "pure": opts.pure, "tensor_type": tensor_types,
            "output_tensor_type": opts.output_tensor_type.map(|t| t.name()),
            "token_embedding_type": opts.token_embedding_type.map(|t| t.name()),
            "imatrix": imatrix.map(|(_, p)| imatrix_name.map(str::to_string).unwrap_or_else(|| p.display().to_string())),
        });
        extra.push((
            "kiln.quantize.options".into(),
            Value::String(options.to_string()),
        ));
        // The source digest is written last: the header carries a same-length placeholder that
        // is replaced in the temporary file before it is renamed into place.
        extra.push(("kiln.source.sha256".into(), Value::String("0".repeat(64))));
        let plan: Vec<PlannedTensor> = choices
            .iter()
            .map(|c| PlannedTensor {
                name: c.name.clone(),
                ty: c.ty,
                note: None,
            })
            .collect();
        let p = Progress::new("quantize", plan.len(), quiet);
        let progress = |d: usize, t: usize, w: &str| p.step(d, t, w);
        let importance = |name: &str| imatrix.and_then(|(m, _)| m.importance(name));
        let handle = std::sync::Mutex::new(Some(h));
        let q = |name: &str, ty: GgmlType, v: &[f32], cols: usize, imp: Option<&[f32]>| {
            quantizer.quantize(name, ty, v, cols, imp)
        };
        let late = || -> convert::Result<Vec<(String, Value)>> {
            let h = handle
                .lock()
                .unwrap()
                .take()
                .flatten()
                .expect("digest joined once, for the file carrying the metadata");
            let d = h.join().expect("hashing the source panicked")?;
            Ok(vec![("kiln.source.sha256".to_string(), Value::String(d))])
        };
        let w = WriteOptions {
            file_type: ftype.id(),
            extra_metadata: extra,
            importance: imatrix.map(|_| &importance as &(dyn Fn(&str) -> Option<Vec<f32>> + Sync)),
            tokenizer_pre,
            progress: Some(&progress),
            late_metadata: Some(&late),
            quantizer: quantizer.is_custom().then_some(&q as _),
            transform: quantizer.transform(),
            split,
            ..Default::default()
        };
        let report = write_model(src, out, &plan, &w)?;
        p.finish();
        Ok(report)
    })?;
    if let Some((m, _)) = imatrix {
        let expected: Vec<(String, usize)> = choices
            .iter()
            .zip(&descs)
            .filter(|(c, _)| c.ty.is_quantized() && c.name.starts_with("blk."))
            .map(|(c, d)| (c.name.clone(), d.dims[0] as usize))
            .collect();
        for w in m.coverage(&expected) {
            eprintln!("kiln: warning: {w}");
        }
    }
    Ok(Quantized {
        report,
        tensor_bytes: total,
        n_params,
    })
}

pub fn file_sha256(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let b = std::fs::read(p)?;
    Ok(convert::tokenizer::hex(&Sha256::digest(&b)))
}
