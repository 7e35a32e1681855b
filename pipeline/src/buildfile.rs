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
}

/// The calibration methods kiln knows (`method = [...]` of a target, `--method`).
pub const METHODS: [&str; 5] = ["imatrix", "search", "awq", "gptq", "alloc"];

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
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
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
        for t in &self.targets {
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
