//! Sensitivity-driven type allocation: which tensor gets which llama.cpp type under a byte
//! budget, chosen from what each tensor does to the model's output on calibration text.
//!
//! 1. For every weight matrix, quantize it (with the quantizer the artifact will use) to each
//!    candidate type and record the importance-weighted squared error
//!    `E(t) = Σ_rows Σ_j imp_j · (w_ij − q_ij)²` (`imp` the imatrix's mean x² per column).
//! 2. Measure, on the calibration tokens, the KL divergence from the FP32 model when *only* that
//!    matrix is replaced by its cheapest candidate and by its second-largest ([`measure`]). The forward pass restarts at
//!    the matrix's layer from the residual stream the FP32 pass left there, so a matrix of layer
//!    `l` costs `n_layers − l` layers, not the whole model.
//! 3. Predict the divergence of every other type from its error by the power law through the
//!    two measurements, `KLD = a·E^b` (for small perturbations the KL divergence is a
//!    quadratic form of the weight error, `b = 1`, which the imatrix-weighted error
//!    approximates; the fit corrects for larger ones).
//! 4. Choose one type per matrix minimising the summed predicted divergence within the budget,
//!    never predicted worse than the llama.cpp mix ([`quantize::alloc::allocate`]).
//!
//! Everything is deterministic: fixed tokens, fixed order, sums reduced in a fixed order.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kernels::{forward, ForwardOptions, Logits, Model, Observer, State, Weight};
use quantize::alloc::{allocate, AllocError, Candidate};
use quantize::GgmlType;
use rayon::prelude::*;
use serde::Serialize;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum SensitivityError {
    #[error("sensitivity: {0}")]
    Forward(#[from] kernels::ForwardError),
    #[error("sensitivity: the text has {have} tokens, fewer than one chunk of {need}")]
    TooShort { have: usize, need: usize },
    #[error("{tensor}: {msg}")]
    Tensor { tensor: String, msg: String },
    #[error("type allocation: {0}")]
    Budget(#[from] AllocError),
}

/// Where and how much to measure.
#[derive(Debug, Clone)]
pub struct SensitivityOptions {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks of calibration text (each scored at every position).
    pub chunks: usize,
    /// BOS id put first in each chunk when the model adds BOS.
    pub bos: Option<u32>,
}

impl Default for SensitivityOptions {
    fn default() -> Self {
        SensitivityOptions {
            ctx: 512,
            chunks: 1,
            bos: None,
        }
    }
}

/// Where a GGUF matrix name points.
enum Slot<'n> {
    Embedding,
    Output,
    /// Layer and block matrix name (one of [`kernels::Config::block_matrices`]).
    Block(usize, &'n str),
}

fn slot(name: &str) -> Option<Slot<'_>> {
    match name {
        "token_embd.weight" => Some(Slot::Embedding),
        "output.weight" => Some(Slot::Output),
        _ => {
            let (l, rest) = name.strip_prefix("blk.")?.split_once('.')?;
            Some(Slot::Block(l.parse().ok()?, rest.strip_suffix(".weight")?))
        }
    }
}

/// GGUF names of the model's weight matrices: the embedding, each block's matrices as the
/// GGUF stores them (fused ones whole), the output projection.
pub fn matrix_names(model: &Model) -> Vec<String> {
    let mut v = vec!["token_embd.weight".to_string()];
    for l in 0..model.layers.len() {
        v.extend(
            model
                .config
                .block_matrices()
                .iter()
                .map(|k| format!("blk.{l}.{k}.weight")),
        );
    }
    if model.output.is_some() {
        v.push("output.weight".into());
    }
    v
}

/// Replaces the matrix called `name` (GGUF name) by `f` of it; returns the layer a forward
/// pass must start at to feel the change (`None`: from the embeddings), or `None` when the
/// model has no such matrix.
fn replace_matrix(
    model: &mut Model,
    name: &str,
    f: impl FnOnce(&Weight) -> Result<Weight, SensitivityError>,
) -> Option<Result<Option<usize>, SensitivityError>> {
    let n_layers = model.layers.len();
    Some(match slot(name)? {
        Slot::Embedding => f(&model.token_embd).map(|w| {
            model.token_embd = w;
            None
        }),
        Slot::Output => {
            let o = model.output.as_mut()?;
            f(o).map(|w| {
                *o = w;
                Some(n_layers)
            })
        }
        Slot::Block(l, k) => {
            let Model { config, layers, .. } = model;
            let b = layers.get_mut(l)?;
            let old = b.matrix(config, k)?;
            f(&old).and_then(|w| {
                if b.set_matrix(config, k, w) {
                    Ok(Some(l))
                } else {
                    Err(SensitivityError::Tensor {
                        tensor: name.to_string(),
                        msg: "the replacement does not fit".into(),
                    })
                }
            })
        }
    })
}

/// The matrix called `name` (a fused one whole), if the model has it.
pub fn weight(model: &Model, name: &str) -> Option<Weight> {
    match slot(name)? {
        Slot::Embedding => Some(model.token_embd.clone()),
        Slot::Output => model.output.clone(),
        Slot::Block(l, k) => model.layers.get(l)?.matrix(&model.config, k),
    }
}

/// Keeps the residual stream entering every layer (and leaving the last).
struct Residuals(Vec<Mutex<Vec<f32>>>);

impl Observer for Residuals {
    fn layer_input(&self, layer: usize, x: &[f32], _n_tok: usize) {
        let mut s = self.0[layer].lock().expect("residual slot");
        s.clear();
        s.extend_from_slice(x);
    }
}

/// One calibration chunk's FP32 pass: its tokens, the residual stream entering each layer and
/// the log-probabilities at every position.
struct Reference {
    tokens: Vec<u32>,
    residuals: Vec<Vec<f32>>,
    logp: Vec<f32>,
}

fn log_softmax_into(logits: &[f32], out: &mut [f32]) {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let s: f64 = logits.iter().map(|&v| ((v - m) as f64).exp()).sum();
    let lse = m as f64 + s.ln();
    for (o, &v) in out.iter_mut().zip(logits) {
        *o = (v as f64 - lse) as f32;
    }
}

/// Mean over positions of KL(reference ‖ candidate); `logits` are the candidate's.
fn mean_kld(ref_logp: &[f32], logits: &[f32], vocab: usize) -> f64 {
    let per: Vec<f64> = ref_logp
        .par_chunks(vocab)
        .zip(logits.par_chunks(vocab))
        .map(|(p, z)| {
            let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let s: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
            let lse = m as f64 + s.ln();
            let mut kl = 0f64;
            for (&lp, &v) in p.iter().zip(z) {
                let lp = lp as f64;
                kl += lp.exp() * (lp - (v as f64 - lse));
            }
            kl.max(0.0)
        })
        .collect();
    per.iter().sum::<f64>() / per.len().max(1) as f64
}

/// The KL divergence from `model` (FP32) on `tokens` when only the matrix `names[i]` is
/// replaced by `replace(i, names[i], current)`, for every `i` (a name may come more than once,
/// with different replacements). `progress(done, total)` after each.
pub fn measure(
    model: &Model,
    tokens: &[u32],
    names: &[String],
    opts: &SensitivityOptions,
    replace: &(dyn Fn(usize, &str, &Weight) -> Result<Weight, SensitivityError> + Sync),
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<f64>, SensitivityError> {
    let ctx = opts.ctx.max(1);
    let avail = tokens.len() / ctx;
    if avail == 0 {
        return Err(SensitivityError::TooShort {
            have: tokens.len(),
            need: ctx,
        });
    }
    let n_chunks = opts.chunks.clamp(1, avail);
    let c = &model.config;
    let vocab = c.vocab;
    let mut state = State::new(c, ctx, ctx);
    let mut refs = Vec::with_capacity(n_chunks);
    // Chunks spread evenly over the text (not its first: a text's opening — a title page, a
    // licence header — is rarely typical of it), each scored on its second half as
    // llama-perplexity's KLD protocol scores, so every scored token has context.
    let first_scored = ctx / 2;
    for k in 0..n_chunks {
        let c0 = (k + 1) * avail / (n_chunks + 1);
        let mut chunk = tokens[c0 * ctx..(c0 + 1) * ctx].to_vec();
        if let Some(b) = opts.bos {
            chunk[0] = b;
        }
        let obs = Residuals((0..=model.layers.len()).map(|_| Mutex::default()).collect());
        state.reset();
        forward(
            model,
            &mut state,
            &chunk,
            Logits::From(first_scored),
            ForwardOptions::default(),
            &obs,
        )?;
        let mut logp = vec![0f32; state.logits.len()];
        logp.par_chunks_mut(vocab)
            .zip(state.logits.par_chunks(vocab))
            .for_each(|(o, z)| log_softmax_into(z, o));
        refs.push(Reference {
            tokens: chunk,
            residuals: obs
                .0
                .into_iter()
                .map(|m| m.into_inner().expect("residual slot"))
                .collect(),
            logp,
        });
    }
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let mut m = model.clone();
        let start = replace_matrix(&mut m, name, |w| replace(i, name, w)).ok_or_else(|| {
            SensitivityError::Tensor {
                tensor: name.clone(),
                msg: "not a weight matrix of this model".into(),
            }
        })??;
        let mut sum = 0.0;
        for r in &refs {
            state.reset();
            let fo = ForwardOptions {
                start: start.map(|l| (l, r.residuals[l].as_slice())),
                ..Default::default()
            };
            forward(
                &m,
                &mut state,
                &r.tokens,
                Logits::From(first_scored),
                fo,
                &kernels::NoObserver,
            )?;
            sum += mean_kld(&r.logp, &state.logits, vocab);
        }
        out.push(sum / refs.len() as f64);
        progress(i + 1, names.len());
    }
    Ok(out)
}

/// Bytes a tensor of `rows × cols` values of `ty` takes in a GGUF (aligned to 32 bytes).
pub fn padded_bytes(ty: GgmlType, rows: usize, cols: usize) -> Option<u64> {
    let b = ty.row_size(cols)? as u64 * rows as u64;
    Some(b.div_ceil(32) * 32)
}

/// The types kiln considers for a matrix of `cols` columns: llama.cpp's K-quants and IQ4_XS
/// when the rows fit their 256-value super-blocks, its 32-value types (IQ4_NL and the legacy
/// ones) otherwise, and Q8_0. The low-bit types (Q2_K, Q3_K, IQ4_*) let a budget between 2.5
/// and 4.5 bits per weight take the best mix of all of them.
pub fn default_candidates(cols: usize) -> Vec<GgmlType> {
    use GgmlType::*;
    if cols.is_multiple_of(256) {
        vec![Q2K, Q3K, IQ4XS, Q4K, Q5K, Q6K, Q8_0]
    } else if cols.is_multiple_of(32) {
        vec![IQ4NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0]
    } else {
        vec![]
    }
}

/// A quantizer: `(tensor name, type, values, row length, importance)` → the tensor's bytes.
pub type QuantizerFn<'a> =
    &'a (dyn Fn(&str, GgmlType, &[f32], usize, Option<&[f32]>) -> Result<Vec<u8>, String> + Sync);

/// One matrix's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TensorAllocation {
    pub name: String,
    /// The chosen type.
    #[serde(serialize_with = "ser_type")]
    pub ty: GgmlType,
    /// Its bytes in the file.
    pub bytes: u64,
    /// The type the divergence was measured at, and the divergence.
    #[serde(serialize_with = "ser_type")]
    pub measured_type: GgmlType,
    pub measured_kld: f64,
    /// Predicted divergence of the chosen type.
    pub predicted_kld: f64,
    /// Every candidate: (type, bytes, importance-weighted error, predicted divergence).
    pub candidates: Vec<(String, u64, f64, f64)>,
}

