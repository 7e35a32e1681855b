//! Peak memory: converting a generated checkpoint of more than 2 GB (F32) keeps the peak
//! resident set under 600 MB, and converting and quantizing one larger than half the machine's
//! RAM stays under 1.5 × its largest tensor + 256 MB, because tensors stream one at a time from
//! the memory map and each one's mapped pages are dropped once read.
//!
//! Slow (writes 2.7 GB, then more than half the RAM): `#[ignore]`d, run explicitly by `.ci/run`.

use std::process::Command;

use convert::testing::{write_checkpoint, TinySpec};

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
    let (rss, secs) = kiln_peak_rss(&[
        "convert",
        ckpt.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "f16",
        "--tokenizer-pre",
        "gpt-2",
    ]);
    eprintln!(
        "converted {:.2} GB F32 → F16 in {secs:.1}s, peak RSS {:.0} MB",
        bytes as f64 / 1e9,
        rss as f64 / 1e6
    );
    assert!(rss < 600_000_000, "peak RSS {rss} bytes");
}

/// MemTotal of this machine, bytes.
fn mem_total() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kb * 1024
}

/// Peak RSS (bytes) and seconds of one kiln run, as GNU time reports it. (The rusage of a
/// child spawned straight from this process would not do: Rust spawns with vfork, and Linux
/// records the parent's high-water mark into the child's `ru_maxrss` when it execs — this
/// test process holds a tensor-sized generation buffer.)
fn kiln_peak_rss(args: &[&str]) -> (u64, f64) {
    let (rss, secs, _) = kiln_time(args);
    (rss, secs)
}

