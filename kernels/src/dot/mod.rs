//! Dot products of each weight type with its activation type (ggml's `vec_dot` with
//! `vec_dot_type`): Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for Q4_1/Q5_1, Q8_K for
//! Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/IQ4_XS, plus
//! f32·f32, f16·f32 and bf16·f32.
//!
//! [`scalar`], [`avx2`], [`avx512`] (x86-64) and [`neon`], [`dotprod`], [`i8mm`] (aarch64) hold
//! the same function names; the functions here pick one at run time through
//! [`crate::simd::level`]. The aarch64 kernels give the x86 kernels' bits ([`arm`]). At the
//! AVX-512 level the matmul runs the legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) through
//! [`zmm`]'s sixteen-row kernels on [`packed`]'s layouts instead. Agreement: the legacy types
//! are one chain of per-block steps ([`scalar::block_step`]) that every level runs, so they give
//! the scalar bits everywhere; for the K-quants and IQ4_XS, SIMD and scalar sum the same exact
//! integer block products and differ only in the order of per-block float additions, so they
//! agree to within 1e-5 × Σ|w·a| (tested on random rows of every type).

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "aarch64")]
pub mod dotprod;
#[cfg(target_arch = "aarch64")]
pub mod i8mm;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod packed;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
pub mod zmm;

use std::ops::Range;

use half::f16;
use quantize::blocks::*;
use quantize::{GgmlType, Quantize};

use crate::simd::{level, SimdLevel};

/// The legacy weight blocks' stored scale `d` and min `m` (the affine types Q4_1 and Q5_1,
/// `x = d·q + m`, whose dot adds `Σ m·s`; zero and unused for the others), so one kernel body
/// serves all six.
pub trait LegacyBlock {
    /// True for the affine blocks.
    const AFFINE: bool = false;
    /// The block's scale, as stored.
    fn scale_f16(&self) -> f16;
    /// The block's min, as stored.
    fn min_f16(&self) -> f16 {
        f16::ZERO
    }
}
impl LegacyBlock for BlockQ4_0 {
    fn scale_f16(&self) -> f16 {
        self.d
    }
}
impl LegacyBlock for BlockQ5_0 {
    fn scale_f16(&self) -> f16 {
        self.d
    }
}
impl LegacyBlock for BlockQ8_0 {
    fn scale_f16(&self) -> f16 {
        self.d
    }
}
impl LegacyBlock for BlockIQ4NL {
    fn scale_f16(&self) -> f16 {
        self.d
    }
}
impl LegacyBlock for BlockQ4_1 {
    const AFFINE: bool = true;
    fn scale_f16(&self) -> f16 {
        self.d
    }
    fn min_f16(&self) -> f16 {
        self.m
    }
}
impl LegacyBlock for BlockQ5_1 {
    const AFFINE: bool = true;
    fn scale_f16(&self) -> f16 {
        self.d
    }
    fn min_f16(&self) -> f16 {
        self.m
    }
}

/// An activation block's `s = d·Σq` (Q8_1's; zero and unused for Q8_0).
pub(crate) trait ActSum {
    fn sum_f16(&self) -> f16 {
        f16::ZERO
    }
}
impl ActSum for BlockQ8_0 {}
impl ActSum for BlockQ8_1 {
    fn sum_f16(&self) -> f16 {
        self.s
    }
}

/// `$f($args)` from the SIMD module of the level in use, or `$fallback` at the scalar level.
macro_rules! by_level {
    ($f:ident ( $($a:expr),* ), $fallback:expr) => {
        // SAFETY (every arm): level() reports a level only when the CPU has its features;
        // the callers checked the slices the kernels index.
        match level() {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => unsafe { avx512::$f($($a),*) },
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => unsafe { avx2::$f($($a),*) },
            #[cfg(target_arch = "aarch64")]
            SimdLevel::I8mm => unsafe { i8mm::$f($($a),*) },
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Dotprod => unsafe { dotprod::$f($($a),*) },
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => unsafe { neon::$f($($a),*) },
            _ => $fallback,
        }
    };
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $X:ty, $Y:ty) => {
        $(#[$doc])*
        #[inline]
        pub fn $name(x: &[$X], y: &[$Y]) -> f32 {
            assert_eq!(x.len(), y.len(), "dot product of {} and {} elements", x.len(), y.len());
            by_level!($name(x, y), scalar::$name(x, y))
        }
    };
}

/// Rows of floats `stride` apart: row `j` starts at `data[j·stride]`.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

/// Rows of floats `stride` apart, to write.
pub struct StridedMut<'a> {
    pub data: &'a mut [f32],
    pub stride: usize,
}

impl StridedMut<'_> {
    fn reborrow(&mut self) -> StridedMut<'_> {
        StridedMut {
            data: self.data,
            stride: self.stride,
        }
    }
}

