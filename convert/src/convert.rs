//! `kiln convert` and `kiln export`: checkpoint → GGUF (F32, F16, BF16 or Q8_0), and any GGUF
//! kiln reads → an FP32 checkpoint directory. Both stream one tensor at a time and write
//! through temporary files renamed into place.

use std::path::{Path, PathBuf};

use quantize::GgmlType;

use crate::atomic::{self, AtomicFile};
use crate::error::{Error, Result};
use crate::gguf::split::{self, SplitPolicy};
use crate::gguf::{GgufWriter, Metadata, TensorSpec, Value};
use crate::source::ModelSource;
use crate::tokenizer;

/// llama.cpp's `general.file_type` values (`llama_ftype`) for the files kiln writes.
pub fn file_type_id(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q6K => 18,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}

/// Options of `kiln convert`.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Type of the 2-D weights: F32, F16, BF16 or Q8_0. 1-D tensors (norms, biases) stay F32.
    pub out_type: GgmlType,
    /// The tokenizer's llama.cpp pre-tokenizer name, when kiln cannot tell it.
    pub tokenizer_pre: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Accept NaN / Inf weights.
    pub allow_nonfinite: bool,
    /// Write split files.
    pub split: Option<SplitOptions>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            out_type: GgmlType::F16,
            tokenizer_pre: None,
            name: None,
            allow_nonfinite: false,
            split: None,
        }
    }
}

/// One tensor of a conversion.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub bytes: u64,
    /// Why the type differs from the requested one, if it does.
    pub note: Option<String>,
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// The file written (the first written of a split model).
    pub output: PathBuf,
    /// Every file written (one, or the split files), with their sizes.
    pub files: Vec<(PathBuf, u64)>,
    pub tensors: Vec<TensorReport>,
    pub file_bytes: u64,
    /// Checkpoint tensors that were not converted (extra) or hold no weights (ignored).
    pub extra: Vec<String>,
    pub ignored: Vec<String>,
    /// Warnings (e.g. blocks whose scale underflowed).
    pub warnings: Vec<String>,
}

/// Checks a tensor's values, naming the first non-finite one.
pub fn check_finite(path: &Path, tensor: &str, v: &[f32]) -> Result<()> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::tensor(
            path,
            tensor,
            format!(
                "value {} at index {i} is not finite (pass --allow-nonfinite to convert anyway)",
                v[i]
            ),
        ));
    }
    Ok(())
}

/// Converts `src` to a GGUF at `out`: 2-D weights to `opts.out_type` (F16 where rows do not
/// fit its blocks), 1-D tensors F32.
pub fn convert(src: &ModelSource, out: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    if !matches!(
        opts.out_type,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
    ) {
        return Err(Error::unsupported(
            out,
            format!(
                "convert writes f32, f16, bf16 or q8_0, not {}",
                opts.out_type
            ),
        ));
    }
    let plan: Vec<PlannedTensor> = src
        .tensors()
        .iter()
        .map(|t| {
            if t.dims.len() == 1 {
                PlannedTensor {
                    name: t.name.clone(),
                    ty: GgmlType::F32,
                    note: None,
                }
            } else if opts.out_type.row_size(t.row_len()).is_none() {
                PlannedTensor {
                    name: t.name.clone(),
                    ty: GgmlType::F16,
                    note: Some(format!(
                        "{} rows of {} do not fit {}'s blocks",
                        t.dims[1],
                        t.row_len(),
                        opts.out_type
                    )),
                }
            } else {
                PlannedTensor {
                    name: t.name.clone(),
                    ty: opts.out_type,
                    note: None,
                }
            }
        })
        .collect();
    let w = WriteOptions {
        file_type: file_type_id(opts.out_type),
        tokenizer_pre: opts.tokenizer_pre.clone(),
        name: opts.name.clone(),
        allow_nonfinite: opts.allow_nonfinite,
        split: opts.split,
        ..Default::default()
    };
    write_model(src, out, &plan, &w)
}

