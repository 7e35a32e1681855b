//! The build file (`kiln.toml`): its sections, defaults and validation. The fuzz target for
//! build files parses through [`BuildFile::parse`].

use std::path::{Path, PathBuf};

use quantize::mix::Ftype;
use quantize::GgmlType;
use serde::{Deserialize, Serialize};
use verify::parity::Thresholds;

use crate::{Error, Result};

/// The `[model]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The FP32 checkpoint directory (or GGUF).
    pub path: PathBuf,
    /// Prefix of the artifact names (default: the directory name).
    pub name: Option<String>,
    /// llama.cpp pre-tokenizer name, when kiln cannot tell it.
    pub tokenizer_pre: Option<String>,
}

/// The `[calibration]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibSection {
    pub texts: Vec<PathBuf>,
    #[serde(default = "ctx_default")]
    pub ctx: usize,
    pub chunks: Option<usize>,
}

/// The `[evaluation]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    pub texts: Vec<PathBuf>,
    #[serde(default = "ctx_default")]
    pub ctx: usize,
    pub chunks: Option<usize>,
    /// `llama` (default) or `full`.
    #[serde(default = "protocol_default")]
    pub protocol: String,
}

/// The `[bench]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchSection {
    #[serde(default = "pp_default")]
    pub pp: usize,
    #[serde(default = "tg_default")]
    pub tg: usize,
    #[serde(default = "reps_default")]
    pub reps: usize,
}

impl Default for BenchSection {
    fn default() -> Self {
        BenchSection {
            pp: pp_default(),
            tg: tg_default(),
            reps: reps_default(),
        }
    }
}

fn ctx_default() -> usize {
    512
}
fn protocol_default() -> String {
    "llama".into()
}
fn pp_default() -> usize {
    128
}
fn tg_default() -> usize {
    32
}
fn reps_default() -> usize {
    2
}

/// One `[[target]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub name: String,
    /// File type: Q8_0, Q6_K, Q5_K_M, Q4_K_M, …
    #[serde(rename = "type")]
    pub ftype: String,
    /// Use the build's importance matrix.
    #[serde(default)]
    pub imatrix: bool,
    /// `REGEX=TYPE` overrides.
    #[serde(default)]
    pub tensor_types: Vec<String>,
    pub output_tensor_type: Option<String>,
    pub token_embedding_type: Option<String>,
    #[serde(default)]
    pub pure: bool,
    /// Thresholds overriding the build's defaults.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Block-sparse attention masks derived on the calibration texts, e.g.
    /// `attention_masks = { coverage = 0.99, block = 64 }`.
    pub attention_masks: Option<calibrate::masks::MaskSettings>,
    /// kiln's calibration methods beyond llama.cpp's (`search`, `awq`, `gptq`, `alloc`), e.g.
    /// `method = ["search", "alloc"]`; they measure on the calibration texts.
    #[serde(default)]
    pub method: Vec<String>,
    /// Whole-file byte budget of `alloc` (default: the size of the type's llama.cpp mix).
    pub target_size: Option<u64>,
    /// Budget of `alloc` in bits per weight.
    pub target_bpw: Option<f64>,
    /// Chunks of calibration text `alloc` measures each tensor on (default 1).
    pub sensitivity_chunks: Option<usize>,
    /// Chunks of calibration text `gptq`'s Hessians are accumulated over (default: the
    /// `[calibration]` chunks, as the imatrix; else 32).
    pub hessian_chunks: Option<usize>,
    /// The target this one is compared with in the report (default: the target of the same
    /// type, with the imatrix and without methods, if the build has one).
    pub baseline: Option<String>,
    /// `[[adapter]]`s merged into the model before everything else (calibration, methods,
    /// masks, quantization): the artifact is the fine-tuned model, and its reference the FP32
    /// model with the same adapters merged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lora: Vec<String>,
    /// `[[adapter]]`s shipped beside this target's artifact and applied at run time: each is
    /// written once as a llama.cpp LoRA GGUF, and the artifact + each adapter is verified
    /// against the FP32 model with that adapter merged (one report row per combination).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<String>,
}

/// One `[[adapter]]`: a fine-tuning adapter targets merge (`lora = [...]`) or ship beside
/// their artifact (`adapters = [...]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSection {
    pub name: String,
    /// A PEFT adapter directory or a llama.cpp LoRA GGUF.
    pub path: PathBuf,
    /// Strength (1 = as trained). An adapter artifact carries it in its alpha, so llama.cpp's
    /// plain `--lora FILE` runs it as verified.
    #[serde(default = "scale_default")]
    pub scale: f32,
    /// Type of the adapter artifact's tensors: f32, f16 (default) or q8_0.
    #[serde(rename = "type", default = "adapter_type_default")]
    pub ty: String,
}

impl AdapterSection {
    /// What `--lora PATH:SCALE` would say.
    pub fn spec(&self) -> convert::lora::LoraSpec {
        convert::lora::LoraSpec {
            path: self.path.clone(),
            scale: self.scale,
        }
    }

    /// The adapter artifact's tensor type.
    pub fn ggml_type(&self) -> std::result::Result<GgmlType, String> {
        match self.ty.to_ascii_lowercase().as_str() {
            "f32" => Ok(GgmlType::F32),
            "f16" => Ok(GgmlType::F16),
            "q8_0" => Ok(GgmlType::Q8_0),
            t => Err(format!("adapter type {t:?} (f32, f16 or q8_0)")),
        }
    }
}

fn scale_default() -> f32 {
    1.0
}
fn adapter_type_default() -> String {
    "f16".into()
}

