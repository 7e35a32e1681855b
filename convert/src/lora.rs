//! LoRA adapters: a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`)
//! or llama.cpp's LoRA GGUF (`general.type = adapter`), checked against a base model and seen
//! the same way — per base tensor (under its GGUF name), the low-rank factors `A` `[r, in]` and
//! `B` `[out, r]` and the scale PEFT applies, read one tensor at a time.
//!
//! The merge is PEFT's `LoraLayer.merge` / `get_delta_weight` for `nn.Linear`:
//! `W ← W + (B·A)·scaling` with `scaling = lora_alpha / r` (`lora_alpha / √r` with rsLoRA,
//! `alpha_pattern` / `rank_pattern` per module), one adapter after another. Anything kiln cannot
//! apply exactly — DoRA, trained biases, embedding adapters, a module the base lacks, a shape
//! that does not fit — is an error naming the file and tensor, never skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use quantize::GgmlType;

use crate::arch::{TensorDef, Transform};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::safetensors::{self as st, SafetensorsFile};

/// An adapter to apply and its strength (`DIR[:SCALE]` on the command line).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSpec {
    /// A PEFT adapter directory or a LoRA GGUF.
    pub path: PathBuf,
    /// Multiplies the adapter's own scaling (1 = as trained).
    pub scale: f32,
}

impl LoraSpec {
    /// Parses `PATH[:SCALE]`: the part after the last `:` is the scale when it is a number.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        if let Some((p, k)) = s.rsplit_once(':') {
            if let Ok(scale) = k.parse::<f32>() {
                if p.is_empty() {
                    return Err(format!("`{s}`: no adapter path before the scale"));
                }
                if !scale.is_finite() {
                    return Err(format!("`{s}`: the scale must be finite"));
                }
                return Ok(LoraSpec {
                    path: p.into(),
                    scale,
                });
            }
        }
        if s.is_empty() {
            return Err("empty adapter path".into());
        }
        Ok(LoraSpec {
            path: s.into(),
            scale: 1.0,
        })
    }
}

/// Where an adapter's tensors come from.
#[derive(Debug)]
enum Store {
    /// PEFT: safetensors in Hugging Face layout.
    Peft(SafetensorsFile),
    /// llama.cpp's LoRA GGUF: tensors in GGUF layout (B's rows permuted like the base's).
    Gguf(GgufFile),
}

/// One adapted base tensor.
#[derive(Debug, Clone)]
pub struct LoraTarget {
    /// The base tensor's GGUF name (`blk.0.attn_q.weight`).
    pub gguf: String,
    /// Its Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub hf: String,
    /// Rank.
    pub rank: usize,
    /// Output features (rows of the base tensor).
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// PEFT's scaling of this module (without the user's scale).
    pub scaling: f32,
    /// The names of A and B in the adapter file.
    pub a_name: String,
    pub b_name: String,
    transform: Transform,
}

/// A tensor a PEFT adapter replaces whole (`modules_to_save`).
#[derive(Debug, Clone)]
pub struct SavedModule {
    pub gguf: String,
    pub hf: String,
    pub name: String,
    transform: Transform,
}

/// An adapter checked against a base model's configuration.
#[derive(Debug)]
pub struct LoraAdapter {
    /// Directory or file it was read from.
    pub path: PathBuf,
    /// `lora_alpha` (PEFT) or `adapter.lora.alpha` (GGUF).
    pub alpha: f32,
    /// `r` of adapter_config.json (for a GGUF, the largest rank).
    pub rank: usize,
    /// rsLoRA scaling (`alpha / √r`).
    pub use_rslora: bool,
    /// `base_model_name_or_path`, when given.
    pub base_model: Option<String>,
    /// Adapted tensors, in the base model's tensor order.
    pub targets: Vec<LoraTarget>,
    /// Tensors replaced whole.
    pub saved: Vec<SavedModule>,
    /// Notes worth telling (keys with no effect on inference that were given).
    pub notes: Vec<String>,
    store: Store,
    by_name: HashMap<String, usize>,
    saved_by_name: HashMap<String, usize>,
}

