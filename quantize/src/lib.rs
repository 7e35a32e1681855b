//! # quantize — kiln's number formats
//!
//! The GGUF tensor types kiln reads and writes ([`GgmlType`], one table with ids, block sizes
//! and bytes per block), their block layouts ([`blocks`], `#[repr(C)]` and size-checked at
//! compile time), and the deterministic scalar reference quantizers that decide every byte of
//! a kiln artifact.
//!
//! Each quantized format implements [`Quantize`] with the two paths ggml has: the plain
//! quantizer (ggml's `quantize_row_*_ref`) and the importance-weighted one (ggml's
//! `quantize_*` with `quant_weights`, fed by an imatrix), plus the dequantizer. They are ports
//! of `ggml/src/ggml-quants.c` that keep its arithmetic to the bit, so kiln's bytes equal
//! llama.cpp's on every machine; the golden tests in `tests/golden.rs` prove it on vectors
//! produced by ggml itself.
//!
//! The tensor-level entry points ([`quantize`], [`quantize_into`], [`dequantize_into`])
//! validate their input (row length a multiple of the block size, every value finite,
//! importance weights finite and non-negative), quantize rows in parallel with rayon — each row
//! is independent, so the bytes do not depend on the thread count — and report blocks whose
//! scale underflowed f16 so callers can warn.
//!
//! SIMD lives in the `kernels` crate and is for inference only: artifacts are written through
//! this crate's scalar code.

pub mod alloc;
pub mod blocks;
pub mod float;
pub mod gptq;
mod kquants;
mod legacy;
pub mod linalg;
pub mod lowbit;
pub mod mix;
pub mod refine;
pub mod search;
pub mod types;

use rayon::prelude::*;

pub use blocks::*;
pub use types::{GgmlType, TypeInfo, UnknownType, ALL_TYPES};

/// A quantized block format's reference quantizers and dequantizer.
pub trait Quantize: BlockFormat {
    /// Plain quantization of `x` (`y.len()` blocks). Mirrors ggml's `quantize_row_*_ref`.
    fn quantize_row_ref(x: &[f32], y: &mut [Self]);
    /// Importance-weighted quantization of one row: `qw[i]` weighs the squared error of
    /// column `i`. Mirrors ggml's `quantize_row_*_impl`; types without a weighted search
    /// (Q8_0 and the activation formats) fall back to the plain path, as ggml does.
    fn quantize_row_weighted(x: &[f32], y: &mut [Self], qw: &[f32]);
    /// Dequantization. Mirrors ggml's `dequantize_row_*`.
    fn dequantize_row(x: &[Self], y: &mut [f32]);
}

/// What can go wrong quantizing or dequantizing. Callers add the tensor name and file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// A NaN or infinity in the input: never silently quantized.
    #[error("row {row}, column {column}: non-finite value {value} cannot be quantized")]
    NonFinite {
        row: usize,
        column: usize,
        value: f32,
    },
    /// The row length is not a multiple of the type's block size.
    #[error("a row of {n_per_row} values is not a multiple of {ty}'s block size {block_size}")]
    RowLength {
        ty: GgmlType,
        n_per_row: usize,
        block_size: usize,
    },
    /// The data is not a whole number of rows.
    #[error("{len} values do not make whole rows of {n_per_row}")]
    Ragged { len: usize, n_per_row: usize },
    /// The importance weights do not match the row length.
    #[error("importance weights have {got} values but rows have {expected}")]
    ImatrixLength { got: usize, expected: usize },
    /// An importance weight is negative or not finite.
    #[error("importance weight {column} is {value}: weights must be finite and non-negative")]
    BadImatrix { column: usize, value: f32 },
    /// GPTQ could not use the calibration Hessian.
    #[error("GPTQ: {0}")]
    Gptq(#[from] gptq::GptqError),
    /// A byte buffer of the wrong size.
    #[error("{got} bytes given where {count} values of {ty} take {expected}")]
    ByteLength {
        ty: GgmlType,
        count: usize,
        got: usize,
        expected: usize,
    },
}

/// What quantizing a tensor found worth telling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuantizeStats {
    /// Rows quantized.
    pub rows: usize,
    /// Blocks holding non-zero values whose dequantized relative RMS error exceeds 50 %:
    /// values so small that the f16 scale underflowed (ggml writes zeros or worse for these;
    /// kiln writes the same bytes and says so).
    pub degraded_blocks: usize,
}

