//! Matrix products `Y[t, r] = Σ_c W[r, c] · X[t, c]` for a batch of tokens, as ggml computes
//! them: the activations are quantized once to the weight's activation type (Q8_0, Q8_1 or
//! Q8_K) and every output is one dot product of a weight row with an activation row. Rows are
//! split across the worker team ([`crate::team`]); within a thread each tile of weight rows is
//! applied to every token before moving on, so a tile stays in cache while the activations
//! stream past.
//!
//! [`MatmulMode::Dequantized`] instead expands each weight row to f32 and uses f32 dots: the
//! same weights without activation quantization, to measure what that quantization costs.

use bytemuck::Pod;
use rayon::prelude::*;

use quantize::blocks::*;
use quantize::GgmlType;

use crate::dot;
use crate::model::Weight;

/// How a matmul treats quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulMode {
    /// Quantize activations, use the integer dot products (what llama.cpp does).
    #[default]
    Quantized,
    /// Dequantize weight rows to f32 and use f32 dot products (for checking).
    Dequantized,
}

/// Reusable buffers of a matmul (quantized activations), so the forward pass does not
/// allocate per token. 8-byte aligned (Q8_K blocks hold an f32).
#[derive(Debug, Default)]
pub struct MatmulScratch {
    act: Vec<u64>,
    /// The same activations with their scales and starts, for the AVX-512 kernels of the
    /// legacy types ([`dot::packed::ActBlock`]).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    blocks: Vec<dot::packed::ActBlock>,
}

impl MatmulScratch {
    fn bytes(&mut self, n: usize) -> &mut [u8] {
        let words = n.div_ceil(8);
        if self.act.len() < words {
            self.act.resize(words, 0);
        }
        &mut bytemuck::cast_slice_mut(&mut self.act[..words])[..n]
    }
}

/// A raw pointer that may be shared across threads because every thread writes disjoint
/// elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// The same for activation blocks: each token's row is written by one task.
struct SharedBlocks<A>(*mut A);
impl<A> Clone for SharedBlocks<A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for SharedBlocks<A> {}
unsafe impl<A> Send for SharedBlocks<A> {}
unsafe impl<A> Sync for SharedBlocks<A> {}

/// Weight rows per tile.
const TILE: usize = 16;

/// Tokens per block of the AVX-512 prefill GEMM: a block's activations (48 bytes per block
/// and token) and a task's unpacked rows stay in L2 together.
#[cfg(target_arch = "x86_64")]
const GEMM_TOKENS: usize = 32;

/// How many rows ahead of the one being read the matmul prefetches.
const PREFETCH_ROWS: usize = 8;

/// A four-token dot product (see `dot::avx2::vec_dot4_*`); unsafe because it needs the
/// SIMD level's CPU features.
type Dot4<W, A> = unsafe fn(&[W], [&[A]; 4]) -> [f32; 4];

/// Two weight rows × four tokens (see `dot::avx2::vec_dot4x2_*`); unsafe as [`Dot4`].
type Dot4x2<W, A> = unsafe fn([&[W]; 2], [&[A]; 4]) -> [[f32; 4]; 2];

/// Four weight rows × one token (see `dot::avx2::vec_dot_rows4_*`); unsafe as [`Dot4`].
type Rows4<W, A> = unsafe fn([&[W]; 4], &[A]) -> [f32; 4];

/// The batch kernels of a weight type at the SIMD level in use.
struct Batch<W, A> {
    /// One row × four tokens.
    one: Option<Dot4<W, A>>,
    /// Two rows × four tokens.
    two: Option<Dot4x2<W, A>>,
    /// Four rows × one token (decode).
    rows: Option<Rows4<W, A>>,
}

impl<W, A> Batch<W, A> {
    fn none() -> Self {
        Batch {
            one: None,
            two: None,
            rows: None,
        }
    }
}

