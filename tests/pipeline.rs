//! The pipeline as a library (`pipeline`): a typed plan built in-process gives the bytes the
//! `kiln` binary writes from the same inputs, reports progress to an observer, reuses finished
//! work, and fails with typed errors naming what is wrong. Small synthetic model (fast).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use pipeline::build::{build, merge, BuildPlan};
use pipeline::{Error, MethodSpec, Observer, Quantization, Silent};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("-q")
        .args(args)
        .output()
        .unwrap()
}

/// Everything an observer was told.
#[derive(Default)]
struct Recorder {
    steps: Mutex<Vec<(String, usize, usize)>>,
    finished: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
}

impl Observer for Recorder {
    fn step(&self, stage: &str, done: usize, total: usize, _unit: &str) {
        self.steps
            .lock()
            .unwrap()
            .push((stage.to_string(), done, total));
    }
    fn finish(&self, stage: &str) {
        self.finished.lock().unwrap().push(stage.to_string());
    }
    fn note(&self, msg: &str) {
        self.notes.lock().unwrap().push(msg.to_string());
    }
}

impl Recorder {
    /// The last step reported for `stage`, if any.
    fn last(&self, stage: &str) -> Option<(usize, usize)> {
        let s = self.steps.lock().unwrap();
        s.iter()
            .rev()
            .find(|(n, _, _)| n == stage)
            .map(|(_, d, t)| (*d, *t))
    }
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    common::tiny_build_inputs(&dir);
    std::fs::write(
        dir.join("kiln.toml"),
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
chunks = 3

[bench]
pp = 16
tg = 4
reps = 1

[[target]]
name = "q8"
type = "Q8_0"

[[target]]
name = "q4km"
type = "Q4_K_M"
imatrix = true
method = ["search"]
"#,
    )
    .unwrap();
    (tmp, dir)
}

