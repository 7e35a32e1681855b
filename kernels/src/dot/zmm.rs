//! Sixteen-lane AVX-512 kernels: Q4_0, Q5_0, Q8_0 and IQ4_NL weights against Q8_0 activations,
//! Q4_1 and Q5_1 against Q8_1 (their mins' term added after the lanes' sum, as AVX2 does; two
//! blocks per register, on the layouts of [`super::packed`]) and the f32 prefill tile. Each
//! gives the bits of the AVX2 kernel it stands in for.
//!
//! - [`dot_q4_0`], [`dot_q5_0`], [`dot_q8_0`]: one weight row (ggml's blocks, unpacked on the
//!   fly) · one token's [`ActPair`]s — the decode path.
//! - [`gemm`]: `R` pre-unpacked weight rows × `T` tokens in registers — the prefill path;
//!   unpacking a row once for every token takes the nibble and fifth-bit work out of the loop,
//!   and a block pair costs one `vpdpbusd`, one conversion, one multiply and one FMA.
//! - [`dot_q4_0_rows`] and its kin: four rows · one token, one activation load for all four.
//! - [`dot_tile_f32`]: 4 f32 rows × `T` tokens, chain A of the AVX2 dot in lanes 0..8 and
//!   chain B in lanes 8..16 (see [`super::avx2::vec_dot_f32`]).
//!
//! For the legacy types, per (row, token) both compute exactly what [`super::avx2`]'s kernels
//! compute: the same integer per group of four values (see [`super::packed`]), the same scale
//! products `dx · dy`, even blocks accumulated in lanes 0..8 and odd blocks in lanes 8..16 (the
//! AVX2 kernels' two accumulators), and the same final sum. Their results are bit-identical
//! (tested), so decode, prefill and the AVX2 level agree to the bit.
//!
//! Every function is `unsafe`: the caller must have checked for [`crate::simd::SimdLevel::Avx512`].

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use half::f16;
use quantize::blocks::{
    BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};

use super::avx512::hsum_f32_8;
use super::packed::{affine_term, ActPair, PackedWeight, PairMeta, WeightPair};

/// `[v[0]; 8] ++ [v[1]; 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn spread2(v: __m128) -> __m512 {
    let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v))
}

/// Two f16 scales, widened and spread over their blocks' lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scales2(d0: f16, d1: f16) -> __m512 {
    spread2(widen2(d0, d1))
}

/// Two f16 scales widened by F16C in one conversion, in lanes 0 and 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn widen2(d0: f16, d1: f16) -> __m128 {
    let bits = d0.to_bits() as u32 | (d1.to_bits() as u32) << 16;
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// The sum of the sixteen lanes as the AVX2 kernels sum their two accumulators: lanes 0..8
/// plus lanes 8..16, then [`hsum_f32_8`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn hsum_pairs(acc: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(acc);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
    hsum_f32_8(_mm256_add_ps(lo, hi))
}

/// The 64 nibbles of two blocks' 16 packed bytes each, in value order: block `a`'s low
/// nibbles, its high nibbles, then block `b`'s.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn nibbles2(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    let q = _mm256_inserti128_si256::<1>(
        _mm256_castsi128_si256(_mm_loadu_si128(a.as_ptr() as *const __m128i)),
        _mm_loadu_si128(b.as_ptr() as *const __m128i),
    );
    let z = _mm512_castsi256_si512(q);
    // 128-bit lanes [a, a, b, b], the second and fourth shifted down by a nibble.
    let z = _mm512_shuffle_i64x2::<0x50>(z, z);
    let z = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
    _mm512_and_si512(z, _mm512_set1_epi8(0x0F))
}

/// Q4_0: the nibbles are `q + 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unsigned_q4_0(a: &BlockQ4_0, b: &BlockQ4_0) -> __m512i {
    nibbles2(&a.qs, &b.qs)
}

