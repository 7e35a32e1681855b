//! The x86 dot products, written once and compiled twice ([`super::avx2`], [`super::avx512`])
//! with different target features: the same functions as [`super::scalar`].
//!
//! The integer work follows ggml's x86 kernels in `ggml/src/ggml-cpu/arch/x86/quants.c`
//! (`bytes_from_nibbles_32`, `bytes_from_bits_32`, `mul_sum_i8_pairs_float`, the
//! `maddubs`/`madd` chains of `ggml_vec_dot_q4_K_q8_K` …): exact integer sums per block. The
//! K-quant and IQ4_XS kernels then add one fused multiply-add per block into eight float
//! lanes, and differ from the scalar kernels only in the order of those additions; the legacy
//! types (Q4_0 … Q8_0, IQ4_NL) reduce each block to its integer sum and run the scalar
//! kernel's own chain ([`super::scalar::block_step`]), so they give the scalar bits.
//!
//! With `vnni` (ggml's `__AVX512VNNI__ && __AVX512VL__` branch of `mul_sum_us8_pairs_float`)
//! an unsigned×signed byte dot is one `vpdpbusd` instead of `vpmaddubsw` + `vpmaddwd`, and
//! Q5_0's fifth bit is applied through a mask register. Every product of these kernels fits
//! `vpmaddubsw`'s 16-bit pair sums without saturating (|a| ≤ 127 after the sign trick, weight
//! bytes ≤ 127), so both instantiations compute the same integers and the same floats in the
//! same order: their results are bit-identical (tested).

