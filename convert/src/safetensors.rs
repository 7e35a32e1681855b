//! safetensors files: header validated before use, data memory-mapped.
//!
//! The format: an 8-byte little-endian header length N, N bytes of JSON mapping tensor names to
//! `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the end of the header),
//! then the data. kiln parses the header itself rather than through the `safetensors` crate so
//! that it can reject what that crate's map-based parse would hide (a duplicate tensor name
//! silently keeps the last entry) and name the file and tensor in every error; the crate is
//! used in the tests as the reference reader.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Largest header accepted (the safetensors crate's own cap).
pub const MAX_HEADER: u64 = 100_000_000;

/// The element types kiln reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
    /// The safetensors name.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            _ => None,
        }
    }
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct StTensor {
    /// Name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub start: usize,
    /// Bytes of data.
    pub len: usize,
}

impl StTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A validated, memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Option<Mmap>,
    /// Tensors in header order.
    pub tensors: Vec<StTensor>,
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Header entries in file order, duplicates kept (so they can be reported).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, serde_json::Value>()? {
                    v.push(e);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl SafetensorsFile {
    /// Opens and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < 8 {
            return Err(Error::format(
                path,
                format!("truncated: {len} bytes, not even the 8-byte header length"),
            ));
        }
        // SAFETY: read-only map of a file kiln does not modify while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let tensors = parse_header(path, &map)?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map: Some(map),
            tensors,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file's bytes (memory-mapped).
    pub fn bytes(&self) -> &[u8] {
        self.map.as_ref().expect("mapped")
    }

    /// A tensor's raw bytes.
    pub fn data(&self, t: &StTensor) -> &[u8] {
        &self.map.as_ref().expect("mapped")[t.start..t.start + t.len]
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&StTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Drops the mapped pages of `[start, start + len)` from this process's memory.
    pub(crate) fn release_range(&self, start: usize, len: usize) {
        if let (Some(m), true) = (&self.map, len > 0) {
            // SAFETY: the map is a read-only shared mapping of a file kiln never writes through
            // it; MADV_DONTNEED only drops pages, which the kernel re-reads from the file on the
            // next access, so no reference into the map can observe different bytes.
            unsafe {
                let _ = m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len);
            }
        }
    }
}

/// Parses and validates a safetensors header from the whole file `bytes`.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<Vec<StTensor>> {
    if bytes.len() < 8 {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes, not even the 8-byte header length",
                bytes.len()
            ),
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    if n > MAX_HEADER {
        return Err(Error::format(
            path,
            format!("header length {n} is over the cap of {MAX_HEADER} bytes"),
        ));
    }
    if 8 + n > bytes.len() as u64 {
        return Err(Error::format(
            path,
            format!(
                "header length {n} runs past the end of the file ({} bytes)",
                bytes.len()
            ),
        ));
    }
    let header = &bytes[8..8 + n as usize];
    let text = std::str::from_utf8(header).map_err(|e| {
        Error::format(
            path,
            format!(
                "header is not valid UTF-8 (at byte {})",
                8 + e.valid_up_to()
            ),
        )
    })?;
    let entries: Entries = serde_json::from_str(text.trim_end())
        .map_err(|e| Error::format(path, format!("header is not a JSON object: {e}")))?;
    let data_len = bytes.len() as u64 - 8 - n;
    let data_start = 8 + n as usize;
    let mut seen = HashSet::new();
    let mut tensors = Vec::new();
    for (name, v) in entries.0 {
        if !seen.insert(name.clone()) {
            return Err(Error::tensor(
                path,
                &name,
                "duplicate tensor name in the header",
            ));
        }
        if name == "__metadata__" {
            continue;
        }
        let bad = |msg: String| Error::tensor(path, &name, msg);
        let obj = v
            .as_object()
            .ok_or_else(|| bad("entry is not an object".into()))?;
        let dtype_s = obj
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype".into()))?;
        let dtype = Dtype::parse(dtype_s).ok_or_else(|| {
            bad(format!(
                "dtype {dtype_s} is not supported (kiln reads F32, F16 and BF16)"
            ))
        })?;
        let shape: Vec<usize> = obj
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape".into()))?
            .iter()
            .map(|d| d.as_u64().filter(|&d| d < (1 << 40)).map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of dimensions".into()))?;
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d).filter(|&p| p < (1 << 48)))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        let offs: Vec<u64> = obj
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| a.iter().map(|x| x.as_u64()).collect())
            .ok_or_else(|| bad("data_offsets is not [begin, end]".into()))?;
        let (b, e) = (offs[0], offs[1]);
        if b > e || e > data_len {
            return Err(bad(format!("data_offsets [{b}, {e}] are out of range (the data section holds {data_len} bytes)")));
        }
        let want = numel as u64 * dtype.size() as u64;
        if e - b != want {
            return Err(bad(format!(
                "holds {} bytes but shape {shape:?} of {} needs {want}",
                e - b,
                dtype.name()
            )));
        }
        tensors.push(StTensor {
            name,
            dtype,
            shape,
            start: data_start + b as usize,
            len: (e - b) as usize,
        });
    }
    let mut order: Vec<&StTensor> = tensors.iter().filter(|t| t.len > 0).collect();
    order.sort_by_key(|t| t.start);
    for w in order.windows(2) {
        if w[0].start + w[0].len > w[1].start {
            return Err(Error::tensor(
                path,
                &w[0].name,
                format!("data overlaps tensor `{}`", w[1].name),
            ));
        }
    }
    Ok(tensors)
}

/// Converts raw little-endian values of `dtype` to f32.
pub fn to_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => quantize::float::f32_bytes_to_f32(bytes, out),
        Dtype::F16 => quantize::float::f16_bytes_to_f32(bytes, out),
        Dtype::BF16 => quantize::float::bf16_bytes_to_f32(bytes, out),
    }
}

/// Writes a safetensors file of F32 tensors, streamed: `tensors` gives names and shapes,
/// `data(i)` the values of tensor `i`. Used by `kiln export`.
pub fn write_f32(
    dest: &Path,
    tensors: &[(String, Vec<usize>)],
    metadata: &[(String, String)],
    mut data: impl FnMut(usize) -> Result<Vec<f32>>,
) -> Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut off = 0u64;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [off, off + bytes]}),
        );
        off += bytes;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    while !(8 + h.len()).is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f = crate::atomic::AtomicFile::create(dest)?;
    let io = |e| Error::io(dest, e);
    f.writer()
        .write_all(&(h.len() as u64).to_le_bytes())
        .map_err(io)?;
    f.writer().write_all(&h).map_err(io)?;
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let v = data(i)?;
        if v.len() != shape.iter().product::<usize>() {
            return Err(Error::tensor(
                dest,
                name,
                format!("{} values supplied for shape {shape:?}", v.len()),
            ));
        }
        f.writer().write_all(bytemuck::cast_slice(&v)).map_err(io)?;
    }
    f.commit()
}
