//! kiln's stronger block search (`--method search`): starting from ggml's importance-weighted
//! block (the `_impl` quantizers, byte-identical to llama.cpp), search further for numbers that
//! lower the importance-weighted squared error `Σ_j imp_j (x_j − y_j)²` of the block, where
//! `y` is exactly what ggml's dequantizer reads back (f16 scales included). The formats are
//! unchanged: every candidate is encoded into the ggml block layout and decoded by the
//! ordinary dequantizer to score it, and a block is replaced only when its decoded error is
//! strictly lower — so the result is never worse than llama.cpp's on this objective.
//!
//! * Legacy symmetric types (Q4_0, Q5_0, Q8_0): 32 f16 scales around `max / −nmax` and
//!   `−max / (nmax − 1)`, each also refit by weighted least squares to its integers and
//!   re-rounded; every candidate is scored with the f16-rounded scale. (ggml's Q8_0 has no
//!   weighted search at all.)
//! * Legacy affine types (Q4_1, Q5_1): 16 (min, max) trims of the block's range, each also
//!   refit by weighted least squares of (scale, min) to its integers, rounded to f16.
//! * Q4_K / Q5_K: alternate (a) a weighted least-squares refit of the super-block scales
//!   `d` and `dmin` given the 6-bit sub-block scales, mins and integers, and (b) a local search
//!   of each sub-block's 6-bit scale and min (±2) with its integers re-chosen — the refinement
//!   of the super-block scales ggml does not do after quantizing the sub-block scales.
//! * Q6_K: the same with `d` and the 16 signed 8-bit sub-block scales.
//! * The low-bit tier (`refine/lowbit.rs`): Q2_K as Q4_K (sixteen 4-bit scales and mins);
//!   Q3_K and IQ4_XS as Q6_K, with every 6-bit sub-block scale searched over its whole range
//!   and the refit of `d` free to take either sign, IQ4_XS on ggml's non-linear levels;
//!   IQ4_NL's one scale per 32 values searched at both ends of the grid with least-squares
//!   refits (ggml searches 15 points at one end).
//!
//! Deterministic: per-block work in a fixed order; rows in parallel write disjoint blocks.

use half::f16;
use rayon::prelude::*;

use crate::blocks::*;
use crate::{GgmlType, Quantize};

/// Exact error of a block of `B` as the dequantizer reads it.
fn block_err<B: Quantize>(b: &B, x: &[f32], w: &[f32]) -> f64 {
    let mut y = [0f32; QK_K];
    let y = &mut y[..B::BLOCK_SIZE];
    B::dequantize_row(std::slice::from_ref(b), y);
    x.iter()
        .zip(y.iter())
        .zip(w)
        .map(|((&a, &b), &w)| {
            let d = (a - b) as f64;
            w as f64 * d * d
        })
        .sum()
}

