//! GPTQ-style error feedback across columns (`--method gptq`), constrained to ggml's block
//! formats.
//!
//! A matrix `W` (rows × n, one row per output) multiplies calibration inputs `X` whose
//! second-moment matrix is the Hessian `H = XᵀX` (n × n, accumulated in `calibrate::hessian`).
//! Quantizing `W` to `Q` costs `Σ_rows (w − q) H (w − q)ᵀ` in output error. GPTQ (Frantar et
//! al. 2022, as in the reference `gptq.py` `fasterquant`) walks the columns in order, rounds
//! each one, and spreads its rounding error over the columns not yet quantized so that they
//! compensate it, using the upper Cholesky factor `U` of `H⁻¹`:
//!
//! ```text
//! for column j:  q_j = round_to_grid(w_j);  e = (w_j − q_j) / U_jj;  w_{j+1..} −= e · U_{j, j+1..}
//! ```
//!
//! Block formats fix a scale (and min) per block, so when the walk reaches the first column of a
//! block, the block's scales are chosen by ggml's importance-weighted quantizer (`--method
//! search`'s refinement too, when asked) on the block's *current*, already error-corrected
//! weights; the block's columns are then rounded one by one to that fixed grid, with feedback.
//! The result is encoded in the unchanged ggml block layout.
//!
//! Deterministic: `H⁻¹`'s factor is computed in f64 in a fixed order, every row is processed by
//! one thread in column order, rows write disjoint bytes.

use rayon::prelude::*;

use crate::blocks::*;
use crate::refine::Grid;
use crate::{GgmlType, QuantError, QuantizeStats};

/// GPTQ's default dampening: `λ · mean(diag H)` is added to the diagonal.
pub const DEFAULT_DAMP: f64 = 0.01;

/// Why a Hessian cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GptqError {
    #[error("the Hessian has {got} entries, not {n}×{n}")]
    Shape { n: usize, got: usize },
    #[error("the Hessian is not positive definite even with dampening {damp}")]
    NotPositiveDefinite { damp: f64 },
    #[error("the Hessian has a non-finite entry")]
    NonFinite,
}

/// The upper Cholesky factor `U` of `H⁻¹` (`UᵀU = H⁻¹`), row-major, for one input width.
#[derive(Debug, Clone)]
pub struct HessianInverse {
    n: usize,
    u: Vec<f32>,
    /// The dampening that made `H` positive definite (relative to its mean diagonal).
    pub damp: f64,
}

impl HessianInverse {
    /// Prepares `h` (n × n, symmetric, row-major): columns never seen (zero diagonal) get a unit
    /// diagonal, `damp · mean(diag)` is added to the diagonal (raised ×10 up to four times if
    /// the factorisation fails), and `U = chol(H⁻¹)ᵀ` is computed without forming `H⁻¹`: with
    /// `P` the reversal permutation and `PHP = RRᵀ`, `H = ŨŨᵀ` for the upper `Ũ = PRP`, so
    /// `U = Ũ⁻¹ = P R⁻¹ P`.
    pub fn new(h: &[f64], n: usize, damp: f64) -> Result<Self, GptqError> {
        if h.len() != n * n {
            return Err(GptqError::Shape { n, got: h.len() });
        }
        if h.iter().any(|v| !v.is_finite()) {
            return Err(GptqError::NonFinite);
        }
        let live: Vec<f64> = (0..n).map(|i| h[i * n + i]).filter(|&d| d > 0.0).collect();
        let mean = if live.is_empty() {
            1.0
        } else {
            live.iter().sum::<f64>() / live.len() as f64
        };
        let mut damp_used = damp;
        for _ in 0..5 {
            // The reversed, dampened matrix.
            let mut a = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    a[(n - 1 - i) * n + (n - 1 - j)] = h[i * n + j];
                }
            }
            for i in 0..n {
                let d = &mut a[i * n + i];
                if *d <= 0.0 {
                    *d = 1.0;
                }
                *d += damp_used * mean;
            }
            if crate::linalg::cholesky_lower(&mut a, n) {
                let rinv = crate::linalg::invert_lower(&a, n);
                let mut u = vec![0f32; n * n];
                for i in 0..n {
                    for j in i..n {
                        u[i * n + j] = rinv[(n - 1 - i) * n + (n - 1 - j)] as f32;
                    }
                }
                return Ok(HessianInverse {
                    n,
                    u,
                    damp: damp_used,
                });
            }
            damp_used *= 10.0;
        }
        Err(GptqError::NotPositiveDefinite { damp: damp_used })
    }

    /// Input width.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Row `j` of `U` from the diagonal on.
    #[inline]
    fn row(&self, j: usize) -> &[f32] {
        &self.u[j * self.n + j..(j + 1) * self.n]
    }
}

