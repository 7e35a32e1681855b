//! SentencePiece tokenizers between Hugging Face checkpoints and GGUF
//! (`tokenizer.ggml.model = llama`).
//!
//! Ingestion ports `convert_hf_to_gguf.py`: `_create_vocab_sentencepiece` (tokens, scores and
//! types from `tokenizer.model`, then `added_tokens.json` and tokenizer_config.json's
//! `added_tokens_decoder`), gguf-py's `SpecialVocab` (special token ids, add-BOS/EOS/SEP
//! flags, chat template) and the families' extras (Gemma 3 writes `add_space_prefix = false`,
//! Llama copies tokenizer_config's `add_prefix_space`).
//!
//! A checkpoint with only a SentencePiece-kind `tokenizer.json` (BPE with byte fallback, or
//! Unigram, and the `▁` convention) is read from it. There llama.cpp's converter
//! (`LlamaHfVocab`) writes every score as −1000, which leaves llama.cpp's tokenizer merging
//! pieces left to right instead of in the model's order; kiln writes each merged piece's
//! score as minus the rank of the first merge that forms it (Unigram: the piece's own score),
//! so llama.cpp merges in Hugging Face's order.
//!
//! Export writes the three files that bring back the same metadata: `tokenizer.model` (pieces,
//! scores, types), `tokenizer_config.json` (the added tokens with llama.cpp's types, special
//! tokens, flags, chat template) and a `tokenizer.json` for Hugging Face's fast tokenizer
//! (BPE with byte fallback, merges from the scores as transformers' `SentencePieceExtractor`
//! orders them).

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value as Json};

use super::sp_model::{piece_type, ModelProto, NormalizerSpec, SentencePiece, TrainerSpec};
use super::{looks_special, string_array, token_type};
use crate::arch::Arch;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value, ValueType};

/// True when a checkpoint's tokenizer is SentencePiece's: a `tokenizer.model`, or a
/// `tokenizer.json` whose model is Unigram, or BPE with byte fallback and no byte-level
/// pre-tokenizer.
pub fn is_sentencepiece(dir: &Path) -> bool {
    // Phi-4's converter goes by the class (`Phi3MiniModel.set_vocab`): GPT-2's is byte-level.
    let class = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Json>(&t).ok())
        .and_then(|t| t["tokenizer_class"].as_str().map(str::to_string));
    if class.as_deref() == Some("GPT2Tokenizer") {
        return false;
    }
    if dir.join("tokenizer.model").is_file() {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(dir.join("tokenizer.json")) else {
        return false;
    };
    let Ok(tj) = serde_json::from_str::<Json>(&text) else {
        return false;
    };
    match tj["model"]["type"].as_str() {
        Some("Unigram") => true,
        Some("BPE") => tj["model"]["byte_fallback"] == true && !super::is_byte_level(&tj),
        _ => false,
    }
}

/// Tokens, scores and llama.cpp token types.
struct Vocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