/// One tensor of a write plan.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// GGUF name (a tensor of the source).
    pub name: String,
    /// Type to write.
    pub ty: GgmlType,
    /// Why the type is what it is, when worth telling.
    pub note: Option<String>,
}

/// Importance weights of a tensor's columns (what an imatrix supplies), by tensor name.
pub type ImportanceFn<'a> = &'a (dyn Fn(&str) -> Option<Vec<f32>> + Sync);
/// A progress callback: (done, total, tensor name).
pub type ProgressFn<'a> = &'a (dyn Fn(usize, usize, &str) + Sync);
/// Metadata computed after the tensors are written.
/// A quantizer replacing the reference one (`quantize::quantize`): `(tensor name, type, values,
/// row length, importance)` → bytes and stats. Must keep the type's block layout.
pub type QuantizerFn<'a> = &'a (dyn Fn(
    &str,
    GgmlType,
    &[f32],
    usize,
    Option<&[f32]>,
) -> std::result::Result<(Vec<u8>, quantize::QuantizeStats), quantize::QuantError>
         + Sync);
/// A change of some tensors' values before they are converted (an equivalent transformation
/// folded into the model).
pub trait ValueTransform: Sync {
    /// True when tensor `name`'s values change.
    fn touches(&self, name: &str) -> bool;
    /// The new values of tensor `name` (`cols` values per row).
    fn apply(&self, name: &str, values: Vec<f32>, cols: usize) -> Vec<f32>;
}

pub type LateMetadataFn<'a> = &'a (dyn Fn() -> Result<Vec<(String, Value)>> + Sync);

/// Options of [`write_model`].
#[derive(Default)]
pub struct WriteOptions<'a> {
    /// `general.file_type`.
    pub file_type: u32,
    /// Keys added after the source's metadata (quantization and provenance keys).
    pub extra_metadata: Vec<(String, Value)>,
    /// Importance weights per tensor for the weighted quantizers.
    pub importance: Option<ImportanceFn<'a>>,
    /// Accept NaN / Inf weights (float outputs only).
    pub allow_nonfinite: bool,
    /// The tokenizer's pre-tokenizer, when kiln cannot tell it.
    pub tokenizer_pre: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// Called after each tensor is written: (done, total, tensor name).
    pub progress: Option<ProgressFn<'a>>,
    /// Metadata known only after the tensors are written (a digest computed meanwhile): each
    /// key must already be in `extra_metadata` with a value of the same encoded size; the
    /// header of the temporary file is rewritten with these values before it is renamed.
    pub late_metadata: Option<LateMetadataFn<'a>>,
    /// The quantizer of block types (default: the reference `quantize::quantize`).
    pub quantizer: Option<QuantizerFn<'a>>,
    /// New values for some tensors, applied before conversion.
    pub transform: Option<&'a dyn ValueTransform>,
    /// Write llama.cpp's split files (`OUT-00001-of-0000N.gguf` …) instead of one file.
    pub split: Option<SplitOptions>,
}

/// How [`write_model`] splits its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitOptions {
    /// Where the files are cut.
    pub policy: SplitPolicy,
    /// Write only this file (from 0) of the split: one shard of a build run as N jobs.
    pub only: Option<usize>,
}

impl SplitOptions {
    /// The number of files when the policy fixes it.
    pub fn policy_count(&self) -> Option<usize> {
        match self.policy {
            SplitPolicy::Count(n) => Some(n),
            _ => None,
        }
    }
}

