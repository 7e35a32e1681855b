//! The 32-value formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the activation format Q8_1.
//!
//! Plain quantizers mirror ggml's `quantize_row_*_ref`, importance-weighted ones ggml's
//! `quantize_row_*_impl` (what `quantize_*` calls with `quant_weights`), dequantizers ggml's
//! `dequantize_row_*`, all in `ggml/src/ggml-quants.c`.

use half::f16;

use crate::blocks::*;
use crate::search::{make_qkx3_quants, make_qx_quants};
use crate::Quantize;

#[inline(always)]
fn h(x: f32) -> f16 {
    f16::from_f32(x)
}

/// The value of largest magnitude, keeping its sign (the first one on ties).
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Σx²/n over the whole row: the σ² ggml's weighted legacy quantizers add to x².
#[inline]
fn row_sigma2(x: &[f32]) -> f32 {
    let mut sum_x2 = 0.0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    sum_x2 / x.len() as f32
}

/// Packs the fifth bits of 32 five-bit values as Q5_0/Q5_1 store them.
#[inline(always)]
fn pack_q5(l: impl Fn(usize) -> u8) -> ([u8; 16], [u8; 4]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let (xi0, xi1) = (l(j), l(j + 16));
        qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) as u32) >> 4) << j;
        qh |= (((xi1 & 0x10) as u32) >> 4) << (j + 16);
    }
    (qs, qh.to_le_bytes())
}

impl Quantize for BlockQ4_0 {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
            let d = signed_absmax(xb) / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = h(d);
            for j in 0..QK / 2 {
                let x0 = xb[j] * id;
                let x1 = xb[QK / 2 + j] * id;
                let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
                yb.qs[j] = xi0 | (xi1 << 4);
            }
        }
    }

    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        let sigma2 = row_sigma2(x);
        let mut weight = [0.0f32; QK];
        let mut l = [0i8; QK];
        for ((xb, qb), yb) in x
            .chunks_exact(QK)
            .zip(qw.chunks_exact(QK))
            .zip(y.iter_mut())
        {
            for j in 0..QK {
                weight[j] = qb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
            let d = make_qx_quants(QK, 8, xb, &mut l, 1, Some(&weight));
            yb.d = h(d);
            for j in 0..16 {
                yb.qs[j] = (l[j] as u8) | ((l[j + 16] as u8) << 4);
            }
        }
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
            let d = xb.d.to_f32();
            for j in 0..QK / 2 {
                let x0 = (xb.qs[j] & 0x0F) as i32 - 8;
                let x1 = (xb.qs[j] >> 4) as i32 - 8;
                yb[j] = x0 as f32 * d;
                yb[j + QK / 2] = x1 as f32 * d;
            }
        }
    }
}

impl Quantize for BlockQ4_1 {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
            let (min, max) = min_max(xb);
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = h(d);
            yb.m = h(min);
            for j in 0..QK / 2 {
                let x0 = (xb[j] - min) * id;
                let x1 = (xb[QK / 2 + j] - min) * id;
                let xi0 = ((x0 + 0.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 0.5) as i8).min(15) as u8;
                yb.qs[j] = xi0 | (xi1 << 4);
            }
        }
    }

    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        let sigma2 = row_sigma2(x);
        let mut weight = [0.0f32; QK];
        let mut l = [0u8; QK];
        let mut laux = [0u8; QK];
        for ((xb, qb), yb) in x
            .chunks_exact(QK)
            .zip(qw.chunks_exact(QK))
            .zip(y.iter_mut())
        {
            for j in 0..QK {
                weight[j] = qb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
            let (d, min) = make_qkx3_quants(
                QK,
                15,
                xb,
                Some(&weight),
                &mut l,
                &mut laux,
                -0.9,
                0.05,
                36,
                false,
            );
            yb.d = h(d);
            yb.m = h(-min);
            for j in 0..16 {
                yb.qs[j] = l[j] | (l[j + 16] << 4);
            }
        }
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
            let d = xb.d.to_f32();
            let m = xb.m.to_f32();
            for j in 0..QK / 2 {
                let x0 = (xb.qs[j] & 0x0F) as i32;
                let x1 = (xb.qs[j] >> 4) as i32;
                yb[j] = x0 as f32 * d + m;
                yb[j + QK / 2] = x1 as f32 * d + m;
            }
        }
    }
}

/// The 5-bit values of a Q5 block (without the −16 offset).
#[inline(always)]
fn unpack_q5(qs: &[u8; 16], qh: &[u8; 4], j: usize) -> (i32, i32) {
    let qh = u32::from_le_bytes(*qh);
    let xh_0 = ((qh >> j) << 4) & 0x10;
    let xh_1 = (qh >> (j + 12)) & 0x10;
    (
        ((qs[j] & 0x0F) as u32 | xh_0) as i32,
        ((qs[j] >> 4) as u32 | xh_1) as i32,
    )
}

