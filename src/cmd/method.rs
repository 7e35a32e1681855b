//! `--method`: kiln's calibration methods on top of llama.cpp's importance-weighted quantizers
//! (`kiln quantize` and a build target's `method`). Each is a switch:
//!
//! * `search` — a stronger per-block search of scales and mins under the importance-weighted
//!   error, starting from llama.cpp's block and keeping it unless strictly improved
//!   ([`quantize::refine`]).
//! * `alloc` — sensitivity-driven type allocation within a byte budget
//!   ([`calibrate::sensitivity`]): `--target-size`, `--target-bpw`, or by default the size of
//!   the llama.cpp mix of the chosen file type.
//!
//! The method and its parameters are recorded in the artifact (`kiln.quantize.method`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use calibrate::sensitivity::{self, ProfileInputs, SensitivityOptions};
use calibrate::Imatrix;
use convert::gguf::{GgufWriter, TensorSpec, Value};
use convert::ModelSource;
use quantize::mix::{Ftype, MixOptions};
use quantize::GgmlType;

use super::infer::{tokenize_file, tokenizer_of};
use super::progress::Progress;
use super::quant::plan;

/// The methods asked for and their parameters (validated).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MethodSpec {
    /// Stronger per-block scale search.
    pub search: bool,
    /// Sensitivity-driven type allocation.
    pub alloc: bool,
    /// Calibration texts the methods measure on.
    pub calib_texts: Vec<PathBuf>,
    /// Whole-file size budget in bytes.
    pub target_size: Option<u64>,
    /// Budget in bits per weight (over all parameters).
    pub target_bpw: Option<f64>,
    /// Sensitivity measurement: tokens per chunk and chunks.
    pub ctx: usize,
    pub chunks: usize,
    /// Where to write the allocation's per-tensor report (JSON).
    pub alloc_report: Option<PathBuf>,
}

impl MethodSpec {
    /// Parses a comma-separated `--method` list.
    pub fn parse(list: &[String]) -> Result<Self> {
        let mut m = MethodSpec {
            ctx: 512,
            chunks: 1,
            ..Default::default()
        };
        for name in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
            match name {
                "" | "imatrix" => {}
                "search" => m.search = true,
                "alloc" => m.alloc = true,
                other => bail!("unknown --method {other:?} (known: imatrix, search, alloc)"),
            }
        }
        Ok(m)
    }

    /// True when any method beyond llama.cpp's is on.
    pub fn any(&self) -> bool {
        self.alloc || self.search
    }

    /// Checks the parameters against each other.
    pub fn validate(&self) -> Result<()> {
        if self.target_size.is_some() && self.target_bpw.is_some() {
            bail!("give --target-size or --target-bpw, not both");
        }
        if (self.target_size.is_some() || self.target_bpw.is_some()) && !self.alloc {
            bail!("--target-size / --target-bpw need --method alloc");
        }
        if let Some(b) = self.target_bpw {
            if !(b.is_finite() && b > 0.0) {
                bail!("--target-bpw {b} must be a positive number");
            }
        }
        if self.alloc && self.calib_texts.is_empty() {
            bail!("--method alloc measures on calibration text: give --calib-text FILE");
        }
        if self.ctx == 0 || self.chunks == 0 {
            bail!("sensitivity context and chunks must be positive");
        }
        Ok(())
    }
}

/// What [`apply`] decided: per-tensor types (as exact-name overrides) and provenance.
pub struct Applied {
    pub overrides: Vec<(regex::Regex, GgmlType)>,
    pub metadata: Vec<(String, Value)>,
    /// The allocation's per-tensor outcome, for reports.
    pub allocation: Option<sensitivity::Allocation>,
}

/// Sensitivity profiles already measured in this process (a build's targets share them), by
/// the options they depend on.
pub type ProfileCache = std::collections::BTreeMap<String, sensitivity::Profile>;

/// Bytes kept free in the budget for kiln's method keys in the header.
const HEADER_RESERVE: u64 = 4096;

fn padded(ty: GgmlType, dims: &[u64]) -> u64 {
    let rows: u64 = dims.iter().skip(1).product();
    (ty.row_size(dims[0] as usize).unwrap_or(0) as u64 * rows).div_ceil(32) * 32
}

