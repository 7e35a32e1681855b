//! llama.cpp's SentencePiece-style tokenizer (`tokenizer.ggml.model = llama`,
//! `LLAMA_VOCAB_TYPE_SPM`), ported from `src/llama-vocab.cpp` so that kiln's token ids are
//! llama.cpp's:
//!
//! * the vocabulary as `llama_vocab::impl::load` builds it — token attributes from the GGUF
//!   token types, the control-looking-token overrides (`<end_of_turn>`, `</s>`, FIM tokens …),
//!   the special-token cache (control, user-defined and unknown tokens, longest first);
//! * `tokenizer_st_partition`: the text split at every occurrence of a cached token
//!   (user-defined tokens always; control and unknown ones only when parsing specials), with
//!   the LSTRIP / RSTRIP attributes;
//! * `llama_vocab::impl::tokenize`'s SPM branch: BOS, a space prefix after a special token
//!   when `add_space_prefix`, spaces escaped to `▁`, then `llm_tokenizer_spm_session` on each
//!   text fragment — UTF-8 characters merged pairwise, highest-scoring vocabulary bigram
//!   first (ties: leftmost), symbols that are not tokens resegmented through their merges or
//!   emitted as `<0xXX>` byte tokens — and EOS when `add_eos`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::{Metadata, Value};

/// llama.cpp's token attributes (`llama_token_attr`).
pub mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// The attribute of a GGUF token type (`LLAMA_TOKEN_TYPE_*` → `LLAMA_TOKEN_ATTR_*`).
fn attr_of_type(t: i32) -> u32 {
    match t {
        2 => attr::UNKNOWN,
        5 => attr::UNUSED,
        1 => attr::NORMAL,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        6 => attr::BYTE,
        _ => 0,
    }
}

