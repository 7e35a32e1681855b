//! AVX-512 VNNI dot products (AVX2, FMA and F16C plus AVX-512 F/BW/VL/VNNI), the same
//! functions as [`super::scalar`]; the code is [`super::x86`]'s with its VNNI forms, and its
//! results are bit-identical to [`super::avx2`]'s.
//!
//! Every function is `unsafe`: the caller must have checked the CPU features (see
//! [`crate::simd`]).

#![allow(clippy::missing_safety_doc)]

super::x86::x86_kernels!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", true);
