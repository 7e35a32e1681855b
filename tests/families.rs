//! The edge queue beyond Gemma 3 — Llama 3.2, Qwen2.5, Qwen3, SmolLM3, Mistral, Phi-3.5-mini,
//! Phi-4-mini — on generated checkpoints with each public model's config.json keys
//! (`convert::testing::FAMILIES`: few layers, small widths, the real head layout, biases, norms,
//! RoPE settings, tie settings and tokenizer kind; seeded weights), against what `scripts/family-reference.sh` recorded in
//! `tests/data/families/<family>/` from three independent references: llama.cpp's own
//! `convert_hf_to_gguf.py`, llama.cpp's `llama-perplexity` / `llama-imatrix` / `llama-quantize`
//! built from the pinned source, and transformers' float32 forward of the checkpoint.
//!
//! Conversion, export, refusals and Phi-3's fused calibration run in the default test run; the
//! perplexity, imatrix, quantization and build checks read the plays of the fixture (`scripts/fetch-fixture.sh`) and are
//! `#[ignore]`d there; `.ci/run` runs them.

use std::path::{Path, PathBuf};

use convert::gguf::{GgufFile, Value};
use convert::testing::{write_family_checkpoint, FAMILIES};
use convert::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};

mod common;
use common::{data_of, kiln_ok};

fn reference(family: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(data_of("families", &format!("{family}/reference.json"))).unwrap(),
    )
    .unwrap()
}

fn spm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama2-spm")
}

/// The generated checkpoint of `family` in `dir/<family>` and kiln's F32 GGUF of it.
fn checkpoint(dir: &Path, family: &str) -> (PathBuf, PathBuf, Option<&'static str>) {
    let ck = dir.join(family);
    let pre = write_family_checkpoint(&ck, family, &spm_dir()).unwrap();
    let gguf = dir.join(format!("{family}.gguf"));
    convert_f32(&ck, &gguf, pre);
    (ck, gguf, pre)
}

