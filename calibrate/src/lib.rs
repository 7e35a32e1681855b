//! # calibrate — what the model does on real text
//!
//! Importance matrices (per-column sums of squared matmul inputs, llama-imatrix's format),
//! attention statistics, and block-sparse mask derivation, all computed by running `kernels`'
//! forward pass over calibration text.
//!
//! Status: built by the calibrate issue on top of the kernels crate.

pub use kernels;
