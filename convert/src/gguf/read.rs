//! The strict GGUF reader. Every length a file states is checked against a cap and against the
//! bytes that remain before anything is allocated; tensor offsets must be aligned, inside the
//! file and not overlapping; duplicate keys and tensor names are errors. Tensor data is served
//! from a memory map.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use quantize::GgmlType;

use super::{align_up, Metadata, Value, ValueType, DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC};
use crate::error::{Error, Result};

/// Caps on what a GGUF file may state. The defaults fit every real model with a wide margin.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest string (bytes). Chat templates are the longest real strings (tens of KiB).
    pub max_string: u64,
    /// Most array elements (a vocabulary of 256 Ki tokens and its merges fit easily).
    pub max_array: u64,
    /// Most tensors.
    pub max_tensors: u64,
    /// Most metadata keys.
    pub max_kv: u64,
    /// Longest tensor name (llama.cpp's own limit is 63 bytes).
    pub max_name: u64,
    /// Deepest array nesting.
    pub max_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string: 16 << 20,
            max_array: 1 << 24,
            max_tensors: 1 << 16,
            max_kv: 1 << 16,
            max_name: 256,
            max_depth: 2,
        }
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Name (`blk.0.attn_q.weight` …).
    pub name: String,
    /// Dimensions, innermost (row length) first, as ggml's `ne`.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
    /// The file of a split model holding it (0 for an unsplit file).
    pub part: usize,
}

impl TensorInfo {
    /// Number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Values per row (`ne[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }
    /// Number of rows (product of the outer dimensions).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
    /// The shape outermost first (the PyTorch / safetensors order).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// One file of a GGUF model, memory-mapped.
pub struct GgufPart {
    path: PathBuf,
    map: Mmap,
    /// Offset of the data section in this file.
    pub data_offset: u64,
}

impl GgufPart {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The whole file's bytes (memory-mapped).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// A parsed GGUF model with its tensor data memory-mapped: one file, or the files of a split
/// model (`NAME-00001-of-0000N.gguf` …, opened from the first) read as one.
pub struct GgufFile {
    path: PathBuf,
    parts: Vec<GgufPart>,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata (of the first file for a split model), in file order.
    pub metadata: Metadata,
    /// Tensor infos, in file order (file by file for a split model).
    pub tensors: Vec<TensorInfo>,
    /// Offset of the data section in the (first) file.
    pub data_offset: u64,
    /// Data alignment.
    pub alignment: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("parts", &self.parts.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// What [`parse_header`] finds.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub data_offset: u64,
    pub alignment: u64,
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::format(path, "is a directory, not a GGUF file"));
    }
    if meta.len() < 24 {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes, a GGUF header needs at least 24",
                meta.len()
            ),
        ));
    }
    // SAFETY: the map is read-only; kiln does not modify files it reads while they are
    // open, and a file changed underneath by another process is outside its contract, as
    // for every memory-mapping model loader (llama.cpp included).
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// `split.*` of a header: (no, count, tensors, kiln's plan digest).
/// (split.no, split.count, split.tensors.count, kiln's plan digest).
type SplitKeys = (usize, usize, usize, Option<String>);

fn split_keys(path: &Path, md: &Metadata) -> Result<Option<SplitKeys>> {
    use super::split::{KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_PLAN, KEY_SPLIT_TENSORS};
    let Some(count) = md.get(KEY_SPLIT_COUNT) else {
        return Ok(None);
    };
    let get = |k: &str, v: Option<&Value>| -> Result<usize> {
        match v {
            Some(Value::U16(x)) => Ok(*x as usize),
            Some(Value::I32(x)) if *x >= 0 => Ok(*x as usize),
            Some(v) => Err(Error::format(path, format!("`{k}` is {v:?}, not a count"))),
            None => Err(Error::format(
                path,
                format!("has `{KEY_SPLIT_COUNT}` but no `{k}`"),
            )),
        }
    };
    let count = get(KEY_SPLIT_COUNT, Some(count))?;
    let no = get(KEY_SPLIT_NO, md.get(KEY_SPLIT_NO))?;
    let tensors = get(KEY_SPLIT_TENSORS, md.get(KEY_SPLIT_TENSORS))?;
    let plan = md.str(KEY_SPLIT_PLAN).map(str::to_string);
    Ok(Some((no, count, tensors, plan)))
}