/// Q5_0: nibble plus 16 where the fifth bit is set is `q + 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unsigned_q5_0(a: &BlockQ5_0, b: &BlockQ5_0) -> __m512i {
    let z = nibbles2(&a.qs, &b.qs);
    let bits = u32::from_le_bytes(a.qh) as u64 | (u32::from_le_bytes(b.qh) as u64) << 32;
    _mm512_mask_add_epi8(z, bits, z, _mm512_set1_epi8(16))
}

/// Q8_0: `q + 128` is `q` with its top bit flipped.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unsigned_q8_0(a: &BlockQ8_0, b: &BlockQ8_0) -> __m512i {
    let z = _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_loadu_si256(a.qs.as_ptr() as *const __m256i)),
        _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i),
    );
    _mm512_xor_si512(z, _mm512_set1_epi8(0x80u8 as i8))
}

/// Q4_1: the nibbles (unsigned, no offset).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unsigned_q4_1(a: &BlockQ4_1, b: &BlockQ4_1) -> __m512i {
    nibbles2(&a.qs, &b.qs)
}

/// Q5_1: the nibbles plus 16 where the fifth bit is set (unsigned, no offset).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unsigned_q5_1(a: &BlockQ5_1, b: &BlockQ5_1) -> __m512i {
    let z = nibbles2(&a.qs, &b.qs);
    let bits = u32::from_le_bytes(a.qh) as u64 | (u32::from_le_bytes(b.qh) as u64) << 32;
    _mm512_mask_add_epi8(z, bits, z, _mm512_set1_epi8(16))
}

/// IQ4_NL: the grid value of each index plus 128 (`vpshufb` of the nibbles in a table
/// repeated in every 128-bit lane).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn unsigned_iq4_nl(a: &BlockIQ4NL, b: &BlockIQ4NL) -> __m512i {
    let kv = &quantize::lowbit::KVALUES_IQ4NL;
    let t: [u8; 16] = std::array::from_fn(|i| (kv[i] as u8) ^ 0x80);
    let table = _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr() as *const __m128i));
    _mm512_shuffle_epi8(table, nibbles2(&a.qs, &b.qs))
}

/// An activation pair's group sums times `−c = −(1 << shift)`: the start of each group's dot.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn start(a: &ActPair, shift: u32) -> __m512i {
    let s = _mm512_cvtepi16_epi32(_mm256_load_si256(a.neg_sums.as_ptr() as *const __m256i));
    _mm512_sll_epi32(s, _mm_cvtsi32_si128(shift as i32))
}

/// An activation pair's scales, spread over their lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn act_scales(a: &ActPair) -> __m512 {
    spread2(_mm_castpd_ps(_mm_load_sd(a.d.as_ptr() as *const f64)))
}

/// `acc + (dx · dy) · Σ (u − c)·y` per lane, for one block pair.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn step(
    acc: __m512,
    start: __m512i,
    u: __m512i,
    a: &ActPair,
    dx: __m512,
    dy: __m512,
) -> __m512 {
    let y = _mm512_load_si512(a.qs.as_ptr() as *const __m512i);
    let l = _mm512_dpbusd_epi32(start, u, y);
    _mm512_fmadd_ps(_mm512_mul_ps(dx, dy), _mm512_cvtepi32_ps(l), acc)
}

macro_rules! decode {
    ($(#[$doc:meta])* $name:ident, $rows:ident, $B:ty, $unsigned:ident) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $name(x: &[$B], y: &[ActPair]) -> f32 {
            $rows::<1>([x], y)[0]
        }

        /// `R` rows · one token, each row exactly as one row alone: the activation pair is
        /// loaded once for all rows, and the rows' chains run side by side.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $rows<const R: usize>(x: [&[$B]; R], y: &[ActPair]) -> [f32; R] {
            let nb = x.first().map_or(0, |r| r.len());
            assert!(x.iter().all(|r| r.len() == nb), "rows of one length");
            assert_eq!(y.len(), super::packed::pairs(nb), "activation pairs");
            let pad: $B = bytemuck::Zeroable::zeroed();
            let shift = <$B as PackedWeight>::SHIFT;
            let mut acc = [_mm512_setzero_ps(); R];
            for (p, a) in y.iter().enumerate() {
                let s = start(a, shift);
                let dy = act_scales(a);
                let full = 2 * p + 1 < nb;
                for r in 0..R {
                    let b0 = x[r].get_unchecked(2 * p);
                    let b1 = if full { x[r].get_unchecked(2 * p + 1) } else { &pad };
                    let u = $unsigned(b0, b1);
                    acc[r] = step(acc[r], s, u, a, scales2(b0.d, b1.d), dy);
                }
            }
            let mut out = acc.map(|a| hsum_pairs(a));
            if <$B as PackedWeight>::AFFINE {
                for r in 0..R {
                    out[r] += affine_term(x[r], y);
                }
            }
            out
        }
    };
}

