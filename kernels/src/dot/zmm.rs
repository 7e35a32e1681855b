//! Sixteen-lane AVX-512 kernels: Q4_0, Q5_0, Q8_0 and IQ4_NL weights against Q8_0 activations,
//! Q4_1 and Q5_1 against Q8_1, on the layouts of [`super::packed`], and the f32 prefill tile.
//!
//! The legacy types' dot is [`super::scalar::block_step`]'s chain (per block the exact integer
//! sum, then one fused multiply-add of the scale product), which these kernels run with sixteen
//! weight rows in the sixteen lanes, so every output has the scalar kernel's bits:
//!
//! - [`gemm`]: a [`WeightTile`] run of sixteen rows × `T` tokens — the prefill path. A block is
//!   eight `vpdpbusd` per token (four activation bytes broadcast against four bytes of each
//!   row), one conversion, one multiply and one FMA for sixteen outputs. (The layout follows
//!   llama.cpp's repacked GEMMs, `ggml-cpu/repack.cpp`: interleaved rows, the float work once
//!   per block.)
//! - [`dot_rows16`]: sixteen rows straight from the file's blocks · one token — the decode
//!   path: per row and block pair one `vpdpbusd` into sixteen group sums, a transpose-and-add
//!   tree turns sixteen rows' group sums into two registers of block sums (lane = row), and
//!   the rows' scales come in by one gather.
//! - [`dot_tile_f32`]: 4 f32 rows × `T` tokens, chain A of the AVX2 dot in lanes 0..8 and
//!   chain B in lanes 8..16 (see [`super::avx2::vec_dot_f32`]).
//!
//! Every function is `unsafe`: the caller must have checked for [`crate::simd::SimdLevel::Avx512`].

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use half::f16;
use quantize::blocks::{
    BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};

use super::avx512::hsum_f32_8;
use super::packed::{ActBlock, PackedWeight, WeightTile, TILE_ROWS};

/// The sum of the sixteen lanes as the AVX2 kernels sum their two accumulators: lanes 0..8
/// plus lanes 8..16, then [`hsum_f32_8`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn hsum_pairs(acc: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(acc);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
    hsum_f32_8(_mm256_add_ps(lo, hi))
}

/// f16 → f32 with F16C, inlined.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn h2f(h: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
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

