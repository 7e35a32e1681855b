//! Issue #9 on the real model: on the continuous-weight copy of the fixture
//! (`scripts/fetch-fixture.sh` makes `.fixtures/smollm2-cont-hf`), calibrated on
//! macbeth_gut.txt and evaluated on hamlet_gut.txt (llama.cpp protocol, ctx 512, 8 chunks),
//! `kiln build` with `method = ["search", "alloc"]` gives a Q4_K_M-budget artifact, and with
//! `method = ["search", "awq", "gptq", "alloc"]` a Q5_K_M one, each no larger than the
//! llama.cpp-style artifact of its mix + imatrix with a mean KLD at most 0.8× its KLD, in
//! llama.cpp's types only.
//!
//! Slow (a sensitivity profile of 211 matrices, GPTQ over every matrix): `#[ignore]`d, run by
//! `.ci/run`.

mod common;

use std::process::Command;

#[test]
#[ignore = "needs the fixture; several minutes; run by .ci/run"]
fn methods_beat_the_imatrix_baseline_at_the_same_size() {
    let fx = common::fixtures();
    let model = fx.join("smollm2-cont-hf");
    assert!(
        model.join("model.safetensors").exists(),
        "run scripts/fetch-fixture.sh"
    );
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let toml = tmp.path().join("kiln.toml");
    std::fs::write(
        &toml,
        format!(
            r#"
[model]
path = "{model}"
name = "cont"

[calibration]
texts = ["{texts}/macbeth_gut.txt"]
ctx = 512
chunks = 16

[evaluation]
texts = ["{texts}/hamlet_gut.txt"]
ctx = 512
chunks = 8

[bench]
pp = 16
tg = 4
reps = 1

[[target]]
name = "base"
type = "Q4_K_M"
imatrix = true

[[target]]
name = "kiln"
type = "Q4_K_M"
imatrix = true
method = ["search", "alloc"]

[[target]]
name = "base5"
type = "Q5_K_M"
imatrix = true

[[target]]
name = "kiln5"
type = "Q5_K_M"
imatrix = true
method = ["search", "awq", "gptq", "alloc"]
"#,
            model = model.display(),
            texts = fx.join("texts").display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "-q",
            "build",
            toml.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    for (i, name, base, mix) in [
        (1, "kiln", "base", "Q4_K_M"),
        (3, "kiln5", "base5", "Q5_K_M"),
    ] {
        let t = &r["targets"][i];
        let m = &t["method"];
        eprintln!(
            "{mix} {:?}: baseline {} bytes KLD {:.5} → kiln {} bytes KLD {:.5} ({:.3}×)",
            m["methods"],
            m["baseline_bytes"],
            m["baseline_kld_mean"].as_f64().unwrap(),
            t["bytes"],
            t["parity"]["kld"]["mean"].as_f64().unwrap(),
            m["kld_ratio"].as_f64().unwrap()
        );
        assert_eq!(m["baseline"], base);
        assert!(t["bytes"].as_u64().unwrap() <= m["baseline_bytes"].as_u64().unwrap());
        assert!(m["kld_ratio"].as_f64().unwrap() <= 0.8, "{mix}: {m}");
        // Every tensor in a type llama.cpp runs, read back by kiln's strict reader.
        let g = convert::gguf::GgufFile::open(out.join(format!("cont-{name}.gguf"))).unwrap();
        use quantize::GgmlType::*;
        for x in &g.tensors {
            let ok = match x.ty {
                F32 | F16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | IQ4NL => true,
                Q2K | Q3K | Q4K | Q5K | Q6K | IQ4XS => x.dims[0] % 256 == 0,
                _ => false,
            };
            assert!(ok, "{}: {} on rows of {}", x.name, x.ty, x.dims[0]);
        }
    }
}
