//! `--method`: kiln's calibration methods on top of llama.cpp's importance-weighted quantizers
//! (`kiln quantize` and a build target's `method`). Each is a switch:
//!
//! * `search` — a stronger per-block search of scales and mins under the importance-weighted
//!   error, starting from llama.cpp's block and keeping it unless strictly improved
//!   ([`quantize::refine`]).
//! * `awq` — activation-aware channel scalings folded into the FP32 model before quantizing
//!   (RMSNorm → q/k/v and gate/up, up → down; [`calibrate::awq`]), searched on the imatrix;
//!   the model's function is unchanged, the norms stay F32.
//! * `gptq` — GPTQ error feedback across columns under the calibration Hessian `XᵀX` of each
//!   matrix's input, constrained to the target block format ([`quantize::gptq`],
//!   [`calibrate::hessian`]); block scales come from ggml's quantizer (or `search`'s) on the
//!   error-corrected weights.
//! * `alloc` — sensitivity-driven type allocation within a byte budget
//!   ([`calibrate::sensitivity`]): `--target-size`, `--target-bpw`, or by default the size of
//!   the llama.cpp mix of the chosen file type.
//!
//! The method and its parameters are recorded in the artifact (`kiln.quantize.method`).

use std::path::PathBuf;

use calibrate::sensitivity::{self, ProfileInputs, SensitivityOptions};
use calibrate::Imatrix;
use convert::gguf::{GgufWriter, TensorSpec, Value};
use convert::ModelSource;
use quantize::mix::{Ftype, MixOptions};
use quantize::GgmlType;

use crate::error::bail;
use crate::mixes::{plan, MixPlan};
use crate::text::{tokenize_files, tokenizer_of};
use crate::{Context, Error, Observer, Result};

/// The methods asked for and their parameters (validated).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MethodSpec {
    /// Stronger per-block scale search.
    pub search: bool,
    /// Sensitivity-driven type allocation.
    pub alloc: bool,
    /// GPTQ error feedback.
    pub gptq: bool,
    /// AWQ-style equivalent scalings.
    pub awq: bool,
    /// Calibration chunks (of `ctx` tokens) the GPTQ Hessians are accumulated over.
    pub hessian_chunks: usize,
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
            hessian_chunks: 32,
            ..Default::default()
        };
        for name in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
            match name {
                "" | "imatrix" => {}
                "search" => m.search = true,
                "alloc" => m.alloc = true,
                "gptq" => m.gptq = true,
                "awq" => m.awq = true,
                other => {
                    bail!("unknown --method {other:?} (known: imatrix, search, awq, gptq, alloc)")
                }
            }
        }
        Ok(m)
    }

    /// True when any method beyond llama.cpp's is on.
    pub fn any(&self) -> bool {
        self.alloc || self.search || self.gptq || self.awq
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
        if self.gptq && self.calib_texts.is_empty() {
            bail!("--method gptq accumulates Hessians on calibration text: give --calib-text FILE");
        }
        if self.ctx == 0 || self.chunks == 0 || self.hessian_chunks == 0 {
            bail!("sensitivity context and chunks must be positive");
        }
        Ok(())
    }
}

/// How the methods make each tensor's bytes: GPTQ where a Hessian exists for the tensor, else
/// the searched or the reference quantizer.
#[derive(Default)]
pub struct TensorQuantizer {
    search: bool,
    /// `U = chol(H⁻¹)` per shared matrix input.
    gptq: Option<std::sync::Arc<HessianFactors>>,
    /// AWQ's folds: the values written and the importance the quantizer weighs by.
    folds: Option<std::sync::Arc<calibrate::awq::Folds>>,
}

impl convert::convert::ValueTransform for TensorQuantizer {
    fn touches(&self, name: &str) -> bool {
        self.folds.as_ref().is_some_and(|f| f.touches(name))
    }
    fn apply(&self, name: &str, values: Vec<f32>, cols: usize) -> Vec<f32> {
        match &self.folds {
            Some(f) => f.apply(name, values, cols),
            None => values,
        }
    }
}

