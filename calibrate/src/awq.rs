//! Activation-aware equivalent transformations (`--method awq`), after AWQ (Lin et al. 2023,
//! the reference `auto_scale.py`): per input channel `i` of a group of matrices, scale the
//! weights' column `i` by `s_i` and the producer of that channel by `1 / s_i`. The FP32 model
//! computes the same function; the quantizer sees salient channels (large activations) larger,
//! so their relative rounding error shrinks.
//!
//! Folds (per layer):
//! * `attn_norm` → attn_q, attn_k, attn_v: the RMSNorm weight (kept F32) divided by `s`;
//! * `ffn_norm` → ffn_gate, ffn_up: likewise;
//! * `ffn_up` → ffn_down: up's rows divided by `s` (SwiGLU's `silu(g)·u` is linear in `u`), down's
//!   columns multiplied.
//!
//! `s = a^α / √(max·min)` with `a_i` the RMS of channel `i` on the calibration text (the
//! imatrix: `a_i² = E[x_i²]`), and `α` searched on a grid in `[0, 1]` (`α = 0` is the identity)
//! for the smallest importance-weighted error of the group's matrices, each quantized to its
//! type by ggml's weighted quantizer on the scaled weights with the scaled importance
//! `E[(x_i/s_i)²]`, measured back in the original space:
//! `Σ_rows Σ_i E[x_i²] (W_ri − Q(W·S)_ri / s_i)²`.

use std::collections::BTreeMap;

use kernels::{Model, Weight};
use quantize::GgmlType;
use rayon::prelude::*;
use serde::Serialize;

/// Which producer → consumers pair a fold scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum FoldKind {
    /// attn_norm → attn_q/k/v.
    AttnNorm,
    /// ffn_norm → ffn_gate/up.
    FfnNorm,
    /// ffn_up rows → ffn_down columns.
    UpDown,
}

impl FoldKind {
    const ALL: [FoldKind; 3] = [FoldKind::AttnNorm, FoldKind::FfnNorm, FoldKind::UpDown];

    /// The matrices (as the GGUF stores them) whose input channels are scaled up.
    fn consumers(self, c: &kernels::Config) -> &'static [&'static str] {
        match self {
            FoldKind::AttnNorm => c.readers(kernels::MatKind::Qkv),
            FoldKind::FfnNorm => c.readers(kernels::MatKind::GateUp),
            FoldKind::UpDown => &["ffn_down"],
        }
    }
}

/// One chosen fold.
#[derive(Debug, Clone, Serialize)]
pub struct Fold {
    pub layer: usize,
    pub kind: FoldKind,
    /// The exponent chosen (0: no scaling).
    pub alpha: f32,
    /// Importance-weighted error of the consumers without and with the fold.
    pub error_plain: f64,
    pub error_folded: f64,
    /// `s` per channel.
    #[serde(skip)]
    pub scales: Vec<f32>,
}

/// Every fold of a model, by layer and kind.
#[derive(Debug, Clone, Default)]
pub struct Folds {
    folds: BTreeMap<(usize, FoldKind), Fold>,
    /// The first row of `ffn_up` that is up's: 0, or the gate's rows where the GGUF fuses
    /// gate and up (Phi-3) — the up→down fold divides up's rows only, which keeps it exact
    /// (`silu(g)·u` is linear in `u`, not in `g`).
    up_offset: usize,
    /// The folds searched and not made, and why.
    skipped: Vec<Skipped>,
}

/// A fold the search left out.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub layer: usize,
    pub kind: FoldKind,
    pub why: &'static str,
}

fn split(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (l, rest) = rest.split_once('.')?;
    Some((l.parse().ok()?, rest.strip_suffix(".weight")?))
}

/// What the folds of a model with configuration `c` scale, for reports.
pub fn description(c: &kernels::Config) -> String {
    let norm = |kind: kernels::MatKind, n: &str| format!("{n}->{}", c.readers(kind).join("/"));
    let up = if c.fused_gate_up {
        "ffn_up's up rows (after the gate's)->ffn_down"
    } else {
        "ffn_up->ffn_down"
    };
    format!(
        "{}, {}, {up}",
        norm(kernels::MatKind::Qkv, "attn_norm"),
        norm(kernels::MatKind::GateUp, "ffn_norm")
    )
}

