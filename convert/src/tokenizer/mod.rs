//! Tokenizers: Hugging Face `tokenizer.json` / `tokenizer.model` → llama.cpp's
//! `tokenizer.ggml.*` metadata, and back (GGUF metadata → the files of a Hugging Face
//! directory, for `kiln export`), and kiln's own text tokenizer ([`Tokenizer`]).
//!
//! Two kinds, as llama.cpp has them:
//!
//! * byte-level BPE (`tokenizer.ggml.model = gpt2`: SmolLM, Llama 3, Qwen2), run through the
//!   `tokenizers` crate. The `pre` name — which pre-tokenizer regexes llama.cpp applies — is
//!   found as llama.cpp's `convert_hf_to_gguf.py` finds it (`get_vocab_base_pre`): encode a
//!   fixed check text and look the SHA-256 of the token ids up in a table. kiln never guesses:
//!   an unknown hash stops the conversion and names the `--tokenizer-pre` flag.
//! * SentencePiece (`tokenizer.ggml.model = llama`: Llama 2, Mistral, Gemma, Phi-3), ingested
//!   as [`sentencepiece`] describes and run by [`spm`], a port of llama.cpp's own tokenizer.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value, ValueType};

pub mod sentencepiece;
pub mod sp_model;
pub mod spm;

/// llama.cpp's token types (`llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// llama.cpp's pre-tokenizer check text (`chktxt` of `convert_hf_to_gguf.py`), character for
/// character: the hash of its token ids identifies a tokenizer's pre-tokenization.
pub const CHKTXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\u{1F680} (normal) \u{1F636}\u{200D}\u{1F32B}\u{FE0F} (multiple emojis concatenated) \u{2705} \u{1F999}\u{1F999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17B6}\u{1793}\u{17CB}\u{178F}\u{17C2}\u{1796}\u{17B7}\u{179F}\u{17C1}\u{179F}\u{17A2}\u{17B6}\u{1785}\u{1F601} ?\u{6211}\u{60F3}\u{5728}apple\u{5DE5}\u{4F5C}1314151\u{5929}\u{FF5E} ------======= \u{043D}\u{0435}\u{0449}\u{043E} \u{043D}\u{0430} \u{0411}\u{044A}\u{043B}\u{0433}\u{0430}\u{0440}\u{0441}\u{043A}\u{0438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// Known check-text hashes → llama.cpp `pre` names (from `get_vocab_base_pre`), for the
/// byte-level BPE tokenizers of the architectures kiln converts and their close relatives.
pub const KNOWN_PRE_HASHES: &[(&str, &str)] = &[
    (
        "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249",
        "smollm",
    ),
    (
        "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",
        "llama-bpe",
    ),
    (
        "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",
        "qwen2",
    ),
    (
        "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c",
        "qwen2",
    ),
    (
        "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5",
        "deepseek-r1-qwen",
    ),
    (
        "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454",
        "gpt-2",
    ),
    (
        "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4",
        "gpt-2",
    ),
    (
        "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34",
        "starcoder",
    ),
    (
        "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff",
        "refact",
    ),
    (
        "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3",
        "stablelm2",
    ),
    (
        "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e",
        "tekken",
    ),
    (
        "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e",
        "falcon3",
    ),
    (
        "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d",
        "smaug-bpe",
    ),
];

/// The pre-tokenizer (as `tokenizer.json` JSON) that reproduces llama.cpp's pre-tokenization
/// for `pre`, for the names kiln can run itself (llama.cpp's regexes in `llama-vocab.cpp`).
pub fn pre_tokenizer_json(pre: &str) -> Option<Json> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        // GPT-2's regex after splitting digits one by one.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        "gpt-2" | "phi-2" | "olmo" | "mpt" | "roberta-bpe" => byte_level(true),
        "llama-bpe" | "llama3" | "falcon3" | "smaug-bpe" | "dbrx" => json!({
            "type": "Sequence",
            "pretokenizers": [split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"), byte_level(false)]
        }),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => json!({
            "type": "Sequence",
            "pretokenizers": [split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"), byte_level(false)]
        }),
        // o200k (Phi-4-mini): tokenizer.json's own regex, which llama.cpp rewrites with
        // lookaheads for its regex engine (`LLAMA_VOCAB_PRE_TYPE_GPT4O`).
        "gpt-4o" => json!({
            "type": "Sequence",
            "pretokenizers": [split("[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"), byte_level(false)]
        }),
        _ => return None,
    })
}

