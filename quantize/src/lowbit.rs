//! The low-bit tier: Q2_K and Q3_K (256-value super-blocks of sixteen 16-value sub-blocks) and
//! the non-linear IQ4_NL (32-value blocks) and IQ4_XS (256-value super-blocks with 6-bit
//! sub-block scales), whose 16 levels are ggml's `kvalues_iq4nl` grid.
//!
//! Mirrors, in `ggml/src/ggml-quants.c`: `quantize_row_q2_K_ref`, `quantize_row_q2_K_impl`,
//! `dequantize_row_q2_K`; `make_q3_quants`, `quantize_row_q3_K_ref`, `quantize_row_q3_K_impl`,
//! `dequantize_row_q3_K`; `best_index_int8`, `quantize_row_iq4_nl_impl` as `quantize_iq4_nl`
//! and `quantize_iq4_xs` call it, `dequantize_row_iq4_nl`, `dequantize_row_iq4_xs`. The
//! arithmetic is ggml's to the bit (operation order, f32 throughout, no fused multiply-add).
//!
//! The IQ4 formats' plain path is what llama-quantize writes without an imatrix —
//! `quantize_iq4_nl` / `quantize_iq4_xs` with no weights (a 15-point scale search under x²) —
//! not ggml's `quantize_row_iq4_nl_ref` (no search), which ggml uses only to convert
//! activations in its CPU backend and which model files never contain.

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

/// The 2-bit quants of a super-block into `qs`: four values 32 apart per byte, as ggml packs
/// Q2_K's and Q3_K's low bits.
pub(crate) fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

// ----------------------------------------------------------------------------------------- Q2_K