/// `kiln convert --type f32` of a checkpoint directory, naming its pre-tokenizer if it needs one.
fn convert_f32(ck: &Path, out: &Path, pre: Option<&str>) {
    let mut args = vec![
        "convert",
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "f32",
    ];
    if let Some(p) = pre {
        args.extend(["--tokenizer-pre", p]);
    }
    kiln_ok(&args);
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A metadata value as the reference records it: scalars as JSON, arrays by the SHA-256 of
/// their canonical bytes (strings NUL-joined, integers i64 LE, floats f32 LE, booleans bytes).
fn recorded(v: &Value) -> serde_json::Value {
    match v {
        Value::Array(_, items) => {
            let mut raw = Vec::new();
            for (i, x) in items.iter().enumerate() {
                match x {
                    Value::String(s) => {
                        if i > 0 {
                            raw.push(0);
                        }
                        raw.extend_from_slice(s.as_bytes());
                    }
                    Value::Bool(b) => raw.push(*b as u8),
                    Value::F32(f) => raw.extend_from_slice(&f.to_le_bytes()),
                    Value::F64(f) => raw.extend_from_slice(&(*f as f32).to_le_bytes()),
                    other => raw.extend_from_slice(&int(other).to_le_bytes()),
                }
            }
            serde_json::json!({"sha256": sha(&raw), "len": items.len()})
        }
        Value::String(s) => s.clone().into(),
        Value::Bool(b) => (*b).into(),
        Value::F32(f) => (*f as f64).into(),
        Value::F64(f) => (*f).into(),
        other => int(other).into(),
    }
}

fn int(v: &Value) -> i64 {
    match *v {
        Value::I8(x) => x as i64,
        Value::I16(x) => x as i64,
        Value::I32(x) => x as i64,
        Value::I64(x) => x,
        _ => v.as_u64().unwrap() as i64,
    }
}

#[test]
fn every_family_converts_as_llama_cpps_converter() {
    let tmp = tempfile::tempdir().unwrap();
    for &f in FAMILIES {
        let (_, gguf, _) = checkpoint(tmp.path(), f);
        let want = &reference(f)["convert"];
        let g = GgufFile::open(&gguf).unwrap();
        // Every key the converter writes, with its value; no key it does not write (kiln's
        // provenance keys and the naming keys aside).
        let wm = want["metadata"].as_object().unwrap();
        let mut seen = 0;
        for (k, v) in g.metadata.iter() {
            if k.starts_with("kiln.") || k == "general.name" {
                continue;
            }
            let w = wm
                .get(k)
                .unwrap_or_else(|| panic!("{f}: kiln writes {k}, the converter does not"));
            assert_eq!(&recorded(v), w, "{f}: {k}");
            seen += 1;
        }
        assert_eq!(
            seen,
            wm.len(),
            "{f}: keys the converter writes and kiln does not"
        );
        // Every tensor: name, shape, type and bytes.
        let wt = want["tensors"].as_object().unwrap();
        assert_eq!(g.tensors.len(), wt.len(), "{f}: tensor count");
        for t in &g.tensors {
            let w = wt
                .get(&t.name)
                .unwrap_or_else(|| panic!("{f}: {} not in the converter's", t.name));
            let dims: Vec<u64> = w["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(t.dims, dims, "{f}: {} shape", t.name);
            assert_eq!(
                t.ty.to_string().to_uppercase(),
                w["type"].as_str().unwrap(),
                "{f}: {} type",
                t.name
            );
            assert_eq!(
                sha(g.tensor_data(t)),
                w["sha256"].as_str().unwrap(),
                "{f}: {} bytes",
                t.name
            );
        }
        eprintln!(
            "{f}: {} keys and {} tensors as convert_hf_to_gguf.py writes them",
            seen,
            wt.len()
        );
    }
}

#[test]
fn every_family_exports_and_converts_back() {
    let tmp = tempfile::tempdir().unwrap();
    for &f in FAMILIES {
        let (ck, gguf, pre) = checkpoint(tmp.path(), f);
        let hf = tmp.path().join(format!("{f}-export"));
        kiln_ok(&["export", gguf.to_str().unwrap(), hf.to_str().unwrap()]);
        let back = tmp.path().join(format!("{f}-back.gguf"));
        convert_f32(&hf, &back, pre);
        let (a, b) = (
            GgufFile::open(&gguf).unwrap(),
            GgufFile::open(&back).unwrap(),
        );
        assert_eq!(a.tensors.len(), b.tensors.len(), "{f}");
        for t in &a.tensors {
            let u = b
                .tensor(&t.name)
                .unwrap_or_else(|| panic!("{f}: {} lost", t.name));
            assert_eq!((&t.dims, t.ty), (&u.dims, u.ty), "{f}: {}", t.name);
            assert!(
                a.tensor_data(t) == b.tensor_data(u),
                "{f}: {} changed",
                t.name
            );
        }
        for (k, v) in a.metadata.iter() {
            if k != "general.name" {
                assert_eq!(Some(v), b.metadata.get(k), "{f}: {k}");
            }
        }
        // The exported config.json is the family's own: the checkpoint's configuration back.
        let mut orig = convert::ModelConfig::from_hf_file(&ck.join("config.json")).unwrap();
        let exp = convert::ModelConfig::from_hf_file(&hf.join("config.json")).unwrap();
        if f == "mistral" {
            // A GGUF of llama.cpp's `llama` architecture holds no window: its export is the
            // function the GGUF runs, a Llama attending to the whole context.
            orig.arch = convert::Arch::Llama;
            orig.sliding_window = None;
            orig.swa_layers.clear();
        }
        assert_eq!(orig, exp, "{f}: config.json of the export");
    }
}

/// Writes the family's checkpoint with config.json changed by `edit`; returns kiln convert's
/// exit code and stderr.
fn convert_edited(family: &str, edit: impl Fn(&mut serde_json::Value)) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join(family);
    write_family_checkpoint(&ck, family, &spm_dir()).unwrap();
    let p = ck.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = tmp.path().join("out.gguf");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "convert",
            ck.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--tokenizer-pre",
            "qwen2",
        ])
        .output()
        .unwrap();
    assert!(!out.exists(), "{family}: output written despite the error");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn keys_that_change_the_function_and_kiln_does_not_implement_are_errors() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "llama3.2",
            Box::new(|c| c["attn_logit_softcapping"] = 30.0.into()),
            &["attn_logit_softcapping", "30"],
        ),
        (
            "llama3.2",
            Box::new(|c| c["rope_scaling"]["rope_type"] = "yarn".into()),
            &["rope_scaling", "yarn", "llama3"],
        ),
        (
            "llama3.2",
            Box::new(|c| c["rope_scaling"]["beta_fast"] = 32.into()),
            &["rope_scaling.beta_fast"],
        ),
        (
            "llama3.2",
            Box::new(|c| {
                c["rope_scaling"]
                    .as_object_mut()
                    .unwrap()
                    .remove("low_freq_factor");
            }),
            &["low_freq_factor"],
        ),
        (
            "qwen2.5",
            Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0})
            }),
            &["rope_scaling", "llama3", "linear"],
        ),
        (
            "qwen3",
            Box::new(|c| c["use_sliding_window"] = true.into()),
            &["use_sliding_window", "true"],
        ),
        (
            "qwen3",
            Box::new(|c| {
                c["layer_types"] = serde_json::json!(["sliding_attention", "full_attention"])
            }),
            &["layer_types"],
        ),
        (
            "smollm3",
            Box::new(|c| c["no_rope_layers"] = serde_json::json!([1, 0, 1, 1])),
            &["no_rope_layers", "every 4th"],
        ),
        (
            "mistral",
            Box::new(|c| c["hidden_act"] = "gelu".into()),
            &["hidden_act", "gelu"],
        ),
        (
            "qwen3",
            Box::new(|c| c["model_type"] = "phimoe".into()),
            &["model_type", "phimoe", "smollm3, phi3"],
        ),
        (
            // transformers runs `yarn` as LongRoPE, llama.cpp's converter as YaRN.
            "phi3.5",
            Box::new(|c| c["rope_scaling"]["type"] = "yarn".into()),
            &["rope_scaling", "yarn", "longrope"],
        ),
        (
            "phi3.5",
            Box::new(|c| c["rope_scaling"]["long_mscale"] = 1.8.into()),
            &["rope_scaling.long_mscale"],
        ),
        (
            "phi3.5",
            Box::new(|c| {
                c["rope_scaling"]["short_factor"]
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
            &["short_factor", "47", "48"],
        ),
        (
            "phi3.5",
            Box::new(|c| c["attention_bias"] = true.into()),
            &["attention_bias", "true"],
        ),
    ];
    for (f, edit, names) in cases {
        let (code, err) = convert_edited(f, edit);
        assert_eq!(code, 2, "{f}: {err}");
        assert!(err.contains("config.json"), "{f}: {err}");
        for n in names {
            assert!(err.contains(n), "{f}: {n:?} not in {err}");
        }
    }
}

