//! Split GGUF: one model in several files, as llama.cpp writes and loads them.
//!
//! The layout is `llama-gguf-split`'s (`tools/gguf-split/gguf-split.cpp`, `split_strategy`):
//! files `PREFIX-00001-of-0000N.gguf` (`llama_split_path`); the first carries every metadata
//! key, each carries `split.no` (u16, from 0), `split.count` (u16) and `split.tensors.count`
//! (i32, the model's total), appended after the other keys in `split_strategy`'s final order
//! (no, tensors, count); tensors keep the unsplit file's
//! order and each file's data section starts at offset 0. [`partition`] mirrors
//! `split_strategy`'s two policies (`--split-max-tensors`, `--split-max-size`, the latter
//! counting each tensor padded to the alignment and nothing of the header) and adds kiln's
//! third, a given number of files balanced by bytes, which is what `--shard i/N` cuts.
//!
//! kiln adds one key to every file, `kiln.split.plan`: a digest of the unsplit file's header
//! (metadata and tensor list) and the cut points, so that a file of another build is recognised
//! when the files are put together.

use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{align_up, GgufFile, Limits, Metadata, Value};
use crate::error::{Error, Result};

/// `split.no`: this file's index, from 0 (u16).
pub const KEY_SPLIT_NO: &str = "split.no";
/// `split.count`: the number of files (u16).
pub const KEY_SPLIT_COUNT: &str = "split.count";
/// `split.tensors.count`: tensors in all files together (i32).
pub const KEY_SPLIT_TENSORS: &str = "split.tensors.count";
/// kiln's digest of the split plan, in every file.
pub const KEY_SPLIT_PLAN: &str = "kiln.split.plan";

/// True for the keys a split adds (dropped when the files are merged or re-quantized).
pub fn is_split_key(k: &str) -> bool {
    k.starts_with("split.") || k == KEY_SPLIT_PLAN
}

/// How tensors are cut into files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitPolicy {
    /// At most this many tensors per file (`llama-gguf-split --split-max-tensors`).
    MaxTensors(usize),
    /// At most this many bytes of (padded) tensor data per file (`--split-max-size`).
    MaxBytes(u64),
    /// Exactly this many files, contiguous runs of tensors balanced by bytes (kiln's; what
    /// `--shard i/N` cuts).
    Count(usize),
}

impl std::fmt::Display for SplitPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SplitPolicy::MaxTensors(n) => write!(f, "at most {n} tensors per file"),
            SplitPolicy::MaxBytes(b) => write!(f, "at most {b} bytes of tensor data per file"),
            SplitPolicy::Count(n) => write!(f, "{n} files balanced by bytes"),
        }
    }
}