/// Requantizes each sub-block against its stored scale and min (ggml's final Q2_K pass) and
/// packs the block.
fn q2k_finish(x: &[f32], y: &mut BlockQ2K, l: &mut [u8; QK_K]) {
    let d_all = y.d.to_f32();
    let m_all = y.dmin.to_f32();
    for j in 0..QK_K / 16 {
        let d = d_all * (y.scales[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * (y.scales[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + dm) / d);
            l[16 * j + ii] = q.min(3).max(0) as u8;
        }
    }
    pack_2bit(l, &mut y.qs);
}

impl Quantize for BlockQ2K {
    /// ggml's `quantize_row_q2_K_ref`.
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        const Q4SCALE: f32 = 15.0;
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weights = [0f32; 16];
        let mut mins = [0f32; QK_K / 16];
        let mut scales = [0f32; QK_K / 16];
        for (i, yb) in y.iter_mut().enumerate() {
            let x = &x[i * QK_K..(i + 1) * QK_K];
            let mut max_scale = 0f32;
            let mut max_min = 0f32;
            for j in 0..QK_K / 16 {
                let xs = &x[16 * j..16 * j + 16];
                for (w, v) in weights.iter_mut().zip(xs) {
                    *w = v.abs();
                }
                let (s, m) = make_qkx2_quants(
                    16,
                    3,
                    xs,
                    &weights,
                    &mut l[16 * j..16 * j + 16],
                    &mut laux,
                    -0.5,
                    0.1,
                    15,
                    true,
                );
                scales[j] = s;
                mins[j] = m;
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            if max_scale > 0.0 {
                let iscale = Q4SCALE / max_scale;
                for j in 0..QK_K / 16 {
                    yb.scales[j] = nearest_int(iscale * scales[j]) as u8;
                }
                yb.d = h(max_scale / Q4SCALE);
            } else {
                yb.scales = [0; QK_K / 16];
                yb.d = h(0.0);
            }
            if max_min > 0.0 {
                let iscale = Q4SCALE / max_min;
                for j in 0..QK_K / 16 {
                    let q = nearest_int(iscale * mins[j]);
                    yb.scales[j] |= (q << 4) as u8;
                }
                yb.dmin = h(max_min / Q4SCALE);
            } else {
                yb.dmin = h(0.0);
            }
            q2k_finish(x, yb, &mut l);
        }
    }

    /// ggml's `quantize_row_q2_K_impl`.
    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut mins = [0f32; QK_K / 16];
        let mut scales = [0f32; QK_K / 16];
        let mut weight = [0f32; 16];
        let mut ls = [0u8; QK_K / 16];
        let mut lm = [0u8; QK_K / 16];
        for (i, yb) in y.iter_mut().enumerate() {
            let x = &x[i * QK_K..(i + 1) * QK_K];
            let mut sw = [0f32; QK_K / 16];
            let mut sumx2 = 0f32;
            for &v in x {
                sumx2 += v * v;
            }
            let sigma2 = sumx2 / QK_K as f32;
            for j in 0..QK_K / 16 {
                let q = &qw[QK_K * i + 16 * j..QK_K * i + 16 * j + 16];
                let xs = &x[16 * j..16 * j + 16];
                for k in 0..16 {
                    weight[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
                }
                for &w in &weight {
                    sw[j] += w;
                }
                let (s, m) = make_qkx3_quants(
                    16,
                    3,
                    xs,
                    Some(&weight),
                    &mut l[16 * j..16 * j + 16],
                    &mut laux,
                    -0.9,
                    0.05,
                    36,
                    false,
                );
                scales[j] = s;
                mins[j] = m;
            }
            let dm = make_qp_quants(QK_K / 16, 15, &scales, &mut ls, &sw);
            let mm = make_qp_quants(QK_K / 16, 15, &mins, &mut lm, &sw);
            yb.d = h(dm);
            yb.dmin = h(mm);
            for j in 0..QK_K / 16 {
                yb.scales[j] = ls[j] | (lm[j] << 4);
            }
            q2k_finish(x, yb, &mut l);
        }
    }

    /// ggml's `dequantize_row_q2_K`.
    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = b.d.to_f32();
            let min = b.dmin.to_f32();
            let mut k = 0;
            let mut is = 0;
            for n in (0..QK_K).step_by(128) {
                let q = &b.qs[n / 4..n / 4 + 32];
                for shift in [0u32, 2, 4, 6] {
                    for half in [0usize, 16] {
                        let sc = b.scales[is];
                        is += 1;
                        let dl = d * (sc & 0xF) as f32;
                        let ml = min * (sc >> 4) as f32;
                        for i in 0..16 {
                            out[k] = dl * ((q[half + i] >> shift) & 3) as f32 - ml;
                            k += 1;
                        }
                    }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------------- Q3_K

/// Symmetric quantization of `x` to `L ∈ [0, 2·nmax)` with an x²-weighted coordinate search.
/// Mirrors ggml's `make_q3_quants`; returns the scale.
fn make_q3_quants(n: usize, nmax: i32, x: &[f32], l_out: &mut [i8], do_rmse: bool) -> f32 {
    let x = &x[..n];
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let iscale = (-nmax) as f32 / max;
    if do_rmse {
        let mut sumlx = 0f32;
        let mut suml2 = 0f32;
        for i in 0..n {
            let l = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
            l_out[i] = l as i8;
            let w = x[i] * x[i];
            let lf = l as f32;
            sumlx += w * x[i] * lf;
            suml2 += w * lf * lf;
        }
        for _ in 0..5 {
            let mut n_changed = 0;
            for i in 0..n {
                let w = x[i] * x[i];
                let li = l_out[i] as f32;
                let mut slx = sumlx - w * x[i] * li;
                if slx > 0.0 {
                    let mut sl2 = suml2 - w * li * li;
                    let new_l = nearest_int(x[i] * sl2 / slx).min(nmax - 1).max(-nmax);
                    if new_l != l_out[i] as i32 {
                        let nl = new_l as f32;
                        slx += w * x[i] * nl;
                        sl2 += w * nl * nl;
                        if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                            l_out[i] = new_l as i8;
                            sumlx = slx;
                            suml2 = sl2;
                            n_changed += 1;
                        }
                    }
                }
            }
            if n_changed == 0 {
                break;
            }
        }
        for li in l_out[..n].iter_mut() {
            *li += nmax as i8;
        }
        return if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    }
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
        l_out[i] = (l + nmax) as i8;
    }
    1.0 / iscale
}

/// Stores the 6-bit sub-block scale `l` (0..64) of sub-block `j` in Q3_K's 12-byte layout.
#[inline(always)]
pub(crate) fn q3k_put_scale(scales: &mut [u8; 12], j: usize, l: i32) {
    if j < 8 {
        scales[j] = (l & 0xF) as u8;
    } else {
        scales[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let hi = l >> 4;
    scales[j % 4 + 8] |= (hi << (2 * (j / 4))) as u8;
}

/// The signed scale of sub-block `j` as ggml's quantizers read it back.
#[inline(always)]
fn q3k_get_scale(scales: &[u8; 12], j: usize) -> i32 {
    let sc = if j < 8 {
        scales[j] & 0xF
    } else {
        scales[j - 8] >> 4
    };
    (sc | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8 as i32 - 32
}

/// Requantizes against the stored scales, sets the high-bit mask and packs the low bits
/// (ggml's final Q3_K pass). `l` holds the search's quants in `[0, 8)` on entry.
fn q3k_finish(x: &[f32], y: &mut BlockQ3K, l: &mut [i8; QK_K]) {
    let d_all = y.d.to_f32();
    for j in 0..QK_K / 16 {
        let d = d_all * q3k_get_scale(&y.scales, j) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).min(3).max(-4);
            l[16 * j + ii] = (q + 4) as i8;
        }
    }
    q3k_pack(y, l);
}

/// Sets Q3_K's high-bit mask and packs the low bits of the quants `l` in `[0, 8)` (the tail of
/// ggml's `quantize_row_q3_K_ref`).
pub(crate) fn q3k_pack(y: &mut BlockQ3K, l: &[i8; QK_K]) {
    y.hmask = [0; QK_K / 8];
    let mut m = 0;
    let mut hm = 1u8;
    let mut low = [0u8; QK_K];
    for j in 0..QK_K {
        let mut v = l[j];
        if v > 3 {
            y.hmask[m] |= hm;
            v -= 4;
        }
        low[j] = v as u8;
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm <<= 1;
        }
    }
    pack_2bit(&low, &mut y.qs);
}

impl Quantize for BlockQ3K {
    /// ggml's `quantize_row_q3_K_ref`.
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        for (i, yb) in y.iter_mut().enumerate() {
            let x = &x[i * QK_K..(i + 1) * QK_K];
            let mut max_scale = 0f32;
            let mut amax = 0f32;
            for j in 0..QK_K / 16 {
                scales[j] = make_q3_quants(16, 4, &x[16 * j..], &mut l[16 * j..16 * j + 16], true);
                let scale = scales[j].abs();
                if scale > amax {
                    amax = scale;
                    max_scale = scales[j];
                }
            }
            yb.scales = [0; 12];
            if max_scale != 0.0 {
                let iscale = -32.0f32 / max_scale;
                for j in 0..QK_K / 16 {
                    // C: `int8_t l = nearest_int(…)` truncates to 8 bits before the clamp.
                    let q = nearest_int(iscale * scales[j]) as i8 as i32;
                    q3k_put_scale(&mut yb.scales, j, q.min(31).max(-32) + 32);
                }
                yb.d = h(1.0 / iscale);
            } else {
                yb.d = h(0.0);
            }
            q3k_finish(x, yb, &mut l);
        }
    }

    /// ggml's `quantize_row_q3_K_impl` (with importance weights, as `quantize_q3_K` calls it).
    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut weight = [0f32; 16];
        let mut sw = [0f32; QK_K / 16];
        let mut ls = [0i8; QK_K / 16];
        for (i, yb) in y.iter_mut().enumerate() {
            let x = &x[i * QK_K..(i + 1) * QK_K];
            let mut sumx2 = 0f32;
            for &v in x {
                sumx2 += v * v;
            }
            let sigma2 = 2.0 * sumx2 / QK_K as f32;
            for j in 0..QK_K / 16 {
                let q = &qw[QK_K * i + 16 * j..QK_K * i + 16 * j + 16];
                let xs = &x[16 * j..16 * j + 16];
                for k in 0..16 {
                    weight[k] = q[k] * (sigma2 + xs[k] * xs[k]).sqrt();
                }
                let mut sumw = 0f32;
                for &w in &weight {
                    sumw += w;
                }
                sw[j] = sumw;
                scales[j] =
                    make_qx_quants(16, 4, xs, &mut l[16 * j..16 * j + 16], 1, Some(&weight));
            }
            yb.scales = [0; 12];
            let d_block = make_qx_quants(QK_K / 16, 32, &scales, &mut ls, 1, Some(&sw));
            for j in 0..QK_K / 16 {
                q3k_put_scale(&mut yb.scales, j, ls[j] as i32);
            }
            yb.d = h(d_block);
            q3k_finish(x, yb, &mut l);
        }
    }

    /// ggml's `dequantize_row_q3_K`.
    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d_all = b.d.to_f32();
            let sc = q3k_scales(&b.scales);
            let mut k = 0;
            let mut is = 0;
            let mut m = 1u8;
            for n in (0..QK_K).step_by(128) {
                let q = &b.qs[n / 4..n / 4 + 32];
                for shift in [0u32, 2, 4, 6] {
                    for half in [0usize, 16] {
                        let dl = d_all * (sc[is] as i32 - 32) as f32;
                        is += 1;
                        for i in 0..16 {
                            let low = ((q[half + i] >> shift) & 3) as i32;
                            let hi = if b.hmask[half + i] & m != 0 { 0 } else { 4 };
                            out[k] = dl * (low - hi) as f32;
                            k += 1;
                        }
                    }
                    m <<= 1;
                }
            }
        }
    }
}

