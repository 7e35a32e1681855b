//! The forward pass's architecture switches (GeGLU, Q/K norms, post-norms, embedding scale,
//! attention scale, per-layer RoPE bases, sliding-window layers with ring caches, logit
//! soft-capping) against an independent float64 reference written here from Gemma 3's
//! definition (transformers' `modeling_gemma3.py`), and the same bits in any batch.
//!
//! Tolerance: F32 weights, so the only differences are f32 rounding (≤ 1e-6 relative per
//! operation): logits within 1e-4 of their spread.

use kernels::{
    forward, Activation, Config, ForwardOptions, Layer, Logits, MatmulMode, Model, NoObserver,
    RopeStyle, SlidingWindow, State, Weight,
};

mod common;
use common::values;

const DIM: usize = 64;
const FFN: usize = 96;
const HEADS: usize = 4;
const KV: usize = 2;
const HD: usize = 32;
const VOCAB: usize = 50;
const LAYERS: usize = 3;
const WINDOW: usize = 5;

struct Tensors {
    embd: Vec<f32>,
    layers: Vec<[Vec<f32>; 13]>, // attn_norm q k v q_norm k_norm o post_attn ffn_norm gate up down post_ffn
    out_norm: Vec<f32>,
}

fn tensors() -> Tensors {
    let norm = |n, s| {
        values(n, s, 0.5)
            .iter()
            .map(|v| 1.0 + v)
            .collect::<Vec<f32>>()
    };
    let layers = (0..LAYERS as u64)
        .map(|l| {
            let s = 100 * (l + 1);
            [
                norm(DIM, s),
                values(HEADS * HD * DIM, s + 1, 0.15),
                values(KV * HD * DIM, s + 2, 0.15),
                values(KV * HD * DIM, s + 3, 0.15),
                norm(HD, s + 4),
                norm(HD, s + 5),
                values(DIM * HEADS * HD, s + 6, 0.15),
                norm(DIM, s + 7),
                norm(DIM, s + 8),
                values(FFN * DIM, s + 9, 0.15),
                values(FFN * DIM, s + 10, 0.15),
                values(DIM * FFN, s + 11, 0.15),
                norm(DIM, s + 12),
            ]
        })
        .collect();
    Tensors {
        embd: values(VOCAB * DIM, 7, 0.3),
        layers,
        out_norm: norm(DIM, 9),
    }
}

/// Layer 1 is global (Gemma's pattern, shrunk); the others are windowed.
fn swa_layers() -> Vec<bool> {
    vec![true, false, true]
}

fn config() -> Config {
    Config {
        rms_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_scale: 2.0,
        rope_style: RopeStyle::Neox,
        act: Activation::GeluTanh,
        embed_scale: (DIM as f32).sqrt(),
        attn_scale: Some(0.125),
        final_softcap: Some(3.0),
        swa: Some(SlidingWindow {
            window: WINDOW,
            layers: swa_layers(),
            rope_theta: 10_000.0,
            rope_scale: 1.0,
        }),
        ..Config::llama(DIM, FFN, LAYERS, HEADS, KV, HD, VOCAB, 128)
    }
}

fn model(t: &Tensors) -> Model {
    let w = |rows, cols, v: &Vec<f32>| Weight::from_f32("w", rows, cols, v.clone()).unwrap();
    let layers = t
        .layers
        .iter()
        .map(|x| Layer {
            attn_norm: x[0].clone(),
            wq: w(HEADS * HD, DIM, &x[1]),
            wk: w(KV * HD, DIM, &x[2]),
            wv: w(KV * HD, DIM, &x[3]),
            bq: None,
            bk: None,
            bv: None,
            q_norm: Some(x[4].clone()),
            k_norm: Some(x[5].clone()),
            wo: w(DIM, HEADS * HD, &x[6]),
            post_attn_norm: Some(x[7].clone()),
            ffn_norm: x[8].clone(),
            w_gate: w(FFN, DIM, &x[9]),
            w_up: w(FFN, DIM, &x[10]),
            w_down: w(DIM, FFN, &x[11]),
            post_ffn_norm: Some(x[12].clone()),
        })
        .collect();
    let m = Model {
        config: config(),
        token_embd: w(VOCAB, DIM, &t.embd),
        layers,
        output_norm: t.out_norm.clone(),
        output: None,
    };
    m.validate().unwrap();
    m
}

