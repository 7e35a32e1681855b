//! Blocked dense kernels for GPTQ and its calibration Hessians, at 7B-class widths (4,096 and
//! 11,008), that give **the bits of the plain loops** they replace.
//!
//! A linear-algebra crate does not fit here: faer and BLAS choose their reduction order (and
//! FMA) by the CPU they find, so the factor of a Hessian — and with it every GPTQ byte — would
//! change between machines; nalgebra's Cholesky is the plain loop. kiln's artifacts must have
//! the same bytes on every machine, so the kernels below keep, for every output element, the
//! exact sequence of floating-point operations of the textbook loop:
//!
//! * [`sub_products`]: `C[i][j] -= A[i][k] · B[k][j]` for `k` ascending, each product rounded
//!   and subtracted in turn (never summed first). Any tiling over `(i, j)` and any blocking of
//!   `k` that keeps `k` ascending per element gives the same bits, so the kernel tiles `C` in
//!   registers (MR rows × NR columns), blocks `k` and the columns for the caches, and lets the
//!   compiler vectorise across `j` — lanes are independent elements, so SSE2, AVX2 and
//!   AVX-512 code give identical results (Rust never contracts `a - b·c` to an FMA).
//! * [`cholesky_lower`]: the Cholesky–Banachiewicz loop (row by row, `s = a_ij − Σ_k l_ik
//!   l_jk` in `k` order), reorganised right-looking by blocks of 128 columns: factor the
//!   diagonal block, the panel below it, then update the trailing matrix with
//!   [`sub_products`]; each element still sees its products in ascending `k`.
//! * [`invert_lower`]: `X = L⁻¹` row by row (`x_i = (e_i − Σ_k l_ik x_k) / l_ii`), by blocks
//!   of rows: the products with the rows above the block through [`sub_products`], the rest
//!   in the original order.
//! * [`syrk_fixed`]: `XᵀX` with each entry the fixed 8-lane f32 dot product of the Hessian
//!   accumulation, a tile of entries at once.
//!
//! The plain loops stay in the tests as the reference the blocked ones are compared with, bit
//! for bit, at every SIMD level the CPU has.

use rayon::prelude::*;

/// f32 or f64.
pub trait Real:
    Copy + Send + Sync + Default + std::ops::Mul<Output = Self> + std::ops::Sub<Output = Self> + 'static
{
}
impl Real for f32 {}
impl Real for f64 {}

/// The instruction sets the kernels are compiled for, chosen at run time (they all give the
/// same bits; the level only changes the speed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64).
    Baseline,
    /// AVX2 (x86-64).
    Avx2,
    /// AVX-512F (x86-64).
    Avx512,
}

impl Level {
    /// The best level this CPU has.
    pub fn detect() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Level::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Level::Avx2;
            }
        }
        Level::Baseline
    }

    /// True when this CPU has the level.
    pub fn has(self) -> bool {
        match self {
            Level::Baseline => true,
            Level::Avx2 => Level::detect() != Level::Baseline,
            Level::Avx512 => Level::detect() == Level::Avx512,
        }
    }

    /// Panics unless this CPU has the level: every entry point that takes a level checks it
    /// before any code compiled for that level runs.
    fn require(self) {
        assert!(self.has(), "this CPU lacks {self:?}");
    }

    /// Every level, with whether this CPU has it (for tests, which must say what they skip).
    pub fn all() -> [(Level, bool); 3] {
        [Level::Baseline, Level::Avx2, Level::Avx512].map(|l| (l, l.has()))
    }
}

/// Register tile: rows × columns of `C` held in registers.
const MR: usize = 4;
const NR64: usize = 8;
const NR32: usize = 16;
/// Cache blocks: `k` steps and columns of `B` kept in L2 while every row of `C` passes.
const KC: usize = 256;
const JC: usize = 256;