fn ser_type<S: serde::Serializer>(t: &GgmlType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

/// The allocation of a whole model.
#[derive(Debug, Clone, Serialize)]
pub struct Allocation {
    /// Matrix bytes allowed and used.
    pub budget: u64,
    pub used: u64,
    /// Σ predicted divergence.
    pub predicted_kld: f64,
    pub tensors: Vec<TensorAllocation>,
}

impl Allocation {
    /// `(name, type)` of every matrix.
    pub fn types(&self) -> BTreeMap<String, GgmlType> {
        self.tensors
            .iter()
            .map(|t| (t.name.clone(), t.ty))
            .collect()
    }
}

/// A candidate's type and bytes.
type Quantized = (GgmlType, Vec<u8>);

/// Inputs of [`profile`].
pub struct ProfileInputs<'a> {
    /// The FP32 model.
    pub model: &'a Model,
    /// Calibration tokens.
    pub tokens: &'a [u32],
    pub opts: SensitivityOptions,
    /// Importance (mean x² per column) of a matrix, by GGUF name.
    pub importance: &'a (dyn Fn(&str) -> Option<Vec<f32>> + Sync),
    /// Candidate types of a matrix (by name and columns).
    pub candidates: &'a (dyn Fn(&str, usize) -> Vec<GgmlType> + Sync),
    /// The quantizer the artifact will be written with.
    pub quantizer: QuantizerFn<'a>,
}

