//! Synthetic checkpoints: small (or, for memory tests, large) Hugging Face directories of any
//! architecture kiln runs, with deterministic weights, the architecture's config.json keys, a
//! byte-level BPE tokenizer (or the files of a given tokenizer directory) and optional
//! sharding. Used by kiln's tests and benchmarks; nothing here touches a real model.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::config::Arch;
use crate::safetensors::Dtype;

/// What to generate.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub arch: Arch,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub dtype: Dtype,
    pub tie_embeddings: bool,
    /// Number of safetensors shards (1 = a single `model.safetensors`).
    pub shards: usize,
    /// Seed of the weights.
    pub seed: u64,
    /// Copy tokenizer.model / tokenizer.json / tokenizer_config.json from this directory
    /// instead of writing the byte-level BPE tokenizer (`vocab` must cover its ids).
    pub tokenizer_dir: Option<std::path::PathBuf>,
    /// Sliding window of the windowed layers (Gemma 3's local layers), if any.
    pub sliding_window: Option<usize>,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            arch: Arch::Llama,
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 320,
            dtype: Dtype::F32,
            tie_embeddings: false,
            shards: 1,
            seed: 1,
            tokenizer_dir: None,
            sliding_window: None,
        }
    }
}

impl TinySpec {
    /// The model configuration the checkpoint describes.
    pub fn config(&self) -> crate::config::ModelConfig {
        let mut c = crate::config::ModelConfig::base(
            self.arch,
            self.hidden,
            self.intermediate,
            self.layers,
            self.heads,
            self.kv_heads,
            self.hidden / self.heads,
            self.vocab,
        );
        c.tie_word_embeddings = self.tie_embeddings;
        c.qkv_bias = self.arch == Arch::Qwen2;
        c
    }
}

/// Deterministic weights: xorshift64*, roughly N(0, scale²) by a sum of uniforms.
pub fn weights(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (next() + next() + next() - 1.5) * 2.0 * scale)
        .collect()
}

/// The HF tensors of `spec` in name order: (name, shape), from its architecture's table.
pub fn hf_tensors(spec: &TinySpec) -> Vec<(String, Vec<usize>)> {
    let c = spec.config();
    let mut t: Vec<(String, Vec<usize>)> = c
        .arch
        .family()
        .tensors(&c)
        .into_iter()
        .map(|d| (d.hf, d.shape))
        .collect();
    t.sort();
    t
}

/// The f32 values of HF tensor `i` of `spec` (norm weights near 1 — near 0 for Gemma, whose
/// norms multiply by 1 + w — others small).
pub fn tensor_values(spec: &TinySpec, name: &str, shape: &[usize], i: usize) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut v = weights(n, spec.seed.wrapping_add(i as u64 * 7919), 0.05);
    if name.ends_with("norm.weight") {
        if spec.arch == Arch::Gemma3 {
            // On the grid of 1 + w (as bf16-trained weights are): GGUF stores 1 + w in f32, so
            // finer bits of a w near 0 would not survive the trip (nor do they in llama.cpp).
            v.iter_mut().for_each(|x| *x = (1.0 + *x) - 1.0);
        } else {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
    }
    v
}

fn encode(dtype: Dtype, v: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => bytemuck::cast_slice(v).to_vec(),
        Dtype::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|&x| quantize::float::f32_to_bf16(x).to_bits().to_le_bytes())
            .collect(),
    }
}

/// Writes one safetensors file of `(name, dtype, shape)` tensors, streaming each tensor's
/// bytes from `bytes(i)` so that only one tensor is in memory at a time.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Dtype, Vec<usize>)],
    mut bytes: impl FnMut(usize) -> Vec<u8>,
) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, dtype, shape) in tensors {
        let len = shape.iter().product::<usize>() * dtype.size();
        header.insert(
            name.clone(),
            json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [off, off + len]}),
        );
        off += len;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(&(h.len() as u64).to_le_bytes())?;
    f.write_all(&h)?;
    for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
        let b = bytes(i);
        assert_eq!(
            b.len(),
            shape.iter().product::<usize>() * dtype.size(),
            "{name}"
        );
        f.write_all(&b)?;
    }
    f.flush()
}

