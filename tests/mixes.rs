//! llama.cpp's reference mixes (`tests/data/smollm2/llama-quantize-reference.json`: 8 file types,
//! without and with `imatrix-macbeth.gguf`), made by kiln from the fixture's FP32 checkpoint:
//! the same tensor types and byte-identical tensor data, from the checkpoint directory and from
//! kiln's F32 GGUF, with 1 and 2 threads; the low-bit tier's six file types on the fixture and on
//! a generated 256-wide checkpoint. Also kiln's own imatrix against llama-imatrix's.
//! Needs the fixture (`scripts/fetch-fixture.sh`); run by `.ci/run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use convert::gguf::GgufFile;
use sha2::{Digest, Sha256};

mod common;
use common::{data_path as data, fixtures, kiln_ok};

fn kiln(args: &[&str]) {
    kiln_ok(args);
}

/// name → (type, sha256 of the data)
fn tensors_of(path: &Path) -> BTreeMap<String, (String, String)> {
    let g = GgufFile::open(path).unwrap();
    g.tensors
        .iter()
        .map(|t| {
            let h: String = Sha256::digest(g.tensor_data(t))
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (t.name.clone(), (t.ty.name().to_uppercase(), h))
        })
        .collect()
}

fn reference() -> serde_json::Value {
    reference_in("llama-quantize-reference.json")
}

fn reference_in(file: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(data(file)).unwrap()).unwrap()
}

