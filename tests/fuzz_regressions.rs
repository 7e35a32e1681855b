//! Replays every committed fuzz seed and every input a fuzzer ever crashed on
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) through the very harness the
//! cargo-fuzz targets run (`fuzz/harness.rs`), as ordinary tests: a reader that panics again on
//! any of them fails CI. Fuzzing itself is run by hand (fuzz/README.md).

use std::path::{Path, PathBuf};

#[path = "../fuzz/harness.rs"]
mod harness;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut v: Vec<PathBuf> = ["seeds", "regressions"]
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d).join(target)).ok())
        .flat_map(|rd| rd.flatten().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn replay(target: &str, f: fn(&Path, &[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds for {target}");
    let dir = tempfile::tempdir().unwrap();
    for p in files {
        let data = std::fs::read(&p).unwrap();
        let r = std::panic::catch_unwind(|| f(dir.path(), &data));
        assert!(r.is_ok(), "{target}: {} panics", p.display());
        // Truncations of every seed are the commonest hostile input; each must fail cleanly.
        for cut in [
            0,
            1,
            4,
            8,
            16,
            24,
            data.len() / 2,
            data.len().saturating_sub(1),
        ] {
            let d = &data[..cut.min(data.len())];
            let r = std::panic::catch_unwind(|| f(dir.path(), d));
            assert!(r.is_ok(), "{target}: {} cut at {cut} panics", p.display());
        }
    }
}

#[test]
fn gguf() {
    replay("gguf", harness::gguf);
}

#[test]
fn safetensors() {
    replay("safetensors", harness::safetensors);
}

#[test]
fn config_json() {
    replay("config_json", harness::config_json);
}

#[test]
fn tokenizer_json() {
    replay("tokenizer_json", harness::tokenizer_json);
}

#[test]
fn imatrix_gguf() {
    replay("imatrix_gguf", harness::imatrix_gguf);
}

#[test]
fn imatrix_dat() {
    replay("imatrix_dat", harness::imatrix_dat);
}

#[test]
fn kiln_toml() {
    replay("kiln_toml", harness::kiln_toml);
}