/// The shape of one [`sub_products`] call. `C` is `rows × cols` (row stride `ldc`), `A` is
/// `rows × k_end` (`lda`), `B` is `k_end × cols` (`ldb`). For the columns of a register tile
/// starting at `j0`, `k` runs over `k_from(j0)..k_end` (a triangular `B` skips its zeros).
#[derive(Clone, Copy)]
pub struct Gemm {
    pub rows: usize,
    pub cols: usize,
    pub ldc: usize,
    pub lda: usize,
    pub ldb: usize,
    pub k_end: usize,
    /// `k` starts at the tile's first column (`col0 + j0`) rather than 0: `B` is lower
    /// triangular (`B[k][j] = 0` for `k < j`), and the products with those zeros are skipped.
    pub k_from_col: bool,
    /// Offset of `C`'s column 0 in `B`'s columns (for `k_from_col`).
    pub col0: usize,
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<T: Real, const R: usize, const N: usize>(
    c: &mut [T],
    ldc: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    k0: usize,
    k1: usize,
) {
    let mut acc = [[T::default(); N]; R];
    for r in 0..R {
        acc[r].copy_from_slice(&c[r * ldc..r * ldc + N]);
    }
    let ar: [&[T]; R] = std::array::from_fn(|r| &a[r * lda + k0..r * lda + k1]);
    for (kk, k) in (k0..k1).enumerate() {
        let bk: &[T; N] = b[k * ldb..k * ldb + N].try_into().expect("N columns");
        for r in 0..R {
            let av = ar[r][kk];
            for j in 0..N {
                acc[r][j] = acc[r][j] - av * bk[j];
            }
        }
    }
    for r in 0..R {
        c[r * ldc..r * ldc + N].copy_from_slice(&acc[r]);
    }
}

/// One element at a time, in the same order (edges of the tiling).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn edge<T: Real>(
    c: &mut [T],
    ldc: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    k0: usize,
    k1: usize,
) {
    for r in rows {
        for j in cols.clone() {
            let mut s = c[r * ldc + j];
            for k in k0..k1 {
                s = s - a[r * lda + k] * b[k * ldb + j];
            }
            c[r * ldc + j] = s;
        }
    }
}

#[inline(always)]
fn sub_products_body<T: Real, const N: usize>(c: &mut [T], a: &[T], b: &[T], g: &Gemm) {
    let kstart = |j0: usize| {
        if g.k_from_col {
            (g.col0 + j0).min(g.k_end)
        } else {
            0
        }
    };
    let first_k = kstart(0);
    let mut kb = first_k;
    while kb < g.k_end {
        let kb_end = (kb + KC).min(g.k_end);
        let mut jc = 0;
        while jc < g.cols {
            let jc_end = (jc + JC).min(g.cols);
            let mut i = 0;
            while i < g.rows {
                let r = MR.min(g.rows - i);
                let mut j = jc;
                while j < jc_end {
                    let w = N.min(jc_end - j);
                    let k0 = kb.max(kstart(j));
                    if k0 < kb_end {
                        let cc = &mut c[i * g.ldc + j..];
                        let aa = &a[i * g.lda..];
                        let bb = &b[j..];
                        if r == MR && w == N {
                            tile::<T, MR, N>(cc, g.ldc, aa, g.lda, bb, g.ldb, k0, kb_end);
                        } else {
                            edge(cc, g.ldc, aa, g.lda, bb, g.ldb, 0..r, 0..w, k0, kb_end);
                        }
                    }
                    j += N;
                }
                i += MR;
            }
            jc = jc_end;
        }
        kb = kb_end;
    }
}

macro_rules! dispatch {
    ($body:ident, $n:expr, $t:ty, $c:expr, $a:expr, $b:expr, $g:expr, $level:expr) => {{
        $level.require();
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(c: &mut [$t], a: &[$t], b: &[$t], g: &Gemm) {
                $body::<$t, { $n }>(c, a, b, g)
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512(c: &mut [$t], a: &[$t], b: &[$t], g: &Gemm) {
                $body::<$t, { $n }>(c, a, b, g)
            }
            match $level {
                // SAFETY: `require` above checked that the CPU has the level.
                Level::Avx512 => return unsafe { avx512($c, $a, $b, $g) },
                Level::Avx2 => return unsafe { avx2($c, $a, $b, $g) },
                Level::Baseline => {}
            }
        }
        let _ = $level;
        $body::<$t, { $n }>($c, $a, $b, $g)
    }};
}