/// adapter_config.json keys with no effect on the adapted model's outputs (training setup and
/// bookkeeping), accepted as they are.
const INERT_KEYS: &[&str] = &[
    "peft_type",
    "task_type",
    "inference_mode",
    "lora_dropout",
    "init_lora_weights",
    "revision",
    "auto_mapping",
    "base_model_name_or_path",
    "r",
    "lora_alpha",
    "use_rslora",
    "target_modules",
    "fan_in_fan_out",
    "modules_to_save",
    "rank_pattern",
    "alpha_pattern",
    "layers_to_transform",
    "layers_pattern",
    "exclude_modules",
    "loftq_config",
    "eva_config",
    "corda_config",
    "megatron_config",
    "megatron_core",
    "runtime_config",
    "peft_version",
    "use_qalora",
    "qalora_group_size",
    "lora_ga_config",
    "bias",
    "use_dora",
    "layer_replication",
    "lora_bias",
    "trainable_token_indices",
    "target_parameters",
    "ensure_weight_tying",
    "arrow_config",
];

fn is_default(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Bool(b) => !b,
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
        serde_json::Value::String(s) => s.is_empty() || s == "none",
        serde_json::Value::Number(_) => false,
    }
}

/// A pattern key of `rank_pattern` / `alpha_pattern` matches a module name as PEFT's
/// `get_pattern_key` does for plain names: the whole name, or its ending after a `.`.
fn pattern_matches(key: &str, module: &str) -> bool {
    module == key || module.ends_with(&format!(".{key}"))
}

impl LoraAdapter {
    /// Opens a PEFT adapter directory or a LoRA GGUF and checks it against `base` (the base
    /// model's configuration): every tensor maps to a base tensor of matching shape.
    pub fn open(path: &Path, base: &ModelConfig) -> Result<Self> {
        if path.is_dir() {
            Self::open_peft(path, base)
        } else {
            Self::open_gguf(path, base)
        }
    }

