//! Helpers shared by the kernel's integration tests.

/// `n` pseudo-random values in `[−scale, scale)` from `seed` (xorshift*), the same on every
/// machine.
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32;
            (u - 0.5) * 2.0 * scale
        })
        .collect()
}
