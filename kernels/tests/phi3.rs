//! Phi-3's switches of the forward pass — q/k/v and gate/up run as row views of fused
//! matrices, RoPE over part of each head (Phi-4-mini's `partial_rotary_factor`), LongRoPE's
//! short and long frequency divisors and its cos/sin factor — against an independent float64
//! forward written here from transformers' `modeling_phi3.py` / `_compute_longrope_parameters`.
//!
//! F32 weights, so the only differences are f32 rounding: logits within 1e-4 of their spread.

use kernels::{
    forward, Config, ForwardOptions, Layer, Logits, LongRope, MatmulMode, Model, NoObserver,
    RopeStyle, State, Weight,
};

mod common;
use common::values;

const DIM: usize = 64;
const FFN: usize = 96;
const HEADS: usize = 2;
const KV: usize = 1;
const HD: usize = 32;
/// Rotated dimensions of each head (0.75 of it, as Phi-4-mini).
const ROT: usize = 24;
const VOCAB: usize = 50;
const LAYERS: usize = 2;
/// LongRoPE's pre-training context.
const ORIG: usize = 16;
const THETA: f32 = 10000.0;
const MSCALE: f32 = 1.19;

struct Tensors {
    embd: Vec<f32>,
    /// attn_norm, qkv (q rows, k rows, v rows), o, ffn_norm, gate_up (gate rows, up rows), down.
    layers: Vec<[Vec<f32>; 6]>,
    out_norm: Vec<f32>,
    short: Vec<f32>,
    long: Vec<f32>,
}

fn tensors() -> Tensors {
    let mut k = 0u64;
    let mut v = |n: usize, scale: f32| {
        k += 1;
        values(n, k, scale)
    };
    let norm = |v: Vec<f32>| v.into_iter().map(|x| 1.0 + x).collect::<Vec<f32>>();
    let qkv = (HEADS + 2 * KV) * HD;
    Tensors {
        embd: v(VOCAB * DIM, 1.0),
        layers: (0..LAYERS)
            .map(|_| {
                [
                    norm(v(DIM, 0.3)),
                    v(qkv * DIM, 0.25),
                    v(DIM * HEADS * HD, 0.2),
                    norm(v(DIM, 0.3)),
                    v(2 * FFN * DIM, 0.2),
                    v(DIM * FFN, 0.15),
                ]
            })
            .collect(),
        out_norm: norm(v(DIM, 0.3)),
        short: (0..ROT / 2).map(|i| 1.0 + 0.05 * i as f32).collect(),
        long: (0..ROT / 2).map(|i| 1.0 + 3.0 * i as f32).collect(),
    }
}

fn config() -> Config {
    Config {
        rms_eps: 1e-5,
        rope_theta: THETA,
        rope_style: RopeStyle::Neox,
        rope_dims: ROT,
        rope_mscale: MSCALE,
        rope_freq_factors: Some(tensors().short),
        rope_long: Some(LongRope {
            factors: tensors().long,
            original_ctx: ORIG,
        }),
        fused_qkv: true,
        fused_gate_up: true,
        ..Config::llama(DIM, FFN, LAYERS, HEADS, KV, HD, VOCAB, 64)
    }
}

/// The model with q/k/v and gate/up as views of the fused matrices, as the loader builds it.
fn model(t: &Tensors) -> Model {
    let w = |rows, cols, v: &Vec<f32>| Weight::from_f32("w", rows, cols, v.clone()).unwrap();
    let c = config();
    let layers = t
        .layers
        .iter()
        .map(|x| {
            let placeholder = w(1, DIM, &vec![0.0; DIM]);
            let mut l = Layer {
                attn_norm: x[0].clone(),
                wq: placeholder.clone(),
                wk: placeholder.clone(),
                wv: placeholder.clone(),
                bq: None,
                bk: None,
                bv: None,
                q_norm: None,
                k_norm: None,
                wo: w(DIM, HEADS * HD, &x[2]),
                post_attn_norm: None,
                ffn_norm: x[3].clone(),
                w_gate: placeholder.clone(),
                w_up: placeholder,
                w_down: w(DIM, FFN, &x[5]),
                post_ffn_norm: None,
            };
            assert!(l.set_matrix(&c, "attn_qkv", w((HEADS + 2 * KV) * HD, DIM, &x[1])));
            assert!(l.set_matrix(&c, "ffn_up", w(2 * FFN, DIM, &x[4])));
            l
        })
        .collect();
    let m = Model {
        config: c,
        token_embd: w(VOCAB, DIM, &t.embd),
        layers,
        output_norm: t.out_norm.clone(),
        output: None,
    };
    m.validate().unwrap();
    m
}