impl GgufFile {
    /// Opens and validates `path` with the default [`Limits`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, Limits::default())
    }

    /// Opens and validates `path`; the first file of a split model opens all its files.
    pub fn open_with(path: impl AsRef<Path>, limits: Limits) -> Result<Self> {
        let path = path.as_ref();
        let file = Self::open_single(path, limits)?;
        let Some((no, count, _, _)) = split_keys(path, &file.metadata)? else {
            return Ok(file);
        };
        // split.count 0: llama-gguf-split's merged output (one file that says so).
        if count <= 1 && no == 0 {
            return Ok(file);
        }
        let Some((prefix, i, n)) = super::split::parse_split_name(path) else {
            return Err(Error::format(
                path,
                format!(
                    "is file {} of a split model of {count}, but its name is not PREFIX-{:05}-of-{count:05}.gguf",
                    no + 1,
                    no + 1
                ),
            ));
        };
        if no != 0 {
            return Err(Error::format(
                path,
                format!(
                    "is file {} of {count} of a split model; open the first, {}",
                    no + 1,
                    super::split::split_path(&prefix, 0, count).display()
                ),
            ));
        }
        if i != 0 || n != count {
            return Err(Error::format(
                path,
                format!(
                    "its name says file {} of {n}, its split keys file 1 of {count}",
                    i + 1
                ),
            ));
        }
        let mut others = Vec::with_capacity(count - 1);
        for k in 1..count {
            let p = super::split::split_path(&prefix, k, count);
            if !p.exists() {
                return Err(Error::format(
                    &p,
                    format!(
                        "file {} of {count} of split model {} is missing",
                        k + 1,
                        path.display()
                    ),
                ));
            }
            others.push(Self::open_single(&p, limits)?);
        }
        Self::assemble(file, others)
    }

    /// Opens the files of a split model given in any order (from any directories) as one
    /// model: every file must be there once, all of the same split (count, tensor total and
    /// kiln's plan digest), each tensor in one file only.
    pub fn open_parts(paths: &[PathBuf], limits: Limits) -> Result<Self> {
        let mut files: Vec<(usize, GgufFile)> = Vec::with_capacity(paths.len());
        let mut count = None;
        for p in paths {
            let f = Self::open_single(p, limits)?;
            let (no, n, _, _) = split_keys(p, &f.metadata)?
                .filter(|k| k.1 >= 1)
                .ok_or_else(|| {
                    Error::format(p, "has no split keys: not a file of a split model")
                })?;
            let (first_path, n0) = *count.get_or_insert((p, n));
            if n != n0 {
                return Err(Error::format(
                    p,
                    format!(
                        "is a file of a {n}-file split, {} of a {n0}-file one",
                        first_path.display()
                    ),
                ));
            }
            if let Some((_, other)) = files.iter().find(|(k, _)| *k == no) {
                return Err(Error::format(
                    p,
                    format!(
                        "is file {} of {n}, as {} is (a duplicated shard)",
                        no + 1,
                        other.path.display()
                    ),
                ));
            }
            files.push((no, f));
        }
        let n = count.map_or(0, |c| c.1);
        let missing: Vec<String> = (0..n)
            .filter(|k| !files.iter().any(|(no, _)| no == k))
            .map(|k| format!("{}", k + 1))
            .collect();
        if !missing.is_empty() {
            return Err(Error::format(
                &paths[0],
                format!(
                    "the split has {n} files; file(s) {} of {n} are missing",
                    missing.join(", ")
                ),
            ));
        }
        files.sort_by_key(|(no, _)| *no);
        let mut it = files.into_iter().map(|(_, f)| f);
        let first = it.next().expect("at least one file");
        Self::assemble(first, it.collect())
    }

    /// Puts the first file of a split model and the others (in order) together.
    fn assemble(mut file: GgufFile, others: Vec<GgufFile>) -> Result<Self> {
        let path = file.path.clone();
        let (_, count, total, plan) =
            split_keys(&path, &file.metadata)?.expect("a split file's keys were read");
        let mut seen: HashSet<String> = file.tensors.iter().map(|t| t.name.clone()).collect();
        for (idx, other) in others.into_iter().enumerate() {
            let k = idx + 1;
            let p = other.path.clone();
            let keys = split_keys(&p, &other.metadata)?.ok_or_else(|| {
                Error::format(&p, "has no split keys: not a file of a split model")
            })?;
            if keys.0 != k || keys.1 != count || keys.2 != total {
                return Err(Error::format(
                    &p,
                    format!(
                        "says it is file {} of {} ({} tensors), expected file {} of {count} ({total} tensors)",
                        keys.0 + 1,
                        keys.1,
                        keys.2,
                        k + 1
                    ),
                ));
            }
            if keys.3 != plan {
                return Err(Error::format(
                    &p,
                    format!(
                        "belongs to another build than {} (its split plan differs: a foreign shard)",
                        path.display()
                    ),
                ));
            }
            for mut t in other.tensors {
                if !seen.insert(t.name.clone()) {
                    return Err(Error::tensor(
                        &p,
                        &t.name,
                        "is also in an earlier file of the split model",
                    ));
                }
                t.part = k;
                file.tensors.push(t);
            }
            file.parts.extend(other.parts);
        }
        if file.tensors.len() != total {
            return Err(Error::format(
                &path,
                format!(
                    "the split model's files hold {} tensors, its split.tensors.count says {total}",
                    file.tensors.len()
                ),
            ));
        }
        Ok(file)
    }

    /// Opens and validates one file, a split model's file as it is (its own tensors only).
    pub fn open_single(path: impl AsRef<Path>, limits: Limits) -> Result<Self> {
        let path = path.as_ref();
        let map = map_file(path)?;
        let h = parse_header(path, &map, limits)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            parts: vec![GgufPart {
                path: path.to_path_buf(),
                map,
                data_offset: h.data_offset,
            }],
            version: h.version,
            metadata: h.metadata,
            tensors: h.tensors,
            data_offset: h.data_offset,
            alignment: h.alignment,
        })
    }

    /// The (first) file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files: one, or those of a split model in order.
    pub fn parts(&self) -> &[GgufPart] {
        &self.parts
    }

    /// True when the model is split over several files.
    pub fn is_split(&self) -> bool {
        self.parts.len() > 1
    }

    /// The whole (first) file's bytes (memory-mapped).
    pub fn bytes(&self) -> &[u8] {
        &self.parts[0].map
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (checked in range when the file was opened).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let part = &self.parts[t.part];
        let start = (part.data_offset + t.offset) as usize;
        &part.map[start..start + t.size as usize]
    }

    /// A tensor's values as f32 (dequantized).
    pub fn tensor_f32(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        quantize::dequantize(t.ty, self.tensor_data(t), t.n_elements() as usize).map_err(|e| {
            Error::Quant {
                path: self.parts[t.part].path.clone(),
                tensor: t.name.clone(),
                source: e,
            }
        })
    }

    /// Total bytes of the file (of all files of a split model).
    pub fn file_size(&self) -> u64 {
        self.parts.iter().map(|p| p.map.len() as u64).sum()
    }

    /// The architecture (`general.architecture`).
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.str("general.architecture")
    }

    /// Writes the model as one GGUF at `out` with metadata `md` and every tensor copied byte
    /// for byte, in order (through a temporary file beside `out`); returns its size.
    pub fn write_with_metadata(&self, md: Metadata, out: &Path) -> Result<u64> {
        let specs: Vec<super::TensorSpec> = self
            .tensors
            .iter()
            .map(|t| super::TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        let w = super::GgufWriter::new(out, md, specs)?;
        let mut f = crate::atomic::AtomicFile::create(out)?;
        w.write(out, f.writer(), |i| {
            Ok(self.tensor_data(&self.tensors[i]).to_vec())
        })?;
        f.commit()?;
        Ok(w.file_size())
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::format(
                self.path,
                format!(
                    "truncated at byte {}: {what} needs {n} bytes but only {} remain",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, what: &str, cap: u64) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > cap {
            return Err(Error::format(
                self.path,
                format!(
                    "{what} at byte {at} states a length of {len} bytes, over the cap of {cap}"
                ),
            ));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::format(
                self.path,
                format!("{what} at byte {at} is not valid UTF-8: {e}"),
            )
        })
    }

    fn value(&mut self, ty: ValueType, what: &str, limits: &Limits, depth: u32) -> Result<Value> {
        let fixed = |c: &mut Self, n: u64| -> Result<&'a [u8]> { c.take(n, what) };
        Ok(match ty {
            ValueType::U8 => Value::U8(fixed(self, 1)?[0]),
            ValueType::I8 => Value::I8(fixed(self, 1)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(fixed(self, 2)?.try_into().unwrap())),
            ValueType::I16 => Value::I16(i16::from_le_bytes(fixed(self, 2)?.try_into().unwrap())),
            ValueType::U32 => Value::U32(u32::from_le_bytes(fixed(self, 4)?.try_into().unwrap())),
            ValueType::I32 => Value::I32(i32::from_le_bytes(fixed(self, 4)?.try_into().unwrap())),
            ValueType::F32 => Value::F32(f32::from_le_bytes(fixed(self, 4)?.try_into().unwrap())),
            ValueType::U64 => Value::U64(u64::from_le_bytes(fixed(self, 8)?.try_into().unwrap())),
            ValueType::I64 => Value::I64(i64::from_le_bytes(fixed(self, 8)?.try_into().unwrap())),
            ValueType::F64 => Value::F64(f64::from_le_bytes(fixed(self, 8)?.try_into().unwrap())),
            ValueType::Bool => {
                let b = fixed(self, 1)?[0];
                if b > 1 {
                    return Err(Error::format(
                        self.path,
                        format!("{what}: bool byte is {b}, not 0 or 1"),
                    ));
                }
                Value::Bool(b == 1)
            }
            ValueType::String => Value::String(self.string(what, limits.max_string)?),
            ValueType::Array => {
                if depth >= limits.max_depth {
                    return Err(Error::format(
                        self.path,
                        format!("{what}: arrays nested deeper than {}", limits.max_depth),
                    ));
                }
                let at = self.pos;
                let et = self.u32(what)?;
                let elem = ValueType::from_u32(et).ok_or_else(|| {
                    Error::format(
                        self.path,
                        format!("{what}: unknown array element type {et}"),
                    )
                })?;
                let count = self.u64(what)?;
                let min = match elem {
                    ValueType::String => 8,
                    ValueType::Array => 12,
                    t => t.fixed_size().unwrap() as u64,
                };
                if count > limits.max_array || count.saturating_mul(min) > self.remaining() {
                    return Err(Error::format(
                        self.path,
                        format!(
                            "{what}: array at byte {at} states {count} elements, over the cap of {} or past the end of the file",
                            limits.max_array
                        ),
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, what, limits, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }
}

/// Parses and validates a GGUF header from `bytes` (the whole file). `path` names the file in
/// errors.
pub fn parse_header(path: &Path, bytes: &[u8], limits: Limits) -> Result<Header> {
    let mut c = Cursor {
        b: bytes,
        pos: 0,
        path,
    };
    let magic = c.u32("magic")?;
    if magic != MAGIC {
        return Err(Error::format(
            path,
            format!("not a GGUF file (magic {:#010x}, expected \"GGUF\")", magic),
        ));
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        return Err(Error::unsupported(
            path,
            format!("GGUF version {version} (kiln reads versions 2 and 3)"),
        ));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    if n_tensors > limits.max_tensors || n_tensors.saturating_mul(24) > c.remaining() {
        return Err(Error::format(
            path,
            format!(
                "tensor count {n_tensors} is over the cap of {} or past the end of the file",
                limits.max_tensors
            ),
        ));
    }
    if n_kv > limits.max_kv || n_kv.saturating_mul(12) > c.remaining() {
        return Err(Error::format(
            path,
            format!(
                "metadata count {n_kv} is over the cap of {} or past the end of the file",
                limits.max_kv
            ),
        ));
    }
    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"), limits.max_string)?;
        if metadata.get(&key).is_some() {
            return Err(Error::format(
                path,
                format!("duplicate metadata key `{key}`"),
            ));
        }
        let t = c.u32(&key)?;
        let ty = ValueType::from_u32(t).ok_or_else(|| {
            Error::format(path, format!("metadata `{key}`: unknown value type {t}"))
        })?;
        let v = c.value(ty, &format!("metadata `{key}`"), &limits, 0)?;
        metadata.set(key, v);
    }
    let alignment = match metadata.get(KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => *a as u64,
        Some(v) => {
            return Err(Error::format(
                path,
                format!("{KEY_ALIGNMENT} is {v:?}: it must be a u32 power of two"),
            ))
        }
    };
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = c.string(&format!("tensor #{i} name"), limits.max_name)?;
        if !names.insert(name.clone()) {
            return Err(Error::tensor(path, &name, "duplicate tensor name"));
        }
        let n_dims = c.u32(&name)?;
        if n_dims == 0 || n_dims > 4 {
            return Err(Error::tensor(
                path,
                &name,
                format!("{n_dims} dimensions (1 to 4 allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&name)?);
        }
        let numel = dims
            .iter()
            .try_fold(1u64, |acc, &d| {
                acc.checked_mul(d).filter(|&p| p < (1 << 48))
            })
            .ok_or_else(|| Error::tensor(path, &name, format!("dimensions {dims:?} overflow")))?;
        let tid = c.u32(&name)?;
        let ty = GgmlType::from_id(tid).ok_or_else(|| {
            Error::tensor(
                path,
                &name,
                format!("tensor type id {tid} is not one kiln handles"),
            )
        })?;
        let offset = c.u64(&name)?;
        let row = ty.row_size(dims[0] as usize).ok_or_else(|| {
            Error::tensor(
                path,
                &name,
                format!(
                    "row length {} is not a multiple of {}'s block size {}",
                    dims[0],
                    ty,
                    ty.block_size()
                ),
            )
        })? as u64;
        let size = row * numel.checked_div(dims[0]).unwrap_or(0);
        if offset % alignment != 0 {
            return Err(Error::tensor(
                path,
                &name,
                format!("data offset {offset} is not aligned to {alignment}"),
            ));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
            part: 0,
        });
    }
    let data_offset = align_up(c.pos as u64, alignment);
    let data_len = (bytes.len() as u64).saturating_sub(data_offset);
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for (i, t) in order.iter().enumerate() {
        let end = t.offset.checked_add(t.size).filter(|&e| e <= data_len).ok_or_else(|| {
            Error::tensor(
                path,
                &t.name,
                format!("data [{}, +{}) runs past the end of the file (data section holds {data_len} bytes)", t.offset, t.size),
            )
        })?;
        if let Some(next) = order.get(i + 1) {
            if end > next.offset {
                return Err(Error::tensor(
                    path,
                    &t.name,
                    format!("data overlaps tensor `{}`", next.name),
                ));
            }
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        data_offset,
        alignment,
    })
}