/// GPT-2's byte → printable-character table, in byte order.
fn byte_symbols() -> Vec<(u32, char)> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut pairs: Vec<(u32, char)> = bs
        .iter()
        .zip(&cs)
        .map(|(&b, &c)| (b, char::from_u32(c).unwrap()))
        .collect();
    pairs.sort();
    pairs
}

/// A byte-level BPE tokenizer.json: the 256 byte symbols, a few merges, and special tokens
/// `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` after them, padded to `vocab` with merges.
pub fn tokenizer_json(vocab: usize) -> serde_json::Value {
    let pairs = byte_symbols();
    let mut v = serde_json::Map::new();
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    for (i, s) in specials.iter().enumerate() {
        v.insert(s.to_string(), json!(i));
    }
    for (i, (_, c)) in pairs.iter().enumerate() {
        v.insert(c.to_string(), json!(i + specials.len()));
    }
    let mut merges = Vec::new();
    let letters: Vec<char> = "etaoinshrdlu".chars().collect();
    'outer: for &a in &['Ġ', 't', 'h', 'e', 'a', 'i', 'n', 's', 'o'] {
        for &b in &letters {
            if v.len() >= vocab {
                break 'outer;
            }
            let m = format!("{a}{b}");
            if !v.contains_key(&m) {
                v.insert(m, json!(v.len()));
                merges.push(format!("{a} {b}"));
            }
        }
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": v, "merges": merges}
    })
}

/// Writes a complete checkpoint directory for `spec` into `dir` (created if needed).
pub fn write_checkpoint(dir: &Path, spec: &TinySpec) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cfg = match spec.arch {
        Arch::Gemma3 => {
            // Gemma3TextConfig's keys as google/gemma-3-270m writes them, scaled down.
            let hd = spec.hidden / spec.heads;
            json!({
                "architectures": ["Gemma3ForCausalLM"],
                "model_type": "gemma3_text",
                "_sliding_window_pattern": 6,
                "attention_bias": false,
                "attention_dropout": 0.0,
                "attn_logit_softcapping": null,
                "bos_token_id": 2,
                "eos_token_id": 1,
                "final_logit_softcapping": null,
                "head_dim": hd,
                "hidden_activation": "gelu_pytorch_tanh",
                "hidden_size": spec.hidden,
                "initializer_range": 0.02,
                "intermediate_size": spec.intermediate,
                "layer_types": (0..spec.layers).map(|l| if l % 6 == 5 { "full_attention" } else { "sliding_attention" }).collect::<Vec<_>>(),
                "max_position_embeddings": 32768,
                "num_attention_heads": spec.heads,
                "num_hidden_layers": spec.layers,
                "num_key_value_heads": spec.kv_heads,
                "pad_token_id": 0,
                "query_pre_attn_scalar": hd,
                "rms_norm_eps": 1e-6,
                "rope_local_base_freq": 10000.0,
                "rope_scaling": null,
                "rope_theta": 1000000.0,
                "sliding_window": spec.sliding_window.unwrap_or(512),
                "tie_word_embeddings": spec.tie_embeddings,
                "torch_dtype": "float32",
                "transformers_version": "4.55.0.dev0",
                "use_bidirectional_attention": false,
                "use_cache": true,
                "vocab_size": spec.vocab
            })
        }
        _ => json!({
            "architectures": [spec.arch.hf_class()],
            "model_type": spec.arch.model_type(),
            "hidden_size": spec.hidden,
            "intermediate_size": spec.intermediate,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "num_key_value_heads": spec.kv_heads,
            "vocab_size": spec.vocab,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": spec.tie_embeddings,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": "float32"
        }),
    };
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    match &spec.tokenizer_dir {
        Some(src) => {
            for f in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"] {
                if src.join(f).exists() {
                    std::fs::copy(src.join(f), dir.join(f))?;
                }
            }
        }
        None => {
            std::fs::write(
                dir.join("tokenizer.json"),
                serde_json::to_vec(&tokenizer_json(spec.vocab))?,
            )?;
            std::fs::write(
                dir.join("tokenizer_config.json"),
                serde_json::to_vec_pretty(
                    &json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "add_bos_token": false}),
                )?,
            )?;
        }
    }
    let names = hf_tensors(spec);
    let shards = spec.shards.max(1);
    let per = names.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (s, chunk) in names.chunks(per).enumerate() {
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", s + 1, shards)
        };
        let ts: Vec<(String, Dtype, Vec<usize>)> = chunk
            .iter()
            .map(|(n, s)| (n.clone(), spec.dtype, s.clone()))
            .collect();
        for (name, _) in chunk {
            weight_map.insert(name.clone(), json!(file));
        }
        write_safetensors(&dir.join(&file), &ts, |k| {
            let (name, shape) = &chunk[k];
            let i = names.iter().position(|(n, _)| n == name).unwrap();
            encode(spec.dtype, &tensor_values(spec, name, shape, i))
        })?;
    }
    if shards > 1 {
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_vec_pretty(&json!({"metadata": {}, "weight_map": weight_map}))?,
        )?;
    }
    Ok(())
}

