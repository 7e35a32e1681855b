//! Two-block layouts for the AVX-512 kernels of Q4_0, Q5_0, Q8_0 and IQ4_NL weights
//! ([`super::zmm`]).
//!
//! ggml's blocks are 18–34 bytes, so two of them never fill one 64-byte register with a single
//! load, and every block's scale is an f16 to convert. These layouts hold block pairs:
//!
//! - [`ActPair`]: a pair of Q8_0 *activation* blocks (quantized by the reference quantizer as
//!   before, only rearranged): their 64 values, their scales as f32, and minus the sum of each
//!   group of four values.
//! - [`WeightPair`]: a pair of *weight* blocks unpacked to unsigned bytes `u = q + c` (c = 8
//!   for Q4_0, 16 for Q5_0, 128 for Q8_0 and IQ4_NL's grid values) with both scales spread over their eight lanes: the
//!   prefill GEMM unpacks a tile of rows once and reuses it for every token.
//!
//! With unsigned weights a four-byte group's dot is one `vpdpbusd`, started from `−c·Σy` of
//! the group: `Σ (u − c)·y = Σ q·y`, the same integer per group as the sign trick of the
//! [`super::avx2`] kernels. Nothing here changes a result; it only saves instructions.

use quantize::blocks::{
    BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};

/// Two Q8_0 activation blocks (blocks `2p` and `2p + 1` of a row); an odd row's last pair has
/// zeros in its second half.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, bytemuck::Zeroable, bytemuck::Pod)]
pub struct ActPair {
    /// The 64 quantized values.
    pub qs: [i8; 64],
    /// `−Σ` of each group of four values (`qs[4j..4j + 4]`), lanes in register order.
    pub neg_sums: [i16; 16],
    /// The two scales (Q8_0's f16, widened).
    pub d: [f32; 2],
    /// Q8_1's `s = d·Σq` of the two blocks, widened (zero for Q8_0 activations): the mins'
    /// term of Q4_1 / Q5_1 weights.
    pub s: [f32; 2],
    _pad: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<ActPair>() == 128);

/// Two weight blocks of one row, unpacked.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, bytemuck::Zeroable, bytemuck::Pod)]
pub struct WeightPair {
    /// The values as unsigned bytes `q + c`.
    pub u: [u8; 64],
    /// The first block's scale in lanes 0..8, the second's in lanes 8..16.
    pub d: [f32; 16],
}
const _: () = assert!(std::mem::size_of::<WeightPair>() == 128);

/// What the prefill GEMM ([`super::zmm::gemm`]) reads of one token's block pair besides its
/// values, computed once per matmul instead of once per tile of weight rows: each lane's
/// starting integer `−c·Σy` of its group of four (for the weight type's `c = 1 << shift`), and
/// the two scales spread over their eight lanes. The same numbers the decode kernels derive
/// from an [`ActPair`] on the fly, so both paths give the same bits.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, bytemuck::Zeroable, bytemuck::Pod)]
pub struct PairMeta {
    /// `−c·Σ` of each group of four values, lane `j` for `qs[4j..4j + 4]`.
    pub start: [i32; 16],
    /// The first block's scale in lanes 0..8, the second's in lanes 8..16.
    pub dy: [f32; 16],
}
const _: () = assert!(std::mem::size_of::<PairMeta>() == 128);

impl PairMeta {
    /// The meta of activation pair `a` for weights whose offset is `1 << shift`.
    pub fn new(a: &ActPair, shift: u32) -> Self {
        PairMeta {
            start: std::array::from_fn(|j| (a.neg_sums[j] as i32) << shift),
            dy: std::array::from_fn(|j| a.d[j / 8]),
        }
    }

    /// `meta[p] = PairMeta::new(&pairs[p], shift)` for as many pairs as `meta` holds (none for
    /// decode, which passes an empty slice).
    pub fn fill(pairs: &[ActPair], meta: &mut [PairMeta], shift: u32) {
        for (m, a) in meta.iter_mut().zip(pairs) {
            *m = PairMeta::new(a, shift);
        }
    }
}

