//! The scale searches shared by ggml's quantizers, ported one to one from
//! `ggml/src/ggml-quants.c` (`nearest_int`, `make_qx_quants`, `make_qkx2_quants`,
//! `make_qkx3_quants`, `make_qp_quants`).
//!
//! These decide every byte of an artifact, so they keep ggml's arithmetic exactly: the same
//! operation order, f32 throughout, int-to-float conversions where C makes them, no fused
//! multiply-add (ggml-base is compiled without FMA contraction on x86-64), and `nearest_int`'s
//! bit trick rather than a library rounding function.

/// ggml's sub-blocks below this absolute maximum are treated as all zero (`GROUP_MAX_EPS`).
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, by adding 1.5·2²³ and reading the mantissa; valid for
/// |x| ≤ 4194303. Mirrors ggml's `nearest_int`, including what it returns outside that range
/// (ggml only asserts in debug builds), so out-of-range inputs give ggml's bytes, not a panic.
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0f32;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// The weight of value `x` in ggml's `make_qx_quants` when no importance weights are given.
#[inline(always)]
fn qx_default_weight(rmse_type: i32, x: f32) -> f32 {
    match rmse_type {
        1 => x * x,
        2 => 1.0,
        3 => x.abs(),
        _ => x.abs().sqrt(),
    }
}

/// Symmetric quantization of `x` to `L ∈ [0, 2·nmax)` with a least-squares scale search.
/// Mirrors ggml's `make_qx_quants`; returns the scale.
pub fn make_qx_quants(
    n: usize,
    nmax: i32,
    x: &[f32],
    l_out: &mut [i8],
    mut rmse_type: i32,
    qw: Option<&[f32]>,
) -> f32 {
    let x = &x[..n];
    let l_out = &mut l_out[..n];
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = (-nmax) as f32 / max;
    if rmse_type == 0 {
        for (li, &v) in l_out.iter_mut().zip(x) {
            let l = nearest_int(iscale * v);
            *li = (nmax + l.min(nmax - 1).max(-nmax)) as i8;
        }
        return 1.0 / iscale;
    }
    let mut return_early = false;
    if rmse_type < 0 {
        rmse_type = -rmse_type;
        return_early = true;
    }
    let weight = |i: usize| match qw {
        Some(q) => q[i],
        None => qx_default_weight(rmse_type, x[i]),
    };
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax - 1).max(-nmax);
        l_out[i] = (l + nmax) as i8;
        let w = weight(i);
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    if return_early {
        return if suml2 > 0.0 {
            0.5 * (scale + 1.0 / iscale)
        } else {
            1.0 / iscale
        };
    }
    let mut best = scale * sumlx;
    // The 18 candidate scales are independent of each other (only the choice among them is
    // sequential), so their sums are computed side by side, one lane per candidate, each lane
    // doing exactly the operations, in exactly the order, of ggml's loop for that candidate —
    // the same bits, several times faster. The choice then runs in ggml's order.
    const LANES: usize = 24;
    let mut isc = [0f32; LANES];
    let cands: [i32; 18] = [
        -9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9,
    ];
    for (k, &is) in cands.iter().enumerate() {
        isc[k] = -(nmax as f32 + 0.1f32 * is as f32) / max;
    }
    let mut slx = [0f32; LANES];
    let mut sl2 = [0f32; LANES];
    let mut l = [0i32; LANES];
    for i in 0..n {
        let xi = x[i];
        let w = weight(i);
        let wx = w * xi;
        for k in 0..LANES {
            l[k] = nearest_int(isc[k] * xi).min(nmax - 1).max(-nmax);
        }
        for k in 0..LANES {
            let lf = l[k] as f32;
            slx[k] += wx * lf;
            sl2[k] += w * lf * lf;
        }
    }
    let mut chosen = None;
    for k in 0..cands.len() {
        let (sumlx, suml2) = (slx[k], sl2[k]);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            scale = sumlx / suml2;
            best = scale * sumlx;
            chosen = Some(isc[k]);
        }
    }
    if let Some(iscale) = chosen {
        for i in 0..n {
            let l = nearest_int(iscale * x[i]);
            l_out[i] = (nmax + l.min(nmax - 1).max(-nmax)) as i8;
        }
    }
    scale
}

/// Asymmetric quantization of `x` to `L ∈ [0, nmax]` with scale and min, searched over `nstep`
/// candidate scales under the weighted error. Mirrors ggml's `make_qkx2_quants`; returns
/// `(scale, the_min)` where the value is `scale·L − the_min`.
#[allow(clippy::too_many_arguments)]
pub fn make_qkx2_quants(
    n: usize,
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let x = &x[..n];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.min(nmax).max(0) as u8;
        let mut diff = scale * l_out[i] as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let w = |i: usize| weights[i];
    let lq = |v: f32| nearest_int(v).min(nmax).max(0);
    search_scale_min(
        x, w, sum_w, sum_x, l_out, laux, nmax, max, rmin, rdelta, nstep, use_mad, lq, &mut scale,
        &mut min, best_error,
    );
    (scale, -min)
}