/// The families of generated checkpoints "with real structure": each writes the config.json
/// keys of a public model (copied key for key, scaled down to a few layers and a small width
/// but keeping its head layout, biases, norms, RoPE settings, tie setting and tokenizer kind).
pub const FAMILIES: &[&str] = &[
    "llama3.2",
    "qwen2.5",
    "qwen3",
    "smollm3",
    "mistral",
    "phi3.5",
    "phi4-mini",
];

/// The public model each generated family copies its config.json from.
pub fn family_source(family: &str) -> Option<&'static str> {
    Some(match family {
        "llama3.2" => "meta-llama/Llama-3.2-1B",
        "qwen2.5" => "Qwen/Qwen2.5-0.5B",
        "qwen3" => "Qwen/Qwen3-0.6B",
        "smollm3" => "HuggingFaceTB/SmolLM3-3B",
        "mistral" => "mistralai/Mistral-7B-v0.1",
        "phi3.5" => "microsoft/Phi-3.5-mini-instruct",
        "phi4-mini" => "microsoft/Phi-4-mini-instruct",
        _ => return None,
    })
}

/// A byte-level BPE tokenizer.json of the kind Llama 3 and Qwen ship: the 256 byte symbols,
/// merges of frequent English pairs and triples up to `vocab − specials`, the family's
/// pre-tokenizer (`pre`: a name [`crate::tokenizer::pre_tokenizer_json`] knows), and the special
/// tokens after the merges, as in the real vocabularies. `bos` (if any) is added by a
/// `TemplateProcessing` post-processor, as Llama 3's tokenizer.json does.
pub fn bpe_tokenizer_json(
    vocab: usize,
    pre: &str,
    specials: &[&str],
    bos: Option<&str>,
) -> serde_json::Value {
    let pairs = byte_symbols();
    let mut v = serde_json::Map::new();
    for (i, (_, c)) in pairs.iter().enumerate() {
        v.insert(c.to_string(), json!(i));
    }
    let n_merges = vocab - specials.len();
    let mut merges: Vec<String> = Vec::new();
    let mut add = |a: &str, b: &str, v: &mut serde_json::Map<String, serde_json::Value>| {
        let m = format!("{a}{b}");
        if v.len() < n_merges && !v.contains_key(&m) && v.contains_key(a) && v.contains_key(b) {
            v.insert(m, json!(v.len()));
            merges.push(format!("{a} {b}"));
        }
    };
    let letters: Vec<String> = "etaoinshrdlucmfwypvbgk".chars().map(String::from).collect();
    for a in ["Ġ", "t", "h", "e", "a", "i", "n", "s", "o", "r"] {
        for b in &letters {
            add(a, b, &mut v);
        }
    }
    for w in [
        "Ġth", "Ġa", "Ġw", "Ġs", "Ġo", "Ġm", "Ġh", "Ġi", "Ġb", "Ġc", "Ġf", "Ġd",
    ] {
        for b in &letters {
            add(w, b, &mut v);
        }
    }
    for a in &letters {
        for b in &letters {
            add(a, b, &mut v);
        }
    }
    let mut k = 0;
    while v.len() < n_merges {
        // Fill with merges of the byte symbols themselves (rarely used, but real rows).
        let (a, b) = (
            pairs[k % 94].1.to_string(),
            pairs[(k / 94) % 94].1.to_string(),
        );
        add(&a, &b, &mut v);
        k += 1;
    }
    let base = v.len();
    for (i, s) in specials.iter().enumerate() {
        v.insert(s.to_string(), json!(base + i));
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": base + i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let post = match bos {
        Some(b) => {
            let id = base + specials.iter().position(|s| s == &b).unwrap();
            json!({"type": "TemplateProcessing",
                   "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                            {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                   "special_tokens": {b: {"id": b, "ids": [id], "tokens": [b]}}})
        }
        None => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false})
        }
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": crate::tokenizer::pre_tokenizer_json(pre).expect("a pre-tokenizer kiln knows"),
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": pre == "llama-bpe",
                  "vocab": v, "merges": merges}
    })
}

