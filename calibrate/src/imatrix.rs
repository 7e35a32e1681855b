//! Importance matrices: what llama-imatrix collects — for every weight matrix, the sum over
//! calibration tokens of each input column's squared activation, and how many tokens were seen —
//! in llama.cpp's GGUF format (`general.type = imatrix`) and its legacy `.dat` format.
//!
//! The importance a quantizer uses is `in_sum2 / count` per column, computed in f32 exactly as
//! llama-quantize computes it, so a kiln quantization with a given imatrix is byte-identical to
//! llama.cpp's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use convert::atomic::AtomicFile;
use convert::gguf::{GgufFile, GgufWriter, Metadata, TensorSpec, Value};
use convert::GgmlType;
use kernels::{forward, ForwardOptions, Logits, MatKind, Model, Observer, State};

/// What can go wrong with an imatrix file or a calibration run.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Convert(#[from] convert::Error),
    #[error("calibration: {0}")]
    Forward(#[from] kernels::ForwardError),
    #[error("calibration: the text has {have} tokens, fewer than one chunk of {need}")]
    TooShort { have: usize, need: usize },
    #[error("calibration: {0}")]
    Shard(String),
}

fn fmt_err(path: &Path, msg: impl Into<String>) -> ImatrixError {
    ImatrixError::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// One matrix's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Σ x² per input column (`[n_mat × cols]`; one matrix for dense models).
    pub in_sum2: Vec<f32>,
    /// Tokens seen, per matrix.
    pub counts: Vec<f32>,
}

/// An importance matrix.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Imatrix {
    /// Entries by weight tensor name (`blk.0.attn_q.weight` …).
    pub entries: BTreeMap<String, Entry>,
    /// Chunks of calibration text.
    pub chunk_count: u32,
    /// Tokens per chunk.
    pub chunk_size: u32,
    /// The calibration texts' names.
    pub datasets: Vec<String>,
    /// Set on a partial matrix (one shard of a calibration run as N jobs): the exact sums
    /// [`Imatrix::merge`] adds.
    pub partial: Option<Partial>,
}

/// One shard's exact statistics: Σx² of each column as an integer count of 2^-60 (each
/// square, exact in f64, truncated to that grid), so that shards sum to the bits one process
/// gets, whatever the grouping of chunks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Partial {
    /// Which shard (from 0) of how many.
    pub shard: usize,
    pub of: usize,
    /// Digest of the whole run's inputs (tokens, chunk size, chunk count, shard count,
    /// options): shards of one run carry the same.
    pub plan: String,
    /// Per entry: (tokens seen, Σx² per column in units of 2^-60).
    pub exact: BTreeMap<String, (u64, Vec<i128>)>,
}

/// The grid of the exact sums: 2^-60.
pub const EXACT_SHIFT: i32 = 60;
const EXACT_SCALE: f64 = (1u64 << EXACT_SHIFT) as f64;
/// Key suffix of a partial matrix's exact sums (tensor `NAME.kiln_exact`: the token count then
/// Σx² per column, each an i128 stored as four little-endian f32 words).
const EXACT_SUFFIX: &str = ".kiln_exact";
const KEY_SHARD: &str = "kiln.imatrix.shard";
const KEY_SHARDS: &str = "kiln.imatrix.shards";
const KEY_PLAN: &str = "kiln.imatrix.plan";

/// `x²` on the exact grid (`None` when not finite or beyond it).
#[inline]
fn exact_term(v: f32) -> Option<i128> {
    let t = (v as f64) * (v as f64) * EXACT_SCALE;
    if t < 9.0e18 {
        Some(t as i64 as i128)
    } else if t < 1.0e37 {
        Some(t as i128)
    } else {
        None
    }
}

/// The f32 `in_sum2` of an exact sum.
fn exact_value(s: i128) -> f32 {
    ((s as f64) / EXACT_SCALE) as f32
}

/// Largest legacy-file counts accepted before allocating.
const MAX_ENTRIES: usize = 1 << 20;
const MAX_NAME: usize = 1 << 10;
const MAX_VALUES: usize = 1 << 28;

