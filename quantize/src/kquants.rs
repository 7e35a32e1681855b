//! The K-quants Q4_K, Q5_K, Q6_K and the activation format Q8_K: 256-value super-blocks.
//!
//! Mirrors ggml's `quantize_row_q{4,5,6,8}_K_ref` (plain), `quantize_row_q{4,5,6}_K_impl`
//! (importance-weighted) and `dequantize_row_q{4,5,6,8}_K` in `ggml/src/ggml-quants.c`.

use half::f16;

use crate::blocks::*;
use crate::search::{
    make_qkx2_quants, make_qkx3_quants, make_qp_quants, make_qx_quants, nearest_int, GROUP_MAX_EPS,
};
use crate::Quantize;

#[inline(always)]
fn h(x: f32) -> f16 {
    f16::from_f32(x)
}

/// Per 32-value sub-block: `weights = √(Σx²/32) + |x|`, the plain K-quant weighting.
#[inline(always)]
fn plain_subblock_weights(xs: &[f32], weights: &mut [f32; 32]) {
    let mut sum_x2 = 0.0f32;
    for &v in xs {
        sum_x2 += v * v;
    }
    let av_x = (sum_x2 / 32.0).sqrt();
    for (w, &v) in weights.iter_mut().zip(xs) {
        *w = av_x + v.abs();
    }
}

/// 2·Σx²/256 over a super-block: the σ² of the weighted K-quants.
#[inline(always)]
fn superblock_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in &x[..QK_K] {
        sum_x2 += v * v;
    }
    2.0 * sum_x2 / QK_K as f32
}

/// The plain-path scale and min search of Q4_K / Q5_K: per sub-block `make_qkx2_quants`, then
/// 6-bit quantization of scales and mins against their maxima. Returns the packed scales and
/// the two f16 super-block scales. `L` receives the sub-block quants of the search.
fn k_scales_ref(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> ([u8; K_SCALE_SIZE], f16, f16) {
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        plain_subblock_weights(xs, &mut weights);
        let (scale, min) = make_qkx2_quants(
            32,
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    (
        pack_scale_min_k4(&ls, &lm),
        h(max_scale / 63.0),
        h(max_min / 63.0),
    )
}

/// The weighted-path scale and min search of Q4_K / Q5_K: per sub-block `make_qkx3_quants`
/// under `qw·√(σ² + x²)`, then `make_qp_quants` on the scales and mins.
fn k_scales_weighted(
    x: &[f32],
    qw: &[f32],
    nmax: i32,
    clamp63: bool,
    l: &mut [u8; QK_K],
) -> ([u8; K_SCALE_SIZE], f16, f16) {
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; 8];
    let mut scales = [0.0f32; 8];
    let mut sw = [0.0f32; 8];
    let sigma2 = superblock_sigma2(x);
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let qs = &qw[32 * j..32 * j + 32];
        for k in 0..32 {
            weights[k] = qs[k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        let mut sumw = 0.0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (scale, min) = make_qkx3_quants(
            32,
            nmax,
            xs,
            Some(&weights),
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            -0.9,
            0.05,
            36,
            false,
        );
        scales[j] = scale;
        mins[j] = min;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(8, 63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(8, 63, &mins, &mut lm, &sw);
    if clamp63 {
        for j in 0..8 {
            ls[j] = ls[j].min(63);
            lm[j] = lm[j].min(63);
        }
    }
    (pack_scale_min_k4(&ls, &lm), h(d_block), h(m_block))
}

/// Final quants of a Q4_K / Q5_K super-block against the stored (f16, 6-bit) scales and mins;
/// sub-blocks whose scale is zero keep the quants of the search, as in ggml.
fn k_requantize(
    x: &[f32],
    scales: &[u8; K_SCALE_SIZE],
    d: f16,
    dmin: f16,
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let dd = d.to_f32() * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            let v = nearest_int((x[32 * j + ii] + dm) / dd);
            l[32 * j + ii] = v.min(nmax).max(0) as u8;
        }
    }
}

fn pack_q4k(l: &[u8; QK_K], qs: &mut [u8; QK_K / 2]) {
    for (n, q) in (0..QK_K).step_by(64).zip(qs.chunks_exact_mut(32)) {
        for k in 0..32 {
            q[k] = l[n + k] | (l[n + k + 32] << 4);
        }
    }
}

fn pack_q5k(l: &[u8; QK_K], qh: &mut [u8; QK_K / 8], ql: &mut [u8; QK_K / 2]) {
    qh.fill(0);
    let (mut m1, mut m2) = (1u8, 2u8);
    for (n, q) in (0..QK_K).step_by(64).zip(ql.chunks_exact_mut(32)) {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            q[j] = l1 | (l2 << 4);
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
}

impl Quantize for BlockQ4K {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        let mut l = [0u8; QK_K];
        for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let (scales, d, dmin) = k_scales_ref(xb, 15, -1.0, 20, &mut l);
            yb.scales = scales;
            yb.d = d;
            yb.dmin = dmin;
            k_requantize(xb, &yb.scales, d, dmin, 15, &mut l);
            pack_q4k(&l, &mut yb.qs);
        }
    }

    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        let mut l = [0u8; QK_K];
        for ((xb, qb), yb) in x
            .chunks_exact(QK_K)
            .zip(qw.chunks_exact(QK_K))
            .zip(y.iter_mut())
        {
            let (scales, d, dmin) = k_scales_weighted(xb, qb, 15, false, &mut l);
            yb.scales = scales;
            yb.d = d;
            yb.dmin = dmin;
            k_requantize(xb, &yb.scales, d, dmin, 15, &mut l);
            pack_q4k(&l, &mut yb.qs);
        }
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = xb.d.to_f32();
            let min = xb.dmin.to_f32();
            for (k, (q, out)) in xb
                .qs
                .chunks_exact(32)
                .zip(yb.chunks_exact_mut(64))
                .enumerate()
            {
                let (sc, m) = get_scale_min_k4(2 * k, &xb.scales);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = get_scale_min_k4(2 * k + 1, &xb.scales);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                for l in 0..32 {
                    out[l] = d1 * (q[l] & 0xF) as f32 - m1;
                    out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                }
            }
        }
    }
}