/// Element types [`sub_products`] runs on.
pub trait GemmReal: Real {
    #[doc(hidden)]
    fn run(c: &mut [Self], a: &[Self], b: &[Self], g: &Gemm, level: Level);
}
impl GemmReal for f64 {
    fn run(c: &mut [f64], a: &[f64], b: &[f64], g: &Gemm, level: Level) {
        dispatch!(sub_products_body, NR64, f64, c, a, b, g, level)
    }
}
impl GemmReal for f32 {
    fn run(c: &mut [f32], a: &[f32], b: &[f32], g: &Gemm, level: Level) {
        dispatch!(sub_products_body, NR32, f32, c, a, b, g, level)
    }
}

/// `C[i][j] -= A[i][k] · B[k][j]`, `k` ascending, each product rounded then subtracted — the
/// bits of the plain triple loop — at the best level this CPU has.
pub fn sub_products<T: GemmReal>(c: &mut [T], a: &[T], b: &[T], g: &Gemm) {
    T::run(c, a, b, g, Level::detect())
}

/// [`sub_products`] at a given level (the CPU must have it: see [`Level::all`]).
pub fn sub_products_at<T: GemmReal>(c: &mut [T], a: &[T], b: &[T], g: &Gemm, level: Level) {
    T::run(c, a, b, g, level)
}

/// Columns per block of [`cholesky_lower`] and rows per block of [`invert_lower`].
const NB: usize = 128;
/// Rows of `C` per parallel task.
const ROWS_PER_TASK: usize = 256;

/// Lower Cholesky factor of the symmetric `a` (n × n, row-major) in place, the upper triangle
/// set to zero; false when a pivot is not positive (then `a` is left part-way). The bits of
/// the row-by-row loop `s = a_ij − Σ_{k<j} l_ik l_jk; l_ij = s / l_jj` (`√s` on the diagonal).
pub fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    cholesky_lower_at(a, n, Level::detect())
}

/// [`cholesky_lower`] at a given level.
pub fn cholesky_lower_at(a: &mut [f64], n: usize, level: Level) -> bool {
    level.require();
    assert_eq!(a.len(), n * n);
    let mut k0 = 0;
    while k0 < n {
        let k1 = (k0 + NB).min(n);
        let kb = k1 - k0;
        // 1. The diagonal block, row by row as the plain loop (its earlier products are in).
        for i in k0..k1 {
            for j in k0..=i {
                let mut s = a[i * n + j];
                for k in k0..j {
                    s -= a[i * n + k] * a[j * n + k];
                }
                if i == j {
                    if s.is_nan() || s <= 0.0 {
                        return false;
                    }
                    a[i * n + i] = s.sqrt();
                } else {
                    a[i * n + j] = s / a[j * n + j];
                }
            }
        }
        if k1 == n {
            break;
        }
        // 2. The panel below it: row i's columns k0..k1, right-looking within the row (column
        //    k is final once its products up to k are in; then it feeds the later columns).
        let mut dt = vec![0f64; kb * kb]; // dt[k][j] = l_jk, the diagonal block transposed
        for j in 0..kb {
            for k in 0..=j {
                dt[k * kb + j] = a[(k0 + j) * n + k0 + k];
            }
        }
        let (_, below) = a.split_at_mut(k1 * n);
        below.par_chunks_mut(n).for_each(|row| {
            let p = &mut row[k0..k1];
            for k in 0..kb {
                let lik = p[k] / dt[k * kb + k];
                p[k] = lik;
                let (_, rest) = p.split_at_mut(k + 1);
                for (x, &l) in rest.iter_mut().zip(&dt[k * kb + k + 1..(k + 1) * kb]) {
                    *x -= lik * l;
                }
            }
        });
        // 3. The trailing matrix: a_ij -= l_ik l_jk for k in k0..k1, j ≤ i.
        let m = n - k1;
        let mut pt = vec![0f64; kb * m]; // pt[k][j] = l_{k1+j, k0+k}
        let mut p = vec![0f64; m * kb]; // p[i][k] = l_{k1+i, k0+k}
        for i in 0..m {
            for k in 0..kb {
                let v = below[i * n + k0 + k];
                p[i * kb + k] = v;
                pt[k * m + i] = v;
            }
        }
        below
            .par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(t, rows)| {
                let r0 = t * ROWS_PER_TASK; // first row, counted from k1
                let nr = rows.len() / n;
                // The rectangle left of the task's diagonal block: columns k1..k1+r0.
                if r0 > 0 {
                    let g = Gemm {
                        rows: nr,
                        cols: r0,
                        ldc: n,
                        lda: kb,
                        ldb: m,
                        k_end: kb,
                        k_from_col: false,
                        col0: 0,
                    };
                    f64::run(&mut rows[k1..], &p[r0 * kb..], &pt, &g, level);
                }
                // The triangle: row r0+r, columns k1+r0 ..= k1+r0+r.
                for r in 0..nr {
                    for j in r0..=r0 + r {
                        let mut s = rows[r * n + k1 + j];
                        for k in 0..kb {
                            s -= p[(r0 + r) * kb + k] * pt[k * m + j];
                        }
                        rows[r * n + k1 + j] = s;
                    }
                }
            });
        k0 = k1;
    }
    for i in 0..n {
        a[i * n + i + 1..(i + 1) * n].fill(0.0);
    }
    true
}

