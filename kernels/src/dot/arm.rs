//! The aarch64 dot products, written once and compiled three times ([`super::neon`],
//! [`super::dotprod`], [`super::i8mm`]) with different target features: the same functions as
//! [`super::scalar`], and **the same bits as the x86 kernels** ([`super::x86`]), so a model
//! gives one set of logits, one imatrix and one set of verdicts on every machine kiln runs on.
//!
//! The x86 kernels sum byte products into eight 32-bit lanes, lane `L` holding the bytes
//! `4L .. 4L+4` of a 32-value group (`vpmaddubsw` + `vpmaddwd`, or `vpdpbusd`), then convert and
//! add each block's lanes into eight float lanes with one fused multiply-add. Here the eight
//! lanes are two `float32x4_t` (bytes 0..16 → lanes 0..4, bytes 16..32 → lanes 4..8) and every
//! step is the same IEEE operation in the same order:
//!
//! * the 4-byte group sums are `sdot` at the dotprod level (ggml's `ggml_vdotq_s32` on
//!   `__ARM_FEATURE_DOTPROD`), and `vmull_s8` + two pairwise widenings at the NEON level — not
//!   ggml's plain-NEON `ggml_vdotq_s32`, whose lanes mix bytes 8 apart (`vpaddlq` of the low
//!   and high products added lane by lane), which would change the float sums;
//! * `vfmaq_f32(acc, d, q)` is `_mm256_fmadd_ps(d, q, acc)`, `vcvtq_f32_s32` is
//!   `_mm256_cvtepi32_ps` (both round to nearest), `hsum_f32_8` folds as the x86 one does;
//! * the exponential, GELU and attention kernels follow [`super::scalar`]'s steps, which the
//!   x86 kernels follow too.
//!
//! The integer sums are exact (every product of these formats fits its lane), so the choice
//! of instruction cannot change a lane's value, only the partition into lanes could, and that
//! is kept. The legacy types (Q4_0 … Q8_0, IQ4_NL) need no lanes kept: each block is reduced
//! to its exact integer sum and the scalar kernel's chain ([`super::scalar::block_step`]) runs
//! with tokens (or rows) in the lanes, as on x86. At the i8mm level their two-row ×
//! four-token kernel takes the block sums from `smmla` (ggml's `ggml_vec_dot_q8_0_q8_0` with
//! `__ARM_FEATURE_MATMUL_INT8`: two rows × two tokens of eight bytes per instruction, four
//! instructions per block).
//!
//! `vdotq_s32` and `vmmlaq_s32` are not yet stable in Rust (`stdarch_neon_dotprod`,
//! `stdarch_neon_i8mm`), so `sdot` and `smmla` are written as inline assembly, as are the
//! f16 → f32 conversions (`fcvt`, `fcvtl`; the `float16x4_t` type is unstable too).

use std::arch::aarch64::*;
use std::arch::asm;

/// `acc + (Σ of a·b over each group of four bytes)`, with NEON only: `vmull_s8` gives the
/// sixteen products as i16, two pairwise widening adds give the four-byte groups.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot4_neon(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)))
}

/// `acc + (Σ of a·b over each group of four bytes)`: one `sdot`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn dot4_sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: sdot reads two vector registers and updates a third; the level checked DotProd.
    asm!(
        "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
        inout(vreg) acc,
        in(vreg) a,
        in(vreg) b,
        options(pure, nomem, nostack)
    );
    acc
}

/// `acc + A·Bᵀ` for A, B two rows of eight signed bytes each (`a` = rows 0, 1; `b` = rows
/// 0, 1): lanes `[A0·B0, A0·B1, A1·B0, A1·B1]`. One `smmla`.
#[inline]
#[target_feature(enable = "neon,dotprod,i8mm")]
pub(crate) unsafe fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: smmla reads two vector registers and updates a third; the level checked I8MM.
    asm!(
        "smmla {0:v}.4s, {1:v}.16b, {2:v}.16b",
        inout(vreg) acc,
        in(vreg) a,
        in(vreg) b,
        options(pure, nomem, nostack)
    );
    acc
}