/// `kiln quantize SRC -o OUT` for mix `TYPE-SUFFIX`, with the imatrix `im.1` when the suffix
/// is `im.0`.
fn quantize_mix(src: &Path, mix: &str, im: (&str, &Path), out: &Path) {
    let (ty, suffix) = mix.split_once('-').unwrap();
    let (src, out) = (src.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["quantize", src, "-o", out, "--type", ty];
    if suffix == im.0 {
        args.extend(["--imatrix", im.1.to_str().unwrap()]);
    }
    kiln(&args);
}

fn check(mix: &str, got: &BTreeMap<String, (String, String)>, what: &str) {
    check_in(&reference(), mix, got, what)
}

fn check_in(
    r: &serde_json::Value,
    mix: &str,
    got: &BTreeMap<String, (String, String)>,
    what: &str,
) {
    let want = r["mixes"][mix]["tensors"]
        .as_object()
        .unwrap_or_else(|| panic!("no mix {mix}"));
    assert_eq!(got.len(), want.len(), "{mix} ({what}): tensor count");
    let mut bad = Vec::new();
    for (name, w) in want {
        let (ty, h) = got
            .get(name)
            .unwrap_or_else(|| panic!("{mix} ({what}): no {name}"));
        if ty != w["type"].as_str().unwrap() || h != w["sha256"].as_str().unwrap() {
            bad.push(format!("{name}: {ty} vs {}", w["type"]));
        }
    }
    assert!(
        bad.is_empty(),
        "{mix} ({what}): {} tensors differ from llama-quantize's: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn all_reference_mixes_are_byte_identical() {
    let fx = fixtures();
    let hf = fx.join("smollm2-hf");
    let f32 = fx.join("smollm2-f32.gguf");
    let imatrix = data("imatrix-macbeth.gguf");
    let tmp = tempfile::tempdir().unwrap();
    let r = reference();
    let mixes: Vec<String> = r["mixes"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(mixes.len(), 16);
    for mix in &mixes {
        let (ty, im) = mix.split_once('-').unwrap();
        let out = tmp.path().join(format!("{mix}.gguf"));
        let mut runs: Vec<(&Path, &str)> = vec![(&hf, "2"), (&f32, "1")];
        if mix == "Q4_K_M-macbeth" {
            runs.extend([(hf.as_path(), "1"), (f32.as_path(), "2")]);
        }
        for (src, threads) in runs {
            let mut args = vec![
                "--threads",
                threads,
                "quantize",
                src.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--type",
                ty,
            ];
            if im == "macbeth" {
                args.extend(["--imatrix", imatrix.to_str().unwrap()]);
            }
            kiln(&args);
            check(
                mix,
                &tensors_of(&out),
                &format!("from {}, {threads} threads", src.display()),
            );
            if im == "macbeth" {
                let g = GgufFile::open(&out).unwrap();
                assert_eq!(g.metadata.u64("quantize.imatrix.entries_count"), Some(210));
                assert_eq!(g.metadata.u64("quantize.imatrix.chunks_count"), Some(16));
                assert_eq!(
                    g.metadata.str("quantize.imatrix.dataset"),
                    Some("macbeth_gut.txt")
                );
            }
        }
    }
}

/// The low-bit tier's file types (`llama-quantize-lowbit.json`, recorded by
/// `scripts/llamacpp-lowbit-reference.sh`), without and with the imatrix: the same tensor types
/// (at width 576 most matrices fall back to Q4_0 / IQ4_NL), bytes and `general.file_type`.
/// Then llama-perplexity's evaluation of kiln's artifacts (`llama-perplexity-lowbit.json`):
/// kiln's KLD within 10 % and top-1 within a point of it on four of them.
#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn low_bit_mixes_are_byte_identical() {
    let fx = fixtures();
    let hf = fx.join("smollm2-hf");
    let imatrix = data("imatrix-macbeth.gguf");
    let tmp = tempfile::tempdir().unwrap();
    let r = reference_in("llama-quantize-lowbit.json");
    let mixes: Vec<String> = r["mixes"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(mixes.len(), 12);
    for mix in &mixes {
        let out = tmp.path().join(format!("{mix}.gguf"));
        quantize_mix(&hf, mix, ("macbeth", &imatrix), &out);
        check_in(&r, mix, &tensors_of(&out), "from the checkpoint");
        let g = GgufFile::open(&out).unwrap();
        assert_eq!(
            g.metadata.u64("general.file_type"),
            r["mixes"][mix]["general.file_type"].as_u64(),
            "{mix}"
        );
    }
    verify_against(
        "llama-perplexity-lowbit.json",
        &[
            "Q2_K-macbeth",
            "Q3_K_M-none",
            "IQ4_NL-none",
            "IQ4_XS-macbeth",
        ],
        Some(tmp.path()),
    );
}

/// The six low-bit file types on a generated checkpoint 256 values wide (every matrix in the
/// tier's own types: Q2_K, Q3_K, IQ4_XS, and Q4_K / Q5_K / Q6_K where the rules say), with
/// 4 query heads per kv head and 16 layers, without and with an imatrix: byte-identical to
/// llama-quantize (`tests/data/synthetic-lowbit/`, recorded by
/// `scripts/llamacpp-lowbit-reference.sh`). Needs no fixture.
#[test]
fn low_bit_mixes_of_a_256_wide_model_are_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ckpt");
    convert::testing::write_checkpoint(
        &ck,
        &convert::testing::TinySpec {
            hidden: 256,
            intermediate: 768,
            layers: 16,
            heads: 4,
            kv_heads: 1,
            seed: 7,
            ..Default::default()
        },
    )
    .unwrap();
    let f32 = tmp.path().join("f32.gguf");
    let (ck_s, f32_s) = (ck.to_str().unwrap(), f32.to_str().unwrap());
    kiln(&[
        "convert",
        ck_s,
        "-o",
        f32_s,
        "--type",
        "f32",
        "--tokenizer-pre",
        "gpt-2",
    ]);
    let r = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(common::data_of("synthetic-lowbit", "llama-quantize.json")).unwrap(),
    )
    .unwrap();
    let imatrix = common::data_of("synthetic-lowbit", "imatrix.gguf");
    let mixes: Vec<String> = r["mixes"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(mixes.len(), 12);
    for mix in &mixes {
        let out = tmp.path().join(format!("{mix}.gguf"));
        quantize_mix(&f32, mix, ("kiln", &imatrix), &out);
        check_in(&r, mix, &tensors_of(&out), "from kiln's F32 GGUF");
    }
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn kilns_imatrix_matches_llama_imatrix() {
    let fx = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("imatrix.gguf");
    kiln(&[
        "calibrate",
        fx.join("smollm2-f32.gguf").to_str().unwrap(),
        "--text",
        fx.join("texts/macbeth_gut.txt").to_str().unwrap(),
        "--ctx",
        "512",
        "--chunks",
        "16",
        "-o",
        ours.to_str().unwrap(),
    ]);
    let a = calibrate::Imatrix::read(&ours).unwrap();
    let b = calibrate::Imatrix::read(&data("imatrix-macbeth.gguf")).unwrap();
    let worst = common::imatrix_differences(&a, &b);
    eprintln!("largest relative in_sum2 difference per matrix: {worst:?}");
    assert!(worst.values().all(|&w| w <= 1e-3), "{worst:?}");
    // Quantizing with kiln's imatrix picks llama.cpp's types.
    for ty in ["Q4_K_M", "Q4_0", "Q4_K_S"] {
        let out = tmp.path().join(format!("{ty}.gguf"));
        kiln(&[
            "quantize",
            fx.join("smollm2-hf").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--type",
            ty,
            "--imatrix",
            ours.to_str().unwrap(),
        ]);
        let r = reference();
        let want = r["mixes"][format!("{ty}-macbeth")]["tensors"]
            .as_object()
            .unwrap()
            .clone();
        for (name, (t, _)) in tensors_of(&out) {
            assert_eq!(t, want[&name]["type"].as_str().unwrap(), "{ty} {name}");
        }
    }
}

#[test]
fn imatrix_formats_convert_without_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let dat = tmp.path().join("m.dat");
    let gguf = tmp.path().join("m.gguf");
    kiln(&[
        "imatrix",
        data("imatrix-macbeth.gguf").to_str().unwrap(),
        "-o",
        dat.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&dat).unwrap(),
        std::fs::read(data("imatrix-macbeth.dat")).unwrap(),
        "GGUF → .dat is llama.cpp's .dat"
    );
    kiln(&[
        "imatrix",
        dat.to_str().unwrap(),
        "-o",
        gguf.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&gguf).unwrap(),
        std::fs::read(data("imatrix-macbeth.gguf")).unwrap(),
        ".dat → GGUF is llama.cpp's GGUF"
    );
    let a = calibrate::Imatrix::read(&data("imatrix-macbeth.gguf")).unwrap();
    let b = calibrate::Imatrix::read(&data("imatrix-macbeth.dat")).unwrap();
    assert_eq!(a, b);
}

/// `kiln verify`'s numbers against llama-perplexity's own (`--kl-divergence`, ctx 512,
/// 8 chunks of hamlet) on reference mixes kiln made: mean KLD within 10 %, top-1 within one
/// percentage point. Four mixes spanning the range (run against one reference pass).
#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn verify_reproduces_llama_perplexity_kld() {
    verify_against(
        "llama-perplexity-hamlet.json",
        &["Q8_0-none", "Q6_K-macbeth", "Q4_K_M-none", "Q4_0-none"],
        None,
    );
}

/// Checks kiln's KLD and top-1 on `mixes` against llama-perplexity's in `file`; the artifacts
/// `DIR/MIX.gguf` are made from the F32 GGUF unless `made` holds them already.
fn verify_against(file: &str, mixes: &[&str], made: Option<&Path>) {
    use verify::eval::{EvalOptions, Protocol};
    let fx = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let want = reference_in(file);
    let mut cands = Vec::new();
    for mix in mixes {
        if let Some(dir) = made {
            cands.push(verify::load::load_gguf(&dir.join(format!("{mix}.gguf"))).unwrap());
            continue;
        }
        let out = tmp.path().join(format!("{mix}.gguf"));
        let im = data("imatrix-macbeth.gguf");
        quantize_mix(&fx.join("smollm2-f32.gguf"), mix, ("macbeth", &im), &out);
        cands.push(verify::load::load_gguf(&out).unwrap());
    }
    let reference = verify::load::load_gguf(&fx.join("smollm2-f32.gguf")).unwrap();
    let g = GgufFile::open(fx.join("smollm2-f32.gguf")).unwrap();
    let tok = convert::tokenizer::Tokenizer::from_gguf(g.path(), &g.metadata).unwrap();
    let tokens = tok
        .encode(&std::fs::read_to_string(fx.join("texts/hamlet_gut.txt")).unwrap())
        .unwrap();
    let opts = EvalOptions {
        ctx: 512,
        chunks: Some(8),
        protocol: Protocol::LlamaCpp,
        ..Default::default()
    };
    let refs: Vec<&kernels::Model> = cands.iter().collect();
    let got = verify::parity::compare(&reference, &refs, &tokens, &opts, |_, _| {}).unwrap();
    for (mix, p) in mixes.iter().zip(&got) {
        let w = &want["mixes"][mix];
        let (wk, wt) = (
            w["kld_mean"].as_f64().unwrap(),
            w["same_top1_pct"].as_f64().unwrap(),
        );
        eprintln!("{mix}: KLD {:.6} (llama.cpp {wk:.6}), top-1 {:.3} % (llama.cpp {wt:.3} %), PPL {:.4} (llama.cpp {:.4})", p.kld.mean, 100.0 * p.top1, p.ppl_candidate, w["ppl"]);
        assert_eq!(p.n_scored, 2040);
        assert!(
            (p.kld.mean - wk).abs() <= 0.1 * wk,
            "{mix}: KLD {} vs {wk}",
            p.kld.mean
        );
        assert!(
            (100.0 * p.top1 - wt).abs() <= 1.0,
            "{mix}: top-1 {} vs {wt}",
            100.0 * p.top1
        );
    }
}

/// Block-sparse attention on the real model by quality budget: calibrated on Macbeth, the
/// ladder measured on Hamlet (2048 tokens, blocks of 64), the shipped mask costs at most 0.01
/// KLD against the same Q8_0 weights run dense on Hamlet.
#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn masks_within_a_quality_budget_cost_at_most_the_budget() {
    let fx = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("q8.gguf");
    let masked = tmp.path().join("q8-masked.gguf");
    kiln(&[
        "quantize",
        fx.join("smollm2-f32.gguf").to_str().unwrap(),
        "-o",
        q8.to_str().unwrap(),
        "--type",
        "Q8_0",
    ]);
    let ladder = kiln_ok(&[
        "masks",
        fx.join("smollm2-f32.gguf").to_str().unwrap(),
        "--text",
        fx.join("texts/macbeth_gut.txt").to_str().unwrap(),
        "--eval-text",
        fx.join("texts/hamlet_gut.txt").to_str().unwrap(),
        "--max-kld",
        "0.01",
        "--ctx",
        "2048",
        "--chunks",
        "1",
        "--json",
        "--artifact",
        q8.to_str().unwrap(),
        "-o",
        masked.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&ladder).unwrap();
    let chosen: Vec<_> = v["curve"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["chosen"] == true)
        .collect();
    eprintln!("shipped: {}", chosen[0]);
    assert!(
        chosen[0]["density"].as_f64().unwrap() < 0.9,
        "the budget buys sparsity"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "-q",
            "verify",
            "--reference",
            q8.to_str().unwrap(),
            "--candidate",
            masked.to_str().unwrap(),
        ])
        .args([
            "--text",
            fx.join("texts/hamlet_gut.txt").to_str().unwrap(),
            "--ctx",
            "2048",
            "--chunks",
            "1",
            "--max-kld",
            "0.01",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "Q8_0 masked vs dense: KLD {} top-1 {}",
        v["parity"]["kld"]["mean"], v["parity"]["top1"]
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
