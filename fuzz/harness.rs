//! What each fuzz target does with its input. Shared by the cargo-fuzz targets (`fuzz_targets/`)
//! and the regression test that replays the seeds and every crash found
//! (`tests/fuzz_regressions.rs`), so both run exactly the same code. Every function must return
//! (an `Err` is fine) for any input: a panic, abort, hang or unbounded allocation is a bug.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A private scratch directory for the path-based readers (tmpfs when there is one).
pub fn scratch(target: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("kiln-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

fn put(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("scratch write");
    p
}

/// The GGUF reader: header, metadata, tensor table, then every tensor's data decoded to f32.
pub fn gguf(dir: &Path, data: &[u8]) {
    let p = put(dir, "model.gguf", data);
    if let Ok(g) = convert::gguf::GgufFile::open(&p) {
        let _ = convert::ModelConfig::from_gguf(&p, &g.metadata);
        let _ = convert::tokenizer::tokenizer_json_from_gguf(&p, &g.metadata);
        for t in &g.tensors {
            let _ = g.tensor_f32(t);
        }
    }
}

/// The safetensors reader: header, then every tensor converted to f32.
pub fn safetensors(dir: &Path, data: &[u8]) {
    let p = put(dir, "model.safetensors", data);
    if let Ok(f) = convert::safetensors::SafetensorsFile::open(&p) {
        for t in &f.tensors {
            let mut out = vec![0f32; t.numel()];
            convert::safetensors::to_f32(t.dtype, f.data(t), &mut out);
        }
    }
}

/// config.json ingestion.
pub fn config_json(_dir: &Path, data: &[u8]) {
    let p = Path::new("config.json");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = convert::ModelConfig::from_hf_json(p, text) {
            let _ = c.validate(p);
            let _ = c.to_hf_json();
        }
    }
}

/// tokenizer.json (+ pre-tokenizer detection through the tokenizers library) ingestion.
pub fn tokenizer_json(dir: &Path, data: &[u8]) {
    put(dir, "tokenizer.json", data);
    let _ = convert::tokenizer::hf_tokenizer_metadata(dir, 512, None);
}

/// llama.cpp's GGUF imatrix format.
pub fn imatrix_gguf(dir: &Path, data: &[u8]) {
    let p = put(dir, "imatrix.gguf", data);
    if let Ok(m) = calibrate::Imatrix::read_gguf(&p) {
        let _ = m.importance("blk.0.attn_q.weight");
    }
}

/// llama.cpp's legacy `.dat` imatrix format.
pub fn imatrix_dat(dir: &Path, data: &[u8]) {
    let p = put(dir, "imatrix.dat", data);
    if let Ok(m) = calibrate::Imatrix::read_dat(&p) {
        let _ = m.importance("blk.0.attn_q.weight");
    }
}

/// kiln.toml, parsed and validated as `kiln build` does.
pub fn kiln_toml(_dir: &Path, data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pipeline::BuildFile::parse(Path::new("kiln.toml"), text);
    }
}