/// Rows GPTQ walks together: their lazy updates share each pass over `U`.
const ROW_TILE: usize = 32;

/// GPTQ over a tile of rows: `x` their values (rows of `n`), `imp` the importance per column
/// for the block scales, `out` their blocks.
///
/// The plain walk subtracts `e_j · U_jk` from every later column `k` as soon as column `j` is
/// rounded. Here a block's columns receive the products of the earlier blocks' errors only
/// when the walk reaches the block ([`crate::linalg::sub_products`], `j` ascending, every
/// row of the tile in one pass over `U`), then the block's own, column by column: each weight
/// sees the same products in the same order, so the bytes are the plain walk's.
fn gptq_tile<B: Grid>(
    x: &[f32],
    n: usize,
    imp: Option<&[f32]>,
    hinv: &HessianInverse,
    search: bool,
    out: &mut [B],
) {
    let bs = B::BLOCK_SIZE;
    let nr = x.len() / n;
    let nb = n / bs;
    let mut w = x.to_vec();
    let mut err = vec![0f32; nr * n];
    let mut a = vec![0f32; bs];
    let mut c = vec![0f32; bs];
    let mut l = vec![0i32; bs];
    let ones = vec![1f32; bs];
    for b in 0..nb {
        let c0 = b * bs;
        if c0 > 0 {
            let g = crate::linalg::Gemm {
                rows: nr,
                cols: bs,
                ldc: n,
                lda: n,
                ldb: n,
                k_end: c0,
                k_from_col: false,
                col0: 0,
            };
            crate::linalg::sub_products(&mut w[c0..], &err, &hinv.u[c0..], &g);
        }
        for r in 0..nr {
            let wr = &mut w[r * n..(r + 1) * n];
            let blk_w = c0..c0 + bs;
            // The block's scales from ggml's quantizer on the current (corrected) weights.
            let mut blk = B::zeroed();
            match imp {
                Some(q) => B::quantize_row_weighted(
                    &wr[blk_w.clone()],
                    std::slice::from_mut(&mut blk),
                    &q[blk_w.clone()],
                ),
                None => B::quantize_row_ref(&wr[blk_w.clone()], std::slice::from_mut(&mut blk)),
            }
            if search {
                blk.search(
                    &wr[blk_w.clone()],
                    imp.map_or(&ones[..], |q| &q[blk_w.clone()]),
                );
            }
            blk.grid(&mut a, &mut c);
            for i in 0..bs {
                let j = c0 + i;
                let v = wr[j];
                let (li, y) = B::nearest(a[i], c[i], v);
                l[i] = li;
                let u = hinv.row(j);
                let e = (v - y) / u[0];
                err[r * n + j] = e;
                // Within the block now; later blocks get theirs when the walk reaches them.
                for (wk, &uk) in wr[j + 1..c0 + bs].iter_mut().zip(&u[1..bs - i]) {
                    *wk -= e * uk;
                }
            }
            out[r * nb + b] = blk.with_ints(&l);
        }
    }
}

fn rows<B: Grid>(
    x: &[f32],
    n_per_row: usize,
    imp: Option<&[f32]>,
    hinv: &HessianInverse,
    search: bool,
    bytes: &mut [u8],
) {
    let row_bytes = n_per_row / B::BLOCK_SIZE * std::mem::size_of::<B>();
    bytes
        .par_chunks_mut(row_bytes * ROW_TILE)
        .zip(x.par_chunks(n_per_row * ROW_TILE))
        .for_each(|(rb, xr)| {
            gptq_tile::<B>(
                xr,
                n_per_row,
                imp,
                hinv,
                search,
                bytemuck::cast_slice_mut(rb),
            )
        });
}