/// Parses a size as `llama-gguf-split --split-max-size` takes it (`500M`, `2G`: decimal
/// megabytes and gigabytes), also `K` and a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K') | Some('k') => (&s[..s.len() - 1], 1_000u64),
        Some('M') | Some('m') => (&s[..s.len() - 1], 1_000_000),
        Some('G') | Some('g') => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (a number with an optional K, M or G)"))?;
    if n == 0 {
        return Err(format!("`{s}`: the size must be positive"));
    }
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses `i/N` (1 ≤ i ≤ N ≤ 99999) into (index from 0, N).
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}` is not a shard `i/N` with 1 ≤ i ≤ N");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if i == 0 || i > n || n > 99_999 {
        return Err(bad());
    }
    Ok((i - 1, n))
}

/// The cut of `sizes` (each tensor's bytes, in file order) into runs of tensors, one per file.
/// Errors (as llama-gguf-split refuses) when a file would hold no tensor.
pub fn partition(
    sizes: &[u64],
    alignment: u64,
    policy: SplitPolicy,
) -> Result<Vec<Range<usize>>, String> {
    let n = sizes.len();
    if n == 0 {
        return Err("a model without tensors cannot be split".into());
    }
    let padded: Vec<u64> = sizes.iter().map(|&s| align_up(s, alignment)).collect();
    let mut cuts = vec![0usize];
    match policy {
        SplitPolicy::MaxTensors(0) | SplitPolicy::Count(0) => {
            return Err("the split limit must be positive".into())
        }
        SplitPolicy::MaxTensors(m) => {
            // should_split: i > 0 && i % n_split_tensors == 0
            cuts.extend((1..n).filter(|i| i % m == 0));
        }
        SplitPolicy::MaxBytes(max) => {
            // split_strategy: a new file when the running size plus the next tensor exceeds it.
            let mut cur = 0u64;
            for (i, &b) in padded.iter().enumerate() {
                if b > max {
                    return Err(format!(
                        "tensor {i} alone holds {b} bytes, more than the split size {max}"
                    ));
                }
                if cur + b > max {
                    cuts.push(i);
                    cur = b;
                } else {
                    cur += b;
                }
            }
        }
        SplitPolicy::Count(k) => {
            if k > n {
                return Err(format!(
                    "{k} files cannot each hold a tensor of a model with {n} tensors"
                ));
            }
            // Cut j (1 ≤ j < k) goes where the running byte count is nearest j/k of the total
            // (ties to the earlier cut), kept strictly increasing with room for the rest.
            let total: u128 = padded.iter().map(|&b| b as u128).sum();
            let mut cum = vec![0u128; n + 1];
            for i in 0..n {
                cum[i + 1] = cum[i] + padded[i] as u128;
            }
            for j in 1..k {
                let target = total * j as u128; // compare cum·k against total·j
                let lo = cuts[cuts.len() - 1] + 1;
                let hi = n - (k - j);
                let mut best = lo;
                let mut best_d = u128::MAX;
                for c in lo..=hi {
                    let v = cum[c] * k as u128;
                    let d = v.abs_diff(target);
                    if d < best_d {
                        best = c;
                        best_d = d;
                    }
                    if v >= target {
                        break;
                    }
                }
                cuts.push(best);
            }
        }
    }
    if cuts.len() > 99_999 {
        return Err(format!(
            "{} files: llama.cpp's names go to 99999",
            cuts.len()
        ));
    }
    cuts.push(n);
    Ok(cuts.windows(2).map(|w| w[0]..w[1]).collect())
}

/// The path of file `i` (from 0) of `n`: `PREFIX-0000{i+1}-of-0000{n}.gguf`
/// (`llama_split_path`).
pub fn split_path(prefix: &Path, i: usize, n: usize) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(format!("-{:05}-of-{:05}.gguf", i + 1, n));
    PathBuf::from(s)
}

/// The prefix the split files of an output named `out` take: `out` without `.gguf`.
pub fn output_prefix(out: &Path) -> PathBuf {
    let s = out.to_string_lossy();
    match s.strip_suffix(".gguf") {
        Some(p) => PathBuf::from(p),
        None => out.to_path_buf(),
    }
}

/// `(prefix, index from 0, count)` when `path` is named as a split file
/// (`llama_split_prefix`'s check).
pub fn parse_split_name(path: &Path) -> Option<(PathBuf, usize, usize)> {
    let s = path.to_str()?;
    // PREFIX-00001-of-00003.gguf
    let stem = s.strip_suffix(".gguf")?;
    let tail = stem.get(stem.len().checked_sub(15)?..)?;
    let b = tail.as_bytes();
    if b[0] != b'-' || &tail[6..10] != "-of-" {
        return None;
    }
    let digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if !digits(&tail[1..6]) || !digits(&tail[10..15]) {
        return None;
    }
    let i: usize = tail[1..6].parse().ok()?;
    let n: usize = tail[10..15].parse().ok()?;
    let prefix = &stem[..stem.len() - 15];
    (i >= 1 && i <= n && !prefix.is_empty()).then(|| (PathBuf::from(prefix), i - 1, n))
}

/// kiln's digest of a split plan: the unsplit file's header (every metadata key, with
/// same-length placeholders for values known only after the data is written, and every
/// tensor's name, type, shape and offset) and the cuts. Shards of one build agree on it; a
/// shard of a build with another type mix, imatrix or option does not.
pub fn plan_digest(unsplit_header: &[u8], parts: &[Range<usize>]) -> String {
    let mut h = Sha256::new();
    h.update(unsplit_header);
    for p in parts {
        h.update((p.start as u64).to_le_bytes());
        h.update((p.end as u64).to_le_bytes());
    }
    crate::tokenizer::hex(&h.finalize())
}

/// The metadata of file `i` of `n`: all of `full` in the first, nothing of it in the others;
/// then the split keys.
pub fn split_metadata(
    full: &Metadata,
    i: usize,
    n: usize,
    n_tensors: usize,
    plan: &str,
) -> Metadata {
    let mut md = if i == 0 {
        full.clone()
    } else {
        Metadata::new()
    };
    // llama-gguf-split's order: it sets split.count last (gguf_set_val moves a key it
    // re-sets to the end).
    md.set(KEY_SPLIT_NO, Value::U16(i as u16));
    md.set(KEY_SPLIT_TENSORS, Value::I32(n_tensors as i32));
    md.set(KEY_SPLIT_COUNT, Value::U16(n as u16));
    md.set(KEY_SPLIT_PLAN, Value::String(plan.to_string()));
    md
}

/// What [`merge`] wrote.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub output: PathBuf,
    /// Split files read.
    pub files: usize,
    pub tensors: usize,
    /// Bytes of the merged file.
    pub bytes: u64,
}

/// Writes the split model `inputs` (all its files in any order and directories, or only the
/// first) as one GGUF at `out`: the first file's metadata without the split keys, every
/// tensor in order, the data copied. For kiln's split files this is byte for byte the file an
/// unsplit build writes. Nothing is written when a file is missing, duplicated or foreign.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<MergeReport> {
    let file = match inputs {
        [one] => {
            let f = GgufFile::open(one)?;
            if !f.is_split() && f.metadata.get(KEY_SPLIT_COUNT).is_none() {
                return Err(Error::format(
                    one,
                    "is not a split GGUF (it has no split keys)",
                ));
            }
            f
        }
        _ => GgufFile::open_parts(inputs, Limits::default())?,
    };
    for p in file.parts() {
        if same_file(p.path(), out) {
            return Err(Error::format(out, "the output is one of the split files"));
        }
    }
    let mut md = Metadata::new();
    for (k, v) in file.metadata.iter().filter(|(k, _)| !is_split_key(k)) {
        md.set(k, v.clone());
    }
    let bytes = file.write_with_metadata(md, out)?;
    Ok(MergeReport {
        output: out.to_path_buf(),
        files: file.parts().len(),
        tensors: file.tensors.len(),
        bytes,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = split_path(Path::new("/x/model-Q4_K_M"), 1, 3);
        assert_eq!(p, Path::new("/x/model-Q4_K_M-00002-of-00003.gguf"));
        assert_eq!(
            parse_split_name(&p),
            Some((PathBuf::from("/x/model-Q4_K_M"), 1, 3))
        );
        assert_eq!(parse_split_name(Path::new("/x/model.gguf")), None);
        assert_eq!(parse_split_name(Path::new("m-00004-of-00003.gguf")), None);
        assert_eq!(output_prefix(Path::new("a/b.gguf")), Path::new("a/b"));
    }

    #[test]
    fn sizes_and_shards_parse() {
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0M").is_err() && parse_size("xM").is_err());
        assert_eq!(parse_shard("2/4"), Ok((1, 4)));
        assert!(parse_shard("0/4").is_err() && parse_shard("5/4").is_err());
        assert!(parse_shard("4").is_err());
    }

    #[test]
    fn policies_cut_as_gguf_split() {
        let sizes = [100, 100, 100, 100, 100];
        assert_eq!(
            partition(&sizes, 32, SplitPolicy::MaxTensors(2)).unwrap(),
            vec![0..2, 2..4, 4..5]
        );
        // padded to 128 each: 256 fits two
        assert_eq!(
            partition(&sizes, 32, SplitPolicy::MaxBytes(256)).unwrap(),
            vec![0..2, 2..4, 4..5]
        );
        assert!(partition(&sizes, 32, SplitPolicy::MaxBytes(100)).is_err());
        // a too-large tensor after the first is refused too
        assert!(partition(&[10, 500, 10], 1, SplitPolicy::MaxBytes(100)).is_err());
        assert_eq!(
            partition(&sizes, 32, SplitPolicy::Count(1)).unwrap(),
            vec![0..5]
        );
        assert!(partition(&sizes, 32, SplitPolicy::Count(6)).is_err());
    }

    #[test]
    fn count_balances_bytes() {
        let sizes = [1000, 10, 10, 10, 1000, 10, 10, 1000];
        let p = partition(&sizes, 1, SplitPolicy::Count(3)).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p, vec![0..3, 3..5, 5..8]); // 1020, 1010, 1020 bytes
                                               // every file non-empty even when one tensor dominates
        let p = partition(&[1, 1, 1_000_000, 1], 1, SplitPolicy::Count(4)).unwrap();
        assert_eq!(p, vec![0..1, 1..2, 2..3, 3..4]);
        for k in 1..=8 {
            let p = partition(&sizes, 32, SplitPolicy::Count(k)).unwrap();
            assert_eq!(p.len(), k);
            assert!(p.iter().all(|r| !r.is_empty()));
            assert_eq!(p.last().unwrap().end, sizes.len());
        }
    }
}