impl TensorQuantizer {
    /// Quantizes tensor `name` (the signature of `convert`'s quantizer hook).
    pub fn quantize(
        &self,
        name: &str,
        ty: GgmlType,
        v: &[f32],
        cols: usize,
        imp: Option<&[f32]>,
    ) -> Result<(Vec<u8>, quantize::QuantizeStats), quantize::QuantError> {
        let folded = self
            .folds
            .as_ref()
            .and_then(|f| imp.and_then(|i| f.importance(name, i)));
        let imp = folded.as_deref().or(imp);
        let hinv = self.gptq.as_ref().and_then(|g| {
            calibrate::hessian::slot_of(name)
                .and_then(|s| g.get(&s))
                .filter(|h| h.n() == cols)
        });
        match hinv {
            Some(h) if ty.is_quantized() => {
                quantize::gptq::quantize_gptq(ty, v, cols, imp, h, self.search)
            }
            _ if self.search => quantize::refine::quantize_searched(ty, v, cols, imp),
            _ => quantize::quantize(ty, v, cols, imp),
        }
    }

    /// True when it differs from the reference quantizer.
    pub fn is_custom(&self) -> bool {
        self.search || self.gptq.is_some() || self.folds.is_some()
    }

    /// The value transformation to write with, if any.
    pub fn transform(&self) -> Option<&dyn convert::convert::ValueTransform> {
        self.folds.is_some().then_some(self as _)
    }
}

/// What [`apply`] decided: per-tensor types (as exact-name overrides) and provenance.
pub struct Applied {
    pub overrides: Vec<(regex::Regex, GgmlType)>,
    pub metadata: Vec<(String, Value)>,
    /// The allocation's per-tensor outcome, for reports.
    pub allocation: Option<sensitivity::Allocation>,
    /// The quantizer the artifact is written with.
    pub quantizer: TensorQuantizer,
}

/// GPTQ's Hessian factors per shared matrix input (`calibrate::hessian::slot_of`).
pub type HessianFactors =
    std::collections::BTreeMap<(usize, usize), quantize::gptq::HessianInverse>;

/// What the methods measured already in this process (a build's targets share it), by the
/// options it depends on: sensitivity profiles and GPTQ's Hessian factors.
#[derive(Default)]
pub struct ProfileCache {
    profiles: std::collections::BTreeMap<String, sensitivity::Profile>,
    factors: std::collections::BTreeMap<String, (std::sync::Arc<HessianFactors>, usize)>,
}

/// Points of AWQ's α grid in [0, 1] (AWQ's reference searches 20).
const AWQ_GRID: usize = 11;

