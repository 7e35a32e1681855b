//! `kiln verify`: a candidate GGUF against its FP32 reference, with thresholds for CI.

use std::path::Path;

use anyhow::Result;
use verify::eval::{EvalOptions, Protocol};
use verify::parity::{compare_masked, Thresholds};
use verify::report::{VerifyReport, SCHEMA_VERSION};

use super::infer::{load_with_tokenizer, stored_mask, tokenize_file};
use super::progress::Progress;
use super::render;

pub struct VerifyArgs<'a> {
    pub reference: &'a Path,
    pub candidate: &'a Path,
    pub text: &'a Path,
    pub ctx: usize,
    pub chunks: Option<usize>,
    pub protocol: Protocol,
    pub thresholds: Thresholds,
    pub format: &'a str,
    pub dense: bool,
    pub quiet: bool,
    /// Adapters of the candidate (run time).
    pub lora: verify::load::LoraLoad,
    /// Adapters merged into the reference.
    pub reference_lora: verify::load::LoraLoad,
}

pub fn verify_cmd(a: VerifyArgs) -> Result<i32> {
    let (reference, tok) = load_with_tokenizer(a.reference, &a.reference_lora)?;
    let candidate = verify::load::load_with(a.candidate, &a.lora)?;
    if candidate.model.config.vocab != reference.model.config.vocab {
        anyhow::bail!(
            "{}: vocabulary of {} tokens, the reference has {}",
            a.candidate.display(),
            candidate.model.config.vocab,
            reference.model.config.vocab
        );
    }
    let tokens = tokenize_file(&tok, a.text)?;
    let opts = EvalOptions {
        ctx: a.ctx,
        chunks: a.chunks,
        protocol: a.protocol,
        bos: if tok.add_bos { tok.bos } else { None },
        ..Default::default()
    };
    let n = verify::eval::n_chunks(tokens.len(), &opts)?;
    let p = Progress::new("verify", n, a.quiet);
    let mask = stored_mask(&candidate, a.dense)?;
    let parity = compare_masked(
        (&reference.model, None),
        &[(&candidate.model, mask.as_ref())],
        &tokens,
        &opts,
        |d, t| p.step(d, t, "chunks"),
    )?
    .pop()
    .expect("one candidate");
    p.finish();
    let tensors = verify::weights::weight_errors(&reference.source, &candidate.source)?;
    let checks = a.thresholds.check(&parity);
    let pass = checks.iter().all(|c| c.pass);
    let report = VerifyReport {
        schema_version: SCHEMA_VERSION,
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        reference: a.reference.display().to_string(),
        candidate: a.candidate.display().to_string(),
        text: a.text.display().to_string(),
        protocol: match a.protocol {
            Protocol::LlamaCpp => "llama".into(),
            Protocol::Full => "full".into(),
        },
        ctx: a.ctx,
        parity,
        thresholds: a.thresholds,
        checks,
        tensors,
        pass,
        simd: kernels::simd::level().name().into(),
    };
    let out = match a.format {
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        "md" => render::verify_md(&report),
        "junit" => render::verify_junit(&report),
        _ => render::verify_text(&report),
    };
    print!("{out}");
    if !pass {
        eprintln!(
            "kiln: verify failed: {}",
            render::failed_checks(&report.checks)
        );
        return Ok(1);
    }
    Ok(0)
}
