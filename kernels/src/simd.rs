//! Run-time choice of the SIMD level, as half-rs does it: detect once with
//! `is_x86_feature_detected!`, never trust compile-time flags alone, and let the user force the
//! scalar path (`--force-scalar` or `KILN_FORCE_SCALAR=1`) to check results or to rule SIMD
//! out when chasing a bug.

use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction-set level the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// Portable Rust; always available, the reference for every SIMD kernel.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
}

impl SimdLevel {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2+fma+f16c",
        }
    }
}

/// The environment variable that forces the scalar kernels when set to anything but "" or "0".
pub const FORCE_SCALAR_ENV: &str = "KILN_FORCE_SCALAR";

const UNSET: u8 = 0;
const SCALAR: u8 = 1;
const AVX2: u8 = 2;

static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

fn detect() -> u8 {
    if let Ok(v) = std::env::var(FORCE_SCALAR_ENV) {
        if !v.is_empty() && v != "0" {
            return SCALAR;
        }
    }
    best_available()
}

fn best_available() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return AVX2;
        }
    }
    SCALAR
}

/// The level in use (detected on first call).
#[inline]
pub fn level() -> SimdLevel {
    let mut l = LEVEL.load(Ordering::Relaxed);
    if l == UNSET {
        l = detect();
        LEVEL.store(l, Ordering::Relaxed);
    }
    if l == AVX2 {
        SimdLevel::Avx2
    } else {
        SimdLevel::Scalar
    }
}

/// Forces the scalar kernels (`true`) or returns to the best level the CPU has (`false`).
pub fn force_scalar(on: bool) {
    LEVEL.store(
        if on { SCALAR } else { best_available() },
        Ordering::Relaxed,
    );
}

/// The best level this CPU supports, whatever is forced.
pub fn available() -> SimdLevel {
    if best_available() == AVX2 {
        SimdLevel::Avx2
    } else {
        SimdLevel::Scalar
    }
}