/// The kernel `$name` of the SIMD level in use (none for scalar), as type `$ty`.
macro_rules! simd_kernel {
    ($name:ident, $ty:ident) => {{
        let k: Option<$ty<_, _>> = match crate::simd::level() {
            #[cfg(target_arch = "x86_64")]
            crate::simd::SimdLevel::Avx512 => Some(crate::dot::avx512::$name as $ty<_, _>),
            #[cfg(target_arch = "x86_64")]
            crate::simd::SimdLevel::Avx2 => Some(crate::dot::avx2::$name as $ty<_, _>),
            #[cfg(target_arch = "aarch64")]
            crate::simd::SimdLevel::I8mm => Some(crate::dot::i8mm::$name as $ty<_, _>),
            #[cfg(target_arch = "aarch64")]
            crate::simd::SimdLevel::Dotprod => Some(crate::dot::dotprod::$name as $ty<_, _>),
            #[cfg(target_arch = "aarch64")]
            crate::simd::SimdLevel::Neon => Some(crate::dot::neon::$name as $ty<_, _>),
            _ => None,
        };
        k
    }};
}

/// The four-token kernel `$one` and, when given, the two-row kernel `$two` and the four-row
/// decode kernel `$rows`.
macro_rules! dot4 {
    ($one:ident) => {
        Batch {
            one: simd_kernel!($one, Dot4),
            two: None,
            rows: None,
        }
    };
    ($one:ident; $rows:ident) => {
        Batch {
            one: simd_kernel!($one, Dot4),
            two: None,
            rows: simd_kernel!($rows, Rows4),
        }
    };
    ($one:ident, $two:ident; $rows:ident) => {
        Batch {
            one: simd_kernel!($one, Dot4),
            two: simd_kernel!($two, Dot4x2),
            rows: simd_kernel!($rows, Rows4),
        }
    };
}

/// `out[t·rows + r] = W[r] · x[t]` for `n_tok` tokens; `x` is `[n_tok, cols]`, `out` is
/// `[n_tok, rows]`. A weight's run-time LoRA terms are added after the product.
pub fn matmul(
    w: &Weight,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
    mode: MatmulMode,
) {
    matmul_base(w, x, n_tok, out, scratch, mode);
    for t in &w.lora {
        t.apply(x, w.cols, n_tok, out, w.rows);
    }
}