/// Gemma 3's forward in f64, position by position, from its definition.
fn reference(t: &Tensors, tokens: &[u32]) -> Vec<f64> {
    let n = tokens.len();
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let rms = |x: &[f64], w: &[f32]| {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + 1e-6f32 as f64).sqrt();
        x.iter()
            .zip(w)
            .map(|(v, &g)| v * s * g as f64)
            .collect::<Vec<f64>>()
    };
    let matvec = |w: &[f32], rows: usize, x: &[f64]| {
        (0..rows)
            .map(|r| {
                w[r * x.len()..(r + 1) * x.len()]
                    .iter()
                    .zip(x)
                    .map(|(&a, b)| a as f64 * b)
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>()
    };
    let rope = |v: &mut [f64], p: usize, theta: f64, scale: f64| {
        let half = HD / 2;
        for i in 0..half {
            let a = p as f64 / scale * theta.powf(-2.0 * i as f64 / HD as f64);
            let (x, y) = (v[i], v[i + half]);
            v[i] = x * a.cos() - y * a.sin();
            v[i + half] = y * a.cos() + x * a.sin();
        }
    };
    let gelu = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    };
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&tk| {
            f(&t.embd[tk as usize * DIM..(tk as usize + 1) * DIM])
                .iter()
                .map(|v| v * (DIM as f32).sqrt() as f64)
                .collect()
        })
        .collect();
    for (l, w) in t.layers.iter().enumerate() {
        let windowed = swa_layers()[l];
        let (theta, scale) = if windowed {
            (10_000.0, 1.0)
        } else {
            (1_000_000.0, 2.0)
        };
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let h = rms(x, &w[0]);
            let mut q = matvec(&w[1], HEADS * HD, &h);
            let mut k = matvec(&w[2], KV * HD, &h);
            let v = matvec(&w[3], KV * HD, &h);
            for hq in q.chunks_mut(HD) {
                let nq = rms(hq, &w[4]);
                hq.copy_from_slice(&nq);
                rope(hq, p, theta, scale);
            }
            for hk in k.chunks_mut(HD) {
                let nk = rms(hk, &w[5]);
                hk.copy_from_slice(&nk);
                rope(hk, p, theta, scale);
            }
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let mut next = Vec::with_capacity(n);
        for p in 0..n {
            let lo = if windowed {
                (p + 1).saturating_sub(WINDOW)
            } else {
                0
            };
            let mut att = vec![0f64; HEADS * HD];
            for h in 0..HEADS {
                let g = h / (HEADS / KV);
                let q = &qs[p][h * HD..(h + 1) * HD];
                let s: Vec<f64> = (lo..=p)
                    .map(|j| {
                        q.iter()
                            .zip(&ks[j][g * HD..(g + 1) * HD])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            * 0.125
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in (lo..=p).zip(&e) {
                    for d in 0..HD {
                        att[h * HD + d] += ej / z * vs[j][g * HD + d];
                    }
                }
            }
            let a = rms(&matvec(&w[6], DIM, &att), &w[7]);
            let x1: Vec<f64> = xs[p].iter().zip(&a).map(|(x, y)| x + y).collect();
            let h = rms(&x1, &w[8]);
            let gate = matvec(&w[9], FFN, &h);
            let up = matvec(&w[10], FFN, &h);
            let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| gelu(*g) * u).collect();
            let d = rms(&matvec(&w[11], DIM, &act), &w[12]);
            next.push(x1.iter().zip(&d).map(|(x, y)| x + y).collect::<Vec<f64>>());
        }
        xs = next;
    }
    let mut out = Vec::with_capacity(n * VOCAB);
    for x in &xs {
        let h = rms(x, &t.out_norm);
        for v in matvec(&t.embd, VOCAB, &h) {
            out.push((v / 3.0).tanh() * 3.0);
        }
    }
    out
}