/// Bytes kept free in the budget for kiln's method keys in the header, beyond what the methods
/// before `alloc` have recorded already (AWQ's per-fold α grows with the layer count).
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
    lora: &[convert::lora::LoraSpec],
    ftype: Ftype,
    mix: &MixOptions,
    imatrix: Option<&Imatrix>,
    tokenizer_pre: Option<&str>,
    cache: &mut ProfileCache,
    obs: &dyn Observer,
) -> Result<Applied> {
    let mut applied = Applied {
        overrides: Vec::new(),
        metadata: Vec::new(),
        allocation: None,
        quantizer: TensorQuantizer {
            search: spec.search,
            gptq: None,
            folds: None,
        },
    };
    if !spec.any() {
        return Ok(applied);
    }
    // Each method run, in order, and its parameters.
    let mut methods: Vec<&str> = Vec::new();
    let mut record = serde_json::json!({});
    if spec.search {
        methods.push("search");
        record["search"] = serde_json::json!({
            "objective": "importance-weighted squared error of the decoded block",
            "legacy_scales": 32, "affine_trims": 16, "k_rounds": 3, "k_radius": 2,
            "lowbit_scale_radius": 63, "iq4nl_scales": 48,
        });
    }
    // Only AWQ, GPTQ and the allocation run the model (search works tensor by tensor while
    // writing).
    let mut calib = if spec.alloc || spec.gptq || spec.awq {
        let loaded = verify::load::load_with(src_path, &verify::load::LoraLoad::merged(lora))?;
        let tok = tokenizer_of(&loaded.source, tokenizer_pre)?;
        let tokens = tokenize_files(&tok, &spec.calib_texts)?;
        Some((loaded, tok, tokens))
    } else {
        None
    };
    let calib_names = || -> Vec<String> {
        spec.calib_texts
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect()
    };
    if let (true, Some((loaded, tok, tokens))) = (spec.alloc, &calib) {
        let src: &ModelSource = &loaded.source;
        let MixPlan {
            choices: base,
            descs,
            n_params,
            ..
        } = plan(src, ftype, mix)?;

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
        let reserve = HEADER_RESERVE + record.to_string().len() as u64;
        let budget = match (spec.target_size, spec.target_bpw) {
            (Some(size), _) => size.checked_sub(fixed + header + reserve).ok_or_else(|| {
                Error::options("--target-size is smaller than the model's header and norms")
            })?,
            (None, Some(bpw)) => ((bpw * n_params as f64 / 8.0) as u64)
                .checked_sub(fixed)
                .ok_or_else(|| {
                    Error::options("--target-bpw leaves nothing for the weight matrices")
                })?,
            (None, None) => base_matrices.saturating_sub(reserve),
        };
        let importance = |name: &str| imatrix.and_then(|m| m.importance(name));
        let quantizer = |name: &str, ty: GgmlType, v: &[f32], cols: usize, imp: Option<&[f32]>| {
            applied
                .quantizer
                .quantize(name, ty, v, cols, imp)
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
        // (and so does its one imatrix, where a target uses it). It is measured before AWQ and
        // GPTQ, with the search's (or the reference) quantizer: the allocation ranks types by
        // their cost, which those methods lower for every type alike, and then AWQ searches
        // its scalings for the types chosen.
        let key = format!(
            "lora={:?} search={} imatrix={} ctx={} chunks={}",
            lora,
            spec.search,
            imatrix.is_some(),
            spec.ctx,
            spec.chunks
        );
        let prof = match cache.profiles.entry(key) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(sensitivity::profile(
                &ProfileInputs {
                    model: &loaded.model,
                    tokens,
                    opts,
                    importance: &importance,
                    candidates: &candidates,
                    quantizer: &quantizer,
                },
                |stage, d, t| obs.step("sensitivity", d, t, stage),
            )?),
        };
        let start: std::collections::BTreeMap<String, GgmlType> =
            base.iter().map(|c| (c.name.clone(), c.ty)).collect();
        let alloc = prof.allocate(budget, Some(&start))?;
        if let Some(p) = &spec.alloc_report {
            let json = serde_json::to_string_pretty(&alloc).expect("an allocation serializes");
            convert::atomic::write_file(p, json.as_bytes())?;
        }
        obs.finish("sensitivity");
        for t in &alloc.tensors {
            let re = regex::Regex::new(&format!("^{}$", regex::escape(&t.name)))?;
            applied.overrides.push((re, t.ty));
        }
        methods.push("alloc");
        record["alloc"] = serde_json::json!({
            "budget_bytes": budget,
            "matrix_bytes": alloc.used,
            "predicted_kld": alloc.predicted_kld,
            "target_size": spec.target_size,
            "target_bpw": spec.target_bpw,
            "sensitivity_ctx": spec.ctx,
            "sensitivity_chunks": spec.chunks,
            "calib_texts": calib_names(),
        });
        applied.allocation = Some(alloc);
    }
    if let (true, Some((loaded, _, _))) = (spec.awq, &mut calib) {
        let imatrix = imatrix.ok_or_else(|| {
            Error::options(
                "--method awq scales channels by their activations: give it an imatrix (--imatrix)",
            )
        })?;
        // The types the artifact will have: the mix's, or the allocation's.
        let base = plan(&loaded.source, ftype, mix)?.choices;
        let mut types: std::collections::BTreeMap<String, GgmlType> =
            base.iter().map(|c| (c.name.clone(), c.ty)).collect();
        for t in applied.allocation.iter().flat_map(|a| &a.tensors) {
            types.insert(t.name.clone(), t.ty);
        }
        let folds = calibrate::awq::search(
            &loaded.model,
            &calibrate::awq::AwqInputs {
                importance: &|n: &str| imatrix.importance(n),
                ty: &|n: &str| types.get(n).copied(),
                grid: AWQ_GRID,
            },
            |d, t| obs.step("awq", d, t, "folds"),
        );
        obs.finish("awq");
        folds.fold_model(&mut loaded.model)?;
        let (plain, folded): (f64, f64) = folds.iter().fold((0.0, 0.0), |(a, b), f| {
            (a + f.error_plain, b + f.error_folded)
        });
        // Per kind of fold: how many scale anything, and their mean α.
        let mut kinds = serde_json::Map::new();
        for kind in ["AttnNorm", "FfnNorm", "UpDown"] {
            let a: Vec<f32> = folds
                .iter()
                .filter(|f| format!("{:?}", f.kind) == kind)
                .map(|f| f.alpha)
                .collect();
            let used = a.iter().filter(|&&x| x > 0.0).count();
            let mean = a.iter().sum::<f32>() / a.len().max(1) as f32;
            kinds.insert(
                kind.into(),
                serde_json::json!({ "folds": a.len(), "scaled": used, "mean_alpha": mean }),
            );
        }
        methods.push("awq");
        record["awq"] = serde_json::json!({
            "folds": calibrate::awq::description(&loaded.model.config),
            "skipped": folds.skipped(),
            "scales": "rms(x)^alpha normalised to sqrt(max*min) = 1",
            "alpha_grid": AWQ_GRID,
            "objective": "importance-weighted error of the consumers, in the original space",
            "error_ratio": if plain > 0.0 { folded / plain } else { 1.0 },
            "alpha": kinds,
        });
        applied.quantizer.folds = Some(std::sync::Arc::new(folds));
    }
    if let (true, Some((loaded, tok, tokens))) = (spec.gptq, &calib) {
        // The folded model's Hessians differ with the folds (AWQ's types differ per target).
        let folds: Vec<String> = applied
            .quantizer
            .folds
            .iter()
            .flat_map(|f| f.iter())
            .map(|f| f.alpha.to_string())
            .collect();
        let key = format!(
            "lora={:?} ctx={} chunks={} awq={}",
            lora,
            spec.ctx,
            spec.hessian_chunks,
            folds.join(",")
        );
        let (factors, n) = match cache.factors.get(&key) {
            Some(f) => f.clone(),
            None => {
                let f = hessian_factors(spec, loaded, tok, tokens, obs)?;
                cache.factors.insert(key, f.clone());
                f
            }
        };
        let max_damp = factors.values().map(|u| u.damp).fold(0.0, f64::max);
        applied.quantizer.gptq = Some(factors);
        methods.push("gptq");
        record["gptq"] = serde_json::json!({
            "hessian": "X^T X of each matrix input, FP32 forward",
            "ctx": spec.ctx,
            "chunks": n,
            "damp": quantize::gptq::DEFAULT_DAMP,
            "max_damp_used": max_damp,
            "order": "columns in order; block scales chosen on the corrected weights",
            "calib_texts": calib_names(),
        });
    }
    record["methods"] = methods.into();
    applied.metadata.push((
        "kiln.quantize.method".into(),
        Value::String(record.to_string()),
    ));
    Ok(applied)
}