/// Steps 1–3 of the module overview, for every matrix: its candidates (type, bytes, weighted
/// error) cheapest first, and the divergence measured at the cheapest. Independent of the
/// budget, so one profile serves every target of a build.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Profile {
    pub names: Vec<String>,
    /// Per matrix: (type name, bytes, weighted error), cheapest first.
    pub table: Vec<Vec<(String, u64, f64)>>,
    /// Per matrix: KL divergence with it alone at the measured candidates (index, KLD).
    pub kld: Vec<Vec<(usize, f64)>>,
}

/// Which candidates (indices, cheapest first) are measured: the cheapest and the
/// second-largest, so that the prediction interpolates between two measurements for most
/// types instead of extrapolating from the coarsest one.
fn measured_candidates(n: usize) -> Vec<usize> {
    match n {
        0 => vec![],
        1 | 2 => vec![0],
        _ => vec![0, n - 2],
    }
}

/// Predicted divergence at weighted error `e` from measurements `(error, KLD)`: a power law
/// `KLD = a·E^b` through two points, anchored at the nearer one (`b` kept within [0.5, 2];
/// `b = 1` is the small-perturbation regime, where the divergence is a quadratic form of the
/// weight error), or proportional to the error from one point.
fn predict(points: &[(f64, f64)], e: f64) -> f64 {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|&(pe, pk)| pe > 0.0 && pk > 0.0)
        .collect();
    match pts.as_slice() {
        [] => 0.0,
        [(e0, k0)] => k0 * e / e0,
        [(e0, k0), (e1, k1), ..] => {
            if (e0 - e1).abs() <= f64::EPSILON * e0.max(*e1) {
                return k0 * e / e0;
            }
            let b = ((k0 / k1).ln() / (e0 / e1).ln()).clamp(0.5, 2.0);
            // Anchor at the measurement nearer in error.
            let (ea, ka) = if (e.ln() - e0.ln()).abs() < (e.ln() - e1.ln()).abs() {
                (*e0, *k0)
            } else {
                (*e1, *k1)
            };
            if e <= 0.0 {
                0.0
            } else {
                ka * (e / ea).powf(b)
            }
        }
    }
}

