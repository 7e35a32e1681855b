//! Scalar dot products: the reference every SIMD version is checked against.
//!
//! Integer sums per block, then one float multiply-add per block, as ggml's generic kernels
//! (`ggml_vec_dot_*_generic` in `ggml/src/ggml-cpu/quants.c`) do; the K-quant ones apply the
//! sub-block scales in integers and the mins through Q8_K's block sums.

use std::ops::Range;

use half::f16;
use quantize::blocks::*;

use super::{Strided, StridedMut};

/// Attention scores of `nq` queries (row `j` at `q.data[j·q.stride ..][..hd]`) against keys
/// `keys` of the transposed key cache (`kt.data[d·kt.stride + i]` is element `d` of key `i`):
/// `out[j][i] = scale · Σ_d q[j][d]·K[i][d]`, the sum one fused multiply-add per `d` in order
/// from zero, so a score does not depend on which other queries or keys share its call.
pub fn attn_scores(
    q: Strided,
    nq: usize,
    kt: Strided,
    hd: usize,
    keys: Range<usize>,
    scale: f32,
    out: StridedMut,
) {
    for j in 0..nq {
        let qj = &q.data[j * q.stride..][..hd];
        let oj = &mut out.data[j * out.stride..];
        for i in keys.clone() {
            let mut s = 0f32;
            for (d, &x) in qj.iter().enumerate() {
                s = x.mul_add(kt.data[d * kt.stride + i], s);
            }
            oj[i] = s * scale;
        }
    }
}

/// `out[j][..hd] += Σ_{i ∈ keys} p[j][i] · V[i]` for `nq` rows of weights (row `j` at
/// `p.data[j·p.stride ..]`, indexed by key), value row `i` at `v.data[i·v.stride ..][..hd]`:
/// one fused multiply-add per element and key, keys in order.
pub fn attn_values(
    p: Strided,
    nq: usize,
    v: Strided,
    hd: usize,
    keys: Range<usize>,
    out: StridedMut,
) {
    for j in 0..nq {
        let pj = &p.data[j * p.stride..];
        let oj = &mut out.data[j * out.stride..][..hd];
        for i in keys.clone() {
            let w = pj[i];
            for (o, &x) in oj.iter_mut().zip(&v.data[i * v.stride..][..hd]) {
                *o = w.mul_add(x, *o);
            }
        }
    }
}