/// Blocks whose absolute maximum is below this are checked for scale underflow.
const UNDERFLOW_CHECK_AMAX: f32 = 1.0 / 1024.0;

macro_rules! dispatch_block {
    ($ty:expr, $B:ident => $body:expr, float => $fbody:expr) => {
        match $ty {
            GgmlType::Q4_0 => {
                type $B = BlockQ4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $B = BlockQ4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $B = BlockQ5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $B = BlockQ5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $B = BlockQ8_0;
                $body
            }
            GgmlType::Q8_1 => {
                type $B = BlockQ8_1;
                $body
            }
            GgmlType::Q4K => {
                type $B = BlockQ4K;
                $body
            }
            GgmlType::Q5K => {
                type $B = BlockQ5K;
                $body
            }
            GgmlType::Q6K => {
                type $B = BlockQ6K;
                $body
            }
            GgmlType::Q8K => {
                type $B = BlockQ8K;
                $body
            }
            GgmlType::Q2K => {
                type $B = BlockQ2K;
                $body
            }
            GgmlType::Q3K => {
                type $B = BlockQ3K;
                $body
            }
            GgmlType::IQ4NL => {
                type $B = BlockIQ4NL;
                $body
            }
            GgmlType::IQ4XS => {
                type $B = BlockIQ4XS;
                $body
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => $fbody,
        }
    };
}

fn check_shape(ty: GgmlType, len: usize, n_per_row: usize) -> Result<(), QuantError> {
    let block_size = ty.block_size();
    if n_per_row == 0 || !n_per_row.is_multiple_of(block_size) {
        return Err(QuantError::RowLength {
            ty,
            n_per_row,
            block_size,
        });
    }
    if !len.is_multiple_of(n_per_row) {
        return Err(QuantError::Ragged { len, n_per_row });
    }
    Ok(())
}

/// The first non-finite value of `x`, by row then column (deterministic under rayon).
pub fn find_non_finite(x: &[f32], n_per_row: usize) -> Option<QuantError> {
    x.par_chunks(n_per_row.max(1))
        .enumerate()
        .find_map_first(|(row, r)| {
            r.iter()
                .position(|v| !v.is_finite())
                .map(|column| QuantError::NonFinite {
                    row,
                    column,
                    value: r[column],
                })
        })
}

/// Checks importance weights against the row length.
pub fn check_imatrix(qw: &[f32], n_per_row: usize) -> Result<(), QuantError> {
    if qw.len() != n_per_row {
        return Err(QuantError::ImatrixLength {
            got: qw.len(),
            expected: n_per_row,
        });
    }
    if let Some(column) = qw.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(QuantError::BadImatrix {
            column,
            value: qw[column],
        });
    }
    Ok(())
}

/// Quantizes `x` (rows of `n_per_row`) to `ty`, with importance weights `imatrix` (one per
/// column) when given; returns the bytes ggml would write and the stats.
pub fn quantize(
    ty: GgmlType,
    x: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<(Vec<u8>, QuantizeStats), QuantError> {
    check_shape(ty, x.len(), n_per_row)?;
    let mut out = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
    let stats = quantize_into(ty, x, n_per_row, imatrix, &mut out)?;
    Ok((out, stats))
}

/// [`quantize`] into a caller's buffer of exactly the tensor's byte size.
pub fn quantize_into(
    ty: GgmlType,
    x: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    out: &mut [u8],
) -> Result<QuantizeStats, QuantError> {
    check_shape(ty, x.len(), n_per_row)?;
    let expected = x.len() / ty.block_size() * ty.type_size();
    if out.len() != expected {
        return Err(QuantError::ByteLength {
            ty,
            count: x.len(),
            got: out.len(),
            expected,
        });
    }
    if let Some(qw) = imatrix {
        check_imatrix(qw, n_per_row)?;
    }
    if let Some(e) = find_non_finite(x, n_per_row) {
        return Err(e);
    }
    let rows = x.len() / n_per_row;
    let row_bytes = expected / rows.max(1);
    let degraded_blocks = dispatch_block!(ty, B => quantize_rows::<B>(x, n_per_row, imatrix, out, row_bytes),
    float => {
        let conv: fn(&[f32], &mut [u8]) = match ty {
            GgmlType::F16 => float::f32_to_f16_bytes,
            GgmlType::BF16 => float::f32_to_bf16_bytes,
            _ => |x, o| {
                for (c, v) in o.chunks_exact_mut(4).zip(x) {
                    c.copy_from_slice(&v.to_le_bytes());
                }
            },
        };
        x.par_chunks(n_per_row).zip(out.par_chunks_mut(row_bytes)).for_each(|(r, o)| conv(r, o));
        0
    });
    Ok(QuantizeStats {
        rows,
        degraded_blocks,
    })
}

/// Converts `x` to a float storage type (F32, F16, BF16) without the finiteness check: NaN
/// and infinities have float encodings, so a caller that has decided to keep them can.
/// Returns `None` for the block types.
pub fn convert_float(ty: GgmlType, x: &[f32]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; x.len() * ty.type_size()];
    match ty {
        GgmlType::F32 => out.copy_from_slice(bytemuck::cast_slice(x)),
        GgmlType::F16 => float::f32_to_f16_bytes(x, &mut out),
        GgmlType::BF16 => float::f32_to_bf16_bytes(x, &mut out),
        _ => return None,
    }
    Some(out)
}