impl Folds {
    /// The folds searched and not made (no importance for their input, or no consumer
    /// quantized), in layer order.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The folds, in layer order.
    pub fn iter(&self) -> impl Iterator<Item = &Fold> {
        self.folds.values()
    }

    fn scales(&self, layer: usize, kind: FoldKind) -> Option<&[f32]> {
        self.folds
            .get(&(layer, kind))
            .filter(|f| f.alpha != 0.0)
            .map(|f| &f.scales[..])
    }

    /// The column scaling of the matrix `name` reads (its input channels ×`s`).
    fn column_scales(&self, name: &str) -> Option<&[f32]> {
        let (l, t) = split(name)?;
        let kind = match t {
            "attn_q" | "attn_k" | "attn_v" | "attn_qkv" => FoldKind::AttnNorm,
            "ffn_gate" | "ffn_up" => FoldKind::FfnNorm,
            "ffn_down" => FoldKind::UpDown,
            _ => return None,
        };
        self.scales(l, kind)
    }

    /// True when tensor `name`'s values change.
    pub fn touches(&self, name: &str) -> bool {
        let Some((l, t)) = split(name) else {
            return false;
        };
        match t {
            "attn_norm" => self.scales(l, FoldKind::AttnNorm).is_some(),
            "ffn_norm" => self.scales(l, FoldKind::FfnNorm).is_some(),
            "ffn_up" => {
                self.scales(l, FoldKind::UpDown).is_some() || self.column_scales(name).is_some()
            }
            _ => self.column_scales(name).is_some(),
        }
    }

    /// Tensor `name`'s folded values (`cols` values per row).
    pub fn apply(&self, name: &str, mut v: Vec<f32>, cols: usize) -> Vec<f32> {
        let Some((l, t)) = split(name) else {
            return v;
        };
        let norm = match t {
            "attn_norm" => self.scales(l, FoldKind::AttnNorm),
            "ffn_norm" => self.scales(l, FoldKind::FfnNorm),
            _ => None,
        };
        if let Some(s) = norm {
            for (g, &s) in v.iter_mut().zip(s) {
                *g /= s;
            }
            return v;
        }
        if let Some(s) = self.column_scales(name) {
            for row in v.chunks_mut(cols) {
                for (w, &s) in row.iter_mut().zip(s) {
                    *w *= s;
                }
            }
        }
        if t == "ffn_up" {
            if let Some(s) = self.scales(l, FoldKind::UpDown) {
                for (row, &s) in v.chunks_mut(cols).skip(self.up_offset).zip(s) {
                    for w in row {
                        *w /= s;
                    }
                }
            }
        }
        v
    }

    /// The importance of matrix `name`'s input channels after the fold: `E[(x_i / s_i)²]`.
    pub fn importance(&self, name: &str, imp: &[f32]) -> Option<Vec<f32>> {
        let s = self.column_scales(name)?;
        Some(imp.iter().zip(s).map(|(&w, &s)| w / (s * s)).collect())
    }