fn f16r(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// `x.round() as i32` — halves away from zero, saturating, NaN to 0 — without the `roundf`
/// library call `f32::round` becomes on x86-64's baseline (it was ~14 % of a search). Below
/// 2²³ the fractional part `x − trunc(x)` is exact, so comparing it with ±0.5 decides as
/// `round` does; from 2²³ on every float is an integer already.
#[inline]
pub(crate) fn round_i32(x: f32) -> i32 {
    // No branches on the rounding direction (it is data, and mispredicts).
    let i = x as i32;
    let f = x - i as f32;
    let r = i
        .wrapping_add((f >= 0.5) as i32)
        .wrapping_sub((f <= -0.5) as i32);
    if x.abs() < 8_388_608.0 {
        r
    } else {
        i
    }
}

/// Rounds `v / d` to the nearest integer in `[lo, hi]` (0 when `d` is 0).
#[inline]
fn q(v: f32, d: f32, lo: i32, hi: i32) -> i32 {
    if d == 0.0 {
        return 0i32.clamp(lo, hi);
    }
    round_i32(v / d).clamp(lo, hi)
}

// ---- legacy symmetric -------------------------------------------------------------------

trait Symmetric: Quantize + Copy {
    const LO: i32;
    const HI: i32;
    fn encode(d: f32, l: &[i32; QK]) -> Self;
}

impl Symmetric for BlockQ4_0 {
    const LO: i32 = -8;
    const HI: i32 = 7;
    fn encode(d: f32, l: &[i32; QK]) -> Self {
        let mut b = BlockQ4_0 {
            d: f16::from_f32(d),
            qs: [0; QK / 2],
        };
        for j in 0..QK / 2 {
            b.qs[j] = ((l[j] + 8) as u8) | (((l[j + QK / 2] + 8) as u8) << 4);
        }
        b
    }
}

impl Symmetric for BlockQ5_0 {
    const LO: i32 = -16;
    const HI: i32 = 15;
    fn encode(d: f32, l: &[i32; QK]) -> Self {
        let mut b = BlockQ5_0 {
            d: f16::from_f32(d),
            qh: [0; 4],
            qs: [0; QK / 2],
        };
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let (a, c) = ((l[j] + 16) as u32, (l[j + QK / 2] + 16) as u32);
            b.qs[j] = ((a & 0xF) | ((c & 0xF) << 4)) as u8;
            qh |= ((a >> 4) & 1) << j;
            qh |= ((c >> 4) & 1) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
        b
    }
}

impl Symmetric for BlockQ8_0 {
    const LO: i32 = -127;
    const HI: i32 = 127;
    fn encode(d: f32, l: &[i32; QK]) -> Self {
        let mut b = BlockQ8_0 {
            d: f16::from_f32(d),
            qs: [0; QK],
        };
        for j in 0..QK {
            b.qs[j] = l[j] as i8;
        }
        b
    }
}

/// Integers of `x` for scale `d` and their weighted error, computed exactly as the
/// dequantizer reads them back (`L as f32 · d`).
fn sym_eval(x: &[f32], w: &[f32], d: f32, lo: i32, hi: i32, l: &mut [i32; QK]) -> f64 {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut e = 0f64;
    for j in 0..QK {
        let li = round_i32(x[j] * id).clamp(lo, hi);
        l[j] = li;
        let r = (x[j] - li as f32 * d) as f64;
        e += w[j] as f64 * r * r;
    }
    e
}

fn refine_symmetric<B: Symmetric>(b: &mut B, x: &[f32], w: &[f32]) {
    // The value of largest magnitude, with its sign (ggml maps it to the negative end).
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    if max == 0.0 {
        return;
    }
    let mut l = [0i32; QK];
    let (mut be, mut bd) = (f64::INFINITY, 0f32);
    for base in [max / B::LO as f32, -max / B::HI as f32] {
        for k in 0..16 {
            let d = f16r(base * (0.82 + 0.0225 * k as f32));
            let e = sym_eval(x, w, d, B::LO, B::HI, &mut l);
            if e < be {
                (be, bd) = (e, d);
            }
            // Weighted least-squares scale for these integers.
            let (mut sxl, mut sll) = (0f64, 0f64);
            for j in 0..QK {
                sxl += (w[j] * x[j]) as f64 * l[j] as f64;
                sll += w[j] as f64 * (l[j] * l[j]) as f64;
            }
            if sll > 0.0 {
                let d2 = f16r((sxl / sll) as f32);
                let e = sym_eval(x, w, d2, B::LO, B::HI, &mut l);
                if e < be {
                    (be, bd) = (e, d2);
                }
            }
        }
    }
    sym_eval(x, w, bd, B::LO, B::HI, &mut l);
    let c = B::encode(bd, &l);
    if block_err(&c, x, w) < block_err(b, x, w) {
        *b = c;
    }
}

// ---- legacy affine ----------------------------------------------------------------------

trait Affine: Quantize + Copy {
    const HI: i32;
    fn encode(d: f32, m: f32, l: &[i32; QK]) -> Self;
}

impl Affine for BlockQ4_1 {
    const HI: i32 = 15;
    fn encode(d: f32, m: f32, l: &[i32; QK]) -> Self {
        let mut b = BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(m),
            qs: [0; QK / 2],
        };
        for j in 0..QK / 2 {
            b.qs[j] = (l[j] as u8) | ((l[j + QK / 2] as u8) << 4);
        }
        b
    }
}

impl Affine for BlockQ5_1 {
    const HI: i32 = 31;
    fn encode(d: f32, m: f32, l: &[i32; QK]) -> Self {
        let mut b = BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(m),
            qh: [0; 4],
            qs: [0; QK / 2],
        };
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let (a, c) = (l[j] as u32, l[j + QK / 2] as u32);
            b.qs[j] = ((a & 0xF) | ((c & 0xF) << 4)) as u8;
            qh |= ((a >> 4) & 1) << j;
            qh |= ((c >> 4) & 1) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
        b
    }
}

/// Weighted least squares of `x ≈ a·u + b·v` over the values: `(a, b)`, or `None` when singular.
fn ls2(x: &[f32], u: &[f32], v: &[f32], w: &[f32]) -> Option<(f32, f32)> {
    let (mut suu, mut suv, mut svv, mut sxu, mut sxv) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for j in 0..x.len() {
        let (wj, uj, vj, xj) = (w[j] as f64, u[j] as f64, v[j] as f64, x[j] as f64);
        suu += wj * uj * uj;
        suv += wj * uj * vj;
        svv += wj * vj * vj;
        sxu += wj * xj * uj;
        sxv += wj * xj * vj;
    }
    let det = suu * svv - suv * suv;
    // Singular (all integers equal, or no weight): no unique fit.
    if det.abs() <= 1e-12 * suu * svv {
        return None;
    }
    Some((
        ((sxu * svv - sxv * suv) / det) as f32,
        ((suu * sxv - suv * sxu) / det) as f32,
    ))
}

/// Integers of `x` for scale `d` and offset `m` and their weighted error, exactly as the
/// dequantizer reads them back (`L as f32 · d + m`).
fn aff_eval(x: &[f32], w: &[f32], d: f32, m: f32, hi: i32, l: &mut [i32; QK]) -> f64 {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut e = 0f64;
    for j in 0..QK {
        let li = round_i32((x[j] - m) * id).clamp(0, hi);
        l[j] = li;
        let r = (x[j] - (li as f32 * d + m)) as f64;
        e += w[j] as f64 * r * r;
    }
    e
}