/// What a build of the test's build file writes that must not depend on how it was run.
const BUILD_FILES: [&str; 4] = [
    "tiny-q8.gguf",
    "tiny-q4km.gguf",
    "imatrix.gguf",
    "manifest.json",
];

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_build_plan_run_in_process_writes_the_binarys_bytes_and_reuses_its_work() {
    let (_tmp, dir) = setup();
    let toml = dir.join("kiln.toml");
    let plan = BuildPlan::load(&toml, Some(&dir.join("lib")), &[]).unwrap();
    let rec = Recorder::default();
    let outcome = build(&plan, &rec).unwrap();
    assert!(outcome.pass(), "{:?}", outcome.failed());
    assert_eq!(outcome.report.targets.len(), 2);

    // The observer saw every stage through to its end.
    for stage in ["calibrate", "quantize", "verify"] {
        let (d, t) = rec
            .last(stage)
            .unwrap_or_else(|| panic!("no {stage} steps"));
        assert_eq!(d, t, "{stage} ended at {d}/{t}");
        assert!(rec.finished.lock().unwrap().iter().any(|s| s == stage));
    }
    assert_eq!(rec.last("calibrate"), Some((4, 4)));
    assert_eq!(rec.last("verify"), Some((3, 3)));

    // The binary, from the same build file: the same artifacts, imatrix and manifest.
    let cli = dir.join("cli");
    let o = kiln(&["build", toml.to_str().unwrap(), "-o", cli.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in BUILD_FILES {
        assert!(
            read(&dir.join("lib").join(f)) == read(&cli.join(f)),
            "{f} differs between the library call and the binary"
        );
    }
    // Only the binary asked for rendered reports.
    assert!(cli.join("report.html").exists() && cli.join("report.md").exists());
    assert!(!dir.join("lib/report.html").exists());
    assert!(dir.join("lib/report.json").exists());

    // A second run reuses every target and the imatrix, and writes the same bytes.
    let before = read(&dir.join("lib/tiny-q4km.gguf"));
    let again = Recorder::default();
    let outcome2 = build(&plan, &again).unwrap();
    let notes = again.notes.lock().unwrap().join("\n");
    for want in [
        "calibration: reusing imatrix.gguf",
        "q8: reusing tiny-q8.gguf",
        "q4km: reusing tiny-q4km.gguf",
    ] {
        assert!(notes.contains(want), "no {want:?} in:\n{notes}");
    }
    assert_eq!(again.last("quantize"), None, "a reused build quantized");
    assert_eq!(read(&dir.join("lib/tiny-q4km.gguf")), before);
    assert_eq!(
        outcome2.report.targets[1].sha256,
        outcome.report.targets[1].sha256
    );

    // Jobs by target through the API, merged: the single build's bytes.
    let j1 = BuildPlan::load(&toml, Some(&dir.join("j1")), &["q8".into()]).unwrap();
    let j2 = BuildPlan::load(&toml, Some(&dir.join("j2")), &["q4km".into()]).unwrap();
    build(&j1, &Silent).unwrap();
    build(&j2, &Silent).unwrap();
    let merged = dir.join("merged");
    let m = merge(
        &toml,
        &[dir.join("j2"), dir.join("j1")],
        &merged,
        &[],
        &Silent,
    )
    .unwrap();
    assert_eq!(m.report.targets.len(), 2);
    for f in BUILD_FILES {
        assert!(
            read(&merged.join(f)) == read(&cli.join(f)),
            "merged {f} differs"
        );
    }
}

#[test]
fn a_quantization_run_in_process_writes_the_binarys_bytes() {
    let (_tmp, dir) = setup();
    let ck = dir.join("ckpt");
    let method = MethodSpec::parse(&["search".to_string()]).unwrap();
    method.validate().unwrap();
    let job = Quantization {
        input: ck.clone(),
        output: dir.join("lib.gguf"),
        ftype: "Q4_K_M".parse().unwrap(),
        imatrix: None,
        tensor_types: vec!["ffn_down=q8_0".into()],
        output_tensor_type: None,
        token_embedding_type: None,
        pure: false,
        tokenizer_pre: Some("gpt-2".into()),
        method: method.clone(),
        split: None,
        lora: Vec::new(),
    };
    let prepared = job.prepare(&Silent).unwrap();
    let plan = prepared.plan().unwrap();
    assert!(plan
        .choices
        .iter()
        .any(|c| c.name.ends_with("ffn_down.weight") && c.ty == quantize::GgmlType::Q8_0));
    let q = prepared.write(&Silent).unwrap();
    assert_eq!(q.tensor_bytes, plan.tensor_bytes);
    let cli = dir.join("cli.gguf");
    let o = kiln(&[
        "quantize",
        ck.to_str().unwrap(),
        "-o",
        cli.to_str().unwrap(),
        "--type",
        "Q4_K_M",
        "--tensor-type",
        "ffn_down=q8_0",
        "--method",
        "search",
        "--tokenizer-pre",
        "gpt-2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(read(&dir.join("lib.gguf")) == read(&cli));

    // A size budget the file cannot meet: a typed error, and no file left.
    let mut tight = method;
    tight.alloc = false;
    tight.target_size = None;
    let job = Quantization {
        output: dir.join("never.gguf"),
        method: MethodSpec {
            target_size: Some(1000),
            ..tight
        },
        ..job
    };
    match job.prepare(&Silent).and_then(|p| p.write(&Silent)) {
        Err(Error::Options(m)) => assert!(m.contains("exceed --target-size 1000"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a 1000-byte budget was met"),
    }
    assert!(!dir.join("never.gguf").exists());
}

#[test]
fn pipeline_errors_are_typed_and_name_what_is_wrong() {
    let (_tmp, dir) = setup();
    let toml = dir.join("kiln.toml");
    match BuildPlan::load(&toml, None, &["nope".into()]) {
        Err(Error::BuildFile { path, msg }) => {
            assert_eq!(path, toml);
            assert!(
                msg.contains("no target `nope`") && msg.contains("q8, q4km"),
                "{msg}"
            );
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    std::fs::write(dir.join("bad.toml"), "[model]\npath = 3\n").unwrap();
    assert!(matches!(
        BuildPlan::load(&dir.join("bad.toml"), None, &[]),
        Err(Error::BuildFile { .. })
    ));
    // A merge of a directory that is not a job's: the manifest it lacks is named.
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    match merge(&toml, &[dir.join("empty")], &dir.join("m"), &[], &Silent) {
        Err(e @ Error::Io { .. }) => {
            assert!(e.to_string().contains("empty/manifest.json"), "{e}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // One job of two: the missing target is named, and nothing is written.
    let j1 = BuildPlan::load(&toml, Some(&dir.join("j1")), &["q8".into()]).unwrap();
    build(&j1, &Silent).unwrap();
    match merge(&toml, &[dir.join("j1")], &dir.join("m"), &[], &Silent) {
        Err(Error::Merge { msg }) => assert!(msg.contains("q4km"), "{msg}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(!dir.join("m").exists());
}