    fn open_peft(dir: &Path, base: &ModelConfig) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let j: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(&cfg_path, format!("not valid JSON: {e}")))?;
        let obj = j
            .as_object()
            .ok_or_else(|| Error::format(&cfg_path, "not a JSON object"))?;
        let bad = |msg: String| Error::unsupported(&cfg_path, msg);
        let mut notes = Vec::new();
        for (k, v) in obj {
            if !INERT_KEYS.contains(&k.as_str()) {
                return Err(bad(format!(
                    "key `{k}` is not one kiln knows the effect of (kiln applies LoRA as PEFT \
                     defines it for nn.Linear)"
                )));
            }
            let unsupported = match k.as_str() {
                "use_dora" => Some("DoRA (weight-decomposed LoRA)"),
                "bias" => Some("trained biases"),
                "lora_bias" => Some("a bias on lora_B"),
                "layer_replication" => Some("layer replication"),
                "trainable_token_indices" => Some("trainable token embeddings"),
                "target_parameters" => Some("LoRA on nn.Parameter targets"),
                "use_qalora" => Some("QA-LoRA pooling"),
                "megatron_config" => Some("Megatron parallel layers"),
                _ => None,
            };
            if let Some(what) = unsupported {
                if !is_default(v) {
                    return Err(bad(format!("`{k}` = {v}: kiln does not apply {what}")));
                }
            }
        }
        match obj.get("peft_type").and_then(|v| v.as_str()) {
            Some("LORA") | None => {}
            Some(t) => return Err(bad(format!("peft_type `{t}` is not LORA"))),
        }
        let num = |k: &str| -> Result<f64> {
            obj.get(k).and_then(|v| v.as_f64()).ok_or_else(|| {
                Error::format(&cfg_path, format!("`{k}` is missing or not a number"))
            })
        };
        let r = num("r")?;
        if r < 1.0 || r.fract() != 0.0 {
            return Err(Error::format(&cfg_path, format!("`r` = {r} is not a rank")));
        }
        let r = r as usize;
        let alpha = num("lora_alpha")? as f32;
        let use_rslora = obj
            .get("use_rslora")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if obj.get("fan_in_fan_out").and_then(|v| v.as_bool()) == Some(true) {
            // PEFT's `lora.Linear` sets it back to False for nn.Linear with a warning (it
            // exists for GPT-2's Conv1D); every module kiln adapts is nn.Linear.
            notes.push(
                "fan_in_fan_out = true has no effect on nn.Linear (PEFT resets it to false)".into(),
            );
        }
        let pattern = |k: &str| -> Result<Vec<(String, f64)>> {
            let mut out = Vec::new();
            if let Some(m) = obj.get(k).and_then(|v| v.as_object()) {
                for (p, v) in m {
                    if p.chars().any(|c| "^$*+?()[]{}|\\".contains(c)) {
                        return Err(bad(format!(
                            "`{k}` key {p:?} is a regular expression; kiln matches plain module names"
                        )));
                    }
                    let x = v.as_f64().ok_or_else(|| {
                        Error::format(&cfg_path, format!("`{k}`[{p:?}] is not a number"))
                    })?;
                    out.push((p.clone(), x));
                }
            }
            Ok(out)
        };
        let rank_pattern = pattern("rank_pattern")?;
        let alpha_pattern = pattern("alpha_pattern")?;
        let base_model = obj
            .get("base_model_name_or_path")
            .and_then(|v| v.as_str())
            .map(str::to_string);

        let st_path = dir.join("adapter_model.safetensors");
        if !st_path.exists() {
            let bin = dir.join("adapter_model.bin");
            return Err(Error::format(
                dir,
                if bin.exists() {
                    "adapter_model.bin (pickle) is not read; save the adapter with safetensors"
                } else {
                    "no adapter_model.safetensors"
                },
            ));
        }
        let file = SafetensorsFile::open(&st_path)?;
        let defs = base.arch.family().tensors(base);
        let by_hf: HashMap<&str, &TensorDef> = defs.iter().map(|d| (d.hf.as_str(), d)).collect();
        let order: HashMap<&str, usize> = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.gguf.as_str(), i))
            .collect();

        // A and B of each module, by module name.
        let mut pairs: BTreeMap<String, (Option<usize>, Option<usize>)> = BTreeMap::new();
        let mut saved = Vec::new();
        for (i, t) in file.tensors.iter().enumerate() {
            let name = &t.name;
            let tbad = |msg: String| Error::tensor(&st_path, name, msg);
            let key = name.strip_prefix("base_model.model.").ok_or_else(|| {
                tbad("is not under `base_model.model.` (not a PEFT adapter tensor)".into())
            })?;
            if key.contains("lora_embedding_A") || key.contains("lora_embedding_B") {
                return Err(tbad(
                    "an embedding adapter, which kiln does not apply".into(),
                ));
            }
            if key.contains("lora_magnitude_vector") {
                return Err(tbad("a DoRA magnitude, which kiln does not apply".into()));
            }
            if let Some(m) = key.strip_suffix(".lora_A.weight") {
                pairs.entry(m.to_string()).or_default().0 = Some(i);
            } else if let Some(m) = key.strip_suffix(".lora_B.weight") {
                pairs.entry(m.to_string()).or_default().1 = Some(i);
            } else if key.ends_with(".lora_B.bias") || key.ends_with(".bias") {
                return Err(tbad("a trained bias, which kiln does not apply".into()));
            } else if let Some(def) = by_hf.get(key) {
                // modules_to_save: the module's weights, replacing the base's.
                let want = &def.shape;
                if &t.shape != want {
                    return Err(tbad(format!(
                        "shape {:?} does not fit the base's `{}` {:?}",
                        t.shape, def.hf, want
                    )));
                }
                saved.push(SavedModule {
                    gguf: def.gguf.clone(),
                    hf: def.hf.clone(),
                    name: name.clone(),
                    transform: def.transform,
                });
            } else {
                return Err(tbad(format!(
                    "replaces `{key}`, which the base model ({}) does not have",
                    base.arch.model_type()
                )));
            }
        }
        let mut targets = Vec::new();
        for (module, (a, b)) in &pairs {
            let (Some(a), Some(b)) = (*a, *b) else {
                let (have, miss) = if a.is_some() {
                    ("lora_A", "lora_B")
                } else {
                    ("lora_B", "lora_A")
                };
                return Err(Error::tensor(
                    &st_path,
                    &format!("base_model.model.{module}.{have}.weight"),
                    format!("has no {miss}"),
                ));
            };
            let (ta, tb) = (&file.tensors[a], &file.tensors[b]);
            let hf = format!("{module}.weight");
            let def = by_hf.get(hf.as_str()).ok_or_else(|| {
                Error::tensor(
                    &st_path,
                    &ta.name,
                    format!(
                        "targets `{module}`, which the base model ({}) does not have",
                        base.arch.model_type()
                    ),
                )
            })?;
            if def.shape.len() != 2 {
                return Err(Error::tensor(
                    &st_path,
                    &ta.name,
                    format!("targets `{hf}`, which is not a matrix"),
                ));
            }
            let (out, inp) = (def.shape[0], def.shape[1]);
            if ta.shape.len() != 2 || tb.shape.len() != 2 {
                return Err(Error::tensor(
                    &st_path,
                    &ta.name,
                    "lora_A and lora_B must be matrices",
                ));
            }
            let rank = ta.shape[0];
            if ta.shape[1] != inp {
                return Err(Error::tensor(
                    &st_path,
                    &ta.name,
                    format!("shape {:?}: the base's `{hf}` takes {inp} inputs", ta.shape),
                ));
            }
            if tb.shape != [out, rank] {
                return Err(Error::tensor(
                    &st_path,
                    &tb.name,
                    format!(
                        "shape {:?} does not fit lora_A's rank {rank} and `{hf}`'s {out} outputs \
                         (expected [{out}, {rank}])",
                        tb.shape
                    ),
                ));
            }
            let want_rank = rank_pattern
                .iter()
                .find(|(p, _)| pattern_matches(p, module))
                .map_or(r, |(_, x)| *x as usize);
            if rank != want_rank {
                return Err(Error::tensor(
                    &st_path,
                    &ta.name,
                    format!("rank {rank}, but adapter_config.json gives r = {want_rank}"),
                ));
            }
            let a_alpha = alpha_pattern
                .iter()
                .find(|(p, _)| pattern_matches(p, module))
                .map_or(alpha, |(_, x)| *x as f32);
            // PEFT's `update_layer`: `lora_alpha / math.sqrt(r)` or `lora_alpha / r`.
            let scaling = if use_rslora {
                (a_alpha as f64 / (rank as f64).sqrt()) as f32
            } else {
                (a_alpha as f64 / rank as f64) as f32
            };
            targets.push(LoraTarget {
                gguf: def.gguf.clone(),
                hf: hf.clone(),
                rank,
                rows: out,
                cols: inp,
                scaling,
                a_name: ta.name.clone(),
                b_name: tb.name.clone(),
                transform: def.transform,
            });
        }
        if targets.is_empty() && saved.is_empty() {
            return Err(Error::format(&st_path, "holds no LoRA tensors"));
        }
        targets.sort_by_key(|t| order[t.gguf.as_str()]);
        saved.sort_by_key(|t| order[t.gguf.as_str()]);
        let a = LoraAdapter::finish(
            dir.to_path_buf(),
            alpha,
            r,
            use_rslora,
            base_model,
            targets,
            saved,
            notes,
            Store::Peft(file),
        );
        a.check_finite()?;
        Ok(a)
    }

    fn open_gguf(path: &Path, base: &ModelConfig) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let md = &file.metadata;
        let s = |k: &str| md.str(k).unwrap_or("");
        if s("general.type") != "adapter" {
            return Err(Error::format(
                path,
                format!(
                    "general.type is {:?}, not \"adapter\" (not a LoRA GGUF)",
                    s("general.type")
                ),
            ));
        }
        if s("adapter.type") != "lora" {
            return Err(Error::unsupported(
                path,
                format!("adapter.type is {:?}, not \"lora\"", s("adapter.type")),
            ));
        }
        if s("general.architecture") != base.arch.gguf_arch() {
            return Err(Error::format(
                path,
                format!(
                    "an adapter for `{}`, but the base model is `{}`",
                    s("general.architecture"),
                    base.arch.gguf_arch()
                ),
            ));
        }
        let alpha = md
            .get("adapter.lora.alpha")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0) as f32;
        if md.get("adapter.alora.invocation_tokens").is_some() {
            return Err(Error::unsupported(
                path,
                "activated LoRA (adapter.alora.invocation_tokens) is not applied by kiln",
            ));
        }
        let defs = base.arch.family().tensors(base);
        let by_gguf: HashMap<&str, (usize, &TensorDef)> = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.gguf.as_str(), (i, d)))
            .collect();
        let mut pairs: BTreeMap<String, (Option<usize>, Option<usize>)> = BTreeMap::new();
        for (i, t) in file.tensors.iter().enumerate() {
            if let Some(b) = t.name.strip_suffix(".lora_a") {
                pairs.entry(b.into()).or_default().0 = Some(i);
            } else if let Some(b) = t.name.strip_suffix(".lora_b") {
                pairs.entry(b.into()).or_default().1 = Some(i);
            } else {
                return Err(Error::tensor(
                    path,
                    &t.name,
                    "is neither a .lora_a nor a .lora_b tensor",
                ));
            }
        }
        let mut targets = Vec::new();
        let mut max_rank = 0;
        for (name, (a, b)) in &pairs {
            let (Some(a), Some(b)) = (*a, *b) else {
                let miss = if a.is_some() { "lora_b" } else { "lora_a" };
                return Err(Error::tensor(path, name, format!("has no .{miss}")));
            };
            let (ta, tb) = (&file.tensors[a], &file.tensors[b]);
            let (_, def) = by_gguf.get(name.as_str()).ok_or_else(|| {
                Error::tensor(
                    path,
                    &ta.name,
                    format!("adapts `{name}`, which the base model does not have"),
                )
            })?;
            if def.shape.len() != 2 || ta.dims.len() != 2 || tb.dims.len() != 2 {
                return Err(Error::tensor(path, &ta.name, "not a matrix adapter"));
            }
            let (out, inp) = (def.shape[0], def.shape[1]);
            let rank = ta.dims[1] as usize;
            // llama_adapter_lora_init_impl's checks.
            if ta.dims[0] as usize != inp || tb.dims[1] as usize != out {
                return Err(Error::tensor(
                    path,
                    name,
                    format!(
                        "lora_a {:?} / lora_b {:?} do not fit the base's [{inp}, {out}]",
                        ta.dims, tb.dims
                    ),
                ));
            }
            if tb.dims[0] as usize != rank {
                return Err(Error::tensor(
                    path,
                    &tb.name,
                    format!("rank {} but lora_a's is {rank}", tb.dims[0]),
                ));
            }
            max_rank = max_rank.max(rank);
            // llama_adapter_lora_weight::get_scale.
            let scaling = if alpha != 0.0 {
                alpha / rank as f32
            } else {
                1.0
            };
            targets.push(LoraTarget {
                gguf: name.clone(),
                hf: def.hf.clone(),
                rank,
                rows: out,
                cols: inp,
                scaling,
                a_name: ta.name.clone(),
                b_name: tb.name.clone(),
                transform: def.transform,
            });
        }
        if targets.is_empty() {
            return Err(Error::format(path, "holds no LoRA tensors"));
        }
        targets.sort_by_key(|t| by_gguf[t.gguf.as_str()].0);
        let a = LoraAdapter::finish(
            path.to_path_buf(),
            alpha,
            max_rank,
            false,
            None,
            targets,
            Vec::new(),
            Vec::new(),
            Store::Gguf(file),
        );
        a.check_finite()?;
        Ok(a)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        path: PathBuf,
        alpha: f32,
        rank: usize,
        use_rslora: bool,
        base_model: Option<String>,
        targets: Vec<LoraTarget>,
        saved: Vec<SavedModule>,
        notes: Vec<String>,
        store: Store,
    ) -> Self {
        let by_name = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (t.gguf.clone(), i))
            .collect();
        let saved_by_name = saved
            .iter()
            .enumerate()
            .map(|(i, t)| (t.gguf.clone(), i))
            .collect();
        LoraAdapter {
            path,
            alpha,
            rank,
            use_rslora,
            base_model,
            targets,
            saved,
            notes,
            store,
            by_name,
            saved_by_name,
        }
    }

    /// Is this a llama.cpp LoRA GGUF (as opposed to a PEFT directory)?
    pub fn is_gguf(&self) -> bool {
        matches!(self.store, Store::Gguf(_))
    }

    /// The file holding the tensors.
    pub fn file_path(&self) -> &Path {
        match &self.store {
            Store::Peft(f) => f.path(),
            Store::Gguf(g) => g.path(),
        }
    }

    /// Bytes of the adapter's tensors.
    pub fn tensor_bytes(&self) -> u64 {
        match &self.store {
            Store::Peft(f) => f.tensors.iter().map(|t| t.len as u64).sum(),
            Store::Gguf(g) => g.tensors.iter().map(|t| t.size).sum(),
        }
    }

    /// The module names adapted (`q_proj`, `down_proj` …), sorted, each once.
    pub fn modules(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .targets
            .iter()
            .map(|t| {
                let s = t.hf.trim_end_matches(".weight");
                s.rsplit('.').next().unwrap_or(s).to_string()
            })
            .collect();
        m.sort();
        m.dedup();
        m
    }

    /// The adaptation of base tensor `gguf`, if any.
    pub fn target(&self, gguf: &str) -> Option<&LoraTarget> {
        self.by_name.get(gguf).map(|&i| &self.targets[i])
    }

    /// The whole-module replacement of base tensor `gguf`, if any.
    pub fn saved(&self, gguf: &str) -> Option<&SavedModule> {
        self.saved_by_name.get(gguf).map(|&i| &self.saved[i])
    }

    /// Does the adapter change base tensor `gguf`?
    pub fn touches(&self, gguf: &str) -> bool {
        self.by_name.contains_key(gguf) || self.saved_by_name.contains_key(gguf)
    }

    fn read(&self, name: &str) -> Result<Vec<f32>> {
        match &self.store {
            Store::Peft(f) => {
                let t = f
                    .tensor(name)
                    .ok_or_else(|| Error::tensor(f.path(), name, "missing"))?;
                let mut v = vec![0f32; t.numel()];
                st::to_f32(t.dtype, f.data(t), &mut v);
                Ok(v)
            }
            Store::Gguf(g) => {
                let t = g
                    .tensor(name)
                    .ok_or_else(|| Error::tensor(g.path(), name, "missing"))?;
                g.tensor_f32(t)
            }
        }
    }

    /// `A` of a target, `[rank, cols]` row-major.
    pub fn a(&self, t: &LoraTarget) -> Result<Vec<f32>> {
        self.read(&t.a_name)
    }

    /// `B` of a target, `[rows, rank]` row-major, with rows in Hugging Face order
    /// (`gguf_layout = false`) or llama.cpp's (Q/K rows permuted as the base's are).
    pub fn b(&self, t: &LoraTarget, gguf_layout: bool) -> Result<Vec<f32>> {
        let v = self.read(&t.b_name)?;
        let stored_gguf = self.is_gguf();
        Ok(match (stored_gguf, gguf_layout) {
            (false, true) => t.transform.to_gguf(v, t.rows, t.rank),
            (true, false) => t.transform.to_hf(v, t.rows, t.rank),
            _ => v,
        })
    }

    /// A `modules_to_save` tensor's values, in Hugging Face or GGUF layout.
    pub fn saved_values(
        &self,
        s: &SavedModule,
        gguf_layout: bool,
        shape: &[usize],
    ) -> Result<Vec<f32>> {
        let v = self.read(&s.name)?;
        let (rows, cols) = (shape[0], shape.get(1).copied().unwrap_or(1));
        Ok(if gguf_layout {
            s.transform.to_gguf(v, rows, cols)
        } else {
            // Elementwise transforms (Gemma's 1 + w) are the reader's to apply.
            v
        })
    }

    fn check_finite(&self) -> Result<()> {
        let names = self
            .targets
            .iter()
            .flat_map(|t| [&t.a_name, &t.b_name])
            .chain(self.saved.iter().map(|s| &s.name));
        for n in names {
            let v = self.read(n)?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::tensor(
                    self.file_path(),
                    n,
                    format!("value {i} is {} (not finite)", v[i]),
                ));
            }
        }
        Ok(())
    }

    /// SHA-256 of the adapter's files (config and tensors), for cache keys and reports.
    pub fn sha256(&self) -> Result<String> {
        match &self.store {
            Store::Gguf(g) => crate::source::file_sha256(g.path()),
            Store::Peft(f) => {
                use sha2::{Digest, Sha256};
                let listing = format!(
                    "{}  adapter_config.json\n{}  adapter_model.safetensors\n",
                    crate::source::file_sha256(&self.path.join("adapter_config.json"))?,
                    crate::source::file_sha256(f.path())?
                );
                Ok(crate::tokenizer::hex(&Sha256::digest(listing.as_bytes())))
            }
        }
    }
}