/// SHA-256 of Python's `str(ids)` (`[1, 2, 3]`), the form llama.cpp hashes.
pub fn ids_hash(ids: &[u32]) -> String {
    let s = format!(
        "[{}]",
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    hex(&Sha256::digest(s.as_bytes()))
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The tokenizer metadata of a checkpoint directory (`tokenizer.json`, optional
/// `tokenizer_config.json`), as llama.cpp's converter writes it. `vocab_size` is the model's
/// (tokens past the tokenizer's vocabulary become `[PAD<i>]`, type UNUSED). `pre_override`
/// names the pre-tokenizer explicitly.
pub fn hf_tokenizer_metadata(
    dir: &Path,
    vocab_size: usize,
    pre_override: Option<&str>,
) -> Result<Metadata> {
    let tj_path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&tj_path).map_err(|e| Error::io(&tj_path, e))?;
    let tj: Json = serde_json::from_str(&text)
        .map_err(|e| Error::format(&tj_path, format!("not valid JSON: {e}")))?;
    let model = &tj["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(Error::unsupported(
            &tj_path,
            format!(
                "tokenizer model {} is not supported (kiln converts byte-level BPE tokenizers)",
                model["type"]
            ),
        ));
    }
    if !is_byte_level(&tj) {
        return Err(Error::unsupported(
            &tj_path,
            "a BPE tokenizer without byte-level pre-tokenization (SentencePiece-style) is not supported yet",
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| Error::format(&tj_path, "model.vocab is not an object"))?;
    let mut by_id: HashMap<u32, String> = HashMap::with_capacity(vocab.len());
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            Error::format(&tj_path, format!("vocab id of {tok:?} is not a number"))
        })?;
        by_id.insert(id as u32, tok.clone());
    }
    let mut added: HashMap<u32, (String, bool)> = HashMap::new();
    for a in tj["added_tokens"]
        .as_array()
        .map(|v| v.as_slice())
        .unwrap_or(&[])
    {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
            return Err(Error::format(
                &tj_path,
                format!("malformed added token {a}"),
            ));
        };
        added.insert(
            id as u32,
            (content.to_string(), a["special"].as_bool().unwrap_or(false)),
        );
        by_id.insert(id as u32, content.to_string());
    }
    // Every id must index a row of the embedding: an id past the model's vocabulary would
    // pad the token list up to it (a lying file could ask for 2³² tokens).
    if let Some(&bad) = by_id.keys().filter(|&&i| i as usize >= vocab_size).max() {
        return Err(Error::format(
            &tj_path,
            format!(
                "token id {bad} ({:?}) is outside the model's vocabulary of {vocab_size}",
                by_id[&bad]
            ),
        ));
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for i in 0..vocab_size as u32 {
        match (by_id.get(&i), added.get(&i)) {
            (None, _) => {
                tokens.push(format!("[PAD{i}]"));
                types.push(token_type::UNUSED);
            }
            (Some(_), Some((content, special))) => {
                tokens.push(content.clone());
                types.push(if *special || looks_special(content) {
                    token_type::CONTROL
                } else {
                    token_type::USER_DEFINED
                });
            }
            (Some(t), None) => {
                tokens.push(t.clone());
                types.push(token_type::NORMAL);
            }
        }
    }
    let merges: Vec<String> = match model["merges"].as_array() {
        Some(m) => m
            .iter()
            .map(|x| match x {
                Json::String(s) => Some(s.clone()),
                Json::Array(p) if p.len() == 2 => {
                    Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?))
                }
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::format(&tj_path, "model.merges holds an entry that is not a merge")
            })?,
        None => Vec::new(),
    };

    let pre = match pre_override {
        Some(p) => p.to_string(),
        None => detect_pre(&tj_path, &text)?,
    };

    let mut md = Metadata::new();
    md.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.set("tokenizer.ggml.pre", Value::String(pre));
    md.set(
        "tokenizer.ggml.tokens",
        Value::string_array(tokens.iter().cloned()),
    );
    md.set(
        "tokenizer.ggml.token_type",
        Value::Array(
            ValueType::I32,
            types.iter().map(|&t| Value::I32(t)).collect(),
        ),
    );
    md.set("tokenizer.ggml.merges", Value::string_array(merges));

    // Special tokens, add-special flags and chat templates: gguf-py's SpecialVocab, ported
    // once for both tokenizer kinds.
    sentencepiece::SpecialVocab::load(dir, vocab_size)?.write(&mut md);
    Ok(md)
}

