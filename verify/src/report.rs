//! Report data: what `kiln verify` and `kiln build` found, as serde structs with a versioned
//! schema. The binary renders them (text, JSON, Markdown, JUnit XML, HTML).

use serde::{Deserialize, Serialize};

use crate::parity::{Check, Parity, Thresholds};
use crate::weights::TensorError;

/// The version of the JSON report schemas; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// `kiln verify`'s result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    pub schema_version: u32,
    pub kiln_version: String,
    pub reference: String,
    pub candidate: String,
    pub text: String,
    /// `llama` or `full`.
    pub protocol: String,
    pub ctx: usize,
    pub parity: Parity,
    pub thresholds: Thresholds,
    pub checks: Vec<Check>,
    /// Per-tensor weight error.
    pub tensors: Vec<TensorError>,
    /// True when every check passed.
    pub pass: bool,
    /// The SIMD level kiln's kernel ran at (`kernels::SimdLevel::name`).
    #[serde(default)]
    pub simd: String,
}

/// Speed of one artifact in kiln's kernel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BenchResult {
    pub threads: usize,
    pub pp_tokens: usize,
    pub pp_tokens_per_s: f64,
    pub pp_stddev: f64,
    pub tg_tokens: usize,
    pub tg_tokens_per_s: f64,
    pub tg_stddev: f64,
    /// Seconds in attention during one prefill (mean).
    #[serde(default)]
    pub pp_attention_s: f64,
    /// The SIMD level of the measurement (`kernels::SimdLevel::name`).
    #[serde(default)]
    pub simd: String,
    /// Keys attended over causal keys in the prefill (1 without a mask).
    #[serde(default = "one")]
    pub pp_density: f64,
    /// Thread-seconds choosing key blocks during one prefill (content-aware masks), summed
    /// over the threads: about `threads` × its part of `pp_attention_s`.
    #[serde(default)]
    pub pp_selection_s: f64,
}

fn one() -> f64 {
    1.0
}

/// One target of a build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetReport {
    pub name: String,
    /// File type (Q4_K_M …).
    pub ftype: String,
    pub imatrix: bool,
    /// Artifact file name (in the output directory).
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub bits_per_weight: f64,
    /// bytes / FP32 bytes.
    pub ratio_to_fp32: f64,
    pub parity: Parity,
    pub checks: Vec<Check>,
    pub pass: bool,
    pub bench: BenchResult,
    /// Mean relative weight error per layer.
    pub per_layer_error: Vec<(usize, f64)>,
    /// Tensor type counts (`q4_K` → 16 …).
    pub tensor_types: Vec<(String, usize)>,
    /// Block-sparse attention, when the target has a mask.
    #[serde(default)]
    pub masks: Option<MaskReport>,
    /// kiln's calibration methods, when the target uses any.
    #[serde(default)]
    pub method: Option<MethodReport>,
    /// Adapters merged into this target (and into its reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lora: Vec<String>,
    /// This artifact with each of its shipped adapters applied at run time, against the FP32
    /// model with that adapter merged. `pass` is false when any of them fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub combinations: Vec<CombinationReport>,
}

/// A target's artifact + one adapter artifact at run time, against the FP32 model with the
/// adapter merged: what runs on the device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CombinationReport {
    /// The `[[adapter]]`'s name.
    pub adapter: String,
    /// The adapter artifact applied.
    pub file: String,
    /// Artifact + adapter bytes.
    pub bytes: u64,
    pub parity: Parity,
    pub checks: Vec<Check>,
    pub pass: bool,
    pub bench: BenchResult,
}

/// An adapter artifact of a build (a llama.cpp LoRA GGUF).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdapterInfo {
    pub name: String,
    /// The PEFT directory or LoRA GGUF it was read from (file name).
    pub source: String,
    pub source_sha256: String,
    /// Strength it was built and verified at (in the artifact's alpha).
    pub scale: f32,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    /// Tensor type (F16 …).
    #[serde(rename = "type")]
    pub ty: String,
    /// Ranks present.
    pub ranks: Vec<usize>,
    /// `adapter.lora.alpha`.
    pub alpha: f32,
    /// Modules adapted (`q_proj` …) and the number of base tensors.
    pub modules: Vec<String>,
    pub tensors: usize,
}