/// Issue #8: converting and quantizing a generated checkpoint larger than half the machine's
/// RAM keeps the peak resident set under 1.5 × the largest tensor + 256 MB — kiln streams one
/// tensor at a time and never holds the model.
#[test]
#[ignore = "writes a checkpoint larger than half the RAM (~13 GB on 24 GiB); run by .ci/run"]
fn more_than_half_the_ram_converts_and_quantizes_in_bounded_memory() {
    let half = mem_total() / 2;
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let ckpt = tmp.path().join("huge");
    let mut spec = TinySpec {
        hidden: 4096,
        intermediate: 11008,
        layers: 1,
        heads: 32,
        kv_heads: 8,
        vocab: 32000,
        ..Default::default()
    };
    let bytes_of = |s: &TinySpec| -> (u64, u64) {
        let t = convert::testing::hf_tensors(s);
        let sizes: Vec<u64> = t
            .iter()
            .map(|(_, sh)| sh.iter().product::<usize>() as u64 * 4)
            .collect();
        (sizes.iter().sum(), *sizes.iter().max().unwrap())
    };
    while bytes_of(&spec).0 <= half + (256 << 20) {
        spec.layers += 1;
    }
    let (total, largest) = bytes_of(&spec);
    spec.shards = (total / (4 << 30) + 1) as usize;
    // Disk: the checkpoint plus the largest output (F16: half of it; Q8_0: 34/128) plus slack.
    let free = fs_free(tmp.path());
    let slack = 512 << 20;
    let need_q8 = total + total * 34 / 128 + slack;
    let need_f16 = total + total / 2 + slack;
    if free < need_q8 {
        panic!(
            "{need_q8} bytes of free disk needed under {}, {free} available",
            tmp.path().display()
        );
    }
    // Without room for the F16 output the F16 conversion is skipped, loudly (`.ci/run` shows
    // this test's output); its streaming is still checked at 2.7 GB by the test above, and
    // quantizing reads the checkpoint the same way.
    let with_f16 = free >= need_f16;
    if !with_f16 {
        eprintln!(
            "SKIPPED convert f16 at this size: {need_f16} bytes of free disk needed under {}, {free} available",
            tmp.path().display()
        );
    }
    let t0 = std::time::Instant::now();
    write_checkpoint(&ckpt, &spec).unwrap();
    eprintln!(
        "generated {:.2} GB ({} layers, largest tensor {:.0} MB; RAM {:.1} GB) in {:.0}s",
        total as f64 / 1e9,
        spec.layers,
        largest as f64 / 1e6,
        2.0 * half as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    let bound = largest * 3 / 2 + (256 << 20);
    let out = tmp.path().join("out.gguf");
    let (ck, o) = (ckpt.to_str().unwrap(), out.to_str().unwrap());
    for (what, args) in [
        (
            "convert f16",
            vec![
                "convert",
                ck,
                "-o",
                o,
                "--type",
                "f16",
                "--tokenizer-pre",
                "gpt-2",
            ],
        ),
        (
            "quantize Q8_0",
            vec![
                "quantize",
                ck,
                "-o",
                o,
                "--type",
                "Q8_0",
                "--tokenizer-pre",
                "gpt-2",
            ],
        ),
    ] {
        if what == "convert f16" && !with_f16 {
            continue;
        }
        let (rss, secs) = kiln_peak_rss(&args);
        eprintln!(
            "{what}: peak RSS {:.0} MB (bound {:.0} MB) in {secs:.0}s",
            rss as f64 / 1e6,
            bound as f64 / 1e6
        );
        assert!(rss < bound, "{what}: peak RSS {rss} ≥ bound {bound}");
        std::fs::remove_file(&out).unwrap();
    }

    // Issue #24: the same Q8_0 as 2 × `--shard`, the input evicted from the page cache before
    // each run: shard 2 (which carries no metadata, so no digest of the whole input) reads
    // from disk no more than its own tensors' bytes (plus read-ahead slack); run concurrently,
    // each shard's peak RSS stays under the bound. (Shard 1 also streams the whole input once
    // for `kiln.source.sha256`.)
    evict(&ckpt);
    let (_, one_secs, one_in) = kiln_time(&[
        "quantize",
        ck,
        "-o",
        o,
        "--type",
        "Q8_0",
        "--tokenizer-pre",
        "gpt-2",
    ]);
    std::fs::remove_file(&out).unwrap();
    // Shard 2 alone: what it reads from disk is what it touches.
    evict(&ckpt);
    let alone = tmp.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    let alone_out = alone.join("out.gguf");
    let (_, alone_secs, alone_in) = kiln_time(&[
        "quantize",
        ck,
        "-o",
        alone_out.to_str().unwrap(),
        "--type",
        "Q8_0",
        "--tokenizer-pre",
        "gpt-2",
        "--shard",
        "2/2",
    ]);
    let g = convert::gguf::GgufFile::open_single(
        alone.join("out-00002-of-00002.gguf"),
        Default::default(),
    )
    .unwrap();
    let own: u64 = g.tensors.iter().map(|t| t.n_elements() * 4).sum();
    eprintln!(
        "shard 2/2 alone: {} tensors, {:.2} GB of the input; read {:.2} GB from disk in {alone_secs:.0}s",
        g.tensors.len(),
        own as f64 / 1e9,
        alone_in as f64 / 1e9
    );
    assert!(
        alone_in <= own + own / 50 + (64 << 20),
        "shard 2 read {alone_in} bytes for {own} bytes of its own tensors"
    );
    drop(g);
    std::fs::remove_dir_all(&alone).unwrap();
    // Both shards at once.
    evict(&ckpt);
    let t0 = std::time::Instant::now();
    let jobs: Vec<_> = (1..=2)
        .map(|i| {
            let dir = tmp.path().join(format!("shard{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let o = dir.join("out.gguf").to_str().unwrap().to_string();
            let ck = ck.to_string();
            std::thread::spawn(move || {
                let shard = format!("{i}/2");
                kiln_time(&[
                    "quantize",
                    &ck,
                    "-o",
                    &o,
                    "--type",
                    "Q8_0",
                    "--tokenizer-pre",
                    "gpt-2",
                    "--shard",
                    &shard,
                ])
            })
        })
        .collect();
    let res: Vec<(u64, f64, u64)> = jobs.into_iter().map(|j| j.join().unwrap()).collect();
    let both = t0.elapsed().as_secs_f64();
    for (i, (rss, secs, inputs)) in res.iter().enumerate() {
        let file = tmp
            .path()
            .join(format!("shard{}/out-0000{}-of-00002.gguf", i + 1, i + 1));
        let g = convert::gguf::GgufFile::open_single(&file, Default::default()).unwrap();
        let own: u64 = g.tensors.iter().map(|t| t.n_elements() * 4).sum();
        eprintln!(
            "shard {}/2: {} tensors, {:.2} GB of the input; read {:.2} GB from disk, peak RSS {:.0} MB, {secs:.0}s",
            i + 1,
            g.tensors.len(),
            own as f64 / 1e9,
            *inputs as f64 / 1e9,
            *rss as f64 / 1e6
        );
        assert!(
            *rss < bound,
            "shard {}: peak RSS {rss} ≥ bound {bound}",
            i + 1
        );
    }
    eprintln!(
        "13 GB → Q8_0: one process {one_secs:.0}s (read {:.2} GB), 2 shards concurrently {both:.0}s: ratio {:.2}",
        one_in as f64 / 1e9,
        one_secs / both
    );
}

/// Drops the files under `dir` from the page cache (they are clean: `posix_fadvise`
/// DONTNEED evicts them), so the next run's disk reads show what it touches.
fn evict(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let f = std::fs::File::open(e.path()).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: an advisory call on an open descriptor.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

/// Peak RSS (bytes), seconds and bytes read from disk (GNU time's file-system inputs, 512-byte
/// blocks) of one kiln run.
fn kiln_time(args: &[&str]) -> (u64, f64, u64) {
    let t0 = std::time::Instant::now();
    let o = Command::new("/usr/bin/time")
        .args(["-f", "KILN_TIME %M %I", env!("CARGO_BIN_EXE_kiln"), "-q"])
        .args(args)
        .output()
        .expect("GNU time (/usr/bin/time) is needed; .ci/run installs it");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "kiln {args:?} failed: {err}");
    let v: Vec<u64> = err
        .lines()
        .find_map(|l| l.strip_prefix("KILN_TIME "))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .expect("GNU time's report");
    (v[0] * 1024, t0.elapsed().as_secs_f64(), v[1] * 512)
}

/// Free bytes of the filesystem holding `p`.
fn fs_free(p: &std::path::Path) -> u64 {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: statvfs fills the struct it is given.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }
}
