//! The aarch64 kernels ([`kernels::dot::neon`], [`kernels::dot::dotprod`], [`kernels::dot::i8mm`]):
//! each level against the scalar reference, the levels against each other bit for bit, and the
//! batch kernels (four tokens, two rows × four tokens, the 4 × 3 float tiles) against the
//! single dot bit for bit. Run under QEMU at each CPU model by scripts/arm64-check.sh; a level
//! the CPU lacks is reported as skipped. (That these bits are also the x86 kernels' is checked
//! across machines by the kernel_digest example.)
#![cfg(target_arch = "aarch64")]

use half::f16;
use kernels::dot::{self, scalar};
use kernels::simd::{self, SimdLevel};
use quantize::blocks::*;
use quantize::blocks_from_bytes as v;
use quantize::GgmlType;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn value(&mut self, scale: f32) -> f32 {
        let g = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
        if self.next().is_multiple_of(97) {
            g * scale * 30.0
        } else {
            g * scale
        }
    }
    fn row(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.value(scale)).collect()
    }
}

/// The SIMD levels this CPU has; the others are reported as skipped.
fn levels(test: &str) -> Vec<SimdLevel> {
    let have = simd::available_levels();
    for l in [SimdLevel::Neon, SimdLevel::Dotprod, SimdLevel::I8mm] {
        if !have.contains(&l) {
            eprintln!("{test}: skipped at {} (not on this CPU)", l.name());
        }
    }
    have.into_iter().filter(|l| l.is_simd()).collect()
}

/// Runs `$body` with `k` bound to the kernel module of level `$l`.
macro_rules! with_module {
    ($l:expr, |$k:ident| $body:expr) => {
        match $l {
            SimdLevel::Neon => {
                use dot::neon as $k;
                $body
            }
            SimdLevel::Dotprod => {
                use dot::dotprod as $k;
                $body
            }
            SimdLevel::I8mm => {
                use dot::i8mm as $k;
                $body
            }
            l => unreachable!("{l:?}"),
        }
    };
}

const TYPES: [GgmlType; 12] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

