//! NEON dot products (every aarch64 core), the same functions as [`super::scalar`] with the
//! bits of the x86 kernels; the code is [`super::arm`]'s, with four-byte group sums from
//! `vmull_s8` and pairwise adds.
//!
//! Every function is `unsafe`: the caller must have checked that the CPU has NEON (see
//! [`crate::simd`]).

#![allow(clippy::missing_safety_doc)]

super::arm::arm_kernels!("neon", super::arm::dot4_neon, plain);