fn quantize_rows<B: Quantize>(
    x: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
    out: &mut [u8],
    row_bytes: usize,
) -> usize {
    let nb = n_per_row / B::BLOCK_SIZE;
    x.par_chunks(n_per_row)
        .zip(out.par_chunks_mut(row_bytes))
        .map_init(
            || (vec![B::zeroed(); nb], vec![0f32; n_per_row]),
            |(blocks, deq), (row, o)| {
                match imatrix {
                    Some(qw) => B::quantize_row_weighted(row, blocks, qw),
                    None => B::quantize_row_ref(row, blocks),
                }
                o.copy_from_slice(bytemuck::cast_slice(blocks));
                count_degraded::<B>(row, blocks, deq)
            },
        )
        .sum()
}

/// Counts blocks of `row` that lost most of their signal (see [`QuantizeStats`]). Only rows
/// with a block below [`UNDERFLOW_CHECK_AMAX`] are dequantized to check.
fn count_degraded<B: Quantize>(row: &[f32], blocks: &[B], deq: &mut [f32]) -> usize {
    let small = row
        .chunks_exact(B::BLOCK_SIZE)
        .any(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())) < UNDERFLOW_CHECK_AMAX);
    if !small {
        return 0;
    }
    B::dequantize_row(blocks, deq);
    row.chunks_exact(B::BLOCK_SIZE)
        .zip(deq.chunks_exact(B::BLOCK_SIZE))
        .filter(|(x, y)| {
            let (mut s, mut e) = (0.0f64, 0.0f64);
            for (&a, &b) in x.iter().zip(y.iter()) {
                s += (a as f64) * (a as f64);
                e += ((a - b) as f64) * ((a - b) as f64);
            }
            s > 0.0 && e > 0.25 * s
        })
        .count()
}

/// Dequantizes `bytes` of type `ty` into `out` (whose length is the value count).
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let count = out.len();
    if !count.is_multiple_of(ty.block_size()) {
        return Err(QuantError::RowLength {
            ty,
            n_per_row: count,
            block_size: ty.block_size(),
        });
    }
    let expected = count / ty.block_size() * ty.type_size();
    if bytes.len() != expected {
        return Err(QuantError::ByteLength {
            ty,
            count,
            got: bytes.len(),
            expected,
        });
    }
    dispatch_block!(ty, B => dequantize_blocks::<B>(bytes, out),
    float => match ty {
        GgmlType::F16 => float::f16_bytes_to_f32(bytes, out),
        GgmlType::BF16 => float::bf16_bytes_to_f32(bytes, out),
        _ => float::f32_bytes_to_f32(bytes, out),
    });
    Ok(())
}

/// [`dequantize_into`] allocating the output.
pub fn dequantize(ty: GgmlType, bytes: &[u8], count: usize) -> Result<Vec<f32>, QuantError> {
    let mut out = vec![0f32; count];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

fn dequantize_blocks<B: Quantize>(bytes: &[u8], out: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(blocks) => B::dequantize_row(blocks, out),
        Err(_) => {
            let blocks: Vec<B> = bytemuck::pod_collect_to_vec(bytes);
            B::dequantize_row(&blocks, out)
        }
    }
}

/// Views little-endian `bytes` as blocks (or f32 / f16 / u16 values), copying only when the
/// slice is misaligned for `B`.
pub fn blocks_from_bytes<B: bytemuck::Pod>(bytes: &[u8]) -> std::borrow::Cow<'_, [B]> {
    match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(b) => std::borrow::Cow::Borrowed(b),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}