impl Imatrix {
    /// The per-column importance of tensor `name` (`in_sum2 / count`, in f32; 1 for a matrix
    /// that never saw input), as llama-quantize derives it.
    pub fn importance(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        let n_mat = e.counts.len().max(1);
        let cols = e.in_sum2.len() / n_mat;
        let mut out = Vec::with_capacity(e.in_sum2.len());
        for (m, &count) in e.counts.iter().enumerate() {
            let s = &e.in_sum2[m * cols..(m + 1) * cols];
            if count > 0.0 {
                out.extend(s.iter().map(|&v| v / count));
            } else {
                out.extend(std::iter::repeat_n(1.0f32, cols));
            }
        }
        Some(out)
    }

    /// Reads either format (GGUF by its magic, else legacy `.dat`).
    pub fn read(path: &Path) -> Result<Self, ImatrixError> {
        let head = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| ImatrixError::Io {
                path: path.into(),
                source: e,
            })?;
            let mut b = [0u8; 4];
            let n = f.read(&mut b).map_err(|e| ImatrixError::Io {
                path: path.into(),
                source: e,
            })?;
            b[..n].to_vec()
        };
        if head == b"GGUF" {
            Self::read_gguf(path)
        } else {
            Self::read_dat(path)
        }
    }

    /// Reads llama.cpp's GGUF imatrix format.
    pub fn read_gguf(path: &Path) -> Result<Self, ImatrixError> {
        let g = GgufFile::open(path)?;
        if g.metadata.str("general.type") != Some("imatrix") {
            return Err(fmt_err(
                path,
                "not an imatrix GGUF (general.type is not \"imatrix\")",
            ));
        }
        let mut m = Imatrix {
            chunk_count: g.metadata.u64("imatrix.chunk_count").unwrap_or(0) as u32,
            chunk_size: g.metadata.u64("imatrix.chunk_size").unwrap_or(0) as u32,
            datasets: g
                .metadata
                .get("imatrix.datasets")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        for t in &g.tensors {
            let Some(base) = t.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let counts_name = format!("{base}.counts");
            let c = g
                .tensor(&counts_name)
                .ok_or_else(|| fmt_err(path, format!("`{}` has no `{counts_name}`", t.name)))?;
            if t.ty != GgmlType::F32 || c.ty != GgmlType::F32 {
                return Err(fmt_err(
                    path,
                    format!("`{base}`: imatrix tensors must be f32"),
                ));
            }
            let in_sum2 = g.tensor_f32(t)?;
            let counts = g.tensor_f32(c)?;
            let n_mat = t.n_rows();
            if counts.len() != n_mat {
                return Err(fmt_err(
                    path,
                    format!("`{base}`: {} counts for {n_mat} matrices", counts.len()),
                ));
            }
            if let Some(bad) = in_sum2
                .iter()
                .chain(&counts)
                .find(|v| !v.is_finite() || **v < 0.0)
            {
                return Err(fmt_err(
                    path,
                    format!("`{base}`: value {bad} is negative or not finite"),
                ));
            }
            m.entries
                .insert(base.to_string(), Entry { in_sum2, counts });
        }
        for t in &g.tensors {
            if let Some(base) = t.name.strip_suffix(".counts") {
                if !m.entries.contains_key(base) {
                    return Err(fmt_err(
                        path,
                        format!("`{}` has no `{base}.in_sum2`", t.name),
                    ));
                }
            }
        }
        if let Some(shard) = g.metadata.u64(KEY_SHARD) {
            let of = g.metadata.u64(KEY_SHARDS).unwrap_or(0) as usize;
            let plan = g.metadata.str(KEY_PLAN).unwrap_or_default().to_string();
            if of == 0 || shard as usize >= of || plan.is_empty() {
                return Err(fmt_err(
                    path,
                    format!(
                        "a partial imatrix needs `{KEY_SHARD}` < `{KEY_SHARDS}` and `{KEY_PLAN}`"
                    ),
                ));
            }
            let mut exact = BTreeMap::new();
            for (name, e) in &m.entries {
                let tn = format!("{name}{EXACT_SUFFIX}");
                let t = g.tensor(&tn).ok_or_else(|| {
                    fmt_err(path, format!("partial imatrix: `{name}` has no `{tn}`"))
                })?;
                let raw = g.tensor_data(t);
                if t.ty != GgmlType::F32 || raw.len() != 16 * (e.in_sum2.len() + 1) {
                    return Err(fmt_err(
                        path,
                        format!("`{tn}`: expected {} f32 words", 4 * (e.in_sum2.len() + 1)),
                    ));
                }
                let v: Vec<i128> = raw
                    .chunks_exact(16)
                    .map(|c| i128::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                if v[0] < 0 || v[1..].iter().any(|&x| x < 0) {
                    return Err(fmt_err(path, format!("`{tn}`: negative exact sums")));
                }
                exact.insert(name.clone(), (v[0] as u64, v[1..].to_vec()));
            }
            m.partial = Some(Partial {
                shard: shard as usize,
                of,
                plan,
                exact,
            });
        }
        Ok(m)
    }

    /// Reads llama.cpp's legacy `.dat` format. Its values are `in_sum2 / count · ncall` with
    /// `ncall` the number of chunks; counts are restored as `ncall · chunk_size` (512 unless
    /// the trailer says otherwise... the format does not store it, llama.cpp assumes 512).
    pub fn read_dat(path: &Path) -> Result<Self, ImatrixError> {
        let b = std::fs::read(path).map_err(|e| ImatrixError::Io {
            path: path.into(),
            source: e,
        })?;
        let mut pos = 0usize;
        let mut take = |n: usize, what: &str| -> Result<&[u8], ImatrixError> {
            if b.len() - pos < n {
                return Err(fmt_err(
                    path,
                    format!("truncated at byte {pos} reading {what}"),
                ));
            }
            pos += n;
            Ok(&b[pos - n..pos])
        };
        let i32_at = |s: &[u8]| i32::from_le_bytes(s.try_into().unwrap());
        let n_entries = i32_at(take(4, "the entry count")?);
        if n_entries < 0 || n_entries as usize > MAX_ENTRIES {
            return Err(fmt_err(
                path,
                format!("entry count {n_entries} is out of range"),
            ));
        }
        let chunk_size = 512u32;
        let mut m = Imatrix {
            chunk_size,
            ..Default::default()
        };
        let mut max_ncall = 0;
        for i in 0..n_entries {
            let len = i32_at(take(4, "a name length")?);
            if len <= 0 || len as usize > MAX_NAME {
                return Err(fmt_err(
                    path,
                    format!("entry #{i}: name length {len} is out of range"),
                ));
            }
            let name = String::from_utf8(take(len as usize, "a name")?.to_vec())
                .map_err(|_| fmt_err(path, format!("entry #{i}: name is not UTF-8")))?;
            let ncall = i32_at(take(4, "a call count")?);
            let nval = i32_at(take(4, "a value count")?);
            if ncall < 0 || nval < 0 || nval as usize > MAX_VALUES {
                return Err(fmt_err(
                    path,
                    format!("`{name}`: counts {ncall}/{nval} are out of range"),
                ));
            }
            let raw = take(4 * nval as usize, "values")?;
            // As llama-imatrix reloads a legacy file: sums = value · chunk_size, count = ncall ·
            // chunk_size (f32 arithmetic; exact for the power-of-two sizes in use).
            let count = ncall as f32 * chunk_size as f32;
            let in_sum2: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) * chunk_size as f32)
                .collect();
            if let Some(bad) = in_sum2.iter().find(|v| !v.is_finite() || **v < 0.0) {
                return Err(fmt_err(
                    path,
                    format!("`{name}`: value {bad} is negative or not finite"),
                ));
            }
            max_ncall = max_ncall.max(ncall);
            if m.entries
                .insert(
                    name.clone(),
                    Entry {
                        in_sum2,
                        counts: vec![count],
                    },
                )
                .is_some()
            {
                return Err(fmt_err(path, format!("duplicate entry `{name}`")));
            }
        }
        // Optional trailer: the chunk count and the dataset name.
        if let Ok(c) = take(4, "the chunk count") {
            m.chunk_count = i32_at(c).max(0) as u32;
            if let Ok(l) = take(4, "the dataset name length") {
                let l = i32_at(l);
                if l > 0 && (l as usize) <= MAX_NAME {
                    if let Ok(d) = take(l as usize, "the dataset name") {
                        m.datasets.push(String::from_utf8_lossy(d).into_owned());
                    }
                }
            }
        } else {
            m.chunk_count = max_ncall.max(0) as u32;
        }
        Ok(m)
    }

    /// Writes the file, in the legacy format when the name ends in `.dat`, else GGUF.
    pub fn write(&self, path: &Path) -> Result<(), ImatrixError> {
        if path.extension().is_some_and(|e| e == "dat") {
            if self.partial.is_some() {
                return Err(fmt_err(
                    path,
                    "a partial imatrix (one shard) needs the GGUF format: .dat cannot carry its exact sums",
                ));
            }
            self.write_dat(path)
        } else {
            self.write_gguf(path)
        }
    }

    /// Writes llama.cpp's GGUF imatrix format (entries in name order, `in_sum2` then `counts`).
    pub fn write_gguf(&self, path: &Path) -> Result<(), ImatrixError> {
        let mut md = Metadata::new();
        md.set("general.type", Value::String("imatrix".into()));
        md.set(
            "imatrix.datasets",
            Value::string_array(self.datasets.iter().cloned()),
        );
        md.set("imatrix.chunk_count", Value::U32(self.chunk_count));
        md.set("imatrix.chunk_size", Value::U32(self.chunk_size));
        if let Some(p) = &self.partial {
            md.set(KEY_SHARD, Value::U32(p.shard as u32));
            md.set(KEY_SHARDS, Value::U32(p.of as u32));
            md.set(KEY_PLAN, Value::String(p.plan.clone()));
        }
        let mut specs = Vec::new();
        let mut data: Vec<std::borrow::Cow<[u8]>> = Vec::new();
        for (name, e) in &self.entries {
            let n_mat = e.counts.len().max(1) as u64;
            let cols = e.in_sum2.len() as u64 / n_mat;
            let dims = |inner: u64| {
                if n_mat == 1 {
                    vec![inner]
                } else {
                    vec![inner, n_mat]
                }
            };
            specs.push(TensorSpec {
                name: format!("{name}.in_sum2"),
                dims: dims(cols),
                ty: GgmlType::F32,
            });
            data.push(bytemuck::cast_slice(&e.in_sum2).into());
            specs.push(TensorSpec {
                name: format!("{name}.counts"),
                dims: dims(1),
                ty: GgmlType::F32,
            });
            data.push(bytemuck::cast_slice(&e.counts).into());
            if let Some(p) = &self.partial {
                let (tokens, sums) = p.exact.get(name).ok_or_else(|| {
                    fmt_err(path, format!("partial imatrix: no exact sums for `{name}`"))
                })?;
                let mut raw = Vec::with_capacity(16 * (sums.len() + 1));
                raw.extend_from_slice(&(*tokens as i128).to_le_bytes());
                for s in sums {
                    raw.extend_from_slice(&s.to_le_bytes());
                }
                specs.push(TensorSpec {
                    name: format!("{name}{EXACT_SUFFIX}"),
                    dims: vec![4 * (sums.len() as u64 + 1)],
                    ty: GgmlType::F32,
                });
                data.push(raw.into());
            }
        }
        let w = GgufWriter::new(path, md, specs)?;
        let mut f = AtomicFile::create(path)?;
        w.write(path, f.writer(), |i| Ok(data[i].to_vec()))?;
        f.commit()?;
        Ok(())
    }

    /// Writes llama.cpp's legacy `.dat` format.
    pub fn write_dat(&self, path: &Path) -> Result<(), ImatrixError> {
        let mut b: Vec<u8> = Vec::new();
        b.extend_from_slice(&(self.entries.len() as i32).to_le_bytes());
        let chunk = self.chunk_size.max(1) as i64;
        for (name, e) in &self.entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            // llama-imatrix's legacy writer: ncall = ⌈max count / chunk size⌉, values =
            // (sum / count) · ncall in f32, 1 where a matrix saw nothing.
            let max_count = e.counts.iter().fold(0f32, |m, &c| m.max(c)) as i64;
            let ncall = ((max_count + chunk - 1) / chunk) as i32;
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(e.in_sum2.len() as i32).to_le_bytes());
            let n_mat = e.counts.len().max(1);
            let per = e.in_sum2.len() / n_mat;
            for (i, &v) in e.in_sum2.iter().enumerate() {
                let count = e.counts.get(i / per.max(1)).copied().unwrap_or(0.0);
                let x = if count == 0.0 {
                    1.0f32
                } else {
                    (v / count) * ncall as f32
                };
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        b.extend_from_slice(&(self.chunk_count as i32).to_le_bytes());
        let ds = self.datasets.first().cloned().unwrap_or_default();
        b.extend_from_slice(&(ds.len() as i32).to_le_bytes());
        b.extend_from_slice(ds.as_bytes());
        let mut f = AtomicFile::create(path)?;
        f.writer().write_all(&b).map_err(|e| ImatrixError::Io {
            path: path.into(),
            source: e,
        })?;
        f.commit()?;
        Ok(())
    }

    /// Warnings about coverage: weight matrices of `expected` (name, columns) with no entry,
    /// entries of the wrong width, and columns that never saw any activation.
    /// Matrices with some silent columns (a channel a norm weight of 0 zeroes, as Gemma 3 has
    /// one of per layer) are reported together in one line.
    pub fn coverage(&self, expected: &[(String, usize)]) -> Vec<String> {
        let mut w = Vec::new();
        let mut silent = Vec::new();
        for (name, cols) in expected {
            match self.entries.get(name) {
                None => w.push(format!(
                    "{name}: no importance data (it will be quantized unweighted)"
                )),
                Some(e) if e.in_sum2.len() != *cols * e.counts.len().max(1) => w.push(format!(
                    "{name}: {} values for a matrix of {cols} columns",
                    e.in_sum2.len()
                )),
                Some(e) => {
                    let zero = e.in_sum2.iter().filter(|&&v| v == 0.0).count();
                    if e.counts.iter().all(|&c| c == 0.0) {
                        w.push(format!("{name}: never saw any activation"));
                    } else if zero > 0 {
                        silent.push(format!("{name} ({zero} of {})", e.in_sum2.len()));
                    }
                }
            }
        }
        match silent.len() {
            0 => {}
            1 => w.push(format!(
                "{}: columns that never saw any activation",
                silent[0]
            )),
            n => w.push(format!(
                "{n} matrices have columns that never saw any activation: {}{}",
                silent[..n.min(3)].join(", "),
                if n > 3 { ", …" } else { "" }
            )),
        }
        w
    }
}