/// Inverse of the lower-triangular `l` (n × n, row-major). The bits of the row-by-row loop:
/// `x_i = e_i`, then `x_i[..=k] -= l_ik · x_k[..=k]` for each `k < i` with `l_ik ≠ 0` in
/// ascending order, then `x_i *= 1 / l_ii` (for finite `l`; the skipped zero products change
/// nothing because a running sum that starts at +0 or 1 never becomes −0).
pub fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    invert_lower_at(l, n, Level::detect())
}

/// [`invert_lower`] at a given level.
pub fn invert_lower_at(l: &[f64], n: usize, level: Level) -> Vec<f64> {
    level.require();
    assert_eq!(l.len(), n * n);
    let mut x = vec![0f64; n * n];
    let mut i0 = 0;
    while i0 < n {
        let i1 = (i0 + NB).min(n);
        let (done, block) = x.split_at_mut(i0 * n);
        let block = &mut block[..(i1 - i0) * n];
        for (r, row) in block.chunks_mut(n).enumerate() {
            row[i0 + r] = 1.0;
        }
        // 1. Products with the rows above the block (k < i0); column m's products start at
        //    k = m (x_k is zero right of its diagonal). In column strips, in parallel.
        if i0 > 0 {
            const STRIP: usize = 512;
            let strips: Vec<(usize, Vec<f64>)> = (0..i0)
                .step_by(STRIP)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|m0| {
                    let w = STRIP.min(i0 - m0);
                    let rows = i1 - i0;
                    let mut c = vec![0f64; rows * w];
                    let g = Gemm {
                        rows,
                        cols: w,
                        ldc: w,
                        lda: n,
                        ldb: n,
                        k_end: i0,
                        k_from_col: true,
                        col0: m0,
                    };
                    f64::run(&mut c, &l[i0 * n..], &done[m0..], &g, level);
                    (m0, c)
                })
                .collect();
            for (m0, c) in strips {
                let w = c.len() / (i1 - i0);
                for (r, cr) in c.chunks(w).enumerate() {
                    block[r * n + m0..r * n + m0 + w].copy_from_slice(cr);
                }
            }
        }
        // 2. The rest, row by row as the plain loop: k from i0 on (row r's columns below i0
        //    continue the sums step 1 made), then the diagonal's reciprocal.
        for r in 0..i1 - i0 {
            let i = i0 + r;
            let (prev, cur) = block.split_at_mut(r * n);
            let xi = &mut cur[..n];
            for k in i0..i {
                let lik = l[i * n + k];
                if lik != 0.0 {
                    let xk = &prev[(k - i0) * n..(k - i0) * n + k + 1];
                    for (a, &b) in xi[..=k].iter_mut().zip(xk) {
                        *a -= lik * b;
                    }
                }
            }
            let inv = 1.0 / l[i * n + i];
            for a in &mut xi[..=i] {
                *a *= inv;
            }
        }
        i0 = i1;
    }
    x
}

