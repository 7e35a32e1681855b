//! Calibration Hessians `H = XᵀX` of every weight matrix's input, for GPTQ
//! (`quantize::gptq`), accumulated from the same forward pass and the same chunks as the
//! importance matrix (whose entries are the diagonals of these matrices, divided by the token
//! count).
//!
//! One matrix per shared input: per layer the input of attn_q/k/v, of attn_output, of
//! ffn_gate/up and of ffn_down. Each chunk's `XᵀX` is computed in f32 with a fixed 8-lane
//! summation order (`quantize::linalg::syrk_fixed`: no FMA, lanes independent of the SIMD
//! level) and added to f64 sums, so the result is the same on every machine and for every
//! thread count.

use std::sync::Mutex;

use kernels::{Logits, MatKind, Model, Observer};

use crate::imatrix::ImatrixError;

/// Which of a layer's four matrix inputs a tensor reads; `None` for tensors without one here
/// (embeddings, norms, the output projection).
pub fn slot_of(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("blk.")?;
    let (l, rest) = rest.split_once('.')?;
    let l: usize = l.parse().ok()?;
    let k = match rest {
        "attn_q.weight" | "attn_k.weight" | "attn_v.weight" | "attn_qkv.weight" => 0,
        "attn_output.weight" => 1,
        "ffn_gate.weight" | "ffn_up.weight" => 2,
        "ffn_down.weight" => 3,
        _ => return None,
    };
    Some((l, k))
}

fn kind_slot(kind: MatKind) -> Option<usize> {
    match kind {
        MatKind::Qkv => Some(0),
        MatKind::AttnOutput => Some(1),
        MatKind::GateUp => Some(2),
        MatKind::Down => Some(3),
        MatKind::Output => None,
    }
}

/// One input's sums: the upper triangle of `XᵀX` (row-major n × n, lower half filled by
/// [`Hessians::matrix`]) and the tokens seen.
struct Sums {
    n: usize,
    h: Vec<f64>,
    tokens: u64,
}

/// The Hessians of a model's matrix inputs; an [`Observer`] of the forward pass.
pub struct Hessians {
    n_layers: usize,
    sums: Vec<Mutex<Sums>>,
}

impl Hessians {
    pub fn new(n_layers: usize) -> Self {
        Hessians {
            n_layers,
            sums: (0..n_layers * 4)
                .map(|_| {
                    Mutex::new(Sums {
                        n: 0,
                        h: Vec::new(),
                        tokens: 0,
                    })
                })
                .collect(),
        }
    }

    /// Layers covered.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// The full symmetric `XᵀX` (n × n) read by tensor `name` and its width, if observed.
    pub fn matrix(&self, name: &str) -> Option<(Vec<f64>, usize)> {
        let (l, k) = slot_of(name)?;
        self.matrix_at(l, k)
    }

    /// The same for input `k` (as [`slot_of`] numbers them) of `layer`.
    pub fn matrix_at(&self, layer: usize, k: usize) -> Option<(Vec<f64>, usize)> {
        let s = self.sums.get(layer * 4 + k)?.lock().unwrap();
        if s.tokens == 0 {
            return None;
        }
        let n = s.n;
        let mut h = s.h.clone();
        for i in 0..n {
            for j in 0..i {
                h[i * n + j] = h[j * n + i];
            }
        }
        Some((h, n))
    }

    /// Tokens behind tensor `name`'s Hessian.
    pub fn tokens(&self, name: &str) -> u64 {
        slot_of(name)
            .and_then(|(l, k)| self.sums.get(l * 4 + k))
            .map_or(0, |s| s.lock().unwrap().tokens)
    }

    /// Adds `x` (`[n_tok, n]`) of input `slot`.
    fn add(&self, slot: usize, x: &[f32], n_tok: usize) {
        let n = x.len() / n_tok.max(1);
        // Columns of X, contiguous.
        let mut xt = vec![0f32; n * n_tok];
        for t in 0..n_tok {
            for i in 0..n {
                xt[i * n_tok + t] = x[t * n + i];
            }
        }
        let mut s = self.sums[slot].lock().unwrap();
        if s.h.is_empty() {
            s.n = n;
            s.h = vec![0.0; n * n];
        }
        quantize::linalg::syrk_fixed(&xt, n_tok, n, &mut s.h);
        s.tokens += n_tok as u64;
    }
}

impl Observer for Hessians {
    fn matmul_input(&self, layer: usize, kind: MatKind, x: &[f32], n_tok: usize) {
        if let Some(k) = kind_slot(kind) {
            if layer < self.n_layers {
                self.add(layer * 4 + k, x, n_tok);
            }
        }
    }
}

/// Runs `model` over the first `chunks` chunks of `ctx` tokens of `tokens` (BOS first when
/// given), exactly as [`crate::calibrate`] chooses them, and returns the Hessians.
pub fn collect(
    model: &Model,
    tokens: &[u32],
    ctx: usize,
    chunks: usize,
    bos: Option<u32>,
    progress: impl FnMut(usize, usize),
) -> Result<Hessians, ImatrixError> {
    let hs = Hessians::new(model.config.n_layers);
    crate::imatrix::run_chunks(
        model,
        tokens,
        ctx,
        Some(chunks),
        bos,
        true,
        Logits::None,
        &hs,
        progress,
    )?;
    Ok(hs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_their_shared_inputs() {
        assert_eq!(slot_of("blk.3.attn_k.weight"), Some((3, 0)));
        assert_eq!(slot_of("blk.0.attn_output.weight"), Some((0, 1)));
        assert_eq!(slot_of("blk.12.ffn_up.weight"), Some((12, 2)));
        assert_eq!(slot_of("blk.1.ffn_down.weight"), Some((1, 3)));
        assert_eq!(slot_of("blk.1.attn_norm.weight"), None);
        assert_eq!(slot_of("token_embd.weight"), None);
        assert_eq!(slot_of("output.weight"), None);
    }

    #[test]
    fn sums_are_xtx_whatever_the_thread_count() {
        let (n, t) = (19, 37);
        let x: Vec<f32> = (0..n * t)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let h = Hessians::new(2);
        h.matmul_input(1, MatKind::Down, &x, t);
        h.matmul_input(1, MatKind::Down, &x[..n * 5], 5);
        h.matmul_input(1, MatKind::Output, &x, t);
        let (m, w) = h.matrix("blk.1.ffn_down.weight").unwrap();
        assert_eq!((w, h.tokens("blk.1.ffn_down.weight")), (n, (t + 5) as u64));
        for i in 0..n {
            for j in 0..n {
                let mut want = 0f64;
                for r in 0..t {
                    want += x[r * n + i] as f64 * x[r * n + j] as f64;
                }
                for r in 0..5 {
                    want += x[r * n + i] as f64 * x[r * n + j] as f64;
                }
                assert!(
                    (m[i * n + j] - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{i},{j}"
                );
                assert_eq!(m[i * n + j], m[j * n + i]);
            }
        }
        assert!(h.matrix("blk.0.ffn_down.weight").is_none());
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let h1 = Hessians::new(2);
        one.install(|| h1.matmul_input(1, MatKind::Down, &x, t));
        one.install(|| h1.matmul_input(1, MatKind::Down, &x[..n * 5], 5));
        assert_eq!(h1.matrix("blk.1.ffn_down.weight").unwrap().0, m);
    }
}