macro_rules! unpack {
    ($(#[$doc:meta])* $name:ident, $B:ty, $unsigned:ident) => {
        $(#[$doc])*
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $name(x: &[$B], out: &mut [WeightPair]) {
            assert_eq!(out.len(), super::packed::pairs(x.len()), "weight pairs");
            let pad: $B = bytemuck::Zeroable::zeroed();
            for (p, o) in out.iter_mut().enumerate() {
                let b0 = &x[2 * p];
                let b1 = x.get(2 * p + 1).unwrap_or(&pad);
                _mm512_store_si512(o.u.as_mut_ptr() as *mut __m512i, $unsigned(b0, b1));
                _mm512_store_ps(o.d.as_mut_ptr(), scales2(b0.d, b1.d));
            }
        }
    };
}

unpack!(/// [`super::packed::unpack_weights`] for Q4_0.
    unpack_q4_0, BlockQ4_0, unsigned_q4_0);
unpack!(/// [`super::packed::unpack_weights`] for Q5_0.
    unpack_q5_0, BlockQ5_0, unsigned_q5_0);
unpack!(/// [`super::packed::unpack_weights`] for Q8_0.
    unpack_q8_0, BlockQ8_0, unsigned_q8_0);

decode!(/// Q4_0 row · one token.
    dot_q4_0, dot_q4_0_rows, BlockQ4_0, unsigned_q4_0);
decode!(/// Q5_0 row · one token.
    dot_q5_0, dot_q5_0_rows, BlockQ5_0, unsigned_q5_0);
decode!(/// Q8_0 row · one token.
    dot_q8_0, dot_q8_0_rows, BlockQ8_0, unsigned_q8_0);
unpack!(/// [`super::packed::unpack_weights`] for IQ4_NL.
    unpack_iq4_nl, BlockIQ4NL, unsigned_iq4_nl);
decode!(/// IQ4_NL row · one token.
    dot_iq4_nl, dot_iq4_nl_rows, BlockIQ4NL, unsigned_iq4_nl);
unpack!(/// [`super::packed::unpack_weights`] for Q4_1.
    unpack_q4_1, BlockQ4_1, unsigned_q4_1);
decode!(/// Q4_1 row · one token (Q8_1 activation pairs).
    dot_q4_1, dot_q4_1_rows, BlockQ4_1, unsigned_q4_1);
unpack!(/// [`super::packed::unpack_weights`] for Q5_1.
    unpack_q5_1, BlockQ5_1, unsigned_q5_1);
decode!(/// Q5_1 row · one token (Q8_1 activation pairs).
    dot_q5_1, dot_q5_1_rows, BlockQ5_1, unsigned_q5_1);

/// `R` unpacked weight rows × `T` tokens: `out[r][t] = w[r] · y[t]`, with each token's
/// [`PairMeta`]s (made for this weight type's offset) beside its pairs. The lanes' start and
/// scales come from memory, so the 4 × 4 tile's sixteen accumulators, one weight pair and its
/// scales are all the registers the loop holds.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm<const R: usize, const T: usize>(
    w: [&[WeightPair]; R],
    y: [&[ActPair]; T],
    m: [&[PairMeta]; T],
) -> [[f32; T]; R] {
    let np = w.first().map_or(0, |r| r.len());
    assert!(
        w.iter().all(|r| r.len() == np)
            && y.iter().all(|a| a.len() == np)
            && m.iter().all(|a| a.len() == np)
    );
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    for p in 0..np {
        for r in 0..R {
            let wp = w[r].get_unchecked(p);
            let u = _mm512_load_si512(wp.u.as_ptr() as *const __m512i);
            let dx = _mm512_load_ps(wp.d.as_ptr());
            for t in 0..T {
                let mt = m[t].get_unchecked(p);
                let s = _mm512_load_si512(mt.start.as_ptr() as *const __m512i);
                let yv = _mm512_load_si512(y[t].get_unchecked(p).qs.as_ptr() as *const __m512i);
                let l = _mm512_dpbusd_epi32(s, u, yv);
                let dy = _mm512_load_ps(mt.dy.as_ptr());
                acc[r][t] =
                    _mm512_fmadd_ps(_mm512_mul_ps(dx, dy), _mm512_cvtepi32_ps(l), acc[r][t]);
            }
        }
    }
    acc.map(|row| row.map(|a| hsum_pairs(a)))
}

/// The mins' term of the affine types (Q4_1, Q5_1) for 4 rows × 4 tokens, lane `4k + j` for
/// row `k` and token `j`: `Σ_b m[b][4k + j] · s[b][4k + j]` over the blocks in order, each
/// product rounded and then added (no fused multiply-add) — per lane exactly the sum
/// [`super::packed::affine_term`] and the AVX2 kernels compute. `m[b]` holds each row's min of
/// block `b` (repeated over its four lanes), `s[b]` each token's `s`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn affine_tile(m: &[[f32; 16]], s: &[[f32; 16]]) -> [f32; 16] {
    assert_eq!(m.len(), s.len(), "blocks");
    let mut acc = _mm512_setzero_ps();
    for (mb, sb) in m.iter().zip(s) {
        let p = _mm512_mul_ps(_mm512_loadu_ps(mb.as_ptr()), _mm512_loadu_ps(sb.as_ptr()));
        acc = _mm512_add_ps(acc, p);
    }
    let mut out = [0f32; 16];
    _mm512_storeu_ps(out.as_mut_ptr(), acc);
    out
}