/// The kernels, for the target features `$feat`; `$vnni` selects the AVX-512 VNNI forms.
macro_rules! x86_kernels {
    ($feat:literal, $vnni:literal) => {
        use std::arch::x86_64::*;

        use half::f16;
        use quantize::blocks::*;

        use super::scalar::{k4_min_term, k4_scales_mins, q2k_min_term};
        use super::{ActSum, LegacyBlock};

        /// f16 → f32 with F16C, inlined (the `half` crate's conversion is an out-of-line call that
        /// re-checks CPU features, a measurable cost once per block).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn h2f(h: f16) -> f32 {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
        }

        #[inline]
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn hsum_f32_8(x: __m256) -> f32 {
            let hi = _mm256_extractf128_ps(x, 1);
            let lo = _mm256_castps256_ps128(x);
            let s = _mm_add_ps(hi, lo);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }

        /// 32 nibbles → 32 bytes: low nibbles in bytes 0..16, high nibbles in bytes 16..32.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
            let tmp = _mm_loadu_si128(p as *const __m128i);
            let bytes =
                _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
            _mm256_and_si256(_mm256_set1_epi8(0x0F), bytes)
        }

        /// 32 bits → 32 bytes, 0xFF where the bit is set.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bytes_from_bits_32(qh: &[u8; 4]) -> __m256i {
            let x32 = u32::from_le_bytes(*qh) as i32;
            let shuf = _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0x0000000000000000,
            );
            let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuf);
            let bit_mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
            let bytes = _mm256_or_si256(bytes, bit_mask);
            _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
        }

        /// Q4_0's 32 values as signed bytes (nibble − 8).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q4_0_bytes(xb: &BlockQ4_0) -> __m256i {
            _mm256_sub_epi8(bytes_from_nibbles_32(xb.qs.as_ptr()), _mm256_set1_epi8(8))
        }

        /// Q8_0's 32 values.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q8_0_bytes(xb: &BlockQ8_0) -> __m256i {
            load32(&xb.qs)
        }

        /// Q5_0's 32 values as signed bytes: the nibbles, minus 16 where the fifth bit is clear.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q5_0_bytes(xb: &BlockQ5_0) -> __m256i {
            let qx = bytes_from_nibbles_32(xb.qs.as_ptr());
            if $vnni {
                let clear = !u32::from_le_bytes(xb.qh);
                _mm256_mask_sub_epi8(qx, clear, qx, _mm256_set1_epi8(16))
            } else {
                // Where the fifth bit is clear the value is nibble − 16: set the top nibble (0xF0).
                let bxhi =
                    _mm256_andnot_si256(bytes_from_bits_32(&xb.qh), _mm256_set1_epi8(0xF0u8 as i8));
                _mm256_or_si256(qx, bxhi)
            }
        }

        /// Signed × signed byte pairs, summed to 8 i32 lanes (sign moved onto y).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mul_sum_i8_pairs_int(x: __m256i, y: __m256i) -> __m256i {
            let ax = _mm256_sign_epi8(x, x);
            let sy = _mm256_sign_epi8(y, x);
            mul_sum_us8_pairs_int(ax, sy)
        }

        /// Unsigned × signed byte pairs, summed to 8 i32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn mul_sum_us8_pairs_int(ax: __m256i, sy: __m256i) -> __m256i {
            if $vnni {
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy)
            } else {
                _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(ax, sy))
            }
        }

        /// The sum of eight i32 lanes (exact, any order).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hsum_i32_8(v: __m256i) -> i32 {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
            _mm_cvtsi128_si32(s)
        }

        /// The lane sums of four vectors, `[Σv0, Σv1, Σv2, Σv3]`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn reduce4(v: [__m256i; 4]) -> __m128i {
            let h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
            _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1))
        }

        /// The lane sums of eight vectors, `[Σv0, …, Σv7]`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn reduce8(v: [__m256i; 8]) -> __m256i {
            let a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
            let b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
            _mm256_add_epi32(
                _mm256_permute2x128_si256(a, b, 0x20),
                _mm256_permute2x128_si256(a, b, 0x31),
            )
        }

        /// Four f16 → four f32 (F16C, exact).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn h2f4(h: [f16; 4]) -> __m128 {
            let bits = h.map(|v| v.to_bits());
            _mm_cvtph_ps(_mm_loadl_epi64(bits.as_ptr() as *const __m128i))
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load32(p: &[i8]) -> __m256i {
            debug_assert!(p.len() >= 32);
            _mm256_loadu_si256(p.as_ptr() as *const __m256i)
        }

        /// Two eight-lane chains, the association every f32 kernel at every x86 level shares:
        /// chain A takes the eight-value groups 0, 2, 4, … (and a last group left over after
        /// the pairs), chain B the groups 1, 3, 5, …; the result is `hsum(A + B)` plus the
        /// values after the last full group, one product at a time. [`dot_tile_f32_4x3`] and
        /// the sixteen-lane [`crate::dot::zmm::dot_tile_f32`] (A in lanes 0..8, B in 8..16)
        /// keep exactly these chains, so a token gives the same bits in a batch as alone.
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let mut i = 0;
            while i + 16 <= n {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)), a);
                b = _mm256_fmadd_ps(
                    _mm256_loadu_ps(xp.add(i + 8)),
                    _mm256_loadu_ps(yp.add(i + 8)),
                    b,
                );
                i += 16;
            }
            if i + 8 <= n {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)), a);
                i += 8;
            }
            let mut s = hsum_f32_8(_mm256_add_ps(a, b));
            for j in i..n {
                s += x[j] * y[j];
            }
            s
        }

        /// Lanes `lo..hi` of eight (as an all-ones mask per lane).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn lanes_between(lo: usize, hi: usize) -> __m256i {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let below_hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(hi as i32), idx);
            let from_lo = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(lo as i32 - 1));
            _mm256_and_si256(below_hi, from_lo)
        }

        /// Scores of `N` queries for the sixteen keys from `i` (the first `r` of them when not
        /// `FULL`), as [`super::scalar::attn_scores`]: per key, one fused multiply-add per
        /// dimension from zero, then the scale.
        #[inline]
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = $feat)]
        unsafe fn scores_tile<const N: usize, const FULL: bool>(
            q: &super::Strided,
            kt: &super::Strided,
            hd: usize,
            i: usize,
            r: usize,
            scale: f32,
            out: *mut f32,
            out_stride: usize,
        ) {
            let (m0, m1) = (
                lanes_between(0, r.min(8)),
                lanes_between(0, r.saturating_sub(8)),
            );
            let mut acc = [[_mm256_setzero_ps(); 2]; N];
            let (qp, kp) = (q.data.as_ptr(), kt.data.as_ptr());
            for d in 0..hd {
                let k = kp.add(d * kt.stride + i);
                let (k0, k1) = if FULL {
                    (_mm256_loadu_ps(k), _mm256_loadu_ps(k.add(8)))
                } else {
                    (_mm256_maskload_ps(k, m0), _mm256_maskload_ps(k.add(8), m1))
                };
                for (j, a) in acc.iter_mut().enumerate() {
                    let qv = _mm256_broadcast_ss(&*qp.add(j * q.stride + d));
                    a[0] = _mm256_fmadd_ps(qv, k0, a[0]);
                    a[1] = _mm256_fmadd_ps(qv, k1, a[1]);
                }
            }
            let sv = _mm256_set1_ps(scale);
            for (j, a) in acc.iter().enumerate() {
                let o = out.add(j * out_stride + i);
                let (s0, s1) = (_mm256_mul_ps(a[0], sv), _mm256_mul_ps(a[1], sv));
                if FULL {
                    _mm256_storeu_ps(o, s0);
                    _mm256_storeu_ps(o.add(8), s1);
                } else {
                    _mm256_maskstore_ps(o, m0, s0);
                    _mm256_maskstore_ps(o.add(8), m1, s1);
                }
            }
        }

        #[target_feature(enable = $feat)]
        unsafe fn scores_n<const N: usize>(
            q: &super::Strided,
            kt: &super::Strided,
            hd: usize,
            keys: std::ops::Range<usize>,
            scale: f32,
            out: &mut super::StridedMut,
        ) {
            let o = out.data.as_mut_ptr();
            let mut i = keys.start;
            while i + 16 <= keys.end {
                scores_tile::<N, true>(q, kt, hd, i, 16, scale, o, out.stride);
                i += 16;
            }
            if i < keys.end {
                scores_tile::<N, false>(q, kt, hd, i, keys.end - i, scale, o, out.stride);
            }
        }

        /// See [`super::scalar::attn_scores`]; the caller has checked the extents.
        #[target_feature(enable = $feat)]
        pub unsafe fn attn_scores(
            q: super::Strided,
            nq: usize,
            kt: super::Strided,
            hd: usize,
            keys: std::ops::Range<usize>,
            scale: f32,
            mut out: super::StridedMut,
        ) {
            match nq {
                1 => scores_n::<1>(&q, &kt, hd, keys, scale, &mut out),
                2 => scores_n::<2>(&q, &kt, hd, keys, scale, &mut out),
                3 => scores_n::<3>(&q, &kt, hd, keys, scale, &mut out),
                4 => scores_n::<4>(&q, &kt, hd, keys, scale, &mut out),
                _ => {}
            }
        }

        /// `N` output rows, dimensions `d0 .. d0 + 8·C`: each element accumulates its keys in
        /// order with one fused multiply-add, as [`super::scalar::attn_values`].
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn values_tile<const N: usize, const C: usize>(
            p: &super::Strided,
            v: &super::Strided,
            keys: std::ops::Range<usize>,
            d0: usize,
            out: *mut f32,
            out_stride: usize,
        ) {
            let mut acc = [[_mm256_setzero_ps(); C]; N];
            for (j, a) in acc.iter_mut().enumerate() {
                for (c, x) in a.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(out.add(j * out_stride + d0 + c * 8));
                }
            }
            let (pp, vp) = (p.data.as_ptr(), v.data.as_ptr());
            for i in keys {
                let row = vp.add(i * v.stride + d0);
                let mut vv = [_mm256_setzero_ps(); C];
                for (c, x) in vv.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(row.add(c * 8));
                }
                for (j, a) in acc.iter_mut().enumerate() {
                    let w = _mm256_broadcast_ss(&*pp.add(j * p.stride + i));
                    for (x, y) in a.iter_mut().zip(&vv) {
                        *x = _mm256_fmadd_ps(w, *y, *x);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate() {
                for (c, x) in a.iter().enumerate() {
                    _mm256_storeu_ps(out.add(j * out_stride + d0 + c * 8), *x);
                }
            }
        }

        /// Dimensions in chunks of `8·C` (fewer queries, wider chunks), the rest eight at a
        /// time.
        #[target_feature(enable = $feat)]
        unsafe fn values_n<const N: usize, const C: usize>(
            p: &super::Strided,
            v: &super::Strided,
            hd: usize,
            keys: std::ops::Range<usize>,
            out: &mut super::StridedMut,
        ) {
            let o = out.data.as_mut_ptr();
            let mut d0 = 0;
            while d0 + 8 * C <= hd {
                values_tile::<N, C>(p, v, keys.clone(), d0, o, out.stride);
                d0 += 8 * C;
            }
            while d0 < hd {
                values_tile::<N, 1>(p, v, keys.clone(), d0, o, out.stride);
                d0 += 8;
            }
        }

        /// See [`super::scalar::attn_values`]; `hd` is a multiple of 8 and the caller has
        /// checked the extents.
        #[target_feature(enable = $feat)]
        pub unsafe fn attn_values(
            p: super::Strided,
            nq: usize,
            v: super::Strided,
            hd: usize,
            keys: std::ops::Range<usize>,
            mut out: super::StridedMut,
        ) {
            match nq {
                1 => values_n::<1, 8>(&p, &v, hd, keys, &mut out),
                2 => values_n::<2, 4>(&p, &v, hd, keys, &mut out),
                3 => values_n::<3, 2>(&p, &v, hd, keys, &mut out),
                4 => values_n::<4, 2>(&p, &v, hd, keys, &mut out),
                _ => {}
            }
        }

        /// [`super::scalar::exp_ref`] on eight lanes, step for step.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn exp_ps(x: __m256) -> __m256 {
            use super::scalar::{EXP_LN2_HI, EXP_LN2_LO, EXP_MIN, EXP_POLY};
            let n = _mm256_round_ps(
                _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            );
            let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-EXP_LN2_HI), x);
            let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-EXP_LN2_LO), r);
            let mut p = _mm256_set1_ps(EXP_POLY[0]);
            for &c in &EXP_POLY[1..] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
            }
            let y = _mm256_add_ps(
                _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
                _mm256_set1_ps(1.0),
            );
            let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            let e = _mm256_mul_ps(y, _mm256_castsi256_ps(scale));
            // exp_ref's `x < EXP_MIN` gives 0; NaN (not less) goes through, as there.
            let keep = _mm256_cmp_ps::<_CMP_NLT_UQ>(x, _mm256_set1_ps(EXP_MIN));
            _mm256_and_ps(e, keep)
        }

        /// [`super::scalar::gelu_mul`] on eight lanes, step for step ([`super::scalar::gelu_ref`]).
        #[target_feature(enable = $feat)]
        pub unsafe fn gelu_mul(g: &mut [f32], up: &[f32]) {
            use super::scalar::{GELU_BETA, GELU_KAPPA};
            let n = g.len().min(up.len());
            let n8 = n / 8 * 8;
            let (beta, kappa) = (_mm256_set1_ps(GELU_BETA), _mm256_set1_ps(GELU_KAPPA));
            let (m2, cap, one) = (
                _mm256_set1_ps(-2.0),
                _mm256_set1_ps(88.0),
                _mm256_set1_ps(1.0),
            );
            let mut i = 0;
            while i < n8 {
                let x = _mm256_loadu_ps(g.as_ptr().add(i));
                let cube = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                let u = _mm256_mul_ps(beta, _mm256_add_ps(x, _mm256_mul_ps(kappa, cube)));
                let t = _mm256_min_ps(_mm256_mul_ps(m2, u), cap);
                let y = _mm256_div_ps(x, _mm256_add_ps(one, exp_ps(t)));
                _mm256_storeu_ps(
                    g.as_mut_ptr().add(i),
                    _mm256_mul_ps(y, _mm256_loadu_ps(up.as_ptr().add(i))),
                );
                i += 8;
            }
            super::scalar::gelu_mul(&mut g[n8..n], &up[n8..n]);
        }

        /// See [`super::scalar::attn_exp`]: sixteen keys per step, aligned to key positions,
        /// partial steps through lane masks; the caller has checked `keys.end ≤ row.len()`.
        #[target_feature(enable = $feat)]
        pub unsafe fn attn_exp(
            row: &mut [f32],
            keys: std::ops::Range<usize>,
            max: f32,
            lanes: &mut [f32; super::ATT_LANES],
        ) {
            let (a, b) = (keys.start, keys.end);
            if a >= b {
                return;
            }
            let mut acc0 = _mm256_loadu_ps(lanes.as_ptr());
            let mut acc1 = _mm256_loadu_ps(lanes.as_ptr().add(8));
            let mx = _mm256_set1_ps(max);
            let mut t = a - a % 16;
            while t < b {
                let p = row.as_mut_ptr().add(t);
                if t >= a && t + 16 <= b {
                    let e0 = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p), mx));
                    let e1 = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(8)), mx));
                    _mm256_storeu_ps(p, e0);
                    _mm256_storeu_ps(p.add(8), e1);
                    acc0 = _mm256_add_ps(acc0, e0);
                    acc1 = _mm256_add_ps(acc1, e1);
                } else {
                    let (lo, hi) = (a.max(t) - t, b.min(t + 16) - t);
                    let m0 = lanes_between(lo.min(8), hi.min(8));
                    let m1 = lanes_between(lo.max(8) - 8, hi.max(8) - 8);
                    let x0 = _mm256_maskload_ps(p, m0);
                    let x1 = _mm256_maskload_ps(p.add(8), m1);
                    let e0 = _mm256_and_ps(exp_ps(_mm256_sub_ps(x0, mx)), _mm256_castsi256_ps(m0));
                    let e1 = _mm256_and_ps(exp_ps(_mm256_sub_ps(x1, mx)), _mm256_castsi256_ps(m1));
                    _mm256_maskstore_ps(p, m0, e0);
                    _mm256_maskstore_ps(p.add(8), m1, e1);
                    acc0 = _mm256_add_ps(acc0, e0);
                    acc1 = _mm256_add_ps(acc1, e1);
                }
                t += 16;
            }
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc0);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc1);
        }

        /// The largest of `x` (−∞ when empty); exact, so the same as the scalar fold.
        #[target_feature(enable = $feat)]
        pub unsafe fn max_f32(x: &[f32]) -> f32 {
            let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut chunks = x.chunks_exact(8);
            for c in &mut chunks {
                m = _mm256_max_ps(m, _mm256_loadu_ps(c.as_ptr()));
            }
            let mut l = [0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), m);
            l.iter()
                .chain(chunks.remainder())
                .fold(f32::NEG_INFINITY, |a, &v| a.max(v))
        }

        /// As [`vec_dot_f32`], with f16 weights (same association as [`dot_tile_f16_4x3`]).
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let mut acc = _mm256_setzero_ps();
            let (xp, yp) = (x.as_ptr() as *const u16, y.as_ptr());
            let mut i = 0;
            while i + 8 <= n {
                let xv = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(i) as *const __m128i));
                acc = _mm256_fmadd_ps(xv, _mm256_loadu_ps(yp.add(i)), acc);
                i += 8;
            }
            let mut s = hsum_f32_8(acc);
            for j in i..n {
                s += x[j].to_f32() * y[j];
            }
            s
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_bf16_f32(x: &[u16], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let n8 = n / 8 * 8;
            let mut acc = _mm256_setzero_ps();
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let mut i = 0;
            while i < n8 {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(xp.add(i) as *const __m128i));
                let xv = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
                acc = _mm256_fmadd_ps(xv, _mm256_loadu_ps(yp.add(i)), acc);
                i += 8;
            }
            let mut s = hsum_f32_8(acc);
            for j in n8..n {
                s += f32::from_bits((x[j] as u32) << 16) * y[j];
            }
            s
        }

        /// Q4_1's 32 values (the nibbles, unsigned).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q4_1_bytes(xb: &BlockQ4_1) -> __m256i {
            bytes_from_nibbles_32(xb.qs.as_ptr())
        }

        /// Q5_1's 32 values (the nibbles plus 16 where the fifth bit is set, unsigned).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q5_1_bytes(xb: &BlockQ5_1) -> __m256i {
            let bxhi = _mm256_and_si256(bytes_from_bits_32(&xb.qh), _mm256_set1_epi8(0x10));
            _mm256_or_si256(bytes_from_nibbles_32(xb.qs.as_ptr()), bxhi)
        }

        /// Σ over one 32-value sub-block pair of a Q4_K/Q5_K chunk: `scale · Σ q·a` in i32 lanes.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn scaled_dot_u8(q: __m256i, a: __m256i, scale: i32) -> __m256i {
            let p16 = _mm256_maddubs_epi16(q, a);
            _mm256_madd_epi16(_mm256_set1_epi16(scale as i16), p16)
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
            k4_dot(x.len(), [y], |i| unpack_q4_k(&x[i]))[0]
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
            k4_dot(x.len(), [y], |i| unpack_q5_k(&x[i]))[0]
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(3);
            let m32 = _mm256_set1_epi8(32);
            let mut acc = _mm256_setzero_ps();
            for (xb, yb) in x.iter().zip(y) {
                let d = h2f(xb.d) * yb.d;
                let mut sumi = _mm256_setzero_si256();
                for k in 0..QK_K / 128 {
                    let ql1 = _mm256_loadu_si256(xb.ql.as_ptr().add(64 * k) as *const __m256i);
                    let ql2 = _mm256_loadu_si256(xb.ql.as_ptr().add(64 * k + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(xb.qh.as_ptr().add(32 * k) as *const __m256i);
                    let q = [
                        _mm256_or_si256(
                            _mm256_and_si256(ql1, m4),
                            _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(ql2, m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
                        ),
                    ];
                    for (p, qv) in q.iter().enumerate() {
                        let a = load32(&yb.qs[128 * k + 32 * p..]);
                        // (q − 32)·a = q·a − 32·a, both in i16 pairs.
                        let p16 = _mm256_sub_epi16(
                            _mm256_maddubs_epi16(*qv, a),
                            _mm256_maddubs_epi16(m32, a),
                        );
                        let s0 = xb.scales[8 * k + 2 * p] as i16;
                        let s1 = xb.scales[8 * k + 2 * p + 1] as i16;
                        let scale = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p16));
                    }
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            }
            hsum_f32_8(acc)
        }

        /// One chain of [`vec_dot_f32`] for a 4 × 3 tile: the eight-value groups at
        /// `start, start + 16, …` that end by `limit`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn tile_chain_f32_4x3(
            w: &[&[f32]; 4],
            x: &[&[f32]; 3],
            start: usize,
            limit: usize,
        ) -> [[__m256; 3]; 4] {
            let mut acc = [[_mm256_setzero_ps(); 3]; 4];
            let mut i = start;
            while i + 8 <= limit {
                let xv = [
                    _mm256_loadu_ps(x[0].as_ptr().add(i)),
                    _mm256_loadu_ps(x[1].as_ptr().add(i)),
                    _mm256_loadu_ps(x[2].as_ptr().add(i)),
                ];
                for r in 0..4 {
                    let wv = _mm256_loadu_ps(w[r].as_ptr().add(i));
                    for t in 0..3 {
                        acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
                    }
                }
                i += 16;
            }
            acc
        }

        /// A 4 × 3 tile of f32 dot products: `out[r][t] = w[r] · x[t]` for four weight rows and
        /// three activation rows of `n` values, each pair of loads feeding several FMAs. It
        /// runs [`vec_dot_f32`]'s two chains one after the other (sixteen ymm registers hold
        /// one chain's tile), so every entry has the bits of the single dot.
        #[target_feature(enable = $feat)]
        pub unsafe fn dot_tile_f32_4x3(w: [&[f32]; 4], x: [&[f32]; 3], n: usize) -> [[f32; 3]; 4] {
            assert!(w.iter().all(|r| r.len() >= n) && x.iter().all(|r| r.len() >= n));
            let pairs_end = n / 16 * 16;
            let a_end = if n - pairs_end >= 8 {
                pairs_end + 8
            } else {
                pairs_end
            };
            let a = tile_chain_f32_4x3(&w, &x, 0, a_end);
            let b = tile_chain_f32_4x3(&w, &x, 8, pairs_end);
            let mut out = [[0f32; 3]; 4];
            for r in 0..4 {
                for t in 0..3 {
                    let mut s = hsum_f32_8(_mm256_add_ps(a[r][t], b[r][t]));
                    for j in a_end..n {
                        s += w[r][j] * x[t][j];
                    }
                    out[r][t] = s;
                }
            }
            out
        }

        /// [`dot_tile_f32_4x3`] with f16 weight rows.
        #[target_feature(enable = $feat)]
        pub unsafe fn dot_tile_f16_4x3(w: [&[f16]; 4], x: [&[f32]; 3], n: usize) -> [[f32; 3]; 4] {
            let mut acc = [[_mm256_setzero_ps(); 3]; 4];
            let mut i = 0;
            while i + 8 <= n {
                let xv = [
                    _mm256_loadu_ps(x[0].as_ptr().add(i)),
                    _mm256_loadu_ps(x[1].as_ptr().add(i)),
                    _mm256_loadu_ps(x[2].as_ptr().add(i)),
                ];
                for r in 0..4 {
                    let wv =
                        _mm256_cvtph_ps(_mm_loadu_si128(w[r].as_ptr().add(i) as *const __m128i));
                    for t in 0..3 {
                        acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
                    }
                }
                i += 8;
            }
            let mut out = [[0f32; 3]; 4];
            for r in 0..4 {
                for t in 0..3 {
                    let mut s = hsum_f32_8(acc[r][t]);
                    for j in i..n {
                        s += w[r][j].to_f32() * x[t][j];
                    }
                    out[r][t] = s;
                }
            }
            out
        }

        // Q4_0, Q5_0, Q8_0 and IQ4_NL against Q8_0 activations: one row, four tokens (each
        // weight block unpacked once for four activation rows), two rows × four tokens (each
        // activation block also loaded once for both rows) and four rows × one token (decode).
        // Every (row, token) pair is one chain of per-block steps, so a token gets the same
        // bits alone, in a batch, at either SIMD level and in the sixteen-lane kernels of
        // [`super::zmm`].

        /// The single, four-token and four-row kernels of weight blocks `$B` against activation
        /// blocks `$A`, unpacked by `$bytes` and multiplied by `$mul`: per block the exact
        /// integer sum, then [`super::scalar::block_step`]'s chain (for the affine types
        /// [`super::scalar::affine_step`]'s), tokens or rows in lanes — the scalar kernel's bits.
        macro_rules! legacy {
            ($one:ident, $four:ident, $rows:ident, $B:ty, $A:ty, $bytes:ident, $mul:ident) => {
                /// Four rows · one token (decode), the rows in lanes: each as [`$one`] gives it.
                #[target_feature(enable = $feat)]
                pub unsafe fn $rows(x: [&[$B]; 4], y: &[$A]) -> [f32; 4] {
                    assert!(
                        x.iter().all(|r| r.len() == y.len()),
                        "rows of the token's length"
                    );
                    let mut acc = _mm_setzero_ps();
                    for (i, yb) in y.iter().enumerate() {
                        let yv = load32(&yb.qs);
                        let b = x.map(|r| r.get_unchecked(i));
                        let v = b.map(|xb| $mul($bytes(xb), yv));
                        let d = _mm_mul_ps(h2f4(b.map(|xb| xb.d)), _mm_set1_ps(h2f(yb.d)));
                        acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(reduce4(v)), acc);
                        if <$B as super::LegacyBlock>::AFFINE {
                            let m = h2f4(b.map(|xb| xb.min_f16()));
                            acc = _mm_fmadd_ps(m, _mm_set1_ps(h2f(yb.sum_f16())), acc);
                        }
                    }
                    let mut out = [0f32; 4];
                    _mm_storeu_ps(out.as_mut_ptr(), acc);
                    out
                }

                #[target_feature(enable = $feat)]
                pub unsafe fn $one(x: &[$B], y: &[$A]) -> f32 {
                    let mut acc = 0f32;
                    for (xb, yb) in x.iter().zip(y) {
                        let s = hsum_i32_8($mul($bytes(xb), load32(&yb.qs)));
                        acc = (h2f(xb.d) * h2f(yb.d)).mul_add(s as f32, acc);
                        if <$B as super::LegacyBlock>::AFFINE {
                            acc = h2f(xb.min_f16()).mul_add(h2f(yb.sum_f16()), acc);
                        }
                    }
                    acc
                }

                #[target_feature(enable = $feat)]
                pub unsafe fn $four(x: &[$B], y: [&[$A]; 4]) -> [f32; 4] {
                    let mut acc = _mm_setzero_ps();
                    for (i, xb) in x.iter().enumerate() {
                        let qx = $bytes(xb);
                        let v: [__m256i; 4] =
                            std::array::from_fn(|t| $mul(qx, load32(&y[t][i].qs)));
                        let dy = h2f4([y[0][i].d, y[1][i].d, y[2][i].d, y[3][i].d]);
                        let d = _mm_mul_ps(_mm_set1_ps(h2f(xb.d)), dy);
                        acc = _mm_fmadd_ps(d, _mm_cvtepi32_ps(reduce4(v)), acc);
                        if <$B as super::LegacyBlock>::AFFINE {
                            let sy = h2f4(std::array::from_fn(|t| y[t][i].sum_f16()));
                            acc = _mm_fmadd_ps(_mm_set1_ps(h2f(xb.min_f16())), sy, acc);
                        }
                    }
                    let mut out = [0f32; 4];
                    _mm_storeu_ps(out.as_mut_ptr(), acc);
                    out
                }
            };
        }

        /// The 2 × 4 kernel `$two` of weight blocks `$B` against Q8_0, as [`legacy`]'s.
        macro_rules! legacy_two {
            ($two:ident, $B:ty, $bytes:ident) => {
                #[target_feature(enable = $feat)]
                pub unsafe fn $two(x: [&[$B]; 2], y: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 2] {
                    // Lanes 0..4: row 0 × tokens 0..4; lanes 4..8: row 1.
                    let mut acc = _mm256_setzero_ps();
                    for i in 0..x[0].len().min(x[1].len()) {
                        let (b0, b1) = (&x[0][i], &x[1][i]);
                        let (q0, q1) = ($bytes(b0), $bytes(b1));
                        let mut v = [_mm256_setzero_si256(); 8];
                        for t in 0..4 {
                            let yv = load32(&y[t][i].qs);
                            v[t] = mul_sum_i8_pairs_int(q0, yv);
                            v[4 + t] = mul_sum_i8_pairs_int(q1, yv);
                        }
                        let dy = h2f4([y[0][i].d, y[1][i].d, y[2][i].d, y[3][i].d]);
                        let dx = _mm256_set_m128(_mm_set1_ps(h2f(b1.d)), _mm_set1_ps(h2f(b0.d)));
                        let d = _mm256_mul_ps(dx, _mm256_set_m128(dy, dy));
                        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(reduce8(v)), acc);
                    }
                    let mut out = [[0f32; 4]; 2];
                    _mm_storeu_ps(out[0].as_mut_ptr(), _mm256_castps256_ps128(acc));
                    _mm_storeu_ps(out[1].as_mut_ptr(), _mm256_extractf128_ps(acc, 1));
                    out
                }
            };
        }

        legacy!(
            vec_dot_q4_0_q8_0,
            vec_dot4_q4_0_q8_0,
            vec_dot_rows4_q4_0_q8_0,
            BlockQ4_0,
            BlockQ8_0,
            q4_0_bytes,
            mul_sum_i8_pairs_int
        );
        legacy_two!(vec_dot4x2_q4_0_q8_0, BlockQ4_0, q4_0_bytes);
        legacy!(
            vec_dot_q5_0_q8_0,
            vec_dot4_q5_0_q8_0,
            vec_dot_rows4_q5_0_q8_0,
            BlockQ5_0,
            BlockQ8_0,
            q5_0_bytes,
            mul_sum_i8_pairs_int
        );
        legacy_two!(vec_dot4x2_q5_0_q8_0, BlockQ5_0, q5_0_bytes);
        legacy!(
            vec_dot_q8_0_q8_0,
            vec_dot4_q8_0_q8_0,
            vec_dot_rows4_q8_0_q8_0,
            BlockQ8_0,
            BlockQ8_0,
            q8_0_bytes,
            mul_sum_i8_pairs_int
        );
        legacy_two!(vec_dot4x2_q8_0_q8_0, BlockQ8_0, q8_0_bytes);
        legacy!(
            vec_dot_q4_1_q8_1,
            vec_dot4_q4_1_q8_1,
            vec_dot_rows4_q4_1_q8_1,
            BlockQ4_1,
            BlockQ8_1,
            q4_1_bytes,
            mul_sum_us8_pairs_int
        );
        legacy!(
            vec_dot_q5_1_q8_1,
            vec_dot4_q5_1_q8_1,
            vec_dot_rows4_q5_1_q8_1,
            BlockQ5_1,
            BlockQ8_1,
            q5_1_bytes,
            mul_sum_us8_pairs_int
        );

        /// One token's share of a Q4_K/Q5_K block in [`k4_dot`]: the eight unpacked
        /// 32-value groups `q` with their scales and mins against the token's Q8_K block `yb`,
        /// added to its lanes `acc` and min term `acc_m`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k4_accumulate(
            q: &[__m256i; 8],
            sc: &[i32; 8],
            mn: &[i32; 8],
            (xd, xdmin): (f32, f32),
            yb: &BlockQ8K,
            acc: &mut __m256,
            acc_m: &mut f32,
        ) {
            *acc_m += xdmin * yb.d * k4_min_term(mn, &yb.bsums) as f32;
            let mut sumi = _mm256_setzero_si256();
            for k in 0..QK_K / 64 {
                let a_lo = load32(&yb.qs[64 * k..]);
                let a_hi = load32(&yb.qs[64 * k + 32..]);
                sumi = _mm256_add_epi32(sumi, scaled_dot_u8(q[2 * k], a_lo, sc[2 * k]));
                sumi = _mm256_add_epi32(sumi, scaled_dot_u8(q[2 * k + 1], a_hi, sc[2 * k + 1]));
            }
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(xd * yb.d), _mm256_cvtepi32_ps(sumi), *acc);
        }

        /// The loop of Q4_K and Q5_K over one row and `T` tokens (1 for decode, 4 for prefill):
        /// `unpack(i)` gives block `i`'s 256 values as eight 32-byte vectors, its packed scales
        /// and mins, and `(d, dmin)`. One loop for both counts, so a token's bits do not depend
        /// on how many it shares a row with.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k4_dot<'a, const T: usize>(
            n: usize,
            y: [&[BlockQ8K]; T],
            unpack: impl Fn(usize) -> ([__m256i; 8], &'a [u8; K_SCALE_SIZE], (f32, f32)),
        ) -> [f32; T] {
            assert!(y.iter().all(|r| r.len() >= n), "activation blocks");
            let mut acc = [_mm256_setzero_ps(); T];
            let mut acc_m = [0f32; T];
            for i in 0..n {
                let (q, scales, d) = unpack(i);
                let (sc, mn) = k4_scales_mins(scales);
                for t in 0..T {
                    k4_accumulate(&q, &sc, &mn, d, &y[t][i], &mut acc[t], &mut acc_m[t]);
                }
            }
            std::array::from_fn(|t| hsum_f32_8(acc[t]) - acc_m[t])
        }

        /// A Q4_K block's values (low nibbles of each 32-byte group, then high nibbles).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q4_k(xb: &BlockQ4K) -> ([__m256i; 8], &[u8; K_SCALE_SIZE], (f32, f32)) {
            let m4 = _mm256_set1_epi8(0x0F);
            let mut q = [_mm256_setzero_si256(); 8];
            for k in 0..QK_K / 64 {
                let bits = _mm256_loadu_si256(xb.qs.as_ptr().add(32 * k) as *const __m256i);
                q[2 * k] = _mm256_and_si256(bits, m4);
                q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            }
            (q, &xb.scales, (h2f(xb.d), h2f(xb.dmin)))
        }

        /// A Q5_K block's values: Q4_K's nibbles plus 16 where the fifth bit is set.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q5_k(xb: &BlockQ5K) -> ([__m256i; 8], &[u8; K_SCALE_SIZE], (f32, f32)) {
            let m4 = _mm256_set1_epi8(0x0F);
            let one = _mm256_set1_epi8(1);
            let hbits = _mm256_loadu_si256(xb.qh.as_ptr() as *const __m256i);
            let mut q = [_mm256_setzero_si256(); 8];
            for k in 0..QK_K / 64 {
                let bits = _mm256_loadu_si256(xb.qs.as_ptr().add(32 * k) as *const __m256i);
                let sh0 = _mm_cvtsi32_si128(2 * k as i32);
                let sh1 = _mm_cvtsi32_si128(2 * k as i32 + 1);
                let h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hbits, sh0), one), 4);
                let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hbits, sh1), one), 4);
                q[2 * k] = _mm256_add_epi8(_mm256_and_si256(bits, m4), h0);
                q[2 * k + 1] =
                    _mm256_add_epi8(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1);
            }
            (q, &xb.scales, (h2f(xb.d), h2f(xb.dmin)))
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q4_k_q8_k(x: &[BlockQ4K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            k4_dot(x.len(), y, |i| unpack_q4_k(&x[i]))
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q5_k_q8_k(x: &[BlockQ5K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            k4_dot(x.len(), y, |i| unpack_q5_k(&x[i]))
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q6_k_q8_k(x: &[BlockQ6K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            let m4 = _mm256_set1_epi8(0x0F);
            let m2 = _mm256_set1_epi8(3);
            let m32 = _mm256_set1_epi8(32);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, xb) in x.iter().enumerate() {
                let xd = h2f(xb.d);
                let mut qv = [_mm256_setzero_si256(); 8];
                let mut scales = [_mm256_setzero_si256(); 8];
                for k in 0..QK_K / 128 {
                    let ql1 = _mm256_loadu_si256(xb.ql.as_ptr().add(64 * k) as *const __m256i);
                    let ql2 = _mm256_loadu_si256(xb.ql.as_ptr().add(64 * k + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(xb.qh.as_ptr().add(32 * k) as *const __m256i);
                    qv[4 * k] = _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                    );
                    qv[4 * k + 1] = _mm256_or_si256(
                        _mm256_and_si256(ql2, m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                    );
                    qv[4 * k + 2] = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
                    );
                    qv[4 * k + 3] = _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4),
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
                    );
                    for p in 0..4 {
                        let s0 = xb.scales[8 * k + 2 * p] as i16;
                        let s1 = xb.scales[8 * k + 2 * p + 1] as i16;
                        scales[4 * k + p] =
                            _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                    }
                }
                for t in 0..4 {
                    let yb = &y[t][i];
                    let d = xd * yb.d;
                    let mut sumi = _mm256_setzero_si256();
                    for k in 0..QK_K / 128 {
                        for p in 0..4 {
                            let a = load32(&yb.qs[128 * k + 32 * p..]);
                            let p16 = _mm256_sub_epi16(
                                _mm256_maddubs_epi16(qv[4 * k + p], a),
                                _mm256_maddubs_epi16(m32, a),
                            );
                            sumi =
                                _mm256_add_epi32(sumi, _mm256_madd_epi16(scales[4 * k + p], p16));
                        }
                    }
                    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[t]);
                }
            }
            [
                hsum_f32_8(acc[0]),
                hsum_f32_8(acc[1]),
                hsum_f32_8(acc[2]),
                hsum_f32_8(acc[3]),
            ]
        }

        // ------------------------------------------------------------ the low-bit tier

        /// IQ4_NL's and IQ4_XS's grid (`kvalues_iq4nl`) in both 128-bit lanes, for `pshufb`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_table() -> __m256i {
            let t = _mm_loadu_si128(quantize::lowbit::KVALUES_IQ4NL.as_ptr() as *const __m128i);
            _mm256_set_m128i(t, t)
        }

        /// 32 IQ4 indices (16 bytes: low nibbles the first 16 values) → their grid values.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_values(qs: *const u8) -> __m256i {
            _mm256_shuffle_epi8(iq4_table(), bytes_from_nibbles_32(qs))
        }

        /// IQ4_NL's 32 values as signed bytes (grid values, |v| ≤ 127).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_nl_bytes(xb: &BlockIQ4NL) -> __m256i {
            iq4_values(xb.qs.as_ptr())
        }

        legacy!(
            vec_dot_iq4_nl_q8_0,
            vec_dot4_iq4_nl_q8_0,
            vec_dot_rows4_iq4_nl_q8_0,
            BlockIQ4NL,
            BlockQ8_0,
            iq4_nl_bytes,
            mul_sum_i8_pairs_int
        );
        legacy_two!(vec_dot4x2_iq4_nl_q8_0, BlockIQ4NL, iq4_nl_bytes);

        /// Two 16-value sub-block scales as i16 pairs: `s0` for the first 128 bits (values
        /// 0..16 of a 32-byte group after `maddubs`), `s1` for the second.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn scale_pair(s0: i32, s1: i32) -> __m256i {
            _mm256_set_m128i(_mm_set1_epi16(s1 as i16), _mm_set1_epi16(s0 as i16))
        }

        /// A low-bit super-block unpacked for [`lowbit_dot`]: eight 32-byte groups of values
        /// (unsigned, or signed with `signed`), the i16 scale pairs of each group, and the
        /// amount subtracted per group (`sub[g]·a`, Q3_K's −4 where the high bit is clear).
        struct LowBit {
            q: [__m256i; 8],
            scales: [__m256i; 8],
            sub: Option<[__m256i; 8]>,
            signed: bool,
            /// The block's f16 scale (and min scale, Q2_K) as f32.
            d: f32,
            dmin: f32,
        }

        /// The loop of Q2_K, Q3_K and IQ4_XS over one row and `T` tokens (1 for decode, 4 for
        /// prefill): exact integer sums per super-block in eight i32 lanes, one fused
        /// multiply-add per super-block and token, and Q2_K's min term per token in a float
        /// (`mins`). One loop for both counts, so a token's bits do not depend on its batch.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn lowbit_dot<const T: usize>(
            n: usize,
            y: [&[BlockQ8K]; T],
            unpack: impl Fn(usize) -> LowBit,
            mins: impl Fn(usize, &BlockQ8K) -> i32,
        ) -> [f32; T] {
            assert!(y.iter().all(|r| r.len() >= n), "activation blocks");
            let mut acc = [_mm256_setzero_ps(); T];
            let mut acc_m = [0f32; T];
            for i in 0..n {
                let b = unpack(i);
                for t in 0..T {
                    let yb = &y[t][i];
                    if b.dmin != 0.0 {
                        acc_m[t] += b.dmin * yb.d * mins(i, yb) as f32;
                    }
                    let mut sumi = _mm256_setzero_si256();
                    for g in 0..8 {
                        let a = load32(&yb.qs[32 * g..]);
                        let mut p16 = if b.signed {
                            _mm256_maddubs_epi16(
                                _mm256_sign_epi8(b.q[g], b.q[g]),
                                _mm256_sign_epi8(a, b.q[g]),
                            )
                        } else {
                            _mm256_maddubs_epi16(b.q[g], a)
                        };
                        if let Some(sub) = &b.sub {
                            p16 = _mm256_sub_epi16(p16, _mm256_maddubs_epi16(sub[g], a));
                        }
                        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(b.scales[g], p16));
                    }
                    acc[t] = _mm256_fmadd_ps(
                        _mm256_set1_ps(b.d * yb.d),
                        _mm256_cvtepi32_ps(sumi),
                        acc[t],
                    );
                }
            }
            std::array::from_fn(|t| hsum_f32_8(acc[t]) - acc_m[t])
        }

        /// The 2-bit groups of a Q2_K / Q3_K `qs`: group `4·j + s` is values `128·j + 32·s ..`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn low2_groups(qs: &[u8; QK_K / 4]) -> [__m256i; 8] {
            let m3 = _mm256_set1_epi8(3);
            let mut q = [_mm256_setzero_si256(); 8];
            for j in 0..2 {
                let bits = _mm256_loadu_si256(qs.as_ptr().add(32 * j) as *const __m256i);
                for s in 0..4 {
                    let sh = _mm_cvtsi32_si128(2 * s as i32);
                    q[4 * j + s] = _mm256_and_si256(_mm256_srl_epi16(bits, sh), m3);
                }
            }
            q
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q2_k(xb: &BlockQ2K) -> LowBit {
            let s = |j: usize| (xb.scales[j] & 0xF) as i32;
            LowBit {
                q: low2_groups(&xb.qs),
                scales: std::array::from_fn(|g| scale_pair(s(2 * g), s(2 * g + 1))),
                sub: None,
                signed: false,
                d: h2f(xb.d),
                dmin: h2f(xb.dmin),
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q3_k(xb: &BlockQ3K) -> LowBit {
            let sc = quantize::lowbit::q3k_scales(&xb.scales);
            let s = |j: usize| sc[j] as i32 - 32;
            let hbits = _mm256_loadu_si256(xb.hmask.as_ptr() as *const __m256i);
            let four = _mm256_set1_epi8(4);
            // 4 where value `32·g + l`'s high bit (bit g of hmask[l]) is clear, else 0.
            let sub = std::array::from_fn(|g| {
                let bit = _mm256_set1_epi8((1u8 << g) as i8);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit), bit);
                _mm256_andnot_si256(set, four)
            });
            LowBit {
                q: low2_groups(&xb.qs),
                scales: std::array::from_fn(|g| scale_pair(s(2 * g), s(2 * g + 1))),
                sub: Some(sub),
                signed: false,
                d: h2f(xb.d),
                dmin: 0.0,
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_iq4_xs(xb: &BlockIQ4XS) -> LowBit {
            LowBit {
                q: std::array::from_fn(|g| iq4_values(xb.qs.as_ptr().add(16 * g))),
                scales: std::array::from_fn(|g| {
                    _mm256_set1_epi16((quantize::lowbit::iq4xs_scale(xb, g) - 32) as i16)
                }),
                sub: None,
                signed: true,
                d: h2f(xb.d),
                dmin: 0.0,
            }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
            lowbit_dot(
                x.len(),
                [y],
                |i| unpack_q2_k(&x[i]),
                |i, yb| q2k_min_term(&x[i], yb),
            )[0]
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q2_k_q8_k(x: &[BlockQ2K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            lowbit_dot(
                x.len(),
                y,
                |i| unpack_q2_k(&x[i]),
                |i, yb| q2k_min_term(&x[i], yb),
            )
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
            lowbit_dot(x.len(), [y], |i| unpack_q3_k(&x[i]), |_, _| 0)[0]
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q3_k_q8_k(x: &[BlockQ3K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            lowbit_dot(x.len(), y, |i| unpack_q3_k(&x[i]), |_, _| 0)
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_iq4_xs_q8_k(x: &[BlockIQ4XS], y: &[BlockQ8K]) -> f32 {
            lowbit_dot(x.len(), [y], |i| unpack_iq4_xs(&x[i]), |_, _| 0)[0]
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_iq4_xs_q8_k(x: &[BlockIQ4XS], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            lowbit_dot(x.len(), y, |i| unpack_iq4_xs(&x[i]), |_, _| 0)
        }
    };
}

pub(crate) use x86_kernels;
