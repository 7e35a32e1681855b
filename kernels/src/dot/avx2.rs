//! AVX2 + FMA (+ F16C) dot products, the same functions as [`super::scalar`]; the code is
//! [`super::x86`]'s, compiled for these features.
//!
//! Every function is `unsafe`: the caller must have checked that the CPU has AVX2, FMA and
//! F16C (see [`crate::simd`]).

#![allow(clippy::missing_safety_doc)]

super::x86::x86_kernels!("avx2,fma,f16c", false);