/// Block pairs of a row of `nb` blocks.
pub fn pairs(nb: usize) -> usize {
    nb.div_ceil(2)
}

/// Rearranges one token's Q8_0 activation row into `pairs(y.len())` [`ActPair`]s: the portable
/// definition that [`super::zmm::pack_q8_0`] (what the matmul runs) is tested against.
pub fn pack_activations(y: &[BlockQ8_0], out: &mut [ActPair]) {
    assert_eq!(out.len(), pairs(y.len()), "activation pairs");
    for (p, o) in out.iter_mut().enumerate() {
        *o = bytemuck::Zeroable::zeroed();
        for h in 0..2 {
            let Some(b) = y.get(2 * p + h) else { break };
            o.qs[32 * h..32 * h + 32].copy_from_slice(&b.qs);
            o.d[h] = b.d.to_f32();
            for j in 0..8 {
                let s: i32 = b.qs[4 * j..4 * j + 4].iter().map(|&v| v as i32).sum();
                o.neg_sums[8 * h + j] = -s as i16;
            }
        }
    }
}

/// Rearranges one token's Q8_1 activation row (the activations of Q4_1 / Q5_1 weights) into
/// [`ActPair`]s: the values and scales as [`pack_activations`] (Q8_1's are Q8_0's), the block
/// sums `s`, and no group sums (these weights are unsigned, `c = 0`).
pub fn pack_activations_q8_1(y: &[BlockQ8_1], out: &mut [ActPair]) {
    assert_eq!(out.len(), pairs(y.len()), "activation pairs");
    for (p, o) in out.iter_mut().enumerate() {
        *o = bytemuck::Zeroable::zeroed();
        for h in 0..2 {
            let Some(b) = y.get(2 * p + h) else { break };
            o.qs[32 * h..32 * h + 32].copy_from_slice(&b.qs);
            o.d[h] = b.d.to_f32();
            o.s[h] = b.s.to_f32();
        }
    }
}

/// 16 bytes of nibbles in value order: the low nibbles are values 0..16, the high 16..32.
fn nibbles(qs: &[u8; 16]) -> [u8; 32] {
    std::array::from_fn(|j| {
        let b = qs[j % 16];
        if j < 16 {
            b & 0x0F
        } else {
            b >> 4
        }
    })
}

/// Adds 16 to value `j` where bit `j` of `qh` is set (Q5_0's and Q5_1's fifth bit).
fn with_fifth_bit(v: [u8; 32], qh: [u8; 4]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    std::array::from_fn(|j| v[j] | ((((qh >> j) & 1) as u8) << 4))
}

/// A legacy weight block the AVX-512 kernels take: its values as `q + OFFSET` in
/// `0..=255`, in the order of the Q8_0 activation block's values.
pub trait PackedWeight: bytemuck::Pod + Sync {
    /// `log2(c)`: the activation group sums are scaled by `c = 1 << SHIFT`.
    const SHIFT: u32;
    /// The block's scale.
    fn scale(&self) -> f32;
    /// The 32 values `q + c`.
    fn unsigned(&self) -> [u8; 32];
    /// True for the affine blocks (Q4_1, Q5_1: `x = d·q + m`), whose dot adds `Σ m·s`.
    const AFFINE: bool = false;
    /// The block's min `m` (affine blocks).
    fn min(&self) -> f32 {
        0.0
    }
}

impl PackedWeight for BlockQ4_0 {
    const SHIFT: u32 = 3;
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    fn unsigned(&self) -> [u8; 32] {
        nibbles(&self.qs)
    }
}

impl PackedWeight for BlockQ5_0 {
    const SHIFT: u32 = 4;
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    fn unsigned(&self) -> [u8; 32] {
        with_fifth_bit(nibbles(&self.qs), self.qh)
    }
}

impl PackedWeight for BlockQ8_0 {
    const SHIFT: u32 = 7;
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    fn unsigned(&self) -> [u8; 32] {
        std::array::from_fn(|j| (self.qs[j] as u8) ^ 0x80)
    }
}