/// Adapters merged into a model's weights, in order.
#[derive(Debug, Default)]
pub struct LoraStack {
    adapters: Vec<(LoraAdapter, f32)>,
}

impl LoraStack {
    /// Opens each spec's adapter against `base`.
    pub fn open(specs: &[LoraSpec], base: &ModelConfig) -> Result<Self> {
        let mut adapters = Vec::new();
        for s in specs {
            adapters.push((LoraAdapter::open(&s.path, base)?, s.scale));
        }
        Ok(LoraStack { adapters })
    }

    /// No adapters.
    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty()
    }

    /// The adapters and their user scales.
    pub fn adapters(&self) -> &[(LoraAdapter, f32)] {
        &self.adapters
    }

    /// Does any adapter change tensor `gguf`?
    pub fn touches(&self, gguf: &str) -> bool {
        self.adapters.iter().any(|(a, _)| a.touches(gguf))
    }

    /// Applies every adapter to tensor `gguf`'s values `w` (`[rows, cols]` row-major, Hugging
    /// Face or GGUF row order): a saved module replaces the values, a LoRA pair adds
    /// `(B·A)·(scaling·scale)` as PEFT's `get_delta_weight` computes it (B·A rounded to f32,
    /// then scaled, then added).
    pub fn apply(
        &self,
        gguf: &str,
        w: &mut Vec<f32>,
        shape: &[usize],
        gguf_layout: bool,
    ) -> Result<()> {
        for (a, scale) in &self.adapters {
            if let Some(s) = a.saved(gguf) {
                *w = a.saved_values(s, gguf_layout, shape)?;
            }
            if let Some(t) = a.target(gguf) {
                let av = a.a(t)?;
                let bv = a.b(t, gguf_layout)?;
                add_delta(w, &bv, &av, t.rows, t.rank, t.cols, t.scaling * scale);
            }
        }
        Ok(())
    }

    /// A line per adapter for the source's digest.
    pub fn digest_lines(&self) -> Result<String> {
        let mut s = String::new();
        for (a, scale) in &self.adapters {
            s.push_str(&format!("{}  lora:{scale}\n", a.sha256()?));
        }
        Ok(s)
    }
}