/// A 4-row × 6-token tile of f32 dot products in sixteen-lane registers: `out[r][t] =
/// w[r] · x[t]` for rows and activations of `n` values. Lanes 0..8 carry chain A of
/// [`super::avx2::vec_dot_f32`] (eight-value groups 0, 2, 4, …) and lanes 8..16 chain B (groups
/// 1, 3, 5, …); a last unpaired group joins chain A through a lane mask. The final sum is that
/// kernel's, so every entry has the bits of the single dot at either x86 level, with twice the
/// lanes per FMA of the AVX2 tile.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_tile_f32<const T: usize>(
    w: [&[f32]; 4],
    x: [&[f32]; T],
    n: usize,
) -> [[f32; T]; 4] {
    assert!(w.iter().all(|r| r.len() >= n) && x.iter().all(|r| r.len() >= n));
    let mut acc = [[_mm512_setzero_ps(); T]; 4];
    let mut i = 0;
    while i + 16 <= n {
        let mut xv = [_mm512_setzero_ps(); T];
        for t in 0..T {
            xv[t] = _mm512_loadu_ps(x[t].as_ptr().add(i));
        }
        for r in 0..4 {
            let wv = _mm512_loadu_ps(w[r].as_ptr().add(i));
            for t in 0..T {
                acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
        i += 16;
    }
    if i + 8 <= n {
        // Lanes 8..16 keep their sums exactly (a masked FMA leaves them untouched).
        let low: __mmask16 = 0x00FF;
        for r in 0..4 {
            let wv = _mm512_maskz_loadu_ps(low, w[r].as_ptr().add(i));
            for t in 0..T {
                let xv = _mm512_maskz_loadu_ps(low, x[t].as_ptr().add(i));
                acc[r][t] = _mm512_mask3_fmadd_ps(wv, xv, acc[r][t], low);
            }
        }
        i += 8;
    }
    // `map` rather than indexed loops, so the accumulators stay in registers above.
    let mut out = acc.map(|row| row.map(|a| hsum_pairs(a)));
    for (r, row) in out.iter_mut().enumerate() {
        for (t, s) in row.iter_mut().enumerate() {
            for j in i..n {
                *s += w[r][j] * x[t][j];
            }
        }
    }
    out
}

/// [`super::packed::pack_activations`] in sixteen lanes, and, unless `meta` is empty, each
/// pair's [`PairMeta`] for weights offset by `1 << shift` (the same numbers as
/// [`PairMeta::new`]): a group's sum of four values is one `vpdpbusd` of the values with ones.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn pack_q8_0(y: &[BlockQ8_0], out: &mut [ActPair], meta: &mut [PairMeta], shift: u32) {
    assert_eq!(out.len(), super::packed::pairs(y.len()), "activation pairs");
    assert!(meta.is_empty() || meta.len() == out.len(), "pair metas");
    let pad: BlockQ8_0 = bytemuck::Zeroable::zeroed();
    let ones = _mm512_set1_epi8(1);
    let sh = _mm_cvtsi32_si128(shift as i32);
    for (p, o) in out.iter_mut().enumerate() {
        let b0 = &y[2 * p];
        let b1 = y.get(2 * p + 1).unwrap_or(&pad);
        let lo = _mm256_loadu_si256(b0.qs.as_ptr() as *const __m256i);
        let hi = _mm256_loadu_si256(b1.qs.as_ptr() as *const __m256i);
        let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        let neg = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, v),
        );
        *o = bytemuck::Zeroable::zeroed();
        _mm512_store_si512(o.qs.as_mut_ptr() as *mut __m512i, v);
        _mm256_store_si256(
            o.neg_sums.as_mut_ptr() as *mut __m256i,
            _mm512_cvtepi32_epi16(neg),
        );
        // Both scales widened at once (not `half`'s out-of-line call per scale).
        let d = widen2(b0.d, b1.d);
        _mm_store_sd(o.d.as_mut_ptr() as *mut f64, _mm_castps_pd(d));
        if let Some(m) = meta.get_mut(p) {
            _mm512_store_si512(
                m.start.as_mut_ptr() as *mut __m512i,
                _mm512_sll_epi32(neg, sh),
            );
            _mm512_store_ps(m.dy.as_mut_ptr(), spread2(d));
        }
    }
}

