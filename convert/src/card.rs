//! The model card (README.md with YAML front matter) of a checkpoint directory: where Hugging
//! Face keeps a model's name, license and languages. `kiln export` writes one from the GGUF's
//! `general.*` keys and `kiln convert` reads it back, so they survive the round trip.

use std::path::Path;

use crate::gguf::{Metadata, Value};

/// Front-matter keys ↔ GGUF keys (scalars).
const SCALARS: [(&str, &str); 6] = [
    ("model_name", "general.name"),
    ("license", "general.license"),
    ("organization", "general.organization"),
    ("basename", "general.basename"),
    ("finetune", "general.finetune"),
    ("size_label", "general.size_label"),
];

/// Front-matter lists ↔ GGUF string arrays.
const LISTS: [(&str, &str); 2] = [("language", "general.languages"), ("tags", "general.tags")];

/// A README.md for an exported directory.
pub fn model_card(md: &Metadata, source: &Path) -> String {
    let mut s = String::from("---\n");
    for (card, key) in SCALARS {
        if let Some(v) = md.str(key) {
            s.push_str(&format!("{card}: {}\n", yaml_str(v)));
        }
    }
    for (card, key) in LISTS {
        if let Some(items) = md.get(key).and_then(Value::as_array) {
            let l: Vec<String> = items
                .iter()
                .filter_map(Value::as_str)
                .map(yaml_str)
                .collect();
            if !l.is_empty() {
                s.push_str(&format!("{card}: [{}]\n", l.join(", ")));
            }
        }
    }
    s.push_str("library_name: transformers\n---\n\n");
    let name = md.str("general.name").unwrap_or("model");
    s.push_str(&format!(
        "# {name}\n\nFP32 weights exported by kiln {} from `{}`.\n",
        env!("CARGO_PKG_VERSION"),
        source
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default()
    ));
    s
}

fn yaml_str(v: &str) -> String {
    serde_json::to_string(v).expect("json string") // a JSON string is a valid YAML scalar
}

/// The `general.*` keys a checkpoint's README.md front matter states (none if absent).
pub fn read_card(path: &Path) -> Vec<(String, Value)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![];
    };
    let Some(rest) = text.strip_prefix("---\n") else {
        return vec![];
    };
    let Some(end) = rest.find("\n---") else {
        return vec![];
    };
    let mut out = Vec::new();
    for line in rest[..end].lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if let Some((_, key)) = SCALARS.iter().find(|(c, _)| *c == k) {
            out.push((key.to_string(), Value::String(unquote(v))));
        } else if let Some((_, key)) = LISTS.iter().find(|(c, _)| *c == k) {
            // kiln writes a JSON list (a valid YAML flow sequence); others may not quote.
            let items: Vec<String> = serde_json::from_str(v).unwrap_or_else(|_| {
                v.trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(unquote)
                    .filter(|s| !s.is_empty())
                    .collect()
            });
            if !items.is_empty() {
                out.push((key.to_string(), Value::string_array(items)));
            }
        }
    }
    out
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    serde_json::from_str::<String>(s).unwrap_or_else(|_| s.trim_matches('\'').to_string())
}
