//! The per-tensor type plan of llama.cpp's mix for a file type (with overrides and the
//! methods' choices), and what it costs.

use convert::ModelSource;
use quantize::mix::{self, Ftype, MixOptions, TensorDesc};

use crate::Result;

/// The per-tensor plan of a mix.
pub struct MixPlan {
    /// Each tensor's type and why.
    pub choices: Vec<mix::Choice>,
    /// The tensors it was made for, in the same order.
    pub descs: Vec<TensorDesc>,
    /// Parameters of the model.
    pub n_params: u64,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
}

impl MixPlan {
    /// Bytes of tensor `i` (unpadded).
    pub fn bytes_of(&self, i: usize) -> u64 {
        let d = &self.descs[i];
        self.choices[i].ty.row_size(d.dims[0] as usize).unwrap_or(0) as u64
            * d.dims.iter().skip(1).product::<u64>()
    }
}

/// The per-tensor plan of `ftype`'s mix for `src`.
pub fn plan(src: &ModelSource, ftype: Ftype, opts: &MixOptions) -> Result<MixPlan> {
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
    let mut p = MixPlan {
        choices,
        descs,
        n_params,
        tensor_bytes: 0,
    };
    p.tensor_bytes = (0..p.choices.len()).map(|i| p.bytes_of(i)).sum();
    Ok(p)
}
