//! Scalar dot products: the reference every SIMD version is checked against.
//!
//! Integer sums per block, then one float multiply-add per block, as ggml's generic kernels
//! (`ggml_vec_dot_*_generic` in `ggml/src/ggml-cpu/quants.c`) do; the K-quant ones apply the
//! sub-block scales in integers and the mins through Q8_K's block sums.

use half::f16;
use quantize::blocks::*;

/// Attention scores `out[i] = scale · q·K[i]`, key `i` at `k[i·stride ..][..q.len()]`;
/// returns their maximum.
pub fn attn_scores(q: &[f32], k: &[f32], stride: usize, scale: f32, out: &mut [f32]) -> f32 {
    let hd = q.len();
    let mut max = f32::NEG_INFINITY;
    for (i, o) in out.iter_mut().enumerate() {
        *o = vec_dot_f32(q, &k[i * stride..i * stride + hd]) * scale;
        max = max.max(*o);
    }
    max
}

/// `out += Σ_i p[i] · V[i]`, row `i` at `v[i·stride ..][..out.len()]`, rows in order, one
/// fused multiply-add per element and row (as the SIMD kernels).
pub fn attn_values(p: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    let hd = out.len();
    for (i, &w) in p.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(&v[i * stride..i * stride + hd]) {
            *o = w.mul_add(x, *o);
        }
    }
}

/// Σ x·y over f32.
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    // Eight running sums: the same association as the AVX2 kernel's lanes, and faster.
    let mut acc = [0f32; 8];
    let n8 = x.len() / 8 * 8;
    for (xc, yc) in x[..n8].chunks_exact(8).zip(y[..n8].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += xc[k] * yc[k];
        }
    }
    let mut s = acc.iter().sum::<f32>();
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

pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (xb, yb) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let v0 = (xb.qs[j] & 0x0F) as i32 - 8;
            let v1 = (xb.qs[j] >> 4) as i32 - 8;
            sumi += v0 * yb.qs[j] as i32 + v1 * yb.qs[j + QK / 2] as i32;
        }
        sumf += sumi as f32 * (xb.d.to_f32() * yb.d.to_f32());
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
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32 + xb.m.to_f32() * yb.s.to_f32();
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
        sumf += sumi as f32 * (xb.d.to_f32() * yb.d.to_f32());
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
        sumf += (xb.d.to_f32() * yb.d.to_f32()) * sumi as f32 + xb.m.to_f32() * yb.s.to_f32();
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
        sumf += sumi as f32 * (xb.d.to_f32() * yb.d.to_f32());
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