/// The largest of `x` (−∞ when empty).
pub fn max_f32(x: &[f32]) -> f32 {
    x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Softmax numerators of `row[keys]`: each becomes `exp_ref(row[i] − max)` and is added to
/// `lanes[i % ATT_LANES]`, keys in order; the lanes are tied to absolute key positions, so the
/// sums do not depend on how a row is split into ranges.
pub fn attn_exp(row: &mut [f32], keys: Range<usize>, max: f32, lanes: &mut [f32; ATT_LANES]) {
    for i in keys {
        let e = exp_ref(row[i] - max);
        row[i] = e;
        lanes[i % ATT_LANES] += e;
    }
}

/// `e^x` for `x ≤ 88`, from Cephes' `expf`: `x = n·ln 2 + r` with `n` the nearest integer
/// (ties to even) and `r` from a two-part ln 2, `e^r` from a degree-7 polynomial, `2^n` put
/// in the exponent bits; 0 below −87. Every step is one IEEE operation (fused where written
/// `mul_add`), and the SIMD versions perform the same steps, so they give the same bits.
/// Within 2 ulp of the exact value on −87 ≤ x ≤ 0 (tested).
#[inline]
pub fn exp_ref(x: f32) -> f32 {
    if x < EXP_MIN {
        return 0.0;
    }
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-EXP_LN2_HI, x);
    let r = n.mul_add(-EXP_LN2_LO, r);
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `tanh(x)`, Cephes' `tanhf`: `x + x³·P(x²)` below 0.625, `1 − 2/(e^{2x} + 1)` (with
/// [`exp_ref`]) up to 9, ±1 beyond; the sign carried over. Every step is one IEEE operation,
/// so it gives the same bits on every architecture — the C library's `tanhf` does not
/// (glibc's differs in the last bit between x86-64 and aarch64 on about one float in 20,
/// measured). Within 3 ulp of the exact value (tested).
#[inline]
pub fn tanh_ref(x: f32) -> f32 {
    let z = x.abs();
    if z.is_nan() {
        return x;
    }
    if z >= 9.0 {
        return 1f32.copysign(x);
    }
    if z >= 0.625 {
        let t = 1.0 - 2.0 / (exp_ref(z + z) + 1.0);
        return t.copysign(x);
    }
    if z == 0.0 {
        return x;
    }
    #[allow(clippy::excessive_precision)] // Cephes' digits, as published
    const P: [f32; 5] = [
        -5.704_988_727_45e-3,
        2.063_908_879_54e-2,
        -5.373_971_555_31e-2,
        1.333_144_220_36e-1,
        -3.333_328_194_22e-1,
    ];
    let s = x * x;
    let mut p = P[0];
    for &c in &P[1..] {
        p = p * s + c;
    }
    p * s * x + x
}

/// The constants of GELU's tanh approximation: `√(2/π)` and `0.044715`.
#[allow(clippy::excessive_precision)]
pub const GELU_BETA: f32 = 0.797_884_560_802_865_4;
pub const GELU_KAPPA: f32 = 0.044715;

/// GELU with the tanh approximation, `0.5·x·(1 + tanh(u))` with `u = √(2/π)·(x + 0.044715·x³)`
/// (Hugging Face's `gelu_pytorch_tanh`), computed as the equal `x / (1 + e^(−2u))` with
/// [`exp_ref`] (its argument capped at 88, where `e^(−2u)` exceeds every `x`'s scale): one
/// IEEE operation per step, no fused multiply-add, so the SIMD versions give the same bits.
/// Within a few ulp of the exact value wherever it is not below 1e-30 (tested); PyTorch's
/// own form loses everything below ~1e-7 to the cancellation in `1 + tanh(u)`.
#[inline]
pub fn gelu_ref(x: f32) -> f32 {
    let cube = x * x * x;
    let u = GELU_BETA * (x + GELU_KAPPA * cube);
    let t = (-2.0 * u).min(88.0);
    x / (1.0 + exp_ref(t))
}

/// `g[i] = gelu(g[i]) · up[i]`: the GeGLU gate.
pub fn gelu_mul(g: &mut [f32], up: &[f32]) {
    for (g, &u) in g.iter_mut().zip(up) {
        *g = gelu_ref(*g) * u;
    }
}

/// Below this, [`exp_ref`] is 0 (e^−87 ≈ 1.6e-38, the smallest normal scale `2^n` reaches).
pub const EXP_MIN: f32 = -87.0;
/// ln 2 in two parts (Cephes' C1, C2): `n·EXP_LN2_HI` is exact for |n| < 2^9.
#[allow(clippy::excessive_precision)] // Cephes' digits, as published
pub const EXP_LN2_HI: f32 = 0.693_359_375;
pub const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' `expf` polynomial, highest power first.
#[allow(clippy::excessive_precision)] // Cephes' digits, as published
pub const EXP_POLY: [f32; 6] = [
    1.987_569_15e-4,
    1.398_199_95e-3,
    8.333_451_9e-3,
    4.166_579_6e-2,
    1.666_666_55e-1,
    5.000_000_1e-1,
];

/// Keys per lane group of [`attn_exp`]'s sums.
pub const ATT_LANES: usize = 16;

/// The sum of [`attn_exp`]'s lanes, folded in halves (lane i + lane i+8, then +4, +2, +1).
pub fn lanes_sum(lanes: &[f32; ATT_LANES]) -> f32 {
    let mut l = *lanes;
    let mut w = ATT_LANES / 2;
    while w > 0 {
        for i in 0..w {
            l[i] += l[i + w];
        }
        w /= 2;
    }
    l[0]
}

/// Σ x·y over f32.
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    // Two chains of eight running sums over alternate eight-value groups: the association of
    // the x86 kernels' lanes (see `x86::vec_dot_f32`), and faster than one sum.
    let mut acc = [[0f32; 8]; 2];
    let n8 = x.len() / 8 * 8;
    for (g, (xc, yc)) in x[..n8]
        .chunks_exact(8)
        .zip(y[..n8].chunks_exact(8))
        .enumerate()
    {
        // A last group left without a partner joins chain A, as in the SIMD kernels.
        let chain = &mut acc[g % 2];
        for k in 0..8 {
            chain[k] += xc[k] * yc[k];
        }
    }
    let mut s = (0..8).map(|k| acc[0][k] + acc[1][k]).sum::<f32>();
    for i in n8..x.len() {
        s += x[i] * y[i];
    }
    s
}

