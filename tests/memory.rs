//! Peak memory of a conversion: converting a generated checkpoint of more than 2 GB (F32)
//! keeps the peak resident set under 600 MB, because tensors stream one at a time from the
//! memory map and each one's mapped pages are dropped once read.
//!
//! Slow (writes ~2.7 GB): `#[ignore]`d, run explicitly by `.ci/run`.

use std::process::Command;

use convert::testing::{write_checkpoint, TinySpec};

/// Peak RSS (bytes) of the largest child this process has waited for.
fn children_max_rss() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss as u64 * 1024
    }
}

#[test]
#[ignore = "writes a 2.7 GB checkpoint; run by .ci/run"]
fn converting_a_large_checkpoint_keeps_peak_rss_bounded() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ckpt = tmp.path().join("big");
    let spec = TinySpec {
        hidden: 2048,
        intermediate: 5632,
        layers: 12,
        heads: 16,
        kv_heads: 4,
        vocab: 32000,
        shards: 6,
        ..Default::default()
    };
    write_checkpoint(&ckpt, &spec).unwrap();
    let bytes: u64 = std::fs::read_dir(&ckpt)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes > 2_000_000_000, "checkpoint is only {bytes} bytes");
    let out = tmp.path().join("big-f16.gguf");
    let t0 = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "convert",
            ckpt.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--type",
            "f16",
            "--tokenizer-pre",
            "gpt-2",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rss = children_max_rss();
    eprintln!(
        "converted {:.2} GB F32 → F16 in {:.1}s, peak RSS {:.0} MB",
        bytes as f64 / 1e9,
        t0.elapsed().as_secs_f64(),
        rss as f64 / 1e6
    );
    assert!(rss < 600_000_000, "peak RSS {rss} bytes");
}
