//! Interrupted and failing runs: a `kiln build` killed (SIGKILL) at 20 random moments never
//! leaves a partial or corrupt file under a final name, and a rerun completes with the bytes of
//! an uninterrupted run; a write that fails (file-size limit standing in for a full disk) is a
//! clear error, exit 2, and nothing at the output path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use convert::testing::{write_checkpoint, TinySpec};

fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.arg("-q").stdout(std::process::Stdio::null());
    c
}

fn setup(dir: &Path) -> PathBuf {
    write_checkpoint(
        &dir.join("ckpt"),
        &TinySpec {
            hidden: 128,
            intermediate: 256,
            ..Default::default()
        },
    )
    .unwrap();
    std::fs::write(
        dir.join("calib.txt"),
        "the quick brown fox jumps over the lazy dog by the river. ".repeat(80),
    )
    .unwrap();
    std::fs::write(
        dir.join("eval.txt"),
        "a different text about ships and the sea at dawn. ".repeat(80),
    )
    .unwrap();
    let toml = dir.join("kiln.toml");
    std::fs::write(
        &toml,
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
[[target]]
name = "q5"
type = "Q5_1"
"#,
    )
    .unwrap();
    toml
}

/// Final-named files of a build directory (not kiln's temporaries), name → bytes.
fn finals(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(convert::atomic::TMP_SUFFIX))
                .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn killed_builds_leave_no_partial_files_and_resume_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = setup(tmp.path());
    // An uninterrupted build: the reference bytes and the duration to aim kills into.
    let reference = tmp.path().join("ref");
    let t0 = Instant::now();
    let st = kiln()
        .args([
            "build",
            toml.to_str().unwrap(),
            "-o",
            reference.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let total = t0.elapsed();
    let want = finals(&reference);
    assert!(want.iter().any(|(n, _)| n == "tiny-q4km.gguf"));
    // Artifacts and manifest are deterministic; reports and the cache hold this run's timings.
    let cache = |v: &Vec<(String, Vec<u8>)>| {
        v.iter()
            .filter(|(n, _)| n.ends_with(".gguf") || n == "manifest.json")
            .cloned()
            .collect::<Vec<_>>()
    };

    let out = tmp.path().join("out");
    let mut seed = 0x9E3779B97F4A7C15u64;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let at = Duration::from_micros(seed % (total.as_micros() as u64).max(1));
        let mut child = kiln()
            .args(["build", toml.to_str().unwrap(), "-o", out.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL on Unix
        let _ = child.wait();
        // Whatever exists under a final name is whole: identical to the uninterrupted run's.
        for (name, bytes) in finals(&out) {
            if name == ".kiln-cache.json" {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .unwrap_or_else(|e| panic!("round {round}: cache is corrupt: {e}"));
                continue;
            }
            let w = want
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("round {round}: unexpected file {name}"));
            if name.starts_with("report.") {
                // Reports carry this run's benchmark timings: check they are whole.
                let text = String::from_utf8(bytes).unwrap();
                let whole = match name.as_str() {
                    "report.json" => serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                    "report.html" => text.ends_with("</html>\n"),
                    _ => text.starts_with("# kiln build") && text.ends_with('\n'),
                };
                assert!(
                    whole,
                    "round {round} (killed after {at:?}): {name} is partial"
                );
            } else {
                assert!(
                    w.1 == bytes,
                    "round {round} (killed after {at:?}): {name} is partial or differs"
                );
            }
        }
    }
    let st = kiln()
        .args(["build", toml.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        cache(&finals(&out)),
        cache(&want),
        "the resumed build differs from an uninterrupted one"
    );
}

#[test]
fn a_failing_write_is_an_error_with_nothing_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let _ = setup(tmp.path());
    let out = tmp.path().join("model.gguf");
    // A 64 KiB file-size limit makes writes fail with EFBIG, as a full disk fails them with
    // ENOSPC; SIGXFSZ is ignored so the write returns the error instead of killing the process.
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec {} -q convert {} -o {} --type f32 --tokenizer-pre gpt-2",
        env!("CARGO_BIN_EXE_kiln"),
        tmp.path().join("ckpt").display(),
        out.display()
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("model.gguf"), "{err}");
    assert!(!out.exists(), "partial output left at the final name");
    for e in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        assert!(
            !e.file_name()
                .to_string_lossy()
                .ends_with(convert::atomic::TMP_SUFFIX),
            "temporary left behind"
        );
    }
}

/// A read-only output directory: exit 2 naming the output, nothing written. Root ignores
/// permission bits, so as root the directory is a read-only tmpfs mounted in a private mount
/// namespace (`unshare -m`, as CI runs); otherwise a directory with mode 0555.
#[test]
fn a_read_only_output_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let _ = setup(tmp.path());
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let out = ro.join("model.gguf");
    let is_root = unsafe { libc::geteuid() } == 0;
    let kiln_cmd = format!(
        "{} -q convert {} -o {} --type f16 --tokenizer-pre gpt-2",
        env!("CARGO_BIN_EXE_kiln"),
        tmp.path().join("ckpt").display(),
        out.display()
    );
    let o = if is_root {
        let script = format!(
            "mount -t tmpfs -o ro,size=1m tmpfs {} && exec {kiln_cmd}",
            ro.display()
        );
        let o = Command::new("unshare")
            .args(["-m", "--propagation", "private", "bash", "-c", &script])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stderr).contains("mount:") {
            eprintln!(
                "skipped: cannot mount here: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return;
        }
        o
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        Command::new("bash")
            .args(["-c", &kiln_cmd])
            .output()
            .unwrap()
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("model.gguf") || err.contains("/ro"), "{err}");
    assert!(
        err.to_lowercase().contains("read-only") || err.to_lowercase().contains("permission"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "something was written"
    );
}

/// A full filesystem (ENOSPC): a 256 KiB tmpfs in a private mount namespace (root only; the
/// EFBIG test above covers the same path without privileges): exit 2, nothing left.
#[test]
fn a_full_filesystem_is_an_error_with_nothing_left_behind() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tiny filesystem needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _ = setup(tmp.path());
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let out = small.join("model.gguf");
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs {d} && {k} -q convert {c} -o {o} --type f32 --tokenizer-pre gpt-2; rc=$?; ls -A {d}; exit $rc",
        d = small.display(),
        k = env!("CARGO_BIN_EXE_kiln"),
        c = tmp.path().join("ckpt").display(),
        o = out.display()
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("mount:") {
        eprintln!("skipped: cannot mount here: {err}");
        return;
    }
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model.gguf") && err.contains("No space left"),
        "{err}"
    );
    // `ls -A` inside the namespace printed what the full filesystem still holds: nothing.
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "", "left behind");
}