fn hamlet() -> String {
    let p = common::texts().join("hamlet_gut.txt");
    std::fs::read_to_string(p).unwrap()
}

/// llama-perplexity's protocol at ctx 256 over 8 chunks of hamlet: (perplexity, argmaxes).
fn llama_protocol(model: &Path, pre: Option<&str>) -> (f64, Vec<usize>) {
    llama_protocol_at(model, pre, 256)
}

/// [`llama_protocol`] at another context.
fn llama_protocol_at(model: &Path, pre: Option<&str>, ctx: usize) -> (f64, Vec<usize>) {
    let tok = if model.is_dir() {
        let cfg = convert::ModelConfig::from_hf_file(&model.join("config.json")).unwrap();
        Tokenizer::from_hf_dir(model, &cfg, pre).unwrap()
    } else {
        let g = GgufFile::open(model).unwrap();
        Tokenizer::from_gguf(g.path(), &g.metadata).unwrap()
    };
    let (nll, argmax) = common::llama_protocol(model, &tok, &hamlet(), ctx, 8);
    ((nll.iter().sum::<f64>() / nll.len() as f64).exp(), argmax)
}

fn agreement(a: &[usize], b: &serde_json::Value) -> f64 {
    let b = b.as_array().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .filter(|(x, y)| **x as u64 == y.as_u64().unwrap())
        .count() as f64
        / a.len() as f64
}