/// Measures a [`Profile`]. `progress(stage, done, total)`.
pub fn profile(
    inp: &ProfileInputs,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Profile, SensitivityError> {
    let names = matrix_names(inp.model);
    // Step 1: candidate sizes and errors; the bytes of the two measured candidates are kept
    // for step 2.
    let mut table: Vec<Vec<(String, u64, f64)>> = Vec::with_capacity(names.len());
    let mut jobs: Vec<(String, usize)> = Vec::new();
    let kept: Mutex<BTreeMap<(String, usize), Quantized>> = Mutex::default();
    for (i, name) in names.iter().enumerate() {
        let w = weight(inp.model, name).expect("listed by matrix_names");
        let values = w.to_f32();
        let imp = (inp.importance)(name).filter(|v| v.len() == w.cols);
        let mut cands = (inp.candidates)(name, w.cols);
        cands.sort_by_key(|t| padded_bytes(*t, w.rows, w.cols).unwrap_or(u64::MAX));
        if cands.is_empty() {
            return Err(SensitivityError::Tensor {
                tensor: name.clone(),
                msg: format!("no candidate type fits rows of {} values", w.cols),
            });
        }
        let probes = measured_candidates(cands.len());
        let mut row = Vec::with_capacity(cands.len());
        for (k, &ty) in cands.iter().enumerate() {
            let terr = |msg: String| SensitivityError::Tensor {
                tensor: name.clone(),
                msg,
            };
            let bytes = (inp.quantizer)(name, ty, &values, w.cols, imp.as_deref()).map_err(terr)?;
            let deq =
                quantize::dequantize(ty, &bytes, values.len()).map_err(|e| terr(e.to_string()))?;
            let err = weighted_error(&values, &deq, w.cols, imp.as_deref());
            let size = padded_bytes(ty, w.rows, w.cols).expect("candidate fits");
            row.push((ty.name().to_string(), size, err));
            if probes.contains(&k) {
                kept.lock()
                    .expect("kept")
                    .insert((name.clone(), k), (ty, bytes));
                jobs.push((name.clone(), k));
            }
        }
        table.push(row);
        progress("quantize candidates", i + 1, names.len());
    }
    // Step 2: measured divergence at the probe candidates.
    let job_names: Vec<String> = jobs.iter().map(|(n, _)| n.clone()).collect();
    let replace = |j: usize, name: &str, w: &Weight| -> Result<Weight, SensitivityError> {
        let (ty, bytes) = kept
            .lock()
            .expect("kept")
            .remove(&jobs[j])
            .expect("computed in step 1");
        let terr = |msg: String| SensitivityError::Tensor {
            tensor: name.into(),
            msg,
        };
        let v =
            quantize::dequantize(ty, &bytes, w.rows * w.cols).map_err(|e| terr(e.to_string()))?;
        Weight::from_f32(name, w.rows, w.cols, v).map_err(|e| terr(e.to_string()))
    };
    let measured = measure(
        inp.model,
        inp.tokens,
        &job_names,
        &inp.opts,
        &replace,
        |d, t| progress("measure sensitivity", d, t),
    )?;
    let mut kld: Vec<Vec<(usize, f64)>> = vec![Vec::new(); names.len()];
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    for ((name, k), v) in jobs.iter().zip(measured) {
        kld[index[name.as_str()]].push((*k, v));
    }
    Ok(Profile { names, table, kld })
}

impl Profile {
    /// Steps 3 and 4: predicted divergence per candidate, then the choice within `budget`
    /// bytes for the matrices, never predicted worse than `start` (the mix's types) when that
    /// fits.
    pub fn allocate(
        &self,
        budget: u64,
        start: Option<&BTreeMap<String, GgmlType>>,
    ) -> Result<Allocation, SensitivityError> {
        let bad = |name: &str, t: &str| SensitivityError::Tensor {
            tensor: name.into(),
            msg: format!("unknown type {t} in the sensitivity profile"),
        };
        let mut items: Vec<Vec<Candidate>> = Vec::with_capacity(self.names.len());
        for ((name, row), meas) in self.names.iter().zip(&self.table).zip(&self.kld) {
            let points: Vec<(f64, f64)> = meas
                .iter()
                .filter_map(|&(k, v)| row.get(k).map(|r| (r.2, v)))
                .collect();
            let mut v = Vec::with_capacity(row.len());
            for (t, bytes, e) in row {
                v.push(Candidate {
                    ty: t.parse().map_err(|_| bad(name, t))?,
                    bytes: *bytes,
                    cost: predict(&points, *e),
                });
            }
            items.push(v);
        }
        let start: Option<Vec<usize>> = start.and_then(|m| {
            self.names
                .iter()
                .zip(&items)
                .map(|(n, c)| m.get(n).and_then(|t| c.iter().position(|x| x.ty == *t)))
                .collect()
        });
        let pick = allocate(&items, budget, start.as_deref())?;
        let mut tensors = Vec::with_capacity(self.names.len());
        let (mut used, mut total) = (0u64, 0f64);
        for (((name, row), cands), (&p, k)) in self
            .names
            .iter()
            .zip(&self.table)
            .zip(&items)
            .zip(pick.iter().zip(&self.kld))
        {
            let k = k.first().map_or(0.0, |m| m.1);
            used += cands[p].bytes;
            total += cands[p].cost;
            tensors.push(TensorAllocation {
                name: name.clone(),
                ty: cands[p].ty,
                bytes: cands[p].bytes,
                measured_type: cands[0].ty,
                measured_kld: k,
                predicted_kld: cands[p].cost,
                candidates: row
                    .iter()
                    .zip(cands)
                    .map(|((t, b, e), c)| (t.clone(), *b, *e, c.cost))
                    .collect(),
            });
        }
        Ok(Allocation {
            budget,
            used,
            predicted_kld: total,
            tensors,
        })
    }
}

/// `Σ_rows Σ_j imp_j (a − b)²` in f64 (imp = 1 without importance).
pub fn weighted_error(a: &[f32], b: &[f32], cols: usize, imp: Option<&[f32]>) -> f64 {
    a.par_chunks(cols)
        .zip(b.par_chunks(cols))
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .enumerate()
                .map(|(j, (&p, &q))| {
                    let d = (p - q) as f64;
                    imp.map_or(1.0, |w| w[j] as f64) * d * d
                })
                .sum::<f64>()
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}