/// Writes `src` as a GGUF at `out` with each tensor in `plan` (in plan order) converted to its
/// type, streaming one tensor at a time. A tensor whose type is unchanged is copied byte for
/// byte (as llama-quantize does).
pub fn write_model(
    src: &ModelSource,
    out: &Path,
    plan: &[PlannedTensor],
    opts: &WriteOptions,
) -> Result<ConvertReport> {
    let mut md = src.base_metadata(opts.tokenizer_pre.as_deref())?;
    if let Some(n) = &opts.name {
        md.set("general.name", Value::String(n.clone()));
    }
    md.set("general.file_type", Value::U32(opts.file_type));
    md.set("general.quantization_version", Value::U32(2));
    md.set(
        "kiln.version",
        Value::String(env!("CARGO_PKG_VERSION").into()),
    );
    for (k, v) in &opts.extra_metadata {
        md.set(k.clone(), v.clone());
    }
    let md = ordered(md);
    let by_name: std::collections::HashMap<&str, &crate::source::SourceTensor> =
        src.tensors().iter().map(|t| (t.name.as_str(), t)).collect();
    let mut specs = Vec::with_capacity(plan.len());
    for p in plan {
        let t = by_name
            .get(p.name.as_str())
            .ok_or_else(|| Error::format(src.path(), format!("no tensor `{}`", p.name)))?;
        specs.push(TensorSpec {
            name: p.name.clone(),
            dims: t.dims.clone(),
            ty: p.ty,
        });
    }
    let whole = GgufWriter::new(out, md, specs)?;
    let mut reports: Vec<TensorReport> = plan
        .iter()
        .enumerate()
        .map(|(i, p)| TensorReport {
            name: p.name.clone(),
            dims: whole.tensors()[i].dims.clone(),
            ty: p.ty,
            bytes: whole.tensor_size(i),
            note: p.note.clone(),
        })
        .collect();
    // The files to write: (path, first tensor, writer).
    let files: Vec<(PathBuf, usize, GgufWriter)> = match opts.split {
        None => vec![(out.to_path_buf(), 0, whole.clone())],
        Some(sp) => {
            let sizes: Vec<u64> = (0..plan.len()).map(|i| whole.tensor_size(i)).collect();
            let align = whole.alignment();
            if let SplitPolicy::MaxBytes(max) = sp.policy {
                if let Some(i) = sizes
                    .iter()
                    .position(|&b| crate::gguf::align_up(b, align) > max)
                {
                    return Err(Error::tensor(
                        out,
                        &whole.tensors()[i].name,
                        format!(
                            "holds {} bytes, more than the split size {max}: no split file can hold it",
                            sizes[i]
                        ),
                    ));
                }
            }
            let parts = split::partition(&sizes, align, sp.policy)
                .map_err(|m| Error::format(out, format!("cannot split: {m}")))?;
            let n = parts.len();
            if let Some(only) = sp.only {
                if only >= n {
                    return Err(Error::format(
                        out,
                        format!("shard {} of {n} does not exist", only + 1),
                    ));
                }
            }
            let digest = split::plan_digest(&whole.header_bytes(), &parts);
            let prefix = split::output_prefix(out);
            let mut files = Vec::new();
            for (i, r) in parts.iter().enumerate() {
                if sp.only.is_some_and(|o| o != i) {
                    continue;
                }
                let path = split::split_path(&prefix, i, n);
                let md = split::split_metadata(whole.metadata(), i, n, plan.len(), &digest);
                let w = GgufWriter::new(&path, md, whole.tensors()[r.clone()].to_vec())?;
                files.push((path, r.start, w));
            }
            files
        }
    };
    let mut warnings: Vec<String> = src
        .config()
        .arch
        .family()
        .gguf_caveat(src.config())
        .into_iter()
        .collect();
    let to_write: usize = files.iter().map(|f| f.2.tensors().len()).sum();
    let mut done = 0usize;
    let mut produce = |gi: usize, warnings: &mut Vec<String>| -> Result<Vec<u8>> {
        let spec = &whole.tensors()[gi];
        done += 1;
        let touched = opts.transform.is_some_and(|t| t.touches(&spec.name));
        if let Some(raw) = src.raw_if_type(&spec.name, spec.ty).filter(|_| !touched) {
            if let Some(p) = opts.progress {
                p(done, to_write, &spec.name);
            }
            return Ok(raw.to_vec());
        }
        let mut v = src.tensor_f32(&spec.name)?;
        if let Some(t) = opts.transform.filter(|_| touched) {
            v = t.apply(&spec.name, v, spec.dims[0] as usize);
        }
        if !opts.allow_nonfinite {
            check_finite(src.path(), &spec.name, &v)?;
        } else if let Some(bytes) = quantize::convert_float(spec.ty, &v) {
            return Ok(bytes);
        }
        let qw = if spec.ty.is_quantized() {
            opts.importance.and_then(|f| f(&spec.name))
        } else {
            None
        };
        let qw = qw.filter(|w| w.len() == spec.dims[0] as usize);
        let (bytes, stats) = match opts.quantizer {
            Some(q) => q(
                &spec.name,
                spec.ty,
                &v,
                spec.dims[0] as usize,
                qw.as_deref(),
            ),
            None => quantize::quantize(spec.ty, &v, spec.dims[0] as usize, qw.as_deref()),
        }
        .map_err(|e| Error::Quant {
            path: src.path().to_path_buf(),
            tensor: spec.name.clone(),
            source: e,
        })?;
        if stats.degraded_blocks > 0 {
            warnings.push(format!(
                "{}: {} blocks lost most of their signal to {} (values too small for its f16 scales)",
                spec.name, stats.degraded_blocks, spec.ty
            ));
        }
        if let Some(p) = opts.progress {
            p(done, to_write, &spec.name);
        }
        Ok(bytes)
    };
    // Every file goes to a temporary beside its final name; all are renamed at the end.
    let mut pending = Vec::with_capacity(files.len());
    for (path, first, writer) in &files {
        let mut file = AtomicFile::create(path)?;
        writer.write(path, file.writer(), |i| produce(first + i, &mut warnings))?;
        // The first file carries the metadata (all of it when split).
        if let (Some(late), true) = (opts.late_metadata, *first == 0) {
            use std::io::{Seek, SeekFrom, Write};
            let mut md2 = writer.metadata().clone();
            for (k, v) in late()? {
                md2.set(k, v);
            }
            let header = GgufWriter::new(path, md2, writer.tensors().to_vec())?.header_bytes();
            if header.len() != writer.header_bytes().len() {
                return Err(Error::format(path, "late metadata changed the header size"));
            }
            let w = file.writer();
            w.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
            w.write_all(&header).map_err(|e| Error::io(path, e))?;
        }
        pending.push(file);
    }
    for f in pending {
        f.commit()?;
    }
    for r in &mut reports {
        if r.note.is_none() && r.ty.is_quantized() && opts.importance.is_some() {
            let has = opts.importance.and_then(|f| f(&r.name)).is_some();
            if !has {
                r.note = Some("no importance data: quantized unweighted".into());
            }
        }
    }
    let (extra, ignored) = match src {
        ModelSource::Hf(h) => (h.extra.clone(), h.ignored.clone()),
        ModelSource::Gguf(_) => (vec![], vec![]),
    };
    let written: Vec<(PathBuf, u64)> = files
        .iter()
        .map(|(p, _, w)| (p.clone(), w.file_size()))
        .collect();
    Ok(ConvertReport {
        output: written[0].0.clone(),
        file_bytes: written.iter().map(|f| f.1).sum(),
        files: written,
        tensors: reports,
        extra,
        ignored,
        warnings,
    })
}

