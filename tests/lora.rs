//! LoRA adapters (#22): PEFT adapters merged into a model (`--lora` on convert / quantize /
//! calibrate / verify), written as llama.cpp's LoRA GGUF (`kiln adapter`), applied at run time
//! by kiln's kernel; bad adapters refused with exit 2, nothing written.
//!
//! The default tests run on a generated checkpoint with adapters written here; the merged
//! weights are checked against a merge computed independently in this file (f64, from the
//! safetensors bytes). The ignored test runs on SmolLM2 with adapters and merged checkpoints
//! from numpy (scripts/lora-reference.py) and checks llama.cpp against kiln.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use convert::lora::LoraSpec;
use convert::safetensors::Dtype;
use convert::testing::{weights, write_checkpoint, write_safetensors, TinySpec};
use kernels::{forward, ForwardOptions, Logits, NoObserver, State};
use verify::load::{load_with, LoraLoad};

/// A tensor's name, shape and values.
type Named = (String, Vec<usize>, Vec<f32>);

fn kiln(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("-q")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const MODULES: &[(&str, &str)] = &[
    ("self_attn.q_proj", "q"),
    ("self_attn.k_proj", "kv"),
    ("self_attn.v_proj", "kv"),
    ("self_attn.o_proj", "o"),
    ("mlp.gate_proj", "ffn"),
    ("mlp.up_proj", "ffn"),
    ("mlp.down_proj", "down"),
];

/// (out, in) of a module of the tiny model (hidden 64, ffn 128, 4 heads, 2 kv heads).
fn dims(kind: &str) -> (usize, usize) {
    match kind {
        "q" | "o" => (64, 64),
        "kv" => (32, 64),
        "ffn" => (128, 64),
        _ => (64, 128),
    }
}

/// A PEFT adapter of rank `r` on every module of both layers, A and B seeded.
fn write_adapter(dir: &Path, r: usize, alpha: f64, rslora: bool, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
        "use_rslora": rslora, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
        "gate_proj", "up_proj", "down_proj"], "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": false, "modules_to_save": null, "use_dora": false,
    });
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    let mut tensors = Vec::new();
    for l in 0..2 {
        for (m, kind) in MODULES {
            let (o, i) = dims(kind);
            let p = format!("base_model.model.model.layers.{l}.{m}");
            tensors.push((format!("{p}.lora_A.weight"), Dtype::F32, vec![r, i]));
            tensors.push((format!("{p}.lora_B.weight"), Dtype::F32, vec![o, r]));
        }
    }
    let t2 = tensors.clone();
    write_safetensors(&dir.join("adapter_model.safetensors"), &tensors, |k| {
        let n: usize = t2[k].2.iter().product();
        let v = weights(n, seed * 1000 + k as u64, 0.1);
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    })
    .unwrap();
}

struct Tiny {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn tiny() -> Tiny {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_checkpoint(&dir.join("ck"), &TinySpec::default()).unwrap();
    Tiny { _tmp: tmp, dir }
}

fn f32s(p: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let f = convert::safetensors::SafetensorsFile::open(p).unwrap();
    let t = f.tensor(name).unwrap();
    let mut v = vec![0f32; t.numel()];
    convert::safetensors::to_f32(t.dtype, f.data(t), &mut v);
    (v, t.shape.clone())
}

fn logits(path: &Path, lora: &LoraLoad, tokens: &[u32]) -> Vec<f32> {
    let m = load_with(path, lora).unwrap().model;
    let mut st = State::new(&m.config, tokens.len(), tokens.len());
    forward(
        &m,
        &mut st,
        tokens,
        Logits::All,
        ForwardOptions::default(),
        &NoObserver,
    )
    .unwrap();
    st.logits.clone()
}

/// The mean KL divergence `kiln verify ARGS --format json` reports.
fn verify_kld(args: &[&str]) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["-q", "verify"])
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    v["parity"]["kld"]["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("{v}"))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn spec(p: &Path) -> LoraSpec {
    LoraSpec {
        path: p.to_path_buf(),
        scale: 1.0,
    }
}