impl Vocab {
    /// An added token as the converter records one: control when special (or when it looks
    /// special), else user-defined with its `▁` pre-normalized to spaces; score −1000.
    fn added(&mut self, id: usize, content: &str, special: bool) {
        if special || looks_special(content) {
            self.types[id] = token_type::CONTROL;
            self.tokens[id] = content.to_string();
        } else {
            self.types[id] = token_type::USER_DEFINED;
            self.tokens[id] = content.replace('▁', " ");
        }
        self.scores[id] = -1000.0;
    }
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| Error::format(path, format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `_create_vocab_sentencepiece` on `tokenizer.model`.
fn vocab_from_model(dir: &Path, vocab_size: usize) -> Result<Vocab> {
    let mut v = pieces_from_model(dir, vocab_size)?;
    added_tokens(dir, &mut v)?;
    Ok(v)
}

/// `Phi3MiniModel.set_vocab` (llama.cpp's `conversion/phi.py`): the pieces of
/// `tokenizer.model`, then `added_tokens.json` (user-defined), tokenizer_config.json's
/// `added_tokens_decoder` and tokenizer.json's `added_tokens` — each content as written,
/// control when marked special, else user-defined, score −1000.
fn vocab_phi3(dir: &Path, vocab_size: usize) -> Result<Vocab> {
    let mut v = pieces_from_model(dir, vocab_size)?;
    added_tokens_json(dir, &mut v)?;
    let mut put = |path: &Path, id: Option<u64>, data: &Json| -> Result<()> {
        let (Some(id), Some(content)) = (id.map(|i| i as usize), data["content"].as_str()) else {
            return Err(Error::format(path, format!("malformed added token {data}")));
        };
        if id >= vocab_size {
            return Err(Error::format(
                path,
                format!("added token {id} ({content:?}) is outside the model's vocabulary of {vocab_size}"),
            ));
        }
        v.tokens[id] = content.to_string();
        v.scores[id] = -1000.0;
        v.types[id] = if data["special"].as_bool().unwrap_or(false) {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        Ok(())
    };
    let tc_path = dir.join("tokenizer_config.json");
    if let Some(tc) = read_json(&tc_path)? {
        if let Some(dec) = tc["added_tokens_decoder"].as_object() {
            for (id, data) in dec {
                put(&tc_path, id.parse().ok(), data)?;
            }
        }
    }
    let tj_path = dir.join("tokenizer.json");
    if let Some(tj) = read_json(&tj_path)? {
        for a in tj["added_tokens"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or(&[])
        {
            put(&tj_path, a["id"].as_u64(), a)?;
        }
    }
    Ok(v)
}

/// The pieces of `tokenizer.model` with their scores and types, padded to `vocab_size` with
/// `[PAD{i}]` (unused, score −10000), as both converters start.
fn pieces_from_model(dir: &Path, vocab_size: usize) -> Result<Vocab> {
    let path = dir.join("tokenizer.model");
    let m = ModelProto::read(&path)?;
    let mut v = Vocab {
        tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; vocab_size],
        types: vec![token_type::UNUSED; vocab_size],
    };
    for id in 0..m.pieces.len().min(vocab_size) {
        v.tokens[id] = m.piece(id).to_string();
        v.scores[id] = m.score(id);
        // Note: USER_DEFINED pieces become NORMAL here, as in the converter; the added
        // tokens below restore the type of those Hugging Face lists.
        v.types[id] = match m.piece_type(id) {
            piece_type::UNKNOWN => token_type::UNKNOWN,
            piece_type::CONTROL => token_type::CONTROL,
            piece_type::UNUSED => token_type::UNUSED,
            piece_type::BYTE => token_type::BYTE,
            _ => token_type::NORMAL,
        };
    }
    Ok(v)
}

/// `added_tokens.json`: user-defined tokens, score −1000 (both converters skip ids past the
/// vocabulary here).
fn added_tokens_json(dir: &Path, v: &mut Vocab) -> Result<()> {
    let n = v.tokens.len();
    let at_path = dir.join("added_tokens.json");
    if let Some(at) = read_json(&at_path)? {
        let obj = at
            .as_object()
            .ok_or_else(|| Error::format(&at_path, "not a JSON object"))?;
        for (text, id) in obj {
            let Some(id) = id.as_u64().map(|i| i as usize).filter(|&i| i < n) else {
                continue;
            };
            v.tokens[id] = text.clone();
            v.scores[id] = -1000.0;
            v.types[id] = token_type::USER_DEFINED;
        }
    }
    Ok(())
}

/// `added_tokens.json` and tokenizer_config.json's `added_tokens_decoder`.
fn added_tokens(dir: &Path, v: &mut Vocab) -> Result<()> {
    let n = v.tokens.len();
    added_tokens_json(dir, v)?;
    let tc_path = dir.join("tokenizer_config.json");
    if let Some(tc) = read_json(&tc_path)? {
        if let Some(dec) = tc["added_tokens_decoder"].as_object() {
            for (id, data) in dec {
                let Some(id) = id.parse::<usize>().ok().filter(|&i| i < n) else {
                    continue;
                };
                let Some(content) = data["content"].as_str() else {
                    return Err(Error::format(
                        &tc_path,
                        format!("added_tokens_decoder[{id}] has no content"),
                    ));
                };
                v.added(id, content, data["special"].as_bool().unwrap_or(false));
            }
        }
    }
    Ok(())
}

/// The vocabulary of a SentencePiece-kind `tokenizer.json` (no `tokenizer.model`).
fn vocab_from_json(dir: &Path, vocab_size: usize) -> Result<Vocab> {
    let path = dir.join("tokenizer.json");
    let tj = read_json(&path)?.ok_or_else(|| Error::format(&path, "missing"))?;
    let model = &tj["model"];
    let mut v = Vocab {
        tokens: (0..vocab_size).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; vocab_size],
        types: vec![token_type::UNUSED; vocab_size],
    };
    let mut set = |id: usize, text: &str, score: f32| -> Result<()> {
        if id >= vocab_size {
            return Err(Error::format(
                &path,
                format!(
                    "token id {id} ({text:?}) is outside the model's vocabulary of {vocab_size}"
                ),
            ));
        }
        v.tokens[id] = text.to_string();
        v.scores[id] = score;
        v.types[id] = if is_byte_token(text) {
            token_type::BYTE
        } else {
            token_type::NORMAL
        };
        Ok(())
    };
    match model["type"].as_str() {
        Some("Unigram") => {
            let list = model["vocab"]
                .as_array()
                .ok_or_else(|| Error::format(&path, "model.vocab is not a list"))?;
            for (id, e) in list.iter().enumerate() {
                let (Some(t), Some(s)) = (e[0].as_str(), e[1].as_f64()) else {
                    return Err(Error::format(&path, format!("model.vocab[{id}] is not [piece, score]")));
                };
                set(id, t, s as f32)?;
            }
            if let Some(u) = model["unk_id"].as_u64().map(|u| u as usize) {
                if u < vocab_size {
                    v.types[u] = token_type::UNKNOWN;
                }
            }
        }
        Some("BPE") => {
            let vocab = model["vocab"]
                .as_object()
                .ok_or_else(|| Error::format(&path, "model.vocab is not an object"))?;
            // Each merged piece scores minus the rank of its first merge; pieces no merge
            // forms score below every merge (llama.cpp joins them last).
            let mut first_rank: HashMap<String, usize> = HashMap::new();
            for (rank, m) in model["merges"].as_array().map(|a| a.as_slice()).unwrap_or(&[]).iter().enumerate() {
                let (a, b) = match m {
                    Json::String(s) => match s.split_once(' ') {
                        Some((a, b)) => (a.to_string(), b.to_string()),
                        None => return Err(Error::format(&path, format!("merge {rank} {s:?} is not a pair"))),
                    },
                    Json::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                        (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                        _ => return Err(Error::format(&path, format!("merge {rank} is not a pair of strings"))),
                    },
                    _ => return Err(Error::format(&path, format!("merge {rank} is not a pair"))),
                };
                first_rank.entry(a + &b).or_insert(rank);
            }
            for (t, id) in vocab {
                let id = id
                    .as_u64()
                    .ok_or_else(|| Error::format(&path, format!("vocab id of {t:?} is not a number")))?
                    as usize;
                let score = match first_rank.get(t) {
                    Some(&r) => -(r as f32),
                    None if t.chars().count() <= 1 || is_byte_token(t) => 0.0,
                    None => -1e9,
                };
                set(id, t, score)?;
            }
            if let Some(u) = model["unk_token"].as_str().and_then(|u| vocab.get(u)).and_then(|i| i.as_u64()) {
                if (u as usize) < vocab_size {
                    v.types[u as usize] = token_type::UNKNOWN;
                }
            }
        }
        other => {
            return Err(Error::unsupported(
                &path,
                format!("tokenizer model {other:?} is not a SentencePiece kind (BPE with byte fallback, Unigram)"),
            ))
        }
    }
    // tokenizer.json's own added tokens, then the config's (as `added_tokens_decoder`).
    if let Some(added) = tj["added_tokens"].as_array() {
        for a in added {
            let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
                return Err(Error::format(&path, format!("malformed added token {a}")));
            };
            let id = id as usize;
            if id >= vocab_size {
                return Err(Error::format(
                    &path,
                    format!("added token {id} ({content:?}) is outside the model's vocabulary of {vocab_size}"),
                ));
            }
            v.added(id, content, a["special"].as_bool().unwrap_or(false));
        }
    }
    added_tokens(dir, &mut v)?;
    Ok(v)
}

fn is_byte_token(t: &str) -> bool {
    t.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && t[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

/// gguf-py's `SpecialVocab` (no merges): special token ids in the order it finds them, the
/// add-special flags, the chat template.
pub(crate) struct SpecialVocab {
    pub ids: Vec<(&'static str, u32)>,
    pub add: Vec<(&'static str, bool)>,
    pub chat_template: Option<Json>,
}

const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

impl SpecialVocab {
    fn set(&mut self, typ: &'static str, id: Option<&Json>, n_vocab: usize) {
        let Some(id) = id.and_then(Json::as_i64) else {
            return;
        };
        if id >= 0 && (id as usize) < n_vocab && !self.ids.iter().any(|(t, _)| *t == typ) {
            self.ids.push((typ, id as u32));
        }
    }

    fn set_add(&mut self, typ: &'static str, v: bool, overwrite: bool) {
        match self.add.iter_mut().find(|(t, _)| *t == typ) {
            Some(e) if overwrite => e.1 = v,
            Some(_) => {}
            None => self.add.push((typ, v)),
        }
    }

    /// Reads tokenizer.json, tokenizer_config.json, chat templates and config.json of `dir`.
    pub fn load(dir: &Path, n_vocab: usize) -> Result<Self> {
        let mut sv = SpecialVocab {
            ids: Vec::new(),
            add: Vec::new(),
            chat_template: None,
        };
        let tj = read_json(&dir.join("tokenizer.json"))?;
        let mut tc = read_json(&dir.join("tokenizer_config.json"))?;
        let added: Vec<Json> = tj
            .as_ref()
            .and_then(|t| t["added_tokens"].as_array().cloned())
            .unwrap_or_default();
        let content_of = |e: &Json| -> Option<String> {
            match e {
                Json::String(s) => Some(s.clone()),
                Json::Object(o) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
                _ => None,
            }
        };
        if let Some(tj) = &tj {
            let tcv = |tc: &Option<Json>, k: &str| {
                tc.as_ref()
                    .and_then(|c| c.get(k))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let mut special_bos = tcv(&tc, "bos_token");
            let special_cls = tcv(&tc, "cls_token");
            let mut special_eos = tcv(&tc, "eos_token");
            let special_sep = tcv(&tc, "sep_token");
            if special_bos.is_none() && special_cls.is_some() {
                if let Some(c) = tc.as_mut().and_then(Json::as_object_mut) {
                    c.insert("bos_token".into(), special_cls.clone().into());
                    special_bos = special_cls.clone();
                }
            }
            if special_eos.is_none() && special_sep.is_some() {
                if let Some(c) = tc.as_mut().and_then(Json::as_object_mut) {
                    c.insert("eos_token".into(), special_sep.clone().into());
                    special_eos = special_sep.clone();
                }
            }
            if let Some(pp) = tj.get("post_processor").filter(|p| !p.is_null()) {
                let procs: Vec<Json> = pp["processors"]
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![pp.clone()]);
                for p in procs {
                    match p["type"].as_str() {
                        Some("ByteLevel") => {
                            sv.set_add("bos", false, false);
                            sv.set_add("eos", false, false);
                        }
                        Some("TemplateProcessing") => {
                            let single = p["single"].as_array().cloned().unwrap_or_default();
                            let id_of =
                                |e: &Json| e["SpecialToken"]["id"].as_str().map(str::to_string);
                            if single.len() > 1 {
                                if let Some(first) = single.first().and_then(id_of) {
                                    if tc.is_none() {
                                        special_bos = Some(first.clone());
                                    }
                                    let is = Some(&first) == special_bos.as_ref()
                                        || Some(&first) == special_cls.as_ref();
                                    sv.set_add("bos", is, true);
                                }
                                if let Some(last) = single.last().and_then(id_of) {
                                    if tc.is_none() {
                                        special_eos = Some(last.clone());
                                    }
                                    sv.set_add("eos", Some(&last) == special_eos.as_ref(), true);
                                }
                            }
                            // `A [sep] B` pair templates set add_sep (the common Gemma/Llama
                            // templates put BOS there, which leaves it false).
                            let pair = p["pair"].as_array().cloned().unwrap_or_default();
                            if !pair.is_empty() {
                                let first =
                                    single.first().and_then(id_of).filter(|_| single.len() > 1);
                                let last =
                                    single.last().and_then(id_of).filter(|_| single.len() > 1);
                                let start = usize::from(
                                    first.is_some() && pair.first().and_then(id_of) == first,
                                );
                                let stop = if last.is_some() && pair.last().and_then(id_of) == last
                                {
                                    pair.len() - 1
                                } else {
                                    pair.len()
                                };
                                let mid = if start < stop {
                                    &pair[start..stop]
                                } else {
                                    &[][..]
                                };
                                if mid.len() >= 2
                                    && mid[0]["Sequence"]["id"] == "A"
                                    && mid[mid.len() - 1]["Sequence"]["id"] == "B"
                                {
                                    let inner = &mid[1..mid.len() - 1];
                                    if !inner.is_empty() {
                                        let is_sep = |e: &Json| {
                                            let t = id_of(e);
                                            t.is_some() && (t == special_sep || t == special_eos)
                                        };
                                        let mut add_sep = is_sep(&inner[0]) && last.is_none();
                                        if inner.len() == 2 && is_sep(&inner[1]) {
                                            add_sep = true;
                                        }
                                        sv.set_add("sep", add_sep, true);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some(tc) = &tc {
            let jinja = dir.join("chat_template.jinja");
            let alt: Option<Json> = if jinja.is_file() {
                Some(Json::String(
                    std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?,
                ))
            } else {
                read_json(&dir.join("chat_template.json"))?
                    .and_then(|j| j.get("chat_template").cloned())
            };
            sv.chat_template = tc
                .get("chat_template")
                .cloned()
                .or(alt)
                .filter(|t| t.is_string() || t.is_array());
            for typ in SPECIAL_TYPES {
                if let Some(b) = tc.get(format!("add_{typ}_token")).and_then(Json::as_bool) {
                    sv.set_add(typ, b, false);
                }
                let Some(content) = tc.get(format!("{typ}_token")).and_then(content_of) else {
                    continue;
                };
                let id = added
                    .iter()
                    .find(|a| a["content"].as_str() == Some(content.as_str()))
                    .map(|a| a["id"].clone());
                sv.set(typ, id.as_ref(), n_vocab);
            }
        }
        if let Some(cfg) = read_json(&dir.join("config.json"))? {
            for typ in SPECIAL_TYPES {
                let key = format!("{typ}_token_id");
                let v = cfg
                    .get(&key)
                    .filter(|v| !v.is_null())
                    .or_else(|| cfg["text_config"].get(&key));
                sv.set(typ, v, n_vocab);
            }
        }
        Ok(sv)
    }

    /// Writes the keys `SpecialVocab.add_to_gguf` writes (types without a handler skipped).
    pub fn write(&self, md: &mut Metadata) {
        for (typ, id) in &self.ids {
            let key = match *typ {
                "bos" => "tokenizer.ggml.bos_token_id",
                "eos" => "tokenizer.ggml.eos_token_id",
                "unk" => "tokenizer.ggml.unknown_token_id",
                "sep" => "tokenizer.ggml.seperator_token_id",
                "pad" => "tokenizer.ggml.padding_token_id",
                "mask" => "tokenizer.ggml.mask_token_id",
                _ => continue,
            };
            md.set(key, Value::U32(*id));
        }
        for (typ, v) in &self.add {
            let key = match *typ {
                "bos" => "tokenizer.ggml.add_bos_token",
                "eos" => "tokenizer.ggml.add_eos_token",
                "sep" => "tokenizer.ggml.add_sep_token",
                _ => continue,
            };
            md.set(key, Value::Bool(*v));
        }
        match &self.chat_template {
            Some(Json::String(t)) => md.set("tokenizer.chat_template", Value::String(t.clone())),
            Some(Json::Array(list)) => {
                for e in list {
                    let (Some(name), Some(t)) = (e["name"].as_str(), e["template"].as_str()) else {
                        continue;
                    };
                    let key = if name == "default" {
                        "tokenizer.chat_template".to_string()
                    } else {
                        format!("tokenizer.chat_template.{name}")
                    };
                    md.set(key, Value::String(t.to_string()));
                }
            }
            _ => {}
        }
    }
}

/// The `tokenizer.ggml.*` metadata of a SentencePiece checkpoint, as
/// `_set_vocab_sentencepiece` writes it (with the family's extras).
pub fn hf_metadata(dir: &Path, c: &ModelConfig) -> Result<Metadata> {
    let v = if c.arch == Arch::Phi3 {
        // Phi3MiniModel needs the model file (a GPT2Tokenizer checkpoint is byte-level BPE).
        if !dir.join("tokenizer.model").is_file() {
            return Err(Error::format(
                &dir.join("tokenizer.model"),
                "missing (Phi-3's SentencePiece vocabulary is read from it, as llama.cpp's converter does)",
            ));
        }
        vocab_phi3(dir, c.vocab_size)?
    } else if dir.join("tokenizer.model").is_file() {
        vocab_from_model(dir, c.vocab_size)?
    } else {
        vocab_from_json(dir, c.vocab_size)?
    };
    let mut md = Metadata::new();
    md.set("tokenizer.ggml.model", Value::String("llama".into()));
    md.set("tokenizer.ggml.pre", Value::String("default".into()));
    md.set(
        "tokenizer.ggml.tokens",
        Value::string_array(v.tokens.iter().cloned()),
    );
    md.set(
        "tokenizer.ggml.scores",
        Value::Array(
            ValueType::F32,
            v.scores.iter().map(|&s| Value::F32(s)).collect(),
        ),
    );
    md.set(
        "tokenizer.ggml.token_type",
        Value::Array(
            ValueType::I32,
            v.types.iter().map(|&t| Value::I32(t)).collect(),
        ),
    );
    SpecialVocab::load(dir, v.tokens.len())?.write(&mut md);
    match c.arch {
        Arch::Gemma3 => md.set("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        // Phi3MiniModel writes no add_space_prefix.
        Arch::Phi3 => {}
        _ => {
            let tc = read_json(&dir.join("tokenizer_config.json"))?;
            if let Some(b) = tc.as_ref().and_then(|t| t["add_prefix_space"].as_bool()) {
                md.set("tokenizer.ggml.add_space_prefix", Value::Bool(b));
            }
        }
    }
    Ok(md)
}

/// The files that carry a GGUF's SentencePiece tokenizer back to a Hugging Face directory.
pub struct ExportFiles {
    /// `tokenizer.model`.
    pub model: Vec<u8>,
    /// `tokenizer.json`.
    pub tokenizer_json: Json,
    /// `tokenizer_config.json`.
    pub tokenizer_config: Json,
    /// Tokens whose exact metadata the files cannot carry back (named for a warning).
    pub lossy: Vec<String>,
}

/// Builds the export files from GGUF tokenizer metadata (`path` names the GGUF in errors).
pub fn export_files(path: &Path, md: &Metadata) -> Result<ExportFiles> {
    let tokens = string_array(path, md, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    let nums = |key: &str| {
        md.get(key)
            .and_then(Value::as_array)
            .filter(|a| a.len() >= n)
    };
    let scores: Vec<f32> = nums("tokenizer.ggml.scores")
        .map(|a| {
            a.iter()
                .take(n)
                .map(|v| v.as_f64().unwrap_or(0.0) as f32)
                .collect()
        })
        .unwrap_or_else(|| vec![0.0; n]);
    let types: Vec<i32> = nums("tokenizer.ggml.token_type")
        .map(|a| {
            a.iter()
                .take(n)
                .map(|v| {
                    if let Value::I32(t) = v {
                        *t
                    } else {
                        token_type::NORMAL
                    }
                })
                .collect()
        })
        .unwrap_or_else(|| vec![token_type::NORMAL; n]);
    let id_key = |k: &str| md.u64(k).map(|v| v as usize).filter(|&v| v < n);
    let unk = id_key("tokenizer.ggml.unknown_token_id");
    let bos = id_key("tokenizer.ggml.bos_token_id");
    let eos = id_key("tokenizer.ggml.eos_token_id");
    let pad = id_key("tokenizer.ggml.padding_token_id");
    let flag = |k: &str| md.get(k).and_then(Value::as_bool);
    let add_space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
    let mut lossy = Vec::new();
    let mut pieces = Vec::with_capacity(n);
    let mut decoder = serde_json::Map::new();
    let mut added = Vec::new();
    for i in 0..n {
        let (t, s, ty) = (&tokens[i], scores[i], types[i]);
        // In the protobuf: the piece as SentencePiece stores it (user-defined spaces as ▁).
        let (piece, sp_type) = match ty {
            token_type::BYTE => (t.clone(), piece_type::BYTE),
            token_type::UNUSED => (t.clone(), piece_type::UNUSED),
            token_type::UNKNOWN => (t.clone(), piece_type::UNKNOWN),
            token_type::CONTROL if Some(i) == unk => (t.clone(), piece_type::UNKNOWN),
            token_type::CONTROL => (t.clone(), piece_type::CONTROL),
            token_type::USER_DEFINED => (t.replace(' ', "▁"), piece_type::USER_DEFINED),
            _ => (t.clone(), piece_type::NORMAL),
        };
        pieces.push(SentencePiece {
            piece: Some(piece),
            score: Some(s),
            r#type: Some(sp_type),
        });
        // tokenizer.json lists every control, unknown and user-defined token (Hugging Face
        // needs them, and SpecialVocab finds the special ids there); tokenizer_config.json's
        // `added_tokens_decoder` lists those the converter gave −1000 and its types, so they
        // come back the same.
        let special = matches!(ty, token_type::CONTROL | token_type::UNKNOWN);
        if special || ty == token_type::USER_DEFINED {
            added.push(json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": special}));
        }
        let listed = matches!(ty, token_type::CONTROL | token_type::USER_DEFINED) && s == -1000.0;
        if listed {
            let special = ty == token_type::CONTROL;
            if !special && looks_special(t) {
                lossy.push(format!("{i} {t:?} (user-defined, but reads as special)"));
            }
            decoder.insert(
                i.to_string(),
                json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": special}),
            );
        } else if ty == token_type::USER_DEFINED {
            lossy.push(format!("{i} {t:?} (user-defined with score {s})"));
        } else if ty == token_type::CONTROL && Some(i) == unk {
            lossy.push(format!(
                "{i} {t:?} (the unknown token as a control token with score {s})"
            ));
        }
    }
    let model = ModelProto {
        pieces,
        trainer_spec: Some(TrainerSpec {
            model_type: Some(2),
            vocab_size: Some(n as i32),
            byte_fallback: Some(types.contains(&token_type::BYTE)),
            unk_id: Some(unk.map_or(-1, |u| u as i32)),
            bos_id: Some(bos.map_or(-1, |u| u as i32)),
            eos_id: Some(eos.map_or(-1, |u| u as i32)),
            pad_id: Some(pad.map_or(-1, |u| u as i32)),
        }),
        normalizer_spec: Some(NormalizerSpec {
            name: Some("identity".into()),
            add_dummy_prefix: Some(add_space_prefix),
            remove_extra_whitespaces: Some(false),
            escape_whitespaces: Some(true),
        }),
    };
    // tokenizer_config.json.
    let mut tc = serde_json::Map::new();
    let name = |i: Option<usize>| i.map(|i| Json::String(tokens[i].clone()));
    for (k, v) in [
        ("bos_token", name(bos)),
        ("eos_token", name(eos)),
        ("unk_token", name(unk)),
        ("pad_token", name(pad)),
    ] {
        if let Some(v) = v {
            tc.insert(k.into(), v);
        }
    }
    for (k, key) in [
        ("add_bos_token", "tokenizer.ggml.add_bos_token"),
        ("add_eos_token", "tokenizer.ggml.add_eos_token"),
        ("add_sep_token", "tokenizer.ggml.add_sep_token"),
    ] {
        if let Some(b) = flag(key) {
            tc.insert(k.into(), b.into());
        }
    }
    tc.insert("add_prefix_space".into(), add_space_prefix.into());
    if let Some(t) = md.str("tokenizer.chat_template") {
        tc.insert("chat_template".into(), t.into());
    }
    tc.insert("added_tokens_decoder".into(), Json::Object(decoder));
    tc.insert("tokenizer_class".into(), "GemmaTokenizer".into());
    tc.insert(
        "model_max_length".into(),
        json!(1_000_000_000_000_000_019_884_624_838_656u128 as f64),
    );
    tc.insert("sp_model_kwargs".into(), json!({}));
    tc.insert("spaces_between_special_tokens".into(), false.into());
    // tokenizer.json: BPE over the normal pieces with byte fallback; merges are every split
    // of a piece into two pieces, ordered by the merged piece's score (highest first), then
    // by the two halves' ids (transformers' `SentencePieceExtractor`).
    let mut vocab = serde_json::Map::new();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        if types[i] == token_type::UNUSED && t.starts_with("[PAD") {
            continue;
        }
        vocab.insert(t.clone(), json!(i));
        if types[i] == token_type::NORMAL {
            index.insert(t.as_str(), i);
        }
    }
    let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
    for (t, &i) in &index {
        for (cut, _) in t.char_indices().skip(1) {
            let (l, r) = (&t[..cut], &t[cut..]);
            if let (Some(&li), Some(&ri)) = (index.get(l), index.get(r)) {
                merges.push((scores[i], i, li, ri));
            }
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    let merges: Vec<Json> = merges
        .iter()
        .map(|&(_, _, l, r)| json!([tokens[l], tokens[r]]))
        .collect();
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let post = match (flag("tokenizer.ggml.add_bos_token").unwrap_or(true), bos) {
        (true, Some(b)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": tokens[b], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": tokens[b], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": tokens[b], "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {tokens[b].clone(): {"id": tokens[b], "ids": [b], "tokens": [tokens[b]]}}
        }),
        _ => Json::Null,
    };
    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk.map(|u| tokens[u].clone()), "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    Ok(ExportFiles {
        model: model.to_bytes(),
        tokenizer_json,
        tokenizer_config: Json::Object(tc),
        lossy,
    })
}
