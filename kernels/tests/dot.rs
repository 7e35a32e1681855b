//! Dot products against ggml's own `ggml_vec_dot` results (tests/data/ggml/manifest.json), and
//! SIMD against scalar on random rows of every type.
//!
//! The bound is the one the foundation issue sets: |kiln − ggml| ≤ 1e-5 × Σ|w·a|, with w and a
//! the dequantized weight and activation rows.

use std::path::PathBuf;

use kernels::dot::{self, scalar};
use kernels::simd;
#[cfg(target_arch = "x86_64")]
use quantize::quantize;
use quantize::{dequantize, GgmlType};

fn data(rel: &str) -> Vec<u8> {
    data_in("ggml", rel)
}

/// A file of `tests/data/DIR` (`ggml`, or `ggml-lowbit` for the low-bit tier's golden set).
fn data_in(dir: &str, rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(dir)
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Σ|w·a| over the dequantized rows, in f64.
fn abs_dot(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> f64 {
    let wd = dequantize(ty, w, n).unwrap();
    let ad = dequantize(ty.vec_dot_type(), a, n).unwrap();
    wd.iter()
        .zip(&ad)
        .map(|(x, y)| (*x as f64 * *y as f64).abs())
        .sum()
}

#[test]
fn dots_match_ggml_vec_dot() {
    let mut checked = 0;
    let mut failures = vec![];
    // The weights of each golden set with the activations of `ggml/` (the low-bit set reuses
    // them).
    for dir in ["ggml", "ggml-lowbit"] {
        let m: serde_json::Value = serde_json::from_slice(&data_in(dir, "manifest.json")).unwrap();
        let n = m["n_per_row"].as_u64().unwrap() as usize;
        for (name, info) in m["types"].as_object().unwrap() {
            let ty: GgmlType = name.parse().unwrap();
            for d in info["dots"].as_array().unwrap() {
                let (wp, ap) = (
                    d["weight"].as_str().unwrap(),
                    d["activation"].as_str().unwrap(),
                );
                let w = data_in(dir, &format!("{name}/{wp}.q"));
                let a = data(&format!("{}/{ap}.act.q", ty.vec_dot_type().name()));
                let want = d["ggml_vec_dot"]
                    .as_f64()
                    .or_else(|| d["f64_dot_of_dequantized"].as_f64())
                    .unwrap();
                let bound = 1e-5 * abs_dot(ty, &w, &a, n);
                for (path, force) in [("dispatched", false), ("scalar", true)] {
                    let got = if force {
                        scalar_dot(ty, &w, &a)
                    } else {
                        dot::vec_dot(ty, n, &w, &a).unwrap()
                    } as f64;
                    checked += 1;
                    if (got - want).abs() > bound {
                        failures.push(format!(
                            "{name} {wp}·{ap} ({path}): kiln {got} vs ggml {want}, |Δ| {:e} > {bound:e}",
                            (got - want).abs()
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(checked, (8 + 4) * 16 * 2);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn scalar_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    use quantize::blocks_from_bytes as v;
    match ty {
        GgmlType::Q4_0 => scalar::vec_dot_q4_0_q8_0(&v(w), &v(a)),
        GgmlType::Q4_1 => scalar::vec_dot_q4_1_q8_1(&v(w), &v(a)),
        GgmlType::Q5_0 => scalar::vec_dot_q5_0_q8_0(&v(w), &v(a)),
        GgmlType::Q5_1 => scalar::vec_dot_q5_1_q8_1(&v(w), &v(a)),
        GgmlType::Q8_0 => scalar::vec_dot_q8_0_q8_0(&v(w), &v(a)),
        GgmlType::Q4K => scalar::vec_dot_q4_k_q8_k(&v(w), &v(a)),
        GgmlType::Q5K => scalar::vec_dot_q5_k_q8_k(&v(w), &v(a)),
        GgmlType::Q6K => scalar::vec_dot_q6_k_q8_k(&v(w), &v(a)),
        GgmlType::Q2K => scalar::vec_dot_q2_k_q8_k(&v(w), &v(a)),
        GgmlType::Q3K => scalar::vec_dot_q3_k_q8_k(&v(w), &v(a)),
        GgmlType::IQ4NL => scalar::vec_dot_iq4_nl_q8_0(&v(w), &v(a)),
        GgmlType::IQ4XS => scalar::vec_dot_iq4_xs_q8_k(&v(w), &v(a)),
        _ => unreachable!("{ty}"),
    }
}

/// The AVX2 dot product, or with `avx512` the AVX-512 VNNI one (same functions, same results).
#[cfg(target_arch = "x86_64")]
fn simd_dot(avx512: bool, ty: GgmlType, w: &[u8], a: &[u8]) -> f32 {
    use quantize::blocks_from_bytes as v;
    macro_rules! call {
        ($m:ident) => {{
            use kernels::dot::$m as k;
            // SAFETY: the callers checked that the CPU has the level's features.
            unsafe {
                match ty {
                    GgmlType::Q4_0 => k::vec_dot_q4_0_q8_0(&v(w), &v(a)),
                    GgmlType::Q4_1 => k::vec_dot_q4_1_q8_1(&v(w), &v(a)),
                    GgmlType::Q5_0 => k::vec_dot_q5_0_q8_0(&v(w), &v(a)),
                    GgmlType::Q5_1 => k::vec_dot_q5_1_q8_1(&v(w), &v(a)),
                    GgmlType::Q8_0 => k::vec_dot_q8_0_q8_0(&v(w), &v(a)),
                    GgmlType::Q4K => k::vec_dot_q4_k_q8_k(&v(w), &v(a)),
                    GgmlType::Q5K => k::vec_dot_q5_k_q8_k(&v(w), &v(a)),
                    GgmlType::Q6K => k::vec_dot_q6_k_q8_k(&v(w), &v(a)),
                    GgmlType::Q2K => k::vec_dot_q2_k_q8_k(&v(w), &v(a)),
                    GgmlType::Q3K => k::vec_dot_q3_k_q8_k(&v(w), &v(a)),
                    GgmlType::IQ4NL => k::vec_dot_iq4_nl_q8_0(&v(w), &v(a)),
                    GgmlType::IQ4XS => k::vec_dot_iq4_xs_q8_k(&v(w), &v(a)),
                    _ => unreachable!("{ty}"),
                }
            }
        }};
    }
    if avx512 {
        assert_eq!(simd::available(), simd::SimdLevel::Avx512);
        call!(avx512)
    } else {
        assert!(simd::available() >= simd::SimdLevel::Avx2);
        call!(avx2)
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
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
    /// Roughly normal, with occasional large outliers like real weights and activations.
    fn value(&mut self, scale: f32) -> f32 {
        let g = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
        if self.next().is_multiple_of(97) {
            g * scale * 30.0
        } else {
            g * scale
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_matches_scalar_on_random_rows() {
    if simd::available() < simd::SimdLevel::Avx2 {
        eprintln!("no AVX2 on this CPU: nothing to compare");
        return;
    }
    let avx512 = simd::available() == simd::SimdLevel::Avx512;
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let types = [
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
    for trial in 0..40 {
        let n = 256 * (1 + trial % 6);
        let w: Vec<f32> = (0..n).map(|_| rng.value(0.05)).collect();
        let x: Vec<f32> = (0..n).map(|_| rng.value(1.0)).collect();
        for ty in types {
            let qw =
                (trial % 2 == 1).then(|| (0..n).map(|_| rng.uniform() + 0.01).collect::<Vec<_>>());
            let (wq, _) = quantize(ty, &w, n, qw.as_deref()).unwrap();
            let (aq, _) = quantize(ty.vec_dot_type(), &x, n, None).unwrap();
            let s = scalar_dot(ty, &wq, &aq);
            let v = simd_dot(false, ty, &wq, &aq);
            let bound = 1e-5 * abs_dot(ty, &wq, &aq, n);
            assert!(
                ((s - v) as f64).abs() <= bound,
                "{ty} trial {trial}: scalar {s} vs avx2 {v} (bound {bound:e})"
            );
            // The legacy types run the scalar kernel's own chain.
            if ty.vec_dot_type() != GgmlType::Q8K {
                assert_eq!(
                    s.to_bits(),
                    v.to_bits(),
                    "{ty} trial {trial}: scalar {s} vs avx2 {v}"
                );
            }
            if avx512 {
                let v512 = simd_dot(true, ty, &wq, &aq);
                assert_eq!(
                    v.to_bits(),
                    v512.to_bits(),
                    "{ty} trial {trial}: avx2 {v} vs avx512 {v512}"
                );
            }
        }
        // Float types.
        let wf16: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
        let wbf: Vec<u16> = w
            .iter()
            .map(|&v| quantize::float::f32_to_bf16(v).to_bits())
            .collect();
        let tol = |abs: f64| 1e-5 * abs;
        let abs32: f64 = w
            .iter()
            .zip(&x)
            .map(|(a, b)| (*a as f64 * *b as f64).abs())
            .sum();
        unsafe {
            let (s, v) = (scalar::vec_dot_f32(&w, &x), dot::avx2::vec_dot_f32(&w, &x));
            assert!(((s - v) as f64).abs() <= tol(abs32), "f32: {s} vs {v}");
            let (s, v) = (
                scalar::vec_dot_f16_f32(&wf16, &x),
                dot::avx2::vec_dot_f16_f32(&wf16, &x),
            );
            assert!(
                ((s - v) as f64).abs() <= tol(abs32) * 1.01,
                "f16: {s} vs {v}"
            );
            let (s, v) = (
                scalar::vec_dot_bf16_f32(&wbf, &x),
                dot::avx2::vec_dot_bf16_f32(&wbf, &x),
            );
            assert!(
                ((s - v) as f64).abs() <= tol(abs32) * 1.05,
                "bf16: {s} vs {v}"
            );
        }
    }
}

#[test]
fn float_dots_are_exact_on_small_integers() {
    let w: Vec<f32> = (0..37).map(|i| (i % 7) as f32 - 3.0).collect();
    let x: Vec<f32> = (0..37).map(|i| (i % 5) as f32).collect();
    let want: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
    assert_eq!(dot::vec_dot_f32(&w, &x), want);
    let wh: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    assert_eq!(dot::vec_dot_f16_f32(&wh, &x), want);
    assert_eq!(scalar::vec_dot_f32(&w, &x), want);
}

#[test]
fn type_erased_dot_checks_lengths() {
    let w = vec![0u8; 18 * 8];
    let a = vec![0u8; 34 * 8];
    assert!(dot::vec_dot(GgmlType::Q4_0, 256, &w, &a).is_ok());
    assert!(dot::vec_dot(GgmlType::Q4_0, 288, &w, &a).is_err());
    assert!(dot::vec_dot(GgmlType::Q8K, 256, &w, &a).is_err());
}

#[test]
fn attention_kernels_give_the_scalar_bits() {
    use dot::{Strided, StridedMut, ATT_LANES};
    let mut rng = Rng(0x51ED_2701);
    let ctx = 160;
    for hd in [64, 128, 8, 24] {
        // Queries (rows 3·hd apart), transposed keys (hd rows of ctx), values (rows of 2·hd).
        let q: Vec<f32> = (0..4 * 3 * hd).map(|_| rng.value(1.0)).collect();
        let kt: Vec<f32> = (0..hd * ctx).map(|_| rng.value(1.0)).collect();
        let v: Vec<f32> = (0..ctx * 2 * hd).map(|_| rng.value(1.0)).collect();
        let (qs, kts, vs) = (
            Strided {
                data: &q,
                stride: 3 * hd,
            },
            Strided {
                data: &kt,
                stride: ctx,
            },
            Strided {
                data: &v,
                stride: 2 * hd,
            },
        );
        for nq in 1..=4 {
            for keys in [0..ctx, 0..1, 5..21, 16..48, 33..34, 17..159, 7..7] {
                let mut a = vec![0f32; 4 * ctx];
                let mut b = vec![0f32; 4 * ctx];
                fn s(data: &mut [f32]) -> StridedMut<'_> {
                    StridedMut { data, stride: 160 }
                }
                dot::attn_scores(qs, nq, kts, hd, keys.clone(), 0.125, s(&mut a));
                scalar::attn_scores(qs, nq, kts, hd, keys.clone(), 0.125, s(&mut b));
                assert_eq!(a, b, "scores: hd {hd}, {nq} queries, keys {keys:?}");
                // A score is the same computed alone: one query, one key.
                for j in 0..nq {
                    for i in keys.clone().step_by(7) {
                        let mut one = vec![0f32; ctx];
                        let qj = Strided {
                            data: &q[j * 3 * hd..],
                            stride: 3 * hd,
                        };
                        let o = StridedMut {
                            data: &mut one,
                            stride: ctx,
                        };
                        dot::attn_scores(qj, 1, kts, hd, i..i + 1, 0.125, o);
                        assert_eq!(one[i].to_bits(), a[j * ctx + i].to_bits());
                    }
                }
                // Softmax numerators and their lane sums.
                for j in 0..nq {
                    let row = &mut a[j * ctx..(j + 1) * ctx];
                    let max = dot::max_f32(&row[keys.clone()]);
                    assert_eq!(max.to_bits(), scalar::max_f32(&row[keys.clone()]).to_bits());
                    let mut other = b[j * ctx..(j + 1) * ctx].to_vec();
                    let (mut la, mut lb) = ([0f32; ATT_LANES], [0f32; ATT_LANES]);
                    dot::attn_exp(row, keys.clone(), max, &mut la);
                    scalar::attn_exp(&mut other, keys.clone(), max, &mut lb);
                    assert_eq!(row, &other[..], "exp: hd {hd}, keys {keys:?}");
                    assert_eq!(la, lb, "lanes: hd {hd}, keys {keys:?}");
                    // Split in two ranges, the lanes are the same.
                    let mid = (keys.start + keys.end) / 2;
                    let mut split = b[j * ctx..(j + 1) * ctx].to_vec();
                    let mut ls = [0f32; ATT_LANES];
                    dot::attn_exp(&mut split, keys.start..mid, max, &mut ls);
                    dot::attn_exp(&mut split, mid..keys.end, max, &mut ls);
                    assert_eq!(ls, la);
                    if !keys.is_empty() {
                        let sum = dot::lanes_sum(&la) as f64;
                        let want: f64 = other[keys.clone()].iter().map(|&e| e as f64).sum();
                        assert!((sum - want).abs() <= 1e-5 * want, "{sum} vs {want}");
                    }
                }
                // Weighted values, added to what the output holds.
                let start: Vec<f32> = (0..4 * 3 * hd).map(|_| rng.value(0.1)).collect();
                let (mut oa, mut ob) = (start.clone(), start);
                let p = Strided {
                    data: &a,
                    stride: ctx,
                };
                let o = |data| StridedMut {
                    data,
                    stride: 3 * hd,
                };
                dot::attn_values(p, nq, vs, hd, keys.clone(), o(&mut oa[..]));
                scalar::attn_values(p, nq, vs, hd, keys.clone(), o(&mut ob[..]));
                assert_eq!(oa, ob, "values: hd {hd}, {nq} queries, keys {keys:?}");
            }
        }
    }
}

#[test]
fn exp_is_within_two_ulp_and_zero_below_the_range() {
    let mut worst = 0i64;
    for i in 0..=200_000 {
        let x = -87.0 * i as f32 / 200_000.0;
        let got = dot::exp_ref(x);
        let want = (x as f64).exp() as f32;
        let ulp = (got.to_bits() as i64 - want.to_bits() as i64).abs();
        worst = worst.max(ulp);
    }
    assert!(worst <= 2, "exp_ref is {worst} ulp off");
    assert_eq!(dot::exp_ref(0.0), 1.0);
    assert_eq!(dot::exp_ref(-87.5), 0.0);
    assert_eq!(dot::exp_ref(f32::NEG_INFINITY), 0.0);
    assert!(dot::exp_ref(f32::NAN).is_nan());
    // The SIMD steps give the same bits on the same inputs, exact halves included.
    let xs: Vec<f32> = (0..4096).map(|i| -87.0 + i as f32 * 0.021_2).collect();
    let mut row = xs.clone();
    let mut lanes = [0f32; dot::ATT_LANES];
    dot::attn_exp(&mut row, 0..xs.len(), 0.0, &mut lanes);
    for (x, e) in xs.iter().zip(&row) {
        assert_eq!(e.to_bits(), dot::exp_ref(*x).to_bits(), "exp({x})");
    }
}

/// The legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) give the scalar kernel's bits on
/// every x86 kernel: the single dot, four tokens and two rows × four tokens at both levels,
/// and the sixteen-lane AVX-512 ones (decode on the file's blocks, the GEMM on unpacked
/// tiles, with full and partial groups of rows), for even and odd block counts. The SIMD
/// packing and unpacking give the portable definitions' bytes.
#[cfg(target_arch = "x86_64")]
#[test]
fn legacy_kernels_give_the_scalar_bits() {
    use dot::packed::{unpack_tiles, ActBlock, WeightTile};
    use dot::zmm::{dot_rows16, gemm, ZmmWeight};
    use quantize::blocks::{BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
    use quantize::blocks_from_bytes as v;
    if simd::available() < simd::SimdLevel::Avx2 {
        eprintln!("skipped: no AVX2 on this CPU, nothing to compare");
        return;
    }
    let zmm = simd::available() == simd::SimdLevel::Avx512;
    if !zmm {
        eprintln!("skipped the AVX-512 kernels: no AVX-512 VNNI on this CPU");
    }
    const ROWS: usize = 19; // a full group of sixteen and three left over
    const TOKS: usize = 9; // eight tokens per GEMM call and one left over
    macro_rules! check {
        ($ty:expr, $W:ty, $A:ty, $one:ident, $four:ident, $rows:ident $(, $two:ident)?) => {{
            let ty: GgmlType = $ty;
            let mut rng = Rng(0xD1B54A32D192ED03 ^ ty as u64);
            for nb in [1usize, 2, 7, 18, 48] {
                let n = 32 * nb;
                let rows: Vec<Vec<$W>> = (0..ROWS)
                    .map(|_| {
                        let w: Vec<f32> = (0..n).map(|_| rng.value(0.05)).collect();
                        v::<$W>(&quantize(ty, &w, n, None).unwrap().0).into_owned()
                    })
                    .collect();
                let acts: Vec<Vec<$A>> = (0..TOKS)
                    .map(|_| {
                        let x: Vec<f32> = (0..n).map(|_| rng.value(1.0)).collect();
                        v::<$A>(&quantize(ty.vec_dot_type(), &x, n, None).unwrap().0).into_owned()
                    })
                    .collect();
                let want: Vec<Vec<u32>> = rows
                    .iter()
                    .map(|r| acts.iter().map(|a| scalar::$one(r, a).to_bits()).collect())
                    .collect();
                // SAFETY (the AVX2 and AVX-512 calls): the levels were checked above.
                let levels: Vec<(&str, bool)> = if zmm {
                    vec![("avx2", false), ("avx512", true)]
                } else {
                    vec![("avx2", false)]
                };
                for (name, l) in levels {
                    for r in 0..ROWS {
                        for t in 0..4 {
                            let y: [&[$A]; 4] = std::array::from_fn(|k| &acts[t + k][..]);
                            let (one, four) = unsafe {
                                if l {
                                    (dot::avx512::$one(&rows[r], &acts[t]), dot::avx512::$four(&rows[r], y))
                                } else {
                                    (dot::avx2::$one(&rows[r], &acts[t]), dot::avx2::$four(&rows[r], y))
                                }
                            };
                            assert_eq!(one.to_bits(), want[r][t], "{ty} {name} nb {nb}: one ({r}, {t})");
                            if r + 4 <= ROWS {
                                let x: [&[$W]; 4] = std::array::from_fn(|k| &rows[r + k][..]);
                                let four_rows = unsafe {
                                    if l {
                                        dot::avx512::$rows(x, &acts[t])
                                    } else {
                                        dot::avx2::$rows(x, &acts[t])
                                    }
                                };
                                for k in 0..4 {
                                    assert_eq!(four_rows[k].to_bits(), want[r + k][t], "{ty} {name} nb {nb}: four rows ({}, {t})", r + k);
                                }
                            }
                            for k in 0..4 {
                                assert_eq!(four[k].to_bits(), want[r][t + k], "{ty} {name} nb {nb}: four ({r}, {})", t + k);
                            }
                            $(
                                if r + 1 < ROWS {
                                    let two = unsafe {
                                        if l {
                                            dot::avx512::$two([&rows[r], &rows[r + 1]], y)
                                        } else {
                                            dot::avx2::$two([&rows[r], &rows[r + 1]], y)
                                        }
                                    };
                                    for (i, row) in two.iter().enumerate() {
                                        for k in 0..4 {
                                            assert_eq!(row[k].to_bits(), want[r + i][t + k],
                                                "{ty} {name} nb {nb}: two rows ({}, {})", r + i, t + k);
                                        }
                                    }
                                }
                            )?
                        }
                    }
                }
                if !zmm {
                    continue;
                }
                // The activation blocks: SIMD packing = the portable one.
                let packed: Vec<Vec<ActBlock>> = acts
                    .iter()
                    .map(|a| {
                        let mut p = vec![bytemuck::Zeroable::zeroed(); nb];
                        // SAFETY: the level was checked above.
                        unsafe { <$W as ZmmWeight>::pack(a, &mut p) };
                        p
                    })
                    .collect();
                for (a, p) in acts.iter().zip(&packed) {
                    let mut want = vec![bytemuck::Zeroable::zeroed(); nb];
                    if <$W as dot::LegacyBlock>::AFFINE {
                        dot::packed::pack_activations_q8_1(bytemuck::cast_slice(a), &mut want);
                    } else {
                        let shift = <$W as dot::packed::PackedWeight>::SHIFT;
                        dot::packed::pack_activations(bytemuck::cast_slice(a), shift, &mut want);
                    }
                    assert_eq!(p, &want, "{ty} nb {nb}: SIMD activation blocks");
                }
                let flat: Vec<$W> = rows.iter().flatten().copied().collect();
                for (r0, k) in [(0usize, 16usize), (16, 3)] {
                    let x = &flat[r0 * nb..(r0 + k) * nb];
                    let mut tiles = vec![bytemuck::Zeroable::zeroed(); nb];
                    let mut portable: Vec<WeightTile> = vec![bytemuck::Zeroable::zeroed(); nb];
                    unsafe { dot::zmm::unpack_tiles(x, nb, &mut tiles) };
                    unpack_tiles(x, nb, &mut portable);
                    assert!(
                        bytemuck::cast_slice::<_, u8>(&tiles) == bytemuck::cast_slice::<_, u8>(&portable),
                        "{ty} nb {nb}: SIMD unpack of {k} rows differs from the portable one"
                    );
                    let ys: [&[ActBlock]; 8] = std::array::from_fn(|t| &packed[t][..]);
                    let affine = <$W as dot::LegacyBlock>::AFFINE;
                    let (eight, last) = unsafe {
                        if affine {
                            (gemm::<8, true>(&tiles, ys), gemm::<1, true>(&tiles, [&packed[8]]))
                        } else {
                            (gemm::<8, false>(&tiles, ys), gemm::<1, false>(&tiles, [&packed[8]]))
                        }
                    };
                    for r in 0..k {
                        for t in 0..TOKS {
                            let got = if t < 8 { eight[t][r] } else { last[0][r] };
                            assert_eq!(got.to_bits(), want[r0 + r][t], "{ty} nb {nb}: gemm ({}, {t})", r0 + r);
                        }
                    }
                    if k == 16 {
                        for t in 0..TOKS {
                            let d = unsafe { dot_rows16(x, nb, &packed[t], &[]) };
                            for r in 0..16 {
                                assert_eq!(d[r].to_bits(), want[r][t], "{ty} nb {nb}: decode ({r}, {t})");
                            }
                        }
                    }
                }
            }
        }};
    }
    check!(
        GgmlType::Q4_0,
        BlockQ4_0,
        BlockQ8_0,
        vec_dot_q4_0_q8_0,
        vec_dot4_q4_0_q8_0,
        vec_dot_rows4_q4_0_q8_0,
        vec_dot4x2_q4_0_q8_0
    );
    check!(
        GgmlType::Q5_0,
        BlockQ5_0,
        BlockQ8_0,
        vec_dot_q5_0_q8_0,
        vec_dot4_q5_0_q8_0,
        vec_dot_rows4_q5_0_q8_0,
        vec_dot4x2_q5_0_q8_0
    );
    check!(
        GgmlType::Q8_0,
        BlockQ8_0,
        BlockQ8_0,
        vec_dot_q8_0_q8_0,
        vec_dot4_q8_0_q8_0,
        vec_dot_rows4_q8_0_q8_0,
        vec_dot4x2_q8_0_q8_0
    );
    check!(
        GgmlType::IQ4NL,
        BlockIQ4NL,
        BlockQ8_0,
        vec_dot_iq4_nl_q8_0,
        vec_dot4_iq4_nl_q8_0,
        vec_dot_rows4_iq4_nl_q8_0,
        vec_dot4x2_iq4_nl_q8_0
    );
    check!(
        GgmlType::Q4_1,
        BlockQ4_1,
        quantize::blocks::BlockQ8_1,
        vec_dot_q4_1_q8_1,
        vec_dot4_q4_1_q8_1,
        vec_dot_rows4_q4_1_q8_1
    );
    check!(
        GgmlType::Q5_1,
        BlockQ5_1,
        quantize::blocks::BlockQ8_1,
        vec_dot_q5_1_q8_1,
        vec_dot4_q5_1_q8_1,
        vec_dot_rows4_q5_1_q8_1
    );
}

/// Every f32 kernel of the x86 levels (the single dot, the AVX2 4 × 3 tile, the AVX-512
/// 4 × T tiles) gives the same bits for the same row and token, whatever the length's
/// remainder after sixteen- and eight-value groups; the scalar dot stays within rounding.
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_tiles_give_the_single_dot_bits() {
    if simd::available() < simd::SimdLevel::Avx2 {
        eprintln!("no AVX2 on this CPU: nothing to compare");
        return;
    }
    let zmm = simd::available() == simd::SimdLevel::Avx512;
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for n in [7, 8, 16, 24, 37, 40, 576, 1536, 1549] {
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..n).map(|_| rng.value(0.05)).collect())
            .collect();
        let toks: Vec<Vec<f32>> = (0..6)
            .map(|_| (0..n).map(|_| rng.value(1.0)).collect())
            .collect();
        let w: [&[f32]; 4] = std::array::from_fn(|r| &rows[r][..]);
        // SAFETY (all calls): the levels were checked above.
        let one = |r: usize, t: usize| unsafe { dot::avx2::vec_dot_f32(w[r], &toks[t]) };
        let tile = unsafe { dot::avx2::dot_tile_f32_4x3(w, [&toks[0], &toks[1], &toks[2]], n) };
        for r in 0..4 {
            for t in 0..6 {
                let want = one(r, t);
                let avx512 = unsafe { dot::avx512::vec_dot_f32(w[r], &toks[t]) };
                if zmm {
                    assert_eq!(
                        avx512.to_bits(),
                        want.to_bits(),
                        "n {n}: AVX-512 dot ({r}, {t})"
                    );
                }
                let exact: f64 = rows[r]
                    .iter()
                    .zip(&toks[t])
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let abs: f64 = rows[r]
                    .iter()
                    .zip(&toks[t])
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                let s = dot::scalar::vec_dot_f32(w[r], &toks[t]);
                assert!(
                    (s as f64 - exact).abs() <= 1e-5 * abs,
                    "n {n}: scalar {s} vs {exact}"
                );
                assert!(
                    (want as f64 - exact).abs() <= 1e-5 * abs,
                    "n {n}: SIMD {want} vs {exact}"
                );
            }
            for t in 0..3 {
                assert_eq!(
                    tile[r][t].to_bits(),
                    one(r, t).to_bits(),
                    "n {n}: 4 x 3 tile ({r}, {t})"
                );
            }
        }
        if zmm {
            let six =
                unsafe { dot::zmm::dot_tile_f32::<6>(w, std::array::from_fn(|t| &toks[t][..]), n) };
            let two = unsafe { dot::zmm::dot_tile_f32::<2>(w, [&toks[4], &toks[1]], n) };
            for r in 0..4 {
                for t in 0..6 {
                    assert_eq!(
                        six[r][t].to_bits(),
                        one(r, t).to_bits(),
                        "n {n}: 4 x 6 tile ({r}, {t})"
                    );
                }
                assert_eq!(
                    two[r][0].to_bits(),
                    one(r, 4).to_bits(),
                    "n {n}: 4 x 2 tile ({r}, 0)"
                );
                assert_eq!(
                    two[r][1].to_bits(),
                    one(r, 1).to_bits(),
                    "n {n}: 4 x 2 tile ({r}, 1)"
                );
            }
        }
    }
}

/// The four-token K-quant kernels (ffn_down's prefill in Q4_K_M) give every token the
/// single-row kernel's bits, at both x86 levels.
#[cfg(target_arch = "x86_64")]
#[test]
fn k_quant_and_low_bit_four_token_kernels_give_the_single_row_bits() {
    use quantize::blocks::{BlockIQ4NL, BlockIQ4XS, BlockQ8_0};
    use quantize::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
    use quantize::blocks_from_bytes as v;
    if simd::available() < simd::SimdLevel::Avx2 {
        eprintln!("no AVX2 on this CPU: nothing to compare");
        return;
    }
    let zmm = simd::available() == simd::SimdLevel::Avx512;
    let mut rng = Rng(0x94D049BB133111EB);
    for nb in [1, 2, 6] {
        let n = 256 * nb;
        let row = |rng: &mut Rng, ty: GgmlType| {
            let w: Vec<f32> = (0..n).map(|_| rng.value(0.05)).collect();
            quantize(ty, &w, n, None).unwrap().0
        };
        let toks: Vec<Vec<BlockQ8K>> = (0..4)
            .map(|_| {
                let x: Vec<f32> = (0..n).map(|_| rng.value(1.0)).collect();
                v::<BlockQ8K>(&quantize(GgmlType::Q8K, &x, n, None).unwrap().0).into_owned()
            })
            .collect();
        let y: [&[BlockQ8K]; 4] = std::array::from_fn(|t| &toks[t][..]);
        let (q4, q5, q6) = (
            row(&mut rng, GgmlType::Q4K),
            row(&mut rng, GgmlType::Q5K),
            row(&mut rng, GgmlType::Q6K),
        );
        let (q4, q5, q6) = (v::<BlockQ4K>(&q4), v::<BlockQ5K>(&q5), v::<BlockQ6K>(&q6));
        // Each type's four-token kernel at every level this CPU has, against the AVX2
        // single-row kernel token by token.
        macro_rules! check {
            ($name:literal, $x:expr, $one:ident, $four:ident) => {{
                // SAFETY (all calls): the levels were checked above.
                let one: [f32; 4] = std::array::from_fn(|t| unsafe { dot::avx2::$one($x, y[t]) });
                let mut levels = vec![("AVX2", unsafe { dot::avx2::$four($x, y) })];
                if zmm {
                    levels.push(("AVX-512", unsafe { dot::avx512::$four($x, y) }));
                }
                for (level, four) in levels {
                    for t in 0..4 {
                        assert_eq!(
                            four[t].to_bits(),
                            one[t].to_bits(),
                            "{} nb {nb}: {level} four-token ({t})",
                            $name
                        );
                    }
                }
            }};
        }
        check!("q4_K", &q4, vec_dot_q4_k_q8_k, vec_dot4_q4_k_q8_k);
        check!("q5_K", &q5, vec_dot_q5_k_q8_k, vec_dot4_q5_k_q8_k);
        check!("q6_K", &q6, vec_dot_q6_k_q8_k, vec_dot4_q6_k_q8_k);
        let (q2, q3, xs) = (
            row(&mut rng, GgmlType::Q2K),
            row(&mut rng, GgmlType::Q3K),
            row(&mut rng, GgmlType::IQ4XS),
        );
        let (q2, q3, xs) = (v::<BlockQ2K>(&q2), v::<BlockQ3K>(&q3), v::<BlockIQ4XS>(&xs));
        check!("q2_K", &q2, vec_dot_q2_k_q8_k, vec_dot4_q2_k_q8_k);
        check!("q3_K", &q3, vec_dot_q3_k_q8_k, vec_dot4_q3_k_q8_k);
        check!("iq4_xs", &xs, vec_dot_iq4_xs_q8_k, vec_dot4_iq4_xs_q8_k);
        // IQ4_NL against Q8_0 activations: one row, four tokens, and two rows × four tokens.
        let toks: Vec<Vec<BlockQ8_0>> = (0..4)
            .map(|_| {
                let x: Vec<f32> = (0..n).map(|_| rng.value(1.0)).collect();
                v::<BlockQ8_0>(&quantize(GgmlType::Q8_0, &x, n, None).unwrap().0).into_owned()
            })
            .collect();
        let y8: [&[BlockQ8_0]; 4] = std::array::from_fn(|t| &toks[t][..]);
        let nl: Vec<_> = (0..2)
            .map(|_| v::<BlockIQ4NL>(&row(&mut rng, GgmlType::IQ4NL)).into_owned())
            .collect();
        // SAFETY (all calls): the levels were checked above.
        unsafe {
            let mut levels = vec![(
                "AVX2",
                dot::avx2::vec_dot4_iq4_nl_q8_0(&nl[0], y8),
                dot::avx2::vec_dot4x2_iq4_nl_q8_0([&nl[0], &nl[1]], y8),
            )];
            if zmm {
                levels.push((
                    "AVX-512",
                    dot::avx512::vec_dot4_iq4_nl_q8_0(&nl[0], y8),
                    dot::avx512::vec_dot4x2_iq4_nl_q8_0([&nl[0], &nl[1]], y8),
                ));
            }
            for (level, four, two) in levels {
                for t in 0..4 {
                    for r in 0..2 {
                        let one = dot::avx2::vec_dot_iq4_nl_q8_0(&nl[r], y8[t]);
                        assert_eq!(two[r][t].to_bits(), one.to_bits(), "iq4_nl {level} 2×4");
                    }
                    let one = dot::avx2::vec_dot_iq4_nl_q8_0(&nl[0], y8[t]);
                    assert_eq!(
                        four[t].to_bits(),
                        one.to_bits(),
                        "iq4_nl {level} four-token"
                    );
                }
            }
        }
    }
}

#[test]
fn tanh_ref_is_accurate() {
    // Against float64 tanh on [-12, 12], the branch points 0.625 and 9 included, and at the
    // small, signed and special values.
    let mut worst = 0i64;
    let ulps = |a: f32, b: f32| (a.to_bits() as i64 - b.to_bits() as i64).abs();
    for i in 0..=2_400_000 {
        let x = -12.0 + i as f32 * 1e-5;
        let want = (x as f64).tanh() as f32;
        worst = worst.max(ulps(dot::tanh_ref(x), want));
    }
    for &x in &[1e-30f32, 1e-10, 1e-4, 0.6249999, 0.625, 8.999999, 9.0, 40.0] {
        for x in [x, -x] {
            worst = worst.max(ulps(dot::tanh_ref(x), (x as f64).tanh() as f32));
        }
    }
    eprintln!("tanh_ref: worst {worst} ulp");
    assert!(worst <= 3, "tanh_ref is {worst} ulp off");
    assert_eq!(dot::tanh_ref(0.0).to_bits(), 0);
    assert_eq!(dot::tanh_ref(-0.0).to_bits(), (-0f32).to_bits());
    assert!(dot::tanh_ref(f32::NAN).is_nan());
    assert_eq!(dot::tanh_ref(f32::INFINITY), 1.0);
    assert_eq!(dot::tanh_ref(f32::NEG_INFINITY), -1.0);
}

#[test]
fn gelu_is_accurate_and_simd_gives_the_scalar_bits() {
    // Against float64 GELU, 0.5·x·(1 + tanh(u)) written as the equal x·σ(2u) (the tanh form
    // loses its small negative values to cancellation even in f64): a few ulp wherever the
    // value is not negligible.
    let gelu64 = |x: f64| {
        let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
        x / (1.0 + (-2.0 * u).exp())
    };
    // Where GELU is small next to x (x below about −1) its value is ≈ x·e^(−2u), 2u growing
    // like x³: a relative error of 1e-7 in u (f32 input, any f32 formula) is a larger relative
    // error of the small result, so there the bound is absolute, against |x|. (PyTorch's own
    // f32 form is worse there: 1 + tanh(u) cancels.)
    let (mut worst, mut worst_abs) = (0i64, 0f64);
    let xs: Vec<f32> = (0..=400_000).map(|i| -20.0 + i as f32 * 1e-4).collect();
    for &x in &xs {
        let got = dot::gelu_ref(x) as f64;
        let want = gelu64(x as f64);
        if want.abs() >= 0.1 * x.abs() as f64 {
            let ulp = ((got as f32).to_bits() as i64 - (want as f32).to_bits() as i64).abs();
            worst = worst.max(ulp);
        }
        worst_abs = worst_abs.max((got - want).abs() / (x.abs() as f64).max(1e-30));
    }
    eprintln!("gelu: worst {worst} ulp where |gelu(x)| ≥ 0.1·|x|, worst |error| / |x| {worst_abs:.1e} on [-20, 20]");
    assert!(worst <= 4, "gelu_ref is {worst} ulp off");
    assert!(worst_abs <= 3e-7, "gelu_ref is {worst_abs}·|x| off");
    assert_eq!(dot::gelu_ref(0.0), 0.0);
    assert_eq!(dot::gelu_ref(1e4), 1e4);
    assert!(dot::gelu_ref(-1e4).abs() < 1e-30);
    // SIMD: the same bits, odd lengths included.
    let up: Vec<f32> = xs.iter().map(|x| 1.0 + x * 0.01).collect();
    for n in [xs.len(), 7, 8, 9, 1001] {
        let mut a = xs[..n].to_vec();
        let mut b = xs[..n].to_vec();
        dot::gelu_mul(&mut a, &up[..n]);
        scalar::gelu_mul(&mut b, &up[..n]);
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "gelu_mul SIMD ≠ scalar at length {n}"
        );
    }
    if simd::available() == simd::SimdLevel::Scalar {
        eprintln!("no SIMD level on this CPU: the SIMD comparison ran the scalar path");
    }
}
