//! Quantization mixes: which type each tensor of a model gets for a file type such as Q4_K_M.
//!
//! A port of llama.cpp's rules in `src/llama-quant.cpp` (`tensor_allows_quantization`,
//! `llama_tensor_get_type`, `llama_tensor_get_type_impl`, `tensor_type_fallback`,
//! `llama_ftype_get_default_type`) for the file types kiln writes, so that a kiln mix has the
//! same tensor types as llama-quantize's. Every choice carries the reason it was made.
//!
//! As in llama.cpp, the per-layer counters (which attn_v / ffn_down this is) advance in the
//! order llama.cpp's model loader lists tensors: model-level tensors first, then layer by layer
//! in numeric order, names sorted within a layer.

use std::fmt;
use std::str::FromStr;

use crate::GgmlType;

/// A file type (llama.cpp's `llama_ftype`) kiln can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    IQ4_NL,
    IQ4_XS,
}

/// Every file type, in the order `kiln quantize --help` lists them.
pub const ALL_FTYPES: [Ftype; 19] = [
    Ftype::Q8_0,
    Ftype::Q6_K,
    Ftype::Q5_K_M,
    Ftype::Q5_K_S,
    Ftype::Q4_K_M,
    Ftype::Q4_K_S,
    Ftype::IQ4_NL,
    Ftype::IQ4_XS,
    Ftype::Q3_K_L,
    Ftype::Q3_K_M,
    Ftype::Q3_K_S,
    Ftype::Q2_K,
    Ftype::Q5_0,
    Ftype::Q5_1,
    Ftype::Q4_0,
    Ftype::Q4_1,
    Ftype::F16,
    Ftype::BF16,
    Ftype::F32,
];

impl Ftype {
    /// The `general.file_type` value.
    pub fn id(self) -> u32 {
        match self {
            Ftype::F32 => 0,
            Ftype::F16 => 1,
            Ftype::Q4_0 => 2,
            Ftype::Q4_1 => 3,
            Ftype::Q8_0 => 7,
            Ftype::Q5_0 => 8,
            Ftype::Q5_1 => 9,
            Ftype::Q4_K_S => 14,
            Ftype::Q4_K_M => 15,
            Ftype::Q5_K_S => 16,
            Ftype::Q5_K_M => 17,
            Ftype::Q6_K => 18,
            Ftype::Q2_K => 10,
            Ftype::Q3_K_S => 11,
            Ftype::Q3_K_M => 12,
            Ftype::Q3_K_L => 13,
            Ftype::IQ4_NL => 25,
            Ftype::IQ4_XS => 30,
            Ftype::BF16 => 32,
        }
    }

    /// The type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        match self {
            Ftype::F32 => GgmlType::F32,
            Ftype::F16 => GgmlType::F16,
            Ftype::BF16 => GgmlType::BF16,
            Ftype::Q4_0 => GgmlType::Q4_0,
            Ftype::Q4_1 => GgmlType::Q4_1,
            Ftype::Q5_0 => GgmlType::Q5_0,
            Ftype::Q5_1 => GgmlType::Q5_1,
            Ftype::Q8_0 => GgmlType::Q8_0,
            Ftype::Q4_K_S | Ftype::Q4_K_M => GgmlType::Q4K,
            Ftype::Q5_K_S | Ftype::Q5_K_M => GgmlType::Q5K,
            Ftype::Q6_K => GgmlType::Q6K,
            Ftype::Q2_K => GgmlType::Q2K,
            Ftype::Q3_K_S | Ftype::Q3_K_M | Ftype::Q3_K_L => GgmlType::Q3K,
            Ftype::IQ4_NL => GgmlType::IQ4NL,
            Ftype::IQ4_XS => GgmlType::IQ4XS,
        }
    }

    /// The name llama-quantize uses.
    pub fn name(self) -> &'static str {
        match self {
            Ftype::F32 => "F32",
            Ftype::F16 => "F16",
            Ftype::BF16 => "BF16",
            Ftype::Q4_0 => "Q4_0",
            Ftype::Q4_1 => "Q4_1",
            Ftype::Q5_0 => "Q5_0",
            Ftype::Q5_1 => "Q5_1",
            Ftype::Q8_0 => "Q8_0",
            Ftype::Q4_K_S => "Q4_K_S",
            Ftype::Q4_K_M => "Q4_K_M",
            Ftype::Q5_K_S => "Q5_K_S",
            Ftype::Q5_K_M => "Q5_K_M",
            Ftype::Q6_K => "Q6_K",
            Ftype::Q2_K => "Q2_K",
            Ftype::Q3_K_S => "Q3_K_S",
            Ftype::Q3_K_M => "Q3_K_M",
            Ftype::Q3_K_L => "Q3_K_L",
            Ftype::IQ4_NL => "IQ4_NL",
            Ftype::IQ4_XS => "IQ4_XS",
        }
    }
}