/// The weight types with these kernels.
pub trait ZmmWeight: PackedWeight {
    /// The activation blocks (Q8_0, or Q8_1 for the affine types).
    type Act: crate::quant::Activation;
    /// Rearranges one token's activation row into pairs and, unless `meta` is empty (decode),
    /// their [`PairMeta`]s for this type's offset.
    unsafe fn pack(y: &[Self::Act], out: &mut [ActPair], meta: &mut [PairMeta]);
    /// This type's row · one token.
    unsafe fn dot(x: &[Self], y: &[ActPair]) -> f32;
    /// Four rows · one token, each as [`ZmmWeight::dot`] gives it.
    unsafe fn dot4(x: [&[Self]; 4], y: &[ActPair]) -> [f32; 4];
    /// [`super::packed::unpack_weights`], sixteen lanes at a time.
    unsafe fn unpack(x: &[Self], out: &mut [WeightPair]);
}

impl ZmmWeight for BlockQ4_0 {
    type Act = BlockQ8_0;
    unsafe fn pack(y: &[BlockQ8_0], out: &mut [ActPair], meta: &mut [PairMeta]) {
        pack_q8_0(y, out, meta, Self::SHIFT)
    }
    unsafe fn dot(x: &[Self], y: &[ActPair]) -> f32 {
        dot_q4_0(x, y)
    }
    unsafe fn dot4(x: [&[Self]; 4], y: &[ActPair]) -> [f32; 4] {
        dot_q4_0_rows::<4>(x, y)
    }
    unsafe fn unpack(x: &[Self], out: &mut [WeightPair]) {
        unpack_q4_0(x, out)
    }
}
impl ZmmWeight for BlockQ5_0 {
    type Act = BlockQ8_0;
    unsafe fn pack(y: &[BlockQ8_0], out: &mut [ActPair], meta: &mut [PairMeta]) {
        pack_q8_0(y, out, meta, Self::SHIFT)
    }
    unsafe fn dot(x: &[Self], y: &[ActPair]) -> f32 {
        dot_q5_0(x, y)
    }
    unsafe fn dot4(x: [&[Self]; 4], y: &[ActPair]) -> [f32; 4] {
        dot_q5_0_rows::<4>(x, y)
    }
    unsafe fn unpack(x: &[Self], out: &mut [WeightPair]) {
        unpack_q5_0(x, out)
    }
}
impl ZmmWeight for BlockQ8_0 {
    type Act = BlockQ8_0;
    unsafe fn pack(y: &[BlockQ8_0], out: &mut [ActPair], meta: &mut [PairMeta]) {
        pack_q8_0(y, out, meta, Self::SHIFT)
    }
    unsafe fn dot(x: &[Self], y: &[ActPair]) -> f32 {
        dot_q8_0(x, y)
    }
    unsafe fn dot4(x: [&[Self]; 4], y: &[ActPair]) -> [f32; 4] {
        dot_q8_0_rows::<4>(x, y)
    }
    unsafe fn unpack(x: &[Self], out: &mut [WeightPair]) {
        unpack_q8_0(x, out)
    }
}
impl ZmmWeight for BlockIQ4NL {
    type Act = BlockQ8_0;
    unsafe fn pack(y: &[BlockQ8_0], out: &mut [ActPair], meta: &mut [PairMeta]) {
        pack_q8_0(y, out, meta, Self::SHIFT)
    }
    unsafe fn dot(x: &[Self], y: &[ActPair]) -> f32 {
        dot_iq4_nl(x, y)
    }
    unsafe fn dot4(x: [&[Self]; 4], y: &[ActPair]) -> [f32; 4] {
        dot_iq4_nl_rows::<4>(x, y)
    }
    unsafe fn unpack(x: &[Self], out: &mut [WeightPair]) {
        unpack_iq4_nl(x, out)
    }
}
impl ZmmWeight for BlockQ4_1 {
    type Act = BlockQ8_1;
    unsafe fn pack(y: &[BlockQ8_1], out: &mut [ActPair], meta: &mut [PairMeta]) {
        super::packed::pack_activations_q8_1(y, out);
        PairMeta::fill(out, meta, Self::SHIFT);
    }
    unsafe fn dot(x: &[Self], y: &[ActPair]) -> f32 {
        dot_q4_1(x, y)
    }
    unsafe fn dot4(x: [&[Self]; 4], y: &[ActPair]) -> [f32; 4] {
        dot_q4_1_rows::<4>(x, y)
    }
    unsafe fn unpack(x: &[Self], out: &mut [WeightPair]) {
        unpack_q4_1(x, out)
    }
}
impl ZmmWeight for BlockQ5_1 {
    type Act = BlockQ8_1;
    unsafe fn pack(y: &[BlockQ8_1], out: &mut [ActPair], meta: &mut [PairMeta]) {
        super::packed::pack_activations_q8_1(y, out);
        PairMeta::fill(out, meta, Self::SHIFT);
    }
    unsafe fn dot(x: &[Self], y: &[ActPair]) -> f32 {
        dot_q5_1(x, y)
    }
    unsafe fn dot4(x: [&[Self]; 4], y: &[ActPair]) -> [f32; 4] {
        dot_q5_1_rows::<4>(x, y)
    }
    unsafe fn unpack(x: &[Self], out: &mut [WeightPair]) {
        unpack_q5_1(x, out)
    }
}
