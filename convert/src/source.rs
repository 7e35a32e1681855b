//! A model to read from: a Hugging Face checkpoint directory or a GGUF file, seen the same way —
//! hyper-parameters, base GGUF metadata, and tensors under their GGUF names in GGUF layout
//! (Q/K rows permuted for llama and mistral), loaded as f32 one at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quantize::GgmlType;

use crate::arch::{TensorDef, Transform};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Metadata, Value};
use crate::lora::{LoraSpec, LoraStack};
use crate::mapping;
use crate::safetensors::{self as st, Dtype, SafetensorsFile};

/// A tensor of a model source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTensor {
    /// GGUF name.
    pub name: String,
    /// Dimensions, innermost first (ggml's `ne`).
    pub dims: Vec<u64>,
    /// What the source stores it as (a GGUF type, or F32/F16/BF16 for safetensors dtypes).
    pub stored: GgmlType,
}

impl SourceTensor {
    /// Number of values.
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
}

/// Where a checkpoint tensor lives, and how its values become the GGUF layout.
#[derive(Debug, Clone)]
struct Loc {
    file: usize,
    index: usize,
    hf_name: String,
    transform: Transform,
}

/// A validated Hugging Face checkpoint directory.
#[derive(Debug)]
pub struct HfCheckpoint {
    dir: PathBuf,
    /// Hyper-parameters from config.json.
    pub config: ModelConfig,
    files: Vec<SafetensorsFile>,
    locs: HashMap<String, Loc>,
    tensors: Vec<SourceTensor>,
    /// Checkpoint tensors kiln does not use (listed, never dropped silently).
    pub extra: Vec<String>,
    /// Checkpoint tensors that hold no weights (`rotary_emb.inv_freq` …), skipped.
    pub ignored: Vec<String>,
    /// Tensors the GGUF holds that config.json implies (`rope_freqs.weight`).
    derived: HashMap<String, Vec<f32>>,
    /// LoRA adapters merged into the weights as they are read.
    lora: LoraStack,
}

