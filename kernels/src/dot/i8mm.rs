//! NEON + DotProd + I8MM dot products: [`super::dotprod`]'s kernels, with `smmla` for the
//! two-row × four-token legacy kernels of prefill; bit-identical to [`super::neon`] and to
//! the x86 kernels.
//!
//! Every function is `unsafe`: the caller must have checked that the CPU has NEON, DotProd
//! and I8MM (see [`crate::simd`]).

#![allow(clippy::missing_safety_doc)]

super::arm::arm_kernels!("neon,dotprod,i8mm", super::arm::dot4_sdot, mmla);