fn matmul_base(
    w: &Weight,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
    mode: MatmulMode,
) {
    assert_eq!(x.len(), n_tok * w.cols, "matmul input");
    assert_eq!(out.len(), n_tok * w.rows, "matmul output");
    if mode == MatmulMode::Dequantized && w.ty != GgmlType::F32 {
        return matmul_dequantized(w, x, n_tok, out);
    }
    match w.ty {
        GgmlType::F32 if tiled(n_tok) => run_tiled::<f32>(w, x, n_tok, out, TileKernel::F32),
        GgmlType::F16 if tiled(n_tok) => run_tiled::<half::f16>(w, x, n_tok, out, TileKernel::F16),
        GgmlType::F32 => run::<f32, f32>(
            w,
            bytemuck::cast_slice(x),
            w.cols * 4,
            n_tok,
            out,
            dot::vec_dot_f32,
            Batch::none(),
        ),
        GgmlType::F16 => run::<half::f16, f32>(
            w,
            bytemuck::cast_slice(x),
            w.cols * 4,
            n_tok,
            out,
            dot::vec_dot_f16_f32,
            Batch::none(),
        ),
        GgmlType::BF16 => run::<u16, f32>(
            w,
            bytemuck::cast_slice(x),
            w.cols * 4,
            n_tok,
            out,
            dot::vec_dot_bf16_f32,
            Batch::none(),
        ),
        #[cfg(target_arch = "x86_64")]
        GgmlType::Q4_0 if zmm() => quantized_zmm::<BlockQ4_0>(w, x, n_tok, out, scratch),
        GgmlType::Q4_0 => quantized::<BlockQ4_0, BlockQ8_0>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q4_0_q8_0,
            dot4!(vec_dot4_q4_0_q8_0, vec_dot4x2_q4_0_q8_0; vec_dot_rows4_q4_0_q8_0),
        ),
        #[cfg(target_arch = "x86_64")]
        GgmlType::Q4_1 if zmm() => quantized_zmm::<BlockQ4_1>(w, x, n_tok, out, scratch),
        GgmlType::Q4_1 => quantized::<BlockQ4_1, BlockQ8_1>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q4_1_q8_1,
            dot4!(vec_dot4_q4_1_q8_1; vec_dot_rows4_q4_1_q8_1),
        ),
        #[cfg(target_arch = "x86_64")]
        GgmlType::Q5_0 if zmm() => quantized_zmm::<BlockQ5_0>(w, x, n_tok, out, scratch),
        GgmlType::Q5_0 => quantized::<BlockQ5_0, BlockQ8_0>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q5_0_q8_0,
            dot4!(vec_dot4_q5_0_q8_0, vec_dot4x2_q5_0_q8_0; vec_dot_rows4_q5_0_q8_0),
        ),
        #[cfg(target_arch = "x86_64")]
        GgmlType::Q5_1 if zmm() => quantized_zmm::<BlockQ5_1>(w, x, n_tok, out, scratch),
        GgmlType::Q5_1 => quantized::<BlockQ5_1, BlockQ8_1>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q5_1_q8_1,
            dot4!(vec_dot4_q5_1_q8_1; vec_dot_rows4_q5_1_q8_1),
        ),
        #[cfg(target_arch = "x86_64")]
        GgmlType::Q8_0 if zmm() => quantized_zmm::<BlockQ8_0>(w, x, n_tok, out, scratch),
        GgmlType::Q8_0 => quantized::<BlockQ8_0, BlockQ8_0>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q8_0_q8_0,
            dot4!(vec_dot4_q8_0_q8_0, vec_dot4x2_q8_0_q8_0; vec_dot_rows4_q8_0_q8_0),
        ),
        GgmlType::Q4K => quantized::<BlockQ4K, BlockQ8K>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q4_k_q8_k,
            dot4!(vec_dot4_q4_k_q8_k),
        ),
        GgmlType::Q5K => quantized::<BlockQ5K, BlockQ8K>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q5_k_q8_k,
            dot4!(vec_dot4_q5_k_q8_k),
        ),
        GgmlType::Q6K => quantized::<BlockQ6K, BlockQ8K>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q6_k_q8_k,
            dot4!(vec_dot4_q6_k_q8_k),
        ),
        GgmlType::Q2K => quantized::<BlockQ2K, BlockQ8K>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q2_k_q8_k,
            dot4!(vec_dot4_q2_k_q8_k),
        ),
        GgmlType::Q3K => quantized::<BlockQ3K, BlockQ8K>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_q3_k_q8_k,
            dot4!(vec_dot4_q3_k_q8_k),
        ),
        #[cfg(target_arch = "x86_64")]
        GgmlType::IQ4NL if zmm() => quantized_zmm::<BlockIQ4NL>(w, x, n_tok, out, scratch),
        GgmlType::IQ4NL => quantized::<BlockIQ4NL, BlockQ8_0>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_iq4_nl_q8_0,
            dot4!(vec_dot4_iq4_nl_q8_0, vec_dot4x2_iq4_nl_q8_0; vec_dot_rows4_iq4_nl_q8_0),
        ),
        GgmlType::IQ4XS => quantized::<BlockIQ4XS, BlockQ8K>(
            w,
            x,
            n_tok,
            out,
            scratch,
            dot::vec_dot_iq4_xs_q8_k,
            dot4!(vec_dot4_iq4_xs_q8_k),
        ),
        GgmlType::Q8_1 | GgmlType::Q8K => {
            panic!("{} is an activation format, not a weight type", w.ty)
        }
    }
}

fn quantized<W: Pod + Sync, A: crate::quant::Activation>(
    w: &Weight,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
    f: fn(&[W], &[A]) -> f32,
    f4: Batch<W, A>,
) {
    let nb = w.cols / A::BLOCK_SIZE;
    let arow = nb * std::mem::size_of::<A>();
    let acts = scratch.bytes(arow * n_tok);
    {
        let blocks: &mut [A] = bytemuck::cast_slice_mut(acts);
        let quant = |(xs, ab): (&[f32], &mut [A])| A::quantize_activation(xs, ab);
        if n_tok >= 4 {
            let dst = SharedBlocks(blocks.as_mut_ptr());
            crate::team::for_each(n_tok, &|t| {
                let d = dst; // the whole wrapper, not its raw field
                             // SAFETY: token t writes only its own row of blocks, inside `blocks`.
                let ab = unsafe { std::slice::from_raw_parts_mut(d.0.add(t * nb), nb) };
                quant((&x[t * w.cols..(t + 1) * w.cols], ab));
            });
        } else {
            x.chunks(w.cols).zip(blocks.chunks_mut(nb)).for_each(quant);
        }
    }
    run::<W, A>(w, acts, arow, n_tok, out, f, f4);
}

