//! # kernels — kiln's compute
//!
//! Scalar and SIMD kernels for inference: the dot product of every weight format with its
//! activation format ([`dot`]), chosen at run time ([`simd`]), and — built on them — the matmul
//! and the decoder forward pass (every architecture kiln runs, through the switches of
//! [`Config`]) that kiln uses to verify its own artifacts.
//!
//! Layout rule (candle's `k_quants`): each SIMD module has the same function names as the
//! scalar module, and the scalar module is the reference. Artifacts are never written through
//! SIMD code; SIMD results must match the scalar path within the tolerance each module states.

pub mod dot;
pub mod forward;
pub mod mask;
pub mod matmul;
pub mod model;
pub mod ops;
pub mod quant;
pub mod simd;
pub mod team;

pub use forward::{forward, ForwardError, ForwardOptions, Logits, NoObserver, Observer, State};
pub use mask::{quest_bounds, quest_query, select_blocks, BlockMask, HeadPattern, SelectScratch};
pub use matmul::MatmulMode;
pub use model::{
    Activation, Config, Layer, LongRope, LoraTerm, MatKind, Model, RopeStyle, SlidingWindow,
    Storage, Weight,
};
pub use simd::{force_scalar, SimdLevel};