/// The tokenizer_config.json of Qwen2.5 / Qwen3 (they differ in the EOS token).
fn qwen_tokenizer_config(eos: &str) -> serde_json::Value {
    json!({"bos_token": null, "eos_token": eos, "pad_token": "<|endoftext|>", "add_prefix_space": false,
           "clean_up_tokenization_spaces": false, "errors": "replace", "model_max_length": 131072,
           "split_special_tokens": false, "tokenizer_class": "Qwen2Tokenizer", "unk_token": null})
}

/// Phi-3.5-mini's LongRoPE divisors (its config.json's `rope_scaling`), 48 per head of 96.
const PHI35_LONG: [f64; 48] = [
    1.0800000429153442,
    1.1100000143051147,
    1.1399999856948853,
    1.340000033378601,
    1.5899999141693115,
    1.600000023841858,
    1.6200000047683716,
    2.620000123977661,
    3.2300000190734863,
    3.2300000190734863,
    4.789999961853027,
    7.400000095367432,
    7.700000286102295,
    9.09000015258789,
    12.199999809265137,
    17.670000076293945,
    24.46000099182129,
    28.57000160217285,
    30.420001983642578,
    30.840002059936523,
    32.590003967285156,
    32.93000411987305,
    42.320003509521484,
    44.96000289916992,
    50.340003967285156,
    50.45000457763672,
    57.55000305175781,
    57.93000411987305,
    58.21000289916992,
    60.1400032043457,
    62.61000442504883,
    62.62000274658203,
    62.71000289916992,
    63.1400032043457,
    63.1400032043457,
    63.77000427246094,
    63.93000411987305,
    63.96000289916992,
    63.970001220703125,
    64.02999877929688,
    64.06999969482422,
    64.08000183105469,
    64.12000274658203,
    64.41000366210938,
    64.4800033569336,
    64.51000213623047,
    64.52999877929688,
    64.83999633789062,
];
const PHI35_SHORT: [f64; 48] = [
    1.0,
    1.0199999809265137,
    1.0299999713897705,
    1.0299999713897705,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0699999332427979,
    1.0999999046325684,
    1.1099998950958252,
    1.1599998474121094,
    1.1599998474121094,
    1.1699998378753662,
    1.2899998426437378,
    1.339999794960022,
    1.679999828338623,
    1.7899998426437378,
    1.8199998140335083,
    1.8499997854232788,
    1.8799997568130493,
    1.9099997282028198,
    1.9399996995925903,
    1.9899996519088745,
    2.0199997425079346,
    2.0199997425079346,
    2.0199997425079346,
    2.0199997425079346,
    2.0199997425079346,
    2.0199997425079346,
    2.0299997329711914,
    2.0299997329711914,
    2.0299997329711914,
    2.0299997329711914,
    2.0299997329711914,
    2.0299997329711914,
    2.0299997329711914,
    2.0299997329711914,
    2.0299997329711914,
    2.0799996852874756,
    2.0899996757507324,
    2.189999580383301,
    2.2199995517730713,
    2.5899994373321533,
    2.729999542236328,
    2.749999523162842,
    2.8399994373321533,
];

/// Phi-4-mini's LongRoPE long divisors (its short ones are all 1), 48 per 96 rotated
/// dimensions of its heads of 128.
const PHI4_LONG: [f64; 48] = [
    1.0,
    1.118320672,
    1.250641126,
    1.398617824,
    1.564103225,
    1.74916897,
    1.956131817,
    2.187582649,
    2.446418898,
    2.735880826,
    3.059592084,
    3.421605075,
    3.826451687,
    4.279200023,
    4.785517845,
    5.351743533,
    5.984965424,
    6.693110555,
    7.485043894,
    8.370679318,
    9.36110372,
    10.4687158,
    11.70738129,
    13.09260651,
    14.64173252,
    16.37415215,
    18.31155283,
    20.47818807,
    22.90118105,
    25.61086418,
    28.64115884,
    32.03,
    32.1,
    32.13,
    32.23,
    32.6,
    32.61,
    32.64,
    32.66,
    32.7,
    32.71,
    32.93,
    32.97,
    33.28,
    33.49,
    33.5,
    44.16,
    47.77,
];