/// Accumulates Σx² per input column of every matmul during forward passes, exactly (on the
/// 2^-60 grid of [`Partial`]), so that any split of the chunks between processes sums to the
/// same bits.
pub struct Collector {
    n_layers: usize,
    process_output: bool,
    /// `[layer][kind]` → its sums.
    sums: Vec<Mutex<Acc>>,
}

#[derive(Default)]
struct Acc {
    /// Σx² per column in units of 2^-60.
    sum: Vec<i128>,
    tokens: u64,
    /// A value was not finite or off the grid: the entry's sums are NaN.
    bad: bool,
}

const KINDS: [MatKind; 4] = [
    MatKind::Qkv,
    MatKind::AttnOutput,
    MatKind::GateUp,
    MatKind::Down,
];

fn kind_index(k: MatKind) -> usize {
    match k {
        MatKind::Qkv => 0,
        MatKind::AttnOutput => 1,
        MatKind::GateUp => 2,
        MatKind::Down => 3,
        MatKind::Output => 4,
    }
}

impl Collector {
    /// A collector for `n_layers` blocks; `process_output` also collects the output projection's
    /// input (llama-imatrix leaves it out by default).
    pub fn new(n_layers: usize, process_output: bool) -> Self {
        Collector {
            n_layers,
            process_output,
            sums: (0..n_layers * 4 + 1)
                .map(|_| Mutex::new(Acc::default()))
                .collect(),
        }
    }