impl PackedWeight for BlockIQ4NL {
    /// The grid values `kvalues_iq4nl[i]` are in −127..113: offset by 128 as Q8_0's values.
    const SHIFT: u32 = 7;
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    fn unsigned(&self) -> [u8; 32] {
        let kv = &quantize::lowbit::KVALUES_IQ4NL;
        nibbles(&self.qs).map(|i| (kv[i as usize] as u8) ^ 0x80)
    }
}

impl PackedWeight for BlockQ4_1 {
    /// Unsigned already: no offset, no group sums.
    const SHIFT: u32 = 0;
    const AFFINE: bool = true;
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    fn min(&self) -> f32 {
        self.m.to_f32()
    }
    fn unsigned(&self) -> [u8; 32] {
        nibbles(&self.qs)
    }
}

impl PackedWeight for BlockQ5_1 {
    const SHIFT: u32 = 0;
    const AFFINE: bool = true;
    fn scale(&self) -> f32 {
        self.d.to_f32()
    }
    fn min(&self) -> f32 {
        self.m.to_f32()
    }
    fn unsigned(&self) -> [u8; 32] {
        with_fifth_bit(nibbles(&self.qs), self.qh)
    }
}

/// `Σ m·s` over the blocks of one affine weight row against one token's pairs, in block order
/// (the term the AVX2 kernels add after their lanes' sum); 0 for the other types.
pub fn affine_term<W: PackedWeight>(x: &[W], y: &[ActPair]) -> f32 {
    let mut summs = 0f32;
    if W::AFFINE {
        for (i, b) in x.iter().enumerate() {
            summs += b.min() * y[i / 2].s[i % 2];
        }
    }
    summs
}

/// Unpacks one weight row of blocks `x` into `pairs(x.len())` [`WeightPair`]s.
pub fn unpack_weights<W: PackedWeight>(x: &[W], out: &mut [WeightPair]) {
    assert_eq!(out.len(), pairs(x.len()), "weight pairs");
    // An odd row's last pair is completed with an all-zero block (scale 0), as the SIMD
    // unpack does.
    let pad = W::zeroed();
    for (p, o) in out.iter_mut().enumerate() {
        for h in 0..2 {
            let b = x.get(2 * p + h).unwrap_or(&pad);
            o.u[32 * h..32 * h + 32].copy_from_slice(&b.unsigned());
            o.d[8 * h..8 * h + 8].fill(b.scale());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quantize::Quantize;

    fn row(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    /// `u − c` gives back each format's signed values (as its scalar dot product reads them).
    #[test]
    fn unsigned_values_are_offset_signed_values() {
        let x = row(96, 7);
        let mut q5 = vec![<BlockQ5_0 as bytemuck::Zeroable>::zeroed(); 3];
        BlockQ5_0::quantize_row_ref(&x, &mut q5);
        let mut deq = vec![0f32; 96];
        BlockQ5_0::dequantize_row(&q5, &mut deq);
        let mut w = vec![<WeightPair as bytemuck::Zeroable>::zeroed(); 2];
        unpack_weights(&q5, &mut w);
        for (i, &v) in deq.iter().enumerate() {
            let (p, k) = (i / 64, i % 64);
            let q = w[p].u[k] as i32 - 16;
            assert_eq!(q as f32 * w[p].d[(k / 32) * 8], v, "value {i}");
        }
        // The odd last block is paired with a zero block.
        assert!(w[1].u[32..].iter().all(|&u| u == 0) && w[1].d[8..].iter().all(|&d| d == 0.0));
    }

    #[test]
    fn activation_pairs_hold_values_scales_and_group_sums() {
        let x = row(96, 3);
        let mut y = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); 3];
        BlockQ8_0::quantize_row_ref(&x, &mut y);
        let mut a = vec![<ActPair as bytemuck::Zeroable>::zeroed(); 2];
        pack_activations(&y, &mut a);
        assert_eq!(a[0].qs[32..], y[1].qs);
        assert_eq!(a[1].d, [y[2].d.to_f32(), 0.0]);
        let s: i32 = y[1].qs[8..12].iter().map(|&v| v as i32).sum();
        assert_eq!(a[0].neg_sums[10] as i32, -s);
    }
}