fn refine_affine<B: Affine>(b: &mut B, x: &[f32], w: &[f32]) {
    let (mn, mx) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, c), &v| {
            (a.min(v), c.max(v))
        });
    let range = mx - mn;
    if range <= 0.0 {
        return;
    }
    let hi = B::HI;
    let mut l = [0i32; QK];
    let ones = [1f32; QK];
    let mut lf = [0f32; QK];
    let (mut be, mut bdm) = (f64::INFINITY, (0f32, 0f32));
    let fr = [0.0f32, 0.03, 0.06, 0.1];
    for &a in &fr {
        for &c in &fr {
            let (lo_v, hi_v) = (mn + a * range, mx - c * range);
            if hi_v <= lo_v {
                continue;
            }
            let (d, m) = (f16r((hi_v - lo_v) / hi as f32), f16r(lo_v));
            let e = aff_eval(x, w, d, m, hi, &mut l);
            if e < be {
                (be, bdm) = (e, (d, m));
            }
            for j in 0..QK {
                lf[j] = l[j] as f32;
            }
            if let Some((nd, nm)) = ls2(x, &lf, &ones, w) {
                if nd > 0.0 {
                    let (d2, m2) = (f16r(nd), f16r(nm));
                    let e = aff_eval(x, w, d2, m2, hi, &mut l);
                    if e < be {
                        (be, bdm) = (e, (d2, m2));
                    }
                }
            }
        }
    }
    aff_eval(x, w, bdm.0, bdm.1, hi, &mut l);
    let c = B::encode(bdm.0, bdm.1, &l);
    if block_err(&c, x, w) < block_err(b, x, w) {
        *b = c;
    }
}

// ---- K-quants with 6-bit scales and mins ------------------------------------------------

/// Integers, scales and mins of a Q4_K / Q5_K / Q2_K super-block in plain arrays (the first
/// `NSUB` entries used).
struct KBlock {
    d: f32,
    dmin: f32,
    sc: [i32; 16],
    mn: [i32; 16],
}

/// Affine super-blocks `y = (d·sc)·l − dmin·m` with unsigned sub-block scales and mins.
trait KQuant: Quantize + Copy {
    /// The largest integer.
    const HI: i32;
    /// Sub-blocks per super-block, their length, and the largest scale or min.
    const NSUB: usize;
    const SUB: usize;
    const SMAX: i32;
    fn parts(&self) -> KBlock;
    fn encode(k: &KBlock, l: &[i32; QK_K]) -> Self;
}

fn pack_scales(k: &KBlock) -> [u8; K_SCALE_SIZE] {
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = k.sc[j] as u8;
        lm[j] = k.mn[j] as u8;
    }
    pack_scale_min_k4(&ls, &lm)
}

fn unpack_scales(scales: &[u8; K_SCALE_SIZE], d: f16, dmin: f16) -> KBlock {
    let mut k = KBlock {
        d: d.to_f32(),
        dmin: dmin.to_f32(),
        sc: [0; 16],
        mn: [0; 16],
    };
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, scales);
        k.sc[j] = s as i32;
        k.mn[j] = m as i32;
    }
    k
}

impl KQuant for BlockQ4K {
    const HI: i32 = 15;
    const NSUB: usize = 8;
    const SUB: usize = 32;
    const SMAX: i32 = 63;
    fn parts(&self) -> KBlock {
        unpack_scales(&self.scales, self.d, self.dmin)
    }
    fn encode(k: &KBlock, l: &[i32; QK_K]) -> Self {
        let mut b = BlockQ4K {
            d: f16::from_f32(k.d),
            dmin: f16::from_f32(k.dmin),
            scales: pack_scales(k),
            qs: [0; QK_K / 2],
        };
        for c in 0..QK_K / 64 {
            for i in 0..32 {
                b.qs[32 * c + i] = (l[64 * c + i] as u8) | ((l[64 * c + 32 + i] as u8) << 4);
            }
        }
        b
    }
}

impl KQuant for BlockQ5K {
    const HI: i32 = 31;
    const NSUB: usize = 8;
    const SUB: usize = 32;
    const SMAX: i32 = 63;
    fn parts(&self) -> KBlock {
        unpack_scales(&self.scales, self.d, self.dmin)
    }
    fn encode(k: &KBlock, l: &[i32; QK_K]) -> Self {
        let mut b = BlockQ5K {
            d: f16::from_f32(k.d),
            dmin: f16::from_f32(k.dmin),
            scales: pack_scales(k),
            qh: [0; QK_K / 8],
            qs: [0; QK_K / 2],
        };
        for c in 0..QK_K / 64 {
            for i in 0..32 {
                let (a, e) = (l[64 * c + i] as u8, l[64 * c + 32 + i] as u8);
                b.qs[32 * c + i] = (a & 0xF) | ((e & 0xF) << 4);
                b.qh[i] |= ((a >> 4) & 1) << (2 * c);
                b.qh[i] |= ((e >> 4) & 1) << (2 * c + 1);
            }
        }
        b
    }
}