/// `Σ a_t b_t` in f32 with the Hessian's fixed order: eight running lanes (lane `t mod 8`),
/// the remainder into lanes 0.., then a fixed tree.
#[inline(always)]
pub fn dot_fixed(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    for (k, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[k] += x * y;
    }
    tree(&acc)
}

#[inline(always)]
fn tree(acc: &[f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Rows × columns of `XᵀX` entries per register tile of [`syrk_fixed`].
const SI: usize = 2;
const SJ: usize = 4;
/// Columns of `XᵀX` per cache block of [`syrk_fixed`].
const SYRK_JB: usize = 64;

/// The lanes of a register tile over the first `full` tokens (a multiple of 8): entry
/// `(a, b)`'s eight running sums of `xi[a][p] · xj[b][p]`, lane `p mod 8`.
type SyrkTile = [[[f32; 8]; SJ]; SI];

#[inline(always)]
fn syrk_tile_portable(xi: &[&[f32]; SI], xj: &[&[f32]; SJ], full: usize) -> SyrkTile {
    let mut acc = [[[0f32; 8]; SJ]; SI];
    let mut p = 0;
    while p < full {
        let va: [&[f32; 8]; SI] = std::array::from_fn(|a| xi[a][p..p + 8].try_into().expect("8"));
        let vb: [&[f32; 8]; SJ] = std::array::from_fn(|b| xj[b][p..p + 8].try_into().expect("8"));
        for a in 0..SI {
            for b in 0..SJ {
                for k in 0..8 {
                    acc[a][b][k] += va[a][k] * vb[b][k];
                }
            }
        }
        p += 8;
    }
    acc
}

/// The same lanes with AVX2 registers, one per entry (a multiply, then an add: the portable
/// code's two roundings).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn syrk_tile_avx2(xi: &[&[f32]; SI], xj: &[&[f32]; SJ], full: usize) -> SyrkTile {
    use std::arch::x86_64::*;
    assert!(xi.iter().chain(xj.iter()).all(|r| r.len() >= full) && full.is_multiple_of(8));
    let z = _mm256_setzero_ps();
    let (mut a00, mut a01, mut a02, mut a03) = (z, z, z, z);
    let (mut a10, mut a11, mut a12, mut a13) = (z, z, z, z);
    let (x0, x1) = (xi[0].as_ptr(), xi[1].as_ptr());
    let (y0, y1, y2, y3) = (
        xj[0].as_ptr(),
        xj[1].as_ptr(),
        xj[2].as_ptr(),
        xj[3].as_ptr(),
    );
    let mut p = 0;
    while p < full {
        // SAFETY: p + 8 ≤ full ≤ every row's length (asserted).
        let (u0, u1) = (_mm256_loadu_ps(x0.add(p)), _mm256_loadu_ps(x1.add(p)));
        let (v0, v1) = (_mm256_loadu_ps(y0.add(p)), _mm256_loadu_ps(y1.add(p)));
        let (v2, v3) = (_mm256_loadu_ps(y2.add(p)), _mm256_loadu_ps(y3.add(p)));
        a00 = _mm256_add_ps(a00, _mm256_mul_ps(u0, v0));
        a01 = _mm256_add_ps(a01, _mm256_mul_ps(u0, v1));
        a02 = _mm256_add_ps(a02, _mm256_mul_ps(u0, v2));
        a03 = _mm256_add_ps(a03, _mm256_mul_ps(u0, v3));
        a10 = _mm256_add_ps(a10, _mm256_mul_ps(u1, v0));
        a11 = _mm256_add_ps(a11, _mm256_mul_ps(u1, v1));
        a12 = _mm256_add_ps(a12, _mm256_mul_ps(u1, v2));
        a13 = _mm256_add_ps(a13, _mm256_mul_ps(u1, v3));
        p += 8;
    }
    let mut acc = [[[0f32; 8]; SJ]; SI];
    let regs = [[a00, a01, a02, a03], [a10, a11, a12, a13]];
    for (row, rr) in acc.iter_mut().zip(&regs) {
        for (slot, &v) in row.iter_mut().zip(rr) {
            _mm256_storeu_ps(slot.as_mut_ptr(), v);
        }
    }
    acc
}

#[inline(always)]
fn syrk_rows_body(
    xt: &[f32],
    t: usize,
    n: usize,
    i0: usize,
    h: &mut [f64],
    main: impl Fn(&[&[f32]; SI], &[&[f32]; SJ], usize) -> SyrkTile,
) {
    // h: rows i0.. of the n×n sums (as many as fit), row-major.
    let rows = h.len() / n;
    let full = t / 8 * 8;
    // Blocks of SYRK_JB columns, each passed by every row of the task while its columns of X
    // are in cache; a row's tiles start at its diagonal and step by SJ, the block taking the
    // tiles that start inside it (a tile may reach past the block's end).
    let mut jb = i0;
    while jb < n {
        let jb_end = (jb + SYRK_JB).min(n);
        let mut i = 0;
        while i < rows {
            let ri = SI.min(rows - i);
            let gi = i0 + i;
            // Columns from the tile's first row (entries left of a row's diagonal are not used).
            let mut j = if jb > gi {
                gi + (jb - gi).div_ceil(SJ) * SJ
            } else {
                gi
            };
            while j < jb_end {
                let cj = SJ.min(n - j);
                if ri == SI && cj == SJ {
                    let xi: [&[f32]; SI] =
                        std::array::from_fn(|a| &xt[(gi + a) * t..(gi + a + 1) * t]);
                    let xj: [&[f32]; SJ] =
                        std::array::from_fn(|b| &xt[(j + b) * t..(j + b + 1) * t]);
                    let mut acc = main(&xi, &xj, full);
                    for k in 0..t - full {
                        for a in 0..SI {
                            for b in 0..SJ {
                                acc[a][b][k] += xi[a][full + k] * xj[b][full + k];
                            }
                        }
                    }
                    for a in 0..SI {
                        for b in 0..SJ {
                            if j + b >= gi + a {
                                h[(i + a) * n + j + b] += tree(&acc[a][b]) as f64;
                            }
                        }
                    }
                } else {
                    for a in 0..ri {
                        for b in 0..cj {
                            if j + b >= gi + a {
                                h[(i + a) * n + j + b] += dot_fixed(
                                    &xt[(gi + a) * t..(gi + a + 1) * t],
                                    &xt[(j + b) * t..(j + b + 1) * t],
                                ) as f64;
                            }
                        }
                    }
                }
                j += SJ;
            }
            i += SI;
        }
        jb = jb_end;
    }
}

/// `h[i][j] += dot_fixed(x_i, x_j) as f64` for `j ≥ i`: the upper triangle of `XᵀX` added to
/// `h` (n × n), `xt` holding the columns of `X` (`n` rows of `t` tokens). In parallel over
/// rows; every entry is one [`dot_fixed`], whatever the tiling, level or thread count.
pub fn syrk_fixed(xt: &[f32], t: usize, n: usize, h: &mut [f64]) {
    syrk_fixed_at(xt, t, n, h, Level::detect())
}

/// [`syrk_fixed`] at a given level.
pub fn syrk_fixed_at(xt: &[f32], t: usize, n: usize, h: &mut [f64], level: Level) {
    level.require();
    assert_eq!(xt.len(), n * t);
    assert_eq!(h.len(), n * n);
    // Rows per task: enough that each block of X's columns is reused from cache.
    const ROWS: usize = 32;
    h.par_chunks_mut(ROWS * n)
        .enumerate()
        .for_each(|(c, rows)| {
            let i0 = c * ROWS;
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2(xt: &[f32], t: usize, n: usize, i0: usize, h: &mut [f64]) {
                    // SAFETY: this function runs only where the CPU has AVX2.
                    syrk_rows_body(xt, t, n, i0, h, |a, b, f| unsafe {
                        syrk_tile_avx2(a, b, f)
                    })
                }
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512(xt: &[f32], t: usize, n: usize, i0: usize, h: &mut [f64]) {
                    // SAFETY: AVX-512F implies AVX2.
                    syrk_rows_body(xt, t, n, i0, h, |a, b, f| unsafe {
                        syrk_tile_avx2(a, b, f)
                    })
                }
                match level {
                    // SAFETY: `require` above checked that the CPU has the level.
                    Level::Avx512 => return unsafe { avx512(xt, t, n, i0, rows) },
                    Level::Avx2 => return unsafe { avx2(xt, t, n, i0, rows) },
                    Level::Baseline => {}
                }
            }
            syrk_rows_body(xt, t, n, i0, rows, syrk_tile_portable)
        });
}

