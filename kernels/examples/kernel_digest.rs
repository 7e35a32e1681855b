//! Prints a digest of the bits every kernel path gives on fixed inputs, one line per case, so
//! two machines can be compared with `diff`: the x86 and the aarch64 kiln must print the same
//! lines (scripts/arm64-check.sh runs this under QEMU at each ARM level and on the host).
//!
//! Per case it runs every SIMD level this CPU has, fails (exit 1) if two levels disagree in a
//! single bit, and prints the SIMD digest and the scalar digest. The cases: the dot product of
//! every weight type at several lengths, and a two-layer forward pass per weight type (a
//! 48-token prefill, which takes the batch tiles, then single-token decode steps, which take
//! the single-row kernels), SwiGLU and GeGLU, with a final soft-cap.
//!
//! Usage: `cargo run --release -p kernels --example kernel_digest`

use std::sync::Arc;

use kernels::{
    forward, simd, Activation, Config, ForwardOptions, Layer, Logits, Model, NoObserver, RopeStyle,
    State, Weight,
};
use quantize::GgmlType;

const TYPES: [GgmlType; 15] = [
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

/// Roughly normal values with occasional outliers, from a xorshift generator.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| {
            let g = next() + next() + next() + next() - 2.0;
            if next() < 0.01 {
                g * scale * 30.0
            } else {
                g * scale
            }
        })
        .collect()
}

/// FNV-1a over the values' bits.
fn digest(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf29ce484222325u64, |h, x| {
        x.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    })
}

fn dots(ty: GgmlType) -> Vec<f32> {
    let mut out = Vec::new();
    for (k, n) in [256usize, 512, 1536, 2816].into_iter().enumerate() {
        // Float types also at lengths that leave a remainder after eight and sixteen values.
        let n = if ty.is_quantized() { n } else { n + 8 * k + k };
        let w = values(n, 11 + k as u64, 0.05);
        let (wq, _) = quantize::quantize(ty, &w, n, None).unwrap();
        for t in 0..3 {
            let a = kernels::dot::quantize_activation(ty, &values(n, 100 + t, 1.0));
            out.push(kernels::dot::vec_dot(ty, n, &wq, &a).unwrap());
        }
    }
    out
}

fn model(ty: GgmlType, gelu: bool) -> Model {
    let w = |rows: usize, cols: usize, seed: u64| {
        let (b, _) = quantize::quantize(ty, &values(rows * cols, seed, 0.04), cols, None).unwrap();
        Weight::new("w", ty, rows, cols, Arc::new(b), 0).unwrap()
    };
    let c = Config {
        rope_style: RopeStyle::Neox,
        act: if gelu {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        final_softcap: gelu.then_some(5.0),
        ..Config::llama(256, 512, 2, 4, 2, 64, 256, 64)
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
    Model {
        token_embd: w(256, 256, 9),
        output: None,
        output_norm: vec![1.0; 256],
        layers,
        config: c,
    }
}

/// Logits of a 48-token prefill, then of four decode steps.
fn run(m: &Model) -> Vec<f32> {
    let toks: Vec<u32> = (0..48).map(|i| (i * 13 + 5) % 256).collect();
    let mut st = State::new(&m.config, 64, 48);
    let opts = ForwardOptions::default();
    forward(m, &mut st, &toks, Logits::All, opts, &NoObserver).unwrap();
    let mut out = st.logits.clone();
    for t in [7u32, 200, 31, 99] {
        forward(m, &mut st, &[t], Logits::Last, opts, &NoObserver).unwrap();
        out.extend_from_slice(&st.logits);
    }
    out
}

fn main() {
    let levels = simd::available_levels();
    eprintln!(
        "levels: {}",
        levels
            .iter()
            .map(|l| l.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut failed = false;
    let mut case = |name: String, f: &dyn Fn() -> Vec<f32>| {
        let mut simd_digest = None;
        let mut scalar_digest = 0;
        for &l in &levels {
            simd::set_level(l);
            let d = digest(&f());
            if !l.is_simd() {
                scalar_digest = d;
            } else if let Some((d0, l0)) = simd_digest {
                if d0 != d {
                    eprintln!(
                        "{name}: {} gives {d0:016x}, {} gives {d:016x}",
                        l0,
                        l.name()
                    );
                    failed = true;
                }
            } else {
                simd_digest = Some((d, l.name()));
            }
        }
        match simd_digest {
            Some((d, _)) => println!("{name} simd {d:016x} scalar {scalar_digest:016x}"),
            None => println!("{name} simd - scalar {scalar_digest:016x}"),
        }
    };
    for ty in TYPES {
        case(format!("dot {ty}"), &|| dots(ty));
    }
    for ty in TYPES {
        let m = model(ty, false);
        case(format!("forward {ty} swiglu"), &|| run(&m));
    }
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4K] {
        let m = model(ty, true);
        case(format!("forward {ty} geglu+softcap"), &|| run(&m));
    }
    simd::set_level(simd::available());
    if failed {
        eprintln!("kernel_digest: SIMD levels disagree");
        std::process::exit(1);
    }
}