/// Quantizes `x` (rows of `n_per_row`) to `ty` with GPTQ error feedback under the Hessian
/// factor `hinv` (input width `n_per_row`). `imp` weighs the block-scale choice as in
/// [`crate::quantize`]; `search` refines each block's scales as `--method search` does before
/// its integers are chosen. Types without a fixed grid (float types) are quantized plainly.
pub fn quantize_gptq(
    ty: GgmlType,
    x: &[f32],
    n_per_row: usize,
    imp: Option<&[f32]>,
    hinv: &HessianInverse,
    search: bool,
) -> Result<(Vec<u8>, QuantizeStats), QuantError> {
    // Shape, importance and finiteness checks, and the degraded-block count, as the reference.
    let (mut bytes, stats) = crate::quantize(ty, x, n_per_row, imp)?;
    if hinv.n != n_per_row {
        return Err(GptqError::Shape {
            n: n_per_row,
            got: hinv.n * hinv.n,
        }
        .into());
    }
    match ty {
        GgmlType::Q4_0 => rows::<BlockQ4_0>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q5_0 => rows::<BlockQ5_0>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q8_0 => rows::<BlockQ8_0>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q4_1 => rows::<BlockQ4_1>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q5_1 => rows::<BlockQ5_1>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q4K => rows::<BlockQ4K>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q5K => rows::<BlockQ5K>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q6K => rows::<BlockQ6K>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q2K => rows::<BlockQ2K>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::Q3K => rows::<BlockQ3K>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::IQ4NL => rows::<BlockIQ4NL>(x, n_per_row, imp, hinv, search, &mut bytes),
        GgmlType::IQ4XS => rows::<BlockIQ4XS>(x, n_per_row, imp, hinv, search, &mut bytes),
        _ => {}
    }
    Ok((bytes, stats))
}