/// Σ x·y with f16 weights and f32 activations.
pub fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = x.len() / 8 * 8;
    for (xc, yc) in x[..n8].chunks_exact(8).zip(y[..n8].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += xc[k].to_f32() * yc[k];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for i in n8..x.len() {
        s += x[i].to_f32() * y[i];
    }
    s
}

/// Σ x·y with bf16 weights (raw bits) and f32 activations.
pub fn vec_dot_bf16_f32(x: &[u16], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = x.len() / 8 * 8;
    let cv = |b: u16| f32::from_bits((b as u32) << 16);
    for (xc, yc) in x[..n8].chunks_exact(8).zip(y[..n8].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += cv(xc[k]) * yc[k];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for i in n8..x.len() {
        s += cv(x[i]) * y[i];
    }
    s
}

/// One block of the legacy types (Q4_0, Q5_0, Q8_0, IQ4_NL against Q8_0): `acc + (dx·dy)·Σq·y`,
/// the scale product rounded once and the block's exact integer sum added by one fused
/// multiply-add. A row's dot is this step over its blocks in order from zero — one chain per
/// output, which every SIMD level runs with outputs (rows or tokens) in its lanes, so they all
/// give these bits. (ggml's generic kernels round the product and the sum separately, and its
/// AVX2 kernels keep eight lanes per block; both agree with this to within rounding.)
#[inline(always)]
pub fn block_step(acc: f32, dx: f16, dy: f16, sumi: i32) -> f32 {
    (dx.to_f32() * dy.to_f32()).mul_add(sumi as f32, acc)
}

/// [`block_step`] for the affine types (Q4_1, Q5_1 against Q8_1), then their mins' term
/// `m·s` (Q8_1's `s = d·Σy`) by a second fused multiply-add, in the same chain.
#[inline(always)]
pub fn affine_step(acc: f32, dx: f16, dy: f16, sumi: i32, m: f16, s: f16) -> f32 {
    m.to_f32()
        .mul_add(s.to_f32(), block_step(acc, dx, dy, sumi))
}

pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let v0 = (xb.qs[j] & 0x0F) as i32 - 8;
            let v1 = (xb.qs[j] >> 4) as i32 - 8;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + QK / 2] as i32;
        }
        sumf = block_step(sumf, xb.d, yb.d, sumi);
    }
    sumf
}

pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let v0 = (xb.qs[j] & 0x0F) as i32;
            let v1 = (xb.qs[j] >> 4) as i32;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + QK / 2] as i32;
        }
        sumf = affine_step(sumf, xb.d, yb.d, sumi, xb.m, yb.s);
    }
    sumf
}

#[inline(always)]
fn q5_values(qs: &[u8; 16], qh: &[u8; 4], j: usize) -> (i32, i32) {
    let qh = u32::from_le_bytes(*qh);
    let xh_0 = ((qh >> j) << 4) & 0x10;
    let xh_1 = (qh >> (j + 12)) & 0x10;
    (
        ((qs[j] & 0x0F) as u32 | xh_0) as i32,
        ((qs[j] >> 4) as u32 | xh_1) as i32,
    )
}

pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let (v0, v1) = q5_values(&xb.qs, &xb.qh, j);
            sumi += (v0 - 16) * yb.qs[j] as i32 + (v1 - 16) * yb.qs[j + QK / 2] as i32;
        }
        sumf = block_step(sumf, xb.d, yb.d, sumi);
    }
    sumf
}

pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let (v0, v1) = q5_values(&xb.qs, &xb.qh, j);
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + QK / 2] as i32;
        }
        sumf = affine_step(sumf, xb.d, yb.d, sumi, xb.m, yb.s);
    }
    sumf
}

pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sumi: i32 = xb
            .qs
            .iter()
            .zip(&yb.qs)
            .map(|(&a, &b)| a as i32 * b as i32)
            .sum();
        sumf = block_step(sumf, xb.d, yb.d, sumi);
    }
    sumf
}

/// The eight 6-bit scales and mins of a Q4_K / Q5_K super-block.
#[inline(always)]
pub(crate) fn k4_scales_mins(scales: &[u8; K_SCALE_SIZE]) -> ([i32; 8], [i32; 8]) {
    let mut sc = [0i32; 8];
    let mut mn = [0i32; 8];
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, scales);
        sc[j] = s as i32;
        mn[j] = m as i32;
    }
    (sc, mn)
}

/// Σ_j mins[j] · (Σ of Q8_K's 32 quants of sub-block j), from the block sums.
#[inline(always)]
pub(crate) fn k4_min_term(mins: &[i32; 8], bsums: &[i16; 16]) -> i32 {
    (0..8)
        .map(|j| mins[j] * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32))
        .sum()
}

/// Q2_K's min term of block `xb` against `yb`: Σ_j min_j · bsum_j.
#[inline(always)]
pub(crate) fn q2k_min_term(xb: &BlockQ2K, yb: &BlockQ8K) -> i32 {
    (0..QK_K / 16)
        .map(|j| (xb.scales[j] >> 4) as i32 * yb.bsums[j] as i32)
        .sum()
}

pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (sc, mn) = k4_scales_mins(&xb.scales);
        let mut sumi = 0i32;
        for k in 0..QK_K / 64 {
            let q = &xb.qs[32 * k..32 * k + 32];
            let a = &yb.qs[64 * k..64 * k + 64];
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                lo += (q[l] & 0xF) as i32 * a[l] as i32;
                hi += (q[l] >> 4) as i32 * a[l + 32] as i32;
            }
            sumi += sc[2 * k] * lo + sc[2 * k + 1] * hi;
        }
        let d = xb.d.to_f32() * yb.d;
        let dmin = xb.dmin.to_f32() * yb.d;
        sumf += d * sumi as f32 - dmin * k4_min_term(&mn, &yb.bsums) as f32;
    }
    sumf
}

pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let (sc, mn) = k4_scales_mins(&xb.scales);
        let mut sumi = 0i32;
        for k in 0..QK_K / 64 {
            let q = &xb.qs[32 * k..32 * k + 32];
            let a = &yb.qs[64 * k..64 * k + 64];
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let h0 = ((xb.qh[l] >> (2 * k)) & 1) as i32 * 16;
                let h1 = ((xb.qh[l] >> (2 * k + 1)) & 1) as i32 * 16;
                lo += ((q[l] & 0xF) as i32 + h0) * a[l] as i32;
                hi += ((q[l] >> 4) as i32 + h1) * a[l + 32] as i32;
            }
            sumi += sc[2 * k] * lo + sc[2 * k + 1] * hi;
        }
        let d = xb.d.to_f32() * yb.d;
        let dmin = xb.dmin.to_f32() * yb.d;
        sumf += d * sumi as f32 - dmin * k4_min_term(&mn, &yb.bsums) as f32;
    }
    sumf
}

pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for k in 0..QK_K / 128 {
            let ql = &xb.ql[64 * k..64 * k + 64];
            let qh = &xb.qh[32 * k..32 * k + 32];
            let a = &yb.qs[128 * k..128 * k + 128];
            let sc = &xb.scales[8 * k..8 * k + 8];
            let mut sub = [0i32; 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                sub[is] += q1 * a[l] as i32;
                sub[is + 2] += q2 * a[l + 32] as i32;
                sub[is + 4] += q3 * a[l + 64] as i32;
                sub[is + 6] += q4 * a[l + 96] as i32;
            }
            for j in 0..8 {
                sumi += sc[j] as i32 * sub[j];
            }
        }
        sumf += xb.d.to_f32() * yb.d * sumi as f32;
    }
    sumf
}

