//! Run-time choice of the SIMD level, as half-rs does it: detect once with
//! `is_x86_feature_detected!`, never trust compile-time flags alone, and let the user force the
//! scalar path (`--force-scalar` or `KILN_FORCE_SCALAR=1`) to check results or to rule SIMD
//! out when chasing a bug. `KILN_SIMD=avx2` caps the level below AVX-512 (to compare levels on
//! one machine; their results are bit-identical).

use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction-set level the kernels use; each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Portable Rust; always available, the reference for every SIMD kernel.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// AVX2 level plus AVX-512 F, BW, VL and VNNI (Ice Lake, Sapphire Rapids, Zen 4 …).
    Avx512,
}

impl SimdLevel {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2+fma+f16c",
            SimdLevel::Avx512 => "avx512-vnni",
        }
    }
}

/// The environment variable that forces the scalar kernels when set to anything but "" or "0".
pub const FORCE_SCALAR_ENV: &str = "KILN_FORCE_SCALAR";

const UNSET: u8 = 0;
const SCALAR: u8 = 1;
const AVX2: u8 = 2;
const AVX512: u8 = 3;

/// The environment variable that caps the level: `scalar`, `avx2` (or `avx512`, the default).
pub const SIMD_ENV: &str = "KILN_SIMD";

static LEVEL: AtomicU8 = AtomicU8::new(UNSET);

fn detect() -> u8 {
    if let Ok(v) = std::env::var(FORCE_SCALAR_ENV) {
        if !v.is_empty() && v != "0" {
            return SCALAR;
        }
    }
    let cap = match std::env::var(SIMD_ENV).as_deref() {
        Ok("scalar") => SCALAR,
        Ok("avx2") => AVX2,
        _ => AVX512,
    };
    best_available().min(cap)
}

fn best_available() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                return AVX512;
            }
            return AVX2;
        }
    }
    SCALAR
}

fn from_u8(l: u8) -> SimdLevel {
    match l {
        AVX512 => SimdLevel::Avx512,
        AVX2 => SimdLevel::Avx2,
        _ => SimdLevel::Scalar,
    }
}

/// The level in use (detected on first call).
#[inline]
pub fn level() -> SimdLevel {
    let mut l = LEVEL.load(Ordering::Relaxed);
    if l == UNSET {
        l = detect();
        LEVEL.store(l, Ordering::Relaxed);
    }
    from_u8(l)
}

/// Uses `l`, or the best level this CPU has below it.
pub fn set_level(l: SimdLevel) {
    let want = match l {
        SimdLevel::Scalar => SCALAR,
        SimdLevel::Avx2 => AVX2,
        SimdLevel::Avx512 => AVX512,
    };
    LEVEL.store(want.min(best_available()), Ordering::Relaxed);
}

/// Forces the scalar kernels (`true`) or returns to the best level the CPU has (`false`).
pub fn force_scalar(on: bool) {
    set_level(if on {
        SimdLevel::Scalar
    } else {
        SimdLevel::Avx512
    });
}

/// The best level this CPU supports, whatever is forced.
pub fn available() -> SimdLevel {
    from_u8(best_available())
}

/// Asks the CPU to bring `bytes` into L2 ahead of use (one prefetch per 64-byte line); a hint
/// with no effect on results. Streaming weight rows through a dot product that does ~10 cycles
/// of work per block leaves too few loads in flight for the hardware prefetchers alone:
/// measured on the Q5_0 matvec from DRAM, 2.2 → 5.6 GB/s with rows prefetched 4 ahead.
///
/// The hint is T1 (into L2, not L1): the dot products keep the core busy for about half the
/// time a row takes to arrive, and L1-bound prefetches stall on the line-fill buffers, so the
/// compute waits behind them. Measured A/B in one session, 2 threads, decode tok/s: F32
/// 32.6 → 35.4, Q8_0 95.5 → 100.0, Q4_K_M 117.8 → 126.4; with no prefetch at all Q8_0 falls
/// to ~75.
#[inline(always)]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let p = bytes.as_ptr() as *const i8;
        let mut off = 0;
        while off < bytes.len() {
            // SAFETY: a prefetch never faults, and `off` stays inside `bytes`. SSE is part of
            // x86-64's baseline.
            unsafe { _mm_prefetch(p.add(off), _MM_HINT_T1) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