/// The output error `Σ_rows (x − y) H (x − y)ᵀ` of decoded rows `y` against `x` — GPTQ's
/// objective, for tests and reports.
pub fn hessian_error(x: &[f32], y: &[f32], n: usize, h: &[f64]) -> f64 {
    let mut total = 0f64;
    for (xr, yr) in x.chunks(n).zip(y.chunks(n)) {
        let d: Vec<f64> = xr.iter().zip(yr).map(|(&a, &b)| (a - b) as f64).collect();
        for i in 0..n {
            let hi = &h[i * n..(i + 1) * n];
            let s: f64 = hi.iter().zip(&d).map(|(a, b)| a * b).sum();
            total += d[i] * s;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers in [-0.5, 0.5).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Correlated inputs with channels of very different scale, like real activations, and
    /// their Hessian XᵀX.
    fn hessian(n: usize, samples: usize) -> Vec<f64> {
        let z = noise(samples * n, 3);
        let mut x = vec![0f32; samples * n];
        for t in 0..samples {
            let shared = z[t * n];
            for i in 0..n {
                let scale = 1.0 + 4.0 * ((i * 7) % 13) as f32 / 13.0;
                x[t * n + i] = scale * (z[t * n + i] + 0.6 * shared);
            }
        }
        let mut h = vec![0f64; n * n];
        for t in 0..samples {
            let r = &x[t * n..(t + 1) * n];
            for i in 0..n {
                for j in 0..n {
                    h[i * n + j] += r[i] as f64 * r[j] as f64;
                }
            }
        }
        h
    }

    #[test]
    fn factor_inverts_the_dampened_hessian() {
        let n = 48;
        let h = hessian(n, 200);
        let hinv = HessianInverse::new(&h, n, DEFAULT_DAMP).unwrap();
        let mean = (0..n).map(|i| h[i * n + i]).sum::<f64>() / n as f64;
        // UᵀU (H + λ·mean·I) = I.
        for i in 0..n {
            for j in 0..n {
                let mut s = 0f64;
                for k in 0..n {
                    // (UᵀU)_ik
                    let mut m = 0f64;
                    for r in 0..=i.min(k) {
                        m += hinv.u[r * n + i] as f64 * hinv.u[r * n + k] as f64;
                    }
                    let hk = h[k * n + j] + if k == j { DEFAULT_DAMP * mean } else { 0.0 };
                    s += m * hk;
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-3, "({i},{j}) {s}");
            }
        }
        // Lower triangle is zero.
        assert!((1..n).all(|i| (0..i).all(|j| hinv.u[i * n + j] == 0.0)));
    }

    #[test]
    fn zero_columns_and_bad_input_are_handled() {
        let n = 8;
        let mut h = hessian(n, 50);
        for j in 0..n {
            h[2 * n + j] = 0.0;
            h[j * n + 2] = 0.0;
        }
        assert!(HessianInverse::new(&h, n, DEFAULT_DAMP).is_ok());
        assert!(matches!(
            HessianInverse::new(&h[1..], n, DEFAULT_DAMP),
            Err(GptqError::Shape { .. })
        ));
        h[5] = f64::NAN;
        assert_eq!(
            HessianInverse::new(&h, n, DEFAULT_DAMP).unwrap_err(),
            GptqError::NonFinite
        );
    }

    #[test]
    fn lowers_the_output_error_in_every_format_and_is_deterministic() {
        let n = 512;
        let rows_n = 24;
        let h = hessian(n, 2000);
        let hinv = HessianInverse::new(&h, n, DEFAULT_DAMP).unwrap();
        let imp: Vec<f32> = (0..n).map(|i| h[i * n + i] as f32).collect();
        let x: Vec<f32> = noise(rows_n * n, 11).iter().map(|v| v * 0.1).collect();
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
            GgmlType::Q2K,
            GgmlType::Q3K,
            GgmlType::IQ4NL,
            GgmlType::IQ4XS,
        ] {
            let (plain, _) = crate::quantize(ty, &x, n, Some(&imp)).unwrap();
            let (ours, _) = quantize_gptq(ty, &x, n, Some(&imp), &hinv, false).unwrap();
            assert_eq!(plain.len(), ours.len());
            let e_plain =
                hessian_error(&x, &crate::dequantize(ty, &plain, x.len()).unwrap(), n, &h);
            let e_ours = hessian_error(&x, &crate::dequantize(ty, &ours, x.len()).unwrap(), n, &h);
            eprintln!("{ty}: output error GPTQ/plain {:.3}", e_ours / e_plain);
            assert!(
                e_ours < 0.9 * e_plain,
                "{ty}: GPTQ {e_ours} vs plain {e_plain}"
            );
            let (searched, _) = quantize_gptq(ty, &x, n, Some(&imp), &hinv, true).unwrap();
            let e_s = hessian_error(
                &x,
                &crate::dequantize(ty, &searched, x.len()).unwrap(),
                n,
                &h,
            );
            assert!(
                e_s < 0.9 * e_plain,
                "{ty}: GPTQ+search {e_s} vs plain {e_plain}"
            );
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let single =
                one.install(|| quantize_gptq(ty, &x, n, Some(&imp), &hinv, true).unwrap().0);
            assert_eq!(single, searched, "{ty}: thread count changed the bytes");
        }
    }

    #[test]
    fn rejects_what_the_reference_rejects() {
        let h = hessian(32, 40);
        let hinv = HessianInverse::new(&h, 32, DEFAULT_DAMP).unwrap();
        let mut x = vec![0.1f32; 64];
        x[40] = f32::NAN;
        assert!(matches!(
            quantize_gptq(GgmlType::Q4_0, &x, 32, None, &hinv, false),
            Err(QuantError::NonFinite { .. })
        ));
        let x = vec![0.1f32; 128];
        assert!(quantize_gptq(GgmlType::Q4_0, &x, 64, None, &hinv, false).is_err());
    }

    /// The plain walk (one row, every later column updated as soon as a column is rounded):
    /// the tiled, lazy walk must give its bytes.
    fn plain_row<B: Grid>(
        x: &[f32],
        imp: Option<&[f32]>,
        hinv: &HessianInverse,
        search: bool,
        out: &mut [B],
    ) {
        let bs = B::BLOCK_SIZE;
        let mut w = x.to_vec();
        let (mut a, mut c, mut l) = (vec![0f32; bs], vec![0f32; bs], vec![0i32; bs]);
        let ones = vec![1f32; bs];
        for (b, slot) in out.iter_mut().enumerate() {
            let r = b * bs..(b + 1) * bs;
            let mut blk = B::zeroed();
            match imp {
                Some(q) => B::quantize_row_weighted(
                    &w[r.clone()],
                    std::slice::from_mut(&mut blk),
                    &q[r.clone()],
                ),
                None => B::quantize_row_ref(&w[r.clone()], std::slice::from_mut(&mut blk)),
            }
            if search {
                blk.search(&w[r.clone()], imp.map_or(&ones[..], |q| &q[r.clone()]));
            }
            blk.grid(&mut a, &mut c);
            for i in 0..bs {
                let j = b * bs + i;
                let v = w[j];
                let (li, y) = B::nearest(a[i], c[i], v);
                l[i] = li;
                let u = hinv.row(j);
                let e = (v - y) / u[0];
                for (wk, &uk) in w[j + 1..].iter_mut().zip(&u[1..]) {
                    *wk -= e * uk;
                }
            }
            *slot = blk.with_ints(&l);
        }
    }

    fn plain<B: Grid>(
        x: &[f32],
        n: usize,
        imp: Option<&[f32]>,
        h: &HessianInverse,
        s: bool,
    ) -> Vec<u8> {
        let mut out = vec![B::zeroed(); x.len() / B::BLOCK_SIZE];
        for (xr, or) in x.chunks(n).zip(out.chunks_mut(n / B::BLOCK_SIZE)) {
            plain_row::<B>(xr, imp, h, s, or);
        }
        bytemuck::cast_slice(&out).to_vec()
    }

    #[test]
    fn the_tiled_walk_gives_the_plain_walks_bytes() {
        // 512 columns (two K-quant blocks, sixteen legacy ones), rows across two tiles and a
        // ragged third; with and without importance and search.
        let n = 512;
        let rows = 2 * ROW_TILE + 5;
        let h = hessian(n, 700);
        let hinv = HessianInverse::new(&h, n, DEFAULT_DAMP).unwrap();
        let x: Vec<f32> = noise(rows * n, 11).iter().map(|v| v * 3.0).collect();
        let imp: Vec<f32> = (0..n).map(|i| h[i * n + i] as f32 / 700.0).collect();
        for (imp, search) in [
            (None, false),
            (Some(&imp[..]), false),
            (Some(&imp[..]), true),
        ] {
            for (ty, want) in [
                (GgmlType::Q4K, plain::<BlockQ4K>(&x, n, imp, &hinv, search)),
                (GgmlType::Q6K, plain::<BlockQ6K>(&x, n, imp, &hinv, search)),
                (
                    GgmlType::Q5_1,
                    plain::<BlockQ5_1>(&x, n, imp, &hinv, search),
                ),
                (
                    GgmlType::Q8_0,
                    plain::<BlockQ8_0>(&x, n, imp, &hinv, search),
                ),
                (GgmlType::Q2K, plain::<BlockQ2K>(&x, n, imp, &hinv, search)),
                (GgmlType::Q3K, plain::<BlockQ3K>(&x, n, imp, &hinv, search)),
                (
                    GgmlType::IQ4NL,
                    plain::<BlockIQ4NL>(&x, n, imp, &hinv, search),
                ),
                (
                    GgmlType::IQ4XS,
                    plain::<BlockIQ4XS>(&x, n, imp, &hinv, search),
                ),
            ] {
                let got = quantize_gptq(ty, &x, n, imp, &hinv, search).unwrap().0;
                assert!(got == want, "{ty} imp={} search={search}", imp.is_some());
            }
        }
    }
}
