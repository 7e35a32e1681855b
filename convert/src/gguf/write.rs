//! The GGUF v3 writer: header and tensor infos first, then each tensor's bytes, streamed one
//! tensor at a time from a callback, each padded to the alignment. Output is deterministic:
//! the bytes depend only on the metadata, the tensor list and the data.

use std::io::Write;
use std::path::Path;

use quantize::GgmlType;

use super::{
    align_up, Metadata, Value, ValueType, DEFAULT_ALIGNMENT, KEY_ALIGNMENT, MAGIC, VERSION,
};
use crate::error::{Error, Result};

/// A tensor to write: its header entry, without the offset (the writer lays them out).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// GGUF name.
    pub name: String,
    /// Dimensions, innermost first (ggml's `ne`).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
}

impl TensorSpec {
    /// Bytes of data (`None` if the row length does not fit the type's blocks).
    pub fn size(&self) -> Option<u64> {
        let row = self.ty.row_size(*self.dims.first()? as usize)? as u64;
        Some(row * self.dims.iter().skip(1).product::<u64>())
    }
}

/// A GGUF file laid out and ready to stream.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    metadata: Metadata,
    tensors: Vec<TensorSpec>,
    sizes: Vec<u64>,
    offsets: Vec<u64>,
    alignment: u64,
}

impl GgufWriter {
    /// Lays out `tensors` (in this order) after `metadata`. `path` names the output in errors.
    pub fn new(path: &Path, metadata: Metadata, tensors: Vec<TensorSpec>) -> Result<Self> {
        let alignment = match metadata.get(KEY_ALIGNMENT) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => *a as u64,
            Some(v) => {
                return Err(Error::format(
                    path,
                    format!("{KEY_ALIGNMENT} must be a u32 power of two, not {v:?}"),
                ))
            }
        };
        let mut seen = std::collections::HashSet::new();
        let mut sizes = Vec::with_capacity(tensors.len());
        let mut offsets = Vec::with_capacity(tensors.len());
        let mut off = 0u64;
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::tensor(path, &t.name, "duplicate tensor name"));
            }
            if t.dims.is_empty() || t.dims.len() > 4 {
                return Err(Error::tensor(
                    path,
                    &t.name,
                    format!("{} dimensions (1 to 4 allowed)", t.dims.len()),
                ));
            }
            let size = t.size().ok_or_else(|| {
                Error::tensor(
                    path,
                    &t.name,
                    format!(
                        "row length {} does not fit {}'s blocks of {}",
                        t.dims[0],
                        t.ty,
                        t.ty.block_size()
                    ),
                )
            })?;
            offsets.push(off);
            sizes.push(size);
            off = align_up(off + size, alignment);
        }
        Ok(GgufWriter {
            metadata,
            tensors,
            sizes,
            offsets,
            alignment,
        })
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// The data alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Bytes of tensor `i`.
    pub fn tensor_size(&self, i: usize) -> u64 {
        self.sizes[i]
    }

    /// Total bytes of the file.
    pub fn file_size(&self) -> u64 {
        let header = self.header_bytes().len() as u64;
        match self.tensors.len() {
            0 => header,
            n => header + align_up(self.offsets[n - 1] + self.sizes[n - 1], self.alignment),
        }
    }

    /// The header, metadata and tensor infos, padded to the alignment.
    pub fn header_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in self.metadata.iter() {
            put_string(&mut b, k);
            b.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut b, v);
        }
        for (t, off) in self.tensors.iter().zip(&self.offsets) {
            put_string(&mut b, &t.name);
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ty.id().to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
        }
        let padded = align_up(b.len() as u64, self.alignment) as usize;
        b.resize(padded, 0);
        b
    }

    /// Writes the file to `w`; `data(i)` supplies tensor `i`'s bytes, one tensor at a time, in
    /// order. `path` names the output in errors.
    pub fn write<W: Write>(
        &self,
        path: &Path,
        w: &mut W,
        mut data: impl FnMut(usize) -> Result<Vec<u8>>,
    ) -> Result<()> {
        let io = |e| Error::io(path, e);
        w.write_all(&self.header_bytes()).map_err(io)?;
        let zeros = vec![0u8; self.alignment as usize];
        for i in 0..self.tensors.len() {
            let bytes = data(i)?;
            if bytes.len() as u64 != self.sizes[i] {
                return Err(Error::tensor(
                    path,
                    &self.tensors[i].name,
                    format!(
                        "{} bytes supplied for a tensor of {}",
                        bytes.len(),
                        self.sizes[i]
                    ),
                ));
            }
            w.write_all(&bytes).map_err(io)?;
            // Every tensor, the last included, is padded to the alignment, as ggml writes.
            let end = self.offsets[i] + self.sizes[i];
            let pad = align_up(end, self.alignment) - end;
            w.write_all(&zeros[..pad as usize]).map_err(io)?;
        }
        Ok(())
    }
}

fn put_string(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(*x as u8),
        Value::String(s) => put_string(b, s),
        Value::Array(t, items) => {
            b.extend_from_slice(&(*t as u32).to_le_bytes());
            b.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                debug_assert_eq!(it.value_type(), *t, "array items must all be {t:?}");
                if *t == ValueType::Array || it.value_type() == *t {
                    put_value(b, it);
                }
            }
        }
    }
}