/// The block sums of sixteen rows from their group sums: `z[r]` holds row `r`'s sixteen
/// four-value sums of a block pair (lanes 0..8 the first block); the result is the first
/// block's sums and the second's, lane `r` = row `r` (integers, exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_sums16(z: [__m512i; 16]) -> (__m512i, __m512i) {
    // Each 128-bit lane of a row holds four groups. Pairs of rows: per 128-bit lane
    // [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
    let t: [__m512i; 8] = std::array::from_fn(|i| {
        let (a, b) = (z[2 * i], z[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    });
    // Quads: per 128-bit lane the four rows' sums of that lane's four groups.
    let q: [__m512i; 4] = std::array::from_fn(|i| {
        let (a, b) = (t[2 * i], t[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    // Octets: 128-bit lanes [block 0 rows 0..4, block 1 rows 0..4, block 0 rows 4..8, block 1
    // rows 4..8] (the two 128-bit lanes of a block added).
    let o: [__m512i; 2] = std::array::from_fn(|i| {
        let (a, b) = (q[2 * i], q[2 * i + 1]);
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x88>(a, b),
            _mm512_shuffle_i32x4::<0xDD>(a, b),
        )
    });
    (
        _mm512_shuffle_i32x4::<0x88>(o[0], o[1]),
        _mm512_shuffle_i32x4::<0xDD>(o[0], o[1]),
    )
}

/// Sixteen f16 → f32 from the low halves of sixteen dwords (`HIGH`: the high halves).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn halves_f32<const HIGH: bool>(g: __m512i) -> __m512 {
    let g = if HIGH { _mm512_srli_epi32::<16>(g) } else { g };
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g))
}

/// Sixteen rows (`x`: rows of `nb` blocks, one after another) · one token: `out[r]` is row
/// `r`'s dot, [`super::scalar::block_step`]'s chain (and [`super::scalar::affine_step`]'s for
/// the affine types) with the rows in the lanes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
///
/// `ahead` (rows read next, or empty) is prefetched into L2 a slice per block pair: sixteen
/// streams are more than the hardware prefetcher follows, and one burst of prefetches for a
/// whole group overflows the queue (measured: 30 MB of Q8_0 rows at 14 GMAC/s with a burst
/// per group, 21 without one as with this spread).
pub unsafe fn dot_rows16<W: ZmmWeight>(
    x: &[W],
    nb: usize,
    y: &[ActBlock],
    ahead: &[W],
) -> [f32; 16] {
    assert!(
        x.len() == TILE_ROWS * nb && y.len() == nb,
        "sixteen rows of {nb} blocks"
    );
    let pad: W = bytemuck::Zeroable::zeroed();
    let stride = (nb * std::mem::size_of::<W>()) as i32;
    assert!(
        (stride as i64) * 16 < i32::MAX as i64,
        "row too long for a gather"
    );
    let offsets = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(stride),
    );
    let zero = _mm512_setzero_si512();
    let mut acc = _mm512_setzero_ps();
    let np = nb.div_ceil(2);
    let lines = std::mem::size_of_val(ahead).div_ceil(64);
    let per_pair = lines.div_ceil(np.max(1));
    for p in 0..np {
        for l in p * per_pair..((p + 1) * per_pair).min(lines) {
            let a = (ahead.as_ptr() as *const i8).add(64 * l);
            _mm_prefetch::<_MM_HINT_T0>(a);
        }
        let (b0, b1) = (2 * p, 2 * p + 1);
        let full = b1 < nb;
        let y0 = _mm256_loadu_si256(y.get_unchecked(b0).qs.as_ptr() as *const __m256i);
        let y1 = if full {
            _mm256_loadu_si256(y.get_unchecked(b1).qs.as_ptr() as *const __m256i)
        } else {
            _mm256_setzero_si256()
        };
        let yv = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y0), y1);
        let z: [__m512i; 16] = std::array::from_fn(|r| {
            let row = x.get_unchecked(r * nb..(r + 1) * nb);
            let second = if full { row.get_unchecked(b1) } else { &pad };
            _mm512_dpbusd_epi32(zero, W::unsigned2(row.get_unchecked(b0), second), yv)
        });
        let (s0, s1) = block_sums16(z);
        for (b, sums) in [(b0, s0), (b1, s1)] {
            if b >= nb {
                break;
            }
            let yb = y.get_unchecked(b);
            // Each row's block starts with its f16 scale (and the affine types' min after it).
            let g = _mm512_i32gather_epi32::<1>(offsets, x.as_ptr().add(b) as *const i32);
            let isum = _mm512_add_epi32(sums, _mm512_set1_epi32(yb.start));
            let d = _mm512_mul_ps(halves_f32::<false>(g), _mm512_set1_ps(yb.d));
            acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum), acc);
            if W::AFFINE {
                acc = _mm512_fmadd_ps(halves_f32::<true>(g), _mm512_set1_ps(yb.s), acc);
            }
        }
    }
    let mut out = [0f32; 16];
    _mm512_storeu_ps(out.as_mut_ptr(), acc);
    out
}

/// Up to sixteen rows of `nb` blocks (`x`, one after another) unpacked into `nb`
/// [`WeightTile`]s, as [`super::packed::unpack_tiles`] does.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn unpack_tiles<W: ZmmWeight>(x: &[W], nb: usize, out: &mut [WeightTile]) {
    let rows = x.len() / nb.max(1);
    assert!(
        rows <= TILE_ROWS && x.len() == rows * nb && out.len() == nb,
        "weight tiles"
    );
    let pad: W = bytemuck::Zeroable::zeroed();
    for o in out.iter_mut() {
        *o = bytemuck::Zeroable::zeroed();
    }
    let mut buf = [0u32; 16];
    for r in 0..rows {
        let row = &x[r * nb..(r + 1) * nb];
        for p in 0..nb.div_ceil(2) {
            let (b0, b1) = (2 * p, 2 * p + 1);
            let second = row.get(b1).unwrap_or(&pad);
            _mm512_storeu_si512(
                buf.as_mut_ptr() as *mut __m512i,
                W::unsigned2(&row[b0], second),
            );
            for (h, b) in [b0, b1].into_iter().enumerate() {
                let Some(t) = out.get_mut(b) else { break };
                for k in 0..8 {
                    t.u[k][r] = buf[8 * h + k];
                }
                let blk = &row[b];
                t.d[r] = h2f(blk.scale_f16());
                if W::AFFINE {
                    t.m[r] = h2f(blk.min_f16());
                }
            }
        }
    }
}

