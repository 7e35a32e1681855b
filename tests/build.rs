//! `kiln verify` exit codes and formats, and `kiln build` determinism, on a small synthetic
//! model (fast, no fixture). The HTML report is checked in headless Chromium by
//! `html_report_renders_in_chromium` (ignored unless Chromium is installed; `.ci/run` installs
//! it and runs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("-q")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = kiln(args);
    assert!(
        o.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A synthetic checkpoint, its F32 GGUF, a Q8_0 and a Q4_0 GGUF, and two texts.
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    common::tiny_build_inputs(&dir);
    let ck = dir.join("ckpt");
    ok(&[
        "convert",
        ck.to_str().unwrap(),
        "-o",
        dir.join("ref.gguf").to_str().unwrap(),
        "--type",
        "f32",
        "--tokenizer-pre",
        "gpt-2",
    ]);
    for (ty, out) in [("Q8_0", "q8.gguf"), ("Q4_0", "q4.gguf")] {
        ok(&[
            "quantize",
            dir.join("ref.gguf").to_str().unwrap(),
            "-o",
            dir.join(out).to_str().unwrap(),
            "--type",
            ty,
        ]);
    }
    Setup { _tmp: tmp, dir }
}

fn verify(s: &Setup, cand: &str, extra: &[&str]) -> Output {
    let d = &s.dir;
    let mut args = vec![
        "verify",
        "--reference",
        d.join("ref.gguf").to_str().unwrap().to_string().leak(),
        "--candidate",
        d.join(cand).to_str().unwrap().to_string().leak(),
        "--text",
        d.join("eval.txt").to_str().unwrap().to_string().leak(),
        "--ctx",
        "64",
        "--chunks",
        "4",
    ];
    args.extend_from_slice(extra);
    kiln(&args)
}

