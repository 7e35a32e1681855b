//! One quantized artifact: llama.cpp's mix for a file type, importance-weighted by an imatrix,
//! with kiln's methods deciding types and bytes where asked, as one file, split files, or one
//! shard of them (`kiln quantize`; a build target's quantization).

use std::path::{Path, PathBuf};

use calibrate::sensitivity::Allocation;
use calibrate::Imatrix;
use convert::convert::{write_model, ConvertReport, PlannedTensor, SplitOptions, WriteOptions};
use convert::gguf::Value;
use convert::ModelSource;
use quantize::mix::{self, Ftype, MixOptions};
use quantize::GgmlType;

use crate::method::{self, Applied, MethodSpec, ProfileCache, TensorQuantizer};
pub use crate::mixes::{plan, MixPlan};
use crate::text::file_sha256;
use crate::{Error, Observer, Result};

/// A quantization to run: the input, the mix and methods, and where to write.
#[derive(Debug, Clone)]
pub struct Quantization {
    /// The FP32 (or F16/BF16) checkpoint or GGUF.
    pub input: PathBuf,
    /// The file to write (the split files' common name with `split`).
    pub output: PathBuf,
    pub ftype: Ftype,
    /// The importance matrix to weight the quantizers by.
    pub imatrix: Option<PathBuf>,
    /// `REGEX=TYPE` overrides, as given (recorded in the artifact).
    pub tensor_types: Vec<String>,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    /// Every tensor the file type's type (llama-quantize's `--pure`).
    pub pure: bool,
    /// llama.cpp pre-tokenizer name, when kiln cannot tell it.
    pub tokenizer_pre: Option<String>,
    /// kiln's methods beyond llama.cpp's, validated ([`MethodSpec::validate`]).
    pub method: MethodSpec,
    /// Split files, or one shard of them.
    pub split: Option<SplitOptions>,
    /// LoRA adapters merged into the input first (`--lora`): calibration methods and the
    /// artifact see the fine-tuned model.
    pub lora: Vec<convert::lora::LoraSpec>,
}

/// A quantization whose methods have run: the types are decided, nothing is written yet.
pub struct Prepared<'a> {
    job: &'a Quantization,
    src: ModelSource,
    imatrix: Option<Imatrix>,
    mix: MixOptions,
    applied: Applied,
}

impl Quantization {
    /// Opens the input and the imatrix and runs the methods that decide types before writing
    /// (the allocation measures the model; AWQ and GPTQ calibrate on it).
    pub fn prepare(&self, obs: &dyn Observer) -> Result<Prepared<'_>> {
        if self.split.is_some_and(|s| s.only.is_some()) && self.method.any() {
            return Err(Error::options(
                "--shard with --method is not supported: kiln's methods (search, awq, gptq, alloc) measure the whole model; quantize shards with the reference quantizers and --imatrix",
            ));
        }
        let src = ModelSource::open_with_lora(&self.input, &self.lora)?;
        let imatrix = self.imatrix.as_deref().map(Imatrix::read).transpose()?;
        let mut mix = MixOptions {
            has_imatrix: imatrix.is_some(),
            pure: self.pure,
            output_tensor_type: self.output_tensor_type,
            token_embedding_type: self.token_embedding_type,
            overrides: mix::parse_overrides(&self.tensor_types)?,
        };
        let applied = method::apply(
            &self.method,
            &self.input,
            &self.lora,
            self.ftype,
            &mix,
            imatrix.as_ref(),
            self.tokenizer_pre.as_deref(),
            &mut ProfileCache::default(),
            obs,
        )?;
        mix.overrides.extend(applied.overrides.iter().cloned());
        Ok(Prepared {
            job: self,
            src,
            imatrix,
            mix,
            applied,
        })
    }
}

impl Prepared<'_> {
    /// The allocation's per-tensor outcome, when `alloc` ran.
    pub fn allocation(&self) -> Option<&Allocation> {
        self.applied.allocation.as_ref()
    }

    /// The per-tensor types the artifact will have (what `--dry-run` shows).
    pub fn plan(&self) -> Result<MixPlan> {
        plan(&self.src, self.job.ftype, &self.mix)
    }

    /// Writes the artifact. With a `--target-size` the file must fit, else it is removed and
    /// the size is an error.
    pub fn write(self, obs: &dyn Observer) -> Result<Quantized> {
        let j = self.job;
        let q = write_artifact(
            &self.src,
            Artifact {
                out: &j.output,
                ftype: j.ftype,
                imatrix: self.imatrix.as_ref().zip(j.imatrix.as_deref()),
                imatrix_name: None,
                mix: self.mix,
                tensor_types: &j.tensor_types,
                tokenizer_pre: j.tokenizer_pre.clone(),
                extra_meta: self.applied.metadata,
                quantizer: &self.applied.quantizer,
                split: j.split,
            },
            obs,
        )?;
        if let Some(t) = j.method.target_size {
            if q.report.file_bytes > t {
                let _ = std::fs::remove_file(&q.report.output);
                return Err(Error::options(format!(
                    "{}: {} bytes exceed --target-size {t}; removed",
                    q.report.output.display(),
                    q.report.file_bytes
                )));
            }
        }
        Ok(q)
    }
}

/// What a quantization wrote.
pub struct Quantized {
    pub report: ConvertReport,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Parameters of the model.
    pub n_params: u64,
}

impl Quantized {
    /// Bits per weight over all parameters.
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes as f64 * 8.0 / self.n_params as f64
    }
}

/// What to write for one artifact (the methods already applied).
pub struct Artifact<'a> {
    pub out: &'a Path,
    pub ftype: Ftype,
    /// The imatrix and the path it came from.
    pub imatrix: Option<(&'a Imatrix, &'a Path)>,
    /// How `quantize.imatrix.file` names the imatrix (default: the path as given, as
    /// llama-quantize records it).
    pub imatrix_name: Option<&'a str>,
    pub mix: MixOptions,
    /// The `REGEX=TYPE` overrides as given, for the provenance key.
    pub tensor_types: &'a [String],
    pub tokenizer_pre: Option<String>,
    /// Metadata the methods and masks add.
    pub extra_meta: Vec<(String, Value)>,
    pub quantizer: &'a TensorQuantizer,
    pub split: Option<SplitOptions>,
}

/// Quantizes `src` to `a.out` with llama.cpp's mix for `a.ftype`, importance-weighted by the
/// imatrix when given, with llama.cpp's `quantize.imatrix.*` keys and kiln's provenance keys.
pub fn write_artifact(src: &ModelSource, a: Artifact, obs: &dyn Observer) -> Result<Quantized> {
    let Artifact {
        out,
        ftype,
        imatrix,
        imatrix_name,
        mix: opts,
        tensor_types,
        tokenizer_pre,
        extra_meta,
        quantizer,
        split,
    } = a;
    let MixPlan {
        choices,
        descs,
        n_params,
        tensor_bytes: total,
    } = plan(src, ftype, &opts)?;
    let report = std::thread::scope(|s| -> Result<ConvertReport> {
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
        let progress = |d: usize, t: usize, w: &str| obs.step("quantize", d, t, w);
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
        obs.finish("quantize");
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
            obs.warn(&w);
        }
    }
    Ok(Quantized {
        report,
        tensor_bytes: total,
        n_params,
    })
}