/// Integers of sub-block `j` (length `sub`) for the current scales; returns its weighted
/// error.
fn k_sub(k: &KBlock, j: usize, sub: usize, x: &[f32], w: &[f32], hi: i32, l: &mut [i32]) -> f64 {
    // As ggml's dequantize_row_q4_K / q2_K: d1 = d·sc, m1 = dmin·m, y = d1·q − m1.
    let s = k.d * k.sc[j] as f32;
    let o = k.dmin * k.mn[j] as f32;
    let mut e = 0f64;
    for i in 0..sub {
        let v = x[sub * j + i];
        l[i] = q(v + o, s, 0, hi);
        let y = s * l[i] as f32 - o;
        let dd = (v - y) as f64;
        e += w[sub * j + i] as f64 * dd * dd;
    }
    e
}

fn refine_k<B: KQuant>(b: &mut B, x: &[f32], w: &[f32]) {
    let (ns, sub) = (B::NSUB, B::SUB);
    let mut best = block_err(b, x, w);
    let mut k = b.parts();
    let mut l = [0i32; QK_K];
    let (mut u, mut v) = ([0f32; QK_K], [0f32; QK_K]);
    for _ in 0..3 {
        // (b) each sub-block's scale and min, ±2, with its integers re-chosen.
        for j in 0..ns {
            let (s0, m0) = (k.sc[j], k.mn[j]);
            let mut be = f64::INFINITY;
            let mut bl = [0i32; 32];
            let mut bsm = (s0, m0);
            for s in (s0 - 2).max(0)..=(s0 + 2).min(B::SMAX) {
                for m in (m0 - 2).max(0)..=(m0 + 2).min(B::SMAX) {
                    k.sc[j] = s;
                    k.mn[j] = m;
                    let mut lt = [0i32; 32];
                    let e = k_sub(&k, j, sub, x, w, B::HI, &mut lt);
                    if e < be {
                        be = e;
                        bl = lt;
                        bsm = (s, m);
                    }
                }
            }
            k.sc[j] = bsm.0;
            k.mn[j] = bsm.1;
            l[sub * j..sub * j + sub].copy_from_slice(&bl[..sub]);
        }
        let c = B::encode(&k, &l);
        let e = block_err(&c, x, w);
        if e < best {
            best = e;
            *b = c;
        }
        // (a) d and dmin by weighted least squares given scales, mins and integers.
        for j in 0..ns {
            for i in 0..sub {
                u[sub * j + i] = (k.sc[j] * l[sub * j + i]) as f32;
                v[sub * j + i] = -(k.mn[j] as f32);
            }
        }
        match ls2(x, &u, &v, w) {
            Some((d, dmin)) if d > 0.0 => {
                k.d = f16r(d);
                k.dmin = f16r(dmin);
            }
            _ => break,
        }
    }
}

// ---- symmetric super-blocks with signed sub-block scales (Q6_K, Q3_K, IQ4_XS) --------------

/// Symmetric super-blocks `y = (d·sc)·level(l)`: one f16 scale `d`, `NSUB` signed integer
/// sub-block scales in `SLO..=SHI`, and per value an integer whose level is linear (Q6_K, Q3_K)
/// or ggml's non-linear `kvalues_iq4nl` (IQ4_XS).
trait Scaled: Quantize + Copy {
    /// The integers' range.
    const LO: i32;
    const HI: i32;
    const NSUB: usize;
    const SUB: usize;
    const SLO: i32;
    const SHI: i32;
    /// Whether the refit of `d` may take either sign (ggml writes negative `d` as often as
    /// positive). Q6_K keeps its first rule, refits to positive `d` only, so that its
    /// `--method search` bytes stay those of earlier kiln versions.
    const ANY_SIGN: bool;
    /// How far each sub-block scale is searched around its current value (the low-bit
    /// formats search their whole 6-bit range: it is cheap, and their few levels make the
    /// error uneven in the scale).
    const RADIUS: i32;
    /// The integer whose level times `step` is nearest `v`.
    fn nearest(v: f32, step: f32) -> i32;
    /// The value of integer `l`, as the dequantizer converts it.
    fn level(l: i32) -> f32;
    /// `d` and the signed sub-block scales.
    fn parts(&self) -> (f32, [i32; 16]);
    fn encode(d: f32, sc: &[i32; 16], l: &[i32; QK_K]) -> Self;
}

