//! # verify — parity between a candidate artifact and its FP32 reference
//!
//! KL divergence, top-1 agreement, perplexity delta and per-tensor weight error, the
//! thresholds a CI gate checks, and the report data (serde structs) the binary renders.
//!
//! Status: built by the verify issue on top of the kernels crate.

pub use kernels;