/// Runs the methods of `spec` that decide types before writing. `src` must be the FP32 source.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    spec: &MethodSpec,
    src_path: &std::path::Path,
    ftype: Ftype,
    mix: &MixOptions,
    imatrix: Option<&Imatrix>,
    tokenizer_pre: Option<&str>,
    cache: &mut ProfileCache,
    quiet: bool,
) -> Result<Applied> {
    let mut applied = Applied {
        overrides: Vec::new(),
        metadata: Vec::new(),
        allocation: None,
    };
    if !spec.any() {
        return Ok(applied);
    }
    let mut record = serde_json::json!({ "methods": [] });
    if spec.search {
        record["methods"]
            .as_array_mut()
            .expect("array")
            .push("search".into());
        record["search"] = serde_json::json!({
            "objective": "importance-weighted squared error of the decoded block",
            "legacy_scales": 32, "affine_trims": 16, "k_rounds": 3, "k_radius": 2,
        });
    }
    if spec.alloc {
        // Only the allocation runs the model (search works tensor by tensor while writing).
        let loaded = verify::load::load(src_path)?;
        let src: &ModelSource = &loaded.source;
        let (base, descs, n_params, _) = plan(src, ftype, mix)?;
        let tok = tokenizer_of(src, tokenizer_pre)?;
        let mut tokens = Vec::new();
        for t in &spec.calib_texts {
            tokens.extend(tokenize_file(&tok, t)?);
        }
        let names = sensitivity::matrix_names(&loaded.model);
        let is_matrix = |n: &str| names.iter().any(|m| m == n);
        let fixed: u64 = base
            .iter()
            .zip(&descs)
            .filter(|(c, _)| !is_matrix(&c.name))
            .map(|(c, d)| padded(c.ty, &d.dims))
            .sum();
        let base_matrices: u64 = base
            .iter()
            .zip(&descs)
            .filter(|(c, _)| is_matrix(&c.name))
            .map(|(c, d)| padded(c.ty, &d.dims))
            .sum();
        let header = {
            let md = src.base_metadata(tokenizer_pre)?;
            let specs = base
                .iter()
                .zip(&descs)
                .map(|(c, d)| TensorSpec {
                    name: c.name.clone(),
                    dims: d.dims.clone(),
                    ty: c.ty,
                })
                .collect();
            GgufWriter::new(src_path, md, specs)?.header_bytes().len() as u64
        };
        let budget = match (spec.target_size, spec.target_bpw) {
            (Some(size), _) => size
                .checked_sub(fixed + header + HEADER_RESERVE)
                .context("--target-size is smaller than the model's header and norms")?,
            (None, Some(bpw)) => ((bpw * n_params as f64 / 8.0) as u64)
                .checked_sub(fixed)
                .context("--target-bpw leaves nothing for the weight matrices")?,
            (None, None) => base_matrices.saturating_sub(HEADER_RESERVE),
        };
        let importance = |name: &str| imatrix.and_then(|m| m.importance(name));
        let quantizer = |_: &str, ty: GgmlType, v: &[f32], cols: usize, imp: Option<&[f32]>| {
            let q = if spec.search {
                quantize::refine::quantize_searched
            } else {
                quantize::quantize
            };
            q(ty, v, cols, imp)
                .map(|(b, _)| b)
                .map_err(|e| e.to_string())
        };
        let candidates = |_: &str, cols: usize| sensitivity::default_candidates(cols);
        let opts = SensitivityOptions {
            ctx: spec.ctx,
            chunks: spec.chunks,
            bos: if tok.add_bos { tok.bos } else { None },
        };
        // Everything the profile depends on besides the model and texts, which a build shares
        // (and so does its one imatrix, where a target uses it).
        let key = format!(
            "search={} imatrix={} ctx={} chunks={}",
            spec.search,
            imatrix.is_some(),
            spec.ctx,
            spec.chunks
        );
        let p = Progress::new(
            "sensitivity",
            names.len(),
            quiet || cache.contains_key(&key),
        );
        let prof = match cache.entry(key) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(sensitivity::profile(
                &ProfileInputs {
                    model: &loaded.model,
                    tokens: &tokens,
                    opts,
                    importance: &importance,
                    candidates: &candidates,
                    quantizer: &quantizer,
                },
                |stage, d, t| p.step(d, t, stage),
            )?),
        };
        let start: std::collections::BTreeMap<String, GgmlType> =
            base.iter().map(|c| (c.name.clone(), c.ty)).collect();
        let alloc = prof.allocate(budget, Some(&start))?;
        if let Some(p) = &spec.alloc_report {
            convert::atomic::write_file(p, serde_json::to_string_pretty(&alloc)?.as_bytes())?;
        }
        p.finish();
        for t in &alloc.tensors {
            let re = regex::Regex::new(&format!("^{}$", regex::escape(&t.name)))?;
            applied.overrides.push((re, t.ty));
        }
        record["methods"]
            .as_array_mut()
            .expect("array")
            .push("alloc".into());
        record["alloc"] = serde_json::json!({
            "budget_bytes": budget,
            "matrix_bytes": alloc.used,
            "predicted_kld": alloc.predicted_kld,
            "target_size": spec.target_size,
            "target_bpw": spec.target_bpw,
            "sensitivity_ctx": spec.ctx,
            "sensitivity_chunks": spec.chunks,
            "calib_texts": spec.calib_texts.iter()
                .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
                .collect::<Vec<_>>(),
        });
        applied.allocation = Some(alloc);
    }
    applied.metadata.push((
        "kiln.quantize.method".into(),
        Value::String(record.to_string()),
    ));
    Ok(applied)
}