pub(crate) fn is_byte_level(tj: &Json) -> bool {
    fn has(v: &Json) -> bool {
        match v {
            Json::Object(o) => {
                o.get("type").and_then(|t| t.as_str()) == Some("ByteLevel") || o.values().any(has)
            }
            Json::Array(a) => a.iter().any(has),
            _ => false,
        }
    }
    has(&tj["pre_tokenizer"]) || has(&tj["decoder"])
}

/// `does_token_look_special` of `convert_hf_to_gguf.py`: added tokens that are control
/// tokens in all but name.
pub(crate) fn looks_special(t: &str) -> bool {
    (t.starts_with("<|") && t.ends_with("|>") && t.len() > 4)
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
        || matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
}

/// The tokenizer metadata of a checkpoint directory of `c`'s model: SentencePiece
/// ([`sentencepiece::hf_metadata`]) or byte-level BPE ([`hf_tokenizer_metadata`]).
pub fn tokenizer_metadata(
    dir: &Path,
    c: &ModelConfig,
    pre_override: Option<&str>,
) -> Result<Metadata> {
    if sentencepiece::is_sentencepiece(dir) {
        sentencepiece::hf_metadata(dir, c)
    } else {
        hf_tokenizer_metadata(dir, c.vocab_size, pre_override)
    }
}

/// The `pre` name of a tokenizer.json (text), by llama.cpp's check-text hash.
pub fn detect_pre(path: &Path, tokenizer_json: &str) -> Result<String> {
    let tok = tokenizers::Tokenizer::from_bytes(tokenizer_json.as_bytes())
        .map_err(|e| Error::format(path, format!("the tokenizers library cannot load it: {e}")))?;
    let enc = tok
        .encode(CHKTXT, true)
        .map_err(|e| Error::format(path, format!("cannot encode the check text: {e}")))?;
    let h = ids_hash(enc.get_ids());
    match KNOWN_PRE_HASHES.iter().find(|(k, _)| *k == h) {
        Some((_, name)) => Ok(name.to_string()),
        None => Err(Error::unsupported(
            path,
            format!(
                "cannot tell which pre-tokenizer llama.cpp should use for this tokenizer (check-text hash {h}); \
                 name it with --tokenizer-pre NAME (e.g. smollm, llama-bpe, qwen2, gpt-2); a wrong name silently degrades generation"
            ),
        )),
    }
}

