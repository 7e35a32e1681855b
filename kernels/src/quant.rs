//! Activation quantization for the matmul: Q8_0 and Q8_K rows with the bytes of the reference
//! quantizers (`quantize`'s `quantize_row_ref`, ggml's `quantize_row_q8_0_ref` and
//! `quantize_row_q8_K_ref`), sixteen values at a time at the AVX-512 level.
//!
//! Same bytes, not just close: the maximum is order-independent for finite values, the scale
//! and its inverse are the same scalar operations, `x · id` is one IEEE multiply either way,
//! and the rounding is rebuilt exactly — Q8_0's `roundf` (half away from zero) as truncation
//! plus one where the dropped fraction is at least ½, Q8_K's `nearest_int` (half to even) as
//! the CPU's default conversion. Tested against the reference on random and tie values. (A row
//! holding NaN may pick a different maximum; such a row has no meaningful quantization.)

use quantize::blocks::{BlockQ8K, BlockQ8_0};
use quantize::Quantize;

#[cfg(target_arch = "x86_64")]
use crate::simd::{level, SimdLevel};

/// Quantizes one activation row to Q8_0, as `BlockQ8_0::quantize_row_ref` does.
pub fn quantize_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    #[cfg(target_arch = "x86_64")]
    if level() == SimdLevel::Avx512 {
        assert_eq!(x.len(), 32 * y.len(), "Q8_0 row");
        // SAFETY: the level says the CPU has AVX-512 F/BW.
        return unsafe { zmm::q8_0(x, y) };
    }
    BlockQ8_0::quantize_row_ref(x, y)
}

/// Quantizes one activation row to Q8_K, as `BlockQ8K::quantize_row_ref` does.
pub fn quantize_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if level() == SimdLevel::Avx512 {
        assert_eq!(x.len(), 256 * y.len(), "Q8_K row");
        // SAFETY: as above.
        return unsafe { zmm::q8_k(x, y) };
    }
    BlockQ8K::quantize_row_ref(x, y)
}

/// An activation format, quantized the fastest way that gives the reference's bytes.
pub trait Activation: Quantize {
    /// Quantizes one row.
    fn quantize_activation(x: &[f32], y: &mut [Self]) {
        Self::quantize_row_ref(x, y)
    }
}

impl Activation for BlockQ8_0 {
    fn quantize_activation(x: &[f32], y: &mut [Self]) {
        quantize_q8_0(x, y)
    }
}

impl Activation for BlockQ8K {
    fn quantize_activation(x: &[f32], y: &mut [Self]) {
        quantize_q8_k(x, y)
    }
}

impl Activation for quantize::blocks::BlockQ8_1 {}

#[cfg(target_arch = "x86_64")]
mod zmm {
    use std::arch::x86_64::*;

    use half::f16;
    use quantize::blocks::{BlockQ8K, BlockQ8_0};

    /// `roundf` of each lane (half away from zero), exactly.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn round_away(v: __m512) -> __m512 {
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        // |v| < 2^23 here, so v − t is exact.
        let frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
        let sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN));
        let one = _mm512_castsi512_ps(_mm512_or_si512(
            sign,
            _mm512_castps_si512(_mm512_set1_ps(1.0)),
        ));
        _mm512_mask_add_ps(t, up, t, one)
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
        for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
            let a = _mm512_loadu_ps(xb.as_ptr());
            let b = _mm512_loadu_ps(xb.as_ptr().add(16));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = f16::from_f32(d);
            let idv = _mm512_set1_ps(id);
            // Values stay within ±127 (plus rounding), so saturating to i8 is the `as i8` cast.
            let qa = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(a, idv)));
            let qb = _mm512_cvttps_epi32(round_away(_mm512_mul_ps(b, idv)));
            let p = yb.qs.as_mut_ptr() as *mut __m128i;
            _mm_storeu_si128(p, _mm512_cvtsepi32_epi8(qa));
            _mm_storeu_si128(p.add(1), _mm512_cvtsepi32_epi8(qb));
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn q8_k(x: &[f32], y: &mut [BlockQ8K]) {
        for (xb, yb) in x.chunks_exact(256).zip(y.iter_mut()) {
            let mut m = _mm512_setzero_ps();
            for c in xb.chunks_exact(16) {
                m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(c.as_ptr())));
            }
            let amax = _mm512_reduce_max_ps(m);
            if amax == 0.0 {
                yb.d = 0.0;
                yb.qs = [0; 256];
                yb.bsums = [0; 16];
                continue;
            }
            // The reference keeps the first value of largest magnitude, with its sign.
            let max = *xb.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
            let iscale = -127.0f32 / max;
            let sv = _mm512_set1_ps(iscale);
            for (j, c) in xb.chunks_exact(16).enumerate() {
                // Default MXCSR rounding is to nearest even: ggml's `nearest_int`.
                let q = _mm512_cvtps_epi32(_mm512_mul_ps(sv, _mm512_loadu_ps(c.as_ptr())));
                let q = _mm512_min_epi32(q, _mm512_set1_epi32(127));
                yb.bsums[j] = _mm512_reduce_add_epi32(q) as i16;
                let p = yb.qs.as_mut_ptr().add(16 * j) as *mut __m128i;
                _mm_storeu_si128(p, _mm512_cvtsepi32_epi8(q));
            }
            yb.d = 1.0 / iscale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random values, exact halves after scaling, and zero blocks.
    fn rows() -> Vec<Vec<f32>> {
        let mut s = 0x2545F4914F6CDD1Du64;
        let mut next = move || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let mut out = vec![];
        for scale in [1e-3f32, 1.0, 37.0, 1e4] {
            out.push((0..1024).map(|_| next() * scale).collect::<Vec<_>>());
        }
        // Halves: with amax 127, x·id lands exactly on k + 0.5.
        let mut halves: Vec<f32> = (0..1024).map(|i| (i % 254) as f32 - 126.5).collect();
        for b in 0..32 {
            halves[32 * b] = 127.0;
        }
        out.push(halves);
        let mut ties = vec![0f32; 1024];
        ties[5] = -3.0;
        ties[300] = 3.0;
        ties[301] = -3.0;
        out.push(ties);
        out
    }

    #[test]
    fn simd_activation_quantizers_give_the_reference_bytes() {
        for x in rows() {
            let mut a = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); 32];
            let mut b = a.clone();
            quantize_q8_0(&x, &mut a);
            BlockQ8_0::quantize_row_ref(&x, &mut b);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&a),
                bytemuck::cast_slice::<_, u8>(&b)
            );
            let mut a = vec![<BlockQ8K as bytemuck::Zeroable>::zeroed(); 4];
            let mut b = a.clone();
            quantize_q8_k(&x, &mut a);
            BlockQ8K::quantize_row_ref(&x, &mut b);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&a),
                bytemuck::cast_slice::<_, u8>(&b)
            );
        }
    }
}