/// `w[r][c] += s · Σ_k b[r][k]·a[k][c]`, the product accumulated in f64 and rounded to f32
/// (what a float32 matmul gives to rounding), then scaled in f32 and added.
pub fn add_delta(
    w: &mut [f32],
    b: &[f32],
    a: &[f32],
    rows: usize,
    rank: usize,
    cols: usize,
    s: f32,
) {
    debug_assert_eq!(w.len(), rows * cols);
    let mut acc = vec![0f64; cols];
    for r in 0..rows {
        acc.iter_mut().for_each(|x| *x = 0.0);
        for k in 0..rank {
            let bk = b[r * rank + k] as f64;
            if bk == 0.0 {
                continue;
            }
            for (x, &ak) in acc.iter_mut().zip(&a[k * cols..(k + 1) * cols]) {
                *x += bk * ak as f64;
            }
        }
        for (wv, &x) in w[r * cols..(r + 1) * cols].iter_mut().zip(&acc) {
            *wv += (x as f32) * s;
        }
    }
}

/// The GGUF type an adapter tensor may be written as.
pub fn adapter_type_ok(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0)
}

/// What [`write_adapter`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterReport {
    /// The LoRA GGUF.
    pub output: PathBuf,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// `adapter.lora.alpha`.
    pub alpha: f32,
    /// Ranks present (sorted).
    pub ranks: Vec<usize>,
    /// Module names adapted.
    pub modules: Vec<String>,
    /// Base tensors adapted.
    pub n_targets: usize,
    /// Tensors written as F16 because their rows do not fit Q8_0's blocks.
    pub f16_fallbacks: Vec<String>,
    /// Targets whose scaling llama.cpp's single `alpha / rank` cannot express, folded into B.
    pub folded: Vec<String>,
}