/// Puts `general.*` first, then the architecture's keys, then the tokenizer's, then the rest,
/// each group in insertion order (llama.cpp's converter writes them in this order).
pub fn ordered(md: Metadata) -> Metadata {
    let rank = |k: &str| {
        if k.starts_with("general.") {
            0
        } else if k.starts_with("tokenizer.") {
            2
        } else if k.starts_with("kiln.") || k.starts_with("quantize.") {
            3
        } else {
            1
        }
    };
    let mut entries: Vec<(String, Value)> =
        md.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    entries.sort_by_key(|(k, _)| rank(k));
    let mut out = Metadata::new();
    for (k, v) in entries {
        out.set(k, v);
    }
    out
}

/// What `kiln export` wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub tensors: usize,
    pub files: Vec<PathBuf>,
    /// What the export could not carry exactly.
    pub warnings: Vec<String>,
}

/// Writes `src` (a GGUF) as an FP32 Hugging Face directory: model.safetensors (HF names,
/// Q/K rows un-permuted), config.json, tokenizer.json, tokenizer_config.json.
pub fn export(src: &ModelSource, out_dir: &Path) -> Result<ExportReport> {
    export_with(src, out_dir, None)
}

/// Adds to each value of a quantized tensor `w·(u − 0.5)`, `w` the width of the value's
/// rounding bin — the scale of its block (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: the block's fp16 `d`)
/// or sub-block (Q4_K, Q5_K: `d·sc` of its 32 values; Q6_K: `d·sc` of its 16) — and `u` uniform
/// in [0, 1): a sample of where the original floating-point weight could have been inside its
/// bin, so a model exported from a quantized GGUF has continuous weights again. `u` comes from
/// a SplitMix64 stream per tensor, seeded with `seed` XOR the FNV-1a hash of the GGUF tensor
/// name, one draw per value in storage order (`u` = the top 24 bits / 2²⁴). Float tensors are
/// left as they are.
pub fn add_bin_noise(name: &str, ty: GgmlType, raw: &[u8], values: &mut [f32], seed: u64) {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    // (values per bin group, the bin widths of one block)
    let widths = |blk: &[u8]| -> Vec<f32> {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                vec![f16(&blk[0..2])]
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                let d = f16(&blk[0..2]);
                let sc: [u8; 12] = blk[4..16].try_into().expect("12 scale bytes");
                (0..8)
                    .map(|j| d * quantize::blocks::get_scale_min_k4(j, &sc).0 as f32)
                    .collect()
            }
            GgmlType::Q6K => {
                // ql[128], qh[64], scales[16] (i8), d
                let d = f16(&blk[208..210]);
                blk[192..208]
                    .iter()
                    .map(|&s| d * (s as i8) as f32)
                    .collect()
            }
            _ => Vec::new(),
        }
    };
    if !ty.is_quantized() {
        return;
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let mut state = seed ^ h;
    let mut next = move || {
        state = state.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    };
    let (bs, tsz) = (ty.block_size(), ty.type_size());
    for (blk, vals) in raw.chunks_exact(tsz).zip(values.chunks_mut(bs)) {
        let w = widths(blk);
        if w.is_empty() {
            return;
        }
        let per = bs / w.len();
        for (i, v) in vals.iter_mut().enumerate() {
            *v += w[i / per] * (next() - 0.5);
        }
    }
}

