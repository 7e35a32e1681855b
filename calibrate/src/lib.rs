//! # calibrate — what the model does on real text
//!
//! * [`imatrix`]: importance matrices (per-column sums of squared matmul inputs, what
//!   llama-imatrix collects), collected by running `kernels`' forward pass over calibration
//!   text, read and written in llama.cpp's GGUF and legacy `.dat` formats.
//!
//! Attention statistics and block-sparse mask derivation build on the same forward pass.

pub mod imatrix;

pub use imatrix::{calibrate, CalibOptions, Imatrix};
