//! Hostile and broken inputs: each gives a clear message naming the file (and tensor), exit
//! code 2, and nothing at the output path.

use std::path::{Path, PathBuf};
use std::process::Command;

use convert::testing::{write_checkpoint, TinySpec};

fn kiln(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Case {
    _tmp: tempfile::TempDir,
    ckpt: PathBuf,
    out: PathBuf,
}

fn case(spec: TinySpec) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    write_checkpoint(&ckpt, &spec).unwrap();
    let out = tmp.path().join("out.gguf");
    Case {
        _tmp: tmp,
        ckpt,
        out,
    }
}

/// Splits a safetensors file into (header JSON text, data).
fn split(path: &Path) -> (String, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    (
        String::from_utf8(b[8..8 + n].to_vec()).unwrap(),
        b[8 + n..].to_vec(),
    )
}

fn join(path: &Path, header: &[u8], data: &[u8]) {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

fn edit_header(path: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let (h, d) = split(path);
    let mut j: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&h).unwrap();
    f(&mut j);
    join(path, &serde_json::to_vec(&j).unwrap(), &d);
}

/// Runs `kiln convert` on the case and checks the failure.
fn expect_failure(c: &Case, must_name: &[&str]) {
    let (code, err) = kiln(&[
        "convert",
        c.ckpt.to_str().unwrap(),
        "-o",
        c.out.to_str().unwrap(),
        "--tokenizer-pre",
        "gpt-2",
    ]);
    assert_eq!(code, 2, "exit code; stderr: {err}");
    for m in must_name {
        assert!(err.contains(m), "message does not name {m:?}: {err}");
    }
    assert!(!c.out.exists(), "output written despite the error");
    let dir = c.out.parent().unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        assert!(
            !e.file_name().to_string_lossy().contains("kiln-tmp"),
            "temporary file left behind"
        );
    }
}

const Q: &str = "model.layers.0.self_attn.q_proj.weight";

