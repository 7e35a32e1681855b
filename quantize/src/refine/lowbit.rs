//! `--method search` and GPTQ's grids for the low-bit tier: Q2_K (affine, 4-bit sub-block
//! scales and mins, the K-quant refinement), Q3_K and IQ4_XS (one f16 scale with signed 6-bit
//! sub-block scales, the Q6_K refinement with linear resp. non-linear levels) and IQ4_NL (one f16
//! scale per 32 values on ggml's non-linear grid: a scale search with least-squares refits).
//!
//! The encoders write ggml's layouts (`quantize_row_q2_K_ref`, `quantize_row_q3_K_ref`,
//! `quantize_row_iq4_nl_impl`'s packing); every value is scored as the dequantizer reads it.

use half::f16;

use super::{block_err, f16r, q, Grid, KBlock, KQuant, Scaled};
use crate::blocks::*;
use crate::lowbit::{
    best_index_int8, iq4xs_scale, pack_2bit, q3k_pack, q3k_put_scale, q3k_scales, KVALUES_IQ4NL,
};

// ---- Q2_K -----------------------------------------------------------------------------------

impl KQuant for BlockQ2K {
    const HI: i32 = 3;
    const NSUB: usize = 16;
    const SUB: usize = 16;
    const SMAX: i32 = 15;
    fn parts(&self) -> KBlock {
        let mut k = KBlock {
            d: self.d.to_f32(),
            dmin: self.dmin.to_f32(),
            sc: [0; 16],
            mn: [0; 16],
        };
        for j in 0..16 {
            k.sc[j] = (self.scales[j] & 0xF) as i32;
            k.mn[j] = (self.scales[j] >> 4) as i32;
        }
        k
    }
    fn encode(k: &KBlock, l: &[i32; QK_K]) -> Self {
        let mut b = BlockQ2K {
            scales: [0; QK_K / 16],
            qs: [0; QK_K / 4],
            d: f16::from_f32(k.d),
            dmin: f16::from_f32(k.dmin),
        };
        for j in 0..16 {
            b.scales[j] = (k.sc[j] | (k.mn[j] << 4)) as u8;
        }
        let mut lu = [0u8; QK_K];
        for (o, &v) in lu.iter_mut().zip(l) {
            *o = v as u8;
        }
        pack_2bit(&lu, &mut b.qs);
        b
    }
}

// ---- Q3_K -----------------------------------------------------------------------------------

impl Scaled for BlockQ3K {
    const LO: i32 = -4;
    const HI: i32 = 3;
    const NSUB: usize = 16;
    const SUB: usize = 16;
    const SLO: i32 = -32;
    const SHI: i32 = 31;
    const ANY_SIGN: bool = true;
    const RADIUS: i32 = 63;
    fn nearest(v: f32, step: f32) -> i32 {
        q(v, step, <Self as Scaled>::LO, <Self as Scaled>::HI)
    }
    fn level(l: i32) -> f32 {
        // dequantize_row_q3_K: dl · (int)(low − high).
        l as f32
    }
    fn parts(&self) -> (f32, [i32; 16]) {
        let s = q3k_scales(&self.scales);
        let mut sc = [0i32; 16];
        for (o, &v) in sc.iter_mut().zip(&s) {
            *o = v as i32 - 32;
        }
        (self.d.to_f32(), sc)
    }
    fn encode(d: f32, sc: &[i32; 16], l: &[i32; QK_K]) -> Self {
        let mut b = BlockQ3K {
            hmask: [0; QK_K / 8],
            qs: [0; QK_K / 4],
            scales: [0; K_SCALE_SIZE],
            d: f16::from_f32(d),
        };
        for (j, &s) in sc.iter().enumerate() {
            q3k_put_scale(&mut b.scales, j, s + 32);
        }
        let mut lq = [0i8; QK_K];
        for (o, &v) in lq.iter_mut().zip(l) {
            *o = (v + 4) as i8;
        }
        q3k_pack(&mut b, &lq);
        b
    }
}

// ---- IQ4_XS, IQ4_NL -------------------------------------------------------------------------

/// The grid index whose level times `step` is nearest `v` (as ggml's quantizer picks it:
/// `best_index_int8` of `v / step`); with a zero step every level decodes to 0.
#[inline]
fn iq4_nearest(v: f32, step: f32) -> i32 {
    if step == 0.0 {
        return 8;
    }
    best_index_int8(&KVALUES_IQ4NL, v * (1.0 / step)) as i32
}

#[inline]
fn iq4_level(l: i32) -> f32 {
    KVALUES_IQ4NL[l as usize] as f32
}