/// Phi-3's forward in f64 over one sequence of `tokens` from position 0 (transformers picks
/// the factors by that sequence's length).
fn reference(t: &Tensors, tokens: &[u32]) -> Vec<f64> {
    let n = tokens.len();
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let rms = |x: &[f64], w: &[f32]| {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let r = 1.0 / (ms + 1e-5).sqrt();
        x.iter()
            .zip(w)
            .map(|(v, &g)| v * r * g as f64)
            .collect::<Vec<f64>>()
    };
    let matvec = |w: &[f32], rows: usize, x: &[f64]| {
        (0..rows)
            .map(|r| {
                let row = &w[r * x.len()..(r + 1) * x.len()];
                row.iter().zip(x).map(|(&a, b)| a as f64 * b).sum::<f64>()
            })
            .collect::<Vec<f64>>()
    };
    // _compute_longrope_parameters: inv_freq = 1 / (ext · base^(2i/dim)), dim the rotated part.
    let ext = if n > ORIG { &t.long } else { &t.short };
    let inv: Vec<f64> = (0..ROT / 2)
        .map(|i| 1.0 / (ext[i] as f64 * (THETA as f64).powf(2.0 * i as f64 / ROT as f64)))
        .collect();
    // apply_rotary_pos_emb on the first ROT dimensions, rotate_half within them.
    let rope = |h: &mut [f64], p: usize| {
        let half = ROT / 2;
        for i in 0..half {
            let a = p as f64 * inv[i];
            let (c, s) = (a.cos() * MSCALE as f64, a.sin() * MSCALE as f64);
            let (x, y) = (h[i], h[i + half]);
            h[i] = x * c - y * s;
            h[i + half] = y * c + x * s;
        }
    };
    let mut x: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t_| f(&t.embd[t_ as usize * DIM..(t_ as usize + 1) * DIM]))
        .collect();
    for l in &t.layers {
        let (q_dim, kv_dim) = (HEADS * HD, KV * HD);
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (p, xp) in x.iter().enumerate() {
            let qkv = matvec(&l[1], q_dim + 2 * kv_dim, &rms(xp, &l[0]));
            let (mut q, rest) = (qkv[..q_dim].to_vec(), &qkv[q_dim..]);
            let (mut k, v) = (rest[..kv_dim].to_vec(), rest[kv_dim..].to_vec());
            q.chunks_mut(HD).for_each(|h| rope(h, p));
            k.chunks_mut(HD).for_each(|h| rope(h, p));
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        for p in 0..n {
            let mut att = vec![0f64; q_dim];
            for h in 0..HEADS {
                let g = h / (HEADS / KV);
                let q = &qs[p][h * HD..(h + 1) * HD];
                let sc: Vec<f64> = (0..=p)
                    .map(|j| {
                        let k = &ks[j][g * HD..(g + 1) * HD];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (HD as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, w) in e.iter().enumerate() {
                    for d in 0..HD {
                        att[h * HD + d] += w / z * vs[j][g * HD + d];
                    }
                }
            }
            let o = matvec(&l[2], DIM, &att);
            x[p].iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            // Phi3MLP: gate, up = gate_up_proj(x).chunk(2); up · silu(gate).
            let gu = matvec(&l[4], 2 * FFN, &rms(&x[p], &l[3]));
            let h: Vec<f64> = (0..FFN)
                .map(|i| {
                    let g = gu[i];
                    g / (1.0 + (-g).exp()) * gu[FFN + i]
                })
                .collect();
            let d = matvec(&l[5], DIM, &h);
            x[p].iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
    }
    x.iter()
        .flat_map(|xp| matvec(&t.embd, VOCAB, &rms(xp, &t.out_norm)))
        .collect()
}

/// kiln's logits for `tokens` in a state of `ctx` positions (which picks the factors).
fn run(m: &Model, tokens: &[u32], ctx: usize) -> Vec<f32> {
    let mut st = State::new(&m.config, ctx, ctx);
    forward(
        m,
        &mut st,
        tokens,
        Logits::All,
        ForwardOptions {
            mode: MatmulMode::Quantized,
            ..Default::default()
        },
        &NoObserver,
    )
    .unwrap();
    st.logits.clone()
}

fn worst(got: &[f32], want: &[f64]) -> (f64, f64) {
    let spread = want.iter().cloned().fold(f64::MIN, f64::max)
        - want.iter().cloned().fold(f64::MAX, f64::min);
    let w = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0f64, f64::max);
    (w, spread)
}

#[test]
fn fused_partial_rotary_longrope_match_an_independent_float64_forward() {
    let t = tensors();
    let m = model(&t);
    let toks: Vec<u32> = (0..40u32).map(|i| (i * 17 + 3) % VOCAB as u32).collect();
    // Within the pre-training context: the short factors; beyond it: the long ones.
    for n in [ORIG, 40] {
        let got = run(&m, &toks[..n], n);
        let want = reference(&t, &toks[..n]);
        let (w, spread) = worst(&got, &want);
        eprintln!("{n} tokens: largest |Δ| {w:.2e} of a spread {spread:.2}");
        assert!(w <= 1e-4 * spread, "{n} tokens: logits differ by {w}");
    }
    // The switches matter: the other set of factors, or the whole head rotated, or no cos/sin
    // factor, is a different function.
    let want = reference(&t, &toks);
    for (what, edit) in [
        (
            "short factors",
            Box::new(|c: &mut Config| c.rope_long = None) as Box<dyn Fn(&mut Config)>,
        ),
        (
            "whole-head RoPE",
            Box::new(|c: &mut Config| c.rope_dims = 0),
        ),
        (
            "no attention factor",
            Box::new(|c: &mut Config| c.rope_mscale = 1.0),
        ),
    ] {
        let mut m2 = m.clone();
        edit(&mut m2.config);
        if m2.config.rope_dims == 0 {
            // Whole heads need factors for every pair.
            let pairs = HD / 2;
            let grow = |v: &[f32]| (0..pairs).map(|i| v[i % v.len()]).collect::<Vec<f32>>();
            m2.config.rope_freq_factors = Some(grow(&t.short));
            m2.config.rope_long.as_mut().unwrap().factors = grow(&t.long);
        }
        let (w, spread) = worst(&run(&m2, &toks, 40), &want);
        assert!(w > 1e-2 * spread, "{what}: no effect ({w:.2e})");
    }
}

#[test]
fn fused_matrices_are_views_of_one_storage_and_round_trip() {
    let t = tensors();
    let m = model(&t);
    let c = &m.config;
    let l = &m.layers[0];
    let qkv = l.matrix(c, "attn_qkv").unwrap();
    assert_eq!((qkv.rows, qkv.cols), ((HEADS + 2 * KV) * HD, DIM));
    assert_eq!(qkv.to_f32(), t.layers[0][1]);
    assert_eq!(l.matrix(c, "ffn_up").unwrap().to_f32(), t.layers[0][4]);
    // The parts read the fused rows in order: q, k, v; gate, up.
    assert_eq!(
        l.wk.to_f32(),
        t.layers[0][1][HEADS * HD * DIM..(HEADS + KV) * HD * DIM]
    );
    assert_eq!(l.w_up.to_f32(), t.layers[0][4][FFN * DIM..]);
    // Unfused names are not the model's; a fused matrix of the wrong height does not fit.
    assert!(l.matrix(c, "attn_q").is_none() && l.matrix(c, "ffn_gate").is_none());
    let mut l2 = l.clone();
    let short = Weight::from_f32("w", 3, DIM, vec![0.0; 3 * DIM]).unwrap();
    assert!(!l2.set_matrix(c, "attn_qkv", short));
    assert_eq!(
        c.block_matrices(),
        ["attn_qkv", "attn_output", "ffn_up", "ffn_down"]
    );
    // More rotated dimensions than a head has is refused, not clamped.
    let mut wide = m.clone();
    wide.config.rope_dims = HD + 2;
    assert!(wide.validate().is_err());
    // Stacking parts that are not adjacent copies them.
    let apart = Weight::stack(&[&l.wv, &l.wq]).unwrap();
    assert_eq!(apart.rows, (HEADS + KV) * HD);
    assert_eq!(apart.to_f32()[..KV * HD * DIM], l.wv.to_f32()[..]);
}