pub use scalar::{exp_ref, gelu_ref, lanes_sum, tanh_ref, ATT_LANES};

/// `g[i] = gelu(g[i]) · up[i]` (GeGLU, tanh GELU): SIMD and scalar give the same bits (see
/// [`scalar::gelu_ref`]).
#[inline]
pub fn gelu_mul(g: &mut [f32], up: &[f32]) {
    assert_eq!(g.len(), up.len(), "gelu_mul lengths");
    by_level!(gelu_mul(g, up), scalar::gelu_mul(g, up))
}

/// The attention kernels below check their slices against these extents, so the SIMD ones
/// can index without further checks.
fn attn_extent(rows: usize, stride: usize, len: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + len
    }
}

/// Attention scores of `nq` queries against `keys` of a transposed key cache:
/// `out[j][i] = scale · Σ_d q[j][d]·kt[d][i]`, one fused multiply-add per `d` in order from
/// zero. SIMD and scalar give the same bits, and a score does not depend on the other queries
/// or keys of the call. See [`scalar::attn_scores`].
#[inline]
pub fn attn_scores(
    q: Strided,
    nq: usize,
    kt: Strided,
    hd: usize,
    keys: Range<usize>,
    scale: f32,
    mut out: StridedMut,
) {
    if keys.is_empty() || nq == 0 {
        return;
    }
    assert!(
        q.data.len() >= attn_extent(nq, q.stride, hd)
            && kt.data.len() >= attn_extent(hd, kt.stride, keys.end)
            && out.data.len() >= attn_extent(nq, out.stride, keys.end)
            && nq <= 4,
        "attention scores: {nq} queries, {hd} dims, keys {keys:?}"
    );
    by_level!(
        attn_scores(q, nq, kt, hd, keys, scale, out.reborrow()),
        scalar::attn_scores(q, nq, kt, hd, keys, scale, out)
    )
}

/// `out[j][..hd] += Σ_{i ∈ keys} p[j][i] · V[i]`, one fused multiply-add per element and key,
/// keys in order: SIMD and scalar give the same bits. See [`scalar::attn_values`].
#[inline]
pub fn attn_values(
    p: Strided,
    nq: usize,
    v: Strided,
    hd: usize,
    keys: Range<usize>,
    mut out: StridedMut,
) {
    if keys.is_empty() || nq == 0 {
        return;
    }
    assert!(
        p.data.len() >= attn_extent(nq, p.stride, keys.end)
            && v.data.len() >= attn_extent(keys.end, v.stride, hd)
            && out.data.len() >= attn_extent(nq, out.stride, hd)
            && nq <= 4,
        "attention values: {nq} queries, {hd} dims, keys {keys:?}"
    );
    // The x86 kernels take eight dimensions at a time, the aarch64 ones four.
    let simd_dims = if cfg!(target_arch = "aarch64") { 4 } else { 8 };
    if !hd.is_multiple_of(simd_dims) {
        return scalar::attn_values(p, nq, v, hd, keys, out);
    }
    by_level!(
        attn_values(p, nq, v, hd, keys, out.reborrow()),
        scalar::attn_values(p, nq, v, hd, keys, out)
    )
}

/// Softmax numerators of `row[keys]` in place, summed into lanes tied to key positions; the
/// same bits at every SIMD level. See [`scalar::attn_exp`].
#[inline]
pub fn attn_exp(row: &mut [f32], keys: Range<usize>, max: f32, lanes: &mut [f32; ATT_LANES]) {
    assert!(
        keys.end <= row.len(),
        "softmax keys {keys:?} of {}",
        row.len()
    );
    by_level!(
        attn_exp(row, keys, max, lanes),
        scalar::attn_exp(row, keys, max, lanes)
    )
}

/// The largest of `x` (−∞ when empty).
#[inline]
pub fn max_f32(x: &[f32]) -> f32 {
    by_level!(max_f32(x), scalar::max_f32(x))
}

dispatch!(/// Σ x·y over f32.
    vec_dot_f32, f32, f32);
dispatch!(/// Σ x·y, f16 weights.
    vec_dot_f16_f32, f16, f32);
dispatch!(/// Σ x·y, bf16 weights given as raw bits.
    vec_dot_bf16_f32, u16, f32);
dispatch!(/// Q4_0 · Q8_0.
    vec_dot_q4_0_q8_0, BlockQ4_0, BlockQ8_0);
dispatch!(/// Q4_1 · Q8_1 (the min term uses Q8_1's stored block sum, as ggml does).
    vec_dot_q4_1_q8_1, BlockQ4_1, BlockQ8_1);
dispatch!(/// Q5_0 · Q8_0.
    vec_dot_q5_0_q8_0, BlockQ5_0, BlockQ8_0);
dispatch!(/// Q5_1 · Q8_1.
    vec_dot_q5_1_q8_1, BlockQ5_1, BlockQ8_1);