fn iq4_pack(l: &[i32], qs: &mut [u8]) {
    for i in 0..l.len() / 32 {
        for j in 0..16 {
            qs[16 * i + j] = (l[32 * i + j] | (l[32 * i + 16 + j] << 4)) as u8;
        }
    }
}

impl Scaled for BlockIQ4XS {
    const LO: i32 = 0;
    const HI: i32 = 15;
    const NSUB: usize = 8;
    const SUB: usize = 32;
    const SLO: i32 = -32;
    const SHI: i32 = 31;
    const ANY_SIGN: bool = true;
    const RADIUS: i32 = 63;
    fn nearest(v: f32, step: f32) -> i32 {
        iq4_nearest(v, step)
    }
    fn level(l: i32) -> f32 {
        iq4_level(l)
    }
    fn parts(&self) -> (f32, [i32; 16]) {
        let mut sc = [0i32; 16];
        for (ib, s) in sc.iter_mut().take(8).enumerate() {
            *s = iq4xs_scale(self, ib) - 32;
        }
        (self.d.to_f32(), sc)
    }
    fn encode(d: f32, sc: &[i32; 16], l: &[i32; QK_K]) -> Self {
        let mut b = BlockIQ4XS {
            d: f16::from_f32(d),
            scales_h: 0,
            scales_l: [0; QK_K / 64],
            qs: [0; QK_K / 2],
        };
        for (ib, &s) in sc.iter().take(8).enumerate() {
            let v = (s + 32) as u8;
            b.scales_l[ib / 2] |= (v & 0xF) << (4 * (ib % 2));
            b.scales_h |= ((v >> 4) as u16) << (2 * ib);
        }
        iq4_pack(l, &mut b.qs);
        b
    }
}

fn iq4nl_encode(d: f32, l: &[i32]) -> BlockIQ4NL {
    let mut b = BlockIQ4NL {
        d: f16::from_f32(d),
        qs: [0; QK / 2],
    };
    iq4_pack(l, &mut b.qs);
    b
}

/// Indices of `x` for the scale `d` and their weighted error, as the dequantizer reads them.
fn iq4nl_eval(x: &[f32], w: &[f32], d: f32, l: &mut [i32; QK]) -> f64 {
    let mut e = 0f64;
    for j in 0..QK {
        l[j] = iq4_nearest(x[j], d);
        let r = (x[j] - d * iq4_level(l[j])) as f64;
        e += w[j] as f64 * r * r;
    }
    e
}

/// IQ4_NL's one scale: 24 f16 scales around mapping the largest value to either end of the
/// grid (ggml searches 15 points at the negative end), each also refit by weighted least
/// squares to its indices; the block is replaced only when its decoded error is lower.
pub(super) fn refine_iq4nl(b: &mut BlockIQ4NL, x: &[f32], w: &[f32]) {
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
    for base in [
        max / KVALUES_IQ4NL[0] as f32,
        max / KVALUES_IQ4NL[15] as f32,
    ] {
        for k in 0..24 {
            let d = f16r(base * (0.8 + 0.0125 * k as f32));
            let e = iq4nl_eval(x, w, d, &mut l);
            if e < be {
                (be, bd) = (e, d);
            }
            let (mut sxq, mut sqq) = (0f64, 0f64);
            for j in 0..QK {
                let qv = iq4_level(l[j]) as f64;
                sxq += (w[j] * x[j]) as f64 * qv;
                sqq += w[j] as f64 * qv * qv;
            }
            if sqq > 0.0 {
                let d2 = f16r((sxq / sqq) as f32);
                let e = iq4nl_eval(x, w, d2, &mut l);
                if e < be {
                    (be, bd) = (e, d2);
                }
            }
        }
    }
    iq4nl_eval(x, w, bd, &mut l);
    let c = iq4nl_encode(bd, &l);
    if block_err(&c, x, w) < block_err(b, x, w) {
        *b = c;
    }
}

impl Grid for BlockIQ4NL {
    const LO: i32 = 0;
    const HI: i32 = 15;
    fn grid(&self, a: &mut [f32], c: &mut [f32]) {
        // dequantize_row_iq4_nl: y = d·kvalues[l].
        a.fill(self.d.to_f32());
        c.fill(0.0);
    }
    fn nearest(a: f32, _c: f32, v: f32) -> (i32, f32) {
        let l = iq4_nearest(v, a);
        (l, a * iq4_level(l))
    }
    fn with_ints(&self, l: &[i32]) -> Self {
        iq4nl_encode(self.d.to_f32(), l)
    }
    fn search(&mut self, x: &[f32], w: &[f32]) {
        refine_iq4nl(self, x, w)
    }
}