impl Quantize for BlockQ5K {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        let mut l = [0u8; QK_K];
        for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let (scales, d, dmin) = k_scales_ref(xb, 31, -0.5, 15, &mut l);
            yb.scales = scales;
            yb.d = d;
            yb.dmin = dmin;
            k_requantize(xb, &yb.scales, d, dmin, 31, &mut l);
            pack_q5k(&l, &mut yb.qh, &mut yb.qs);
        }
    }

    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        let mut l = [0u8; QK_K];
        for ((xb, qb), yb) in x
            .chunks_exact(QK_K)
            .zip(qw.chunks_exact(QK_K))
            .zip(y.iter_mut())
        {
            let (scales, d, dmin) = k_scales_weighted(xb, qb, 31, true, &mut l);
            yb.scales = scales;
            yb.d = d;
            yb.dmin = dmin;
            k_requantize(xb, &yb.scales, d, dmin, 31, &mut l);
            pack_q5k(&l, &mut yb.qh, &mut yb.qs);
        }
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = xb.d.to_f32();
            let min = xb.dmin.to_f32();
            let (mut u1, mut u2) = (1u8, 2u8);
            for (k, (ql, out)) in xb
                .qs
                .chunks_exact(32)
                .zip(yb.chunks_exact_mut(64))
                .enumerate()
            {
                let (sc, m) = get_scale_min_k4(2 * k, &xb.scales);
                let (d1, m1) = (d * sc as f32, min * m as f32);
                let (sc, m) = get_scale_min_k4(2 * k + 1, &xb.scales);
                let (d2, m2) = (d * sc as f32, min * m as f32);
                for l in 0..32 {
                    let h1 = if xb.qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if xb.qh[l] & u2 != 0 { 16 } else { 0 };
                    out[l] = d1 * ((ql[l] & 0xF) as i32 + h1) as f32 - m1;
                    out[l + 32] = d2 * ((ql[l] >> 4) as i32 + h2) as f32 - m2;
                }
                u1 = u1.wrapping_shl(2);
                u2 = u2.wrapping_shl(2);
            }
        }
    }
}

