//! The block structs of the quantized formats, laid out byte for byte as ggml's
//! `ggml-common.h` declares them (`block_q4_0` … `block_q8_K`).
//!
//! Every struct is `#[repr(C)]`, plain old data (so a byte slice from a memory-mapped file can
//! be viewed as blocks), and checked at compile time against the type table's byte count.

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::types::GgmlType;

/// Values per block of the legacy formats (Q4_0 … Q8_1).
pub const QK: usize = 32;
/// Values per super-block of the K-quants.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in a Q4_K / Q5_K super-block.
pub const K_SCALE_SIZE: usize = 12;

/// A quantized block format: its layout plus the facts the generic code needs.
pub trait BlockFormat: Pod + Zeroable + Send + Sync + 'static {
    /// The GGUF type this block belongs to.
    const TYPE: GgmlType;
    /// Values per block.
    const BLOCK_SIZE: usize;
}

macro_rules! block_format {
    ($name:ident, $ty:expr, $bs:expr) => {
        impl BlockFormat for $name {
            const TYPE: GgmlType = $ty;
            const BLOCK_SIZE: usize = $bs;
        }
        const _: () = assert!(std::mem::size_of::<$name>() == $ty.type_size());
        const _: () = assert!($bs == $ty.block_size());
    };
}

/// Q4_0: 32 values as 4-bit `q` with `x = d·(q − 8)`. 18 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: value `j` in the low half of byte `j`, value `j + 16` in the high half.
    pub qs: [u8; QK / 2],
}
block_format!(BlockQ4_0, GgmlType::Q4_0, QK);

/// Q4_1: 32 values as 4-bit `q` with `x = d·q + m`. 20 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Nibbles, as in Q4_0.
    pub qs: [u8; QK / 2],
}
block_format!(BlockQ4_1, GgmlType::Q4_1, QK);

/// Q5_0: 32 values as 5-bit `q` with `x = d·(q − 16)`. 22 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, bit `j` for value `j` (little-endian u32).
    pub qh: [u8; 4],
    /// Low nibbles, as in Q4_0.
    pub qs: [u8; QK / 2],
}
block_format!(BlockQ5_0, GgmlType::Q5_0, QK);

/// Q5_1: 32 values as 5-bit `q` with `x = d·q + m`. 24 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (offset).
    pub m: f16,
    /// Fifth bits, as in Q5_0.
    pub qh: [u8; 4],
    /// Low nibbles.
    pub qs: [u8; QK / 2],
}
block_format!(BlockQ5_1, GgmlType::Q5_1, QK);

/// Q8_0: 32 values as int8 with `x = d·q`. 34 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; QK],
}
block_format!(BlockQ8_0, GgmlType::Q8_0, QK);

/// Q8_1: the activation format of Q4_1 / Q5_1 dot products; Q8_0 plus `s = d·Σq`. 36 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d · Σ qs`, rounded to f16 (the dot product's min term uses it).
    pub s: f16,
    /// Quants.
    pub qs: [i8; QK],
}
block_format!(BlockQ8_1, GgmlType::Q8_1, QK);

/// Q4_K: 256 values in 8 sub-blocks of 32, `x = d·sc·q − dmin·m` with 6-bit `sc`, `m`. 144 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed (see `get_scale_min_k4`).
    pub scales: [u8; K_SCALE_SIZE],
    /// Nibbles: per 64 values, 32 bytes with values `l` low and `l + 32` high.
    pub qs: [u8; QK_K / 2],
}
block_format!(BlockQ4K, GgmlType::Q4K, QK_K);

/// Q5_K: Q4_K plus a fifth bit per value. 176 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block mins.
    pub dmin: f16,
    /// Packed 6-bit scales and mins, as in Q4_K.
    pub scales: [u8; K_SCALE_SIZE],
    /// Fifth bits: byte `l` holds bit 2k / 2k+1 for values `64k + l` / `64k + 32 + l`.
    pub qh: [u8; QK_K / 8],
    /// Low nibbles, as in Q4_K.
    pub qs: [u8; QK_K / 2],
}
block_format!(BlockQ5K, GgmlType::Q5K, QK_K);

/// Q6_K: 256 values in 16 sub-blocks of 16, `x = d·sc·(q − 32)` with int8 `sc`. 210 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
block_format!(BlockQ6K, GgmlType::Q6K, QK_K);

/// Q8_K: the activation format of the K-quant dot products. 292 bytes.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale (f32, unlike every other format).
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sums of each 16 quants.
    pub bsums: [i16; QK_K / 16],
}
block_format!(BlockQ8K, GgmlType::Q8K, QK_K);

/// The 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K super-block.
/// Mirrors ggml's `get_scale_min_k4`.
/// Q2_K: 16 sub-blocks of 16 values, `x = d·sc·q − dmin·m` with 4-bit `sc` and `m` per
/// sub-block and 2-bit `q` (2.625 bits per weight). ggml's `block_q2_K`.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ2K {
    /// Low nibble the scale, high nibble the min, per sub-block.
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}
block_format!(BlockQ2K, GgmlType::Q2K, QK_K);

/// Q3_K: 16 sub-blocks of 16 values, `x = d·(sc − 32)·(q − 4)` with 6-bit `sc` and 3-bit `q`
/// split into two low bits (`qs`) and a high bit (`hmask`) (3.4375 bits per weight). ggml's
/// `block_q3_K`.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockQ3K {
    /// The high bit of value `j` is bit `j / 32` of byte `j % 32` (set means no −4).
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales: low nibbles in bytes 0–7, high two bits in bytes 8–11.
    pub scales: [u8; K_SCALE_SIZE],
    pub d: f16,
}
block_format!(BlockQ3K, GgmlType::Q3K, QK_K);

/// IQ4_NL: 32 values, `x = d·kvalues_iq4nl[q]` with 4-bit indices into the non-linear grid
/// (4.5 bits per weight). ggml's `block_iq4_nl`.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; QK / 2],
}
block_format!(BlockIQ4NL, GgmlType::IQ4NL, QK);

/// IQ4_XS: 8 blocks of 32 values, `x = d·(sc − 32)·kvalues_iq4nl[q]` with 6-bit block scales
/// (4.25 bits per weight). ggml's `block_iq4_xs`.
#[derive(Clone, Copy, Debug, Pod, Zeroable, PartialEq)]
#[repr(C)]
pub struct BlockIQ4XS {
    pub d: f16,
    /// The high two bits of block `ib`'s scale at bits `2·ib`.
    pub scales_h: u16,
    /// The low four bits of the scales, two per byte.
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}
block_format!(BlockIQ4XS, GgmlType::IQ4XS, QK_K);

#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and mins as Q4_K / Q5_K store them (inverse of
/// [`get_scale_min_k4`]); the packing loop of ggml's `quantize_row_q4_K_ref`.
#[inline]
pub fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut s = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_packing_round_trips() {
        let ls = [0, 1, 17, 63, 32, 5, 62, 40];
        let lm = [63, 2, 0, 31, 33, 61, 7, 16];
        let s = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &s), (ls[j], lm[j]));
        }
    }
}
