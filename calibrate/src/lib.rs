//! # calibrate — what the model does on real text
//!
//! * [`imatrix`]: importance matrices (per-column sums of squared matmul inputs, what
//!   llama-imatrix collects), collected by running `kernels`' forward pass over calibration
//!   text, read and written in llama.cpp's GGUF and legacy `.dat` formats.
//!
//! * [`awq`]: activation-aware equivalent scalings folded into the FP32 model before
//!   quantization (RMSNorm → q/k/v and gate/up, up → down), searched on the imatrix.
//!
//! * [`hessian`]: the second moments `XᵀX` of every matrix input, from the same forward pass,
//!   for GPTQ's error feedback.
//!
//! * [`masks`]: attention statistics at a long context, block-sparse mask derivation per head,
//!   and the `kiln.attention.*` keys that carry masks in an artifact.
//!
//! * [`sensitivity`]: each weight matrix's effect on the output divergence, and the choice of
//!   llama.cpp types under a byte budget that it drives.

pub mod awq;
pub mod hessian;
pub mod imatrix;
pub mod masks;
pub mod sensitivity;

pub use imatrix::{calibrate, calibrate_shard, CalibOptions, Imatrix, Partial};