/// What a target's calibration methods bought, against its llama.cpp-style baseline.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MethodReport {
    /// Methods applied (`search`, `alloc`).
    pub methods: Vec<String>,
    /// Parameters as recorded in the artifact (`kiln.quantize.method`).
    pub parameters: serde_json::Value,
    /// The predicted KL divergence of the type allocation, when `alloc` ran.
    pub predicted_kld: Option<f64>,
    /// The baseline target and its numbers, when the build has one.
    pub baseline: Option<String>,
    pub baseline_bytes: Option<u64>,
    pub baseline_kld_mean: Option<f64>,
    pub baseline_kld_p99: Option<f64>,
    pub baseline_top1: Option<f64>,
    pub baseline_ppl_ratio: Option<f64>,
    /// This target's mean KLD / the baseline's.
    pub kld_ratio: Option<f64>,
}

/// What a target's attention mask costs and saves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MaskReport {
    /// Coverage target the mask was derived for.
    pub coverage: f64,
    /// Tokens per block.
    pub block: usize,
    /// Context the density and speed are measured at.
    pub ctx: usize,
    /// Mean share of causal blocks computed.
    pub density: f64,
    /// Heads kept dense.
    pub dense_heads: usize,
    /// Heads in all.
    pub heads: usize,
    /// The masked model against the same weights run dense.
    pub vs_dense: Parity,
    /// Prefill of `ctx` tokens, tokens/s, masked and dense.
    pub prefill_masked_tps: f64,
    pub prefill_dense_tps: f64,
    /// Seconds spent in attention during that prefill, masked and dense.
    pub attention_masked_s: f64,
    pub attention_dense_s: f64,
    /// The quality budget the mask was chosen for (mean KLD against dense), if any.
    #[serde(default)]
    pub max_kld: Option<f64>,
    /// `static` or `content` (content-aware selection).
    #[serde(default)]
    pub kind: String,
    /// The ladder measured on held-out text, dense first; the chosen point is marked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<MaskPoint>,
}

/// One setting of a mask ladder measured against dense attention on held-out text.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MaskPoint {
    /// `dense`, `static` or `content`.
    pub kind: String,
    /// Coverage target the mask was derived for (1 for dense).
    pub setting: f64,
    /// Context of every figure of this point, tokens.
    pub ctx: usize,
    /// Keys attended over causal keys, measured by the kernel on the evaluation text.
    pub density: f64,
    /// Keys scored over causal keys: a tile of four queries scores the union of their blocks.
    #[serde(default)]
    pub computed: f64,
    /// Scored keys plus the selection's work (blocks bounded, in key equivalents), over causal
    /// keys: what the budget minimizes.
    #[serde(default)]
    pub cost: f64,
    /// KL divergence against dense attention, mean and 99th percentile.
    pub kld: f64,
    pub kld_p99: f64,
    /// Share of positions whose top token is dense attention's.
    pub top1: f64,
    /// Seconds in attention over the evaluated prefills (selection included).
    pub attention_s: f64,
    /// Seconds of the prefills without the logits.
    pub prefill_s: f64,
    /// Thread-seconds choosing blocks (content-aware masks), summed over the threads attention
    /// runs on: its share of `attention_s` (wall seconds) is about this / the thread count.
    pub selection_s: f64,
    /// Dense over this point's attention and prefill seconds, in the same run.
    pub attention_speedup: f64,
    pub prefill_speedup: f64,
    /// Decode tokens/s at a filled `ctx`-token context, and dense's over it.
    pub decode_tps: Option<f64>,
    pub decode_speedup: Option<f64>,
    /// The point the budget chose.
    pub chosen: bool,
}

/// `kiln build`'s report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildReport {
    pub schema_version: u32,
    pub kiln_version: String,
    pub model: String,
    pub model_sha256: String,
    pub parameters: u64,
    pub fp32_bytes: u64,
    pub calibration_texts: Vec<String>,
    pub evaluation_texts: Vec<String>,
    pub protocol: String,
    pub ctx: usize,
    pub eval_chunks: usize,
    pub targets: Vec<TargetReport>,
    /// Adapter artifacts, in build-file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<AdapterInfo>,
    /// True when every target passed.
    pub pass: bool,
}