#[test]
fn merged_weights_are_w_plus_scaled_ba() {
    let t = tiny();
    let (ck, ad) = (t.dir.join("ck"), t.dir.join("r8"));
    write_adapter(&ad, 8, 16.0, false, 1);
    let rs = t.dir.join("r16rs");
    write_adapter(&rs, 16, 8.0, true, 2);
    // Merge both (the second at half strength), export the merged GGUF back to HF layout.
    let merged = t.dir.join("merged.gguf");
    let (c, e) = kiln(&[
        "convert",
        ck.to_str().unwrap(),
        "--lora",
        ad.to_str().unwrap(),
        "--lora",
        &format!("{}:0.5", rs.display()),
        "-o",
        merged.to_str().unwrap(),
        "--type",
        "f32",
        "--tokenizer-pre",
        "gpt-2",
    ]);
    assert_eq!(c, 0, "{e}");
    let hf = t.dir.join("merged-hf");
    let (c, e) = kiln(&["export", merged.to_str().unwrap(), hf.to_str().unwrap()]);
    assert_eq!(c, 0, "{e}");
    let mut worst = 0f64;
    for l in 0..2 {
        for (m, _) in MODULES {
            let w = format!("model.layers.{l}.{m}.weight");
            let (base, shape) = f32s(&ck.join("model.safetensors"), &w);
            let (got, _) = f32s(&hf.join("model.safetensors"), &w);
            let (o, i) = (shape[0], shape[1]);
            // W + Σ_adapters (B·A)·scaling·scale, in f64.
            let mut want: Vec<f64> = base.iter().map(|&x| x as f64).collect();
            for (dir, r, s) in [(&ad, 8usize, 16.0 / 8.0), (&rs, 16, 0.5 * 8.0 / 4.0)] {
                let p = format!("base_model.model.model.layers.{l}.{m}");
                let st = dir.join("adapter_model.safetensors");
                let (a, _) = f32s(&st, &format!("{p}.lora_A.weight"));
                let (b, _) = f32s(&st, &format!("{p}.lora_B.weight"));
                for row in 0..o {
                    for col in 0..i {
                        let d: f64 = (0..r)
                            .map(|k| b[row * r + k] as f64 * a[k * i + col] as f64)
                            .sum();
                        want[row * i + col] += d * s;
                    }
                }
            }
            for (g, w) in got.iter().zip(&want) {
                worst = worst.max((*g as f64 - w).abs() / (1.0 + w.abs()));
            }
        }
    }
    assert!(worst < 1e-6, "merged weights off by {worst:e}");
}