/// The 2-bit quant of value `k` of a Q2_K / Q3_K super-block's `qs` (four values 32 apart per
/// byte, 128 values per 32 bytes).
#[inline(always)]
fn low2(qs: &[u8; QK_K / 4], k: usize) -> i32 {
    ((qs[32 * (k / 128) + k % 32] >> (2 * ((k % 128) / 32))) & 3) as i32
}

/// Q2_K · Q8_K: per sub-block of 16 the integer sum times its 4-bit scale; the mins through
/// Q8_K's block sums. Mirrors `ggml_vec_dot_q2_K_q8_K_generic`.
pub fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        let mut summs = 0i32;
        for j in 0..QK_K / 16 {
            let mut s = 0i32;
            for i in 0..16 {
                let k = 16 * j + i;
                s += low2(&xb.qs, k) * yb.qs[k] as i32;
            }
            sumi += (xb.scales[j] & 0xF) as i32 * s;
            summs += (xb.scales[j] >> 4) as i32 * yb.bsums[j] as i32;
        }
        let dall = yb.d * xb.d.to_f32();
        let dmin = yb.d * xb.dmin.to_f32();
        sumf += dall * sumi as f32 - dmin * summs as f32;
    }
    sumf
}

/// Q3_K · Q8_K: 3-bit quants (two low bits, and −4 unless the high bit is set) times the
/// activations per sub-block of 16, times its 6-bit scale − 32. Mirrors
/// `ggml_vec_dot_q3_K_q8_K_generic`.
pub fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let sc = quantize::lowbit::q3k_scales(&xb.scales);
        let mut sumi = 0i32;
        for j in 0..QK_K / 16 {
            let mut s = 0i32;
            for i in 0..16 {
                let k = 16 * j + i;
                let hi = if xb.hmask[k % 32] >> (k / 32) & 1 != 0 {
                    0
                } else {
                    4
                };
                s += (low2(&xb.qs, k) - hi) * yb.qs[k] as i32;
            }
            sumi += (sc[j] as i32 - 32) * s;
        }
        sumf += xb.d.to_f32() * yb.d * sumi as f32;
    }
    sumf
}

/// IQ4_NL · Q8_0: the grid values of the 4-bit indices times the activations. Mirrors
/// `ggml_vec_dot_iq4_nl_q8_0_generic`.
pub fn vec_dot_iq4_nl_q8_0(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
    let kv = &quantize::lowbit::KVALUES_IQ4NL;
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += kv[(xb.qs[j] & 0xF) as usize] as i32 * yb.qs[j] as i32;
            sumi += kv[(xb.qs[j] >> 4) as usize] as i32 * yb.qs[j + QK / 2] as i32;
        }
        sumf = block_step(sumf, xb.d, yb.d, sumi);
    }
    sumf
}

/// IQ4_XS · Q8_K: per block of 32 the grid values times the activations, times its 6-bit
/// scale − 32. Mirrors `ggml_vec_dot_iq4_xs_q8_K_generic`.
pub fn vec_dot_iq4_xs_q8_k(x: &[BlockIQ4XS], y: &[BlockQ8K]) -> f32 {
    let kv = &quantize::lowbit::KVALUES_IQ4NL;
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for ib in 0..QK_K / 32 {
            let qs = &xb.qs[16 * ib..16 * ib + 16];
            let a = &yb.qs[32 * ib..32 * ib + 32];
            let mut s = 0i32;
            for j in 0..16 {
                s += kv[(qs[j] & 0xF) as usize] as i32 * a[j] as i32;
                s += kv[(qs[j] >> 4) as usize] as i32 * a[j + 16] as i32;
            }
            sumi += (quantize::lowbit::iq4xs_scale(xb, ib) - 32) * s;
        }
        sumf += xb.d.to_f32() * yb.d * sumi as f32;
    }
    sumf
}
