//! Layouts for the sixteen-lane AVX-512 kernels of the legacy weight types (Q4_0, Q5_0, Q8_0,
//! IQ4_NL against Q8_0 activations; Q4_1, Q5_1 against Q8_1) in [`super::zmm`].
//!
//! Their dot is [`super::scalar::block_step`]'s chain: per block the exact integer sum `Σq·y`,
//! then `acc = fma(dx·dy, sum, acc)` in block order. The kernels put sixteen *outputs* in the
//! sixteen lanes — rows of the weight — so a block costs one float step per sixteen rows:
//!
//! - [`WeightTile`]: one block of sixteen weight rows, unpacked to unsigned bytes `u = q + c`
//!   (c = 8 for Q4_0, 16 for Q5_0, 128 for Q8_0 and IQ4_NL's grid values, 0 for the affine
//!   types) and interleaved so that register `k` holds values `4k..4k + 4` of every row (lane
//!   `r` = row `r`); with the rows' scales (and mins). The prefill GEMM unpacks a task's rows
//!   into tiles once and reuses them for every token: a block is eight `vpdpbusd`, each with
//!   four of the token's values broadcast.
//! - [`ActBlock`]: one activation block (quantized by the reference quantizer as before, only
//!   rearranged) with its scale as f32 and its start `−c·Σy`, so that `start + Σu·y = Σq·y`.
//!
//! Nothing here changes a result: every path computes the same integers and the same chain.

use quantize::blocks::{
    BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1,
};

/// Rows per [`WeightTile`]: one per lane.
pub const TILE_ROWS: usize = 16;

/// One token's activation block.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Zeroable, bytemuck::Pod)]
pub struct ActBlock {
    /// The 32 quantized values.
    pub qs: [i8; 32],
    /// `−c·Σqs` for the weight type's offset `c = 1 << shift` (0 for Q8_1 activations).
    pub start: i32,
    /// The scale (the f16, widened).
    pub d: f32,
    /// Q8_1's `s = d·Σq`, widened (zero for Q8_0): the affine types' mins' term.
    pub s: f32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<ActBlock>() == 48);

impl ActBlock {
    /// Q8_0 block `b` for weights offset by `1 << shift`.
    pub fn from_q8_0(b: &BlockQ8_0, shift: u32) -> Self {
        let sum: i32 = b.qs.iter().map(|&v| v as i32).sum();
        ActBlock {
            qs: b.qs,
            start: -(sum << shift),
            d: b.d.to_f32(),
            s: 0.0,
            _pad: 0,
        }
    }

    /// Q8_1 block `b` (the activations of the unsigned affine types: no start).
    pub fn from_q8_1(b: &BlockQ8_1) -> Self {
        ActBlock {
            qs: b.qs,
            start: 0,
            d: b.d.to_f32(),
            s: b.s.to_f32(),
            _pad: 0,
        }
    }
}

/// Sixteen weight rows' block `b`, unpacked and interleaved.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, bytemuck::Zeroable, bytemuck::Pod)]
pub struct WeightTile {
    /// `u[k][r]`: values `4k..4k + 4` of row `r` as unsigned bytes `q + c`, little-endian.
    pub u: [[u32; TILE_ROWS]; 8],
    /// Each row's scale.
    pub d: [f32; TILE_ROWS],
    /// Each row's min (affine types; zero otherwise).
    pub m: [f32; TILE_ROWS],
}
const _: () = assert!(std::mem::size_of::<WeightTile>() == 640);

/// Rearranges one token's Q8_0 activation row for weights offset by `1 << shift`: the portable
/// definition [`super::zmm::pack_q8_0`] (what the matmul runs) is tested against.
pub fn pack_activations(y: &[BlockQ8_0], shift: u32, out: &mut [ActBlock]) {
    assert_eq!(out.len(), y.len(), "activation blocks");
    for (o, b) in out.iter_mut().zip(y) {
        *o = ActBlock::from_q8_0(b, shift);
    }
}