#[test]
#[ignore = "needs the fixture's plays (scripts/fetch-fixture.sh)"]
fn forward_matches_llama_cpp_and_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for &f in FAMILIES {
        let (ck, gguf, pre) = checkpoint(tmp.path(), f);
        let r = reference(f);
        let (llama, hf) = (&r["perplexity"], &r["hf"]);
        let (ppl_dir, am_dir) = llama_protocol(&ck, pre);
        let (ppl_gguf, am_gguf) = llama_protocol(&gguf, None);
        let rel = |a: f64, b: &serde_json::Value| (a / b.as_f64().unwrap() - 1.0).abs();
        // kiln's GGUF forward against llama.cpp on the same file, and kiln's checkpoint
        // forward against transformers on the same directory.
        let (d_gguf, t_gguf) = (
            rel(ppl_gguf, &llama["ppl"]),
            agreement(&am_gguf, &llama["argmax"]),
        );
        let (d_hf, t_hf) = (rel(ppl_dir, &hf["ppl"]), agreement(&am_dir, &hf["argmax"]));
        eprintln!(
            "{f}: GGUF ppl {ppl_gguf:.4} vs llama.cpp {} ({:+.4}%, top-1 {:.2}%); checkpoint ppl {ppl_dir:.4} vs transformers {} ({:+.4}%, top-1 {:.2}%)",
            llama["ppl"], d_gguf * 100.0, t_gguf * 100.0, hf["ppl"], d_hf * 100.0, t_hf * 100.0
        );
        assert!(
            d_gguf < 1e-3 && t_gguf >= 0.99,
            "{f}: GGUF against llama.cpp"
        );
        let warnings: Vec<&str> = llama["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            // llama.cpp warns on every phi3 GGUF with a window, its own converter's included
            // (Phi-3.5-mini's 262144 covers any context, so nothing is lost).
            .filter(|w| !(f.starts_with("phi") && w.contains("Phi SWA is currently disabled")))
            .collect();
        assert!(
            warnings.is_empty(),
            "{f}: llama.cpp warned on kiln's GGUF: {warnings:?}"
        );
        assert!(
            d_hf < 1e-3 && t_hf >= 0.99,
            "{f}: checkpoint against transformers"
        );
        // transformers loads kiln's export of the GGUF as the family's model and runs the
        // function the GGUF runs (for Mistral, a Llama without the window).
        let d_exp = rel(ppl_gguf, &r["hf_export"]["ppl"]);
        eprintln!(
            "{f}: transformers on kiln's export: ppl {} ({:+.4}% from kiln's GGUF forward)",
            r["hf_export"]["ppl"],
            d_exp * 100.0
        );
        assert!(d_exp < 1e-3, "{f}: the export against kiln's GGUF");
        if let Some(long) = r.get("long_context") {
            // LongRoPE: beyond the pre-training context both references switch to the long
            // factors, and so does kiln (the forward at 256 above ran the short ones).
            let ctx = long["ctx"].as_u64().unwrap() as usize;
            let (ppl_g, am_g) = llama_protocol_at(&gguf, None, ctx);
            let (ppl_d, am_d) = llama_protocol_at(&ck, pre, ctx);
            let (lp, hp) = (&long["perplexity"], &long["hf"]);
            eprintln!(
                "{f} at ctx {ctx}: GGUF ppl {ppl_g:.4} vs llama.cpp {} ({:+.4}%, top-1 {:.2}%); checkpoint ppl {ppl_d:.4} vs transformers {} ({:+.4}%, top-1 {:.2}%)",
                lp["ppl"], rel(ppl_g, &lp["ppl"]) * 100.0, agreement(&am_g, &lp["argmax"]) * 100.0,
                hp["ppl"], rel(ppl_d, &hp["ppl"]) * 100.0, agreement(&am_d, &hp["argmax"]) * 100.0
            );
            assert!(rel(ppl_g, &lp["ppl"]) < 1e-3 && agreement(&am_g, &lp["argmax"]) >= 0.99);
            assert!(rel(ppl_d, &hp["ppl"]) < 1e-3 && agreement(&am_d, &hp["argmax"]) >= 0.99);
        }
        if f == "mistral" {
            // llama.cpp's `llama` graph has no window: the GGUF is a different function, and
            // the difference is what `verify` of the GGUF against the checkpoint reports.
            assert!(
                (ppl_gguf / ppl_dir - 1.0).abs() > 0.01,
                "{f}: the window should matter here"
            );
            let v = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args([
                    "verify",
                    "--reference",
                    ck.to_str().unwrap(),
                    "--candidate",
                    gguf.to_str().unwrap(),
                ])
                .args([
                    "--text",
                    common::texts().join("hamlet_gut.txt").to_str().unwrap(),
                    "--ctx",
                    "256",
                    "--chunks",
                    "4",
                ])
                .args(["--max-kld", "0.01", "--format", "json"])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&v.stdout);
            assert_ne!(
                v.status.code(),
                Some(0),
                "{f}: verify should fail the windowless GGUF: {out}"
            );
            let j: serde_json::Value = serde_json::from_str(&out).unwrap();
            eprintln!(
                "{f}: kiln verify of the GGUF against the windowed checkpoint: {}",
                j["parity"]
            );
        } else {
            // The checkpoint and its GGUF are one function, and that is llama.cpp's.
            assert!(
                rel(ppl_dir, &llama["ppl"]) < 1e-3,
                "{f}: checkpoint against llama.cpp"
            );
            assert!(
                agreement(&am_dir, &llama["argmax"]) >= 0.99,
                "{f}: checkpoint top-1 against llama.cpp"
            );
        }
    }
}