    /// The importance matrix collected so far, under the model's tensor names; with the exact
    /// sums kept in `partial` (shard, plan) when given.
    pub fn finish(
        &self,
        model: &Model,
        chunk_count: u32,
        chunk_size: u32,
        datasets: Vec<String>,
    ) -> Imatrix {
        let mut m = Imatrix {
            chunk_count,
            chunk_size,
            datasets,
            ..Default::default()
        };
        let mut exact = BTreeMap::new();
        let mut put = |name: String, s: &Acc| {
            if s.tokens > 0 {
                let in_sum2 = if s.bad {
                    vec![f32::NAN; s.sum.len()]
                } else {
                    s.sum.iter().map(|&v| exact_value(v)).collect()
                };
                m.entries.insert(
                    name.clone(),
                    Entry {
                        in_sum2,
                        counts: vec![s.tokens as f32],
                    },
                );
                exact.insert(name, (s.tokens, s.sum.clone()));
            }
        };
        for l in 0..self.n_layers {
            for k in KINDS {
                let s = self.sums[l * 4 + kind_index(k)].lock().unwrap();
                for n in model.config.readers(k) {
                    put(format!("blk.{l}.{n}.weight"), &s);
                }
            }
        }
        if self.process_output {
            let s = self.sums[self.n_layers * 4].lock().unwrap();
            let name = if model.output.is_some() {
                "output.weight"
            } else {
                "token_embd.weight"
            };
            put(name.to_string(), &s);
        }
        m.partial = Some(Partial {
            exact,
            ..Default::default()
        });
        m
    }
}