/// Q3_K's sixteen 6-bit scales (offset by 32) unpacked from its 12 bytes, as ggml's
/// `dequantize_row_q3_K` and dot products unpack them (the `kmask1` / `kmask2` shuffle).
pub fn q3k_scales(s: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let a0 = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let a1 = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
    let tmp = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, b) in a.to_le_bytes().iter().enumerate() {
            out[4 * i + k] = *b as i8;
        }
    }
    out
}

// ------------------------------------------------------------------------------- IQ4_NL, IQ4_XS

/// The 16 levels of IQ4_NL and IQ4_XS (ggml's `kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The index of the level nearest `x` (ties to the lower). Mirrors ggml's `best_index_int8`.
#[inline(always)]
pub(crate) fn best_index_int8(values: &[i8; 16], x: f32) -> u8 {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < values[mu] as f32 - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// One IQ4 super-block of `SBS` values in 32-value blocks: ggml's `quantize_row_iq4_nl_impl`
/// with `ntry = 7`, as `quantize_iq4_nl` (SBS = 32) and `quantize_iq4_xs` (SBS = 256) call it.
/// Returns the f16 scale, the high and low bits of the 6-bit block scales (IQ4_XS only) and
/// fills `q4`.
fn iq4_superblock<const SBS: usize>(
    x: &[f32],
    qw: Option<&[f32]>,
    q4: &mut [u8],
) -> (f16, u16, [u8; QK_K / 64]) {
    const NTRY: i32 = 7;
    let values = &KVALUES_IQ4NL;
    let x = &x[..SBS];
    let mut sigma2 = 0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / SBS as f32;
    q4[..SBS / 2].fill(0);
    let dh;
    let mut scales_h = 0u16;
    let mut scales_l = [0u8; QK_K / 64];
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut weight = [0f32; 32];
    let mut max_scale = 0f32;
    let mut amax_scale = 0f32;
    let nblocks = SBS / 32;
    for ib in 0..nblocks {
        let xb = &x[32 * ib..32 * ib + 32];
        match qw {
            Some(q) => {
                let q = &q[32 * ib..32 * ib + 32];
                for j in 0..32 {
                    weight[j] = q[j] * (sigma2 + xb[j] * xb[j]).sqrt();
                }
            }
            None => {
                for j in 0..32 {
                    weight[j] = xb[j] * xb[j];
                }
            }
        }
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax < GROUP_MAX_EPS {
            scales[ib] = 0.0;
            continue;
        }
        let mut d = -max / values[0] as f32;
        let mut id = 1.0 / d;
        let mut sumqx = 0f32;
        let mut sumq2 = 0f32;
        for j in 0..32 {
            let li = best_index_int8(values, id * xb[j]);
            l[32 * ib + j] = li;
            let q = values[li as usize] as f32;
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            id = (itry + values[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for j in 0..32 {
                let li = best_index_int8(values, id * xb[j]);
                let q = values[li as usize] as f32;
                let w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scales[ib] = d;
        let abs_d = d.abs();
        if abs_d > amax_scale {
            amax_scale = abs_d;
            max_scale = d;
        }
    }
    if nblocks > 1 {
        let d = -max_scale / 32.0;
        dh = h(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..nblocks {
            let q = nearest_int(id * scales[ib]).min(31).max(-32);
            let dl = d * q as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 0..32 {
                l[32 * ib + j] = best_index_int8(values, idl * x[32 * ib + j]);
            }
            let q = (q + 32) as u8;
            let (lo, hi) = (q & 0xF, q >> 4);
            if ib % 2 == 0 {
                scales_l[ib / 2] = lo;
            } else {
                scales_l[ib / 2] |= lo << 4;
            }
            scales_h |= (hi as u16) << (2 * (ib % 8));
        }
    } else {
        dh = h(scales[0]);
        let id = if scales[0] != 0.0 {
            1.0 / scales[0]
        } else {
            0.0
        };
        for j in 0..SBS {
            l[j] = best_index_int8(values, id * x[j]);
        }
    }
    for i in 0..SBS / 32 {
        for j in 0..16 {
            q4[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
    (dh, scales_h, scales_l)
}

impl Quantize for BlockIQ4NL {
    /// ggml's `quantize_iq4_nl` without weights (what llama-quantize writes; see the module).
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (i, yb) in y.iter_mut().enumerate() {
            let (d, _, _) = iq4_superblock::<QK>(&x[QK * i..], None, &mut yb.qs);
            yb.d = d;
        }
    }

    /// ggml's `quantize_iq4_nl` with importance weights.
    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        for (i, yb) in y.iter_mut().enumerate() {
            let (d, _, _) = iq4_superblock::<QK>(&x[QK * i..], Some(&qw[QK * i..]), &mut yb.qs);
            yb.d = d;
        }
    }

    /// ggml's `dequantize_row_iq4_nl`.
    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
            let d = b.d.to_f32();
            for j in 0..QK / 2 {
                out[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0xF) as usize] as f32;
                out[j + QK / 2] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

impl Quantize for BlockIQ4XS {
    /// ggml's `quantize_iq4_xs` without weights (= `quantize_row_iq4_xs_ref`).
    fn quantize_row_ref(x: &[f32], y: &mut [Self]) {
        for (i, yb) in y.iter_mut().enumerate() {
            let (d, sh, sl) = iq4_superblock::<QK_K>(&x[QK_K * i..], None, &mut yb.qs);
            (yb.d, yb.scales_h, yb.scales_l) = (d, sh, sl);
        }
    }

    /// ggml's `quantize_iq4_xs` with importance weights.
    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]) {
        for (i, yb) in y.iter_mut().enumerate() {
            let (d, sh, sl) =
                iq4_superblock::<QK_K>(&x[QK_K * i..], Some(&qw[QK_K * i..]), &mut yb.qs);
            (yb.d, yb.scales_h, yb.scales_l) = (d, sh, sl);
        }
    }

    /// ggml's `dequantize_row_iq4_xs`.
    fn dequantize_row(x: &[Self], y: &mut [f32]) {
        for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
            let d = b.d.to_f32();
            for ib in 0..QK_K / 32 {
                let dl = d * (iq4xs_scale(b, ib) - 32) as f32;
                let qs = &b.qs[16 * ib..16 * ib + 16];
                let o = &mut out[32 * ib..32 * ib + 32];
                for j in 0..16 {
                    o[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xF) as usize] as f32;
                    o[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
                }
            }
        }
    }
}

/// The 6-bit scale (offset by 32) of block `ib` of an IQ4_XS super-block.
#[inline(always)]
pub fn iq4xs_scale(b: &BlockIQ4XS, ib: usize) -> i32 {
    (((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32)
        | ((((b.scales_h >> (2 * ib)) & 3) as i32) << 4)
}