/// Token texts llama.cpp's loader makes control tokens whatever their type (its EOT, EOM,
/// FIM and end-of-generation detection by text); the FIM and EOT/EOM ones only when the
/// metadata does not name that token.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// (metadata key naming the token, texts llama.cpp looks for when it is absent).
const DETECTED: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.eot_token_id",
        &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ],
    ),
    ("tokenizer.ggml.eom_token_id", &["<|eom_id|>"]),
    (
        "tokenizer.ggml.fim_pre_token_id",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

/// A SentencePiece-style vocabulary as llama.cpp loads it.
#[derive(Debug, Clone)]
pub struct SpmVocab {
    tokens: Vec<Box<[u8]>>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    to_id: HashMap<Box<[u8]>, u32>,
    /// Control, user-defined and unknown tokens, longest text first.
    special: Vec<u32>,
    /// `<0xXX>` (or the byte itself) for each byte value.
    bytes: [Option<u32>; 256],
    /// Prefix a space to text that starts the input or follows a special token.
    pub add_space_prefix: bool,
    /// Prepend BOS / append EOS when asked for special tokens.
    pub add_bos: bool,
    pub add_eos: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

enum Fragment {
    Text(usize, usize),
    Token(u32),
}

fn is_space(b: u8) -> bool {
    // C's isspace in the "C" locale.
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

impl SpmVocab {
    /// From GGUF metadata (`path` names the file in errors).
    pub fn from_gguf(path: &Path, md: &Metadata) -> Result<Self> {
        let toks = md
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::format(path, "no tokenizer.ggml.tokens"))?;
        let n = toks.len();
        if n == 0 {
            return Err(Error::format(path, "tokenizer.ggml.tokens is empty"));
        }
        let number_array = |key: &str| -> Option<&[Value]> {
            md.get(key)
                .and_then(Value::as_array)
                .filter(|a| a.len() >= n)
        };
        let scores: Vec<f32> = match number_array("tokenizer.ggml.scores") {
            Some(a) => a
                .iter()
                .take(n)
                .map(|v| v.as_f64().unwrap_or(0.0) as f32)
                .collect(),
            None => vec![0.0; n],
        };
        let mut attrs: Vec<u32> = match number_array("tokenizer.ggml.token_type") {
            Some(a) => a
                .iter()
                .take(n)
                .map(|v| match v {
                    Value::I32(t) => attr_of_type(*t),
                    _ => 0,
                })
                .collect(),
            None => vec![attr::NORMAL; n],
        };
        let mut tokens = Vec::with_capacity(n);
        let mut to_id: HashMap<Box<[u8]>, u32> = HashMap::with_capacity(n);
        for (i, t) in toks.iter().enumerate() {
            let s = t.as_str().ok_or_else(|| {
                Error::format(path, format!("tokenizer.ggml.tokens[{i}] is not a string"))
            })?;
            // llama.cpp renames empty tokens rather than let them match everywhere.
            let text: Box<[u8]> = if s.is_empty() {
                format!("[EMPTY_{i}]").into_bytes().into()
            } else {
                s.as_bytes().into()
            };
            if let Some(prev) = to_id.insert(text.clone(), i as u32) {
                return Err(Error::format(
                    path,
                    format!("tokenizer.ggml.tokens[{i}] {s:?} repeats token {prev} (llama.cpp refuses such a vocabulary)"),
                ));
            }
            tokens.push(text);
        }
        // Control-looking tokens (`llama_vocab::impl::load`'s detection by text).
        let mut make_control = |text: &str| {
            if let Some(&id) = to_id.get(text.as_bytes()) {
                attrs[id as usize] |= attr::CONTROL;
            }
        };
        for (key, texts) in DETECTED {
            if md.get(key).is_none() {
                // llama.cpp takes the first match in its hash map's order; every text of the
                // list that exists becomes a candidate, and only one is named — but each
                // candidate found first is made control. With one such token per vocabulary
                // (the normal case) the order does not matter.
                if let Some(t) = texts.iter().find(|t| to_id.contains_key(t.as_bytes())) {
                    make_control(t);
                }
            }
        }
        for t in EOG_TEXTS {
            make_control(t);
        }
        // gemma4 / plamo keep `</s>` a normal token when they have their own end marker.
        let has_marker = ["<|tool_response>", "<|plamo:eos|>"]
            .iter()
            .any(|t| to_id.contains_key(t.as_bytes()));
        if has_marker {
            if let Some(&id) = to_id.get(b"</s>".as_slice()) {
                attrs[id as usize] = attr::NORMAL;
            }
        }
        let mut special: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        // Longest first. llama.cpp's std::sort leaves equal lengths in an unspecified order;
        // equal-length tokens can only compete where they overlap in the text, which a
        // stable order resolves the same way every time.
        special.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
        // Per-model attributes llama.cpp sets by name.
        let name = md.str("general.name").unwrap_or("").to_lowercase();
        if name.contains("phi-3") || name.contains("phi3") {
            for &id in &special {
                attrs[id as usize] |= attr::RSTRIP;
            }
            if let Some(&id) = to_id.get(b"</s>".as_slice()) {
                attrs[id as usize] |= attr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(&id) = to_id.get(t.as_bytes()) {
                    attrs[id as usize] &= !attr::RSTRIP;
                }
            }
        }
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            *slot = to_id
                .get(hex.as_bytes())
                .or_else(|| to_id.get([b as u8].as_slice()))
                .copied();
        }
        let flag =
            |key: &str, default: bool| md.get(key).and_then(Value::as_bool).unwrap_or(default);
        let id = |key: &str, default: Option<u32>| match md.u64(key) {
            Some(v) if (v as usize) < n => Some(v as u32),
            Some(_) => None,
            None => default.filter(|&d| (d as usize) < n),
        };
        Ok(SpmVocab {
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
            add_bos: flag("tokenizer.ggml.add_bos_token", true),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
            // llama.cpp's SPM defaults: unk 0, bos 1, eos 2.
            bos: id("tokenizer.ggml.bos_token_id", Some(1)),
            eos: id("tokenizer.ggml.eos_token_id", Some(2)),
            tokens,
            scores,
            attrs,
            to_id,
            special,
            bytes,
        })
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True for an empty vocabulary (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Token ids of `text`, as `llama_tokenize(vocab, text, add_special, parse_special)`.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> std::result::Result<Vec<u32>, String> {
        let raw = text.as_bytes();
        let mut frags = Vec::new();
        if !raw.is_empty() {
            frags.push(Fragment::Text(0, raw.len()));
            self.partition(raw, &mut frags, parse_special);
        }
        let mut out = Vec::with_capacity(raw.len() / 3 + 2);
        let mut prev_special = true;
        if add_special && self.add_bos {
            out.push(
                self.bos
                    .ok_or("the model adds BOS but names no BOS token")?,
            );
        }
        let mut buf = Vec::new();
        for f in &frags {
            match *f {
                Fragment::Text(off, len) => {
                    buf.clear();
                    if self.add_space_prefix && prev_special {
                        buf.extend_from_slice("▁".as_bytes());
                    }
                    for &b in &raw[off..off + len] {
                        if b == b' ' {
                            buf.extend_from_slice("▁".as_bytes());
                        } else {
                            buf.push(b);
                        }
                    }
                    self.session(&buf, &mut out)?;
                    prev_special = false;
                }
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
            }
        }
        if add_special && self.add_eos {
            out.push(
                self.eos
                    .ok_or("the model adds EOS but names no EOS token")?,
            );
        }
        Ok(out)
    }

    /// `tokenizer_st_partition`: splits text fragments at every occurrence of each cached
    /// special token, longest tokens first.
    fn partition(&self, raw: &[u8], frags: &mut Vec<Fragment>, parse_special: bool) {
        for &id in &self.special {
            let a = self.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let text = &self.tokens[id as usize];
            let finder = memchr::memmem::Finder::new(text);
            if !frags.iter().any(
                |f| matches!(*f, Fragment::Text(o, l) if finder.find(&raw[o..o + l]).is_some()),
            ) {
                continue;
            }
            let old = std::mem::take(frags);
            for f in old {
                let Fragment::Text(mut o, mut l) = f else {
                    frags.push(f);
                    continue;
                };
                loop {
                    let Some(m) = finder.find(&raw[o..o + l]).map(|i| o + i) else {
                        if l > 0 {
                            frags.push(Fragment::Text(o, l));
                        }
                        break;
                    };
                    let mut left = m - o;
                    if a & attr::LSTRIP != 0 {
                        while left > 0 && is_space(raw[o + left - 1]) {
                            left -= 1;
                        }
                    }
                    if left > 0 {
                        frags.push(Fragment::Text(o, left));
                    }
                    frags.push(Fragment::Token(id));
                    let (mut ro, end) = (m + text.len(), o + l);
                    if ro >= end {
                        break;
                    }
                    if a & attr::RSTRIP != 0 {
                        while ro < end && is_space(raw[ro]) {
                            ro += 1;
                        }
                    }
                    o = ro;
                    l = end - ro;
                }
            }
        }
    }

    /// `llm_tokenizer_spm_session::tokenize` on one escaped fragment.
    fn session(&self, text: &[u8], out: &mut Vec<u32>) -> std::result::Result<(), String> {
        #[derive(Clone, Copy)]
        struct Sym {
            start: usize,
            n: usize,
            prev: i64,
            next: i64,
        }
        #[derive(PartialEq)]
        struct Bigram {
            score: f32,
            left: i64,
            right: i64,
            size: usize,
        }
        impl Eq for Bigram {}
        impl Ord for Bigram {
            // The top of llama.cpp's queue: the highest score, then the leftmost pair.
            fn cmp(&self, o: &Self) -> Ordering {
                self.score
                    .total_cmp(&o.score)
                    .then_with(|| o.left.cmp(&self.left))
            }
        }
        impl PartialOrd for Bigram {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        // Split into UTF-8 characters (`unicode_len_utf8`: the length a lead byte announces,
        // cut at the end of the text).
        let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
        let mut off = 0;
        while off < text.len() {
            let len = match text[off] >> 4 {
                0xC | 0xD => 2,
                0xE => 3,
                0xF => 4,
                _ => 1,
            }
            .min(text.len() - off);
            let i = syms.len() as i64;
            syms.push(Sym {
                start: off,
                n: len,
                prev: i - 1,
                next: if off + len == text.len() { -1 } else { i + 1 },
            });
            off += len;
        }
        let mut queue: BinaryHeap<Bigram> = BinaryHeap::new();
        let mut rev_merge: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        let try_add = |syms: &[Sym],
                       queue: &mut BinaryHeap<Bigram>,
                       rev: &mut HashMap<Vec<u8>, (i64, i64)>,
                       left: i64,
                       right: i64| {
            if left < 0 || right < 0 {
                return;
            }
            let (l, r) = (syms[left as usize], syms[right as usize]);
            let t = &text[l.start..l.start + l.n + r.n];
            let Some(&id) = self.to_id.get(t) else {
                return;
            };
            queue.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                size: t.len(),
            });
            rev.insert(t.to_vec(), (left, right));
        };
        for i in 1..syms.len() as i64 {
            try_add(&syms, &mut queue, &mut rev_merge, i - 1, i);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (syms[b.left as usize], syms[b.right as usize]);
            if l.n == 0 || r.n == 0 || l.n + r.n != b.size {
                continue;
            }
            syms[b.left as usize].n += r.n;
            syms[b.right as usize].n = 0;
            syms[b.left as usize].next = r.next;
            if r.next >= 0 {
                syms[r.next as usize].prev = b.left;
            }
            let prev = syms[b.left as usize].prev;
            let next = syms[b.left as usize].next;
            try_add(&syms, &mut queue, &mut rev_merge, prev, b.left);
            try_add(&syms, &mut queue, &mut rev_merge, b.left, next);
        }
        fn reseg(
            v: &SpmVocab,
            text: &[u8],
            syms: &[Sym],
            rev: &HashMap<Vec<u8>, (i64, i64)>,
            s: Sym,
            out: &mut Vec<u32>,
        ) -> std::result::Result<(), String> {
            let t = &text[s.start..s.start + s.n];
            if let Some(&id) = v.to_id.get(t) {
                out.push(id);
                return Ok(());
            }
            match rev.get(t) {
                Some(&(a, b)) => {
                    reseg(v, text, syms, rev, syms[a as usize], out)?;
                    reseg(v, text, syms, rev, syms[b as usize], out)
                }
                None => {
                    for &byte in t {
                        out.push(v.bytes[byte as usize].ok_or_else(|| {
                            format!("no token for byte 0x{byte:02X} (the vocabulary has no <0x{byte:02X}>)")
                        })?);
                    }
                    Ok(())
                }
            }
        }
        if !syms.is_empty() {
            let mut i = 0i64;
            while i != -1 {
                let s = syms[i as usize];
                reseg(self, text, &syms, &rev_merge, s, out)?;
                i = s.next;
            }
        }
        Ok(())
    }

    /// The text of `ids` (`token_to_piece` without special tokens, concatenated): `▁` back to
    /// spaces, byte tokens as their bytes, control and unknown tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out: Vec<u8> = Vec::new();
        for &id in ids {
            let Some(t) = self.tokens.get(id as usize) else {
                continue;
            };
            let a = self.attrs[id as usize];
            if a & (attr::UNKNOWN | attr::CONTROL) != 0 {
                continue;
            }
            if a & attr::USER_DEFINED != 0 {
                out.extend_from_slice(t);
            } else if a & attr::NORMAL != 0 {
                let s = String::from_utf8_lossy(t).replace('▁', " ");
                out.extend_from_slice(s.as_bytes());
            } else if a & attr::BYTE != 0 {
                // `<0xXX>`
                if let Some(b) = std::str::from_utf8(&t[3..t.len().saturating_sub(1).max(3)])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(b);
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::ValueType;

    fn vocab(tokens: &[(&str, f32, i32)], extra: &[(&str, Value)]) -> SpmVocab {
        let mut md = Metadata::new();
        md.set(
            "tokenizer.ggml.tokens",
            Value::string_array(tokens.iter().map(|t| t.0.to_string())),
        );
        md.set(
            "tokenizer.ggml.scores",
            Value::Array(
                ValueType::F32,
                tokens.iter().map(|t| Value::F32(t.1)).collect(),
            ),
        );
        md.set(
            "tokenizer.ggml.token_type",
            Value::Array(
                ValueType::I32,
                tokens.iter().map(|t| Value::I32(t.2)).collect(),
            ),
        );
        for (k, v) in extra {
            md.set(*k, v.clone());
        }
        SpmVocab::from_gguf(Path::new("t.gguf"), &md).unwrap()
    }

    fn base() -> Vec<(&'static str, f32, i32)> {
        let mut t = vec![("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)];
        t.extend([
            ("▁", -1.0, 1),
            ("a", -2.0, 1),
            ("b", -3.0, 1),
            ("c", -4.0, 1),
            ("ab", -5.0, 1),
            ("bc", -0.5, 1),
            ("▁a", -6.0, 1),
            ("abc", -7.0, 1),
            ("<0x0A>", 0.0, 6),
            ("<0x7A>", 0.0, 6),
            ("\n\n", -1000.0, 4),
        ]);
        t
    }

    #[test]
    fn highest_score_bigram_merges_first_then_bytes() {
        let v = vocab(&base(), &[]);
        // "▁abc" (space prefix): bc (−0.5) merges first, then ▁a (−6); "abc" (−7) comes
        // too late, its left symbol is gone.
        assert_eq!(v.encode("abc", false, false).unwrap(), vec![9, 8]);
        let ids = v.encode("abc", true, false).unwrap();
        assert_eq!(ids, vec![1, 9, 8]); // <s>, ▁a, bc
                                        // "z" is no token: its byte token; "\n\n" is user-defined and split out first.
        let ids = v.encode("z\n\nab", false, false).unwrap();
        assert_eq!(ids, vec![3, 12, 13, 3, 7]);
        assert_eq!(v.decode(&[1, 9, 8, 13]), " abc\n\n");
    }

    #[test]
    fn control_tokens_are_matched_only_when_parsing_specials() {
        let v = vocab(
            &base(),
            &[("tokenizer.ggml.add_space_prefix", Value::Bool(false))],
        );
        assert_eq!(v.encode("a</s>b", false, true).unwrap(), vec![4, 2, 5]);
        // Not parsed: "</s>" is text; '<', '/', 's', '>' have no tokens and no byte tokens.
        assert!(v.encode("a</s>b", false, false).is_err());
    }
}