#[test]
#[ignore = "needs the fixture's plays (scripts/fetch-fixture.sh)"]
fn quantize_with_an_imatrix_is_llama_quantizes_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    for &f in FAMILIES {
        let (_, gguf, _) = checkpoint(tmp.path(), f);
        let r = reference(f);
        let im = data_of("families", &format!("{f}/imatrix.gguf"));
        for ty in ["Q8_0", "Q4_K_M", "Q5_K_M"] {
            let out = tmp.path().join(format!("{f}-{ty}.gguf"));
            kiln_ok(&[
                "quantize",
                gguf.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--type",
                ty,
                "--imatrix",
                im.to_str().unwrap(),
            ]);
            let want = r["quantize"][ty].as_object().unwrap();
            let g = GgufFile::open(&out).unwrap();
            assert_eq!(g.tensors.len(), want.len(), "{f} {ty}");
            for t in &g.tensors {
                let w = &want[&t.name];
                assert_eq!(
                    t.ty.id() as u64,
                    w["type"].as_u64().unwrap(),
                    "{f} {ty} {}: type",
                    t.name
                );
                assert_eq!(
                    sha(g.tensor_data(t)),
                    w["sha256"].as_str().unwrap(),
                    "{f} {ty} {}: bytes",
                    t.name
                );
            }
            eprintln!("{f} {ty}: every tensor as llama-quantize's");
        }
    }
}

