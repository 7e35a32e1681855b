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
        let mut specs = Vec::new();
        let mut data: Vec<&[f32]> = Vec::new();
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
            data.push(&e.in_sum2);
            specs.push(TensorSpec {
                name: format!("{name}.counts"),
                dims: dims(1),
                ty: GgmlType::F32,
            });
            data.push(&e.counts);
        }
        let w = GgufWriter::new(path, md, specs)?;
        let mut f = AtomicFile::create(path)?;
        w.write(path, f.writer(), |i| {
            Ok(bytemuck::cast_slice(data[i]).to_vec())
        })?;
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

/// Accumulates Σx² per input column of every matmul during forward passes.
pub struct Collector {
    n_layers: usize,
    process_output: bool,
    /// `[layer][kind]` → (Σx² per column in f64, tokens).
    sums: Vec<Mutex<(Vec<f64>, u64)>>,
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
                .map(|_| Mutex::new((Vec::new(), 0)))
                .collect(),
        }
    }

    /// The importance matrix collected so far, under the model's tensor names.
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
        let mut put = |name: String, s: &(Vec<f64>, u64)| {
            if s.1 > 0 {
                m.entries.insert(
                    name,
                    Entry {
                        in_sum2: s.0.iter().map(|&v| v as f32).collect(),
                        counts: vec![s.1 as f32],
                    },
                );
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
        if s.0.is_empty() {
            s.0 = vec![0.0; cols];
        }
        for row in x.chunks_exact(cols) {
            for (acc, &v) in s.0.iter_mut().zip(row) {
                *acc += (v as f64) * (v as f64);
            }
        }
        s.1 += n_tok as u64;
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
    let collector = Collector::new(model.config.n_layers, opts.process_output);
    let want = if opts.process_output {
        Logits::All
    } else {
        Logits::None
    };
    let n = run_chunks(
        model,
        tokens,
        opts.ctx,
        opts.chunks,
        opts.bos,
        opts.kv_f16,
        want,
        &collector,
        progress,
    )?;
    Ok(collector.finish(model, n as u32, opts.ctx as u32, opts.datasets.clone()))
}
