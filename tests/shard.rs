//! Split GGUF files and sharded work: N independent `kiln` processes (separate output
//! directories, merged afterwards) give the bytes one process writes; llama.cpp's split
//! layout; a missing, duplicated or foreign shard is an error naming it, with nothing written.
//!
//! The synthetic-model tests run by default; the SmolLM2 ones need the fixture
//! (`scripts/fetch-fixture.sh`) and are `#[ignore]`d, run by `.ci/run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use convert::gguf::split::{is_split_key, KEY_SPLIT_PLAN};
use convert::gguf::{GgufFile, Metadata, Value};
use convert::testing::{write_checkpoint, TinySpec};
use sha2::{Digest, Sha256};

mod common;
use common::{data_json, fixtures, texts};

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

/// Runs a command that must fail with exit 2; its stderr.
fn fails(args: &[&str]) -> String {
    let o = kiln(args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "kiln {args:?} should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha(p: &Path) -> String {
    Sha256::digest(std::fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn split_name(dir: &Path, stem: &str, i: usize, n: usize) -> PathBuf {
    dir.join(format!("{stem}-{i:05}-of-{n:05}.gguf"))
}

/// A synthetic checkpoint (widths K-quant blocks fit), its F32 GGUF and a calibration text.
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_checkpoint(
        &dir.join("ckpt"),
        &TinySpec {
            hidden: 256,
            intermediate: 512,
            layers: 3,
            heads: 4,
            kv_heads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let para = "the quick brown fox jumps over the lazy dog and then it rests in the shade of a tall tree near the river. ";
    std::fs::write(dir.join("calib.txt"), para.repeat(40)).unwrap();
    ok(&[
        "convert",
        s(&dir.join("ckpt")),
        "-o",
        s(&dir.join("ref.gguf")),
        "--type",
        "f32",
        "--tokenizer-pre",
        "gpt-2",
    ]);
    Setup { _tmp: tmp, dir }
}

/// `kiln calibrate` as one process and as N shards merged: the same bytes.
fn calibrate_as_shards(model: &Path, text: &Path, ctx: &str, chunks: &str, dir: &Path) -> PathBuf {
    let whole = dir.join("imatrix.gguf");
    let base = [
        "calibrate",
        s(model),
        "--text",
        s(text),
        "--ctx",
        ctx,
        "--chunks",
        chunks,
    ];
    let mut a = base.to_vec();
    a.extend(["-o", s(&whole)]);
    ok(&a);
    for n in [1usize, 2, 4] {
        let mut parts = Vec::new();
        for i in 1..=n {
            let job = dir.join(format!("cal-{n}-{i}"));
            std::fs::create_dir_all(&job).unwrap();
            let out = job.join("partial.gguf");
            let shard = format!("{i}/{n}");
            let mut a = base.to_vec();
            a.extend(["--shard", &shard, "-o", s(&out)]);
            ok(&a);
            parts.push(out);
        }
        // in reverse order: the merge sorts by shard
        parts.reverse();
        let merged = dir.join(format!("imatrix-merged-{n}.gguf"));
        let mut a = vec!["imatrix", "merge"];
        a.extend(parts.iter().map(|p| s(p)));
        a.extend(["-o", s(&merged)]);
        ok(&a);
        assert_eq!(
            sha(&merged),
            sha(&whole),
            "calibrate as {n} shards, merged, differs from one process"
        );
    }
    whole
}

/// `kiln quantize` as one process and as N shards in separate directories, merged: the same
/// bytes; the shards are the files of `--split-count N`.
fn quantize_as_shards(model: &Path, ty: &str, imatrix: Option<&Path>, dir: &Path) -> PathBuf {
    let one = dir.join("one.gguf");
    let mut base = vec!["quantize", s(model), "--type", ty];
    if model.is_dir() {
        base.extend(["--tokenizer-pre", "gpt-2"]);
    }
    if let Some(im) = imatrix {
        base.extend(["--imatrix", s(im)]);
    }
    let mut a = base.clone();
    a.extend(["-o", s(&one)]);
    ok(&a);
    for n in [1usize, 2, 4] {
        let together = dir.join(format!("split{n}"));
        std::fs::create_dir_all(&together).unwrap();
        let count = n.to_string();
        let mut a = base.clone();
        let out = together.join("m.gguf");
        a.extend(["-o", s(&out), "--split-count", &count]);
        ok(&a);
        let mut shards = Vec::new();
        for i in 1..=n {
            let job = dir.join(format!("q-{n}-{i}"));
            std::fs::create_dir_all(&job).unwrap();
            let shard = format!("{i}/{n}");
            let mut a = base.clone();
            let out = job.join("m.gguf");
            a.extend(["-o", s(&out), "--shard", &shard]);
            ok(&a);
            let written = split_name(&job, "m", i, n);
            assert_eq!(
                std::fs::read_dir(&job).unwrap().count(),
                1,
                "a shard writes its one file"
            );
            assert_eq!(
                sha(&written),
                sha(&split_name(&together, "m", i, n)),
                "shard {i}/{n} differs from file {i} of --split-count {n}"
            );
            shards.push(written);
        }
        shards.rotate_left(n / 2);
        let merged = dir.join(format!("merged-{n}.gguf"));
        let mut a = vec!["merge"];
        a.extend(shards.iter().map(|p| s(p)));
        a.extend(["-o", s(&merged)]);
        ok(&a);
        assert_eq!(
            sha(&merged),
            sha(&one),
            "{ty}: {n} shards merged differ from one process"
        );
    }
    one
}

#[test]
fn shards_of_calibrate_and_quantize_give_the_one_process_bytes() {
    let t = setup();
    let d = &t.dir;
    let im = calibrate_as_shards(&d.join("ref.gguf"), &d.join("calib.txt"), "32", "5", d);
    let one = quantize_as_shards(&d.join("ref.gguf"), "Q4_K_M", Some(&im), d);
    // The checkpoint directory quantized in one step shards the same way.
    let hf = d.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    quantize_as_shards(&d.join("ckpt"), "Q8_0", None, &hf);
    // kiln reads split files wherever it reads a GGUF: the same perplexity and tensors.
    let split = split_name(&d.join("split4"), "m", 1, 4);
    let ppl = |m: &Path| {
        let out = ok(&[
            "perplexity",
            s(m),
            "--text",
            s(&d.join("calib.txt")),
            "--ctx",
            "32",
            "--chunks",
            "2",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            v["mean_nll"].clone(),
            v["per_chunk"].clone(),
            v["top1_hit_rate"].clone(),
        )
    };
    assert_eq!(ppl(&split), ppl(&one));
    let a = GgufFile::open(&split).unwrap();
    let b = GgufFile::open(&one).unwrap();
    assert_eq!(a.parts().len(), 4);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!((&x.name, &x.dims, x.ty), (&y.name, &y.dims, y.ty));
        assert_eq!(a.tensor_data(x), b.tensor_data(y), "{}", x.name);
    }
    // A split GGUF quantized again: the split keys do not leak into the new file.
    let re = d.join("re.gguf");
    ok(&["quantize", s(&split), "-o", s(&re), "--type", "Q4_K_M"]);
    let g = GgufFile::open(&re).unwrap();
    assert!(g.metadata.iter().all(|(k, _)| !is_split_key(k)));
}

#[test]
fn convert_splits_by_size_and_tensor_count_as_llama_gguf_split() {
    let t = setup();
    let d = &t.dir;
    let one = d.join("f16.gguf");
    let ck = s(&d.join("ckpt")).to_string();
    let conv = |extra: &[&str], out: &Path| {
        let mut a = vec![
            "convert",
            &ck,
            "-o",
            s(out),
            "--type",
            "f16",
            "--tokenizer-pre",
            "gpt-2",
        ];
        a.extend(extra);
        ok(&a);
    };
    conv(&[], &one);
    let total = GgufFile::open(&one).unwrap().tensors.len();
    let by_t = d.join("t.gguf");
    conv(&["--split-max-tensors", "10"], &by_t);
    let n = total.div_ceil(10);
    for i in 1..=n {
        let f = GgufFile::open_single(split_name(d, "t", i, n), Default::default()).unwrap();
        assert_eq!(
            f.tensors.len(),
            if i < n { 10 } else { total - 10 * (n - 1) }
        );
        assert_eq!(f.metadata.u64("split.no"), Some(i as u64 - 1));
        assert_eq!(f.metadata.u64("split.count"), Some(n as u64));
        assert_eq!(f.metadata.u64("split.tensors.count"), Some(total as u64));
        // all metadata in the first file only
        assert_eq!(f.metadata.str("general.architecture").is_some(), i == 1);
    }
    let by_s = d.join("s.gguf");
    conv(&["--split-max-size", "300K"], &by_s);
    let first = split_name(d, "s", 1, 1);
    assert!(
        !first.exists(),
        "300K must cut the model into several files"
    );
    let g = GgufFile::open(
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("s-00001-of-"))
            .unwrap(),
    )
    .unwrap();
    for p in g.parts() {
        let f = GgufFile::open_single(p.path(), Default::default()).unwrap();
        let data: u64 = f.tensors.iter().map(|t| t.size.div_ceil(32) * 32).sum();
        assert!(
            data <= 300_000,
            "{}: {data} bytes of tensor data",
            p.path().display()
        );
    }
    for (stem, m) in [("t", 1), ("s", g.parts().len())] {
        let merged = d.join(format!("{stem}-merged.gguf"));
        let first = split_name(d, stem, 1, if stem == "t" { n } else { m });
        ok(&["merge", s(&first), "-o", s(&merged)]);
        assert_eq!(
            sha(&merged),
            sha(&one),
            "{stem}: merged differs from the unsplit file"
        );
    }
    // A tensor larger than the split size: an error naming it, nothing written.
    let e = fails(&[
        "convert",
        &ck,
        "-o",
        s(&d.join("x.gguf")),
        "--tokenizer-pre",
        "gpt-2",
        "--split-max-size",
        "1K",
    ]);
    assert!(
        e.contains("token_embd.weight") && e.contains("split size"),
        "{e}"
    );
    assert!(!std::fs::read_dir(d).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("x")));
}

#[test]
fn a_missing_duplicated_or_foreign_shard_is_an_error_and_nothing_is_written() {
    let t = setup();
    let d = &t.dir;
    let m = s(&d.join("ref.gguf")).to_string();
    let job = |ty: &str, i: usize, tag: &str| {
        let dir = d.join(format!("{tag}{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let shard = format!("{i}/3");
        ok(&[
            "quantize",
            &m,
            "-o",
            s(&dir.join("m.gguf")),
            "--type",
            ty,
            "--shard",
            &shard,
        ]);
        split_name(&dir, "m", i, 3)
    };
    let good: Vec<PathBuf> = (1..=3).map(|i| job("Q4_0", i, "g")).collect();
    let foreign = job("Q5_0", 2, "f");
    let out = d.join("out.gguf");
    let merge = |files: &[&PathBuf]| {
        let mut a = vec!["merge"];
        a.extend(files.iter().map(|p| s(p)));
        a.extend(["-o", s(&out)]);
        let e = fails(&a);
        assert!(!out.exists(), "nothing is written: {e}");
        e
    };
    let e = merge(&[&good[0], &good[2]]);
    assert!(e.contains("2 of 3") && e.contains("missing"), "{e}");
    let e = merge(&[&good[0], &good[1], &good[1], &good[2]]);
    assert!(e.contains("duplicated") && e.contains(s(&good[1])), "{e}");
    let e = merge(&[&good[0], &foreign, &good[2]]);
    assert!(e.contains("foreign") && e.contains(s(&foreign)), "{e}");
    // Opening a shard alone names the first file; opening the first finds the others missing.
    let e = fails(&["inspect", s(&good[1])]);
    assert!(
        e.contains("open the first") && e.contains("m-00001-of-00003.gguf"),
        "{e}"
    );
    let e = fails(&["inspect", s(&good[0])]);
    assert!(
        e.contains("m-00002-of-00003.gguf") && e.contains("missing"),
        "{e}"
    );
    // --shard does not combine with the methods or other split policies.
    let e = fails(&[
        "quantize",
        &m,
        "-o",
        s(&out),
        "--type",
        "Q4_0",
        "--shard",
        "1/2",
        "--split-max-tensors",
        "3",
    ]);
    assert!(e.contains("--shard"), "{e}");
    let e = fails(&[
        "quantize",
        &m,
        "-o",
        s(&out),
        "--type",
        "Q4_0",
        "--shard",
        "3/2",
    ]);
    assert!(e.contains("3/2"), "{e}");

    // Partial imatrices: the same three errors.
    let cal = |i: usize, chunks: &str, tag: &str| {
        let p = d.join(format!("{tag}-im{i}.gguf"));
        let shard = format!("{i}/3");
        ok(&[
            "calibrate",
            &m,
            "--text",
            s(&d.join("calib.txt")),
            "--ctx",
            "32",
            "--chunks",
            chunks,
            "--shard",
            &shard,
            "-o",
            s(&p),
        ]);
        p
    };
    let parts: Vec<PathBuf> = (1..=3).map(|i| cal(i, "4", "g")).collect();
    let other = cal(3, "5", "f");
    let im_merge = |files: &[&PathBuf]| {
        let mut a = vec!["imatrix", "merge"];
        a.extend(files.iter().map(|p| s(p)));
        a.extend(["-o", s(&out)]);
        let e = fails(&a);
        assert!(!out.exists(), "nothing is written: {e}");
        e
    };
    let e = im_merge(&[&parts[0], &parts[1]]);
    assert!(e.contains("3 of 3") && e.contains("missing"), "{e}");
    let e = im_merge(&[&parts[0], &parts[1], &parts[1], &parts[2]]);
    assert!(e.contains("duplicated"), "{e}");
    let e = im_merge(&[&parts[0], &parts[1], &other]);
    assert!(e.contains("foreign") && e.contains(s(&other)), "{e}");
    let whole = d.join("whole.gguf");
    ok(&[
        "calibrate",
        &m,
        "--text",
        s(&d.join("calib.txt")),
        "--ctx",
        "32",
        "--chunks",
        "4",
        "-o",
        s(&whole),
    ]);
    let e = im_merge(&[&parts[0], &whole]);
    assert!(e.contains("partial and whole"), "{e}");
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn smollm2_as_1_2_and_4_jobs_is_the_one_process_build_and_llama_cpp_reads_it() {
    let fx = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let f32 = fx.join("smollm2-f32.gguf");
    let im = calibrate_as_shards(&f32, &texts().join("macbeth_gut.txt"), "128", "4", d);
    let with_im = d.join("imatrix");
    std::fs::create_dir_all(&with_im).unwrap();
    quantize_as_shards(&f32, "Q4_K_M", Some(&im), &with_im);

    // llama.cpp's own tools on kiln's files (tests/data/smollm2/llama-gguf-split.json, made by
    // scripts/llamacpp-split-reference.sh).
    let r = data_json("llama-gguf-split.json");
    let plain = d.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let one = quantize_as_shards(&f32, "Q4_K_M", None, &plain);
    assert_eq!(
        sha(&one),
        r["input_sha256"].as_str().unwrap(),
        "kiln's Q4_K_M changed: re-record the reference"
    );
    // kiln --split-max-tensors 68 = llama-gguf-split --split-max-tensors 68 of the unsplit file,
    // but for kiln's one extra key.
    let ks = d.join("k68");
    std::fs::create_dir_all(&ks).unwrap();
    ok(&[
        "quantize",
        s(&f32),
        "-o",
        s(&ks.join("m.gguf")),
        "--type",
        "Q4_K_M",
        "--split-max-tensors",
        "68",
    ]);
    let split = r["split"].as_object().unwrap();
    assert_eq!(split.len(), 4);
    for (name, want) in split {
        let f = GgufFile::open_single(ks.join(name), Default::default()).unwrap();
        let mut md = Metadata::new();
        for (k, v) in f.metadata.iter().filter(|(k, _)| *k != KEY_SPLIT_PLAN) {
            md.set(k, v.clone());
        }
        let out = d.join(format!("nokey-{name}"));
        f.write_with_metadata(md, &out).unwrap();
        assert_eq!(
            &sha(&out),
            want.as_str().unwrap(),
            "{name} differs from llama-gguf-split's"
        );
    }
    // llama-gguf-split --merge of kiln's four shards = kiln's unsplit file with the split keys
    // llama.cpp keeps (split.count set to 0).
    let first = GgufFile::open_single(
        plain.join("split4/m-00001-of-00004.gguf"),
        Default::default(),
    )
    .unwrap();
    let u = GgufFile::open(&one).unwrap();
    // (gguf_merge sets split.count to 0 on the first file, which moves it last, then copies.)
    let mut md = u.metadata.clone();
    for (k, v) in first
        .metadata
        .iter()
        .filter(|(k, _)| is_split_key(k) && *k != "split.count")
    {
        md.set(k, v.clone());
    }
    md.set("split.count", Value::U16(0));
    let out = d.join("as-llama-merge.gguf");
    u.write_with_metadata(md, &out).unwrap();
    assert_eq!(sha(&out), r["merge_of_shards_4_sha256"].as_str().unwrap());
    // llama.cpp loads the split files and gives the unsplit file's perplexity.
    let p = &r["perplexity"];
    assert_eq!(p["unsplit"], p["split_4"]);
}