impl Observer for Collector {
    fn matmul_input(&self, layer: usize, kind: MatKind, x: &[f32], n_tok: usize) {
        let slot = if kind == MatKind::Output {
            if !self.process_output {
                return;
            }
            self.n_layers * 4
        } else {
            layer * 4 + kind_index(kind)
        };
        let cols = x.len() / n_tok.max(1);
        let mut s = self.sums[slot].lock().unwrap();
        if s.sum.is_empty() {
            s.sum = vec![0; cols];
        }
        let mut bad = false;
        for row in x.chunks_exact(cols) {
            for (acc, &v) in s.sum.iter_mut().zip(row) {
                match exact_term(v).and_then(|t| acc.checked_add(t)) {
                    Some(n) => *acc = n,
                    None => bad = true,
                }
            }
        }
        s.bad |= bad;
        s.tokens += n_tok as u64;
    }
}

/// Options of a calibration run.
#[derive(Debug, Clone)]
pub struct CalibOptions {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Most chunks (`None`: all the text holds).
    pub chunks: Option<usize>,
    /// BOS id put first in each chunk when the model adds BOS.
    pub bos: Option<u32>,
    /// Also collect the output projection's input.
    pub process_output: bool,
    /// Dataset names recorded in the file.
    pub datasets: Vec<String>,
    /// Round the KV cache to f16 as llama-imatrix's default cache does.
    pub kv_f16: bool,
}

