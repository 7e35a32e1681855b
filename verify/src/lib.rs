//! # verify — parity between candidate artifacts and their FP32 reference
//!
//! * [`load`]: a GGUF file or checkpoint directory → kiln's kernel [`kernels::Model`].
//! * [`eval`]: evaluation protocols (llama.cpp's perplexity chunks, full sequence) and
//!   perplexity.
//! * [`parity`]: KL divergence, top-1 agreement, perplexity ratio and Δp of candidates against
//!   a reference, streamed chunk by chunk; thresholds and checks.
//! * [`weights`]: per-tensor weight error (RMSE, relative error, cosine).
//! * [`bench`]: prefill and decode speed (mean ± sd over repetitions).
//! * [`report`]: the report data, versioned serde structs the binary renders.

pub mod bench;
pub mod eval;
pub mod load;
pub mod masks;
pub mod parity;
pub mod report;
pub mod weights;

pub use kernels;