/// The importance-weighted variant of [`make_qkx2_quants`] (`weights = None` means x²).
/// Mirrors ggml's `make_qkx3_quants`; returns `(scale, the_min)`.
#[allow(clippy::too_many_arguments)]
pub fn make_qkx3_quants(
    n: usize,
    nmax: i32,
    x: &[f32],
    weights: Option<&[f32]>,
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let x = &x[..n];
    let weight = |i: usize| match weights {
        Some(w) => w[i],
        None => x[i] * x[i],
    };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weight(0);
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weight(i);
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_mad = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min));
        l_out[i] = l.min(nmax).max(0) as u8;
        let mut diff = scale * l_out[i] as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_mad += weight(i) * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let nmaxf = nmax as f32;
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            // As in ggml: `min` can sit at or near `max`, so v may be inf, NaN or out of range.
            let v = iscale * (x[i] - min);
            let l = if v > 0.0 {
                nearest_int(if v < nmaxf { v } else { nmaxf })
            } else {
                0
            };
            laux[i] = l as u8;
            let w = weight(i);
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut mad = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                mad += weight(i) * diff;
            }
            if mad < best_mad {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_mad = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// The candidate-scale search of [`make_qkx2_quants`]: for
/// `is = 0..=nstep`, quantize with scale `(rmin + rdelta·is + nmax) / (max − min)`, fit scale
/// and min by least squares, and keep the fit if its weighted error beats the best so far.
///
/// ggml runs the candidates one after another, and an accepted candidate moves `min`, which
/// the following candidates use. kiln evaluates a window of candidates side by side (one lane
/// each, every lane doing exactly ggml's operations in ggml's order for that candidate, so the
/// same bits) assuming `min` stays; it then takes the decisions in ggml's order and, when one
/// candidate is accepted, discards the lanes after it and resumes from the next candidate with
/// the new `min`. The result is ggml's, bit for bit. (With importance weights, as in
/// [`make_qkx3_quants`], accepted candidates come so often that the discarded lanes cost more
/// than the lanes save, so that search stays sequential.)
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn search_scale_min(
    x: &[f32],
    weight: impl Fn(usize) -> f32,
    sum_w: f32,
    sum_x: f32,
    l_out: &mut [u8],
    laux: &mut [u8],
    nmax: i32,
    max: f32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
    lq: impl Fn(f32) -> i32,
    scale: &mut f32,
    min: &mut f32,
    mut best: f32,
) {
    const LANES: usize = 8;
    let n = x.len();
    let nmaxf = nmax as f32;
    let mut w = [0f32; 256];
    for i in 0..n {
        w[i] = weight(i);
    }
    let w = &w[..n];
    let mut start = 0i32;
    while start <= nstep {
        let count = ((nstep - start + 1) as usize).min(LANES);
        let m = *min;
        let mut isc = [0f32; LANES];
        for k in 0..count {
            isc[k] = (rmin + rdelta * (start + k as i32) as f32 + nmaxf) / (max - m);
        }
        let (mut sl, mut sl2, mut sxl) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        for i in 0..n {
            let (xi, wi) = (x[i], w[i]);
            let d = xi - m;
            for k in 0..LANES {
                let lf = lq(isc[k] * d) as f32;
                sl[k] += wi * lf;
                sl2[k] += wi * lf * lf;
                sxl[k] += wi * lf * xi;
            }
        }
        let (mut ts, mut tm, mut ok) = ([0f32; LANES], [0f32; LANES], [false; LANES]);
        for k in 0..count {
            let dd = sum_w * sl2[k] - sl[k] * sl[k];
            if dd > 0.0 {
                let mut this_scale = (sum_w * sxl[k] - sum_x * sl[k]) / dd;
                let mut this_min = (sl2[k] * sum_x - sl[k] * sxl[k]) / dd;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sxl[k] / sl2[k];
                }
                ts[k] = this_scale;
                tm[k] = this_min;
                ok[k] = true;
            }
        }
        let mut err = [0f32; LANES];
        for i in 0..n {
            let (xi, wi) = (x[i], w[i]);
            let d = xi - m;
            for k in 0..LANES {
                let lf = lq(isc[k] * d) as f32;
                let mut diff = ts[k] * lf + tm[k] - xi;
                diff = if use_mad { diff.abs() } else { diff * diff };
                err[k] += wi * diff;
            }
        }
        let mut next = start + count as i32;
        for k in 0..count {
            if ok[k] && err[k] < best {
                best = err[k];
                *scale = ts[k];
                *min = tm[k];
                for i in 0..n {
                    laux[i] = lq(isc[k] * (x[i] - m)) as u8;
                }
                l_out[..n].copy_from_slice(&laux[..n]);
                next = start + k as i32 + 1;
                break;
            }
        }
        start = next;
    }
}

/// Quantization of non-negative values (the sub-block scales and mins of the K-quants) to
/// `L ∈ [0, nmax]` under importance weights. Mirrors ggml's `make_qp_quants`; returns the scale.
pub fn make_qp_quants(
    n: usize,
    nmax: i32,
    x: &[f32],
    l_out: &mut [u8],
    quant_weights: &[f32],
) -> f32 {
    let x = &x[..n];
    let mut max = 0.0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..n {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l_out[i] as f32;
        let w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            let w = quant_weights[i];
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = quant_weights[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = quant_weights[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
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
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-3.7), -4);
        assert_eq!(nearest_int(4194303.0), 4194303);
        assert_eq!(nearest_int(-4194303.0), -4194303);
    }
}
