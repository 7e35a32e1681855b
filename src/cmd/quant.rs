//! `kiln calibrate`, `kiln imatrix` and `kiln quantize`: flags → the pipeline's jobs → lines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use calibrate::Imatrix;
use pipeline::calibration::Calibration;
use pipeline::Quantization;

use super::human_bytes;
use super::progress::Terminal;

pub fn calibrate_cmd(c: Calibration, quiet: bool) -> Result<i32> {
    let t0 = Instant::now();
    let m = pipeline::calibration::calibrate(&c, &Terminal::new(quiet))?;
    println!(
        "wrote {} ({} entries, {} chunks of {} tokens) in {:.1}s",
        c.output.display(),
        m.entries.len(),
        m.chunk_count,
        m.chunk_size,
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// `kiln imatrix merge`.
pub fn imatrix_merge_cmd(inputs: &[PathBuf], output: &Path) -> Result<i32> {
    let merged = pipeline::calibration::merge(inputs, output)?;
    let m = &merged.imatrix;
    println!(
        "wrote {} ({} entries, {} chunks of {} tokens) from {} {}",
        output.display(),
        m.entries.len(),
        m.chunk_count,
        m.chunk_size,
        inputs.len(),
        if merged.from_shards {
            "shards, exactly"
        } else {
            "files"
        }
    );
    Ok(0)
}

pub fn imatrix_cmd(input: &Path, output: Option<&Path>) -> Result<i32> {
    let m = Imatrix::read(input)?;
    println!(
        "{}: {} entries, {} chunks of {} tokens, datasets {:?}{}",
        input.display(),
        m.entries.len(),
        m.chunk_count,
        m.chunk_size,
        m.datasets,
        m.partial
            .as_ref()
            .map(|p| format!(" (partial: shard {} of {})", p.shard + 1, p.of))
            .unwrap_or_default()
    );
    if let Some(o) = output {
        m.write(o)?;
        println!("wrote {}", o.display());
    }
    Ok(0)
}

pub fn quantize_cmd(job: Quantization, dry_run: bool, quiet: bool) -> Result<i32> {
    let t0 = Instant::now();
    let obs = Terminal::new(quiet);
    let prepared = job.prepare(&obs)?;
    if let Some(al) = prepared.allocation() {
        let mut counts = std::collections::BTreeMap::new();
        for t in &al.tensors {
            *counts.entry(t.ty.name()).or_insert(0usize) += 1;
        }
        eprintln!(
            "alloc: {} of {} matrix bytes, predicted KLD {:.5}; types {:?}",
            al.used, al.budget, al.predicted_kld, counts
        );
    }
    if dry_run {
        let plan = prepared.plan()?;
        println!(
            "{:<32} {:<14} {:<6} {:>10}  reason",
            "tensor", "shape", "type", "bytes"
        );
        for (i, (ch, d)) in plan.choices.iter().zip(&plan.descs).enumerate() {
            let shape: Vec<String> = d.dims.iter().rev().map(|x| x.to_string()).collect();
            println!(
                "{:<32} {:<14} {:<6} {:>10}  {}",
                ch.name,
                shape.join("×"),
                ch.ty.name(),
                plan.bytes_of(i),
                ch.reason
            );
        }
        let (total, n_params) = (plan.tensor_bytes, plan.n_params);
        println!(
            "\ntotal {} tensors: {} ({:.3} bits per weight, {:.1}% of FP32's {})",
            plan.choices.len(),
            human_bytes(total),
            total as f64 * 8.0 / n_params as f64,
            100.0 * total as f64 / (n_params * 4) as f64,
            human_bytes(n_params * 4)
        );
        return Ok(0);
    }
    let q = prepared.write(&obs)?;
    for w in &q.report.warnings {
        eprintln!("kiln: warning: {w}");
    }
    if let Some(sp) = job.split {
        for (p, b) in &q.report.files {
            println!("wrote {} ({})", p.display(), human_bytes(*b));
        }
        let what = match sp.only {
            Some(i) => format!("shard {} of {}", i + 1, sp.policy_count().unwrap_or(0)),
            None => format!("{} split files", q.report.files.len()),
        };
        println!(
            "{what} of a {}-tensor model at {:.3} bits per weight, in {:.2}s",
            q.report.tensors.len(),
            q.bits_per_weight(),
            t0.elapsed().as_secs_f64()
        );
        return Ok(0);
    }
    println!(
        "wrote {} ({}, {:.3} bits per weight) in {:.2}s",
        q.report.output.display(),
        human_bytes(q.report.file_bytes),
        q.bits_per_weight(),
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}
