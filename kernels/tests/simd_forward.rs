//! SIMD against scalar through the whole forward pass. Its own test binary, because it flips
//! the process-wide scalar switch.

use std::sync::Arc;

use kernels::{
    forward, simd, Config, ForwardOptions, Layer, Logits, Model, NoObserver, RopeStyle, State,
    Weight,
};
use quantize::GgmlType;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.16
        })
        .collect()
}

#[test]
fn simd_and_scalar_forward_agree_on_every_weight_type() {
    if simd::available() == simd::SimdLevel::Scalar {
        eprintln!("no SIMD level on this CPU: nothing to compare");
        return;
    }
    let types = [
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
    for ty in types {
        let w = |rows: usize, cols: usize, seed: u64| {
            let (b, _) = quantize::quantize(ty, &values(rows * cols, seed), cols, None).unwrap();
            Weight::new("w", ty, rows, cols, Arc::new(b), 0).unwrap()
        };
        let c = Config {
            dim: 256,
            ffn_dim: 512,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            vocab: 256,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scale: 1.0,
            rope_style: RopeStyle::Adjacent,
            max_ctx: 64,
            ..Config::llama(0, 0, 0, 0, 0, 0, 0, 0)
        };
        let layers = (0..2)
            .map(|l| Layer {
                attn_norm: vec![1.0; 256],
                wq: w(256, 256, l + 1),
                wk: w(128, 256, l + 2),
                wv: w(128, 256, l + 3),
                bq: None,
                bk: None,
                bv: None,
                wo: w(256, 256, l + 4),
                ffn_norm: vec![1.0; 256],
                w_gate: w(512, 256, l + 5),
                w_up: w(512, 256, l + 6),
                w_down: w(256, 512, l + 7),
                q_norm: None,
                k_norm: None,
                post_attn_norm: None,
                post_ffn_norm: None,
            })
            .collect();
        let m = Model {
            token_embd: w(256, 256, 9),
            output: None,
            output_norm: vec![1.0; 256],
            layers,
            config: c,
        };
        let toks: Vec<u32> = (0..48).map(|i| (i * 13 + 5) % 256).collect();
        let logits = |scalar: bool| {
            let level = simd::level();
            if scalar {
                simd::force_scalar(true);
            }
            let mut st = State::new(&m.config, 64, 48);
            forward(
                &m,
                &mut st,
                &toks,
                Logits::All,
                ForwardOptions::default(),
                &NoObserver,
            )
            .unwrap();
            simd::set_level(level);
            st.logits.clone()
        };
        let (a, b) = (logits(false), logits(true));
        // Every SIMD level of this CPU computes the same integers and floats in the same
        // order (x86: AVX2, AVX-512; aarch64: NEON, dotprod, i8mm).
        for &l in simd::available_levels().iter().filter(|l| l.is_simd()) {
            simd::set_level(l);
            let al = logits(false);
            let same = a.iter().zip(&al).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{ty}: {} and {} logits differ",
                simd::available().name(),
                l.name()
            );
        }
        simd::set_level(simd::available());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        eprintln!("{ty}: max |Δlogit| {worst:.2e} of scale {scale:.2}");
        // Float weights: only the order of additions differs. Quantized weights: a last-bit
        // difference can flip the rounding of one Q8 activation in a later layer, a change of
        // one quantization step (≤ 1/127 of a block's largest value) that later layers carry on;
        // measured up to 1.9 % of the logit scale (q6_K), so allow 3 %.
        let tol = if ty.is_quantized() { 3e-2 } else { 1e-4 } * scale.max(1.0);
        assert!(
            worst <= tol,
            "{ty}: SIMD and scalar differ by {worst} (tolerance {tol})"
        );
    }
}