/// A `tokenizer.json` (as JSON) equivalent to GGUF tokenizer metadata, for byte-level BPE
/// (`tokenizer.ggml.model = gpt2`) with a `pre` kiln knows. `path` names the GGUF in errors.
pub fn tokenizer_json_from_gguf(path: &Path, md: &Metadata) -> Result<Json> {
    let model = md
        .str("tokenizer.ggml.model")
        .ok_or_else(|| Error::format(path, "no tokenizer.ggml.model"))?;
    if model == "llama" {
        return Ok(sentencepiece::export_files(path, md)?.tokenizer_json);
    }
    if model != "gpt2" {
        return Err(Error::unsupported(
            path,
            format!("tokenizer.ggml.model = `{model}` is not supported (kiln runs byte-level BPE `gpt2` and SentencePiece `llama`)"),
        ));
    }
    let pre = md.str("tokenizer.ggml.pre").unwrap_or("default");
    let pre_tok = pre_tokenizer_json(pre).ok_or_else(|| {
        Error::unsupported(path, format!("pre-tokenizer `{pre}` is not one kiln implements (smollm, gpt-2, llama-bpe, qwen2, gpt-4o and relatives)"))
    })?;
    let tokens = string_array(path, md, "tokenizer.ggml.tokens")?;
    let types: Vec<i32> = match md
        .get("tokenizer.ggml.token_type")
        .and_then(Value::as_array)
    {
        Some(a) => a
            .iter()
            .map(|v| {
                if let Value::I32(t) = v {
                    *t
                } else {
                    token_type::NORMAL
                }
            })
            .collect(),
        None => vec![token_type::NORMAL; tokens.len()],
    };
    let merges = string_array(path, md, "tokenizer.ggml.merges").unwrap_or_default();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let ty = types.get(i).copied().unwrap_or(token_type::NORMAL);
        if ty == token_type::UNUSED && t.starts_with("[PAD") {
            continue;
        }
        vocab.insert(t.clone(), json!(i));
        if ty == token_type::CONTROL || ty == token_type::USER_DEFINED {
            added.push(json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": ty == token_type::USER_DEFINED, "special": ty == token_type::CONTROL}));
        }
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tok,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

/// A `tokenizer_config.json` carrying the GGUF's special tokens, flags and chat template.
pub fn tokenizer_config_from_gguf(md: &Metadata) -> Json {
    let tokens: Vec<&str> = md
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let tok = |key: &str| {
        md.u64(key)
            .and_then(|i| tokens.get(i as usize))
            .map(|s| Json::String(s.to_string()))
    };
    let mut o = serde_json::Map::new();
    for (key, name) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.unknown_token_id", "unk_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
    ] {
        if let Some(t) = tok(key) {
            o.insert(name.into(), t);
        }
    }
    for typ in ["bos", "eos", "sep"] {
        let flag = md.get(&format!("tokenizer.ggml.add_{typ}_token"));
        if let Some(b) = flag.and_then(Value::as_bool) {
            o.insert(format!("add_{typ}_token"), b.into());
        }
    }
    if let Some(t) = md.str("tokenizer.chat_template") {
        o.insert("chat_template".into(), t.into());
    }
    o.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    o.insert(
        "model_max_length".into(),
        json!(1_000_000_000_000_000_019_884_624_838_656u128 as f64),
    );
    Json::Object(o)
}

pub(crate) fn string_array(path: &Path, md: &Metadata, key: &str) -> Result<Vec<String>> {
    md.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::format(path, format!("no {key}")))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::format(path, format!("{key} holds a non-string")))
        })
        .collect()
}

/// kiln's tokenizer: text ↔ token ids, built from GGUF metadata or a checkpoint directory.
pub struct Tokenizer {
    inner: Inner,
    /// Prepend BOS when encoding (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// BOS id.
    pub bos: Option<u32>,
    /// EOS id.
    pub eos: Option<u32>,
}

enum Inner {
    Bpe(Box<tokenizers::Tokenizer>),
    Spm(Box<spm::SpmVocab>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field(
                "kind",
                &match self.inner {
                    Inner::Bpe(_) => "bpe",
                    Inner::Spm(_) => "spm",
                },
            )
            .field("add_bos", &self.add_bos)
            .field("bos", &self.bos)
            .finish()
    }
}