/// Rearranges one token's Q8_1 activation row (the activations of Q4_1 / Q5_1 weights).
pub fn pack_activations_q8_1(y: &[BlockQ8_1], out: &mut [ActBlock]) {
    assert_eq!(out.len(), y.len(), "activation blocks");
    for (o, b) in out.iter_mut().zip(y) {
        *o = ActBlock::from_q8_1(b);
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
pub trait PackedWeight: super::LegacyBlock + bytemuck::Pod + Sync {
    /// `log2(c)`: the activation group sums are scaled by `c = 1 << SHIFT`.
    const SHIFT: u32;
    /// The 32 values `q + c`.
    fn unsigned(&self) -> [u8; 32];
}

impl PackedWeight for BlockQ4_0 {
    const SHIFT: u32 = 3;
    fn unsigned(&self) -> [u8; 32] {
        nibbles(&self.qs)
    }
}

impl PackedWeight for BlockQ5_0 {
    const SHIFT: u32 = 4;
    fn unsigned(&self) -> [u8; 32] {
        with_fifth_bit(nibbles(&self.qs), self.qh)
    }
}

impl PackedWeight for BlockQ8_0 {
    const SHIFT: u32 = 7;
    fn unsigned(&self) -> [u8; 32] {
        std::array::from_fn(|j| (self.qs[j] as u8) ^ 0x80)
    }
}

impl PackedWeight for BlockIQ4NL {
    /// The grid values `kvalues_iq4nl[i]` are in −127..113: offset by 128 as Q8_0's values.
    const SHIFT: u32 = 7;
    fn unsigned(&self) -> [u8; 32] {
        let kv = &quantize::lowbit::KVALUES_IQ4NL;
        nibbles(&self.qs).map(|i| (kv[i as usize] as u8) ^ 0x80)
    }
}

impl PackedWeight for BlockQ4_1 {
    /// Unsigned already: no offset, no group sums.
    const SHIFT: u32 = 0;
    fn unsigned(&self) -> [u8; 32] {
        nibbles(&self.qs)
    }
}

impl PackedWeight for BlockQ5_1 {
    const SHIFT: u32 = 0;
    fn unsigned(&self) -> [u8; 32] {
        with_fifth_bit(nibbles(&self.qs), self.qh)
    }
}

/// Unpacks up to sixteen weight rows of `nb` blocks each (`x` holds them one after another)
/// into `nb` [`WeightTile`]s; lanes past the last row are zero. The portable definition
/// [`super::zmm::unpack_tiles`] is tested against.
pub fn unpack_tiles<W: PackedWeight>(x: &[W], nb: usize, out: &mut [WeightTile]) {
    let rows = x.len() / nb.max(1);
    assert!(
        rows <= TILE_ROWS && x.len() == rows * nb && out.len() == nb,
        "weight tiles"
    );
    for (b, o) in out.iter_mut().enumerate() {
        *o = bytemuck::Zeroable::zeroed();
        for r in 0..rows {
            let blk = &x[r * nb + b];
            let u = blk.unsigned();
            for k in 0..8 {
                o.u[k][r] =
                    u32::from_le_bytes([u[4 * k], u[4 * k + 1], u[4 * k + 2], u[4 * k + 3]]);
            }
            o.d[r] = blk.scale_f16().to_f32();
            o.m[r] = blk.min_f16().to_f32();
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

    /// `u − c` gives back each format's signed values (as its scalar dot product reads them),
    /// in the lanes of their rows.
    #[test]
    fn unsigned_values_are_offset_signed_values() {
        let x: Vec<f32> = (0..3).flat_map(|r| row(96, 7 + r)).collect();
        let mut q5 = vec![<BlockQ5_0 as bytemuck::Zeroable>::zeroed(); 9];
        BlockQ5_0::quantize_row_ref(&x, &mut q5);
        let mut deq = vec![0f32; 3 * 96];
        BlockQ5_0::dequantize_row(&q5, &mut deq);
        let mut w = vec![<WeightTile as bytemuck::Zeroable>::zeroed(); 3];
        unpack_tiles(&q5, 3, &mut w);
        for (i, &v) in deq.iter().enumerate() {
            let (r, b, j) = (i / 96, i % 96 / 32, i % 32);
            let u = w[b].u[j / 4][r].to_le_bytes()[j % 4];
            assert_eq!((u as i32 - 16) as f32 * w[b].d[r], v, "value {i}");
        }
        // Lanes past the third row are empty.
        assert!(w.iter().all(|t| t.d[3..].iter().all(|&d| d == 0.0)
            && t.u.iter().all(|k| k[3..].iter().all(|&u| u == 0))));
    }

    #[test]
    fn activation_blocks_hold_values_scales_and_starts() {
        let x = row(96, 3);
        let mut y = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); 3];
        BlockQ8_0::quantize_row_ref(&x, &mut y);
        let mut a = vec![<ActBlock as bytemuck::Zeroable>::zeroed(); 3];
        pack_activations(&y, 3, &mut a);
        assert_eq!(a[1].qs, y[1].qs);
        assert_eq!(a[2].d, y[2].d.to_f32());
        let s: i32 = y[1].qs.iter().map(|&v| v as i32).sum();
        assert_eq!(a[1].start, -8 * s);
    }
}
