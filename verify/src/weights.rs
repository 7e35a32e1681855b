//! Per-tensor weight error of a candidate against the reference it was made from: RMSE,
//! relative error ‖c − r‖ / ‖r‖ and cosine similarity, tensor by tensor (each dequantized in
//! turn, so memory stays at two tensors).

use convert::ModelSource;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One tensor's error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorError {
    /// GGUF name.
    pub name: String,
    /// The candidate's type.
    pub ty: String,
    /// Root-mean-square difference.
    pub rmse: f64,
    /// ‖candidate − reference‖ / ‖reference‖.
    pub rel: f64,
    /// Cosine similarity.
    pub cosine: f64,
}

/// Weight errors of every tensor the two models share.
pub fn weight_errors(
    reference: &ModelSource,
    candidate: &ModelSource,
) -> convert::Result<Vec<TensorError>> {
    let mut out = Vec::new();
    for t in candidate.tensors() {
        if !reference.tensors().iter().any(|r| r.name == t.name) {
            continue;
        }
        let r = reference.tensor_f32(&t.name)?;
        let c = candidate.tensor_f32(&t.name)?;
        if r.len() != c.len() {
            continue;
        }
        let (d2, r2, c2, rc) = r
            .par_chunks(1 << 16)
            .zip(c.par_chunks(1 << 16))
            .map(|(a, b)| {
                let mut s = (0f64, 0f64, 0f64, 0f64);
                for (&x, &y) in a.iter().zip(b) {
                    let (x, y) = (x as f64, y as f64);
                    s.0 += (x - y) * (x - y);
                    s.1 += x * x;
                    s.2 += y * y;
                    s.3 += x * y;
                }
                s
            })
            .reduce(
                || (0.0, 0.0, 0.0, 0.0),
                |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3),
            );
        out.push(TensorError {
            name: t.name.clone(),
            ty: t.stored.name().to_string(),
            rmse: (d2 / r.len() as f64).sqrt(),
            rel: if r2 > 0.0 { (d2 / r2).sqrt() } else { 0.0 },
            cosine: if r2 > 0.0 && c2 > 0.0 {
                rc / (r2.sqrt() * c2.sqrt())
            } else {
                1.0
            },
        });
    }
    Ok(out)
}

/// Mean relative error of each layer's weight matrices (`blk.N.*`, 2-D), for the per-layer
/// plot: `(layer, mean rel)`.
pub fn per_layer(errors: &[TensorError]) -> Vec<(usize, f64)> {
    let mut acc: std::collections::BTreeMap<usize, (f64, usize)> = Default::default();
    for e in errors {
        if let Some(l) = convert::mapping::layer_of(&e.name) {
            if e.name.ends_with(".weight") && !e.name.contains("norm") {
                let s = acc.entry(l).or_default();
                s.0 += e.rel;
                s.1 += 1;
            }
        }
    }
    acc.into_iter()
        .map(|(l, (s, n))| (l, s / n as f64))
        .collect()
}
