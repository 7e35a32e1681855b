//! # verify — parity between a candidate artifact and its FP32 reference
//!
//! * [`load`]: a GGUF file or checkpoint directory → kiln's kernel [`kernels::Model`].
//! * [`eval`]: evaluation protocols (llama.cpp's perplexity chunks, full sequence) and
//!   perplexity.
//!
//! KL divergence, top-1 agreement, per-tensor weight error, thresholds and the report data
//! (serde structs the binary renders) build on these.

pub mod eval;
pub mod load;

pub use kernels;