fn run(m: &Model, tokens: &[u32], batch: usize) -> Vec<f32> {
    let mut st = State::new(&m.config, 128, batch);
    let mut out = Vec::new();
    for chunk in tokens.chunks(batch) {
        forward(
            m,
            &mut st,
            chunk,
            Logits::All,
            ForwardOptions {
                mode: MatmulMode::Quantized,
                ..Default::default()
            },
            &NoObserver,
        )
        .unwrap();
        out.extend_from_slice(&st.logits);
    }
    out
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 17 + 3) % VOCAB as u32).collect()
}

#[test]
fn gemma_switches_match_an_independent_float64_forward() {
    let t = tensors();
    let m = model(&t);
    let toks = tokens(40);
    let got = run(&m, &toks, 40);
    let want = reference(&t, &toks);
    let spread = want.iter().cloned().fold(f64::MIN, f64::max)
        - want.iter().cloned().fold(f64::MAX, f64::min);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0f64, f64::max);
    eprintln!("largest |Δ| {worst:.2e} of a spread {spread:.2}");
    assert!(worst <= 1e-4 * spread, "logits differ by {worst}");
    // The window matters: with a window wider than the sequence (same RoPE bases), the
    // first WINDOW positions are unchanged and the later ones differ.
    let mut wide = model(&t);
    wide.config.swa.as_mut().unwrap().window = 1000;
    let g = run(&wide, &toks, 40);
    assert_eq!(&g[..WINDOW * VOCAB], &got[..WINDOW * VOCAB]);
    assert_ne!(&g[WINDOW * VOCAB..], &got[WINDOW * VOCAB..]);
}

#[test]
fn windowed_layers_keep_a_ring_cache_and_give_the_same_bits_in_any_batch() {
    let t = tensors();
    let m = model(&t);
    let toks = tokens(120);
    // Batches of 1 and 7 hold windowed layers in 16-slot rings (window − 1 + batch, rounded
    // to the lanes), a batch of 100 in 112 slots, all under the 128-position context; the
    // global layer keeps all 128.
    let st = State::new(&m.config, 128, 7);
    assert_eq!(st.cache_floats(), 2 * KV * HD * (16 + 128 + 16));
    let one = run(&m, &toks, 100);
    assert_eq!(
        one,
        run(&m, &toks, 7),
        "batches of 7 must equal batches of 100"
    );
    assert_eq!(one, run(&m, &toks, 1), "decode must equal prefill");
}

#[test]
fn gemma_270m_at_its_full_context_holds_local_layers_in_window_rings() {
    // 18 layers, 1 KV head of 256, 5 local : 1 global, window 512, 32,768 positions, batches
    // of 512: each local layer needs 511 + 512 slots (1,024 rounded), a global one all 32,768.
    let mut layers = vec![true; 18];
    for l in [5, 11, 17] {
        layers[l] = false;
    }
    let c = Config {
        swa: Some(SlidingWindow {
            window: 512,
            layers,
            rope_theta: 10_000.0,
            rope_scale: 1.0,
        }),
        ..Config::llama(640, 2048, 18, 4, 1, 256, 262_144, 32_768)
    };
    let st = State::new(&c, 32_768, 512);
    assert_eq!(st.cache_floats(), 2 * 256 * (3 * 32_768 + 15 * 1_024));
    let dense = State::new(&Config { swa: None, ..c }, 32_768, 512);
    assert_eq!(dense.cache_floats(), 2 * 256 * 18 * 32_768);
}