impl HfCheckpoint {
    /// Opens and validates a checkpoint directory: config.json, `model.safetensors` or the
    /// shards of `model.safetensors.index.json`, every header, every tensor the architecture
    /// needs with the shape config.json implies.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::format(&dir, "is not a checkpoint directory"));
        }
        let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut files = Vec::new();
        let mut listed: Option<HashMap<String, String>> = None;
        if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let j: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::format(&index_path, format!("not valid JSON: {e}")))?;
            let wm = j["weight_map"]
                .as_object()
                .ok_or_else(|| Error::format(&index_path, "no weight_map object"))?;
            let mut map = HashMap::new();
            let mut shards: Vec<String> = Vec::new();
            for (t, f) in wm {
                let f = f.as_str().ok_or_else(|| {
                    Error::format(
                        &index_path,
                        format!("weight_map entry {t} is not a file name"),
                    )
                })?;
                if f.contains('/') || f.contains("..") {
                    return Err(Error::format(
                        &index_path,
                        format!("shard name {f:?} leaves the checkpoint directory"),
                    ));
                }
                if !shards.iter().any(|s| s == f) {
                    shards.push(f.to_string());
                }
                map.insert(t.clone(), f.to_string());
            }
            shards.sort();
            for s in &shards {
                let p = dir.join(s);
                if !p.exists() {
                    return Err(Error::format(
                        &p,
                        "missing shard listed in model.safetensors.index.json",
                    ));
                }
                files.push(SafetensorsFile::open(&p)?);
            }
            listed = Some(map);
        } else if single.exists() {
            files.push(SafetensorsFile::open(&single)?);
        } else {
            return Err(Error::format(
                &dir,
                "no model.safetensors or model.safetensors.index.json",
            ));
        }

        let mut by_hf: HashMap<String, (usize, usize)> = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            for (ti, t) in f.tensors.iter().enumerate() {
                if let Some((other, _)) = by_hf.insert(t.name.clone(), (fi, ti)) {
                    return Err(Error::tensor(
                        f.path(),
                        &t.name,
                        format!("also stored in {}", files[other].path().display()),
                    ));
                }
            }
        }
        if let Some(map) = &listed {
            for (t, f) in map {
                match by_hf.get(t) {
                    Some((fi, _))
                        if files[*fi]
                            .path()
                            .file_name()
                            .map(|n| n.to_string_lossy() == *f)
                            .unwrap_or(false) => {}
                    _ => {
                        return Err(Error::tensor(
                            &index_path,
                            t,
                            format!("listed in shard {f}, which does not hold it"),
                        ));
                    }
                }
            }
        }

        let mut extra = Vec::new();
        let mut ignored = Vec::new();
        let mut locs = HashMap::new();
        let expected: Vec<TensorDef> = config.arch.family().tensors(&config);
        let by_hf_name: HashMap<&str, &TensorDef> =
            expected.iter().map(|t| (t.hf.as_str(), t)).collect();
        let mut hf_names: Vec<&String> = by_hf.keys().collect();
        hf_names.sort();
        for hf in hf_names {
            let (fi, ti) = by_hf[hf];
            match by_hf_name.get(hf.as_str()) {
                Some(def) => {
                    locs.insert(
                        def.gguf.clone(),
                        Loc {
                            file: fi,
                            index: ti,
                            hf_name: hf.clone(),
                            transform: def.transform,
                        },
                    );
                }
                _ if mapping::is_ignorable(hf) => ignored.push(hf.clone()),
                _ => extra.push(hf.clone()),
            }
        }
        let mut tensors = Vec::with_capacity(expected.len());
        // llama.cpp's converter writes its generated tensors first (`generate_extra_tensors`),
        // in the order it generates them.
        let derived = crate::arch::derived(&config);
        for (name, v) in &derived {
            tensors.push(SourceTensor {
                name: name.clone(),
                dims: vec![v.len() as u64],
                stored: GgmlType::F32,
            });
        }
        let derived: HashMap<String, Vec<f32>> = derived.into_iter().collect();
        for def in &expected {
            let (g, shape) = (&def.gguf, &def.shape);
            let loc = locs.get(g).ok_or_else(|| {
                Error::format(
                    &dir,
                    format!(
                        "missing tensor `{}` (needed by {} with the sizes in config.json)",
                        def.hf,
                        config.arch.model_type()
                    ),
                )
            })?;
            let f = &files[loc.file];
            let t = &f.tensors[loc.index];
            if &t.shape != shape {
                return Err(Error::tensor(
                    f.path(),
                    &t.name,
                    format!(
                        "shape {:?} disagrees with config.json, which implies {:?}",
                        t.shape, shape
                    ),
                ));
            }
            let stored = match t.dtype {
                Dtype::F32 => GgmlType::F32,
                Dtype::F16 => GgmlType::F16,
                Dtype::BF16 => GgmlType::BF16,
            };
            tensors.push(SourceTensor {
                name: g.clone(),
                dims: shape.iter().rev().map(|&d| d as u64).collect(),
                stored,
            });
        }
        Ok(HfCheckpoint {
            dir,
            config,
            files,
            locs,
            tensors,
            extra,
            ignored,
            derived,
            lora: LoraStack::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// A tensor in GGUF layout as f32; its mapped pages are released afterwards so reading a
    /// whole checkpoint keeps memory bounded by one tensor.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.read(name, false)
    }

    /// A tensor in Hugging Face's row order with the architecture's elementwise transform
    /// applied (Gemma's `1 + w`), as kiln's kernel runs a checkpoint in its own layout.
    pub fn tensor_f32_hf_rows(&self, name: &str) -> Result<Vec<f32>> {
        self.read(name, true)
    }

    /// The HF → GGUF transform of a tensor.
    pub fn transform(&self, name: &str) -> Option<Transform> {
        self.locs.get(name).map(|l| l.transform)
    }

    fn read(&self, name: &str, hf_rows: bool) -> Result<Vec<f32>> {
        if let Some(v) = self.derived.get(name) {
            return Ok(v.clone());
        }
        let loc = self
            .locs
            .get(name)
            .ok_or_else(|| Error::format(&self.dir, format!("no tensor `{name}`")))?;
        let f = &self.files[loc.file];
        let t = &f.tensors[loc.index];
        // Convert in slices, dropping each slice's mapped pages as soon as it is read, so the
        // resident set holds the f32 copy and only a small window of the file.
        const SLICE: usize = 1 << 22;
        let mut v = vec![0f32; t.numel()];
        let data = f.data(t);
        let es = t.dtype.size();
        for (k, out) in v.chunks_mut(SLICE).enumerate() {
            let start = k * SLICE * es;
            st::to_f32(t.dtype, &data[start..start + out.len() * es], out);
            f.release_range(t.start + start, out.len() * es);
        }
        let (rows, cols) = (t.shape[0], t.shape.get(1).copied().unwrap_or(1));
        if self.lora.touches(name) {
            self.lora.apply(name, &mut v, &t.shape, false)?;
        }
        let transform = if hf_rows {
            loc.transform.elementwise()
        } else {
            loc.transform
        };
        if let Transform::Permute(n_head) = transform {
            if rows % (2 * n_head) != 0 {
                return Err(Error::tensor(
                    f.path(),
                    &loc.hf_name,
                    format!("{rows} rows do not split into {n_head} heads"),
                ));
            }
        }
        v = transform.to_gguf(v, rows, cols);
        Ok(v)
    }

    /// A tensor as stored (Hugging Face layout, no permutation): the index of its file in
    /// [`HfCheckpoint::files`] and its header entry.
    pub fn raw_tensor(&self, name: &str) -> Option<(usize, &st::StTensor)> {
        self.locs
            .get(name)
            .map(|l| (l.file, &self.files[l.file].tensors[l.index]))
    }

    /// The LoRA adapters merged into the weights.
    pub fn lora(&self) -> &LoraStack {
        &self.lora
    }

    /// The file holding a tensor and its HF name (for error messages).
    pub fn origin(&self, name: &str) -> Option<(&Path, &str)> {
        self.locs
            .get(name)
            .map(|l| (self.files[l.file].path(), l.hf_name.as_str()))
    }
}