#[test]
fn good_checkpoint_converts() {
    let c = case(TinySpec::default());
    let (code, err) = kiln(&[
        "convert",
        c.ckpt.to_str().unwrap(),
        "-o",
        c.out.to_str().unwrap(),
        "--tokenizer-pre",
        "gpt-2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(c.out.exists());
}

#[test]
fn truncated_file() {
    let c = case(TinySpec::default());
    let p = c.ckpt.join("model.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 1000]).unwrap();
    expect_failure(&c, &["model.safetensors", "out of range"]);
}

#[test]
fn header_length_past_the_end() {
    let c = case(TinySpec::default());
    let p = c.ckpt.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len() as u64 * 2;
    b[..8].copy_from_slice(&n.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    expect_failure(&c, &["model.safetensors", "header length"]);
}

#[test]
fn absurd_header_length() {
    let c = case(TinySpec::default());
    let p = c.ckpt.join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    expect_failure(&c, &["model.safetensors", "over the cap"]);
}

#[test]
fn overlapping_offsets() {
    let c = case(TinySpec::default());
    edit_header(&c.ckpt.join("model.safetensors"), |j| {
        let a = j["model.layers.0.input_layernorm.weight"]["data_offsets"].clone();
        j.get_mut("model.layers.1.input_layernorm.weight").unwrap()["data_offsets"] = a;
    });
    expect_failure(
        &c,
        &["model.safetensors", "overlaps", "input_layernorm.weight"],
    );
}

#[test]
fn out_of_range_offsets() {
    let c = case(TinySpec::default());
    edit_header(&c.ckpt.join("model.safetensors"), |j| {
        j.get_mut(Q).unwrap()["data_offsets"] =
            serde_json::json!([1u64 << 40, (1u64 << 40) + 16384]);
    });
    expect_failure(&c, &["model.safetensors", Q, "out of range"]);
}

#[test]
fn unknown_dtypes() {
    for dtype in ["I64", "F8_E4M3", "Q9_Z"] {
        let c = case(TinySpec::default());
        edit_header(&c.ckpt.join("model.safetensors"), |j| {
            j.get_mut(Q).unwrap()["dtype"] = dtype.into();
        });
        expect_failure(&c, &["model.safetensors", Q, dtype, "not supported"]);
    }
}

#[test]
fn byte_length_disagrees_with_shape() {
    let c = case(TinySpec::default());
    edit_header(&c.ckpt.join("model.safetensors"), |j| {
        j.get_mut(Q).unwrap()["shape"] = serde_json::json!([64, 32]);
    });
    expect_failure(&c, &["model.safetensors", Q, "needs"]);
}

#[test]
fn shape_disagrees_with_config() {
    let c = case(TinySpec::default());
    let p = c.ckpt.join("config.json");
    let cfg = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    std::fs::write(&p, cfg).unwrap();
    expect_failure(
        &c,
        &[
            "model.safetensors",
            "model.layers.0.mlp.gate_proj.weight",
            "[128, 64]",
            "disagrees with config.json",
        ],
    );
}

#[test]
fn missing_shard() {
    let c = case(TinySpec {
        shards: 3,
        ..Default::default()
    });
    std::fs::remove_file(c.ckpt.join("model-00002-of-00003.safetensors")).unwrap();
    expect_failure(&c, &["model-00002-of-00003.safetensors", "missing shard"]);
}

#[test]
fn missing_tensor() {
    let c = case(TinySpec::default());
    edit_header(&c.ckpt.join("model.safetensors"), |j| {
        j.remove("model.layers.1.mlp.gate_proj.weight");
    });
    expect_failure(
        &c,
        &[
            "ckpt",
            "missing tensor `model.layers.1.mlp.gate_proj.weight`",
        ],
    );
}

#[test]
fn duplicate_tensor_name() {
    let c = case(TinySpec::default());
    let p = c.ckpt.join("model.safetensors");
    let (h, d) = split(&p);
    // Insert a second entry for the q projection, with the same data range, as raw JSON text.
    let j: serde_json::Value = serde_json::from_str(&h).unwrap();
    let dup = format!("{{\"{Q}\":{},", j[Q]);
    let h2 = h.replacen('{', &dup, 1);
    join(&p, h2.as_bytes(), &d);
    expect_failure(&c, &["model.safetensors", Q, "duplicate"]);
}

#[test]
fn invalid_utf8_in_header() {
    let c = case(TinySpec::default());
    let p = c.ckpt.join("model.safetensors");
    let (h, d) = split(&p);
    let mut hb = h.into_bytes();
    let at = hb.iter().position(|&b| b == b'q').unwrap();
    hb[at] = 0xFF;
    join(&p, &hb, &d);
    expect_failure(&c, &["model.safetensors", "not valid UTF-8"]);
}

#[test]
fn unsupported_model_type_lists_the_supported() {
    let c = case(TinySpec::default());
    let p = c.ckpt.join("config.json");
    let cfg = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt_neox\"");
    std::fs::write(&p, cfg).unwrap();
    expect_failure(
        &c,
        &[
            "config.json",
            "gpt_neox",
            "llama, mistral, qwen2, qwen3, smollm3, phi3, gemma3_text",
        ],
    );
}

/// Sets `key` of the case's config.json to `value` (JSON text).
fn set_config_key(c: &Case, key: &str, value: &str) {
    let p = c.ckpt.join("config.json");
    let mut cfg: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg.insert(key.into(), serde_json::from_str(value).unwrap());
    std::fs::write(&p, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
}

#[test]
fn unsupported_rope_scaling_names_the_key_the_type_and_the_supported() {
    let c = case(TinySpec::default());
    set_config_key(
        &c,
        "rope_scaling",
        r#"{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048}"#,
    );
    expect_failure(
        &c,
        &[
            "config.json",
            "rope_scaling",
            "yarn",
            "none, default, linear",
        ],
    );
}

#[test]
fn keys_that_change_the_function_are_refused_by_name() {
    // A key kiln does not know at all, and known keys set to what kiln does not implement.
    for (spec, key, value, names) in [
        (
            TinySpec::default(),
            "attn_logit_softcapping",
            "50.0",
            vec!["attn_logit_softcapping", "50"],
        ),
        (
            TinySpec::default(),
            "some_new_switch",
            "true",
            vec!["some_new_switch", "does not implement"],
        ),
        (
            TinySpec::default(),
            "hidden_act",
            "\"gelu\"",
            vec!["hidden_act", "gelu", "silu"],
        ),
        (
            TinySpec {
                arch: convert::Arch::Qwen2,
                ..Default::default()
            },
            "use_sliding_window",
            "true",
            vec!["use_sliding_window", "true"],
        ),
        (
            TinySpec {
                arch: convert::Arch::Gemma3,
                layers: 6,
                heads: 4,
                kv_heads: 1,
                ..Default::default()
            },
            "attn_logit_softcapping",
            "50.0",
            vec!["attn_logit_softcapping"],
        ),
        (
            TinySpec {
                arch: convert::Arch::Gemma3,
                layers: 6,
                heads: 4,
                kv_heads: 1,
                ..Default::default()
            },
            "use_bidirectional_attention",
            "true",
            vec!["use_bidirectional_attention"],
        ),
    ] {
        let c = case(spec);
        set_config_key(&c, key, value);
        expect_failure(
            &c,
            &names
                .iter()
                .map(|s| &**s)
                .chain(["config.json"])
                .collect::<Vec<_>>(),
        );
    }
}

#[test]
fn an_unsupported_architecture_gguf_is_refused_but_inspected() {
    use convert::gguf::{GgufWriter, Metadata, TensorSpec, Value};
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("phi2.gguf");
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("phi2".into()));
    md.set("phi2.block_count", Value::U32(1));
    let specs = vec![TensorSpec {
        name: "token_embd.weight".into(),
        dims: vec![32, 4],
        ty: quantize::GgmlType::F32,
    }];
    let w = GgufWriter::new(&p, md, specs).unwrap();
    let mut f = std::fs::File::create(&p).unwrap();
    w.write(&p, &mut f, |_| Ok(vec![0u8; 512])).unwrap();
    drop(f);
    let (code, err) = kiln(&[
        "perplexity",
        p.to_str().unwrap(),
        "--text",
        p.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    for m in [
        "phi2.gguf",
        "general.architecture",
        "phi2",
        "llama, qwen2, qwen3, smollm3, phi3, gemma3",
    ] {
        assert!(err.contains(m), "{m:?} not in {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["inspect", p.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inspect of a well-formed GGUF: {text}"
    );
    assert!(
        text.contains("phi2.block_count") && text.contains("token_embd.weight"),
        "{text}"
    );
    assert!(text.contains("kiln does not run this model"), "{text}");
}

/// A small valid GGUF with one string array in its metadata.
fn small_gguf(path: &Path) {
    use convert::gguf::{GgufWriter, Metadata, TensorSpec, Value};
    let mut md = Metadata::new();
    md.set("general.architecture", Value::String("llama".into()));
    md.set(
        "x.arr",
        Value::string_array(["a".to_string(), "b".to_string()]),
    );
    let t = vec![TensorSpec {
        name: "w".into(),
        dims: vec![4],
        ty: convert::GgmlType::F32,
    }];
    let w = GgufWriter::new(path, md, t).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    w.write(path, &mut f, |_| Ok(vec![0u8; 16])).unwrap();
}

#[test]
fn absurd_gguf_array_length_and_truncated_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let g = tmp.path().join("bad.gguf");
    small_gguf(&g);
    let mut b = std::fs::read(&g).unwrap();
    // The array's count follows its element type (8 = string) right after key "x.arr".
    let key = b.windows(5).position(|w| w == b"x.arr").unwrap();
    let count_at = key + 5 + 4 + 4;
    b[count_at..count_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&g, &b).unwrap();
    let out = tmp.path().join("exported");
    let (code, err) = kiln(&["export", g.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.gguf") && err.contains("x.arr") && err.contains("elements"),
        "{err}"
    );
    assert!(!out.exists());

    small_gguf(&g);
    let b = std::fs::read(&g).unwrap();
    // The tensor holds 16 bytes, padded to 32: cut into its data.
    std::fs::write(&g, &b[..b.len() - 24]).unwrap();
    let (code, err) = kiln(&["inspect", g.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.gguf") && err.contains("tensor `w`") && err.contains("past the end"),
        "{err}"
    );
    std::fs::write(&g, &b[..20]).unwrap();
    let (code, err) = kiln(&["inspect", g.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn output_path_that_is_a_directory() {
    let c = case(TinySpec::default());
    std::fs::create_dir(&c.out).unwrap();
    let (code, err) = kiln(&[
        "convert",
        c.ckpt.to_str().unwrap(),
        "-o",
        c.out.to_str().unwrap(),
        "--tokenizer-pre",
        "gpt-2",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("out.gguf") && err.contains("directory"),
        "{err}"
    );
}
