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

/// A byte-level BPE tokenizer.json: the 256 byte symbols, a few merges, and special tokens
/// `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` after them, padded to `vocab` with merges.
pub fn tokenizer_json(vocab: usize) -> serde_json::Value {
    // GPT-2's byte → printable-char table.
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
