//! Speed of GPTQ's factorisation (Cholesky of the Hessian, then the triangular inverse) and of
//! the Hessian accumulation `XᵀX`: the blocked kernels of `quantize::linalg` against the plain
//! loops they replace, in the same run, with a check that both give the same bits.
//!
//!     cargo run --release -p quantize --example linalg-speed [N ...]
//!
//! Default widths: 576 and 1536 (SmolLM2's inputs), 2048; the plain loops run up to 2048 (at
//! 4096 and 11008, Llama-2-7B's, they take tens of minutes; the blocked kernels run alone).
use std::time::Instant;

use quantize::linalg;

fn spd(n: usize) -> Vec<f64> {
    // A full, positive definite matrix, cheap to make at any width: a random rank-one term
    // v·vᵀ plus n on the diagonal (the factorisation's cost depends on the width only).
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut r = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let v: Vec<f64> = (0..n).map(|_| r()).collect();
    let mut h = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let x = v[i] * v[j] + if i == j { n as f64 } else { 0.0 };
            h[i * n + j] = x;
            h[j * n + i] = x;
        }
    }
    h
}

fn main() {
    let sizes: Vec<usize> = {
        let a: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if a.is_empty() {
            vec![576, 1536, 2048]
        } else {
            a
        }
    };
    println!(
        "level {:?}, {} threads",
        linalg::Level::detect(),
        rayon::current_num_threads()
    );
    println!("| n | plain chol+inv s | blocked s | speed-up | same bits | XᵀX (512 tokens) plain s | blocked s | speed-up |");
    println!("|---:|---:|---:|---:|---|---:|---:|---:|");
    for n in sizes {
        let h = spd(n);
        let t0 = Instant::now();
        let mut b = h.clone();
        assert!(linalg::cholesky_lower(&mut b, n));
        let bi = linalg::invert_lower(&b, n);
        let blocked = t0.elapsed().as_secs_f64();
        let (plain, same) = if n <= 2048 {
            let t0 = Instant::now();
            let mut p = h.clone();
            assert!(linalg::cholesky_lower_reference(&mut p, n));
            let pi = linalg::invert_lower_reference(&p, n);
            let s = t0.elapsed().as_secs_f64();
            let same = p.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits())
                && pi.iter().zip(&bi).all(|(x, y)| x.to_bits() == y.to_bits());
            (Some(s), Some(same))
        } else {
            (None, None)
        };
        // XᵀX of one 512-token chunk.
        let t = 512;
        let xt: Vec<f32> = (0..n * t)
            .map(|i| ((i * 7919) % 1009) as f32 / 500.0 - 1.0)
            .collect();
        // Sums that exist already (as a calibration run's after its first chunk), so the
        // first touch of their pages is not timed.
        let mut hs = vec![1f64; n * n];
        let t0 = Instant::now();
        linalg::syrk_fixed(&xt, t, n, &mut hs);
        let syrk = t0.elapsed().as_secs_f64();
        let syrk_plain = (n <= 2048).then(|| {
            let mut hp = vec![1f64; n * n];
            let t0 = Instant::now();
            use rayon::prelude::*;
            hp.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
                for (j, h) in row.iter_mut().enumerate().skip(i) {
                    *h +=
                        linalg::dot_fixed(&xt[i * t..(i + 1) * t], &xt[j * t..(j + 1) * t]) as f64;
                }
            });
            let s = t0.elapsed().as_secs_f64();
            assert!(hp.iter().zip(&hs).all(|(x, y)| x.to_bits() == y.to_bits()));
            s
        });
        let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
        println!(
            "| {n} | {} | {blocked:.2} | {} | {} | {} | {syrk:.3} | {} |",
            f(plain),
            plain.map_or("—".into(), |p| format!("{:.1}×", p / blocked)),
            same.map_or("—".into(), |s| if s {
                "yes".into()
            } else {
                "NO".to_string()
            }),
            syrk_plain.map_or("—".into(), |v| format!("{v:.3}")),
            syrk_plain.map_or("—".into(), |p| format!("{:.1}×", p / syrk)),
        );
        if same == Some(false) {
            std::process::exit(1);
        }
    }
}
