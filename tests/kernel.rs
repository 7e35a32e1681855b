//! kiln's forward pass on the real model against the float64 reference of
//! `tests/data/smollm2/hamlet-512.json` and llama.cpp's perplexity protocol.
//! Needs the fixture (`scripts/fetch-fixture.sh`); run by `.ci/run`.

use std::path::Path;

use kernels::{forward, ForwardOptions, Logits, MatmulMode, NoObserver, State};
use verify::eval::{perplexity, EvalOptions, Protocol};

mod common;
use common::fixtures;

fn reference() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2/hamlet-512.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Logits at every position of the 512 reference tokens.
fn all_logits(model: &kernels::Model, tokens: &[u32], mode: MatmulMode) -> Vec<f32> {
    let mut st = State::new(&model.config, 512, 512);
    forward(
        model,
        &mut st,
        tokens,
        Logits::All,
        ForwardOptions {
            mode,
            ..Default::default()
        },
        &NoObserver,
    )
    .unwrap();
    st.logits.clone()
}

fn check_against_reference(model: &kernels::Model, what: &str) {
    let r = reference();
    let tokens = ids(&r["token_ids"]);
    let vocab = model.config.vocab;
    let logits = all_logits(model, &tokens, MatmulMode::Quantized);
    // Perplexity over the 511 predictions.
    let mut nll = 0f64;
    let mut top1 = 0;
    for j in 0..511 {
        let row = &logits[j * vocab..(j + 1) * vocab];
        nll += kernels::ops::nll(row, tokens[j + 1] as usize);
        top1 +=
            (kernels::ops::argmax(row) as u64 == r["top10_ids"][j][0].as_u64().unwrap()) as usize;
    }
    let ppl = (nll / 511.0).exp();
    let want = r["perplexity"].as_f64().unwrap();
    eprintln!("{what}: ppl {ppl:.4} (reference {want:.4}), top-1 agreement {top1}/511");
    assert!(
        (ppl - want).abs() <= 0.01,
        "{what}: perplexity {ppl} vs {want}"
    );
    assert!(top1 as f64 >= 0.995 * 511.0, "{what}: top-1 {top1}/511");
    let positions = r["full_logits_positions"].as_array().unwrap();
    let mut worst = 0f64;
    for (k, p) in positions.iter().enumerate() {
        let p = p.as_u64().unwrap() as usize;
        let want = r["full_logits"][k].as_array().unwrap();
        for (i, w) in want.iter().enumerate() {
            worst = worst.max((logits[p * vocab + i] as f64 - w.as_f64().unwrap()).abs());
        }
    }
    eprintln!("{what}: largest logit difference at the reference positions {worst:.2e}");
    assert!(worst <= 2e-3, "{what}: logits differ by {worst}");
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn fp32_from_the_checkpoint_directory_matches_the_float64_reference() {
    let m = verify::load::load_hf(&fixtures().join("smollm2-hf")).unwrap();
    check_against_reference(&m, "HF dir");
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn fp32_from_kilns_gguf_matches_the_float64_reference() {
    let m = verify::load::load_gguf(&fixtures().join("smollm2-f32.gguf")).unwrap();
    check_against_reference(&m, "F32 GGUF");
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn llama_cpp_protocol_on_hamlet() {
    let fx = fixtures();
    let m = verify::load::load_gguf(&fx.join("smollm2-f32.gguf")).unwrap();
    let g = convert::gguf::GgufFile::open(fx.join("smollm2-f32.gguf")).unwrap();
    let tok = convert::tokenizer::Tokenizer::from_gguf(g.path(), &g.metadata).unwrap();
    let text = std::fs::read_to_string(fx.join("texts/hamlet_gut.txt")).unwrap();
    let tokens = tok.encode(&text).unwrap();
    assert_eq!(
        tokens.len(),
        52755,
        "llama.cpp's tokenizer gives 52755 tokens"
    );
    let opts = EvalOptions {
        ctx: 512,
        chunks: Some(8),
        protocol: Protocol::LlamaCpp,
        ..Default::default()
    };
    let p = perplexity(&m, &tokens, &opts).unwrap();
    eprintln!(
        "llama.cpp protocol: ppl {:.4} over {} predictions (llama.cpp: 42.6967)",
        p.ppl, p.n_scored
    );
    assert_eq!(p.n_scored, 8 * 255);
    assert!((p.ppl - 42.70).abs() <= 0.05, "ppl {}", p.ppl);
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn greedy_generation_continues_sensibly() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            fixtures().join("smollm2-f32.gguf").to_str().unwrap(),
            "--prompt",
            "The capital of France is",
            "-n",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_start().starts_with("Paris"), "generated {text:?}");
}

/// KL(p‖q) of two logit rows, in f64.
fn kld(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (kernels::ops::logsumexp(p), kernels::ops::logsumexp(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let pa = (a as f64 - lp).exp();
            pa * ((a as f64 - lp) - (b as f64 - lq))
        })
        .sum()
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn quantized_dots_match_dequantized_weights_on_the_real_model() {
    // Q8_0 weights run two ways: activations quantized to Q8_0 (llama.cpp's way) and weights
    // expanded to f32. What differs is only the activation rounding. Its size on this model is
    // known from llama.cpp itself: its Q8_0 build against F32 — on these weights, which lie on a
    // Q4_1 grid, nearly all of that is activation rounding — has mean KLD 0.0041 and top-1
    // agreement 95.8 % (llama-perplexity-hamlet.json). kiln measures 0.0034 and 95.7 %; the bound
    // leaves room for other texts, not for a broken kernel (which gives KLD ≫ 0.1).
    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("q8.gguf");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "convert",
            fixtures().join("smollm2-hf").to_str().unwrap(),
            "-o",
            q8.to_str().unwrap(),
            "--type",
            "q8_0",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let m = verify::load::load_gguf(&q8).unwrap();
    let tokens = ids(&reference()["token_ids"]);
    let vocab = m.config.vocab;
    let a = all_logits(&m, &tokens, MatmulMode::Quantized);
    let b = all_logits(&m, &tokens, MatmulMode::Dequantized);
    let (mut sum, mut same) = (0f64, 0usize);
    for j in 0..512 {
        let (ra, rb) = (
            &a[j * vocab..(j + 1) * vocab],
            &b[j * vocab..(j + 1) * vocab],
        );
        sum += kld(rb, ra);
        same += (kernels::ops::argmax(ra) == kernels::ops::argmax(rb)) as usize;
    }
    eprintln!(
        "Q8_0 quantized vs dequantized: mean KLD {:.2e}, top-1 agreement {same}/512",
        sum / 512.0
    );
    assert!(sum / 512.0 < 6e-3);
    assert!(same as f64 >= 0.94 * 512.0);
}
