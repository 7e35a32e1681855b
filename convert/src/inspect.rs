//! `kiln inspect`: what a checkpoint directory or GGUF file holds.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::gguf::Value;
use crate::source::ModelSource;

/// One tensor row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct InspectTensor {
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<u64>,
    /// Storage type (ggml name).
    pub ty: String,
    pub bytes: u64,
}

/// Everything `kiln inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: String,
    /// `gguf` or `checkpoint`.
    pub kind: &'static str,
    pub gguf_version: Option<u32>,
    pub architecture: String,
    /// Metadata: scalars in full, arrays summarised (type, length, first items).
    pub metadata: Vec<(String, serde_json::Value)>,
    pub tensors: Vec<InspectTensor>,
    pub n_parameters: u64,
    pub tensor_bytes: u64,
    pub file_bytes: u64,
    /// Checkpoint tensors kiln does not use.
    pub extra_tensors: Vec<String>,
    pub ignored_tensors: Vec<String>,
    /// Why kiln cannot run this model (an architecture it does not implement …), if it
    /// cannot; the metadata and tensors are shown anyway.
    pub unsupported: Option<String>,
}

fn json_of(v: &Value) -> serde_json::Value {
    match v {
        Value::Array(t, items) => serde_json::json!({
            "array_of": format!("{t:?}"),
            "len": items.len(),
            "head": items.iter().take(8).map(json_of).collect::<Vec<_>>(),
        }),
        Value::String(s) => s.clone().into(),
        Value::Bool(b) => (*b).into(),
        Value::F32(f) => (*f as f64).into(),
        Value::F64(f) => (*f).into(),
        Value::I8(x) => (*x).into(),
        Value::I16(x) => (*x).into(),
        Value::I32(x) => (*x).into(),
        Value::I64(x) => (*x).into(),
        other => other.as_u64().into(),
    }
}

/// Inspects a checkpoint directory or GGUF file. A well-formed GGUF is shown whatever its
/// architecture.
pub fn inspect(path: &Path) -> Result<Inspection> {
    if !path.is_dir() {
        let file = crate::gguf::GgufFile::open(path)?;
        if let Err(e) = ModelSource::open(path) {
            return Ok(inspect_gguf(&file, Some(e.to_string())));
        }
    }
    let src = ModelSource::open(path)?;
    let (kind, version, md, file_bytes, extra, ignored) = match &src {
        ModelSource::Gguf(g) => (
            "gguf",
            Some(g.file.version),
            g.file.metadata.clone(),
            g.file.file_size(),
            vec![],
            vec![],
        ),
        ModelSource::Hf(h) => {
            let bytes = h
                .files()
                .iter()
                .map(|f| std::fs::metadata(f.path()).map(|m| m.len()).unwrap_or(0))
                .sum();
            (
                "checkpoint",
                None,
                src.base_metadata(Some("(not checked)")).unwrap_or_default(),
                bytes,
                h.extra.clone(),
                h.ignored.clone(),
            )
        }
    };
    let tensors: Vec<InspectTensor> = src
        .tensors()
        .iter()
        .map(|t| InspectTensor {
            name: t.name.clone(),
            shape: t.dims.iter().rev().copied().collect(),
            ty: t.stored.name().to_string(),
            bytes: t
                .stored
                .row_size(t.row_len())
                .map(|r| (r * (t.n_elements() / t.row_len())) as u64)
                .unwrap_or(0),
        })
        .collect();
    Ok(Inspection {
        path: path.display().to_string(),
        kind,
        gguf_version: version,
        architecture: src.config().arch.gguf_arch().to_string(),
        metadata: md
            .iter()
            .map(|(k, v)| (k.to_string(), json_of(v)))
            .collect(),
        n_parameters: src.tensors().iter().map(|t| t.n_elements() as u64).sum(),
        tensor_bytes: tensors.iter().map(|t| t.bytes).sum(),
        tensors,
        file_bytes,
        extra_tensors: extra,
        ignored_tensors: ignored,
        unsupported: None,
    })
}

/// A GGUF kiln does not run: its metadata and tensor table straight from the file.
fn inspect_gguf(file: &crate::gguf::GgufFile, why: Option<String>) -> Inspection {
    let tensors: Vec<InspectTensor> = file
        .tensors
        .iter()
        .map(|t| InspectTensor {
            name: t.name.clone(),
            shape: t.dims.iter().rev().copied().collect(),
            ty: t.ty.name().to_string(),
            bytes: t
                .ty
                .row_size(t.row_len())
                .map(|r| (r * t.n_rows()) as u64)
                .unwrap_or(0),
        })
        .collect();
    Inspection {
        path: file.path().display().to_string(),
        kind: "gguf",
        gguf_version: Some(file.version),
        architecture: file.architecture().unwrap_or("(none)").to_string(),
        metadata: file
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), json_of(v)))
            .collect(),
        n_parameters: file.tensors.iter().map(|t| t.n_elements()).sum(),
        tensor_bytes: tensors.iter().map(|t| t.bytes).sum(),
        tensors,
        file_bytes: file.file_size(),
        extra_tensors: vec![],
        ignored_tensors: vec![],
        unsupported: why,
    }
}
