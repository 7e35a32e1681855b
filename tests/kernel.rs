//! kiln's forward pass on the real model against the float64 reference of
//! `tests/data/smollm2/hamlet-512.json` and llama.cpp's perplexity protocol.
//! Needs the fixture (`scripts/fetch-fixture.sh`); run by `.ci/run`.

use std::path::{Path, PathBuf};

use kernels::{forward, ForwardOptions, Logits, MatmulMode, NoObserver, State};
use verify::eval::{perplexity, EvalOptions, Protocol};

fn fixtures() -> PathBuf {
    let p = std::env::var_os("KILN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".fixtures"));
    assert!(
        p.join("smollm2-f32.gguf").exists(),
        "no fixture at {}: run scripts/fetch-fixture.sh",
        p.display()
    );
    p
}

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
        ForwardOptions { mode, mask: None },
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