#[test]
fn run_time_adapters_agree_with_the_merged_model() {
    let t = tiny();
    let (ck, ad) = (t.dir.join("ck"), t.dir.join("r8"));
    write_adapter(&ad, 8, 16.0, false, 3);
    let base = t.dir.join("base.gguf");
    let merged = t.dir.join("merged.gguf");
    let lora = t.dir.join("lora.gguf");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for args in [
        vec![
            "convert",
            &s(&ck),
            "-o",
            &s(&base),
            "--type",
            "f32",
            "--tokenizer-pre",
            "gpt-2",
        ],
        vec![
            "convert",
            &s(&ck),
            "--lora",
            &s(&ad),
            "-o",
            &s(&merged),
            "--type",
            "f32",
            "--tokenizer-pre",
            "gpt-2",
        ],
        vec!["adapter", &s(&ad), "--base", &s(&ck), "-o", &s(&lora)],
    ] {
        let args: Vec<&str> = args.iter().map(|x| x.as_ref()).collect();
        let (c, e) = kiln(&args);
        assert_eq!(c, 0, "{args:?}: {e}");
    }
    // The adapter GGUF is llama.cpp's format.
    let g = convert::gguf::GgufFile::open(&lora).unwrap();
    assert_eq!(g.metadata.str("general.type"), Some("adapter"));
    assert_eq!(g.metadata.str("adapter.type"), Some("lora"));
    assert_eq!(g.metadata.str("general.architecture"), Some("llama"));
    assert_eq!(
        g.metadata
            .get("adapter.lora.alpha")
            .and_then(|v| v.as_f64()),
        Some(16.0)
    );
    let qa = g.tensor("blk.0.attn_q.weight.lora_a").unwrap();
    let qb = g.tensor("blk.1.ffn_down.weight.lora_b").unwrap();
    assert_eq!(
        (qa.dims.clone(), qb.dims.clone()),
        (vec![64, 8], vec![8, 64])
    );
    assert_eq!(g.tensors.len(), 2 * 2 * MODULES.len());

    let tokens: Vec<u32> = (0..24).map(|i| (i * 37 + 5) % 300).collect();
    let none = LoraLoad::default();
    let reference = logits(&merged, &none, &tokens);
    let runtime_gguf = logits(
        &base,
        &LoraLoad {
            runtime: vec![spec(&lora)],
            ..Default::default()
        },
        &tokens,
    );
    let runtime_peft_hf = logits(
        &ck,
        &LoraLoad {
            runtime: vec![spec(&ad)],
            ..Default::default()
        },
        &tokens,
    );
    let merged_hf = logits(
        &ck,
        &LoraLoad {
            merge: vec![spec(&ad)],
            ..Default::default()
        },
        &tokens,
    );
    let plain = logits(&base, &none, &tokens);
    let d_base = max_diff(&plain, &reference);
    assert!(d_base > 1e-2, "the adapter changes the logits ({d_base})");
    for (what, l) in [
        ("GGUF base + LoRA GGUF at run time", &runtime_gguf),
        ("checkpoint + PEFT at run time", &runtime_peft_hf),
        ("checkpoint + PEFT merged", &merged_hf),
    ] {
        let d = max_diff(l, &reference);
        assert!(
            d < 1e-4,
            "{what}: logits differ from the merged F32 GGUF by {d}"
        );
    }
    // A token's logits are the same alone as in the batch (the run-time term is per token).
    let one = logits(
        &base,
        &LoraLoad {
            runtime: vec![spec(&lora)],
            ..Default::default()
        },
        &tokens[..1],
    );
    assert_eq!(one[..], runtime_gguf[..one.len()]);

    // verify gates a quantized base + the adapter against the merged FP32 model.
    let q = t.dir.join("base-q8.gguf");
    let (c, e) = kiln(&["quantize", &s(&base), "-o", &s(&q), "--type", "Q8_0"]);
    assert_eq!(c, 0, "{e}");
    let text = t.dir.join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let (cks, ads, qs, texts) = (s(&ck), s(&ad), s(&q), s(&text));
    let verify = |extra: &[&str]| {
        let mut a = vec![
            "--reference",
            &cks,
            "--reference-lora",
            &ads,
            "--candidate",
            &qs,
            "--text",
            &texts,
            "--ctx",
            "64",
            "--chunks",
            "2",
        ];
        a.extend_from_slice(extra);
        verify_kld(&a)
    };
    let with = verify(&["--lora", &s(&lora)]);
    let without = verify(&[]);
    assert!(
        with * 10.0 < without,
        "Q8_0 base + adapter is much closer to the merged model ({with}) than the base alone ({without})"
    );
}