#[test]
fn verify_thresholds_drive_the_exit_code() {
    let s = setup();
    // Pass: loose thresholds.
    let o = verify(
        &s,
        "q8.gguf",
        &[
            "--max-kld",
            "1.0",
            "--min-top1",
            "50",
            "--max-ppl-ratio",
            "2",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("result: PASS"));
    // Fail: a threshold nobody meets, named in the message.
    let o = verify(&s, "q4.gguf", &["--max-kld", "0", "--min-top1", "0.5"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("kld_mean") && err.contains("FAIL"), "{err}");
    assert!(
        !err.contains("top1:"),
        "only the failed check is named: {err}"
    );
    // Error: a missing candidate.
    let o = verify(&s, "missing.gguf", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.gguf"));
}

#[test]
fn verify_formats() {
    let s = setup();
    let o = verify(
        &s,
        "q4.gguf",
        &[
            "--max-kld",
            "0",
            "--max-ppl-ratio",
            "5",
            "--format",
            "junit",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let xml = String::from_utf8_lossy(&o.stdout);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("<testcase classname=\"kiln.verify\" name=\"kld_mean\">"));
    assert!(xml.contains("<failure"));
    assert!(xml.contains("tests=\"2\" failures=\"1\""));
    let o = verify(&s, "q8.gguf", &["--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert!(v["parity"]["kld"]["mean"].as_f64().unwrap() >= 0.0);
    assert!(v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "blk.0.attn_q.weight"));
    let o = verify(&s, "q8.gguf", &["--format", "md"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("| KLD mean |"));
}

fn build_toml(s: &Setup, name: &str) -> PathBuf {
    let p = s.dir.join(name);
    std::fs::write(
        &p,
        r#"
[model]
path = "ckpt"
name = "tiny"
tokenizer_pre = "gpt-2"

[calibration]
texts = ["calib.txt"]
ctx = 64
chunks = 4

[evaluation]
texts = ["eval.txt"]
ctx = 64
chunks = 4

[thresholds]
max_kld = 5.0

[bench]
pp = 16
tg = 4
reps = 1

[[target]]
name = "q8"
type = "Q8_0"
attention_masks = { max_kld = 0.5, block = 16, ctx = 64, chunks = 2 }

[[target]]
name = "q4km"
type = "Q4_K_M"
imatrix = true

[[target]]
name = "strict"
type = "Q4_0"
[target.thresholds]
max_kld = 0.0
"#,
    )
    .unwrap();
    p
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn build_is_deterministic_and_reports_failures() {
    let s = setup();
    let toml = build_toml(&s, "kiln.toml");
    let (a, b) = (s.dir.join("out-a"), s.dir.join("out-b"));

    let run = |threads: &str, out: &Path| {
        kiln(&[
            "--threads",
            threads,
            "build",
            toml.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let o = run("2", &a);
    // The "strict" target cannot meet max_kld = 0: exit 1, the others still finish.
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("strict"));
    for f in [
        "tiny-q8.gguf",
        "tiny-q4km.gguf",
        "tiny-strict.gguf",
        "report.json",
        "report.md",
        "report.html",
        "manifest.json",
        "imatrix.gguf",
    ] {
        assert!(a.join(f).exists(), "{f} missing");
    }
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("report.json")).unwrap()).unwrap();
    let pass: Vec<bool> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pass"].as_bool().unwrap())
        .collect();
    assert_eq!(pass, vec![true, true, false]);
    let masks = &r["targets"][0]["masks"];
    assert_eq!(masks["block"], 16);
    assert!(
        masks["density"].as_f64().unwrap() <= 1.0
            && masks["vs_dense"]["n_scored"].as_u64().unwrap() > 0,
        "{masks}"
    );
    // The budget's ladder: dense and 12 settings, one shipped within the budget.
    let curve = masks["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 13, "{masks}");
    let chosen: Vec<_> = curve.iter().filter(|p| p["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1);
    assert!(chosen[0]["kld"].as_f64().unwrap() <= 0.5);
    assert_eq!(masks["max_kld"], 0.5);
    assert!(r["targets"][1]["masks"].is_null());
    assert!(std::fs::read_to_string(a.join("report.md"))
        .unwrap()
        .contains("Block-sparse attention"));
    let g = convert::gguf::GgufFile::open(a.join("tiny-q8.gguf")).unwrap();
    assert_eq!(g.metadata.u64("kiln.attention.block_size"), Some(16));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["artifacts"].as_object().unwrap().len(), 4);
    assert!(m["inputs"]["model"].as_str().unwrap().len() == 64);
    // Twice: identical bytes everywhere (finished work reused).
    let first = files(&a);
    assert_eq!(run("2", &a).status.code(), Some(1));
    assert_eq!(files(&a), first, "a rerun changed the output");
    // One thread: identical artifacts and manifest.
    assert_eq!(run("1", &b).status.code(), Some(1));
    let fb = files(&b);
    let mut order: Vec<&(String, Vec<u8>)> = first.iter().collect();
    order.sort_by_key(|(n, _)| n == "manifest.json");
    for (name, bytes) in order {
        if name.ends_with(".gguf") || name == "manifest.json" {
            let other = &fb.iter().find(|(n, _)| n == name).unwrap().1;
            if other != bytes && name.ends_with(".gguf") {
                let (ga, gb) = (
                    convert::gguf::GgufFile::open(a.join(name)).unwrap(),
                    convert::gguf::GgufFile::open(b.join(name)).unwrap(),
                );
                for (k, v) in ga.metadata.iter() {
                    if gb.metadata.get(k) != Some(v) {
                        eprintln!("{name}: {k}: {v:?} vs {:?}", gb.metadata.get(k));
                    }
                }
                for (ta, tb) in ga.tensors.iter().zip(&gb.tensors) {
                    if ga.tensor_data(ta) != gb.tensor_data(tb) {
                        eprintln!("{name}: tensor {} differs", ta.name);
                    }
                }
            }
            assert!(other == bytes, "{name} differs between 1 and 2 threads");
        }
    }
}

#[test]
fn bad_build_files_are_errors() {
    let s = setup();
    let p = s.dir.join("bad.toml");
    std::fs::write(&p, "[model]\npath = \"ckpt\"\n[evaluation]\ntexts = [\"nope.txt\"]\n[[target]]\nname = \"a\"\ntype = \"Q3_K_XL\"\n").unwrap();
    let o = kiln(&["build", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml") && err.contains("Q3_K_XL"), "{err}");
}

/// `kiln build --target` as separate jobs, then `kiln build merge`: the directory one
/// `kiln build` writes (artifacts and manifest byte for byte, the report's targets and results
/// but for the measured speeds); a missing, duplicated or foreign job is an error naming it,
/// with nothing written.
#[test]
fn per_target_jobs_merge_into_the_single_build() {
    let s = setup();
    let toml = build_toml(&s, "kiln.toml");
    let t = toml.to_str().unwrap();
    let one = s.dir.join("one");
    assert_eq!(
        kiln(&["build", t, "-o", one.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    let job = |names: &[&str], dir: &str| {
        let d = s.dir.join(dir);
        let mut a = vec!["build", t, "-o", d.to_str().unwrap().to_string().leak()];
        for n in names {
            a.extend(["--target", n]);
        }
        let code = kiln(&a).status.code();
        assert!(code == Some(0) || code == Some(1), "{a:?}: {code:?}");
        d
    };
    // q8 alone, the other two together (the strict target fails its thresholds: exit 1).
    let (j1, j2) = (job(&["q8"], "job1"), job(&["q4km", "strict"], "job2"));
    let out = s.dir.join("merged");
    let m = kiln(&[
        "build",
        "merge",
        t,
        j2.to_str().unwrap(),
        j1.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        m.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&m.stderr)
    );
    for f in [
        "tiny-q8.gguf",
        "tiny-q4km.gguf",
        "tiny-strict.gguf",
        "imatrix.gguf",
        "manifest.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(one.join(f)).unwrap(),
            "{f}"
        );
    }
    let report = |d: &Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("report.json")).unwrap()).unwrap();
        for t in v["targets"].as_array_mut().unwrap() {
            t["bench"] = serde_json::Value::Null;
            if let Some(m) = t.get_mut("masks").filter(|m| !m.is_null()) {
                for k in [
                    "prefill_masked_tps",
                    "prefill_dense_tps",
                    "attention_masked_s",
                    "attention_dense_s",
                ] {
                    m[k] = serde_json::Value::Null;
                }
                for p in m["curve"].as_array_mut().into_iter().flatten() {
                    for k in [
                        "attention_s",
                        "prefill_s",
                        "selection_s",
                        "attention_speedup",
                        "prefill_speedup",
                        "decode_tps",
                        "decode_speedup",
                    ] {
                        p[k] = serde_json::Value::Null;
                    }
                }
            }
        }
        v
    };
    assert_eq!(report(&out), report(&one));
    // A later build into the merged directory reuses every target.
    let mtimes = || -> Vec<std::time::SystemTime> {
        [
            "tiny-q8.gguf",
            "tiny-q4km.gguf",
            "tiny-strict.gguf",
            "imatrix.gguf",
        ]
        .iter()
        .map(|f| std::fs::metadata(out.join(f)).unwrap().modified().unwrap())
        .collect()
    };
    let before = mtimes();
    assert_eq!(
        kiln(&["build", t, "-o", out.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        mtimes(),
        before,
        "a build into the merged directory redid finished work"
    );

    let fails = |dirs: &[&Path], what: &str| {
        let bad = s.dir.join("bad-out");
        let mut a = vec!["build", "merge", t];
        a.extend(dirs.iter().map(|d| d.to_str().unwrap()));
        a.extend(["-o", bad.to_str().unwrap()]);
        let o = kiln(&a);
        assert_eq!(o.status.code(), Some(2));
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(e.contains(what), "{e}");
        assert!(!bad.exists(), "nothing is written: {e}");
    };
    fails(&[&j1], "q4km, strict");
    let j3 = job(&["q8"], "job3");
    fails(&[&j1, &j2, &j3], "duplicated");
    // A job of another build file (another threshold) is foreign.
    let other = s.dir.join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&toml)
            .unwrap()
            .replace("max_kld = 5.0", "max_kld = 4.0"),
    )
    .unwrap();
    let j4 = s.dir.join("job4");
    let _ = kiln(&[
        "build",
        other.to_str().unwrap(),
        "-o",
        j4.to_str().unwrap(),
        "--target",
        "q8",
    ]);
    fails(&[&j4, &j2], "foreign");
    let o = kiln(&["build", t, "--target", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no target `nope`"));
}

/// Finds a Chromium binary.
fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|c| {
            Command::new("which")
                .arg(c)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
}

#[test]
#[ignore = "needs Chromium (installed by .ci/run)"]
fn html_report_renders_in_chromium() {
    let s = setup();
    let toml = build_toml(&s, "kiln.toml");
    let out = s.dir.join("out");
    let _ = kiln(&["build", toml.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let html = out.join("report.html");
    assert!(html.exists());
    let chrome = chromium().expect("chromium not installed");
    let profile = s.dir.join("chrome-profile");
    let o = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    // Console messages (errors included) are logged as CONSOLE lines.
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console output: {console:?}");
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not run to completion:\n{dom}"
    );
    assert!(dom.contains("<table id=\"targets\">"));
    assert_eq!(dom.matches("<tr class=").count(), 3, "three target rows");
    assert!(dom.contains("id=\"plot-size-kld\"") && dom.contains("id=\"plot-per-layer\""));
    assert!(
        dom.contains("id=\"plot-masks-q8\""),
        "the mask ladder's plot"
    );
    assert!(dom.contains("<circle") && dom.contains("<polyline"));
    // Real axes: unit-bearing axis titles and tick labels.
    for label in [
        "size (MiB)",
        "mean KLD vs FP32 (nats)",
        "layer",
        "attention speed-up over dense (×)",
    ] {
        assert!(dom.contains(label), "axis label {label:?} missing");
    }
}

fn ppl(model: &Path, text: &Path, extra: &[&str]) -> f64 {
    let mut args = vec![
        "perplexity",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--ctx",
        "128",
        "--chunks",
        "2",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = ok(&args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["ppl"].as_f64().unwrap()
}

#[test]
fn attention_masks_are_stored_and_applied() {
    let s = setup();
    let d = &s.dir;
    let (q8, text) = (d.join("q8.gguf"), d.join("eval.txt"));
    let dense_ppl = ppl(&q8, &text, &[]);
    for (cov, name) in [("1.0", "full.gguf"), ("0.5", "half.gguf")] {
        ok(&[
            "masks",
            d.join("ref.gguf").to_str().unwrap(),
            "--text",
            d.join("calib.txt").to_str().unwrap(),
            "--coverage",
            cov,
            "--block",
            "16",
            "--ctx",
            "128",
            "--chunks",
            "2",
            "--artifact",
            q8.to_str().unwrap(),
            "-o",
            d.join(name).to_str().unwrap(),
        ]);
        // The strict reader loads it; the keys are there; the tensors are untouched.
        let g = convert::gguf::GgufFile::open(d.join(name)).unwrap();
        assert_eq!(g.metadata.u64("kiln.attention.version"), Some(2));
        assert_eq!(g.metadata.u64("kiln.attention.block_size"), Some(16));
        let orig = convert::gguf::GgufFile::open(&q8).unwrap();
        for (a, b) in g.tensors.iter().zip(&orig.tensors) {
            assert_eq!(g.tensor_data(a), orig.tensor_data(b), "{}", a.name);
        }
        // Ignoring the keys runs dense: exactly the unmasked model's result.
        assert_eq!(ppl(&d.join(name), &text, &["--dense"]), dense_ppl);
    }
    // Coverage 1.0 keeps every head dense: exactly the dense logits.
    assert_eq!(ppl(&d.join("full.gguf"), &text, &[]), dense_ppl);
    // Coverage 0.5 really masks something.
    assert_ne!(ppl(&d.join("half.gguf"), &text, &[]), dense_ppl);
}

/// `kiln masks --max-kld`: the ladder is measured on the held-out text (dense first, one point
/// shipped, within the budget); a budget of 0 ships dense attention, bit for bit; a content-aware
/// mask is stored as version-2 keys, really masks, runs dense with `--dense`, and its curve is
/// the same on 1 and 2 threads.
#[test]
fn a_quality_budget_picks_the_sparsest_mask_within_it() {
    let s = setup();
    let d = &s.dir;
    let (q8, text) = (d.join("q8.gguf"), d.join("eval.txt"));
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let dense_ppl = ppl(&q8, &text, &[]);
    // `kiln masks` with `choice` (a budget or a coverage, and the kinds) into `out`.
    let derive = |threads: &str, choice: &[&str], out: &str| -> serde_json::Value {
        let (ref_gguf, calib, q8, out) = (p("ref.gguf"), p("calib.txt"), p("q8.gguf"), p(out));
        let mut args = vec!["--threads", threads, "masks", &ref_gguf, "--text", &calib];
        args.extend_from_slice(choice);
        args.extend_from_slice(&[
            "--block",
            "16",
            "--ctx",
            "256",
            "--chunks",
            "2",
            "--window",
            "1",
            "--json",
            "--artifact",
            &q8,
            "-o",
            &out,
        ]);
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let eval = p("eval.txt");
    let masks = |threads: &str, budget: &str, kind: &str, out: &str| {
        derive(
            threads,
            &["--eval-text", &eval, "--max-kld", budget, "--kind", kind],
            out,
        )
    };
    let zero = masks("2", "0", "auto", "zero.gguf");
    let curve = zero["curve"].as_array().unwrap();
    assert_eq!(
        curve.len(),
        1 + 5 + 7,
        "dense, 5 static and 7 content-aware settings"
    );
    assert_eq!(curve[0]["kind"], "dense");
    assert_eq!(curve[0]["chosen"], true);
    assert_eq!(zero["kind"], "dense");
    assert_eq!(ppl(&d.join("zero.gguf"), &text, &[]), dense_ppl);

    // The ladder ships the cheapest point within the budget — here dense: on this random
    // model a tile's four queries choose different blocks, so their union is nearly every
    // block and selection costs more than it saves.
    let v = masks("2", "100", "content", "ladder.gguf");
    let curve = v["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 1 + 7);
    let chosen: Vec<_> = curve.iter().filter(|p| p["chosen"] == true).collect();
    assert_eq!(chosen.len(), 1);
    let c = chosen[0];
    for p in curve {
        assert!(p["cost"].as_f64().unwrap() >= c["cost"].as_f64().unwrap());
        assert!(p["density"].as_f64().unwrap() <= 1.0);
    }
    assert!(curve[1..]
        .iter()
        .any(|p| p["density"].as_f64().unwrap() < 0.9));
    // Selection is deterministic: the same curve (densities and KLDs) on one thread.
    let one = masks("1", "100", "content", "ladder1.gguf");
    for (a, b) in one["curve"].as_array().unwrap().iter().zip(curve) {
        assert_eq!(a["density"], b["density"]);
        assert_eq!(a["kld"], b["kld"]);
    }
    // A content-aware mask (the expert knob): version-2 keys, really masks, `--dense` is dense.
    for threads in ["1", "2"] {
        derive(
            threads,
            &["--coverage", "0.8", "--kind", "content"],
            &format!("content{threads}.gguf"),
        );
    }
    let g = convert::gguf::GgufFile::open(d.join("content2.gguf")).unwrap();
    assert_eq!(g.metadata.u64("kiln.attention.version"), Some(2));
    let th = g.metadata.get("kiln.attention.threshold").unwrap();
    assert!(th
        .as_array()
        .unwrap()
        .iter()
        .any(|t| matches!(t, convert::gguf::Value::F32(x) if *x >= 0.0)));
    assert_eq!(
        std::fs::read(d.join("content1.gguf")).unwrap(),
        std::fs::read(d.join("content2.gguf")).unwrap(),
        "1 and 2 threads derive the same mask"
    );
    let masked_ppl = ppl(&d.join("content2.gguf"), &text, &[]);
    assert_ne!(masked_ppl, dense_ppl);
    assert_eq!(
        ppl(&d.join("content2.gguf"), &text, &["--dense"]),
        dense_ppl
    );
    assert_eq!(
        ppl(&d.join("content2.gguf"), &text, &["--threads", "1"]),
        masked_ppl
    );
}

/// `--method search,gptq,alloc`: the artifact is no larger than the llama.cpp mix it is budgeted
/// against (or than `--target-size`), holds only types llama.cpp runs (K-quants only on rows of
/// whole 256-value super-blocks), records its method, and is the same bytes with 1 or 2 threads.
#[test]
fn methods_stay_in_budget_in_llama_cpp_types_and_are_deterministic() {
    let s = setup();
    let d = &s.dir;
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    ok(&[
        "calibrate",
        &p("ref.gguf"),
        "--text",
        &p("calib.txt"),
        "--ctx",
        "64",
        "-o",
        &p("imat.gguf"),
    ]);
    let quant = |threads: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "--threads".to_string(),
            threads.into(),
            "quantize".into(),
            p("ckpt"),
            "-o".into(),
            p(out),
            "--type".into(),
            "Q4_K_M".into(),
            "--imatrix".into(),
            p("imat.gguf"),
            "--tokenizer-pre".into(),
            "gpt-2".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args);
        std::fs::read(d.join(out)).unwrap()
    };
    let base = quant("2", "base.gguf", &[]);
    let methods = [
        "--method",
        "search,awq,gptq,alloc",
        "--calib-text",
        p("calib.txt").leak(),
        "--sensitivity-ctx",
        "64",
        "--sensitivity-chunks",
        "2",
        "--hessian-chunks",
        "3",
    ];
    let a = quant("1", "a.gguf", &methods);
    let b = quant("2", "b.gguf", &methods);
    assert!(a == b, "1 and 2 threads wrote different bytes");
    assert!(a.len() <= base.len(), "{} > {}", a.len(), base.len());
    assert_ne!(a, base, "the methods changed nothing");

    let g = convert::gguf::GgufFile::open(d.join("a.gguf")).unwrap();
    use quantize::GgmlType::*;
    for t in &g.tensors {
        let cols = t.dims[0] as usize;
        match t.ty {
            F32 | F16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4NL => {}
            Q2K | Q3K | Q4K | Q5K | Q6K | IQ4XS => {
                assert_eq!(cols % 256, 0, "{}: K-quant on {cols} columns", t.name)
            }
            other => panic!("{}: {other} is not a storage type llama.cpp runs", t.name),
        }
    }
    let rec = g
        .metadata
        .str("kiln.quantize.method")
        .expect("method recorded");
    let rec: serde_json::Value = serde_json::from_str(rec).unwrap();
    assert_eq!(
        rec["methods"],
        serde_json::json!(["search", "alloc", "awq", "gptq"])
    );
    assert!(rec["awq"]["error_ratio"].as_f64().unwrap() <= 1.0);
    assert!(rec["alloc"]["budget_bytes"].as_u64().unwrap() > 0);
    assert!(rec["gptq"]["chunks"].as_u64().unwrap() > 0);

    // An explicit budget well below the mix is met.
    let target = base.len() as u64 * 9 / 10;
    let t = quant(
        "2",
        "t.gguf",
        &[&methods[..], &["--target-size", target.to_string().leak()]].concat(),
    );
    assert!(t.len() as u64 <= target, "{} > {target}", t.len());

    // Search alone keeps llama.cpp's types and sizes exactly
    // (the file differs only by the method key in its header).
    let sonly = quant("2", "s.gguf", &["--method", "search"]);
    assert!(sonly.len() <= base.len() + 512 && sonly != base);
    let (gb, gs) = (
        convert::gguf::GgufFile::open(d.join("base.gguf")).unwrap(),
        convert::gguf::GgufFile::open(d.join("s.gguf")).unwrap(),
    );
    for (x, y) in gb.tensors.iter().zip(&gs.tensors) {
        assert_eq!((&x.name, x.ty), (&y.name, y.ty));
    }

    // So does GPTQ alone, and it needs calibration text for its Hessians.
    let gonly = quant(
        "2",
        "g.gguf",
        &[
            "--method",
            "gptq",
            "--calib-text",
            p("calib.txt").leak(),
            "--sensitivity-ctx",
            "64",
        ],
    );
    assert!(gonly.len() <= base.len() + 512 && gonly != base);
    let gg = convert::gguf::GgufFile::open(d.join("g.gguf")).unwrap();
    for (x, y) in gb.tensors.iter().zip(&gg.tensors) {
        assert_eq!((&x.name, x.ty), (&y.name, y.ty));
    }
    let out = kiln(&[
        "quantize",
        &p("ckpt"),
        "-o",
        &p("nog.gguf"),
        "--type",
        "Q4_K_M",
        "--method",
        "gptq",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--calib-text"));
    assert!(!d.join("nog.gguf").exists());
}

/// AWQ's folds change the weights but not the FP32 model's function.
#[test]
fn awq_folds_keep_the_fp32_function() {
    let s = setup();
    let loaded = verify::load::load(&s.dir.join("ckpt")).unwrap();
    common::awq_folds_keep_the_function(&loaded.model);
}