/// A model to read: checkpoint directory or GGUF file.
#[derive(Debug)]
pub enum ModelSource {
    Hf(Box<HfCheckpoint>),
    Gguf(Box<GgufSource>),
}

/// A GGUF file as a model source.
#[derive(Debug)]
pub struct GgufSource {
    /// The file.
    pub file: GgufFile,
    /// Hyper-parameters from its metadata.
    pub config: ModelConfig,
    tensors: Vec<SourceTensor>,
    lora: LoraStack,
}

impl ModelSource {
    /// Opens a checkpoint directory or a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Ok(ModelSource::Hf(Box::new(HfCheckpoint::open(path)?)));
        }
        let file = GgufFile::open(path)?;
        let config = ModelConfig::from_gguf_file(&file)?;
        let tensors = file
            .tensors
            .iter()
            .map(|t| SourceTensor {
                name: t.name.clone(),
                dims: t.dims.clone(),
                stored: t.ty,
            })
            .collect();
        Ok(ModelSource::Gguf(Box::new(GgufSource {
            file,
            config,
            tensors,
            lora: LoraStack::default(),
        })))
    }

    /// Opens `path` with LoRA adapters merged into its weights (`W + s·B·A`, in order), each
    /// checked against the model first.
    pub fn open_with_lora(path: impl AsRef<Path>, lora: &[LoraSpec]) -> Result<Self> {
        let mut src = Self::open(path)?;
        if !lora.is_empty() {
            let stack = LoraStack::open(lora, src.config())?;
            for (a, _) in stack.adapters() {
                for t in a
                    .targets
                    .iter()
                    .map(|t| &t.gguf)
                    .chain(a.saved.iter().map(|s| &s.gguf))
                {
                    if !src.tensors().iter().any(|s| &s.name == t) {
                        return Err(Error::tensor(
                            a.file_path(),
                            t,
                            format!("adapts a tensor {} does not hold", src.path().display()),
                        ));
                    }
                }
            }
            match &mut src {
                ModelSource::Hf(h) => h.lora = stack,
                ModelSource::Gguf(g) => g.lora = stack,
            }
        }
        Ok(src)
    }

    /// The LoRA adapters merged into the weights.
    pub fn lora(&self) -> &LoraStack {
        match self {
            ModelSource::Hf(h) => &h.lora,
            ModelSource::Gguf(g) => &g.lora,
        }
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Hf(h) => h.dir(),
            ModelSource::Gguf(g) => g.file.path(),
        }
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        match self {
            ModelSource::Hf(h) => &h.config,
            ModelSource::Gguf(g) => &g.config,
        }
    }

    /// Tensors under GGUF names.
    pub fn tensors(&self) -> &[SourceTensor] {
        match self {
            ModelSource::Hf(h) => &h.tensors,
            ModelSource::Gguf(g) => &g.tensors,
        }
    }

    /// A tensor's values in GGUF layout.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        match self {
            ModelSource::Hf(h) => h.tensor_f32(name),
            ModelSource::Gguf(g) => {
                let t = g
                    .file
                    .tensor(name)
                    .ok_or_else(|| Error::format(g.file.path(), format!("no tensor `{name}`")))?;
                let mut v = g.file.tensor_f32(t)?;
                if g.lora.touches(name) {
                    let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
                    g.lora.apply(name, &mut v, &shape, true)?;
                }
                Ok(v)
            }
        }
    }

    /// SHA-256 identifying the source: of the file for a GGUF; for a checkpoint directory, of
    /// the `sha256sum`-style listing (`<hash>  <name>` lines, names sorted) of config.json, the
    /// tokenizer files and every safetensors file.
    pub fn sha256(&self) -> Result<String> {
        merged_sha256(&self.base_sha256()?, self.lora())
    }

    fn base_sha256(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let file_hash = file_sha256;
        match self {
            ModelSource::Gguf(g) if !g.file.is_split() => file_hash(g.file.path()),
            ModelSource::Gguf(g) => {
                // A split model: the digest of its files' digests, as for a checkpoint.
                let mut listing = String::new();
                for p in g.file.parts() {
                    let name = p
                        .path()
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    listing.push_str(&format!("{}  {name}\n", file_hash(p.path())?));
                }
                Ok(crate::tokenizer::hex(&Sha256::digest(listing.as_bytes())))
            }
            ModelSource::Hf(h) => {
                let mut names: Vec<PathBuf> = [
                    "config.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "model.safetensors.index.json",
                ]
                .iter()
                .map(|n| h.dir().join(n))
                .filter(|p| p.exists())
                .chain(h.files().iter().map(|f| f.path().to_path_buf()))
                .collect();
                names.sort();
                let mut listing = String::new();
                for p in names {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    listing.push_str(&format!("{}  {name}\n", file_hash(&p)?));
                }
                Ok(crate::tokenizer::hex(&Sha256::digest(listing.as_bytes())))
            }
        }
    }

    /// A GGUF source tensor's bytes when it is already stored as `ty` (to copy it unchanged).
    pub fn raw_if_type(&self, name: &str, ty: GgmlType) -> Option<&[u8]> {
        match self {
            ModelSource::Gguf(g) => {
                let t = g.file.tensor(name)?;
                (t.ty == ty && !g.lora.touches(name)).then(|| g.file.tensor_data(t))
            }
            ModelSource::Hf(_) => None,
        }
    }

    /// The GGUF metadata a converted file carries: `general.*` (minus file type), the
    /// architecture's hyper-parameters, and the tokenizer. For a checkpoint, `pre_override`
    /// names the tokenizer's pre-tokenizer when kiln cannot tell it.
    pub fn base_metadata(&self, pre_override: Option<&str>) -> Result<Metadata> {
        let c = self.config();
        let mut md = Metadata::new();
        md.set(
            "general.architecture",
            Value::String(c.arch.gguf_arch().into()),
        );
        md.set("general.type", Value::String("model".into()));
        match self {
            ModelSource::Hf(h) => {
                let name = h
                    .dir()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into());
                md.set("general.name", Value::String(name));
                for (k, v) in crate::card::read_card(&h.dir().join("README.md")) {
                    md.set(k, v);
                }
                c.to_gguf(&mut md);
                let tok = crate::tokenizer::tokenizer_metadata(h.dir(), c, pre_override)?;
                for (k, v) in tok.iter() {
                    md.set(k, v.clone());
                }
            }
            ModelSource::Gguf(g) => {
                for (k, v) in g.file.metadata.iter() {
                    let skip = k == "general.file_type"
                        || k == "general.quantization_version"
                        || k == "general.alignment"
                        || k.starts_with("quantize.")
                        || k.starts_with("kiln.")
                        || crate::gguf::split::is_split_key(k);
                    if !skip {
                        md.set(k, v.clone());
                    }
                }
                if let Some(p) = pre_override {
                    md.set("tokenizer.ggml.pre", Value::String(p.into()));
                }
            }
        }
        Ok(md)
    }
}

/// The digest of a model with `lora` merged, from its base's digest (`base` itself when there
/// are no adapters): the digest of the base's and the adapters' digests and scales. A caller
/// holding the base's digest gets a merged model's without hashing the base again.
pub fn merged_sha256(base: &str, lora: &LoraStack) -> Result<String> {
    use sha2::{Digest, Sha256};
    if lora.is_empty() {
        return Ok(base.to_string());
    }
    let listing = format!("{base}  base\n{}", lora.digest_lines()?);
    Ok(crate::tokenizer::hex(&Sha256::digest(listing.as_bytes())))
}

/// The SHA-256 of a file's bytes in hex, streamed in 1 MiB reads (constant memory).
pub fn file_sha256(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(p, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::tokenizer::hex(&h.finalize()))
}