/// True when the sixteen-lane kernels of [`dot::zmm`] apply.
#[cfg(target_arch = "x86_64")]
fn zmm() -> bool {
    crate::simd::level() == crate::simd::SimdLevel::Avx512
}

/// [`quantized`] for the AVX-512 level's sixteen-lane kernels (Q4_0, Q5_0, Q8_0, IQ4_NL with
/// Q8_0 activations; Q4_1, Q5_1 with Q8_1): the activations are quantized by the same
/// reference quantizer, then given their scales and starts ([`dot::packed::ActBlock`]).
#[cfg(target_arch = "x86_64")]
fn quantized_zmm<W: dot::zmm::ZmmWeight>(
    w: &Weight,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) {
    use crate::quant::Activation;
    use dot::packed::ActBlock;
    let nb = w.cols / <W::Act as quantize::BlockFormat>::BLOCK_SIZE;
    let arow = nb * std::mem::size_of::<W::Act>();
    if scratch.blocks.len() < n_tok * nb {
        scratch
            .blocks
            .resize(n_tok * nb, bytemuck::Zeroable::zeroed());
    }
    let MatmulScratch { act, blocks: all } = scratch;
    let words = (arow * n_tok).div_ceil(8);
    if act.len() < words {
        act.resize(words, 0);
    }
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut act[..words]);
    let blocks: &mut [W::Act] = bytemuck::cast_slice_mut(&mut bytes[..arow * n_tok]);
    let packed = &mut all[..n_tok * nb];
    let one = |t: usize, ab: &mut [W::Act], ap: &mut [ActBlock]| {
        W::Act::quantize_activation(&x[t * w.cols..(t + 1) * w.cols], ab);
        // SAFETY: quantized_zmm is only called at the AVX-512 level.
        unsafe { W::pack(ab, ap) };
    };
    if n_tok >= 4 {
        let (db, dp) = (
            SharedBlocks(blocks.as_mut_ptr()),
            SharedBlocks(packed.as_mut_ptr()),
        );
        crate::team::for_each(n_tok, &|t| {
            let (b, p) = (db, dp); // the whole wrappers, not their raw fields
                                   // SAFETY: token t writes only its own rows of both buffers, inside them.
            let (ab, ap) = unsafe {
                (
                    std::slice::from_raw_parts_mut(b.0.add(t * nb), nb),
                    std::slice::from_raw_parts_mut(p.0.add(t * nb), nb),
                )
            };
            one(t, ab, ap);
        });
    } else {
        for (t, (ab, ap)) in blocks.chunks_mut(nb).zip(packed.chunks_mut(nb)).enumerate() {
            one(t, ab, ap);
        }
    }
    run_zmm::<W>(w, blocks, packed, nb, n_tok, out);
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Unpacked weight rows of the prefill GEMM (one task's rows per thread).
    static WEIGHT_TILE: std::cell::RefCell<Vec<dot::packed::WeightTile>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The threaded loop of the AVX-512 legacy-type kernels. A single token (decode) reads
/// sixteen weight rows at a time straight from the file's blocks; a batch unpacks a task's
/// rows into [`dot::packed::WeightTile`]s once and runs them, block of [`GEMM_TOKENS`] tokens
/// by block, eight tokens per call. Every output is the same chain, so all give the same bits.
#[cfg(target_arch = "x86_64")]
fn run_zmm<W: dot::zmm::ZmmWeight>(
    w: &Weight,
    raw: &[W::Act],
    acts: &[dot::packed::ActBlock],
    nb: usize,
    n_tok: usize,
    out: &mut [f32],
) {
    use dot::packed::TILE_ROWS;
    use dot::zmm::{dot_rows16, gemm, unpack_tiles};
    let rows = w.rows;
    let out_ptr = SharedOut(out.as_mut_ptr());
    // Decode: fewer, larger tasks than the float paths take, each a whole number of
    // sixteen-row groups — every task's first group starts cold (nothing prefetched it).
    let chunk_rows = if n_tok < 4 {
        rows.div_ceil(2 * crate::team::threads())
            .next_multiple_of(TILE_ROWS)
            .max(TILE_ROWS)
    } else {
        chunk_rows(w, n_tok)
    };
    let wall = quantize::blocks_from_bytes::<W>(w.bytes());
    assert_eq!(w.row_bytes(), nb * std::mem::size_of::<W>(), "weight row");
    let wrows = |r: usize, n: usize| &wall[r * nb..(r + n) * nb];
    let act = |t: usize| &acts[t * nb..(t + 1) * nb];
    let body = |c: usize| {
        let out = out_ptr;
        // SAFETY (every write): (t, r) belongs to this task's rows, which no other task
        // writes, and lies inside `out` (asserted by the caller).
        let put = |t: usize, r: usize, v: f32| unsafe { *out.0.add(t * rows + r) = v };
        let r0 = c * chunk_rows;
        let r1 = (r0 + chunk_rows).min(rows);
        if n_tok < 4 {
            // The task's first group, which no earlier group prefetched.
            crate::simd::prefetch(bytemuck::cast_slice(wrows(r0, (r1 - r0).min(TILE_ROWS))));
            let mut r = r0;
            while r + TILE_ROWS <= r1 {
                // The next group's rows, prefetched while this one is read.
                let next = wrows(r + TILE_ROWS, (r1 - r - TILE_ROWS).min(TILE_ROWS));
                for t in 0..n_tok {
                    // SAFETY: run_zmm is only called at the AVX-512 level.
                    let ahead = if t == 0 { next } else { &[] };
                    let v = unsafe { dot_rows16(wrows(r, TILE_ROWS), nb, act(t), ahead) };
                    (0..TILE_ROWS).for_each(|k| put(t, r + k, v[k]));
                }
                r += TILE_ROWS;
            }
            for r in r..r1 {
                for t in 0..n_tok {
                    // SAFETY: as above.
                    put(t, r, unsafe {
                        W::dot(wrows(r, 1), &raw[t * nb..(t + 1) * nb])
                    });
                }
            }
            return;
        }
        WEIGHT_TILE.with(|tile| {
            // The task's rows are unpacked once; then, per block of tokens small enough to stay
            // in L2 with them, every group of sixteen rows runs against the block's tokens. The
            // order only decides what is in cache: each output is one chain, the same bits in
            // any order.
            let mut tile = tile.borrow_mut();
            let groups = (r1 - r0).div_ceil(TILE_ROWS);
            if tile.len() < groups * nb {
                tile.resize(groups * nb, bytemuck::Zeroable::zeroed());
            }
            for g in 0..groups {
                let ra = r0 + g * TILE_ROWS;
                let n = TILE_ROWS.min(r1 - ra);
                // SAFETY: run_zmm is only called at the AVX-512 level.
                unsafe { unpack_tiles(wrows(ra, n), nb, &mut tile[g * nb..(g + 1) * nb]) };
            }
            let write = |g: usize, t: usize, v: &[f32; 16]| {
                let ra = r0 + g * TILE_ROWS;
                for (k, &x) in v.iter().enumerate().take(TILE_ROWS.min(r1 - ra)) {
                    put(t, ra + k, x);
                }
            };
            // SAFETY (the gemm calls): run_zmm is only called at the AVX-512 level.
            for tb in (0..n_tok).step_by(GEMM_TOKENS) {
                let te = (tb + GEMM_TOKENS).min(n_tok);
                for g in 0..groups {
                    let wt = &tile[g * nb..(g + 1) * nb];
                    let mut t = tb;
                    while t + 8 <= te {
                        let ys: [&[dot::packed::ActBlock]; 8] = std::array::from_fn(|j| act(t + j));
                        let v = unsafe {
                            if W::AFFINE {
                                gemm::<8, true>(wt, ys)
                            } else {
                                gemm::<8, false>(wt, ys)
                            }
                        };
                        for (j, vj) in v.iter().enumerate() {
                            write(g, t + j, vj);
                        }
                        t += 8;
                    }
                    for t in t..te {
                        let v = unsafe {
                            if W::AFFINE {
                                gemm::<1, true>(wt, [act(t)])
                            } else {
                                gemm::<1, false>(wt, [act(t)])
                            }
                        };
                        write(g, t, &v[0]);
                    }
                }
            }
        });
    };
    crate::team::for_each(rows.div_ceil(chunk_rows), &body);
}

/// Rows per team task: enough tasks to balance, few enough that scheduling costs nothing
/// next to the dots; whole tiles.
fn chunk_rows(w: &Weight, n_tok: usize) -> usize {
    let rows = w.rows;
    let n_chunks = if rows * n_tok * w.cols < 1 << 16 {
        1
    } else {
        (crate::team::threads() * 4).min(rows.div_ceil(TILE))
    };
    rows.div_ceil(n_chunks)
        .next_multiple_of(TILE.min(rows))
        .max(1)
}

/// The tiled, threaded loop over weight rows × tokens.
fn run<W: Pod + Sync, A: Pod + Sync>(
    w: &Weight,
    acts: &[u8],
    arow: usize,
    n_tok: usize,
    out: &mut [f32],
    f: fn(&[W], &[A]) -> f32,
    f4: Batch<W, A>,
) {
    let rows = w.rows;
    let out_ptr = SharedOut(out.as_mut_ptr());
    let acts: &[A] = bytemuck::cast_slice(acts);
    let per_tok = arow / std::mem::size_of::<A>();
    let chunk_rows = chunk_rows(w, n_tok);
    // The weight's blocks, cast once (a copy only if the bytes were not aligned).
    let wall = quantize::blocks_from_bytes::<W>(w.bytes());
    let per_row = w.row_bytes() / std::mem::size_of::<W>();
    let wrow = |r: usize| &wall[r * per_row..(r + 1) * per_row];
    let body = |c: usize| {
        let out = out_ptr;
        let r0 = c * chunk_rows;
        let r1 = (r0 + chunk_rows).min(rows);
        let mut t0 = r0;
        while t0 < r1 {
            let t1 = (t0 + TILE).min(r1);
            let mut first = 0;
            // The last pass over this tile reads each row for the last time: prefetch the
            // rows PREFETCH_ROWS ahead (into the next tile) while it does.
            let fetch = |r: usize, last_pass: bool| {
                if last_pass && r + PREFETCH_ROWS < r1 {
                    crate::simd::prefetch(bytemuck::cast_slice(wrow(r + PREFETCH_ROWS)));
                }
            };
            if let Some(one) = f4.one {
                let act = |t: usize| &acts[t * per_tok..(t + 1) * per_tok];
                // SAFETY (all writes below): (t, r) belongs to this thread's rows, as below.
                let put = |t: usize, r: usize, v: [f32; 4]| {
                    for (k, &vk) in v.iter().enumerate() {
                        unsafe { *out.0.add((t + k) * rows + r) = vk };
                    }
                };
                while first + 4 <= n_tok {
                    let a = [act(first), act(first + 1), act(first + 2), act(first + 3)];
                    let last_pass = first + 8 > n_tok;
                    let mut r = t0;
                    if let Some(f42) = f4.two {
                        while r + 2 <= t1 {
                            fetch(r, last_pass);
                            fetch(r + 1, last_pass);
                            // SAFETY: the kernels are only given for a level the CPU has.
                            let v = unsafe { f42([wrow(r), wrow(r + 1)], a) };
                            put(first, r, v[0]);
                            put(first, r + 1, v[1]);
                            r += 2;
                        }
                    }
                    for r in r..t1 {
                        fetch(r, last_pass);
                        // SAFETY: as above.
                        put(first, r, unsafe { one(wrow(r), a) });
                    }
                    first += 4;
                }
            }
            for t in first..n_tok {
                let a = &acts[t * per_tok..(t + 1) * per_tok];
                let mut r = t0;
                if let Some(rows4) = f4.rows {
                    while r + 4 <= t1 {
                        (r..r + 4).for_each(|r| fetch(r, t + 1 == n_tok));
                        let w = [wrow(r), wrow(r + 1), wrow(r + 2), wrow(r + 3)];
                        // SAFETY: the kernels are only given for a level the CPU has.
                        let v = unsafe { rows4(w, a) };
                        for (k, &vk) in v.iter().enumerate() {
                            // SAFETY: as below.
                            unsafe { *out.0.add(t * rows + r + k) = vk };
                        }
                        r += 4;
                    }
                }
                for r in r..t1 {
                    fetch(r, t + 1 == n_tok);
                    let v = f(wrow(r), a);
                    // SAFETY: each (t, r) is written by exactly one thread (rows are split
                    // into disjoint chunks) and lies inside `out` (asserted by the caller).
                    unsafe { *out.0.add(t * rows + r) = v };
                }
            }
            t0 = t1;
        }
    };
    crate::team::for_each(rows.div_ceil(chunk_rows), &body);
}

/// A 4-row × 3-token float tile (see `dot::avx2::dot_tile_f32_4x3`); unsafe because it needs
/// the SIMD level's CPU features.
type Tile4x3<W> = unsafe fn([&[W]; 4], [&[f32]; 3], usize) -> [[f32; 3]; 4];

/// True when the register-tiled float kernels apply: a batch of tokens and a SIMD level.
fn tiled(n_tok: usize) -> bool {
    n_tok >= 3 && crate::simd::level().is_simd()
}

/// The 4 × 3 tile `$name` of the SIMD level in use (x86: AVX2's at both levels).
macro_rules! tile_kernel {
    ($name:ident) => {
        match crate::simd::level() {
            #[cfg(target_arch = "x86_64")]
            crate::simd::SimdLevel::Avx512 | crate::simd::SimdLevel::Avx2 => {
                Some(crate::dot::avx2::$name as _)
            }
            #[cfg(target_arch = "aarch64")]
            crate::simd::SimdLevel::I8mm => Some(crate::dot::i8mm::$name as _),
            #[cfg(target_arch = "aarch64")]
            crate::simd::SimdLevel::Dotprod => Some(crate::dot::dotprod::$name as _),
            #[cfg(target_arch = "aarch64")]
            crate::simd::SimdLevel::Neon => Some(crate::dot::neon::$name as _),
            _ => None,
        }
    };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TileKernel {
    F32,
    F16,
}

/// Tokens per AVX-512 f32 tile: 4 × 6 sixteen-lane accumulators, six activation vectors and
/// one weight vector fill 31 of the 32 registers.
#[cfg(target_arch = "x86_64")]
const ZMM_TOKENS: usize = 6;

/// Float weights × a batch of tokens in 4-row × 6-token (AVX-512, f32) or 4-row × 3-token
/// (AVX2) register tiles: each weight and activation vector loaded feeds several FMAs. Rows
/// and tokens left over use the plain dot product. Every entry has the single dot's bits.
fn run_tiled<W: Pod + Sync>(
    w: &Weight,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    kernel: TileKernel,
) {
    let rows = w.rows;
    let cols = w.cols;
    let out_ptr = SharedOut(out.as_mut_ptr());
    let threads = crate::team::threads();
    let n_chunks = (threads * 4).min(rows.div_ceil(TILE)).max(1);
    let chunk_rows = rows.div_ceil(n_chunks).next_multiple_of(4).max(4);
    let n = rows.div_ceil(chunk_rows);
    let xr = |t: usize| &x[t * cols..(t + 1) * cols];
    let tile_f32: Option<Tile4x3<f32>> = tile_kernel!(dot_tile_f32_4x3);
    let tile_f16: Option<Tile4x3<half::f16>> = tile_kernel!(dot_tile_f16_4x3);
    crate::team::for_each(n, &|c| {
        let out = out_ptr;
        let put = |t: usize, r: usize, v: f32| {
            // SAFETY: each (t, r) is written once, by the task owning row r; inside `out`.
            unsafe { *out.0.add(t * rows + r) = v };
        };
        let r0 = c * chunk_rows;
        let r1 = (r0 + chunk_rows).min(rows);
        let wrow = |r: usize| quantize::blocks_from_bytes::<W>(w.row(r));
        // Tokens the sixteen-lane tiles already covered.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut t_zmm = 0;
        #[cfg(target_arch = "x86_64")]
        if kernel == TileKernel::F32 && zmm() {
            // Six tokens' activations stay in L1 while the chunk's weight rows (in L2 after
            // the first group) stream past them four at a time.
            while t_zmm + ZMM_TOKENS <= n_tok {
                let t = t_zmm;
                let xs: [&[f32]; ZMM_TOKENS] = std::array::from_fn(|j| xr(t + j));
                let mut r = r0;
                while r + 4 <= r1 {
                    // (A copy only if the file's rows are not 4-byte aligned.)
                    let rows4 = [wrow(r), wrow(r + 1), wrow(r + 2), wrow(r + 3)];
                    let ws: [&[f32]; 4] = std::array::from_fn(|k| bytemuck::cast_slice(&rows4[k]));
                    // SAFETY: `zmm` checked for the AVX-512 level.
                    let tile = unsafe { crate::dot::zmm::dot_tile_f32(ws, xs, cols) };
                    for (k, row) in tile.iter().enumerate() {
                        for (j, &v) in row.iter().enumerate() {
                            put(t + j, r + k, v);
                        }
                    }
                    r += 4;
                }
                t_zmm += ZMM_TOKENS;
            }
        }
        let mut r = r0;
        while r + 4 <= r1 {
            let ws = [wrow(r), wrow(r + 1), wrow(r + 2), wrow(r + 3)];
            let mut t = t_zmm;
            while t + 3 <= n_tok {
                let xs = [xr(t), xr(t + 1), xr(t + 2)];
                let cast = |k: usize| -> &[f32] { bytemuck::cast_slice(&ws[k]) };
                let cast16 = |k: usize| -> &[half::f16] { bytemuck::cast_slice(&ws[k]) };
                // SAFETY: `tiled` checked for a SIMD level, whose kernels these are.
                let tile = unsafe {
                    match kernel {
                        TileKernel::F32 => tile_f32.expect("a SIMD level")(
                            [cast(0), cast(1), cast(2), cast(3)],
                            xs,
                            cols,
                        ),
                        TileKernel::F16 => tile_f16.expect("a SIMD level")(
                            [cast16(0), cast16(1), cast16(2), cast16(3)],
                            xs,
                            cols,
                        ),
                    }
                };
                for (k, row) in tile.iter().enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        put(t + j, r + k, v);
                    }
                }
                t += 3;
            }
            for tt in t..n_tok {
                for k in 0..4 {
                    put(tt, r + k, float_dot(kernel, &ws[k], xr(tt)));
                }
            }
            r += 4;
        }
        for rr in r..r1 {
            let wr = wrow(rr);
            for t in 0..n_tok {
                put(t, rr, float_dot(kernel, &wr, xr(t)));
            }
        }
    });
}

fn float_dot<W: Pod>(kernel: TileKernel, w: &[W], x: &[f32]) -> f32 {
    match kernel {
        TileKernel::F32 => dot::vec_dot_f32(bytemuck::cast_slice(w), x),
        TileKernel::F16 => dot::vec_dot_f16_f32(bytemuck::cast_slice(w), x),
    }
}

fn matmul_dequantized(w: &Weight, x: &[f32], n_tok: usize, out: &mut [f32]) {
    let rows = w.rows;
    let out_ptr = SharedOut(out.as_mut_ptr());
    (0..rows).into_par_iter().for_each_init(
        || vec![0f32; w.cols],
        |row, r| {
            let out = out_ptr;
            w.row_f32(r, row);
            for t in 0..n_tok {
                let v = dot::vec_dot_f32(row, &x[t * w.cols..(t + 1) * w.cols]);
                // SAFETY: row r is handled by one task; (t, r) is inside `out`.
                unsafe { *out.0.add(t * rows + r) = v };
            }
        },
    );
}