/// [`export`], optionally with [`add_bin_noise`] (`continuous_seed`).
pub fn export_with(
    src: &ModelSource,
    out_dir: &Path,
    continuous_seed: Option<u64>,
) -> Result<ExportReport> {
    let ModelSource::Gguf(g) = src else {
        return Err(Error::unsupported(
            src.path(),
            "export reads a GGUF file (a checkpoint directory is already in HF form)",
        ));
    };
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Error::format(
            out_dir,
            "the output path exists and is not a directory",
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let c = &g.config;
    let md = &g.file.metadata;
    // Tokenizer first: it is the step most likely to refuse, and it writes little.
    let spm = if md.str("tokenizer.ggml.model") == Some("llama") {
        Some(tokenizer::sentencepiece::export_files(g.file.path(), md)?)
    } else {
        None
    };
    let tj = match &spm {
        Some(f) => f.tokenizer_json.clone(),
        None => tokenizer::tokenizer_json_from_gguf(g.file.path(), md)?,
    };
    let defs: std::collections::HashMap<String, crate::arch::TensorDef> = c
        .arch
        .family()
        .tensors(c)
        .into_iter()
        .map(|d| (d.gguf.clone(), d))
        .collect();
    let mut tensors = Vec::new();
    let derived: Vec<String> = crate::arch::derived(c)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if c.rope_freq_factors.is_some() && c.rope_llama3.is_none() {
        return Err(Error::unsupported(
            g.file.path(),
            format!(
                "`{}` matches no Llama 3 RoPE scaling parameters kiln can name for config.json",
                crate::arch::ROPE_FREQS
            ),
        ));
    }
    for t in src.tensors() {
        if derived.contains(&t.name) {
            // config.json's rope_scaling implies it.
            continue;
        }
        let def = defs.get(&t.name).ok_or_else(|| {
            Error::tensor(
                g.file.path(),
                &t.name,
                format!(
                    "has no Hugging Face name (not a tensor of {})",
                    c.arch.gguf_arch()
                ),
            )
        })?;
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        tensors.push((t.name.clone(), def.hf.clone(), shape, def.transform));
    }
    let st_path = out_dir.join("model.safetensors");
    let names: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(_, hf, s, _)| (hf.clone(), s.clone()))
        .collect();
    crate::safetensors::write_f32(&st_path, &names, &[("format".into(), "pt".into())], |i| {
        let (g_name, _, shape, transform) = &tensors[i];
        let mut v = src.tensor_f32(g_name)?;
        if let (Some(seed), Some(t)) = (continuous_seed, g.file.tensor(g_name)) {
            add_bin_noise(g_name, t.ty, g.file.tensor_data(t), &mut v, seed);
        }
        let rows = shape[0];
        let cols = shape.get(1).copied().unwrap_or(1);
        Ok(transform.to_hf(v, rows, cols))
    })?;
    let mut cfg = c.to_hf_json();
    cfg["tie_word_embeddings"] = (g.file.tensor("output.weight").is_none()).into();
    // The embedding's padding row (transformers builds `nn.Embedding(…, padding_idx)` from it;
    // a family's default, e.g. SmolLM3's 128004, may lie outside a smaller vocabulary).
    cfg["pad_token_id"] = md
        .u64("tokenizer.ggml.padding_token_id")
        .filter(|&p| (p as usize) < c.vocab_size)
        .into();
    let pretty = |v: &serde_json::Value| {
        let mut s = serde_json::to_string_pretty(v).expect("json");
        s.push('\n');
        s
    };
    let mut files = vec![
        st_path,
        out_dir.join("config.json"),
        out_dir.join("tokenizer.json"),
        out_dir.join("tokenizer_config.json"),
        out_dir.join("README.md"),
    ];
    atomic::write_file(&files[1], pretty(&cfg).as_bytes())?;
    atomic::write_file(&files[2], pretty(&tj).as_bytes())?;
    let tc = match &spm {
        Some(f) => f.tokenizer_config.clone(),
        None => tokenizer::tokenizer_config_from_gguf(md),
    };
    atomic::write_file(&files[3], pretty(&tc).as_bytes())?;
    atomic::write_file(
        &files[4],
        crate::card::model_card(md, g.file.path()).as_bytes(),
    )?;
    let mut warnings = Vec::new();
    if let Some(f) = &spm {
        let p = out_dir.join("tokenizer.model");
        atomic::write_file(&p, &f.model)?;
        files.push(p);
        if !f.lossy.is_empty() {
            warnings.push(format!(
                "{} tokens will not convert back with the same type or score: {}",
                f.lossy.len(),
                f.lossy
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(ExportReport {
        dir: out_dir.to_path_buf(),
        tensors: tensors.len(),
        files,
        warnings,
    })
}