/// Q6_K's shared body: per 16-value sub-block `make_qx_quants(16, 32, …)` (with the importance
/// weights when given), int8 sub-block scales against the largest, then requantization.
/// Mirrors ggml's `quantize_row_q6_K_ref` / `quantize_row_q6_K_impl`.
fn quantize_q6k_block(xb: &[f32], qw: Option<&[f32]>, yb: &mut BlockQ6K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..QK_K / 16 {
        let w = qw.map(|q| &q[16 * ib..16 * ib + 16]);
        let scale = make_qx_quants(16, 32, &xb[16 * ib..], &mut l[16 * ib..16 * ib + 16], 1, w);
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *yb = BlockQ6K::zeroed_block();
        return;
    }
    let iscale = -128.0f32 / max_scale;
    yb.d = h(1.0 / iscale);
    for ib in 0..QK_K / 16 {
        yb.scales[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let d = yb.d.to_f32() * yb.scales[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let v = nearest_int(xb[16 * j + ii] / d).min(31).max(-32);
            l[16 * j + ii] = (v + 32) as i8;
        }
    }
    for (k, j) in (0..QK_K).step_by(128).enumerate() {
        let ql = &mut yb.ql[64 * k..64 * k + 64];
        let qh = &mut yb.qh[32 * k..32 * k + 32];
        for i in 0..32 {
            let q = |o: usize| l[j + i + o] as u8;
            ql[i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
            ql[i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
            qh[i] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
}

impl BlockQ6K {
    fn zeroed_block() -> Self {
        bytemuck::Zeroable::zeroed()
    }
}

impl Quantize for BlockQ6K {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            quantize_q6k_block(xb, None, yb);
        }
    }

    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        for ((xb, qb), yb) in x
            .chunks_exact(QK_K)
            .zip(qw.chunks_exact(QK_K))
            .zip(y.iter_mut())
        {
            quantize_q6k_block(xb, Some(qb), yb);
        }
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = xb.d.to_f32();
            for (k, out) in yb.chunks_exact_mut(128).enumerate() {
                let ql = &xb.ql[64 * k..];
                let qh = &xb.qh[32 * k..];
                let sc = &xb.scales[8 * k..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 as i32 - 32;
                    out[l] = d * sc[is] as f32 * q1 as f32;
                    out[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
                    out[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
                    out[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
                }
            }
        }
    }
}

impl Quantize for BlockQ8K {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
            let mut max = 0.0f32;
            let mut amax = 0.0f32;
            for &v in xb {
                let ax = v.abs();
                if ax > amax {
                    amax = ax;
                    max = v;
                }
            }
            if amax == 0.0 {
                yb.d = 0.0;
                yb.qs = [0; QK_K];
                yb.bsums = [0; QK_K / 16];
                continue;
            }
            let iscale = -127.0f32 / max;
            for (q, &v) in yb.qs.iter_mut().zip(xb) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (j, s) in yb.bsums.iter_mut().enumerate() {
                *s = yb.qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&q| q as i32)
                    .sum::<i32>() as i16;
            }
            yb.d = 1.0 / iscale;
        }
    }

    /// An activation format: there is no weighted path.
    fn quantize_row_weighted(x: &[f32], y: &mut [Self], _qw: &[f32]) {
        Self::quantize_row_ref(x, y)
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            for (o, &q) in yb.iter_mut().zip(&xb.qs) {
                *o = xb.d * q as f32;
            }
        }
    }
}