/// Runs `model` over the first `chunks` (all, if `None`) independent chunks of `ctx` tokens of
/// `tokens` (as llama-imatrix chooses them; `bos` first in each when given), showing every pass
/// to `obs`; returns the chunks run. The one calibration loop behind the imatrix and GPTQ's
/// Hessians.
#[allow(clippy::too_many_arguments)]
pub fn run_chunks<O: Observer>(
    model: &Model,
    tokens: &[u32],
    ctx: usize,
    chunks: Option<usize>,
    bos: Option<u32>,
    kv_f16: bool,
    want: Logits,
    obs: &O,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, ImatrixError> {
    let avail = tokens.len() / ctx.max(1);
    if avail == 0 {
        return Err(ImatrixError::TooShort {
            have: tokens.len(),
            need: ctx,
        });
    }
    let n = chunks.map_or(avail, |c| c.min(avail));
    let mut state = State::new(&model.config, ctx, ctx);
    state.kv_f16 = kv_f16;
    for c in 0..n {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        state.reset();
        forward(
            model,
            &mut state,
            &chunk,
            want,
            ForwardOptions::default(),
            obs,
        )?;
        progress(c + 1, n);
    }
    Ok(n)
}

/// Runs `model` over `tokens` in independent chunks of `ctx` (as llama-imatrix does) and
/// returns the importance matrix; `progress(done, total)` is called after each chunk.
pub fn calibrate(
    model: &Model,
    tokens: &[u32],
    opts: &CalibOptions,
    progress: impl FnMut(usize, usize),
) -> Result<Imatrix, ImatrixError> {
    let mut m = calibrate_shard(model, tokens, opts, (0, 1), progress)?;
    m.partial = None;
    Ok(m)
}

/// The chunks (from, to) shard `i` of `n` runs of `total`: contiguous, as even as whole chunks
/// allow, the earlier shards one larger.
pub fn shard_chunks(total: usize, i: usize, n: usize) -> (usize, usize) {
    let (q, r) = (total / n, total % n);
    let from = i * q + i.min(r);
    (from, from + q + usize::from(i < r))
}

/// [`calibrate`] over shard `shard.0` of `shard.1` of the chunks ([`shard_chunks`]): a partial
/// matrix (its `partial` names the shard and the run) that [`Imatrix::merge`] sums with the
/// others to exactly the matrix one process computes.
pub fn calibrate_shard(
    model: &Model,
    tokens: &[u32],
    opts: &CalibOptions,
    shard: (usize, usize),
    progress: impl FnMut(usize, usize),
) -> Result<Imatrix, ImatrixError> {
    let ctx = opts.ctx.max(1);
    let avail = tokens.len() / ctx;
    if avail == 0 {
        return Err(ImatrixError::TooShort {
            have: tokens.len(),
            need: opts.ctx,
        });
    }
    let total = opts.chunks.map_or(avail, |c| c.min(avail));
    let (i, n) = shard;
    if n == 0 || i >= n || n > total {
        return Err(ImatrixError::Shard(format!(
            "shard {} of {n} does not exist for a run of {total} chunks (at most one shard per chunk)",
            i + 1
        )));
    }
    let (from, to) = shard_chunks(total, i, n);
    let plan = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for t in &tokens[..total * ctx] {
            h.update(t.to_le_bytes());
        }
        h.update((ctx as u64).to_le_bytes());
        h.update((total as u64).to_le_bytes());
        h.update((n as u64).to_le_bytes());
        h.update([opts.process_output as u8, opts.kv_f16 as u8]);
        h.update(opts.bos.map_or(u64::MAX, |b| b as u64).to_le_bytes());
        for d in &opts.datasets {
            h.update(d.as_bytes());
            h.update([0]);
        }
        convert::tokenizer::hex(&h.finalize())
    };
    let collector = Collector::new(model.config.n_layers, opts.process_output);
    let want = if opts.process_output {
        Logits::All
    } else {
        Logits::None
    };
    let ran = run_chunks(
        model,
        &tokens[from * ctx..],
        opts.ctx,
        Some(to - from),
        opts.bos,
        opts.kv_f16,
        want,
        &collector,
        progress,
    )?;
    let mut m = collector.finish(model, ran as u32, opts.ctx as u32, opts.datasets.clone());
    if let Some(p) = &mut m.partial {
        p.shard = i;
        p.of = n;
        p.plan = plan;
    }
    Ok(m)
}

