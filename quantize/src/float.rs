//! The float storage types F32, F16 and BF16.
//!
//! F16 rounds to nearest-even, as ggml's `GGML_FP32_TO_FP16` (software or F16C) does.
//! BF16 mirrors ggml's `ggml_compute_fp32_to_bf16`: round to nearest-even on the top 16 bits,
//! NaN kept quiet.

use half::{bf16, f16};

/// f32 → bf16 exactly as ggml converts (`ggml_compute_fp32_to_bf16`).
#[inline]
pub fn f32_to_bf16(x: f32) -> bf16 {
    let u = x.to_bits();
    let h = if (u & 0x7fff_ffff) > 0x7f80_0000 {
        (u >> 16) | 64
    } else {
        (u.wrapping_add(0x7fff + ((u >> 16) & 1))) >> 16
    };
    bf16::from_bits(h as u16)
}

/// f32 → f16, round to nearest-even.
#[inline]
pub fn f32_to_f16(x: f32) -> f16 {
    f16::from_f32(x)
}

/// Converts a row of f32 to little-endian f16 bytes.
pub fn f32_to_f16_bytes(x: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f32_to_f16(v).to_bits().to_le_bytes());
    }
}

/// Converts a row of f32 to little-endian bf16 bytes.
pub fn f32_to_bf16_bytes(x: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(2).zip(x) {
        o.copy_from_slice(&f32_to_bf16(v).to_bits().to_le_bytes());
    }
}

/// Reads little-endian f16 bytes into f32.
pub fn f16_bytes_to_f32(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
    }
}

/// Reads little-endian bf16 bytes into f32 (exact: bf16 is the top half of an f32).
pub fn bf16_bytes_to_f32(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
    }
}

/// Reads little-endian f32 bytes.
pub fn f32_bytes_to_f32(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0).to_f32(), 1.0);
        // 1 + 3·2^-8 is halfway too, and rounds up to the even 1 + 2^-6.
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0).to_f32(), 1.0 + 1.0 / 64.0);
        assert!(f32_to_bf16(f32::NAN).to_f32().is_nan());
        assert_eq!(f32_to_bf16(f32::INFINITY).to_f32(), f32::INFINITY);
        for &x in &[0.0f32, -0.0, 1.5, -3.25e-20, 6.5e30] {
            assert_eq!(f32_to_bf16(x), bf16::from_f32(x), "{x}");
        }
    }
}