    /// Folds the model in memory (its F32 norms and matrices), so calibration on it (GPTQ's
    /// Hessians, sensitivity) sees what the artifact will hold.
    pub fn fold_model(&self, model: &mut Model) -> Result<(), kernels::model::WeightError> {
        let Model {
            config: c, layers, ..
        } = model;
        for (l, layer) in layers.iter_mut().enumerate() {
            let n = |t: &str| format!("blk.{l}.{t}.weight");
            layer.attn_norm = self.apply(&n("attn_norm"), std::mem::take(&mut layer.attn_norm), 0);
            layer.ffn_norm = self.apply(&n("ffn_norm"), std::mem::take(&mut layer.ffn_norm), 0);
            for t in c.block_matrices() {
                let name = n(t);
                if !self.touches(&name) {
                    continue;
                }
                let w = layer.matrix(c, t).expect("one of the block's matrices");
                let v = self.apply(&name, w.to_f32(), w.cols);
                let folded = Weight::from_f32(&name, w.rows, w.cols, v)?;
                if !layer.set_matrix(c, t, folded) {
                    return Err(kernels::model::WeightError {
                        what: name,
                        msg: "the folded matrix does not fit the block".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// `s = a^α` normalised to `√(max·min) = 1`; channels never seen count as the smallest seen.
fn scales_for(rms: &[f32], alpha: f32) -> Vec<f32> {
    let max = rms.iter().cloned().fold(0f32, f32::max);
    let floor = (max * 1e-4).max(f32::MIN_POSITIVE);
    let mut s: Vec<f32> = rms.iter().map(|&a| a.max(floor).powf(alpha)).collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    if norm > 0.0 && norm.is_finite() {
        for v in &mut s {
            *v /= norm;
        }
    }
    s
}

/// Importance-weighted error of `w` (rows of `cols`) quantized to `ty` after scaling its
/// columns by `s`, measured in the original space.
fn folded_error(w: &[f32], cols: usize, ty: GgmlType, imp: &[f32], s: &[f32]) -> f64 {
    let scaled: Vec<f32> = w
        .chunks(cols)
        .flat_map(|r| r.iter().zip(s).map(|(&x, &s)| x * s))
        .collect();
    let imp_s: Vec<f32> = imp.iter().zip(s).map(|(&w, &s)| w / (s * s)).collect();
    let Ok((bytes, _)) = quantize::quantize(ty, &scaled, cols, Some(&imp_s)) else {
        return f64::INFINITY;
    };
    let Ok(y) = quantize::dequantize(ty, &bytes, scaled.len()) else {
        return f64::INFINITY;
    };
    w.chunks(cols)
        .zip(y.chunks(cols))
        .map(|(xr, yr)| {
            xr.iter()
                .zip(yr)
                .zip(imp.iter().zip(s))
                .map(|((&x, &y), (&im, &s))| {
                    let d = (x - y / s) as f64;
                    im as f64 * d * d
                })
                .sum::<f64>()
        })
        .sum()
}

/// What the search needs besides the model.
pub struct AwqInputs<'a> {
    /// The imatrix's importance (mean squared input) of a matrix, by tensor name.
    pub importance: &'a (dyn Fn(&str) -> Option<Vec<f32>> + Sync),
    /// The type a matrix will be stored in (`None`: not quantized, left alone).
    pub ty: &'a (dyn Fn(&str) -> Option<GgmlType> + Sync),
    /// Grid points of α in `[0, 1]` (α = k / (grid − 1)).
    pub grid: usize,
}

/// Searches every fold of `model` (FP32); `progress(done, total)` after each.
pub fn search(model: &Model, inp: &AwqInputs, progress: impl Fn(usize, usize) + Sync) -> Folds {
    let jobs: Vec<(usize, FoldKind)> = (0..model.layers.len())
        .flat_map(|l| FoldKind::ALL.into_iter().map(move |k| (l, k)))
        .collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let grid = inp.grid.max(2);
    let folds: Vec<Result<Fold, Skipped>> = jobs
        .par_iter()
        .map(|&(l, kind)| {
            let layer = &model.layers[l];
            let mats: Vec<(Weight, String)> = kind
                .consumers(&model.config)
                .iter()
                .filter_map(|t| {
                    let w = layer.matrix(&model.config, t)?;
                    Some((w, format!("blk.{l}.{t}.weight")))
                })
                .collect();
            let r = (|| {
                let Some(imp) = (inp.importance)(&mats[0].1) else {
                    return Err("no importance for its input");
                };
                let typed: Vec<(Vec<f32>, usize, GgmlType)> = mats
                    .iter()
                    .filter_map(|(w, n)| {
                        let ty = (inp.ty)(n).filter(|t| t.is_quantized())?;
                        (w.cols == imp.len()).then(|| (w.to_f32(), w.cols, ty))
                    })
                    .collect();
                if typed.is_empty() {
                    return Err("no consumer is quantized at its input's width");
                }
                let rms: Vec<f32> = imp.iter().map(|v| v.max(0.0).sqrt()).collect();
                let err = |s: &[f32]| -> f64 {
                    typed
                        .iter()
                        .map(|(w, cols, ty)| folded_error(w, *cols, *ty, &imp, s))
                        .sum()
                };
                let ones = vec![1f32; imp.len()];
                let plain = err(&ones);
                let mut best = (plain, 0f32, ones);
                for k in 1..grid {
                    let alpha = k as f32 / (grid - 1) as f32;
                    let s = scales_for(&rms, alpha);
                    let e = err(&s);
                    if e < best.0 {
                        best = (e, alpha, s);
                    }
                }
                Ok(Fold {
                    layer: l,
                    kind,
                    alpha: best.1,
                    error_plain: plain,
                    error_folded: best.0,
                    scales: best.2,
                })
            })()
            .map_err(|why| Skipped {
                layer: l,
                kind,
                why,
            });
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(d, jobs.len());
            r
        })
        .collect();
    let (made, skipped): (Vec<_>, Vec<_>) = folds.into_iter().partition(|r| r.is_ok());
    Folds {
        folds: made
            .into_iter()
            .flatten()
            .map(|f| ((f.layer, f.kind), f))
            .collect(),
        skipped: skipped.into_iter().filter_map(Result::err).collect(),
        up_offset: if model.config.fused_gate_up {
            model.config.ffn_dim
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folds(s: Vec<f32>, kind: FoldKind) -> Folds {
        let mut f = Folds::default();
        f.folds.insert(
            (0, kind),
            Fold {
                layer: 0,
                kind,
                alpha: 0.5,
                error_plain: 1.0,
                error_folded: 0.5,
                scales: s,
            },
        );
        f
    }

    #[test]
    fn folds_leave_the_function_unchanged() {
        // norm · (W x) == (norm / s) · ((W S) x) channel by channel.
        let s = vec![2.0, 0.5, 4.0];
        let f = folds(s.clone(), FoldKind::AttnNorm);
        let g = f.apply("blk.0.attn_norm.weight", vec![1.0, 1.0, 1.0], 0);
        let w = f.apply("blk.0.attn_k.weight", vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3);
        let x = [0.3f32, -1.0, 2.0];
        for r in 0..2 {
            let plain: f32 = (0..3)
                .map(|i| [1.0, 2.0, 3.0, 4.0, 5.0, 6.0][r * 3 + i] * x[i])
                .sum();
            let folded: f32 = (0..3).map(|i| w[r * 3 + i] * g[i] * x[i]).sum();
            assert!((plain - folded).abs() < 1e-5);
        }
        assert!(f.touches("blk.0.attn_q.weight") && f.touches("blk.0.attn_norm.weight"));
        assert!(!f.touches("blk.0.ffn_up.weight") && !f.touches("blk.1.attn_q.weight"));
        assert_eq!(
            f.importance("blk.0.attn_v.weight", &[4.0, 1.0, 16.0])
                .unwrap(),
            vec![1.0, 4.0, 1.0]
        );
        // up rows ÷ s, down columns × s.
        let f = folds(vec![2.0, 0.5], FoldKind::UpDown);
        assert_eq!(
            f.apply("blk.0.ffn_up.weight", vec![1.0; 4], 2),
            vec![0.5, 0.5, 2.0, 2.0]
        );
        assert_eq!(
            f.apply("blk.0.ffn_down.weight", vec![1.0; 4], 2),
            vec![2.0, 0.5, 2.0, 0.5]
        );
        assert!(!f.touches("blk.0.ffn_gate.weight"));
    }

    #[test]
    fn scales_are_normalised_and_alpha_zero_is_identity() {
        let rms = [0.0f32, 1.0, 4.0, 16.0];
        assert!(scales_for(&rms, 0.0).iter().all(|&s| s == 1.0));
        let s = scales_for(&rms, 0.5);
        let (lo, hi) = (
            s.iter().cloned().fold(f32::MAX, f32::min),
            s.iter().cloned().fold(0.0, f32::max),
        );
        assert!(((lo * hi).sqrt() - 1.0).abs() < 1e-5 && s[3] > s[2] && s[2] > s[1]);
    }

    #[test]
    fn salient_channels_gain_from_scaling() {
        // Two channels carry almost all the activation energy; their columns are small, so
        // the block scale set by the other columns rounds them coarsely unless scaled up.
        let cols = 64;
        let mut imp = vec![0.01f32; cols];
        imp[3] = 100.0;
        imp[40] = 100.0;
        let w: Vec<f32> = (0..cols * 16)
            .map(|i| {
                let c = i % cols;
                let v = (((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5) * 0.2;
                if c == 3 || c == 40 {
                    v * 0.05
                } else {
                    v
                }
            })
            .collect();
        let ones = vec![1f32; cols];
        let rms: Vec<f32> = imp.iter().map(|v| v.sqrt()).collect();
        let plain = folded_error(&w, cols, GgmlType::Q4_0, &imp, &ones);
        let best = (1..=10)
            .map(|k| {
                folded_error(
                    &w,
                    cols,
                    GgmlType::Q4_0,
                    &imp,
                    &scales_for(&rms, k as f32 / 10.0),
                )
            })
            .fold(f64::INFINITY, f64::min);
        assert!(best < 0.8 * plain, "{best} vs {plain}");
    }
}