#[test]
#[ignore = "needs the fixture's plays (scripts/fetch-fixture.sh)"]
fn every_stage_builds_for_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = common::texts();
    for &f in FAMILIES {
        let (ck, _, pre) = checkpoint(tmp.path(), f);
        let toml = tmp.path().join(format!("{f}.toml"));
        let pre_line = pre
            .map(|p| format!("tokenizer_pre = \"{p}\""))
            .unwrap_or_default();
        std::fs::write(
            &toml,
            format!(
                r#"
[model]
path = "{ck}"
name = "{f}"
{pre_line}

[calibration]
texts = ["{calib}"]
ctx = 128
chunks = 6

[evaluation]
texts = ["{eval}"]
ctx = 256
chunks = 2

[thresholds]
max_kld = 1.0

[bench]
pp = 64
tg = 4
reps = 1

[[target]]
name = "q8_0"
type = "Q8_0"
attention_masks = {{ coverage = 0.95, block = 32, ctx = 256, chunks = 2 }}

[[target]]
name = "q4_k_m-methods"
type = "Q4_K_M"
imatrix = true
method = ["search", "awq", "gptq", "alloc"]
target_bpw = 5.0
"#,
                ck = ck.display(),
                calib = texts.join("macbeth_gut.txt").display(),
                eval = texts.join("hamlet_gut.txt").display(),
            ),
        )
        .unwrap();
        let out = tmp.path().join(format!("{f}-build"));
        kiln_ok(&["build", toml.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        for t in report["targets"].as_array().unwrap() {
            assert_eq!(t["pass"], true, "{f}: {}", t["name"]);
            let file = out.join(t["file"].as_str().unwrap());
            assert!(GgufFile::open(&file).is_ok(), "{f}: {}", file.display());
        }
        eprintln!(
            "{f}: build of q8_0 (+masks) and q4_k_m (imatrix, search, awq, gptq, alloc) passed"
        );
    }
}

/// Phi-3's fused matrices through calibration: AWQ folds the norms into `attn_qkv` and
/// `ffn_up` and up's half of `ffn_up` into `ffn_down` without changing the FP32 function, and
/// the importance matrix is kept under the fused names llama-imatrix uses.
#[test]
fn fused_phi3_matrices_calibrate_and_fold_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["phi3.5", "phi4-mini"] {
        let ck = tmp.path().join(f);
        write_family_checkpoint(&ck, f, &spm_dir()).unwrap();
        let loaded = verify::load::load(&ck).unwrap();
        let folds = common::awq_folds_keep_the_function(&loaded.model);
        assert!(
            folds
                .iter()
                .any(|x| x.kind == calibrate::awq::FoldKind::UpDown && x.alpha > 0.0),
            "{f}: no up→down fold scaled anything"
        );
        let tokens: Vec<u32> = (0..128u32).map(|i| (i * 7919 + 13) % 500).collect();
        let im = common::imatrix_of(&loaded.model, &tokens, 2);
        let names: Vec<&str> = im.entries.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "blk.0.attn_output.weight",
                "blk.0.attn_qkv.weight",
                "blk.0.ffn_down.weight",
                "blk.0.ffn_up.weight",
                "blk.1.attn_output.weight",
                "blk.1.attn_qkv.weight",
                "blk.1.ffn_down.weight",
                "blk.1.ffn_up.weight",
            ],
            "{f}"
        );
    }
}

#[test]
#[ignore = "needs the fixture's plays (scripts/fetch-fixture.sh)"]
fn kilns_imatrix_matches_llama_imatrix_for_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for &f in FAMILIES {
        let (_, gguf, _) = checkpoint(tmp.path(), f);
        let ours = tmp.path().join(format!("{f}-imatrix.gguf"));
        kiln_ok(&[
            "calibrate",
            gguf.to_str().unwrap(),
            "--text",
            common::texts().join("macbeth_gut.txt").to_str().unwrap(),
            "--ctx",
            "256",
            "--chunks",
            "8",
            "-o",
            ours.to_str().unwrap(),
        ]);
        let a = calibrate::Imatrix::read(&ours).unwrap();
        let b =
            calibrate::Imatrix::read(&data_of("families", &format!("{f}/imatrix.gguf"))).unwrap();
        let worst = common::imatrix_differences(&a, &b)
            .into_values()
            .fold(0f64, f64::max);
        eprintln!(
            "{f}: {} imatrix entries as llama-imatrix's, largest relative difference {worst:.1e}",
            b.entries.len()
        );
        assert!(worst <= 1e-3, "{f}: {worst}");
    }
}

/// A window llama.cpp does not run (Mistral under `llama`; Phi-3, whose window llama.cpp
/// disables) is converted with a warning naming it; a window covering the context is not.
#[test]
fn a_window_the_gguf_cannot_hold_is_named_at_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    for (f, window, warns) in [
        ("mistral", 64, true),
        ("phi3.5", 64, true),
        ("phi3.5", 262144, false),
    ] {
        let ck = tmp.path().join(format!("{f}-{window}"));
        write_family_checkpoint(&ck, f, &spm_dir()).unwrap();
        let p = ck.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        cfg["sliding_window"] = window.into();
        std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let out = tmp.path().join(format!("{f}-{window}.gguf"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["convert", ck.to_str().unwrap(), "-o", out.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{f}: {err}");
        assert!(out.exists(), "{f}");
        let named = err.contains(&format!("sliding_window = {window}"));
        assert_eq!(named, warns, "{f} window {window}: {err}");
    }
}