/// Writes `adapter` as llama.cpp's LoRA GGUF (what `convert_lora_to_gguf.py` writes, and
/// `llama_adapter_lora_init` reads): `general.type = adapter`, `adapter.type = lora`,
/// `adapter.lora.alpha`, the base's `general.architecture`, and per adapted base tensor
/// `<name>.lora_a` (`ne = [in, r]`) and `<name>.lora_b` (`ne = [r, out]`, rows permuted as the
/// base's are), as `ty` (F32, F16 or Q8_0; Q8_0 rows that do not fit its blocks stay F16, as
/// llama.cpp's converter does).
///
/// llama.cpp scales every tensor by `alpha / rank`. kiln writes `alpha = scaling · r` of the
/// adapter's configured rank, which is PEFT's scaling for rsLoRA too (llama.cpp's converter
/// writes `lora_alpha` and so runs an rsLoRA adapter at `√r` times its strength); a module
/// whose own scaling differs (`alpha_pattern`, `rank_pattern` with rsLoRA) has the ratio folded
/// into its B. `strength` (1 = as trained) multiplies the written alpha, so llama.cpp's plain
/// `--lora FILE` runs the adapter at that strength.
pub fn write_adapter(
    adapter: &LoraAdapter,
    base: &ModelConfig,
    out: &Path,
    ty: GgmlType,
    name: Option<&str>,
    strength: f32,
) -> Result<AdapterReport> {
    use crate::gguf::{Metadata, TensorSpec, Value};
    if !adapter_type_ok(ty) {
        return Err(Error::unsupported(
            out,
            format!("an adapter is written as f32, f16 or q8_0, not {ty}"),
        ));
    }
    if let Some(s) = adapter.saved.first() {
        return Err(Error::tensor(
            adapter.file_path(),
            &s.name,
            "replaces a module whole (modules_to_save), which a llama.cpp LoRA GGUF cannot hold; \
             merge the adapter into the model instead (`--lora` on convert / quantize)",
        ));
    }
    // The scaling of the configured rank, as alpha: llama.cpp's alpha / r gives it back.
    let main = adapter
        .targets
        .iter()
        .find(|t| t.rank == adapter.rank)
        .unwrap_or(&adapter.targets[0]);
    let alpha = (main.scaling as f64 * main.rank as f64) as f32;
    let mut md = Metadata::new();
    md.set(
        "general.architecture",
        Value::String(base.arch.gguf_arch().into()),
    );
    md.set("general.type", Value::String("adapter".into()));
    let default_name = adapter
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "adapter".into());
    md.set(
        "general.name",
        Value::String(name.map(str::to_string).unwrap_or(default_name)),
    );
    if let Some(b) = &adapter.base_model {
        md.set("general.base_model.0.name", Value::String(b.clone()));
    }
    md.set("adapter.type", Value::String("lora".into()));
    md.set("adapter.lora.alpha", Value::F32(alpha * strength));
    md.set(
        "general.file_type",
        Value::U32(crate::convert::file_type_id(ty)),
    );
    md.set("general.quantization_version", Value::U32(2));
    md.set(
        "kiln.version",
        Value::String(env!("CARGO_PKG_VERSION").into()),
    );
    let type_of = |row: usize| {
        if ty.row_size(row).is_some() {
            ty
        } else {
            GgmlType::F16
        }
    };
    let mut specs = Vec::new();
    let mut f16_fallbacks = Vec::new();
    let mut folded = Vec::new();
    for t in &adapter.targets {
        let (ta, tb) = (type_of(t.cols), type_of(t.rank));
        for (n, tt) in [("lora_a", ta), ("lora_b", tb)] {
            if tt != ty {
                f16_fallbacks.push(format!("{}.{n}", t.gguf));
            }
        }
        specs.push(TensorSpec {
            name: format!("{}.lora_a", t.gguf),
            dims: vec![t.cols as u64, t.rank as u64],
            ty: ta,
        });
        specs.push(TensorSpec {
            name: format!("{}.lora_b", t.gguf),
            dims: vec![t.rank as u64, t.rows as u64],
            ty: tb,
        });
        if fold_ratio(t, alpha) != 1.0 {
            folded.push(t.gguf.clone());
        }
    }
    let writer = crate::gguf::GgufWriter::new(out, md, specs)?;
    let mut file = crate::atomic::AtomicFile::create(out)?;
    let encode = |name: &str, v: &[f32], row: usize, tt: GgmlType| -> Result<Vec<u8>> {
        quantize::quantize(tt, v, row, None)
            .map(|(b, _)| b)
            .map_err(|e| Error::Quant {
                path: out.to_path_buf(),
                tensor: name.to_string(),
                source: e,
            })
    };
    writer.write(out, file.writer(), |i| {
        let t = &adapter.targets[i / 2];
        let spec_ty = if i % 2 == 0 {
            type_of(t.cols)
        } else {
            type_of(t.rank)
        };
        if i % 2 == 0 {
            encode(
                &format!("{}.lora_a", t.gguf),
                &adapter.a(t)?,
                t.cols,
                spec_ty,
            )
        } else {
            let mut b = adapter.b(t, true)?;
            let k = fold_ratio(t, alpha);
            if k != 1.0 {
                b.iter_mut().for_each(|x| *x *= k);
            }
            encode(&format!("{}.lora_b", t.gguf), &b, t.rank, spec_ty)
        }
    })?;
    file.commit()?;
    let file_bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    let mut ranks: Vec<usize> = adapter.targets.iter().map(|t| t.rank).collect();
    ranks.sort();
    ranks.dedup();
    Ok(AdapterReport {
        output: out.to_path_buf(),
        file_bytes,
        alpha: alpha * strength,
        ranks,
        modules: adapter.modules(),
        n_targets: adapter.targets.len(),
        f16_fallbacks,
        folded,
    })
}

/// What B is multiplied by so llama.cpp's `alpha / rank` gives the target's scaling (1 when it
/// does to within float rounding).
fn fold_ratio(t: &LoraTarget, alpha: f32) -> f32 {
    let k = t.scaling as f64 / (alpha as f64 / t.rank as f64);
    if (k - 1.0).abs() < 1e-6 {
        1.0
    } else {
        k as f32
    }
}