dispatch!(/// Q8_0 · Q8_0.
    vec_dot_q8_0_q8_0, BlockQ8_0, BlockQ8_0);
dispatch!(/// Q4_K · Q8_K.
    vec_dot_q4_k_q8_k, BlockQ4K, BlockQ8K);
dispatch!(/// Q5_K · Q8_K.
    vec_dot_q5_k_q8_k, BlockQ5K, BlockQ8K);
dispatch!(/// Q6_K · Q8_K.
    vec_dot_q6_k_q8_k, BlockQ6K, BlockQ8K);

dispatch!(/// Q2_K · Q8_K.
    vec_dot_q2_k_q8_k, BlockQ2K, BlockQ8K);
dispatch!(/// Q3_K · Q8_K.
    vec_dot_q3_k_q8_k, BlockQ3K, BlockQ8K);
dispatch!(/// IQ4_NL · Q8_0.
    vec_dot_iq4_nl_q8_0, BlockIQ4NL, BlockQ8_0);
dispatch!(/// IQ4_XS · Q8_K.
    vec_dot_iq4_xs_q8_k, BlockIQ4XS, BlockQ8K);

/// The error of a type-erased dot product.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DotError {
    #[error("{0} has no dot product kernel (it is an activation format)")]
    NoKernel(GgmlType),
    #[error("weights of {w_bytes} bytes and activations of {a_bytes} bytes do not describe {n} values of {ty}")]
    Length {
        ty: GgmlType,
        n: usize,
        w_bytes: usize,
        a_bytes: usize,
    },
}

/// Quantizes an f32 activation row to `ty`'s activation type (`vec_dot_type`), as bytes, with
/// the reference quantizer; f32/f16/bf16 weights take f32 activations.
pub fn quantize_activation(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    fn q<B: Quantize>(x: &[f32]) -> Vec<u8> {
        let mut b = vec![<B as bytemuck::Zeroable>::zeroed(); x.len() / B::BLOCK_SIZE];
        B::quantize_row_ref(x, &mut b);
        bytemuck::cast_slice(&b).to_vec()
    }
    match ty.vec_dot_type() {
        GgmlType::Q8_0 => q::<BlockQ8_0>(x),
        GgmlType::Q8_1 => q::<BlockQ8_1>(x),
        GgmlType::Q8K => q::<BlockQ8K>(x),
        _ => bytemuck::cast_slice(x).to_vec(),
    }
}

/// The dot product of `n` values: weights `w` of type `ty` with activations `a` in `ty`'s
/// activation type (f32 bytes for the float types). Copies only when a slice is misaligned.
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> Result<f32, DotError> {
    let act = ty.vec_dot_type();
    let ok = ty.row_size(n) == Some(w.len()) && act.row_size(n) == Some(a.len())
        || (!ty.is_quantized() && ty.row_size(n) == Some(w.len()) && a.len() == 4 * n);
    if !ok {
        return Err(DotError::Length {
            ty,
            n,
            w_bytes: w.len(),
            a_bytes: a.len(),
        });
    }
    use quantize::blocks_from_bytes as v;
    // GGUF is little-endian, as are the targets kiln builds for.
    Ok(match ty {
        GgmlType::F32 => vec_dot_f32(&v(w), &v(a)),
        GgmlType::F16 => vec_dot_f16_f32(&v::<f16>(w), &v(a)),
        GgmlType::BF16 => vec_dot_bf16_f32(&v(w), &v(a)),
        GgmlType::Q4_0 => vec_dot_q4_0_q8_0(&v(w), &v(a)),
        GgmlType::Q4_1 => vec_dot_q4_1_q8_1(&v(w), &v(a)),
        GgmlType::Q5_0 => vec_dot_q5_0_q8_0(&v(w), &v(a)),
        GgmlType::Q5_1 => vec_dot_q5_1_q8_1(&v(w), &v(a)),
        GgmlType::Q8_0 => vec_dot_q8_0_q8_0(&v(w), &v(a)),
        GgmlType::Q4K => vec_dot_q4_k_q8_k(&v(w), &v(a)),
        GgmlType::Q5K => vec_dot_q5_k_q8_k(&v(w), &v(a)),
        GgmlType::Q6K => vec_dot_q6_k_q8_k(&v(w), &v(a)),
        GgmlType::Q2K => vec_dot_q2_k_q8_k(&v(w), &v(a)),
        GgmlType::Q3K => vec_dot_q3_k_q8_k(&v(w), &v(a)),
        GgmlType::IQ4NL => vec_dot_iq4_nl_q8_0(&v(w), &v(a)),
        GgmlType::IQ4XS => vec_dot_iq4_xs_q8_k(&v(w), &v(a)),
        GgmlType::Q8_1 | GgmlType::Q8K => return Err(DotError::NoKernel(ty)),
    })
}