/// Phi-3.5-mini's added tokens (ids after the SentencePiece pieces), all special.
const PHI35_ADDED: [&str; 11] = [
    "<|endoftext|>",
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
];

/// Phi-3.5-mini's tokenizer files over the SentencePiece model of `spm_dir` (`n` pieces):
/// its added tokens after the pieces in tokenizer.json and tokenizer_config.json's
/// `added_tokens_decoder`, no BOS added, `<|endoftext|>` the EOS, its chat template.
fn write_phi3_tokenizer(dir: &Path, spm_dir: &Path, n: usize) -> std::io::Result<()> {
    std::fs::copy(spm_dir.join("tokenizer.model"), dir.join("tokenizer.model"))?;
    let mut tj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spm_dir.join("tokenizer.json"))?)?;
    let entry = |id: usize, content: &str, rstrip: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": rstrip, "normalized": false, "special": true})
    };
    let mut decoder = serde_json::Map::new();
    for (id, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        let mut e = entry(id, t, id == 2);
        e.as_object_mut().unwrap().remove("id");
        decoder.insert(id.to_string(), e);
    }
    let added = tj["added_tokens"].as_array_mut().unwrap();
    for (k, t) in PHI35_ADDED.iter().enumerate() {
        let id = n + k;
        let rstrip = k != 0;
        added.push(entry(id, t, rstrip));
        let mut e = entry(id, t, rstrip);
        e.as_object_mut().unwrap().remove("id");
        decoder.insert(id.to_string(), e);
    }
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tj)?)?;
    let tc = json!({
        "add_bos_token": false, "add_eos_token": false, "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "chat_template": "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}",
        "clean_up_tokenization_spaces": false, "eos_token": "<|endoftext|>", "legacy": false,
        "model_max_length": 131072, "pad_token": "<|endoftext|>", "padding_side": "left",
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
        "use_default_system_prompt": false
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_vec_pretty(&tc)?,
    )
}

