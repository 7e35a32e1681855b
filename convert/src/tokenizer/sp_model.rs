//! SentencePiece's `tokenizer.model`: the `ModelProto` protobuf of `sentencepiece_model.proto`,
//! the fields llama.cpp's converter reads (pieces with score and type) and those a loader needs
//! to accept a written model (trainer and normalizer specs). Decoded and encoded with `prost`;
//! field numbers as in the `.proto` file.

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};

/// `ModelProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

/// `ModelProto.SentencePiece`.
#[derive(Clone, PartialEq, Message)]
pub struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// [`piece_type`]; absent means NORMAL.
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

/// `ModelProto.SentencePiece.Type` (the same numbers as llama.cpp's token types).
pub mod piece_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// `TrainerSpec`, the fields a loader checks.
#[derive(Clone, PartialEq, Message)]
pub struct TrainerSpec {
    /// 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR.
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub vocab_size: Option<i32>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
    #[prost(int32, optional, tag = "43")]
    pub pad_id: Option<i32>,
}

/// `NormalizerSpec`, the whitespace switches.
#[derive(Clone, PartialEq, Message)]
pub struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub escape_whitespaces: Option<bool>,
}

/// The most pieces a model file may declare (a hostile file cannot make kiln allocate more).
const MAX_PIECES: usize = 1 << 22;

impl ModelProto {
    /// Reads and checks a `tokenizer.model`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let m = ModelProto::decode(bytes.as_slice()).map_err(|e| {
            Error::format(path, format!("not a SentencePiece model (protobuf: {e})"))
        })?;
        if m.pieces.is_empty() || m.pieces.len() > MAX_PIECES {
            return Err(Error::format(
                path,
                format!(
                    "{} pieces (a SentencePiece model has 1 to {MAX_PIECES})",
                    m.pieces.len()
                ),
            ));
        }
        for (i, p) in m.pieces.iter().enumerate() {
            let t = p.r#type.unwrap_or(piece_type::NORMAL);
            if !(1..=6).contains(&t) {
                return Err(Error::format(
                    path,
                    format!("piece {i} has unknown type {t}"),
                ));
            }
            if p.score.is_some_and(|s| !s.is_finite()) {
                return Err(Error::format(
                    path,
                    format!("piece {i} has a non-finite score"),
                ));
            }
        }
        Ok(m)
    }

    /// The piece text of id `i`.
    pub fn piece(&self, i: usize) -> &str {
        self.pieces[i].piece.as_deref().unwrap_or("")
    }

    /// The score of id `i` (0 when absent, as `GetScore`).
    pub fn score(&self, i: usize) -> f32 {
        self.pieces[i].score.unwrap_or(0.0)
    }

    /// The type of id `i`.
    pub fn piece_type(&self, i: usize) -> i32 {
        self.pieces[i].r#type.unwrap_or(piece_type::NORMAL)
    }

    /// The protobuf bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}
