//! kiln's build pipeline as a library: a typed plan in, artifacts and report data out.
//!
//! The `kiln` binary is flags → these types → these calls → rendering; a CI script or a batch
//! engine's job can make the same calls without it.
//!
//! * [`calibration::calibrate`] — the importance matrix of a model on text (or one shard's
//!   partial of it).
//! * [`quant::Quantization`] — one quantized artifact: llama.cpp's mix for a file type, the
//!   imatrix, kiln's methods ([`method`]), split files or one shard of them.
//! * [`build::build`] — a [`BuildPlan`]: calibrate once, quantize, verify and benchmark every
//!   target, reusing finished work, and write the artifacts, `report.json`, the manifest and the
//!   cache; [`build::merge`] combines the directories of `--target` jobs into one build's.
//! * [`masks::derive_mask`] — block-sparse attention masks from calibration text.
//!
//! Progress and notes go to an [`Observer`]; errors are typed ([`Error`]) and name the file,
//! target or option they concern.

pub mod build;
pub mod buildfile;
pub mod calibration;
mod error;
pub mod masks;
pub mod method;
pub mod mixes;
pub mod quant;
pub mod text;

pub use build::{BuildOutcome, BuildPlan};
pub use buildfile::BuildFile;
pub use error::{Context, Error, Result};
pub use method::MethodSpec;
pub use quant::{Quantization, Quantized};

/// Where the pipeline reports what it is doing. Every method has an empty default, so
/// [`Silent`] (or a user's type) implements only what it shows. Called from worker threads.
pub trait Observer: Sync {
    /// Step `done` of `total` of `stage` ("calibrate", "quantize", "verify", …) finished;
    /// `unit` names the steps ("chunks", a tensor name, …).
    fn step(&self, stage: &str, done: usize, total: usize, unit: &str) {
        let _ = (stage, done, total, unit);
    }
    /// `stage` ended (its last step may not have been reported).
    fn finish(&self, stage: &str) {
        let _ = stage;
    }
    /// A line of what the pipeline is doing ("q4: reusing …").
    fn note(&self, msg: &str) {
        let _ = msg;
    }
    /// Something the user should know that does not stop the work (an imatrix that misses a
    /// tensor, …).
    fn warn(&self, msg: &str) {
        let _ = msg;
    }
}

/// An observer that shows nothing.
pub struct Silent;

impl Observer for Silent {}