impl Quantize for BlockQ5_0 {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
            let d = signed_absmax(xb) / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = h(d);
            let (qs, qh) = pack_q5(|j| ((xb[j] * id + 16.5) as i8).min(31) as u8);
            yb.qs = qs;
            yb.qh = qh;
        }
    }

    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        let sigma2 = row_sigma2(x);
        let mut weight = [0.0f32; QK];
        let mut l = [0i8; QK];
        for ((xb, qb), yb) in x
            .chunks_exact(QK)
            .zip(qw.chunks_exact(QK))
            .zip(y.iter_mut())
        {
            for j in 0..QK {
                weight[j] = qb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
            let d = make_qx_quants(QK, 16, xb, &mut l, 1, Some(&weight));
            yb.d = h(d);
            let (qs, qh) = pack_q5(|j| l[j] as u8);
            yb.qs = qs;
            yb.qh = qh;
        }
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
            let d = xb.d.to_f32();
            for j in 0..QK / 2 {
                let (x0, x1) = unpack_q5(&xb.qs, &xb.qh, j);
                yb[j] = (x0 - 16) as f32 * d;
                yb[j + QK / 2] = (x1 - 16) as f32 * d;
            }
        }
    }
}

impl Quantize for BlockQ5_1 {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
            let (min, max) = min_max(xb);
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = h(d);
            yb.m = h(min);
            let (qs, qh) = pack_q5(|j| ((xb[j] - min) * id + 0.5) as u8);
            yb.qs = qs;
            yb.qh = qh;
        }
    }

    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        let sigma2 = row_sigma2(x);
        let mut weight = [0.0f32; QK];
        let mut l = [0u8; QK];
        let mut laux = [0u8; QK];
        for ((xb, qb), yb) in x
            .chunks_exact(QK)
            .zip(qw.chunks_exact(QK))
            .zip(y.iter_mut())
        {
            for j in 0..QK {
                weight[j] = qb[j] * (sigma2 + xb[j] * xb[j]).sqrt();
            }
            let (d, min) = make_qkx3_quants(
                QK,
                31,
                xb,
                Some(&weight),
                &mut l,
                &mut laux,
                -0.9,
                0.05,
                36,
                false,
            );
            yb.d = h(d);
            yb.m = h(-min);
            let (qs, qh) = pack_q5(|j| l[j]);
            yb.qs = qs;
            yb.qh = qh;
        }
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
            let d = xb.d.to_f32();
            let m = xb.m.to_f32();
            for j in 0..QK / 2 {
                let (x0, x1) = unpack_q5(&xb.qs, &xb.qh, j);
                yb[j] = x0 as f32 * d + m;
                yb[j + QK / 2] = x1 as f32 * d + m;
            }
        }
    }
}

#[inline(always)]
fn absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    amax
}

impl Quantize for BlockQ8_0 {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
            let d = absmax(xb) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = h(d);
            for (q, &v) in yb.qs.iter_mut().zip(xb) {
                *q = (v * id).round() as i8;
            }
        }
    }

    /// ggml's `quantize_q8_0` ignores importance weights: Q8_0 has no scale search.
    fn quantize_row_weighted(x: &[f32], y: &mut [Self], _qw: &[f32]) {
        Self::quantize_row_ref(x, y)
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
            let d = xb.d.to_f32();
            for (o, &q) in yb.iter_mut().zip(&xb.qs) {
                *o = q as f32 * d;
            }
        }
    }
}

impl Quantize for BlockQ8_1 {
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (xb, yb) in x.chunks_exact(QK).zip(y.iter_mut()) {
            let d = absmax(xb) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            yb.d = h(d);
            let mut sum = 0i32;
            for j in 0..QK / 2 {
                let v0 = (xb[j] * id).round() as i8;
                let v1 = (xb[QK / 2 + j] * id).round() as i8;
                yb.qs[j] = v0;
                yb.qs[QK / 2 + j] = v1;
                sum += v0 as i32 + v1 as i32;
            }
            yb.s = h(sum as f32 * d);
        }
    }

    /// An activation format: there is no weighted path.
    fn quantize_row_weighted(x: &[f32], y: &mut [Self], _qw: &[f32]) {
        Self::quantize_row_ref(x, y)
    }

    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (xb, yb) in x.iter().zip(y.chunks_exact_mut(QK)) {
            let d = xb.d.to_f32();
            for (o, &q) in yb.iter_mut().zip(&xb.qs) {
                *o = q as f32 * d;
            }
        }
    }
}