#[test]
fn bad_adapters_exit_2_naming_the_file_and_tensor() {
    let t = tiny();
    let ck = t.dir.join("ck");
    let good = t.dir.join("good");
    write_adapter(&good, 8, 16.0, false, 4);
    let st = |d: &Path| d.join("adapter_model.safetensors");
    let copy = |name: &str| -> PathBuf {
        let d = t.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(good.join(f), d.join(f)).unwrap();
        }
        d
    };
    // Rewrite the adapter's tensors: `edit` gets (name, shape, values) and may change them.
    let rewrite = |d: &Path, edit: &dyn Fn(&mut Vec<Named>)| {
        let f = convert::safetensors::SafetensorsFile::open(st(d)).unwrap();
        let mut ts: Vec<Named> = f
            .tensors
            .iter()
            .map(|t| {
                let mut v = vec![0f32; t.numel()];
                convert::safetensors::to_f32(t.dtype, f.data(t), &mut v);
                (t.name.clone(), t.shape.clone(), v)
            })
            .collect();
        drop(f);
        edit(&mut ts);
        let specs: Vec<(String, Dtype, Vec<usize>)> = ts
            .iter()
            .map(|(n, s, _)| (n.clone(), Dtype::F32, s.clone()))
            .collect();
        write_safetensors(&st(d), &specs, |k| {
            ts[k].2.iter().flat_map(|x| x.to_le_bytes()).collect()
        })
        .unwrap();
    };
    let qb = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight";
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        {
            let d = copy("rank");
            rewrite(&d, &|ts| {
                let t = ts.iter_mut().find(|t| t.0 == qb).unwrap();
                t.1 = vec![64, 4];
                t.2.truncate(256);
            });
            (d, vec!["lora_B", "layers.1.self_attn.q_proj", "rank 8"])
        },
        {
            let d = copy("missing-b");
            rewrite(&d, &|ts| ts.retain(|t| t.0 != qb));
            (d, vec!["layers.1.self_attn.q_proj.lora_A", "no lora_B"])
        },
        {
            let d = copy("unknown");
            rewrite(&d, &|ts| {
                for t in ts
                    .iter_mut()
                    .filter(|t| t.0.contains("layers.0.mlp.up_proj"))
                {
                    t.0 = t.0.replace("up_proj", "fc9");
                }
            });
            (d, vec!["layers.0.mlp.fc9", "does not have"])
        },
        {
            let d = copy("nan");
            rewrite(&d, &|ts| ts[3].2[7] = f32::NAN);
            (d, vec!["not finite", "lora_"])
        },
        {
            let d = copy("truncated");
            let b = std::fs::read(st(&d)).unwrap();
            std::fs::write(st(&d), &b[..b.len() - 100]).unwrap();
            (d, vec!["adapter_model.safetensors"])
        },
        {
            let d = copy("dora");
            let mut c: serde_json::Value =
                serde_json::from_slice(&std::fs::read(d.join("adapter_config.json")).unwrap())
                    .unwrap();
            c["use_dora"] = true.into();
            std::fs::write(d.join("adapter_config.json"), c.to_string()).unwrap();
            (d, vec!["use_dora", "DoRA"])
        },
        {
            let d = copy("unknown-key");
            let mut c: serde_json::Value =
                serde_json::from_slice(&std::fs::read(d.join("adapter_config.json")).unwrap())
                    .unwrap();
            c["lora_frobnicate"] = 3.into();
            std::fs::write(d.join("adapter_config.json"), c.to_string()).unwrap();
            (d, vec!["lora_frobnicate"])
        },
    ];
    for (d, must) in cases {
        let ds = d.to_str().unwrap();
        for cmd in ["convert", "adapter"] {
            let out = t.dir.join(format!(
                "{}-{cmd}.gguf",
                d.file_name().unwrap().to_str().unwrap()
            ));
            let os = out.to_str().unwrap();
            let args: Vec<&str> = if cmd == "convert" {
                vec![
                    "convert",
                    ck.to_str().unwrap(),
                    "--lora",
                    ds,
                    "-o",
                    os,
                    "--tokenizer-pre",
                    "gpt-2",
                ]
            } else {
                vec!["adapter", ds, "--base", ck.to_str().unwrap(), "-o", os]
            };
            let (code, err) = kiln(&args);
            assert_eq!(code, 2, "{args:?}: exit code; stderr: {err}");
            assert!(err.contains(ds), "{args:?}: names the adapter: {err}");
            for m in &must {
                assert!(err.contains(m), "{args:?}: names {m:?}: {err}");
            }
            assert!(!out.exists(), "{args:?}: nothing written");
            let stray: Vec<_> = std::fs::read_dir(&t.dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
                .collect();
            assert!(stray.is_empty(), "temporary files left: {stray:?}");
        }
    }
    // A wrong base: an adapter whose shapes do not fit.
    let other = t.dir.join("wide");
    write_checkpoint(
        &other,
        &TinySpec {
            hidden: 128,
            ..TinySpec::default()
        },
    )
    .unwrap();
    let (code, err) = kiln(&[
        "convert",
        other.to_str().unwrap(),
        "--lora",
        good.to_str().unwrap(),
        "-o",
        t.dir.join("x.gguf").to_str().unwrap(),
        "--tokenizer-pre",
        "gpt-2",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("good/adapter_model.safetensors")
            && err.contains("layers.0")
            && (err.contains("does not fit") || err.contains("inputs")),
        "{err}"
    );
}

/// SmolLM2 with numpy's adapters and merges (ranks 8 and 64, attention and MLP, one rsLoRA):
/// kiln's merge equals numpy's to float32 rounding; llama.cpp runs kiln's LoRA GGUF on kiln's
/// F32 base to the perplexity of kiln's merged F32 GGUF within 0.1 %.
#[test]
#[ignore = "needs the SmolLM2 fixture, Python with numpy + safetensors, and llama.cpp"]
fn smollm2_adapters_match_numpy_and_llama_cpp() {
    let fx = common::fixtures();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let venv = root.join(".baseline/venv-lora");
    if !venv.join("bin/python").exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv", venv.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "numpy==2.4.6", "safetensors==0.8.0"])
                .status()
                .unwrap()
                .success();
        assert!(ok, "cannot make the numpy venv");
    }
    let refs = tmp.path().join("refs");
    let st = Command::new(venv.join("bin/python"))
        .arg(root.join("scripts/lora-reference.py"))
        .arg(fx.join("smollm2-hf"))
        .arg(&refs)
        .status()
        .unwrap();
    assert!(st.success());
    let bin = Command::new(root.join("scripts/llamacpp-build.sh"))
        .args(["llama-perplexity", "llama-export-lora"])
        .output()
        .unwrap();
    assert!(bin.status.success());
    let bin = PathBuf::from(String::from_utf8_lossy(&bin.stdout).trim());
    let text = common::texts().join("hamlet_gut.txt");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let base = fx.join("smollm2-f32.gguf");
    let ppl = |args: &[&str]| -> f64 {
        let out = Command::new(bin.join("llama-perplexity"))
            .args(args)
            .args([
                "-f",
                &s(&text),
                "-c",
                "256",
                "--chunks",
                "8",
                "-t",
                "2",
                "-b",
                "256",
            ])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "llama-perplexity {args:?}: {log}");
        let line = log
            .lines()
            .find(|l| l.contains("Final estimate: PPL ="))
            .unwrap_or_else(|| panic!("{log}"));
        line.split('=')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let base_ppl = ppl(&["-m", &s(&base)]);
    for name in ["r8", "r64-rslora", "r16-attn"] {
        let ad = refs.join(name);
        let kiln_merged = tmp.path().join(format!("{name}-kiln.gguf"));
        let np_merged = tmp.path().join(format!("{name}-numpy.gguf"));
        let lora = tmp.path().join(format!("{name}-lora.gguf"));
        common::kiln_ok(&[
            "convert",
            &s(&fx.join("smollm2-hf")),
            "--lora",
            &s(&ad),
            "-o",
            &s(&kiln_merged),
            "--type",
            "f32",
        ]);
        common::kiln_ok(&[
            "convert",
            &s(&refs.join(format!("merged-{name}"))),
            "-o",
            &s(&np_merged),
            "--type",
            "f32",
        ]);
        common::kiln_ok(&["adapter", &s(&ad), "--base", &s(&base), "-o", &s(&lora)]);
        let (k, n) = (
            convert::gguf::GgufFile::open(&kiln_merged).unwrap(),
            convert::gguf::GgufFile::open(&np_merged).unwrap(),
        );
        let mut worst = 0f32;
        for t in &k.tensors {
            let a = k.tensor_f32(t).unwrap();
            let b = n.tensor_f32(n.tensor(&t.name).unwrap()).unwrap();
            worst = worst.max(max_diff(&a, &b));
        }
        eprintln!("{name}: kiln merge vs numpy: max |Δw| = {worst:e}");
        assert!(
            worst < 2e-6,
            "{name}: kiln's merge differs from numpy's by {worst}"
        );
        // llama-export-lora of kiln's adapter onto kiln's F32 base equals kiln's merge.
        let exported = tmp.path().join(format!("{name}-export-lora.gguf"));
        let out = Command::new(bin.join("llama-export-lora"))
            .args([
                "-m",
                &s(&base),
                "--lora",
                &s(&lora),
                "-o",
                &s(&exported),
                "-t",
                "2",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let x = convert::gguf::GgufFile::open(&exported).unwrap();
        let mut worst = 0f32;
        for t in &k.tensors {
            let a = k.tensor_f32(t).unwrap();
            let b = x.tensor_f32(x.tensor(&t.name).unwrap()).unwrap();
            for (p, q) in a.iter().zip(&b) {
                worst = worst.max((p - q).abs() / (p.abs().max(1e-3)));
            }
        }
        eprintln!("{name}: llama-export-lora vs kiln merge: max relative |Δw| = {worst:e}");
        assert!(
            worst < 1.0 / 1024.0,
            "{name}: export-lora differs by {worst} (more than F16 rounding)"
        );
        let merged_ppl = ppl(&["-m", &s(&kiln_merged)]);
        let lora_ppl = ppl(&["-m", &s(&base), "--lora", &s(&lora)]);
        let rel = (lora_ppl / merged_ppl - 1.0).abs();
        eprintln!(
            "{name}: llama-perplexity base {base_ppl:.4}, kiln merged {merged_ppl:.4}, base + kiln LoRA GGUF {lora_ppl:.4} ({:.4} %)",
            100.0 * rel
        );
        assert!(rel < 1e-3, "{name}: {lora_ppl} vs {merged_ppl}");
        assert!(
            (merged_ppl / base_ppl - 1.0).abs() > 1e-3,
            "{name}: the adapter matters"
        );
    }

    // What runs on the device, gated as CI gates it: a Q4_K_M base + kiln's r64-rslora LoRA
    // GGUF at run time against numpy's merged FP32 model. The threshold sits between the two
    // measured KLDs (0.0535 with, 0.0645 without; deterministic on any machine), so the gate
    // passes with the adapter and fails without it.
    let q4 = tmp.path().join("base-Q4_K_M.gguf");
    common::kiln_ok(&["quantize", &s(&base), "-o", &s(&q4), "--type", "Q4_K_M"]);
    let lora = tmp.path().join("r64-rslora-lora.gguf");
    let gate = |extra: &[&str]| -> (i32, f64) {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "-q",
                "verify",
                "--reference",
                &s(&refs.join("merged-r64-rslora")),
                "--candidate",
                &s(&q4),
                "--text",
                &s(&text),
                "--ctx",
                "256",
                "--chunks",
                "8",
                "--max-kld",
                "0.059",
                "--format",
                "json",
            ])
            .args(extra)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (
            out.status.code().unwrap(),
            v["parity"]["kld"]["mean"].as_f64().unwrap(),
        )
    };
    let (code_with, with) = gate(&["--lora", &s(&lora)]);
    let (code_without, without) = gate(&[]);
    eprintln!(
        "Q4_K_M base vs the merged r64-rslora FP32 model: KLD mean {with:.5} with kiln's LoRA GGUF at run time, {without:.5} without"
    );
    assert_eq!(code_with, 0, "Q4_K_M + adapter passes the gate ({with})");
    assert_eq!(code_without, 1, "Q4_K_M alone fails it ({without})");
}