impl Imatrix {
    /// Sums matrices. Partial ones (the shards of one [`calibrate_shard`] run, each once, in any
    /// order) add up exactly to the matrix of the whole run; plain ones are summed as
    /// llama-imatrix's `--in-file` does (in_sum2 and counts added in f32, chunks added).
    /// `inputs` pairs each matrix with the file it came from, for errors.
    pub fn merge(inputs: &[(Imatrix, PathBuf)]) -> Result<Imatrix, ImatrixError> {
        let Some((first, first_path)) = inputs.first() else {
            return Err(ImatrixError::Shard("nothing to merge".into()));
        };
        let partials = inputs.iter().filter(|(m, _)| m.partial.is_some()).count();
        if partials != 0 && partials != inputs.len() {
            let (_, p) = inputs
                .iter()
                .find(|(m, _)| m.partial.is_some() != first.partial.is_some())
                .expect("a mixed set has one of each");
            return Err(fmt_err(
                p,
                format!(
                    "partial and whole imatrix files cannot be merged together ({} is {})",
                    first_path.display(),
                    if first.partial.is_some() {
                        "partial"
                    } else {
                        "whole"
                    }
                ),
            ));
        }
        if partials == 0 {
            let mut out = first.clone();
            for (m, p) in &inputs[1..] {
                for (name, e) in &m.entries {
                    match out.entries.get_mut(name) {
                        None => {
                            out.entries.insert(name.clone(), e.clone());
                        }
                        Some(o)
                            if o.in_sum2.len() == e.in_sum2.len()
                                && o.counts.len() == e.counts.len() =>
                        {
                            for (a, b) in o.in_sum2.iter_mut().zip(&e.in_sum2) {
                                *a += b;
                            }
                            for (a, b) in o.counts.iter_mut().zip(&e.counts) {
                                *a += b;
                            }
                        }
                        Some(o) => {
                            return Err(fmt_err(
                                p,
                                format!(
                                    "`{name}` has {} values, {} has {}",
                                    e.in_sum2.len(),
                                    first_path.display(),
                                    o.in_sum2.len()
                                ),
                            ))
                        }
                    }
                }
                out.chunk_count += m.chunk_count;
                for d in &m.datasets {
                    if !out.datasets.contains(d) {
                        out.datasets.push(d.clone());
                    }
                }
            }
            return Ok(out);
        }
        let fp = first.partial.as_ref().expect("partial");
        let n = fp.of;
        let mut slots: Vec<Option<(&Imatrix, &PathBuf)>> = vec![None; n];
        for (m, p) in inputs {
            let part = m.partial.as_ref().expect("partial");
            if part.of != n || part.plan != fp.plan || m.chunk_size != first.chunk_size {
                return Err(fmt_err(
                    p,
                    format!(
                        "is a shard of another calibration run than {} (a foreign shard: its shard count, inputs or options differ)",
                        first_path.display()
                    ),
                ));
            }
            if let Some((_, q)) = slots[part.shard] {
                return Err(fmt_err(
                    p,
                    format!(
                        "is shard {} of {n}, as {} is (a duplicated shard)",
                        part.shard + 1,
                        q.display()
                    ),
                ));
            }
            slots[part.shard] = Some((m, p));
        }
        let missing: Vec<String> = (0..n)
            .filter(|&i| slots[i].is_none())
            .map(|i| (i + 1).to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ImatrixError::Shard(format!(
                "the run of {} has {n} shards; shard(s) {} of {n} are missing",
                first_path.display(),
                missing.join(", ")
            )));
        }
        let mut exact: BTreeMap<String, (u64, Vec<i128>)> = BTreeMap::new();
        let mut chunk_count = 0u32;
        for (m, p) in slots.into_iter().flatten() {
            chunk_count += m.chunk_count;
            for (name, (tok, sums)) in &m.partial.as_ref().expect("partial").exact {
                let e = exact
                    .entry(name.clone())
                    .or_insert_with(|| (0, vec![0; sums.len()]));
                if e.1.len() != sums.len() {
                    return Err(fmt_err(
                        p,
                        format!(
                            "`{name}` has {} columns, an earlier shard {}",
                            sums.len(),
                            e.1.len()
                        ),
                    ));
                }
                e.0 += tok;
                for (a, b) in e.1.iter_mut().zip(sums) {
                    *a = a
                        .checked_add(*b)
                        .ok_or_else(|| fmt_err(p, format!("`{name}`: exact sums overflow")))?;
                }
            }
        }
        let entries = exact
            .into_iter()
            .map(|(name, (tok, sums))| {
                let in_sum2 = sums.iter().map(|&v| exact_value(v)).collect();
                (
                    name,
                    Entry {
                        in_sum2,
                        counts: vec![tok as f32],
                    },
                )
            })
            .collect();
        Ok(Imatrix {
            entries,
            chunk_count,
            chunk_size: first.chunk_size,
            datasets: first.datasets.clone(),
            partial: None,
        })
    }
}