impl fmt::Display for Ftype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Ftype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let u = s.to_ascii_uppercase();
        ALL_FTYPES
            .iter()
            .copied()
            .find(|t| t.name() == u)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL_FTYPES.iter().map(|t| t.name()).collect();
                format!(
                    "unknown file type `{s}` (kiln writes: {})",
                    names.join(", ")
                )
            })
    }
}

/// The model facts the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFacts {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// True for the llama architecture (llama.cpp's 70B rule looks at it).
    pub is_llama_arch: bool,
}

/// A tensor to plan for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    /// GGUF name.
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// The type it is stored as now.
    pub current: GgmlType,
}

/// Options of a mix.
#[derive(Debug, Clone, Default)]
pub struct MixOptions {
    /// An importance matrix is given (changes a few rules).
    pub has_imatrix: bool,
    /// Every quantized tensor gets the default type (`--pure`).
    pub pure: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<GgmlType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<GgmlType>,
    /// `--tensor-type REGEX=TYPE`, first match wins.
    pub overrides: Vec<(regex::Regex, GgmlType)>,
}

/// One tensor's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// GGUF name.
    pub name: String,
    /// The type it will be written as.
    pub ty: GgmlType,
    /// Why.
    pub reason: String,
}

/// The error of a plan that cannot be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{tensor}: {msg}")]
pub struct MixError {
    pub tensor: String,
    pub msg: String,
}

