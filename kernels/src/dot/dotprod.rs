//! NEON + DotProd dot products: [`super::arm`]'s code with `sdot` for the four-byte group
//! sums; bit-identical to [`super::neon`] and to the x86 kernels.
//!
//! Every function is `unsafe`: the caller must have checked that the CPU has NEON and
//! DotProd (see [`crate::simd`]).

#![allow(clippy::missing_safety_doc)]

super::arm::arm_kernels!("neon,dotprod", super::arm::dot4_sdot, plain);