fn q6k_encode(d: f32, sc: &[i32; 16], l: &[i32; QK_K]) -> BlockQ6K {
    let mut b = BlockQ6K {
        ql: [0; QK_K / 2],
        qh: [0; QK_K / 4],
        scales: [0; QK_K / 16],
        d: f16::from_f32(d),
    };
    for j in 0..16 {
        b.scales[j] = sc[j] as i8;
    }
    // ggml's quantize_row_q6_K_ref packing: stored q = l + 32 in 0..63.
    for n in 0..2 {
        let (lb, qlb, qhb) = (128 * n, 64 * n, 32 * n);
        for i in 0..32 {
            let q1 = (l[lb + i] + 32) as u8;
            let q2 = (l[lb + i + 32] + 32) as u8;
            let q3 = (l[lb + i + 64] + 32) as u8;
            let q4 = (l[lb + i + 96] + 32) as u8;
            b.ql[qlb + i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
            b.ql[qlb + i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
            b.qh[qhb + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    b
}

impl Scaled for BlockQ6K {
    const LO: i32 = -32;
    const HI: i32 = 31;
    const NSUB: usize = 16;
    const SUB: usize = 16;
    const SLO: i32 = -128;
    const SHI: i32 = 127;
    const ANY_SIGN: bool = false;
    const RADIUS: i32 = 2;
    fn nearest(v: f32, step: f32) -> i32 {
        q(v, step, <Self as Scaled>::LO, <Self as Scaled>::HI)
    }
    fn level(l: i32) -> f32 {
        l as f32
    }
    fn parts(&self) -> (f32, [i32; 16]) {
        let mut sc = [0i32; 16];
        for (s, &v) in sc.iter_mut().zip(&self.scales) {
            *s = v as i32;
        }
        (self.d.to_f32(), sc)
    }
    fn encode(d: f32, sc: &[i32; 16], l: &[i32; QK_K]) -> Self {
        q6k_encode(d, sc, l)
    }
}

/// Alternates (a) a search of each sub-block scale (±`RADIUS`) with its integers re-chosen and (b) a
/// weighted least-squares refit of `d` given the scales and integers; keeps the best block.
fn refine_scaled<B: Scaled>(b: &mut B, x: &[f32], w: &[f32]) {
    let (ns, sub) = (B::NSUB, B::SUB);
    let mut best = block_err(b, x, w);
    let (mut d, mut sc) = b.parts();
    let mut l = [0i32; QK_K];
    let mut u = [0f32; QK_K];
    for _ in 0..3 {
        for j in 0..ns {
            let s0 = sc[j];
            let mut be = f64::INFINITY;
            let mut bs = s0;
            for s in (s0 - B::RADIUS).max(B::SLO)..=(s0 + B::RADIUS).min(B::SHI) {
                let step = d * s as f32;
                let mut e = 0f64;
                for i in 0..sub {
                    let v = x[sub * j + i];
                    let li = B::nearest(v, step);
                    let dd = (v - step * B::level(li)) as f64;
                    e += w[sub * j + i] as f64 * dd * dd;
                }
                if e < be {
                    be = e;
                    bs = s;
                }
            }
            sc[j] = bs;
            let step = d * bs as f32;
            for i in 0..sub {
                l[sub * j + i] = B::nearest(x[sub * j + i], step);
            }
        }
        let c = B::encode(d, &sc, &l);
        let e = block_err(&c, x, w);
        if e < best {
            best = e;
            *b = c;
        }
        for j in 0..ns {
            for i in 0..sub {
                u[sub * j + i] = sc[j] as f32 * B::level(l[sub * j + i]);
            }
        }
        // Weighted least squares of the one scale `d`.
        let (mut sxu, mut suu) = (0f64, 0f64);
        for i in 0..QK_K {
            sxu += (w[i] * x[i]) as f64 * u[i] as f64;
            suu += w[i] as f64 * (u[i] as f64) * (u[i] as f64);
        }
        if suu <= 0.0 {
            break;
        }
        let nd = (sxu / suu) as f32;
        if nd == 0.0 || (nd < 0.0 && !B::ANY_SIGN) {
            break;
        }
        d = f16r(nd);
    }
}

// ---- the fixed grid of a chosen block (for GPTQ) -------------------------------------------

/// A block whose scales are fixed and whose integers can be chosen one value at a time: what
/// [`crate::gptq`] needs. `grid` gives, per position, `(a, c)` with the decoded value
/// `a·l + c` computed exactly as the dequantizer does (same operations, same order) for the
/// integer `l` in `LO..=HI` (the convention of the block's encoder); non-linear grids
/// (IQ4_NL, IQ4_XS: `a·kvalues[l]`) say so through `nearest`.
pub(crate) trait Grid: Quantize + Copy {
    const LO: i32;
    const HI: i32;
    /// Scale and offset of every position.
    fn grid(&self, a: &mut [f32], c: &mut [f32]);
    /// The integer nearest `v` at a position of scale `a` and offset `c`, and its decoded
    /// value. Linear grids round `(v − c)/a`; non-linear ones override.
    #[inline]
    fn nearest(a: f32, c: f32, v: f32) -> (i32, f32) {
        let l = if a != 0.0 {
            round_i32((v - c) / a).clamp(Self::LO, Self::HI)
        } else {
            0i32.clamp(Self::LO, Self::HI)
        };
        (l, a * l as f32 + c)
    }
    /// This block's scales with the integers `l`.
    fn with_ints(&self, l: &[i32]) -> Self;
    /// `--method search`'s refinement of this block for values `x`, importance `w`.
    fn search(&mut self, x: &[f32], w: &[f32]);
}

macro_rules! grid_symmetric {
    ($b:ty) => {
        impl Grid for $b {
            const LO: i32 = <$b as Symmetric>::LO;
            const HI: i32 = <$b as Symmetric>::HI;
            fn grid(&self, a: &mut [f32], c: &mut [f32]) {
                // dequantize_row_q*_0: y = l·d.
                a.fill(self.d.to_f32());
                c.fill(0.0);
            }
            fn with_ints(&self, l: &[i32]) -> Self {
                <$b as Symmetric>::encode(self.d.to_f32(), l.try_into().expect("one block"))
            }
            fn search(&mut self, x: &[f32], w: &[f32]) {
                refine_symmetric(self, x, w)
            }
        }
    };
}
grid_symmetric!(BlockQ4_0);
grid_symmetric!(BlockQ5_0);
grid_symmetric!(BlockQ8_0);

macro_rules! grid_affine {
    ($b:ty) => {
        impl Grid for $b {
            const LO: i32 = 0;
            const HI: i32 = <$b as Affine>::HI;
            fn grid(&self, a: &mut [f32], c: &mut [f32]) {
                // dequantize_row_q*_1: y = l·d + m.
                a.fill(self.d.to_f32());
                c.fill(self.m.to_f32());
            }
            fn with_ints(&self, l: &[i32]) -> Self {
                <$b as Affine>::encode(
                    self.d.to_f32(),
                    self.m.to_f32(),
                    l.try_into().expect("one block"),
                )
            }
            fn search(&mut self, x: &[f32], w: &[f32]) {
                refine_affine(self, x, w)
            }
        }
    };
}
grid_affine!(BlockQ4_1);
grid_affine!(BlockQ5_1);

macro_rules! grid_k {
    ($b:ty) => {
        impl Grid for $b {
            const LO: i32 = 0;
            const HI: i32 = <$b as KQuant>::HI;
            fn grid(&self, a: &mut [f32], c: &mut [f32]) {
                // dequantize_row_q4_K / q5_K / q2_K: d1 = d·sc, m1 = dmin·m, y = d1·l − m1.
                let k = self.parts();
                let sub = <$b as KQuant>::SUB;
                for j in 0..<$b as KQuant>::NSUB {
                    a[sub * j..sub * j + sub].fill(k.d * k.sc[j] as f32);
                    c[sub * j..sub * j + sub].fill(-(k.dmin * k.mn[j] as f32));
                }
            }
            fn with_ints(&self, l: &[i32]) -> Self {
                <$b as KQuant>::encode(&self.parts(), l.try_into().expect("one block"))
            }
            fn search(&mut self, x: &[f32], w: &[f32]) {
                refine_k(self, x, w)
            }
        }
    };
}
grid_k!(BlockQ4K);
grid_k!(BlockQ5K);
grid_k!(BlockQ2K);

macro_rules! grid_scaled {
    ($b:ty) => {
        impl Grid for $b {
            const LO: i32 = <$b as Scaled>::LO;
            const HI: i32 = <$b as Scaled>::HI;
            fn grid(&self, a: &mut [f32], c: &mut [f32]) {
                // y = (d·sc)·level(l), as the dequantizer computes the sub-block's step.
                let (d, sc) = <$b as Scaled>::parts(self);
                let sub = <$b as Scaled>::SUB;
                for j in 0..<$b as Scaled>::NSUB {
                    a[sub * j..sub * j + sub].fill(d * sc[j] as f32);
                }
                c.fill(0.0);
            }
            fn nearest(a: f32, _c: f32, v: f32) -> (i32, f32) {
                let l = <$b as Scaled>::nearest(v, a);
                (l, a * <$b as Scaled>::level(l))
            }
            fn with_ints(&self, l: &[i32]) -> Self {
                let (d, sc) = <$b as Scaled>::parts(self);
                <$b as Scaled>::encode(d, &sc, l.try_into().expect("one block"))
            }
            fn search(&mut self, x: &[f32], w: &[f32]) {
                refine_scaled(self, x, w)
            }
        }
    };
}
grid_scaled!(BlockQ6K);
grid_scaled!(BlockQ3K);
grid_scaled!(BlockIQ4XS);

mod lowbit;

// ---- driver -------------------------------------------------------------------------------

fn rows<B: Quantize + Copy>(
    bytes: &mut [u8],
    x: &[f32],
    n_per_row: usize,
    imp: &[f32],
    f: fn(&mut B, &[f32], &[f32]),
) {
    let bs = B::BLOCK_SIZE;
    let row_bytes = n_per_row / bs * std::mem::size_of::<B>();
    bytes
        .par_chunks_mut(row_bytes)
        .zip(x.par_chunks(n_per_row))
        .for_each(|(rb, xr)| {
            let blocks: &mut [B] = bytemuck::cast_slice_mut(rb);
            for (i, b) in blocks.iter_mut().enumerate() {
                f(b, &xr[i * bs..(i + 1) * bs], &imp[i * bs..(i + 1) * bs]);
            }
        });
}

/// Improves ggml's quantization `bytes` of `x` (rows of `n_per_row`, type `ty`) in place
/// under the importance `imp` (one weight per column; `None` weighs every column 1). Types
/// without a refinement (float types) are left unchanged.
pub fn refine(ty: GgmlType, bytes: &mut [u8], x: &[f32], n_per_row: usize, imp: Option<&[f32]>) {
    let ones;
    let imp = match imp {
        Some(w) => w,
        None => {
            ones = vec![1f32; n_per_row];
            &ones
        }
    };
    match ty {
        GgmlType::Q4_0 => rows::<BlockQ4_0>(bytes, x, n_per_row, imp, refine_symmetric),
        GgmlType::Q5_0 => rows::<BlockQ5_0>(bytes, x, n_per_row, imp, refine_symmetric),
        GgmlType::Q8_0 => rows::<BlockQ8_0>(bytes, x, n_per_row, imp, refine_symmetric),
        GgmlType::Q4_1 => rows::<BlockQ4_1>(bytes, x, n_per_row, imp, refine_affine),
        GgmlType::Q5_1 => rows::<BlockQ5_1>(bytes, x, n_per_row, imp, refine_affine),
        GgmlType::Q4K => rows::<BlockQ4K>(bytes, x, n_per_row, imp, refine_k),
        GgmlType::Q5K => rows::<BlockQ5K>(bytes, x, n_per_row, imp, refine_k),
        GgmlType::Q6K => rows::<BlockQ6K>(bytes, x, n_per_row, imp, refine_scaled),
        GgmlType::Q2K => rows::<BlockQ2K>(bytes, x, n_per_row, imp, refine_k),
        GgmlType::Q3K => rows::<BlockQ3K>(bytes, x, n_per_row, imp, refine_scaled),
        GgmlType::IQ4XS => rows::<BlockIQ4XS>(bytes, x, n_per_row, imp, refine_scaled),
        GgmlType::IQ4NL => rows::<BlockIQ4NL>(bytes, x, n_per_row, imp, lowbit::refine_iq4nl),
        _ => {}
    }
}

/// [`crate::quantize`] followed by [`refine`]: the bytes `--method search` writes.
pub fn quantize_searched(
    ty: GgmlType,
    x: &[f32],
    n_per_row: usize,
    imp: Option<&[f32]>,
) -> Result<(Vec<u8>, crate::QuantizeStats), crate::QuantError> {
    let (mut bytes, stats) = crate::quantize(ty, x, n_per_row, imp)?;
    refine(ty, &mut bytes, x, n_per_row, imp);
    Ok((bytes, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                (u - 0.5) * (1.0 + 3.0 * ((s >> 8) & 7) as f32 / 7.0)
            })
            .collect()
    }

    fn err(ty: GgmlType, bytes: &[u8], x: &[f32], n: usize, w: &[f32]) -> f64 {
        let y = crate::dequantize(ty, bytes, x.len()).unwrap();
        x.iter()
            .zip(&y)
            .enumerate()
            .map(|(i, (&a, &b))| w[i % n] as f64 * ((a - b) as f64).powi(2))
            .sum()
    }

    #[test]
    fn never_worse_than_ggml_and_usually_better() {
        let n = 512;
        let x = data(n * 16, 7);
        let w: Vec<f32> = data(n, 9).iter().map(|v| v * v + 0.01).collect();
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
            GgmlType::Q2K,
            GgmlType::Q3K,
            GgmlType::IQ4NL,
            GgmlType::IQ4XS,
        ] {
            let (base, _) = crate::quantize(ty, &x, n, Some(&w)).unwrap();
            let (ours, _) = quantize_searched(ty, &x, n, Some(&w)).unwrap();
            let (e0, e1) = (err(ty, &base, &x, n, &w), err(ty, &ours, &x, n, &w));
            // Block by block never worse, so the total is not either.
            assert!(e1 <= e0, "{ty}: {e1} > {e0}");
            assert!(
                e1 < 0.995 * e0,
                "{ty}: search gained nothing ({e1} vs {e0})"
            );
            eprintln!("{ty}: weighted error {:.4} of ggml's", e1 / e0);
        }
    }

    #[test]
    fn encoders_match_the_ggml_layouts() {
        // Encoding ggml's own integers and scales must reproduce ggml's bytes exactly.
        let n = 256;
        let x = data(n * 4, 3);
        let (b, _) = crate::quantize(GgmlType::Q6K, &x, n, None).unwrap();
        let blocks: &[BlockQ6K] = bytemuck::cast_slice(&b);
        for blk in blocks {
            let mut l = [0i32; QK_K];
            let mut y = [0f32; QK_K];
            BlockQ6K::dequantize_row(std::slice::from_ref(blk), &mut y);
            let d = blk.d.to_f32();
            let mut sc = [0i32; 16];
            for j in 0..16 {
                sc[j] = blk.scales[j] as i32;
                for i in 0..16 {
                    let s = d * sc[j] as f32;
                    l[16 * j + i] = if s == 0.0 {
                        0
                    } else {
                        round_i32(y[16 * j + i] / s)
                    };
                }
            }
            assert_eq!(&q6k_encode(d, &sc, &l), blk);
        }
        for ty in [GgmlType::Q4K, GgmlType::Q5K] {
            let (b, _) = crate::quantize(ty, &x, n, None).unwrap();
            let check = |enc: &dyn Fn(&KBlock, &[f32]) -> Vec<u8>,
                         parts: KBlock,
                         y: &[f32],
                         orig: &[u8]| {
                assert_eq!(enc(&parts, y), orig, "{ty}");
            };
            let size = ty.type_size();
            for (i, orig) in b.chunks_exact(size).enumerate() {
                let mut y = vec![0f32; QK_K];
                y.copy_from_slice(&crate::dequantize(ty, orig, QK_K).unwrap());
                let _ = i;
                let ints = |k: &KBlock, y: &[f32]| -> [i32; QK_K] {
                    let mut l = [0i32; QK_K];
                    for j in 0..8 {
                        let s = k.d * k.sc[j] as f32;
                        let o = k.dmin * k.mn[j] as f32;
                        for t in 0..32 {
                            l[32 * j + t] = if s == 0.0 {
                                0
                            } else {
                                round_i32((y[32 * j + t] + o) / s)
                            };
                        }
                    }
                    l
                };
                if ty == GgmlType::Q4K {
                    let blk: BlockQ4K = *bytemuck::from_bytes(orig);
                    let enc = |k: &KBlock, y: &[f32]| {
                        bytemuck::bytes_of(&BlockQ4K::encode(k, &ints(k, y))).to_vec()
                    };
                    check(&enc, blk.parts(), &y, orig);
                } else {
                    let blk: BlockQ5K = *bytemuck::from_bytes(orig);
                    let enc = |k: &KBlock, y: &[f32]| {
                        bytemuck::bytes_of(&BlockQ5K::encode(k, &ints(k, y))).to_vec()
                    };
                    check(&enc, blk.parts(), &y, orig);
                }
            }
        }
    }

    /// Reading a ggml block's integers off its grid (`Grid::grid` + `nearest` on the decoded
    /// values) and encoding them again gives ggml's bytes: the grids and encoders are exact.
    fn grid_roundtrip<B: Grid + PartialEq + std::fmt::Debug>(ty: GgmlType) {
        let n = 512;
        let x = data(n * 8, 21);
        let w: Vec<f32> = data(n, 4).iter().map(|v| v * v + 0.01).collect();
        for imp in [None, Some(&w[..])] {
            let (bytes, _) = crate::quantize(ty, &x, n, imp).unwrap();
            let blocks: &[B] = bytemuck::cast_slice(&bytes);
            let bs = B::BLOCK_SIZE;
            let (mut a, mut c, mut y) = (vec![0f32; bs], vec![0f32; bs], vec![0f32; bs]);
            let mut checked = 0;
            for blk in blocks {
                blk.grid(&mut a, &mut c);
                B::dequantize_row(std::slice::from_ref(blk), &mut y);
                let mut l = vec![0i32; bs];
                for i in 0..bs {
                    let (li, yi) = B::nearest(a[i], c[i], y[i]);
                    // Equal as numbers (the grid's `a·l + c` may give +0 where ggml gives −0).
                    assert_eq!(yi, y[i], "{ty}: value {i} off its grid");
                    l[i] = li;
                }
                // ggml leaves stale integers under a zero sub-block scale; those blocks can
                // only be compared by value (checked above).
                if a.iter().all(|&v| v != 0.0) {
                    assert_eq!(&blk.with_ints(&l), blk, "{ty}: encoder");
                    checked += 1;
                }
            }
            assert!(
                checked > blocks.len() / 2,
                "{ty}: {checked} blocks compared"
            );
        }
    }

    #[test]
    fn grids_and_encoders_give_ggml_bytes() {
        grid_roundtrip::<BlockQ4_0>(GgmlType::Q4_0);
        grid_roundtrip::<BlockQ5_1>(GgmlType::Q5_1);
        grid_roundtrip::<BlockQ4K>(GgmlType::Q4K);
        grid_roundtrip::<BlockQ5K>(GgmlType::Q5K);
        grid_roundtrip::<BlockQ6K>(GgmlType::Q6K);
        grid_roundtrip::<BlockQ2K>(GgmlType::Q2K);
        grid_roundtrip::<BlockQ3K>(GgmlType::Q3K);
        grid_roundtrip::<BlockIQ4NL>(GgmlType::IQ4NL);
        grid_roundtrip::<BlockIQ4XS>(GgmlType::IQ4XS);
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let n = 576;
        let x = data(n * 24, 11);
        let w: Vec<f32> = data(n, 5).iter().map(|v| v * v).collect();
        for ty in [GgmlType::Q5_0, GgmlType::Q4_1, GgmlType::IQ4NL] {
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let a = one.install(|| quantize_searched(ty, &x, n, Some(&w)).unwrap().0);
            let b = quantize_searched(ty, &x, n, Some(&w)).unwrap().0;
            assert_eq!(a, b);
        }
    }

    /// `round_i32` is `f32::round` then `as i32` on every kind of value: halves of both signs,
    /// the float just below a half, the edges of exactness and of i32, infinities and NaN.
    #[test]
    fn round_i32_is_round_as_i32() {
        let mut xs = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
            8_388_607.5,
            -8_388_607.5,
            8_388_608.0,
            16_777_217.0,
            2.1474836e9,
            -2.1474836e9,
            3e9,
            -3e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
        ];
        let mut s = 0x9E3779B9u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            xs.push(f32::from_bits(s));
            xs.push((s % 2001) as f32 / 4.0 - 250.0);
        }
        for x in xs {
            assert_eq!(round_i32(x), x.round() as i32, "{x:e}");
        }
    }
}