/// Parses `REGEX=TYPE` overrides (`--tensor-type`, a build target's `tensor_types`).
pub fn parse_overrides(specs: &[String]) -> Result<Vec<(regex::Regex, GgmlType)>, MixError> {
    let err = |s: &str, msg: String| MixError {
        tensor: format!("--tensor-type {s}"),
        msg,
    };
    let mut overrides = Vec::new();
    for s in specs {
        let (re, ty) = s
            .split_once('=')
            .ok_or_else(|| err(s, "expected REGEX=TYPE".into()))?;
        let ty: GgmlType = ty.parse().map_err(|e| err(s, format!("{e}")))?;
        if matches!(ty, GgmlType::Q8_1 | GgmlType::Q8K) {
            return Err(err(s, format!("{ty} is not a storage type")));
        }
        let re = regex::Regex::new(re).map_err(|e| err(s, format!("bad regex: {e}")))?;
        overrides.push((re, ty));
    }
    Ok(overrides)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_v.weight") || name.contains("attn_qkv.weight") {
        Category::AttnV
    } else if name.contains("attn_k.weight") {
        Category::AttnK
    } else if name.contains("attn_q.weight") {
        Category::AttnQ
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_up") {
        Category::FfnUp
    } else if name.contains("ffn_gate") {
        Category::FfnGate
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// `tensor_allows_quantization`, for the tensors a Llama-family model has.
fn allows_quantization(t: &TensorDesc) -> bool {
    t.dims.len() >= 2 && t.name.ends_with("weight") && !t.name.contains("_norm.weight")
}

/// The layer of `blk.N.…` (-1 for model-level tensors), for llama.cpp's loader order.
fn layer_key(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// `use_more_bits` of llama.cpp: the first and last eighth of layers and every third between.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// `tensor_type_fallback`: rows that do not fit the type's blocks get a compatible type.
fn fallback(t: &TensorDesc, ty: GgmlType, reason: &mut String) -> GgmlType {
    let ncols = t.dims[0] as usize;
    if ncols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    let mut new = match ty {
        GgmlType::IQ4XS => GgmlType::IQ4NL,
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    if !ncols.is_multiple_of(new.block_size()) {
        new = GgmlType::F16;
    }
    reason.push_str(&format!(
        "; rows of {ncols} do not fit {ty}'s blocks of {}: fallback {new}",
        ty.block_size()
    ));
    new
}

struct Counters {
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    tied: bool,
}

/// `llama_tensor_get_type_impl` for the kiln file types. Returns the type and why.
fn get_type_impl(
    c: &mut Counters,
    facts: &ModelFacts,
    opts: &MixOptions,
    ftype: Ftype,
    t: &TensorDesc,
    cat: Category,
    default: GgmlType,
) -> (GgmlType, String) {
    let n_layer = facts.n_layer;
    let is_70b = facts.is_llama_arch && n_layer == 80 && facts.n_head != facts.n_head_kv;
    // llama.cpp's `n_gqa()`: query heads per key/value head (0 without kv heads).
    let n_gqa = facts.n_head.checked_div(facts.n_head_kv).unwrap_or(0);
    let mut ty = default;
    let mut why = format!("{ftype} default");
    if cat == Category::Output || (c.tied && cat == Category::TokenEmbd) {
        let what = if cat == Category::Output {
            "output"
        } else {
            "tied token embedding (also the output)"
        };
        if let Some(o) = opts.output_tensor_type {
            return (o, format!("{what}: --output-tensor-type"));
        }
        let nx = t.dims[0] as usize;
        if !nx.is_multiple_of(ty.block_size()) {
            ty = GgmlType::Q8_0;
            why = format!("{what}: rows of {nx} do not fit {}'s blocks, Q8_0", default);
        } else if ty != GgmlType::Q8_0 {
            ty = GgmlType::Q6K;
            why = format!("{what}: Q6_K");
        } else {
            why = format!("{what}: Q8_0");
        }
    } else if cat == Category::TokenEmbd {
        if let Some(e) = opts.token_embedding_type {
            return (e, "token embedding: --token-embedding-type".into());
        }
    } else if cat == Category::AttnV {
        let (i, n) = (c.i_attention_wv, c.n_attention_wv);
        let gqa4 = n_gqa >= 4;
        let (t, w) = match ftype {
            Ftype::Q2_K if gqa4 => (
                Some(GgmlType::Q4K),
                format!("attn_v: grouped-query ({n_gqa} heads per kv head), Q4_K"),
            ),
            Ftype::Q2_K => (Some(GgmlType::Q3K), "attn_v: Q3_K".to_string()),
            Ftype::Q3_K_M if i < 2 => (
                Some(GgmlType::Q5K),
                format!("attn_v #{i}: Q5_K in the first 2 layers"),
            ),
            Ftype::Q3_K_M => (Some(GgmlType::Q4K), format!("attn_v #{i}: Q4_K")),
            Ftype::Q3_K_L => (Some(GgmlType::Q5K), "attn_v: Q5_K".to_string()),
            Ftype::IQ4_NL | Ftype::IQ4_XS if gqa4 => (
                Some(GgmlType::Q5K),
                format!("attn_v: grouped-query ({n_gqa} heads per kv head), Q5_K"),
            ),
            Ftype::Q4_K_M | Ftype::Q5_K_M if use_more_bits(i, n) => (
                Some(GgmlType::Q6K),
                format!(
                    "attn_v #{i} of {n}: more bits in the first/last eighth and every third layer"
                ),
            ),
            Ftype::Q4_K_S if i < 4 => (
                Some(GgmlType::Q5K),
                format!("attn_v #{i}: Q5_K in the first 4 layers"),
            ),
            _ => (None, String::new()),
        };
        if let Some(t) = t {
            ty = t;
            why = w;
        }
        if is_70b && matches!(ty, GgmlType::Q3K | GgmlType::Q4K) {
            ty = GgmlType::Q5K;
            why.push_str("; 70B: attn_v is 8× smaller than attn_q, Q5_K");
        }
        c.i_attention_wv += 1;
    } else if cat == Category::FfnDown {
        let (i, n) = (c.i_ffn_down, n_layer);
        let more = use_more_bits(i, n);
        let (t, w) = match ftype {
            Ftype::Q2_K => (Some(GgmlType::Q3K), "ffn_down: Q3_K".to_string()),
            Ftype::Q3_K_M if i < n / 16 => (Some(GgmlType::Q5K), format!("ffn_down #{i}: Q5_K in the first sixteenth of layers")),
            Ftype::Q3_K_M => (Some(GgmlType::Q4K), format!("ffn_down #{i}: Q4_K")),
            Ftype::Q3_K_L => (Some(GgmlType::Q5K), "ffn_down: Q5_K".to_string()),
            Ftype::Q4_K_M if more => (
                Some(GgmlType::Q6K),
                format!("ffn_down #{i} of {n}: more bits in the first/last eighth and every third layer"),
            ),
            Ftype::Q4_K_M => (None, String::new()),
            Ftype::IQ4_NL | Ftype::IQ4_XS if i < n / 8 && !opts.has_imatrix => (
                Some(GgmlType::Q5K),
                format!("ffn_down #{i}: without an imatrix, Q5_K in the first eighth of layers"),
            ),
            Ftype::Q5_K_M if more => (
                Some(GgmlType::Q6K),
                format!("ffn_down #{i} of {n}: more bits in the first/last eighth and every third layer"),
            ),
            Ftype::Q4_K_S if i < n / 8 => (Some(GgmlType::Q5K), format!("ffn_down #{i}: Q5_K in the first eighth of layers")),
            Ftype::Q4_0 | Ftype::Q5_0 if opts.has_imatrix && i < n / 8 => {
                let t = if ftype == Ftype::Q4_0 { GgmlType::Q4_1 } else { GgmlType::Q5_1 };
                (Some(t), format!("ffn_down #{i}: with an imatrix, {t} in the first eighth of layers"))
            }
            _ => (None, String::new()),
        };
        if let Some(t) = t {
            ty = t;
            why = w;
        }
        c.i_ffn_down += 1;
    } else if cat == Category::AttnOutput {
        let t = match ftype {
            Ftype::Q2_K => Some(GgmlType::Q3K),
            Ftype::Q3_K_M => Some(GgmlType::Q4K),
            Ftype::Q3_K_L => Some(GgmlType::Q5K),
            _ => None,
        };
        if let Some(t) = t {
            ty = t;
            why = format!("attn_output: {t}");
        }
    }
    (ty, why)
}

/// Chooses every tensor's type for `ftype`, as llama-quantize would. `tensors` may be in any
/// order; the result is in the same order.
pub fn plan(
    tensors: &[TensorDesc],
    facts: &ModelFacts,
    ftype: Ftype,
    opts: &MixOptions,
) -> Result<Vec<Choice>, MixError> {
    let default = ftype.default_type();
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&tensors[a].name, &tensors[b].name);
        layer_key(ta).cmp(&layer_key(tb)).then_with(|| ta.cmp(tb))
    });
    let mut c = Counters {
        n_attention_wv: tensors
            .iter()
            .filter(|t| category(&t.name) == Category::AttnV)
            .count(),
        i_attention_wv: 0,
        i_ffn_down: 0,
        tied: !tensors.iter().any(|t| t.name == "output.weight"),
    };
    let mut out: Vec<Option<Choice>> = vec![None; tensors.len()];
    for &i in &order {
        let t = &tensors[i];
        if t.dims.is_empty() {
            return Err(MixError {
                tensor: t.name.clone(),
                msg: "has no dimensions".into(),
            });
        }
        let cat = category(&t.name);
        let choice = if !allows_quantization(t) {
            Choice {
                name: t.name.clone(),
                ty: t.current,
                reason: "not quantized (1-D or a norm): kept as is".into(),
            }
        } else if let (Some(e), Category::TokenEmbd) = (opts.token_embedding_type, cat) {
            Choice {
                name: t.name.clone(),
                ty: e,
                reason: "--token-embedding-type".into(),
            }
        } else if let (Some(o), Category::Output) = (opts.output_tensor_type, cat) {
            Choice {
                name: t.name.clone(),
                ty: o,
                reason: "--output-tensor-type".into(),
            }
        } else if !default.is_quantized() {
            Choice {
                name: t.name.clone(),
                ty: default,
                reason: format!("{ftype}: every weight matrix"),
            }
        } else {
            let mut manual = None;
            for (re, ty) in &opts.overrides {
                if re.is_match(&t.name) {
                    manual = Some((*ty, format!("--tensor-type {}={}", re.as_str(), ty)));
                    break;
                }
            }
            let (ty, mut reason) = match manual {
                Some(m) => m,
                None if opts.pure => (default, format!("{ftype} default (--pure)")),
                None => get_type_impl(&mut c, facts, opts, ftype, t, cat, default),
            };
            let ty = fallback(t, ty, &mut reason);
            Choice {
                name: t.name.clone(),
                ty,
                reason,
            }
        };
        out[i] = Some(choice);
    }
    Ok(out
        .into_iter()
        .map(|c| c.expect("every tensor planned"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(n_layer: usize, dim: u64, ffn: u64, tied: bool) -> Vec<TensorDesc> {
        let mut t = vec![TensorDesc {
            name: "token_embd.weight".into(),
            dims: vec![dim, 1000],
            current: GgmlType::F32,
        }];
        for l in 0..n_layer {
            for (s, d) in [
                ("attn_norm.weight", vec![dim]),
                ("attn_q.weight", vec![dim, dim]),
                ("attn_k.weight", vec![dim, dim / 3]),
                ("attn_v.weight", vec![dim, dim / 3]),
                ("attn_output.weight", vec![dim, dim]),
                ("ffn_norm.weight", vec![dim]),
                ("ffn_gate.weight", vec![dim, ffn]),
                ("ffn_up.weight", vec![dim, ffn]),
                ("ffn_down.weight", vec![ffn, dim]),
            ] {
                t.push(TensorDesc {
                    name: format!("blk.{l}.{s}"),
                    dims: d,
                    current: GgmlType::F32,
                });
            }
        }
        t.push(TensorDesc {
            name: "output_norm.weight".into(),
            dims: vec![dim],
            current: GgmlType::F32,
        });
        if !tied {
            t.push(TensorDesc {
                name: "output.weight".into(),
                dims: vec![dim, 1000],
                current: GgmlType::F32,
            });
        }
        t
    }

    fn facts(n: usize) -> ModelFacts {
        ModelFacts {
            n_layer: n,
            n_head: 9,
            n_head_kv: 3,
            is_llama_arch: true,
        }
    }

    fn types_of(p: &[Choice], suffix: &str) -> Vec<GgmlType> {
        p.iter()
            .filter(|c| c.name.ends_with(suffix))
            .map(|c| c.ty)
            .collect()
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_attn_v_and_ffn_down_in_the_right_layers() {
        let t = model(30, 576, 1536, true);
        let p = plan(&t, &facts(30), Ftype::Q4_K_M, &MixOptions::default()).unwrap();
        let v = types_of(&p, "attn_v.weight");
        let more: Vec<usize> = v
            .iter()
            .enumerate()
            .filter(|(_, &ty)| ty == GgmlType::Q8_0)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
        assert!(
            v.iter()
                .all(|&ty| ty == GgmlType::Q8_0 || ty == GgmlType::Q5_0),
            "576-wide rows fall back"
        );
        let d = types_of(&p, "ffn_down.weight");
        assert_eq!(d.iter().filter(|&&ty| ty == GgmlType::Q6K).count(), 14);
        assert_eq!(d.iter().filter(|&&ty| ty == GgmlType::Q4K).count(), 16);
        assert_eq!(types_of(&p, "token_embd.weight"), vec![GgmlType::Q8_0]);
        assert_eq!(types_of(&p, "attn_norm.weight")[0], GgmlType::F32);
    }

    #[test]
    fn imatrix_and_overrides_and_pure() {
        let t = model(16, 512, 1024, false);
        let with = MixOptions {
            has_imatrix: true,
            ..Default::default()
        };
        let p = plan(&t, &facts(16), Ftype::Q4_0, &with).unwrap();
        assert_eq!(
            types_of(&p, "ffn_down.weight")[..3],
            [GgmlType::Q4_1, GgmlType::Q4_1, GgmlType::Q4_0]
        );
        assert_eq!(
            p.iter().find(|c| c.name == "output.weight").unwrap().ty,
            GgmlType::Q6K
        );
        let pure = MixOptions {
            pure: true,
            ..Default::default()
        };
        let p = plan(&t, &facts(16), Ftype::Q4_K_M, &pure).unwrap();
        assert!(types_of(&p, "ffn_down.weight")
            .iter()
            .all(|&ty| ty == GgmlType::Q4K));
        let o = MixOptions {
            overrides: vec![(regex::Regex::new(r"attn_q").unwrap(), GgmlType::Q8_0)],
            ..Default::default()
        };
        let p = plan(&t, &facts(16), Ftype::Q4_K_M, &o).unwrap();
        assert!(types_of(&p, "attn_q.weight")
            .iter()
            .all(|&ty| ty == GgmlType::Q8_0));
        assert!(p
            .iter()
            .find(|c| c.name == "blk.0.attn_q.weight")
            .unwrap()
            .reason
            .contains("--tensor-type"));
        assert!("q4_k_m".parse::<Ftype>().is_ok() && "Q3_K_XL".parse::<Ftype>().is_err());
    }
}