impl Tokenizer {
    /// From GGUF metadata.
    pub fn from_gguf(path: &Path, md: &Metadata) -> Result<Self> {
        if md.str("tokenizer.ggml.model") == Some("llama") {
            let v = spm::SpmVocab::from_gguf(path, md)?;
            return Ok(Tokenizer {
                add_bos: v.add_bos,
                bos: v.bos,
                eos: v.eos,
                inner: Inner::Spm(Box::new(v)),
            });
        }
        let j = tokenizer_json_from_gguf(path, md)?;
        let inner = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&j).expect("json"))
            .map_err(|e| Error::format(path, format!("tokenizer metadata does not load: {e}")))?;
        Ok(Tokenizer {
            inner: Inner::Bpe(Box::new(inner)),
            add_bos: md
                .get("tokenizer.ggml.add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos: md.u64("tokenizer.ggml.bos_token_id").map(|v| v as u32),
            eos: md.u64("tokenizer.ggml.eos_token_id").map(|v| v as u32),
        })
    }

    /// From a checkpoint directory of `c`'s model (via the GGUF metadata kiln would write for
    /// it, so both paths tokenize identically). A byte-level BPE tokenizer whose pre-tokenizer
    /// llama.cpp cannot name (and none is given) runs as its tokenizer.json says — Hugging
    /// Face's own semantics; only writing a GGUF needs the name.
    pub fn from_hf_dir(dir: &Path, c: &ModelConfig, pre_override: Option<&str>) -> Result<Self> {
        let mut c = c.clone();
        // Special ids come from the tokenizer files, as for a GGUF written from them.
        c.bos_token_id = None;
        c.eos_token_id = None;
        let path = dir.join("tokenizer.json");
        match tokenizer_metadata(dir, &c, pre_override) {
            Ok(md) => Self::from_gguf(&path, &md),
            Err(Error::Unsupported { .. })
                if pre_override.is_none() && !sentencepiece::is_sentencepiece(dir) =>
            {
                let md = tokenizer_metadata(dir, &c, Some("gpt-2"))?;
                let mut t = Self::from_gguf(&path, &md)?;
                let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| {
                    Error::format(&path, format!("the tokenizers library cannot load it: {e}"))
                })?;
                t.inner = Inner::Bpe(Box::new(inner));
                Ok(t)
            }
            Err(e) => Err(e),
        }
    }

    /// Token ids of `text` (BOS first when the model asks for it), as llama.cpp's
    /// perplexity tool tokenizes: byte-level BPE matches added-token text as those tokens;
    /// SentencePiece splits out user-defined tokens but reads control-token text as text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        match &self.inner {
            Inner::Spm(v) => v.encode(text, true, false),
            Inner::Bpe(t) => {
                let enc = t.encode(text, false).map_err(|e| e.to_string())?;
                let mut ids = Vec::with_capacity(enc.len() + 1);
                if self.add_bos {
                    if let Some(b) = self.bos {
                        ids.push(b);
                    }
                }
                ids.extend_from_slice(enc.get_ids());
                Ok(ids)
            }
        }
    }

    /// Token ids of `text` with llama.cpp's `parse_special` choice (SentencePiece only makes
    /// a difference: control-token text becomes those tokens when true), BOS/EOS as the model
    /// asks when `add_special`.
    pub fn encode_with(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, String> {
        match &self.inner {
            Inner::Spm(v) => v.encode(text, add_special, parse_special),
            Inner::Bpe(_) => {
                let mut ids = self.encode(text)?;
                if !add_special && self.add_bos && self.bos.is_some() {
                    ids.remove(0);
                }
                Ok(ids)
            }
        }
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        match &self.inner {
            Inner::Spm(v) => Ok(v.decode(ids)),
            Inner::Bpe(t) => t.decode(ids, false).map_err(|e| e.to_string()),
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Spm(v) => v.len(),
            Inner::Bpe(t) => t.get_vocab_size(true),
        }
    }
}