fn abs_dot(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f64 {
    let wd = quantize::dequantize(ty, w, n).unwrap();
    let ad = quantize::dequantize(ty.vec_dot_type(), a, n).unwrap();
    wd.iter()
        .zip(&ad)
        .map(|(x, y)| (*x as f64 * *y as f64).abs())
        .sum()
}

#[test]
fn every_level_matches_scalar_and_the_levels_agree_bit_for_bit() {
    let lv = levels("every_level_matches_scalar");
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for trial in 0..12 {
        let n = 256 * (1 + trial % 6);
        let w = rng.row(n, 0.05);
        let x = rng.row(n, 1.0);
        for ty in TYPES {
            let (wq, _) = quantize::quantize(ty, &w, n, None).unwrap();
            let a = dot::quantize_activation(ty, &x);
            simd::set_level(SimdLevel::Scalar);
            let s = dot::vec_dot(ty, n, &wq, &a).unwrap();
            let bound = 1e-5 * abs_dot(ty, &wq, &a, n);
            let mut first: Option<(f32, SimdLevel)> = None;
            for &l in &lv {
                simd::set_level(l);
                let got = dot::vec_dot(ty, n, &wq, &a).unwrap();
                assert!(
                    ((s - got) as f64).abs() <= bound,
                    "{ty} trial {trial}: scalar {s} vs {} {got} (bound {bound:e})",
                    l.name()
                );
                // The legacy types run the scalar kernel's own chain at every level.
                if ty.vec_dot_type() != GgmlType::Q8K {
                    assert_eq!(
                        s.to_bits(),
                        got.to_bits(),
                        "{ty} trial {trial}: scalar {s} vs {} {got}",
                        l.name()
                    );
                }
                match first {
                    Some((f, l0)) => assert_eq!(
                        f.to_bits(),
                        got.to_bits(),
                        "{ty} trial {trial}: {} {f} vs {} {got}",
                        l0.name(),
                        l.name()
                    ),
                    None => first = Some((got, l)),
                }
            }
        }
        // Float types, at lengths with remainders after eight and sixteen values.
        let m = n - trial % 13;
        let (w, x) = (&w[..m], &x[..m]);
        let wf16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wbf: Vec<u16> = w
            .iter()
            .map(|&v| quantize::float::f32_to_bf16(v).to_bits())
            .collect();
        let abs: f64 = w
            .iter()
            .zip(x)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        let mut firsts: Option<[f32; 3]> = None;
        for &l in &lv {
            let got = with_module!(l, |k| unsafe {
                [
                    k::vec_dot_f32(w, x),
                    k::vec_dot_f16_f32(&wf16, x),
                    k::vec_dot_bf16_f32(&wbf, x),
                ]
            });
            let want = [
                scalar::vec_dot_f32(w, x),
                scalar::vec_dot_f16_f32(&wf16, x),
                scalar::vec_dot_bf16_f32(&wbf, x),
            ];
            for (g, s) in got.iter().zip(&want) {
                assert!(
                    ((g - s) as f64).abs() <= 1e-5 * abs,
                    "{} float dot {g} vs {s}",
                    l.name()
                );
            }
            if let Some(f) = firsts {
                assert_eq!(
                    f.map(f32::to_bits),
                    got.map(f32::to_bits),
                    "{} float dots",
                    l.name()
                );
            } else {
                firsts = Some(got);
            }
        }
    }
    simd::set_level(simd::available());
}

#[test]
fn batch_kernels_give_the_single_row_bits() {
    let lv = levels("batch_kernels_give_the_single_row_bits");
    let mut rng = Rng(0xD1B54A32D192ED03);
    for nb in [1usize, 2, 3, 7] {
        let n = 256 * nb;
        let rows: Vec<Vec<f32>> = (0..2).map(|_| rng.row(n, 0.05)).collect();
        let toks: Vec<Vec<f32>> = (0..4).map(|_| rng.row(n, 1.0)).collect();
        macro_rules! check {
            ($ty:expr, $W:ty, $A:ty, $one:ident, $four:ident $(, $two:ident)? $(; $rows:ident)?) => {{
                let w: Vec<Vec<u8>> = rows.iter().map(|r| quantize::quantize($ty, r, n, None).unwrap().0).collect();
                let a: Vec<Vec<u8>> = toks.iter().map(|t| dot::quantize_activation($ty, t)).collect();
                let wb: Vec<std::borrow::Cow<[$W]>> = w.iter().map(|b| v::<$W>(b)).collect();
                let ab: Vec<std::borrow::Cow<[$A]>> = a.iter().map(|b| v::<$A>(b)).collect();
                let y: [&[$A]; 4] = std::array::from_fn(|t| &ab[t][..]);
                for &l in &lv {
                    with_module!(l, |k| unsafe {
                        for r in 0..2 {
                            let single: [f32; 4] = std::array::from_fn(|t| k::$one(&wb[r], y[t]));
                            let four = k::$four(&wb[r], y);
                            assert_eq!(single.map(f32::to_bits), four.map(f32::to_bits),
                                "{} {}: four tokens, {nb} blocks", $ty, l.name());
                            $(
                                let two = k::$two([&wb[0], &wb[1]], y);
                                assert_eq!(single.map(f32::to_bits), two[r].map(f32::to_bits),
                                    "{} {}: two rows × four tokens, {nb} blocks", $ty, l.name());
                            )?
                            $(
                                // Four rows (the two, twice) × one token: the decode kernel.
                                let t = r + 1;
                                let four_rows = k::$rows([&wb[0], &wb[1], &wb[1], &wb[0]], y[t]);
                                let want = [0, 1, 1, 0].map(|i| k::$one(&wb[i], y[t]).to_bits());
                                assert_eq!(four_rows.map(f32::to_bits), want,
                                    "{} {}: four rows × one token, {nb} blocks", $ty, l.name());
                            )?
                        }
                    });
                }
            }};
        }
        check!(
            GgmlType::Q4_0,
            BlockQ4_0,
            BlockQ8_0,
            vec_dot_q4_0_q8_0,
            vec_dot4_q4_0_q8_0,
            vec_dot4x2_q4_0_q8_0;
            vec_dot_rows4_q4_0_q8_0
        );
        check!(
            GgmlType::Q5_0,
            BlockQ5_0,
            BlockQ8_0,
            vec_dot_q5_0_q8_0,
            vec_dot4_q5_0_q8_0,
            vec_dot4x2_q5_0_q8_0;
            vec_dot_rows4_q5_0_q8_0
        );
        check!(
            GgmlType::Q8_0,
            BlockQ8_0,
            BlockQ8_0,
            vec_dot_q8_0_q8_0,
            vec_dot4_q8_0_q8_0,
            vec_dot4x2_q8_0_q8_0;
            vec_dot_rows4_q8_0_q8_0
        );
        check!(
            GgmlType::Q4_1,
            BlockQ4_1,
            BlockQ8_1,
            vec_dot_q4_1_q8_1,
            vec_dot4_q4_1_q8_1;
            vec_dot_rows4_q4_1_q8_1
        );
        check!(
            GgmlType::Q5_1,
            BlockQ5_1,
            BlockQ8_1,
            vec_dot_q5_1_q8_1,
            vec_dot4_q5_1_q8_1;
            vec_dot_rows4_q5_1_q8_1
        );
        check!(
            GgmlType::Q4K,
            BlockQ4K,
            BlockQ8K,
            vec_dot_q4_k_q8_k,
            vec_dot4_q4_k_q8_k
        );
        check!(
            GgmlType::Q5K,
            BlockQ5K,
            BlockQ8K,
            vec_dot_q5_k_q8_k,
            vec_dot4_q5_k_q8_k
        );
        check!(
            GgmlType::Q6K,
            BlockQ6K,
            BlockQ8K,
            vec_dot_q6_k_q8_k,
            vec_dot4_q6_k_q8_k
        );
        check!(
            GgmlType::Q2K,
            BlockQ2K,
            BlockQ8K,
            vec_dot_q2_k_q8_k,
            vec_dot4_q2_k_q8_k
        );
        check!(
            GgmlType::Q3K,
            BlockQ3K,
            BlockQ8K,
            vec_dot_q3_k_q8_k,
            vec_dot4_q3_k_q8_k
        );
        check!(
            GgmlType::IQ4XS,
            BlockIQ4XS,
            BlockQ8K,
            vec_dot_iq4_xs_q8_k,
            vec_dot4_iq4_xs_q8_k
        );
        check!(
            GgmlType::IQ4NL,
            BlockIQ4NL,
            BlockQ8_0,
            vec_dot_iq4_nl_q8_0,
            vec_dot4_iq4_nl_q8_0,
            vec_dot4x2_iq4_nl_q8_0;
            vec_dot_rows4_iq4_nl_q8_0
        );
    }
}

#[test]
fn float_tiles_give_the_single_dot_bits() {
    let lv = levels("float_tiles_give_the_single_dot_bits");
    let mut rng = Rng(0x94D049BB133111EB);
    for n in [7, 8, 16, 24, 37, 40, 576, 1549] {
        let rows: Vec<Vec<f32>> = (0..4).map(|_| rng.row(n, 0.05)).collect();
        let toks: Vec<Vec<f32>> = (0..3).map(|_| rng.row(n, 1.0)).collect();
        let h: Vec<Vec<f16>> = rows
            .iter()
            .map(|r| r.iter().map(|&v| f16::from_f32(v)).collect())
            .collect();
        let w: [&[f32]; 4] = std::array::from_fn(|r| &rows[r][..]);
        let wh: [&[f16]; 4] = std::array::from_fn(|r| &h[r][..]);
        let x: [&[f32]; 3] = std::array::from_fn(|t| &toks[t][..]);
        for &l in &lv {
            with_module!(l, |k| unsafe {
                let (t32, t16) = (k::dot_tile_f32_4x3(w, x, n), k::dot_tile_f16_4x3(wh, x, n));
                for r in 0..4 {
                    for t in 0..3 {
                        let one = k::vec_dot_f32(w[r], x[t]);
                        assert_eq!(
                            one.to_bits(),
                            t32[r][t].to_bits(),
                            "{} f32 tile n {n}",
                            l.name()
                        );
                        let one = k::vec_dot_f16_f32(wh[r], x[t]);
                        assert_eq!(
                            one.to_bits(),
                            t16[r][t].to_bits(),
                            "{} f16 tile n {n}",
                            l.name()
                        );
                    }
                }
            });
        }
    }
}

#[test]
fn kiln_simd_caps_the_level_and_unknown_names_are_refused() {
    assert_eq!(SimdLevel::from_env_name("neon"), Some(SimdLevel::Neon));
    assert_eq!(
        SimdLevel::from_env_name("dotprod"),
        Some(SimdLevel::Dotprod)
    );
    assert_eq!(SimdLevel::from_env_name("i8mm"), Some(SimdLevel::I8mm));
    assert_eq!(SimdLevel::from_env_name("avx2"), None);
    // A level above what the CPU has runs the best one below it.
    simd::set_level(SimdLevel::I8mm);
    assert_eq!(simd::level(), simd::available());
    simd::set_level(SimdLevel::Avx512);
    assert_eq!(
        simd::level(),
        SimdLevel::Scalar,
        "another architecture's level"
    );
    simd::set_level(simd::available());
}