/// Accumulates the calibration Hessians and factors them for GPTQ; returns the factors and the
/// chunks used.
fn hessian_factors(
    spec: &MethodSpec,
    loaded: &verify::load::Loaded,
    tok: &convert::tokenizer::Tokenizer,
    tokens: &[u32],
    obs: &dyn Observer,
) -> Result<(std::sync::Arc<HessianFactors>, usize)> {
    let n = spec.hessian_chunks.min(tokens.len() / spec.ctx);
    let hs = calibrate::hessian::collect(
        &loaded.model,
        tokens,
        spec.ctx,
        spec.hessian_chunks,
        if tok.add_bos { tok.bos } else { None },
        |d, t| obs.step("hessians", d, t, "chunks"),
    )?;
    obs.finish("hessians");
    let slots: Vec<(usize, usize)> = (0..hs.n_layers())
        .flat_map(|l| (0..4).map(move |k| (l, k)))
        .collect();
    let name = |(l, k): (usize, usize)| {
        let m = ["attn_q", "attn_output", "ffn_gate", "ffn_down"][k];
        format!("blk.{l}.{m}.weight")
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    use rayon::prelude::*;
    let inverses = slots
        .par_iter()
        .filter_map(|&s| {
            let (h, n) = hs.matrix_at(s.0, s.1)?;
            let r = quantize::gptq::HessianInverse::new(&h, n, quantize::gptq::DEFAULT_DAMP)
                .map(|u| (s, u))
                .context_with(|| format!("the calibration Hessian of {}", name(s)));
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            obs.step("gptq", d, slots.len(), "inputs");
            Some(r)
        })
        .collect::<Result<std::collections::BTreeMap<_, _>>>()?;
    obs.finish("gptq");
    Ok((std::sync::Arc::new(inverses), n))
}