/// Sixteen rows (their [`WeightTile`]s, one per block) × `T` tokens: `out[t][r]` is row `r`'s
/// dot with token `t` — per block eight `vpdpbusd` per token from the start `−c·Σy`, then
/// [`super::scalar::block_step`] (and the affine types' mins' term) with the rows in the lanes.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm<const T: usize, const AFFINE: bool>(
    w: &[WeightTile],
    y: [&[ActBlock]; T],
) -> [[f32; 16]; T] {
    let nb = w.len();
    assert!(y.iter().all(|a| a.len() == nb), "activation blocks");
    let mut acc = [_mm512_setzero_ps(); T];
    for (b, tile) in w.iter().enumerate() {
        let mut isum: [__m512i; T] =
            std::array::from_fn(|t| _mm512_set1_epi32(y[t].get_unchecked(b).start));
        for k in 0..8 {
            let wk = _mm512_load_si512(tile.u[k].as_ptr() as *const __m512i);
            for t in 0..T {
                let q = (y[t].get_unchecked(b).qs.as_ptr() as *const i32)
                    .add(k)
                    .read_unaligned();
                isum[t] = _mm512_dpbusd_epi32(isum[t], wk, _mm512_set1_epi32(q));
            }
        }
        let dx = _mm512_load_ps(tile.d.as_ptr());
        let m = _mm512_load_ps(tile.m.as_ptr());
        for t in 0..T {
            let yb = y[t].get_unchecked(b);
            let d = _mm512_mul_ps(dx, _mm512_set1_ps(yb.d));
            acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum[t]), acc[t]);
            if AFFINE {
                acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(yb.s), acc[t]);
            }
        }
    }
    let mut out = [[0f32; 16]; T];
    for t in 0..T {
        _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]);
    }
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

/// [`super::packed::pack_activations`] with the scales widened by F16C (not `half`'s
/// out-of-line call per block).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn pack_q8_0(y: &[BlockQ8_0], shift: u32, out: &mut [ActBlock]) {
    assert_eq!(out.len(), y.len(), "activation blocks");
    for (o, b) in out.iter_mut().zip(y) {
        let sum: i32 = b.qs.iter().map(|&v| v as i32).sum();
        *o = bytemuck::Zeroable::zeroed();
        o.qs = b.qs;
        o.start = -(sum << shift);
        o.d = h2f(b.d);
    }
}

/// [`super::packed::pack_activations_q8_1`], in [`pack_q8_0`]'s shape (Q8_1's unsigned
/// weights have no offset, so `shift` is unused).
unsafe fn pack_q8_1(y: &[BlockQ8_1], _shift: u32, out: &mut [ActBlock]) {
    super::packed::pack_activations_q8_1(y, out)
}

/// The weight types with these kernels.
pub trait ZmmWeight: PackedWeight {
    /// The activation blocks (Q8_0, or Q8_1 for the affine types).
    type Act: crate::quant::Activation;
    /// Rearranges one token's activation row for this type's offset.
    unsafe fn pack(y: &[Self::Act], out: &mut [ActBlock]);
    /// This type's row · one token on the file's blocks (the AVX-512 level's single dot): the
    /// rows [`dot_rows16`] leaves over.
    unsafe fn dot(x: &[Self], y: &[Self::Act]) -> f32;
    /// Two blocks' values as unsigned bytes `q + c`, in value order.
    unsafe fn unsigned2(a: &Self, b: &Self) -> __m512i;
}

macro_rules! zmm_weight {
    ($B:ty, $A:ty, $pack:ident, $dot:ident, $unsigned:ident) => {
        impl ZmmWeight for $B {
            type Act = $A;
            unsafe fn pack(y: &[$A], out: &mut [ActBlock]) {
                $pack(y, Self::SHIFT, out)
            }
            unsafe fn dot(x: &[Self], y: &[$A]) -> f32 {
                super::avx512::$dot(x, y)
            }
            unsafe fn unsigned2(a: &Self, b: &Self) -> __m512i {
                $unsigned(a, b)
            }
        }
    };
}

zmm_weight!(
    BlockQ4_0,
    BlockQ8_0,
    pack_q8_0,
    vec_dot_q4_0_q8_0,
    unsigned_q4_0
);
zmm_weight!(
    BlockQ5_0,
    BlockQ8_0,
    pack_q8_0,
    vec_dot_q5_0_q8_0,
    unsigned_q5_0
);
zmm_weight!(
    BlockQ8_0,
    BlockQ8_0,
    pack_q8_0,
    vec_dot_q8_0_q8_0,
    unsigned_q8_0
);
zmm_weight!(
    BlockIQ4NL,
    BlockQ8_0,
    pack_q8_0,
    vec_dot_iq4_nl_q8_0,
    unsigned_iq4_nl
);
zmm_weight!(
    BlockQ4_1,
    BlockQ8_1,
    pack_q8_1,
    vec_dot_q4_1_q8_1,
    unsigned_q4_1
);
zmm_weight!(
    BlockQ5_1,
    BlockQ8_1,
    pack_q8_1,
    vec_dot_q5_1_q8_1,
    unsigned_q5_1
);