/// `kiln build` with `[[adapter]]`s: one base artifact shipped with two adapter artifacts
/// (a report row for each combination, each the same numbers `kiln verify` gives), one target
/// with an adapter merged before calibration; reruns reuse everything; per-target jobs merge
/// into the single build; bad adapter references are build-file errors.
#[test]
fn build_ships_adapters_and_verifies_every_combination() {
    let t = tiny();
    let ck = t.dir.join("ck");
    write_adapter(&t.dir.join("legal"), 8, 16.0, false, 5);
    write_adapter(&t.dir.join("support"), 16, 8.0, true, 6);
    std::fs::write(
        t.dir.join("text.txt"),
        "the quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let head = r#"
[model]
path = "ck"
name = "tiny"
tokenizer_pre = "gpt-2"
[calibration]
texts = ["text.txt"]
ctx = 64
chunks = 2
[evaluation]
texts = ["text.txt"]
ctx = 64
chunks = 2
[bench]
pp = 16
tg = 4
reps = 1
[[adapter]]
name = "legal"
path = "legal"
[[adapter]]
name = "support"
path = "support"
scale = 0.5
type = "q8_0"
"#;
    let toml = t.dir.join("kiln.toml");
    std::fs::write(
        &toml,
        format!(
            "{head}\n[[target]]\nname = \"q8\"\ntype = \"Q8_0\"\nadapters = [\"legal\", \"support\"]\n\
             [[target]]\nname = \"q8-legal\"\ntype = \"Q8_0\"\nimatrix = true\nlora = [\"legal\"]\n"
        ),
    )
    .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let one = t.dir.join("one");
    let (c, e) = kiln(&["build", &s(&toml), "-o", &s(&one)]);
    assert_eq!(c, 0, "{e}");

    // One artifact per target, one file per shipped adapter, the merged model's imatrix.
    let mut ggufs: Vec<String> = std::fs::read_dir(&one)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    ggufs.sort();
    assert_eq!(
        ggufs,
        [
            "imatrix+legal.gguf",
            "tiny-legal.lora.gguf",
            "tiny-q8-legal.gguf",
            "tiny-q8.gguf",
            "tiny-support.lora.gguf"
        ]
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(one.join("report.json")).unwrap()).unwrap();
    let ads = report["adapters"].as_array().unwrap();
    assert_eq!(ads.len(), 2, "{report}");
    assert_eq!(ads[0]["ranks"], serde_json::json!([8]));
    assert_eq!(ads[0]["type"], "F16");
    assert_eq!(
        ads[0]["alpha"], 16.0,
        "PEFT alpha 16 at r 8: scaling 2 = alpha / r"
    );
    assert_eq!(ads[1]["ranks"], serde_json::json!([16]));
    assert_eq!(ads[1]["type"], "Q8_0");
    assert_eq!(
        ads[1]["alpha"], 16.0,
        "rsLoRA 8/√16 = 2 per unit, as alpha 32 at r 16, at scale 0.5"
    );
    assert_eq!(ads[0]["tensors"], 14);
    // `kiln adapter` writes the same file (the adapter's directory names it in both).
    let solo = t.dir.join("solo.gguf");
    let (c, e) = kiln(&[
        "adapter",
        &s(&t.dir.join("legal")),
        "--base",
        &s(&ck),
        "-o",
        &s(&solo),
        "--type",
        "f16",
    ]);
    assert_eq!(c, 0, "{e}");
    assert_eq!(
        std::fs::read(&solo).unwrap(),
        std::fs::read(one.join("tiny-legal.lora.gguf")).unwrap()
    );

    // Each combination row is what `kiln verify` says of the artifact + adapter file against
    // the checkpoint with the adapter merged; without the adapter it is far off.
    let verify = |cand: &Path, extra: &[String]| -> f64 {
        let mut a: Vec<String> = vec![
            "--reference".into(),
            s(&ck),
            "--candidate".into(),
            s(cand),
            "--text".into(),
            s(&t.dir.join("text.txt")),
            "--ctx".into(),
            "64".into(),
            "--chunks".into(),
            "2".into(),
        ];
        a.extend_from_slice(extra);
        verify_kld(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let q8 = &report["targets"][0];
    let combos = q8["combinations"].as_array().unwrap();
    assert_eq!(combos.len(), 2);
    let base = one.join("tiny-q8.gguf");
    for (c, reference_lora) in combos.iter().zip(["legal", "support:0.5"]) {
        let name = c["adapter"].as_str().unwrap();
        let file = one.join(c["file"].as_str().unwrap());
        let rl = s(&t.dir.join(reference_lora));
        let with = verify(
            &base,
            &[
                "--reference-lora".into(),
                rl.clone(),
                "--lora".into(),
                s(&file),
            ],
        );
        let without = verify(&base, &["--reference-lora".into(), rl]);
        let reported = c["parity"]["kld"]["mean"].as_f64().unwrap();
        assert!(
            (reported - with).abs() <= 1e-9 * with.max(1e-12),
            "{name}: report {reported} vs verify {with}"
        );
        assert!(
            with * 10.0 < without,
            "{name}: base + adapter {with} vs base alone {without}"
        );
        assert_eq!(c["pass"], true);
    }
    // The merged target is verified against the merged checkpoint.
    let merged = &report["targets"][1];
    assert_eq!(merged["lora"], serde_json::json!(["legal"]));
    let m = verify(
        &one.join("tiny-q8-legal.gguf"),
        &["--reference-lora".into(), s(&t.dir.join("legal"))],
    );
    let reported = merged["parity"]["kld"]["mean"].as_f64().unwrap();
    assert!(
        (reported - m).abs() <= 1e-9 * m.max(1e-12),
        "{reported} vs {m}"
    );
    let g = convert::gguf::GgufFile::open(one.join("tiny-q8-legal.gguf")).unwrap();
    assert_eq!(
        g.metadata.str("kiln.lora.merged"),
        Some("legal:1"),
        "the merge is recorded"
    );
    // The merged target's imatrix is `kiln calibrate --lora`'s, not the base model's.
    let cal = |extra: &[&str], out: &str| -> convert::gguf::GgufFile {
        let o = t.dir.join(out);
        let mut a = vec![
            "calibrate".to_string(),
            s(&ck),
            "--text".into(),
            s(&t.dir.join("text.txt")),
            "--ctx".into(),
            "64".into(),
            "--chunks".into(),
            "2".into(),
            "-o".into(),
            s(&o),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (c, e) = kiln(&a);
        assert_eq!(c, 0, "{e}");
        convert::gguf::GgufFile::open(o).unwrap()
    };
    let legal = s(&t.dir.join("legal"));
    let (with, without) = (
        cal(&["--lora", &legal], "cal-legal.gguf"),
        cal(&[], "cal-base.gguf"),
    );
    let built = convert::gguf::GgufFile::open(one.join("imatrix+legal.gguf")).unwrap();
    let mut differs = false;
    for x in &built.tensors {
        let b = built.tensor_f32(x).unwrap();
        assert_eq!(
            b,
            with.tensor_f32(with.tensor(&x.name).unwrap()).unwrap(),
            "{}",
            x.name
        );
        differs |= b
            != without
                .tensor_f32(without.tensor(&x.name).unwrap())
                .unwrap();
    }
    assert!(
        differs,
        "the merged model's imatrix differs from the base's"
    );
    let md = std::fs::read_to_string(one.join("report.md")).unwrap();
    for row in ["| q8 + legal |", "| q8 + support |", "## Adapters"] {
        assert!(md.contains(row), "{row} in\n{md}");
    }

    // A rerun reuses everything: the same bytes.
    let snapshot = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".gguf") || n == "manifest.json")
            .map(|n| (n.clone(), std::fs::read(d.join(&n)).unwrap()))
            .collect();
        v.sort();
        v
    };
    let first = snapshot(&one);
    let (c, e) = kiln(&["build", &s(&toml), "-o", &s(&one)]);
    assert_eq!(c, 0, "{e}");
    assert!(first == snapshot(&one), "a rerun changed the build");

    // Per-target jobs merge into the single build's files.
    for (target, dir) in [("q8", "j1"), ("q8-legal", "j2")] {
        let (c, e) = kiln(&[
            "build",
            &s(&toml),
            "-o",
            &s(&t.dir.join(dir)),
            "--target",
            target,
        ]);
        assert_eq!(c, 0, "{target}: {e}");
    }
    let merged_dir = t.dir.join("merged");
    let (c, e) = kiln(&[
        "build",
        "merge",
        &s(&toml),
        &s(&t.dir.join("j1")),
        &s(&t.dir.join("j2")),
        "-o",
        &s(&merged_dir),
    ]);
    assert_eq!(c, 0, "{e}");
    assert!(
        first == snapshot(&merged_dir),
        "the merged jobs differ from the build"
    );

    // Bad references are errors naming the build file and the adapter, nothing built.
    for (bad, what) in [
        (
            "[[target]]\nname = \"x\"\ntype = \"Q8_0\"\nadapters = [\"nope\"]\n",
            "nope",
        ),
        (
            "[[target]]\nname = \"x\"\ntype = \"Q8_0\"\nlora = [\"legal\"]\nadapters = [\"legal\"]\n",
            "named twice",
        ),
        (
            "[[target]]\nname = \"x\"\ntype = \"Q8_0\"\nmethod = [\"awq\"]\nadapters = [\"legal\"]\n",
            "AWQ",
        ),
    ] {
        let f = t.dir.join("bad.toml");
        std::fs::write(&f, format!("{head}\n{bad}")).unwrap();
        let out = t.dir.join("bad-out");
        let (c, e) = kiln(&["build", &s(&f), "-o", &s(&out)]);
        assert_eq!(c, 2, "{bad}: {e}");
        assert!(e.contains("bad.toml") && e.contains(what), "{e}");
        assert!(!out.exists(), "{bad}: nothing is written");
    }
}