/// The calibration methods kiln knows (`method = [...]` of a target, `--method`).
pub const METHODS: [&str; 5] = ["imatrix", "search", "awq", "gptq", "alloc"];

/// A target's or adapter's name, which names files: letters, digits, `-`, `_`, `.`.
fn file_name_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A whole kiln.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildFile {
    pub model: ModelSection,
    pub calibration: Option<CalibSection>,
    pub evaluation: EvalSection,
    #[serde(default)]
    pub thresholds: Thresholds,
    #[serde(default)]
    pub bench: BenchSection,
    #[serde(rename = "target")]
    pub targets: Vec<TargetSection>,
    #[serde(rename = "adapter", default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<AdapterSection>,
}

impl BuildFile {
    /// Reads and validates `path`; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "cannot read", e))?;
        Self::parse(path, &text)
    }

    /// Parses and validates the text of the build file at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut f: BuildFile = toml::from_str(text).map_err(|e| Error::BuildFile {
            path: path.into(),
            msg: format!("not a valid build file: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut f.model.path);
        if let Some(c) = &mut f.calibration {
            c.texts.iter_mut().for_each(abs);
        }
        f.evaluation.texts.iter_mut().for_each(abs);
        f.adapters.iter_mut().for_each(|a| abs(&mut a.path));
        f.validate(path)?;
        Ok(f)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        // Every refusal names the build file first.
        macro_rules! bail {
            ($($t:tt)*) => {
                return Err(Error::BuildFile { path: path.into(), msg: format!($($t)*) })
            };
        }
        if self.targets.is_empty() {
            bail!("no [[target]]");
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.targets {
            if !file_name_safe(&t.name) {
                bail!(
                    "target name {:?} must be letters, digits, '-', '_' or '.'",
                    t.name
                );
            }
            if !names.insert(&t.name) {
                bail!("two targets are called {:?}", t.name);
            }
            if let Err(e) = t.ftype.parse::<Ftype>() {
                bail!("target {}: {e}", t.name);
            }
            if let Err(e) = quantize::mix::parse_overrides(&t.tensor_types) {
                bail!("target {}: {e}", t.name);
            }
            for ty in [&t.output_tensor_type, &t.token_embedding_type]
                .into_iter()
                .flatten()
            {
                if let Err(e) = ty.parse::<GgmlType>() {
                    bail!("target {}: {e}", t.name);
                }
            }
            for m in &t.method {
                if !METHODS.contains(&m.as_str()) {
                    bail!(
                        "target {}: unknown method {m:?} (known: {})",
                        t.name,
                        METHODS.join(", ")
                    );
                }
            }
            let methods = t.method.iter().any(|m| m != "imatrix");
            if methods && self.calibration.is_none() {
                bail!(
                    "target {} uses methods that measure on calibration text but there is no [calibration] section",
                    t.name
                );
            }
            if (t.target_size.is_some() || t.target_bpw.is_some())
                && !t.method.iter().any(|m| m == "alloc")
            {
                bail!(
                    "target {}: target_size / target_bpw need method \"alloc\"",
                    t.name
                );
            }
            if t.imatrix && self.calibration.is_none() {
                bail!(
                    "target {} uses an imatrix but there is no [calibration] section",
                    t.name
                );
            }
        }
        let mut anames = std::collections::HashSet::new();
        for a in &self.adapters {
            if !file_name_safe(&a.name) {
                bail!(
                    "adapter name {:?} must be letters, digits, '-', '_' or '.'",
                    a.name
                );
            }
            if !anames.insert(&a.name) {
                bail!("two adapters are called {:?}", a.name);
            }
            if !a.scale.is_finite() {
                bail!("adapter {}: scale {} is not finite", a.name, a.scale);
            }
            if let Err(e) = a.ggml_type() {
                bail!("adapter {}: {e}", a.name);
            }
            if !a.path.exists() {
                bail!("adapter {}: {} does not exist", a.name, a.path.display());
            }
        }
        for t in &self.targets {
            let mut seen = std::collections::HashSet::new();
            for n in t.lora.iter().chain(&t.adapters) {
                if !anames.contains(n) {
                    let known: Vec<&str> = self.adapters.iter().map(|a| a.name.as_str()).collect();
                    bail!(
                        "target {}: no [[adapter]] is called {n:?} (adapters: {})",
                        t.name,
                        known.join(", ")
                    );
                }
                if !seen.insert(n) {
                    bail!(
                        "target {}: adapter {n:?} is named twice (merged and shipped, or listed twice)",
                        t.name
                    );
                }
            }
            if !t.adapters.is_empty() && t.method.iter().any(|m| m == "awq") {
                bail!(
                    "target {}: AWQ folds rescale the inputs a run-time adapter's lora_a reads, so                      its `adapters` would run wrong; merge them (`lora = [...]`) instead",
                    t.name
                );
            }
            if let Some(b) = &t.baseline {
                if b == &t.name || !self.targets.iter().any(|o| &o.name == b) {
                    bail!("target {}: baseline {b:?} is not another target", t.name);
                }
            }
        }
        if !matches!(self.evaluation.protocol.as_str(), "llama" | "full") {
            bail!(
                "evaluation protocol {:?} (llama or full)",
                self.evaluation.protocol
            );
        }
        if self.evaluation.texts.is_empty() {
            bail!("[evaluation] names no texts");
        }
        for t in self
            .calibration
            .iter()
            .flat_map(|c| &c.texts)
            .chain(&self.evaluation.texts)
        {
            if !t.is_file() {
                bail!("text {} does not exist", t.display());
            }
        }
        Ok(())
    }
}
