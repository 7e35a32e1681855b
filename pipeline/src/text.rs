//! Models, their tokenizers and the texts the pipeline measures on.

use std::path::Path;

use convert::source::ModelSource;
use convert::tokenizer::Tokenizer;
use verify::load::{Loaded, LoraLoad};

use crate::{Error, Result};

/// Loads a model for kiln's kernel, and its tokenizer.
pub fn load_with_tokenizer(path: &Path, lora: &LoraLoad) -> Result<(Loaded, Tokenizer)> {
    let loaded = verify::load::load_with(path, lora)?;
    let tok = tokenizer_of(&loaded.source, None)?;
    Ok((loaded, tok))
}

/// The tokenizer of a model source (`pre` names a checkpoint's pre-tokenizer when kiln
/// cannot tell it).
pub fn tokenizer_of(src: &ModelSource, pre: Option<&str>) -> Result<Tokenizer> {
    Ok(match src {
        ModelSource::Gguf(g) => Tokenizer::from_gguf(g.file.path(), &g.file.metadata)?,
        ModelSource::Hf(h) => Tokenizer::from_hf_dir(h.dir(), &h.config, pre)?,
    })
}

/// Reads and tokenizes a text file.
pub fn tokenize_file(tok: &Tokenizer, path: &Path) -> Result<Vec<u32>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path, "cannot read the text", e))?;
    tok.encode(&text).map_err(|msg| Error::Tokenize {
        path: path.into(),
        msg,
    })
}

/// Reads and tokenizes texts, one after the other.
pub fn tokenize_files(tok: &Tokenizer, paths: &[impl AsRef<Path>]) -> Result<Vec<u32>> {
    let mut tokens = Vec::new();
    for p in paths {
        tokens.extend(tokenize_file(tok, p.as_ref())?);
    }
    Ok(tokens)
}

/// The attention mask stored in a loaded model (`kiln.attention.*` keys), unless `dense`.
pub fn stored_mask(loaded: &Loaded, dense: bool) -> Result<Option<kernels::BlockMask>> {
    if dense {
        return Ok(None);
    }
    match &*loaded.source {
        ModelSource::Gguf(g) => {
            calibrate::masks::from_metadata(&g.file.metadata).map_err(|e| Error::MaskFormat {
                path: g.file.path().into(),
                source: e,
            })
        }
        ModelSource::Hf(_) => Ok(None),
    }
}

/// The SHA-256 of a file's bytes, in hex.
pub fn file_sha256(p: &Path) -> Result<String> {
    Ok(convert::source::file_sha256(p)?)
}

/// The last component of a path, as the reports name texts and files.
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