/// The kernels, for the target features `$feat`, with `$dot4` summing four-byte groups and
/// `$two` (`plain` or `mmla`) choosing the two-row legacy kernels.
macro_rules! arm_kernels {
    ($feat:literal, $dot4:path, $two:ident) => {
        use std::arch::aarch64::*;
        use std::arch::asm;

        use half::f16;
        use quantize::blocks::*;

        use super::scalar::{k4_min_term, k4_scales_mins, q2k_min_term};
        use super::{ActSum, LegacyBlock};

        /// Eight float lanes, x86's one `__m256`: lanes 0..4 in `.0`, 4..8 in `.1`.
        #[derive(Clone, Copy)]
        struct F8(float32x4_t, float32x4_t);

        impl F8 {
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn zero() -> F8 {
                F8(vdupq_n_f32(0.0), vdupq_n_f32(0.0))
            }
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn load(p: *const f32) -> F8 {
                F8(vld1q_f32(p), vld1q_f32(p.add(4)))
            }
            /// `self + a·b`, fused, lane by lane.
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn fma(self, a: F8, b: F8) -> F8 {
                F8(vfmaq_f32(self.0, a.0, b.0), vfmaq_f32(self.1, a.1, b.1))
            }
            /// `self + d·q`, fused (`d` the same in every lane).
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn fma_n(self, d: f32, q: F8) -> F8 {
                let d = vdupq_n_f32(d);
                F8(vfmaq_f32(self.0, d, q.0), vfmaq_f32(self.1, d, q.1))
            }
            #[inline]
            #[target_feature(enable = $feat)]
            unsafe fn add(self, o: F8) -> F8 {
                F8(vaddq_f32(self.0, o.0), vaddq_f32(self.1, o.1))
            }
        }

        /// Two vectors of sixteen bytes: a 32-value group.
        type B32 = (int8x16_t, int8x16_t);

        /// f16 → f32 (`fcvt`, exact).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn h2f(h: f16) -> f32 {
            let r: f32;
            asm!("fcvt {0:s}, {1:h}", out(vreg) r, in(vreg) h.to_bits() as i16,
                options(pure, nomem, nostack));
            r
        }

        /// Eight f16 → eight f32 (`fcvtl`, `fcvtl2`; exact).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn h2f8(p: *const u16) -> F8 {
            let h = vld1q_u16(p);
            let (lo, hi): (float32x4_t, float32x4_t);
            asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) lo, in(vreg) vget_low_u16(h),
                options(pure, nomem, nostack));
            asm!("fcvtl2 {0:v}.4s, {1:v}.8h", out(vreg) hi, in(vreg) h,
                options(pure, nomem, nostack));
            F8(lo, hi)
        }

        /// x86's `hsum_f32_8`: `(lo + hi)`, then lanes `[0 + 2, 1 + 3]`, then their sum.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn hsum_f32_8(x: F8) -> f32 {
            let s = vaddq_f32(x.1, x.0);
            let t = vadd_f32(vget_low_f32(s), vget_high_f32(s));
            vget_lane_f32::<0>(t) + vget_lane_f32::<1>(t)
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn load32(p: &[i8]) -> B32 {
            debug_assert!(p.len() >= 32);
            (vld1q_s8(p.as_ptr()), vld1q_s8(p.as_ptr().add(16)))
        }

        /// 32 nibbles → 32 values: low nibbles first, then high nibbles.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn nibbles(qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
            let v = vld1q_u8(qs.as_ptr());
            (vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v))
        }

        /// 32 bits → 32 bytes, 0xFF where the bit is set (bit `j` of `qh` for value `j`).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bits_32(qh: &[u8; 4]) -> (uint8x16_t, uint8x16_t) {
            const IDX_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
            const IDX_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];
            const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
            let v = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(*qh)));
            let bit = vld1q_u8(BIT.as_ptr());
            (
                vtstq_u8(vqtbl1q_u8(v, vld1q_u8(IDX_LO.as_ptr())), bit),
                vtstq_u8(vqtbl1q_u8(v, vld1q_u8(IDX_HI.as_ptr())), bit),
            )
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn s8(v: uint8x16_t) -> int8x16_t {
            vreinterpretq_s8_u8(v)
        }

        /// Q4_0's 32 values (nibble − 8).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q4_0_bytes(xb: &BlockQ4_0) -> B32 {
            let (lo, hi) = nibbles(&xb.qs);
            let e = vdupq_n_s8(8);
            (vsubq_s8(s8(lo), e), vsubq_s8(s8(hi), e))
        }

        /// Q8_0's 32 values.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q8_0_bytes(xb: &BlockQ8_0) -> B32 {
            load32(&xb.qs)
        }

        /// Q5_0's 32 values (nibble + 16·bit − 16).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q5_0_bytes(xb: &BlockQ5_0) -> B32 {
            let (lo, hi) = nibbles(&xb.qs);
            let (b0, b1) = bits_32(&xb.qh);
            let h = vdupq_n_u8(0x10);
            let e = vdupq_n_s8(16);
            (
                vsubq_s8(s8(vorrq_u8(lo, vandq_u8(b0, h))), e),
                vsubq_s8(s8(vorrq_u8(hi, vandq_u8(b1, h))), e),
            )
        }

        /// Q4_1's 32 values (the nibbles).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q4_1_bytes(xb: &BlockQ4_1) -> B32 {
            let (lo, hi) = nibbles(&xb.qs);
            (s8(lo), s8(hi))
        }

        /// Q5_1's 32 values (nibble + 16·bit).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q5_1_bytes(xb: &BlockQ5_1) -> B32 {
            let (lo, hi) = nibbles(&xb.qs);
            let (b0, b1) = bits_32(&xb.qh);
            let h = vdupq_n_u8(0x10);
            (s8(vorrq_u8(lo, vandq_u8(b0, h))), s8(vorrq_u8(hi, vandq_u8(b1, h))))
        }

        /// As x86's `vec_dot_f32`: chain A takes the eight-value groups 0, 2, 4, … (and a
        /// last group left over after the pairs), chain B the groups 1, 3, 5, …; the result
        /// is `hsum(A + B)` plus the values after the last full group, one at a time.
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let (mut a, mut b) = (F8::zero(), F8::zero());
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let mut i = 0;
            while i + 16 <= n {
                a = a.fma(F8::load(xp.add(i)), F8::load(yp.add(i)));
                b = b.fma(F8::load(xp.add(i + 8)), F8::load(yp.add(i + 8)));
                i += 16;
            }
            if i + 8 <= n {
                a = a.fma(F8::load(xp.add(i)), F8::load(yp.add(i)));
                i += 8;
            }
            let mut s = hsum_f32_8(a.add(b));
            for j in i..n {
                s += x[j] * y[j];
            }
            s
        }

        /// As x86's `vec_dot_f16_f32`: one eight-lane chain.
        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let mut acc = F8::zero();
            let (xp, yp) = (x.as_ptr() as *const u16, y.as_ptr());
            let mut i = 0;
            while i + 8 <= n {
                acc = acc.fma(h2f8(xp.add(i)), F8::load(yp.add(i)));
                i += 8;
            }
            let mut s = hsum_f32_8(acc);
            for j in i..n {
                s += x[j].to_f32() * y[j];
            }
            s
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn bf8(p: *const u16) -> F8 {
            let h = vld1q_u16(p);
            F8(
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
            )
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_bf16_f32(x: &[u16], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let n8 = n / 8 * 8;
            let mut acc = F8::zero();
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let mut i = 0;
            while i < n8 {
                acc = acc.fma(bf8(xp.add(i)), F8::load(yp.add(i)));
                i += 8;
            }
            let mut s = hsum_f32_8(acc);
            for j in n8..n {
                s += f32::from_bits((x[j] as u32) << 16) * y[j];
            }
            s
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
        ) -> [[F8; 3]; 4] {
            let mut acc = [[F8::zero(); 3]; 4];
            let mut i = start;
            while i + 8 <= limit {
                let xv = [
                    F8::load(x[0].as_ptr().add(i)),
                    F8::load(x[1].as_ptr().add(i)),
                    F8::load(x[2].as_ptr().add(i)),
                ];
                for r in 0..4 {
                    let wv = F8::load(w[r].as_ptr().add(i));
                    for t in 0..3 {
                        acc[r][t] = acc[r][t].fma(wv, xv[t]);
                    }
                }
                i += 16;
            }
            acc
        }

        /// A 4 × 3 tile of f32 dot products with [`vec_dot_f32`]'s bits for every entry (as
        /// x86's `dot_tile_f32_4x3`).
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
                    let mut s = hsum_f32_8(a[r][t].add(b[r][t]));
                    for j in a_end..n {
                        s += w[r][j] * x[t][j];
                    }
                    out[r][t] = s;
                }
            }
            out
        }

        /// [`dot_tile_f32_4x3`] with f16 weight rows ([`vec_dot_f16_f32`]'s bits).
        #[target_feature(enable = $feat)]
        pub unsafe fn dot_tile_f16_4x3(w: [&[f16]; 4], x: [&[f32]; 3], n: usize) -> [[f32; 3]; 4] {
            assert!(w.iter().all(|r| r.len() >= n) && x.iter().all(|r| r.len() >= n));
            let mut acc = [[F8::zero(); 3]; 4];
            let mut i = 0;
            while i + 8 <= n {
                let xv = [
                    F8::load(x[0].as_ptr().add(i)),
                    F8::load(x[1].as_ptr().add(i)),
                    F8::load(x[2].as_ptr().add(i)),
                ];
                for r in 0..4 {
                    let wv = h2f8(w[r].as_ptr().add(i) as *const u16);
                    for t in 0..3 {
                        acc[r][t] = acc[r][t].fma(wv, xv[t]);
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

        // Q4_0, Q5_0, Q8_0 and IQ4_NL against Q8_0: per block the exact integer sum, then
        // [`super::scalar::block_step`]'s chain — tokens (and rows) in lanes for the batch
        // kernels — as at every x86 level: the scalar kernel's bits.

        /// A block's four partial sums of `x·y` (each over eight bytes; exact).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn block_parts(x: B32, y: B32) -> int32x4_t {
            $dot4($dot4(vdupq_n_s32(0), x.0, y.0), x.1, y.1)
        }

        /// `[Σa, Σb, Σc, Σd]` of four vectors' lanes (exact).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn sums4(v: [int32x4_t; 4]) -> int32x4_t {
            vpaddq_s32(vpaddq_s32(v[0], v[1]), vpaddq_s32(v[2], v[3]))
        }

        /// `acc + dx·dy[t]·s[t]` per token lane, the scale products rounded first.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn chain4(acc: float32x4_t, dx: f32, dy: float32x4_t, s: int32x4_t) -> float32x4_t {
            vfmaq_f32(acc, vmulq_f32(vdupq_n_f32(dx), dy), vcvtq_f32_s32(s))
        }

        /// Four f16 → four f32.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn h2f4(h: [f16; 4]) -> float32x4_t {
            let d = h.map(|v| h2f(v));
            vld1q_f32(d.as_ptr())
        }

        /// The single, four-token and four-row kernels of weight blocks `$B` against activation
        /// blocks `$A`, unpacked by `$bytes`: per block the exact integer sum, then
        /// [`super::scalar::block_step`]'s chain (for the affine types
        /// [`super::scalar::affine_step`]'s), tokens or rows in lanes — the scalar kernel's bits.
        macro_rules! legacy {
            ($one:ident, $four:ident, $rows:ident, $B:ty, $A:ty, $bytes:ident) => {
                /// Four rows · one token (decode), the rows in lanes: each as [`$one`] gives it.
                #[target_feature(enable = $feat)]
                pub unsafe fn $rows(x: [&[$B]; 4], y: &[$A]) -> [f32; 4] {
                    assert!(x.iter().all(|r| r.len() == y.len()), "rows of the token's length");
                    let mut acc = vdupq_n_f32(0.0);
                    for (i, yb) in y.iter().enumerate() {
                        let yv = load32(&yb.qs);
                        let b = x.map(|r| r.get_unchecked(i));
                        let v = b.map(|xb| block_parts($bytes(xb), yv));
                        let d = vmulq_f32(h2f4(b.map(|xb| xb.d)), vdupq_n_f32(h2f(yb.d)));
                        acc = vfmaq_f32(acc, d, vcvtq_f32_s32(sums4(v)));
                        if <$B as super::LegacyBlock>::AFFINE {
                            let m = h2f4(b.map(|xb| xb.min_f16()));
                            acc = vfmaq_f32(acc, m, vdupq_n_f32(h2f(yb.sum_f16())));
                        }
                    }
                    let mut out = [0f32; 4];
                    vst1q_f32(out.as_mut_ptr(), acc);
                    out
                }

                #[target_feature(enable = $feat)]
                pub unsafe fn $one(x: &[$B], y: &[$A]) -> f32 {
                    let mut acc = 0f32;
                    for (xb, yb) in x.iter().zip(y) {
                        let s = vaddvq_s32(block_parts($bytes(xb), load32(&yb.qs)));
                        acc = (h2f(xb.d) * h2f(yb.d)).mul_add(s as f32, acc);
                        if <$B as super::LegacyBlock>::AFFINE {
                            acc = h2f(xb.min_f16()).mul_add(h2f(yb.sum_f16()), acc);
                        }
                    }
                    acc
                }

                #[target_feature(enable = $feat)]
                pub unsafe fn $four(x: &[$B], y: [&[$A]; 4]) -> [f32; 4] {
                    let mut acc = vdupq_n_f32(0.0);
                    for (i, xb) in x.iter().enumerate() {
                        let qx = $bytes(xb);
                        let v: [int32x4_t; 4] =
                            std::array::from_fn(|t| block_parts(qx, load32(&y[t][i].qs)));
                        let dy = h2f4(std::array::from_fn(|t| y[t][i].d));
                        acc = chain4(acc, h2f(xb.d), dy, sums4(v));
                        if <$B as super::LegacyBlock>::AFFINE {
                            let sy = h2f4(std::array::from_fn(|t| y[t][i].sum_f16()));
                            acc = vfmaq_f32(acc, vdupq_n_f32(h2f(xb.min_f16())), sy);
                        }
                    }
                    let mut out = [0f32; 4];
                    vst1q_f32(out.as_mut_ptr(), acc);
                    out
                }
            };
        }


        macro_rules! legacy_two {
            (plain, $twok:ident, $B:ty, $bytes:ident) => {
                #[target_feature(enable = $feat)]
                pub unsafe fn $twok(x: [&[$B]; 2], y: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 2] {
                    let mut acc = [vdupq_n_f32(0.0); 2];
                    for i in 0..x[0].len().min(x[1].len()) {
                        let (b0, b1) = (&x[0][i], &x[1][i]);
                        let (q0, q1) = ($bytes(b0), $bytes(b1));
                        let yv: [B32; 4] = std::array::from_fn(|t| load32(&y[t][i].qs));
                        let dy = h2f4(std::array::from_fn(|t| y[t][i].d));
                        let v0: [int32x4_t; 4] = std::array::from_fn(|t| block_parts(q0, yv[t]));
                        let v1: [int32x4_t; 4] = std::array::from_fn(|t| block_parts(q1, yv[t]));
                        acc[0] = chain4(acc[0], h2f(b0.d), dy, sums4(v0));
                        acc[1] = chain4(acc[1], h2f(b1.d), dy, sums4(v1));
                    }
                    let mut out = [[0f32; 4]; 2];
                    vst1q_f32(out[0].as_mut_ptr(), acc[0]);
                    vst1q_f32(out[1].as_mut_ptr(), acc[1]);
                    out
                }
            };
            (mmla, $twok:ident, $B:ty, $bytes:ident) => {
                /// Two rows × four tokens with `smmla`: per block and pair of tokens, four
                /// instructions (one per eight bytes) give the four block sums `[r0·ta, r0·tb,
                /// r1·ta, r1·tb]`; the sums are exact, and the chain is the other kernels'.
                #[target_feature(enable = $feat)]
                pub unsafe fn $twok(x: [&[$B]; 2], y: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 2] {
                    use super::arm::smmla;
                    // [a bytes 8k..8k+8, b bytes 8k..8k+8] for k = 0..4.
                    let pack = |a: B32, b: B32| {
                        let z = |a: int8x16_t, b: int8x16_t, hi: bool| {
                            let (a, b) = (vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b));
                            vreinterpretq_s8_s64(if hi { vzip2q_s64(a, b) } else { vzip1q_s64(a, b) })
                        };
                        [z(a.0, b.0, false), z(a.0, b.0, true), z(a.1, b.1, false), z(a.1, b.1, true)]
                    };
                    let mut acc = [vdupq_n_f32(0.0); 2];
                    let zi = vdupq_n_s32(0);
                    for i in 0..x[0].len().min(x[1].len()) {
                        let (b0, b1) = (&x[0][i], &x[1][i]);
                        let w = pack($bytes(b0), $bytes(b1));
                        let yv: [B32; 4] = std::array::from_fn(|t| load32(&y[t][i].qs));
                        // p[j]: [r0·t2j, r0·t2j+1, r1·t2j, r1·t2j+1].
                        let p: [int32x4_t; 2] = std::array::from_fn(|j| {
                            let r = pack(yv[2 * j], yv[2 * j + 1]);
                            let mut s = zi;
                            for k in 0..4 {
                                s = smmla(s, w[k], r[k]);
                            }
                            s
                        });
                        let (p0, p1) = (vreinterpretq_s64_s32(p[0]), vreinterpretq_s64_s32(p[1]));
                        let s0 = vreinterpretq_s32_s64(vzip1q_s64(p0, p1));
                        let s1 = vreinterpretq_s32_s64(vzip2q_s64(p0, p1));
                        let dy = h2f4(std::array::from_fn(|t| y[t][i].d));
                        acc[0] = chain4(acc[0], h2f(b0.d), dy, s0);
                        acc[1] = chain4(acc[1], h2f(b1.d), dy, s1);
                    }
                    let mut out = [[0f32; 4]; 2];
                    vst1q_f32(out[0].as_mut_ptr(), acc[0]);
                    vst1q_f32(out[1].as_mut_ptr(), acc[1]);
                    out
                }
            };
        }

        legacy!(vec_dot_q4_0_q8_0, vec_dot4_q4_0_q8_0, vec_dot_rows4_q4_0_q8_0, BlockQ4_0, BlockQ8_0, q4_0_bytes);
        legacy_two!($two, vec_dot4x2_q4_0_q8_0, BlockQ4_0, q4_0_bytes);
        legacy!(vec_dot_q5_0_q8_0, vec_dot4_q5_0_q8_0, vec_dot_rows4_q5_0_q8_0, BlockQ5_0, BlockQ8_0, q5_0_bytes);
        legacy_two!($two, vec_dot4x2_q5_0_q8_0, BlockQ5_0, q5_0_bytes);
        legacy!(vec_dot_q8_0_q8_0, vec_dot4_q8_0_q8_0, vec_dot_rows4_q8_0_q8_0, BlockQ8_0, BlockQ8_0, q8_0_bytes);
        legacy_two!($two, vec_dot4x2_q8_0_q8_0, BlockQ8_0, q8_0_bytes);

        legacy!(vec_dot_q4_1_q8_1, vec_dot4_q4_1_q8_1, vec_dot_rows4_q4_1_q8_1, BlockQ4_1, BlockQ8_1, q4_1_bytes);
        legacy!(vec_dot_q5_1_q8_1, vec_dot4_q5_1_q8_1, vec_dot_rows4_q5_1_q8_1, BlockQ5_1, BlockQ8_1, q5_1_bytes);

        /// One token's share of a Q4_K/Q5_K block: eight 32-value groups with their scales
        /// and mins against the token's Q8_K block, as x86's `k4_accumulate`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k4_accumulate(
            q: &[B32; 8],
            sc: &[i32; 8],
            mn: &[i32; 8],
            (xd, xdmin): (f32, f32),
            yb: &BlockQ8K,
            acc: &mut F8,
            acc_m: &mut f32,
        ) {
            *acc_m += xdmin * yb.d * k4_min_term(mn, &yb.bsums) as f32;
            let z = vdupq_n_s32(0);
            let (mut s0, mut s1) = (z, z);
            for j in 0..8 {
                let a = load32(&yb.qs[32 * j..]);
                s0 = vmlaq_n_s32(s0, $dot4(z, q[j].0, a.0), sc[j]);
                s1 = vmlaq_n_s32(s1, $dot4(z, q[j].1, a.1), sc[j]);
            }
            *acc = acc.fma_n(xd * yb.d, F8(vcvtq_f32_s32(s0), vcvtq_f32_s32(s1)));
        }

        /// The loop of Q4_K and Q5_K over one row and `T` tokens, as x86's `k4_dot`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k4_dot<'a, const T: usize>(
            n: usize,
            y: [&[BlockQ8K]; T],
            unpack: impl Fn(usize) -> ([B32; 8], &'a [u8; K_SCALE_SIZE], (f32, f32)),
        ) -> [f32; T] {
            assert!(y.iter().all(|r| r.len() >= n), "activation blocks");
            let mut acc = [F8::zero(); T];
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

        /// A Q4_K block's values: for each 32-byte chunk, its low nibbles then its high ones.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q4_k(xb: &BlockQ4K) -> ([B32; 8], &[u8; K_SCALE_SIZE], (f32, f32)) {
            let m4 = vdupq_n_u8(0x0F);
            let z = vdupq_n_s8(0);
            let mut q = [(z, z); 8];
            for k in 0..QK_K / 64 {
                let p = xb.qs.as_ptr().add(32 * k);
                let (b0, b1) = (vld1q_u8(p), vld1q_u8(p.add(16)));
                q[2 * k] = (s8(vandq_u8(b0, m4)), s8(vandq_u8(b1, m4)));
                q[2 * k + 1] = (s8(vshrq_n_u8::<4>(b0)), s8(vshrq_n_u8::<4>(b1)));
            }
            (q, &xb.scales, (h2f(xb.d), h2f(xb.dmin)))
        }

        /// A Q5_K block's values: Q4_K's nibbles plus 16 where the fifth bit is set.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q5_k(xb: &BlockQ5K) -> ([B32; 8], &[u8; K_SCALE_SIZE], (f32, f32)) {
            let m4 = vdupq_n_u8(0x0F);
            let one = vdupq_n_u8(1);
            let (h0, h1) = (vld1q_u8(xb.qh.as_ptr()), vld1q_u8(xb.qh.as_ptr().add(16)));
            let fifth = |h: uint8x16_t, s: usize| {
                vshlq_n_u8::<4>(vandq_u8(vshlq_u8(h, vdupq_n_s8(-(s as i8))), one))
            };
            let z = vdupq_n_s8(0);
            let mut q = [(z, z); 8];
            for k in 0..QK_K / 64 {
                let p = xb.qs.as_ptr().add(32 * k);
                let (b0, b1) = (vld1q_u8(p), vld1q_u8(p.add(16)));
                let (s0, s1) = (2 * k, 2 * k + 1);
                q[2 * k] = (
                    s8(vaddq_u8(vandq_u8(b0, m4), fifth(h0, s0))),
                    s8(vaddq_u8(vandq_u8(b1, m4), fifth(h1, s0))),
                );
                q[2 * k + 1] = (
                    s8(vaddq_u8(vshrq_n_u8::<4>(b0), fifth(h0, s1))),
                    s8(vaddq_u8(vshrq_n_u8::<4>(b1), fifth(h1, s1))),
                );
            }
            (q, &xb.scales, (h2f(xb.d), h2f(xb.dmin)))
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
        pub unsafe fn vec_dot4_q4_k_q8_k(x: &[BlockQ4K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            k4_dot(x.len(), y, |i| unpack_q4_k(&x[i]))
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q5_k_q8_k(x: &[BlockQ5K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            k4_dot(x.len(), y, |i| unpack_q5_k(&x[i]))
        }

        // ------------------------------------------------------------ the low-bit tier

        /// 32 IQ4 grid indices (16 bytes: low nibbles the first 16 values) → their values in
        /// ggml's `kvalues_iq4nl` (`tbl`, as x86 uses `pshufb`).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_values(qs: &[u8; 16]) -> B32 {
            let t = vld1q_s8(quantize::lowbit::KVALUES_IQ4NL.as_ptr());
            let (lo, hi) = nibbles(qs);
            (vqtbl1q_s8(t, lo), vqtbl1q_s8(t, hi))
        }

        /// IQ4_NL's 32 values as signed bytes (grid values, |v| ≤ 127).
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn iq4_nl_bytes(xb: &BlockIQ4NL) -> B32 {
            iq4_values(&xb.qs)
        }

        legacy!(vec_dot_iq4_nl_q8_0, vec_dot4_iq4_nl_q8_0, vec_dot_rows4_iq4_nl_q8_0, BlockIQ4NL, BlockQ8_0, iq4_nl_bytes);
        legacy_two!($two, vec_dot4x2_iq4_nl_q8_0, BlockIQ4NL, iq4_nl_bytes);

        /// A Q2_K / Q3_K / IQ4_XS super-block unpacked for [`lowbit_dot`]: eight 32-value
        /// groups as signed bytes, the scales of each group's two sixteen-value halves, and
        /// the f16 scale (and Q2_K's min scale) as f32.
        struct LowBit {
            q: [B32; 8],
            sc: [[i32; 2]; 8],
            d: f32,
            dmin: f32,
        }

        /// As x86's `lowbit_dot`: per super-block and token the exact integer sums of the
        /// eight four-byte lanes (each group's halves times their scales), one fused
        /// multiply-add of the lanes, Q2_K's min term in a float.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn lowbit_dot<const T: usize>(
            n: usize,
            y: [&[BlockQ8K]; T],
            unpack: impl Fn(usize) -> LowBit,
            mins: impl Fn(usize, &BlockQ8K) -> i32,
        ) -> [f32; T] {
            assert!(y.iter().all(|r| r.len() >= n), "activation blocks");
            let mut acc = [F8::zero(); T];
            let mut acc_m = [0f32; T];
            let z = vdupq_n_s32(0);
            for i in 0..n {
                let b = unpack(i);
                for t in 0..T {
                    let yb = &y[t][i];
                    if b.dmin != 0.0 {
                        acc_m[t] += b.dmin * yb.d * mins(i, yb) as f32;
                    }
                    let (mut s0, mut s1) = (z, z);
                    for g in 0..8 {
                        let a = load32(&yb.qs[32 * g..]);
                        s0 = vmlaq_n_s32(s0, $dot4(z, b.q[g].0, a.0), b.sc[g][0]);
                        s1 = vmlaq_n_s32(s1, $dot4(z, b.q[g].1, a.1), b.sc[g][1]);
                    }
                    acc[t] = acc[t].fma_n(b.d * yb.d, F8(vcvtq_f32_s32(s0), vcvtq_f32_s32(s1)));
                }
            }
            std::array::from_fn(|t| hsum_f32_8(acc[t]) - acc_m[t])
        }

        /// The 2-bit groups of a Q2_K / Q3_K `qs`: group `4·j + s` is values `128·j + 32·s ..`.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn low2_groups(qs: &[u8; QK_K / 4]) -> [(uint8x16_t, uint8x16_t); 8] {
            let m3 = vdupq_n_u8(3);
            let z = vdupq_n_u8(0);
            let mut q = [(z, z); 8];
            for j in 0..2 {
                let p = qs.as_ptr().add(32 * j);
                let (b0, b1) = (vld1q_u8(p), vld1q_u8(p.add(16)));
                for s in 0..4 {
                    let sh = vdupq_n_s8(-2 * s as i8);
                    q[4 * j + s] = (
                        vandq_u8(vshlq_u8(b0, sh), m3),
                        vandq_u8(vshlq_u8(b1, sh), m3),
                    );
                }
            }
            q
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q2_k(xb: &BlockQ2K) -> LowBit {
            let s = |j: usize| (xb.scales[j] & 0xF) as i32;
            let q = low2_groups(&xb.qs);
            LowBit {
                q: q.map(|(a, b)| (s8(a), s8(b))),
                sc: std::array::from_fn(|g| [s(2 * g), s(2 * g + 1)]),
                d: h2f(xb.d),
                dmin: h2f(xb.dmin),
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q3_k(xb: &BlockQ3K) -> LowBit {
            let sc = quantize::lowbit::q3k_scales(&xb.scales);
            let s = |j: usize| sc[j] as i32 - 32;
            let (h0, h1) = (vld1q_u8(xb.hmask.as_ptr()), vld1q_u8(xb.hmask.as_ptr().add(16)));
            let four = vdupq_n_u8(4);
            let low = low2_groups(&xb.qs);
            // Value `32·g + l` loses 4 where its high bit (bit g of hmask[l]) is clear.
            let q = std::array::from_fn(|g| {
                let bit = vdupq_n_u8(1u8 << g);
                let (a, b) = low[g];
                (
                    vsubq_s8(s8(a), s8(vbicq_u8(four, vtstq_u8(h0, bit)))),
                    vsubq_s8(s8(b), s8(vbicq_u8(four, vtstq_u8(h1, bit)))),
                )
            });
            LowBit {
                q,
                sc: std::array::from_fn(|g| [s(2 * g), s(2 * g + 1)]),
                d: h2f(xb.d),
                dmin: 0.0,
            }
        }

        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_iq4_xs(xb: &BlockIQ4XS) -> LowBit {
            LowBit {
                q: std::array::from_fn(|g| {
                    iq4_values(xb.qs[16 * g..16 * g + 16].try_into().expect("16 bytes"))
                }),
                sc: std::array::from_fn(|g| {
                    let s = quantize::lowbit::iq4xs_scale(xb, g) - 32;
                    [s, s]
                }),
                d: h2f(xb.d),
                dmin: 0.0,
            }
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
            lowbit_dot(x.len(), [y], |i| unpack_q2_k(&x[i]), |i, yb| q2k_min_term(&x[i], yb))[0]
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q2_k_q8_k(x: &[BlockQ2K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            lowbit_dot(x.len(), y, |i| unpack_q2_k(&x[i]), |i, yb| q2k_min_term(&x[i], yb))
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

        /// A Q6_K block's 256 values minus 32, as eight 32-value groups in x86's order
        /// (`ql` low nibbles, `ql + 32` low, `ql` high, `ql + 32` high per 128 values), with
        /// the scale of each sixteen-value half.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn unpack_q6_k(xb: &BlockQ6K) -> [(B32, [i32; 2]); 8] {
            let m4 = vdupq_n_u8(0x0F);
            let m2 = vdupq_n_u8(3);
            let m32 = vdupq_n_s8(32);
            let z = vdupq_n_s8(0);
            let mut out = [((z, z), [0i32; 2]); 8];
            for k in 0..QK_K / 128 {
                let lp = xb.ql.as_ptr().add(64 * k);
                let hp = xb.qh.as_ptr().add(32 * k);
                let l1 = [vld1q_u8(lp), vld1q_u8(lp.add(16))];
                let l2 = [vld1q_u8(lp.add(32)), vld1q_u8(lp.add(48))];
                let qh = [vld1q_u8(hp), vld1q_u8(hp.add(16))];
                let v = |h: usize, p: usize| {
                    let lo = match p {
                        0 => vandq_u8(l1[h], m4),
                        1 => vandq_u8(l2[h], m4),
                        2 => vshrq_n_u8::<4>(l1[h]),
                        _ => vshrq_n_u8::<4>(l2[h]),
                    };
                    let hi = vandq_u8(vshlq_u8(qh[h], vdupq_n_s8(-2 * p as i8)), m2);
                    vsubq_s8(s8(vorrq_u8(lo, vshlq_n_u8::<4>(hi))), m32)
                };
                for p in 0..4 {
                    out[4 * k + p] = (
                        (v(0, p), v(1, p)),
                        [
                            xb.scales[8 * k + 2 * p] as i32,
                            xb.scales[8 * k + 2 * p + 1] as i32,
                        ],
                    );
                }
            }
            out
        }

        /// One token's share of a Q6_K block.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6_k_accumulate(q: &[(B32, [i32; 2]); 8], xd: f32, yb: &BlockQ8K, acc: &mut F8) {
            let z = vdupq_n_s32(0);
            let (mut s0, mut s1) = (z, z);
            for (j, (v, s)) in q.iter().enumerate() {
                let a = load32(&yb.qs[32 * j..]);
                s0 = vmlaq_n_s32(s0, $dot4(z, v.0, a.0), s[0]);
                s1 = vmlaq_n_s32(s1, $dot4(z, v.1, a.1), s[1]);
            }
            *acc = acc.fma_n(xd * yb.d, F8(vcvtq_f32_s32(s0), vcvtq_f32_s32(s1)));
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
            let mut acc = F8::zero();
            for (xb, yb) in x.iter().zip(y) {
                q6_k_accumulate(&unpack_q6_k(xb), h2f(xb.d), yb, &mut acc);
            }
            hsum_f32_8(acc)
        }

        #[target_feature(enable = $feat)]
        pub unsafe fn vec_dot4_q6_k_q8_k(x: &[BlockQ6K], y: [&[BlockQ8K]; 4]) -> [f32; 4] {
            let mut acc = [F8::zero(); 4];
            for (i, xb) in x.iter().enumerate() {
                let q = unpack_q6_k(xb);
                let xd = h2f(xb.d);
                for t in 0..4 {
                    q6_k_accumulate(&q, xd, &y[t][i], &mut acc[t]);
                }
            }
            acc.map(|a| hsum_f32_8(a))
        }

        /// Scores of `N` queries for the sixteen keys from `i`, as
        /// [`super::scalar::attn_scores`]: per key, one fused multiply-add per dimension from
        /// zero, then the scale.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn scores_tile<const N: usize>(
            q: &super::Strided,
            kt: &super::Strided,
            hd: usize,
            i: usize,
            scale: f32,
            out: *mut f32,
            out_stride: usize,
        ) {
            let z = vdupq_n_f32(0.0);
            let mut acc = [[z; 4]; N];
            let (qp, kp) = (q.data.as_ptr(), kt.data.as_ptr());
            for d in 0..hd {
                let k = kp.add(d * kt.stride + i);
                let kv = [
                    vld1q_f32(k),
                    vld1q_f32(k.add(4)),
                    vld1q_f32(k.add(8)),
                    vld1q_f32(k.add(12)),
                ];
                for (j, a) in acc.iter_mut().enumerate() {
                    let qv = vdupq_n_f32(*qp.add(j * q.stride + d));
                    for c in 0..4 {
                        a[c] = vfmaq_f32(a[c], qv, kv[c]);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate() {
                let o = out.add(j * out_stride + i);
                for c in 0..4 {
                    vst1q_f32(o.add(4 * c), vmulq_n_f32(a[c], scale));
                }
            }
        }

        /// See [`super::scalar::attn_scores`]; the caller has checked the extents. Keys after
        /// the last sixteen take the scalar kernel, which performs the same operations.
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
            let o = out.data.as_mut_ptr();
            let mut i = keys.start;
            while i + 16 <= keys.end {
                match nq {
                    1 => scores_tile::<1>(&q, &kt, hd, i, scale, o, out.stride),
                    2 => scores_tile::<2>(&q, &kt, hd, i, scale, o, out.stride),
                    3 => scores_tile::<3>(&q, &kt, hd, i, scale, o, out.stride),
                    4 => scores_tile::<4>(&q, &kt, hd, i, scale, o, out.stride),
                    _ => {}
                }
                i += 16;
            }
            if i < keys.end {
                super::scalar::attn_scores(q, nq, kt, hd, i..keys.end, scale, out.reborrow());
            }
        }

        /// `N` output rows, dimensions `d0 .. d0 + 4·C`: each element accumulates its keys in
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
            let mut acc = [[vdupq_n_f32(0.0); C]; N];
            for (j, a) in acc.iter_mut().enumerate() {
                for (c, x) in a.iter_mut().enumerate() {
                    *x = vld1q_f32(out.add(j * out_stride + d0 + c * 4));
                }
            }
            let (pp, vp) = (p.data.as_ptr(), v.data.as_ptr());
            for i in keys {
                let row = vp.add(i * v.stride + d0);
                let mut vv = [vdupq_n_f32(0.0); C];
                for (c, x) in vv.iter_mut().enumerate() {
                    *x = vld1q_f32(row.add(c * 4));
                }
                for (j, a) in acc.iter_mut().enumerate() {
                    let w = vdupq_n_f32(*pp.add(j * p.stride + i));
                    for (x, y) in a.iter_mut().zip(&vv) {
                        *x = vfmaq_f32(*x, w, *y);
                    }
                }
            }
            for (j, a) in acc.iter().enumerate() {
                for (c, x) in a.iter().enumerate() {
                    vst1q_f32(out.add(j * out_stride + d0 + c * 4), *x);
                }
            }
        }

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
            while d0 + 4 * C <= hd {
                values_tile::<N, C>(p, v, keys.clone(), d0, o, out.stride);
                d0 += 4 * C;
            }
            while d0 < hd {
                values_tile::<N, 1>(p, v, keys.clone(), d0, o, out.stride);
                d0 += 4;
            }
        }

        /// See [`super::scalar::attn_values`]; `hd` is a multiple of 4 and the caller has
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
                2 => values_n::<2, 8>(&p, &v, hd, keys, &mut out),
                3 => values_n::<3, 4>(&p, &v, hd, keys, &mut out),
                4 => values_n::<4, 4>(&p, &v, hd, keys, &mut out),
                _ => {}
            }
        }

        /// [`super::scalar::exp_ref`] on four lanes, step for step.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn exp_ps(x: float32x4_t) -> float32x4_t {
            use super::scalar::{EXP_LN2_HI, EXP_LN2_LO, EXP_MIN, EXP_POLY};
            let n = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
            let r = vfmaq_f32(x, n, vdupq_n_f32(-EXP_LN2_HI));
            let r = vfmaq_f32(r, n, vdupq_n_f32(-EXP_LN2_LO));
            let mut p = vdupq_n_f32(EXP_POLY[0]);
            for &c in &EXP_POLY[1..] {
                p = vfmaq_f32(vdupq_n_f32(c), p, r);
            }
            let y = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0));
            // n is an integer of at most 2^7 in magnitude where the result is kept.
            let scale = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
            let e = vmulq_f32(y, vreinterpretq_f32_s32(scale));
            // exp_ref's `x < EXP_MIN` gives 0; NaN (not less) goes through, as there.
            let drop = vcltq_f32(x, vdupq_n_f32(EXP_MIN));
            vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(e), drop))
        }

        /// [`super::scalar::gelu_mul`] on four lanes, step for step.
        #[target_feature(enable = $feat)]
        pub unsafe fn gelu_mul(g: &mut [f32], up: &[f32]) {
            use super::scalar::{GELU_BETA, GELU_KAPPA};
            let n = g.len().min(up.len());
            let n4 = n / 4 * 4;
            let one = vdupq_n_f32(1.0);
            let cap = vdupq_n_f32(88.0);
            let mut i = 0;
            while i < n4 {
                let x = vld1q_f32(g.as_ptr().add(i));
                let cube = vmulq_f32(vmulq_f32(x, x), x);
                let u = vmulq_n_f32(vaddq_f32(x, vmulq_n_f32(cube, GELU_KAPPA)), GELU_BETA);
                // f32::min's NaN rule (the number wins): minNum.
                let t = vminnmq_f32(vmulq_n_f32(u, -2.0), cap);
                let y = vdivq_f32(x, vaddq_f32(one, exp_ps(t)));
                vst1q_f32(g.as_mut_ptr().add(i), vmulq_f32(y, vld1q_f32(up.as_ptr().add(i))));
                i += 4;
            }
            super::scalar::gelu_mul(&mut g[n4..n], &up[n4..n]);
        }

        /// See [`super::scalar::attn_exp`]: sixteen keys per step, aligned to key positions;
        /// a partial step takes the scalar kernel, whose lanes see the same additions. The
        /// caller has checked `keys.end ≤ row.len()`.
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
            let lp = lanes.as_mut_ptr();
            let mut acc = [
                vld1q_f32(lp),
                vld1q_f32(lp.add(4)),
                vld1q_f32(lp.add(8)),
                vld1q_f32(lp.add(12)),
            ];
            let mx = vdupq_n_f32(max);
            let mut t = a - a % 16;
            while t < b {
                if t >= a && t + 16 <= b {
                    let p = row.as_mut_ptr().add(t);
                    for (c, l) in acc.iter_mut().enumerate() {
                        let e = exp_ps(vsubq_f32(vld1q_f32(p.add(4 * c)), mx));
                        vst1q_f32(p.add(4 * c), e);
                        *l = vaddq_f32(*l, e);
                    }
                } else {
                    let mut part = [0f32; super::ATT_LANES];
                    for (c, l) in acc.iter().enumerate() {
                        vst1q_f32(part.as_mut_ptr().add(4 * c), *l);
                    }
                    super::scalar::attn_exp(row, a.max(t)..b.min(t + 16), max, &mut part);
                    for (c, l) in acc.iter_mut().enumerate() {
                        *l = vld1q_f32(part.as_ptr().add(4 * c));
                    }
                }
                t += 16;
            }
            for (c, l) in acc.iter().enumerate() {
                vst1q_f32(lp.add(4 * c), *l);
            }
        }

        /// The largest of `x` (−∞ when empty); exact, so the same as the scalar fold.
        #[target_feature(enable = $feat)]
        pub unsafe fn max_f32(x: &[f32]) -> f32 {
            let mut m = vdupq_n_f32(f32::NEG_INFINITY);
            let mut chunks = x.chunks_exact(4);
            for c in &mut chunks {
                m = vmaxnmq_f32(m, vld1q_f32(c.as_ptr()));
            }
            let mut l = [0f32; 4];
            vst1q_f32(l.as_mut_ptr(), m);
            l.iter()
                .chain(chunks.remainder())
                .fold(f32::NEG_INFINITY, |a, &v| a.max(v))
        }
    };
}

pub(crate) use arm_kernels;