/// The plain Cholesky–Banachiewicz loop [`cholesky_lower`] replaces (GPTQ's factor before
/// the blocked kernels): the reference its bits are tested against, and the baseline of
/// `examples/linalg-speed.rs`.
pub fn cholesky_lower_reference(a: &mut [f64], n: usize) -> bool {
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (i * n, j * n);
            let mut s = a[ri + j];
            for k in 0..j {
                s -= a[ri + k] * a[rj + k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return false;
                }
                a[ri + i] = s.sqrt();
            } else {
                a[ri + j] = s / a[rj + j];
            }
        }
        for j in i + 1..n {
            a[i * n + j] = 0.0;
        }
    }
    true
}

/// The plain row-by-row inverse [`invert_lower`] replaces (the reference, as above).
pub fn invert_lower_reference(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0f64; n * n];
    for i in 0..n {
        let (done, rest) = x.split_at_mut(i * n);
        let xi = &mut rest[..n];
        xi[i] = 1.0;
        for k in 0..i {
            let lik = l[i * n + k];
            if lik != 0.0 {
                let xk = &done[k * n..k * n + k + 1];
                for (a, &b) in xi[..=k].iter_mut().zip(xk) {
                    *a -= lik * b;
                }
            }
        }
        let inv = 1.0 / l[i * n + i];
        for a in &mut xi[..=i] {
            *a *= inv;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    /// A Hessian-like SPD matrix: XᵀX of t random rows plus a small diagonal.
    fn spd(n: usize, t: usize, seed: u64) -> Vec<f64> {
        let mut r = rng(seed);
        let x: Vec<f64> = (0..n * t).map(|_| r()).collect();
        let mut h = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in 0..t {
                    s += x[k * n + i] * x[k * n + j];
                }
                h[i * n + j] = s;
            }
            h[i * n + i] += 0.01;
        }
        h
    }

    fn levels() -> Vec<Level> {
        let mut v = Vec::new();
        for (l, has) in Level::all() {
            if has {
                v.push(l);
            } else {
                eprintln!("skipped at {l:?}: this CPU lacks it");
            }
        }
        v
    }

    #[test]
    fn cholesky_and_inverse_are_the_plain_loops_bits_at_every_level() {
        // Sizes below, at and across the 128-column blocks and the 256-row tasks, and with
        // ragged register tiles.
        for &n in &[1usize, 7, 64, 127, 128, 129, 300, 517] {
            let h = spd(n, n + 9, n as u64);
            let mut want = h.clone();
            assert!(cholesky_lower_reference(&mut want, n));
            let want_inv = invert_lower_reference(&want, n);
            for level in levels() {
                let mut got = h.clone();
                assert!(cholesky_lower_at(&mut got, n, level));
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "cholesky n={n} {level:?}"
                );
                let inv = invert_lower_at(&got, n, level);
                assert!(
                    inv.iter()
                        .zip(&want_inv)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "inverse n={n} {level:?}"
                );
            }
        }
        // Not positive definite: both refuse.
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky_lower(&mut a, 2));
        let n = 200;
        let mut h = spd(n, n + 9, 5);
        h[150 * n + 150] = -1.0;
        assert!(!cholesky_lower_reference(&mut h.clone(), n));
        assert!(!cholesky_lower(&mut h, n));
    }

    #[test]
    fn a_level_the_cpu_lacks_is_refused_before_it_runs() {
        for (level, has) in Level::all() {
            if has {
                eprintln!("skipped for {level:?}: this CPU has it (the refusal runs on one that lacks it)");
                continue;
            }
            let r = std::panic::catch_unwind(|| {
                let mut a = vec![4.0f64];
                cholesky_lower_at(&mut a, 1, level)
            });
            assert!(r.is_err(), "{level:?} ran on a CPU that lacks it");
            let r = std::panic::catch_unwind(|| {
                syrk_fixed_at(&[1.0], 1, 1, &mut [0.0], level);
            });
            assert!(r.is_err());
        }
    }

    #[test]
    fn sub_products_are_the_triple_loops_bits() {
        let mut r = rng(3);
        for &(rows, cols, k) in &[(1, 1, 1), (5, 17, 33), (13, 300, 700), (64, 513, 260)] {
            let a64: Vec<f64> = (0..rows * k).map(|_| r()).collect();
            let b64: Vec<f64> = (0..k * cols).map(|_| r()).collect();
            let c64: Vec<f64> = (0..rows * cols).map(|_| r()).collect();
            let g = Gemm {
                rows,
                cols,
                ldc: cols,
                lda: k,
                ldb: cols,
                k_end: k,
                k_from_col: false,
                col0: 0,
            };
            let mut want = c64.clone();
            for i in 0..rows {
                for j in 0..cols {
                    for kk in 0..k {
                        want[i * cols + j] -= a64[i * k + kk] * b64[kk * cols + j];
                    }
                }
            }
            let a32: Vec<f32> = a64.iter().map(|&v| v as f32).collect();
            let b32: Vec<f32> = b64.iter().map(|&v| v as f32).collect();
            let mut want32: Vec<f32> = c64.iter().map(|&v| v as f32).collect();
            for i in 0..rows {
                for j in 0..cols {
                    for kk in 0..k {
                        want32[i * cols + j] -= a32[i * k + kk] * b32[kk * cols + j];
                    }
                }
            }
            for level in levels() {
                let mut c = c64.clone();
                sub_products_at(&mut c, &a64, &b64, &g, level);
                assert!(c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()));
                let mut c: Vec<f32> = c64.iter().map(|&v| v as f32).collect();
                sub_products_at(&mut c, &a32, &b32, &g, level);
                assert!(c
                    .iter()
                    .zip(&want32)
                    .all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
    }

    #[test]
    fn syrk_is_one_fixed_dot_per_entry_at_every_level() {
        let mut r = rng(9);
        for &(n, t) in &[(1usize, 1usize), (7, 13), (19, 37), (130, 517), (301, 64)] {
            let xt: Vec<f32> = (0..n * t).map(|_| r() as f32 * 4.0).collect();
            let h0: Vec<f64> = (0..n * n).map(|_| r()).collect();
            let mut want = h0.clone();
            for i in 0..n {
                for j in i..n {
                    want[i * n + j] +=
                        dot_fixed(&xt[i * t..(i + 1) * t], &xt[j * t..(j + 1) * t]) as f64;
                }
            }
            for level in levels() {
                let mut h = h0.clone();
                syrk_fixed_at(&xt, t, n, &mut h, level);
                assert!(
                    h.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "n={n} t={t} {level:?}"
                );
            }
        }
    }
}