/// Writes the generated checkpoint of `family` (one of [`FAMILIES`]) into `dir`; `spm_dir` is
/// a Llama-2-style SentencePiece tokenizer directory (tests/data/llama2-spm) for the families
/// that ship one (Mistral, Phi-3.5). Returns the `--tokenizer-pre` its conversion needs (the check-text
/// hash of a generated vocabulary matches no released tokenizer), if any.
pub fn write_family_checkpoint(
    dir: &Path,
    family: &str,
    spm_dir: &Path,
) -> std::io::Result<Option<&'static str>> {
    std::fs::create_dir_all(dir)?;
    let vocab = 512;
    // (config.json, tokenizer: Some((pre, specials, bos, tokenizer_config)) or None for SPM).
    type Tok = (
        &'static str,
        Vec<&'static str>,
        Option<&'static str>,
        serde_json::Value,
    );
    let (cfg, tok): (serde_json::Value, Option<Tok>) = match family {
        "llama3.2" => {
            let sp = vec![
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|reserved_special_token_0|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ];
            (
                json!({
                    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
                    "bos_token_id": vocab - 6, "eos_token_id": vocab - 5, "head_dim": 16, "hidden_act": "silu",
                    "hidden_size": 256, "initializer_range": 0.02, "intermediate_size": 512,
                    "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
                    "num_attention_heads": 16, "num_hidden_layers": 2, "num_key_value_heads": 4,
                    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
                    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "float32",
                    "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": vocab
                }),
                Some((
                    "llama-bpe",
                    sp,
                    Some("<|begin_of_text|>"),
                    json!({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "clean_up_tokenization_spaces": true,
                             "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"}),
                )),
            )
        }
        "qwen2.5" => {
            let sp = vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
            (
                json!({
                    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
                    "bos_token_id": vocab - 3, "eos_token_id": vocab - 3, "hidden_act": "silu",
                    "hidden_size": 224, "initializer_range": 0.02, "intermediate_size": 512,
                    "max_position_embeddings": 32768, "max_window_layers": 2, "model_type": "qwen2",
                    "num_attention_heads": 14, "num_hidden_layers": 2, "num_key_value_heads": 2,
                    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
                    "tie_word_embeddings": true, "torch_dtype": "float32", "transformers_version": "4.40.1",
                    "use_cache": true, "use_sliding_window": false, "vocab_size": vocab
                }),
                Some(("qwen2", sp, None, qwen_tokenizer_config("<|endoftext|>"))),
            )
        }
        "qwen3" => {
            let sp = vec!["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
            (
                json!({
                    "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
                    "bos_token_id": vocab - 3, "eos_token_id": vocab - 1, "head_dim": 32, "hidden_act": "silu",
                    "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 192,
                    "max_position_embeddings": 40960, "max_window_layers": 2, "model_type": "qwen3",
                    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
                    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
                    "tie_word_embeddings": true, "torch_dtype": "float32", "transformers_version": "4.51.0",
                    "use_cache": true, "use_sliding_window": false, "vocab_size": vocab
                }),
                Some(("qwen2", sp, None, qwen_tokenizer_config("<|im_end|>"))),
            )
        }
        "smollm3" => {
            let sp = vec![
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|finetune_right_pad_id|>",
                "<|im_start|>",
                "<|im_end|>",
            ];
            (
                json!({
                    "architectures": ["SmolLM3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
                    "bos_token_id": null, "eos_token_id": vocab - 1, "hidden_act": "silu",
                    "hidden_size": 128, "initializer_range": 0.02, "intermediate_size": 320,
                    "layer_types": ["full_attention", "full_attention", "full_attention", "full_attention"],
                    "max_position_embeddings": 65536, "max_window_layers": 4, "mlp_bias": false,
                    "model_type": "smollm3", "no_rope_layer_interval": 4, "no_rope_layers": [1, 1, 1, 0],
                    "num_attention_heads": 4, "num_hidden_layers": 4, "num_key_value_heads": 1,
                    "pad_token_id": vocab - 3, "pretraining_tp": 2, "rms_norm_eps": 1e-06, "rope_scaling": null,
                    "rope_theta": 5000000.0, "sliding_window": null, "tie_word_embeddings": true,
                    "torch_dtype": "float32", "transformers_version": "4.54.0.dev0", "use_cache": false,
                    "use_sliding_window": false, "vocab_size": vocab
                }),
                Some((
                    "llama-bpe",
                    sp,
                    None,
                    json!({"bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|finetune_right_pad_id|>",
                             "clean_up_tokenization_spaces": true, "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"}),
                )),
            )
        }
        // Phi-3.5-mini: heads of 96 (its real LongRoPE factors, 48 pairs), no GQA, untied, a
        // window longer than any context; the contexts scaled by 1/16 (the ratio kept, and the
        // pre-training one a multiple of 256 as 4096 is: llama.cpp rounds the context up to
        // 256 before it picks the factors), so a 256-token run uses the short factors and a
        // 512-token run the long ones.
        "phi3.5" => (
            json!({
                "_name_or_path": "Phi-3.5-mini-instruct", "architectures": ["Phi3ForCausalLM"],
                "attention_bias": false, "attention_dropout": 0.0,
                "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                             "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
                "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 4000, "hidden_act": "silu",
                "hidden_size": 192, "initializer_range": 0.02, "intermediate_size": 512,
                "max_position_embeddings": 8192, "model_type": "phi3", "num_attention_heads": 2,
                "num_hidden_layers": 2, "num_key_value_heads": 2,
                "original_max_position_embeddings": 256, "pad_token_id": 4000, "resid_pdrop": 0.0,
                "rms_norm_eps": 1e-05,
                "rope_scaling": {"long_factor": PHI35_LONG.to_vec(), "short_factor": PHI35_SHORT.to_vec(), "type": "longrope"},
                "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": false,
                "torch_dtype": "float32", "transformers_version": "4.43.3", "use_cache": true,
                "vocab_size": 4064
            }),
            None,
        ),
        // Phi-4-mini: 3 query heads of 128 sharing one key/value head (its 24:8), RoPE over
        // 96 of the 128 (partial_rotary_factor 0.75), tied, its remote-code keys, o200k's
        // byte-level BPE; contexts scaled by 1/16 as for Phi-3.5.
        "phi4-mini" => {
            let sp = vec![
                "<|endoftext|>",
                "<|assistant|>",
                "<|end|>",
                "<|user|>",
                "<|system|>",
            ];
            let eot = vocab - sp.len();
            (
                json!({
                    "_name_or_path": "Phi-4-mini-instruct", "architectures": ["Phi3ForCausalLM"],
                    "attention_bias": false, "attention_dropout": 0.0,
                    "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                                 "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM",
                                 "AutoTokenizer": "Xenova/gpt-4o"},
                    "bos_token_id": eot, "embd_pdrop": 0.0, "eos_token_id": eot, "full_attn_mod": 1,
                    "hidden_act": "silu", "hidden_size": 384, "initializer_range": 0.02,
                    "intermediate_size": 1024, "interpolate_factor": 1, "lm_head_bias": false,
                    "max_position_embeddings": 8192, "mlp_bias": false, "model_type": "phi3",
                    "num_attention_heads": 3, "num_hidden_layers": 2, "num_key_value_heads": 1,
                    "original_max_position_embeddings": 256, "pad_token_id": eot,
                    "partial_rotary_factor": 0.75, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
                    "rope_scaling": {"long_factor": PHI4_LONG.to_vec(), "short_factor": vec![1.0; 48], "type": "longrope"},
                    "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": true,
                    "torch_dtype": "float32", "transformers_version": "4.45.0", "use_cache": true,
                    "vocab_size": vocab
                }),
                Some((
                    "gpt-4o",
                    sp,
                    None,
                    json!({"add_bos_token": false, "add_eos_token": false, "bos_token": "<|endoftext|>",
                           "clean_up_tokenization_spaces": false, "eos_token": "<|endoftext|>",
                           "model_max_length": 131072, "pad_token": "<|endoftext|>",
                           "tokenizer_class": "GPT2Tokenizer", "unk_token": "<|endoftext|>"}),
                )),
            )
        }
        "mistral" => (
            json!({
                "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
                "hidden_size": 128, "initializer_range": 0.02, "intermediate_size": 448,
                "max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 4,
                "num_hidden_layers": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
                "sliding_window": 64, "tie_word_embeddings": false, "torch_dtype": "float32",
                "transformers_version": "4.34.0.dev0", "use_cache": true, "vocab_size": 4000
            }),
            None,
        ),
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "no generated family `{other}` (known: {})",
                    FAMILIES.join(", ")
                ),
            ))
        }
    };
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    let pre = match tok {
        Some((pre, specials, bos, tc)) => {
            let vocab = cfg["vocab_size"].as_u64().unwrap() as usize;
            std::fs::write(
                dir.join("tokenizer.json"),
                serde_json::to_vec(&bpe_tokenizer_json(vocab, pre, &specials, bos))?,
            )?;
            std::fs::write(
                dir.join("tokenizer_config.json"),
                serde_json::to_vec_pretty(&tc)?,
            )?;
            Some(pre)
        }
        None if family == "phi3.5" => {
            write_phi3_tokenizer(dir, spm_dir, 4000)?;
            None
        }
        None => {
            for f in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"] {
                std::fs::copy(spm_dir.join(f), dir.join(f))?;
            }
            None
        }
    };
    let c = crate::config::ModelConfig::from_hf_json(
        &dir.join("config.json"),
        &serde_json::to_string(&cfg)?,
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut names: Vec<(String, Vec<usize>)> = c
        .arch
        .family()
        .tensors(&c)
        .into_iter()
        .map(|d| (d.hf, d.shape))
        .collect();
    names.sort();
    let ts: Vec<(String, Dtype, Vec<usize>)> = names
        .iter()
        .map(|(n, s)| (n.clone(), Dtype::F32, s.clone()))
        .collect();
    let seed = family
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    write_safetensors(&dir.join("model.safetensors"), &ts, |i| {
        let (name, shape) = &names[i];
        let n: usize = shape.iter().product();
        // Projections at a scale that gives the logits a spread (ties are rare), norms near 1.
        let mut v = weights(n, seed.wrapping_add(i as u64 * 7919), 0.08);
        if name.ends_with("norm.weight") {
            v.iter_mut().for_each(|x| *x = 1.0 + 2.0 * *x);
        }
        encode(Dtype::F32, &v)
    })?;
    Ok(pre)
}
