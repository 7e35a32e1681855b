//! Checks on the real model, SmolLM2-135M-Instruct. They need the fixture that
//! `scripts/fetch-fixture.sh` makes, so they are `#[ignore]`d in the default run and `.ci/run`
//! runs them explicitly after fetching it (`cargo test --release --test fixture -- --ignored`).

use std::collections::BTreeMap;
use std::path::Path;

use convert::gguf::GgufFile;
use convert::safetensors::SafetensorsFile;
use convert::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};

mod common;
use common::{data_json as data, fixtures, kiln_ok};

fn kiln(args: &[&str]) {
    kiln_ok(args);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of each tensor's little-endian f32 bytes.
fn tensor_hashes(path: &Path) -> BTreeMap<String, (Vec<usize>, String)> {
    let st = SafetensorsFile::open(path).unwrap();
    st.tensors
        .iter()
        .map(|t| {
            assert_eq!(t.dtype, convert::safetensors::Dtype::F32, "{}", t.name);
            (
                t.name.clone(),
                (t.shape.clone(), hex(&Sha256::digest(st.data(t)))),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn export_reproduces_all_272_reference_hashes() {
    let got = tensor_hashes(&fixtures().join("smollm2-hf/model.safetensors"));
    let want = data("hf-f32-tensors.json");
    let want = want["tensors"].as_object().unwrap();
    assert_eq!(want.len(), 272);
    assert_eq!(got.len(), 272);
    for (name, w) in want {
        let (shape, h) = got.get(name).unwrap_or_else(|| panic!("missing {name}"));
        let ws: Vec<usize> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, &ws, "{name}");
        assert_eq!(h, w["sha256_of_le_bytes"].as_str().unwrap(), "{name}");
    }
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn hf_to_f32_gguf_to_hf_round_trip() {
    let fx = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("f32.gguf");
    let back = tmp.path().join("back");
    kiln(&[
        "convert",
        fx.join("smollm2-hf").to_str().unwrap(),
        "-o",
        gguf.to_str().unwrap(),
        "--type",
        "f32",
    ]);
    kiln(&["export", gguf.to_str().unwrap(), back.to_str().unwrap()]);
    assert_eq!(
        tensor_hashes(&back.join("model.safetensors")),
        tensor_hashes(&fx.join("smollm2-hf/model.safetensors"))
    );
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        let a: serde_json::Value =
            serde_json::from_slice(&std::fs::read(back.join(f)).unwrap()).unwrap();
        let b: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fx.join("smollm2-hf").join(f)).unwrap()).unwrap();
        assert_eq!(a, b, "{f}");
    }
    // The GGUF carries what llama.cpp's own file does: the tokenizer arrays are identical and
    // the hyper-parameters and general.* keys agree.
    let ours = GgufFile::open(&gguf).unwrap();
    let theirs = GgufFile::open(fx.join("smollm2-q4_1.gguf")).unwrap();
    for (k, v) in theirs.metadata.iter() {
        if matches!(k, "general.file_type" | "tokenizer.ggml.add_space_prefix") {
            continue;
        }
        assert_eq!(ours.metadata.get(k), Some(v), "{k}");
    }
    assert_eq!(ours.metadata.str("tokenizer.ggml.pre"), Some("smollm"));
}

#[test]
#[ignore = "needs the fixture (scripts/fetch-fixture.sh)"]
fn tokenizer_from_gguf_gives_the_reference_ids() {
    let fx = fixtures();
    let reference = data("hamlet-512.json");
    let want: Vec<u32> = reference["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let text = std::fs::read_to_string(fx.join("texts/hamlet_gut.txt")).unwrap();
    let chars = reference["text_chars_used"].as_u64().unwrap() as usize;
    let head: String = text.chars().take(chars).collect();
    // From llama.cpp's own GGUF and from the checkpoint directory kiln exported.
    let g = GgufFile::open(fx.join("smollm2-q4_1.gguf")).unwrap();
    let from_gguf = Tokenizer::from_gguf(g.path(), &g.metadata).unwrap();
    let dir = fx.join("smollm2-hf");
    let cfg = convert::ModelConfig::from_hf_file(&dir.join("config.json")).unwrap();
    let from_dir = Tokenizer::from_hf_dir(&dir, &cfg, None).unwrap();
    for tok in [from_gguf, from_dir] {
        let ids = tok.encode(&head).unwrap();
        assert!(ids.len() >= want.len());
        assert_eq!(&ids[..want.len()], &want[..]);
        assert_eq!(tok.decode(&ids).unwrap(), head);
    }
}
