//! The forward pass on small random models holding every weight type: SIMD against scalar,
//! quantized dots against dequantize-then-f32, masks, batching, and the errors it reports.
//!
//! Tolerances, and why:
//! * SIMD vs scalar: the integer block sums are identical and only the order of float additions
//!   differs (≤ 1e-5 relative per dot product), so logits agree to 1e-4 of their scale.
//! * quantized vs dequantized matmul: the difference is the Q8 activation rounding (≤ 1/254 of
//!   each block's largest value), which perturbs every matmul by well under 1 %; the logits
//!   must agree to 5 % of their spread and in their top-1 token.

use std::sync::Arc;

use kernels::{
    forward, BlockMask, Config, ForwardOptions, HeadPattern, Layer, Logits, MatmulMode, Model,
    NoObserver, RopeStyle, State, Weight,
};
use quantize::GgmlType;

mod common;
use common::values;

fn weight(name: &str, ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Weight {
    let v = values(rows * cols, seed, 0.08);
    let (bytes, _) = quantize::quantize(ty, &v, cols, None).unwrap();
    Weight::new(name, ty, rows, cols, Arc::new(bytes), 0).unwrap()
}

/// A 2-layer model, dim 256, whose matrices cycle through `types`.
fn model(types: &[GgmlType], rope: RopeStyle, bias: bool) -> Model {
    let c = Config {
        dim: 256,
        ffn_dim: 512,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        vocab: 300,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scale: 1.0,
        rope_style: rope,
        max_ctx: 512,
        ..Config::llama(0, 0, 0, 0, 0, 0, 0, 0)
    };
    let mut k = 0;
    let mut next = || {
        k += 1;
        types[k % types.len()]
    };
    let mut layers = Vec::new();
    for l in 0..c.n_layers {
        let s = 100 * l as u64;
        layers.push(Layer {
            attn_norm: values(256, s + 1, 0.2).iter().map(|v| 1.0 + v).collect(),
            wq: weight("q", next(), 256, 256, s + 2),
            wk: weight("k", next(), 128, 256, s + 3),
            wv: weight("v", next(), 128, 256, s + 4),
            bq: bias.then(|| values(256, s + 5, 0.1)),
            bk: bias.then(|| values(128, s + 6, 0.1)),
            bv: bias.then(|| values(128, s + 7, 0.1)),
            wo: weight("o", next(), 256, 256, s + 8),
            ffn_norm: values(256, s + 9, 0.2).iter().map(|v| 1.0 + v).collect(),
            w_gate: weight("gate", next(), 512, 256, s + 10),
            w_up: weight("up", next(), 512, 256, s + 11),
            w_down: weight("down", next(), 256, 512, s + 12),
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            post_ffn_norm: None,
        });
    }
    let m = Model {
        token_embd: weight("embd", GgmlType::Q8_0, 300, 256, 7),
        output: Some(weight("out", GgmlType::Q6K, 300, 256, 8)),
        output_norm: vec![1.0; 256],
        layers,
        config: c,
    };
    m.validate().unwrap();
    m
}

fn run(
    m: &Model,
    tokens: &[u32],
    mode: MatmulMode,
    mask: Option<&BlockMask>,
    batch: usize,
) -> Vec<f32> {
    let mut st = State::new(&m.config, tokens.len(), batch);
    let mut out = Vec::new();
    for chunk in tokens.chunks(batch) {
        forward(
            m,
            &mut st,
            chunk,
            Logits::All,
            ForwardOptions {
                mode,
                mask,
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
    (0..n as u32).map(|i| (i * 37 + 11) % 300).collect()
}

const ALL: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
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

fn spread(v: &[f32]) -> f32 {
    let max = v.iter().fold(f32::MIN, |a, &b| a.max(b));
    let min = v.iter().fold(f32::MAX, |a, &b| a.min(b));
    max - min
}

#[test]
fn quantized_and_dequantized_matmuls_agree() {
    for rope in [RopeStyle::Adjacent, RopeStyle::Neox] {
        let m = model(&ALL, rope, rope == RopeStyle::Neox);
        let t = tokens(40);
        let a = run(&m, &t, MatmulMode::Quantized, None, 40);
        let b = run(&m, &t, MatmulMode::Dequantized, None, 40);
        let tol = 0.05 * spread(&b);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= tol, "{rope:?}: |Δ| {worst} > {tol}");
    }
}

#[test]
fn batching_does_not_change_the_result_beyond_rounding() {
    let m = model(&ALL, RopeStyle::Adjacent, false);
    // 100 tokens: one batch splits each head's queries into attention tasks (and runs the
    // per-token steps on the team); batches of 5 and single tokens do neither.
    let t = tokens(100);
    let one = run(&m, &t, MatmulMode::Quantized, None, 100);
    let many = run(&m, &t, MatmulMode::Quantized, None, 5);
    let single = run(&m, &t, MatmulMode::Quantized, None, 1);
    assert_eq!(one, many, "chunked prefill must equal one batch exactly");
    assert_eq!(
        one, single,
        "token-by-token decode must equal prefill exactly"
    );
}

#[test]
fn a_full_coverage_mask_gives_exactly_the_dense_logits() {
    let m = model(&ALL, RopeStyle::Neox, false);
    let t = tokens(100);
    let dense = run(&m, &t, MatmulMode::Quantized, None, 100);
    let mask = BlockMask::dense(16, 2, 4);
    assert_eq!(run(&m, &t, MatmulMode::Quantized, Some(&mask), 100), dense);
    // A window wide enough to cover everything is dense too.
    let wide = BlockMask {
        block: 16,
        patterns: vec![
            vec![
                HeadPattern::Sparse {
                    sink: 0,
                    window: 100,
                    vertical: vec![]
                };
                4
            ];
            2
        ],
    };
    assert_eq!(run(&m, &t, MatmulMode::Quantized, Some(&wide), 100), dense);
    // A narrow window changes late positions but not the first block.
    let narrow = BlockMask {
        block: 16,
        patterns: vec![
            vec![
                HeadPattern::Sparse {
                    sink: 1,
                    window: 1,
                    vertical: vec![]
                };
                4
            ];
            2
        ],
    };
    let n = run(&m, &t, MatmulMode::Quantized, Some(&narrow), 100);
    assert_eq!(
        &n[..32 * 300],
        &dense[..32 * 300],
        "blocks 0 and 1 see everything they would anyway"
    );
    assert_ne!(&n[50 * 300..], &dense[50 * 300..]);
}

#[test]
fn a_masked_run_gives_the_same_bits_in_any_batch() {
    // Sinks, a window and a vertical block leave gaps between key ranges; batches of 100, 7
    // (query tiles that would cross block boundaries) and 1 must agree to the bit.
    let m = model(&ALL, RopeStyle::Adjacent, false);
    let t = tokens(100);
    let p = HeadPattern::Sparse {
        sink: 1,
        window: 2,
        vertical: vec![3],
    };
    let mask = BlockMask {
        block: 8,
        patterns: vec![
            vec![
                p,
                HeadPattern::Dense,
                HeadPattern::Dense,
                HeadPattern::Dense
            ];
            2
        ],
    };
    let one = run(&m, &t, MatmulMode::Quantized, Some(&mask), 100);
    assert_eq!(one, run(&m, &t, MatmulMode::Quantized, Some(&mask), 7));
    assert_eq!(one, run(&m, &t, MatmulMode::Quantized, Some(&mask), 1));
    assert_ne!(one, run(&m, &t, MatmulMode::Quantized, None, 100));
}

fn select_mask(threshold: f32, block: usize) -> BlockMask {
    let p = HeadPattern::Select {
        sink: 1,
        window: 1,
        threshold,
    };
    BlockMask {
        block,
        patterns: vec![vec![p.clone(), HeadPattern::Dense, p.clone(), p]; 2],
    }
}

#[test]
fn a_content_aware_run_gives_the_same_bits_in_any_batch() {
    // Blocks chosen per query from the key-block summaries: batches of 100, 7 and 1 (decode)
    // see the same summaries and choose the same blocks.
    let m = model(&ALL, RopeStyle::Neox, false);
    let t = tokens(100);
    let mask = select_mask(0.6, 8);
    let one = run(&m, &t, MatmulMode::Quantized, Some(&mask), 100);
    assert_eq!(one, run(&m, &t, MatmulMode::Quantized, Some(&mask), 7));
    assert_eq!(one, run(&m, &t, MatmulMode::Quantized, Some(&mask), 1));
    let dense = run(&m, &t, MatmulMode::Quantized, None, 100);
    assert_ne!(one, dense, "a threshold of 0.6 leaves blocks out");
    // The first two blocks have nothing to choose from.
    assert_eq!(&one[..16 * 300], &dense[..16 * 300]);
    // Threshold 1 keeps every block: the dense bits.
    let all = select_mask(1.0, 8);
    assert_eq!(run(&m, &t, MatmulMode::Quantized, Some(&all), 100), dense);
    assert_eq!(run(&m, &t, MatmulMode::Quantized, Some(&all), 7), dense);
}

#[test]
fn the_kernel_counts_what_a_mask_skips() {
    let m = model(&ALL, RopeStyle::Neox, false);
    let t = tokens(100);
    let mut st = State::new(&m.config, 100, 100);
    let mask = select_mask(0.5, 8);
    let fo = ForwardOptions {
        mask: Some(&mask),
        ..Default::default()
    };
    forward(&m, &mut st, &t, Logits::Last, fo, &NoObserver).unwrap();
    let d = st.attention_counts.density();
    assert!(d > 0.2 && d < 1.0, "density {d}");
    let mut st = State::new(&m.config, 100, 100);
    forward(
        &m,
        &mut st,
        &t,
        Logits::Last,
        ForwardOptions::default(),
        &NoObserver,
    )
    .unwrap();
    assert_eq!(st.attention_counts.density(), 1.0);
}

#[test]
fn errors_are_reported_not_panics() {
    let m = model(&[GgmlType::F32], RopeStyle::Neox, false);
    let mut st = State::new(&m.config, 8, 4);
    let fo = ForwardOptions::default();
    assert!(forward(&m, &mut st, &[1, 2, 3, 4, 5], Logits::Last, fo, &NoObserver).is_err());
    assert!(forward(&m, &mut st, &[300], Logits::Last, fo, &NoObserver).is_err());
    forward(&m, &mut st, &[1, 2, 3, 4], Logits::Last, fo, &NoObserver).unwrap();
    forward(&m, &mut st, &[1, 2, 3, 4], Logits::Last, fo, &NoObserver).unwrap();
    assert!(
        forward(&m, &mut st, &[1], Logits::Last, fo, &NoObserver).is_err(),
        "context full"
    );
}
