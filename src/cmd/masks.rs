//! `kiln masks`: derive block-sparse attention masks from calibration text and store them in a
//! copy of an artifact.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
pub use pipeline::masks::MaskSettings;
use pipeline::masks::{derive_mask, write_with_mask};

use super::progress::Terminal;

pub struct MasksArgs<'a> {
    pub model: &'a Path,
    pub texts: &'a [PathBuf],
    pub settings: MaskSettings,
    pub artifact: Option<&'a Path>,
    pub output: Option<&'a Path>,
    pub json: bool,
    pub quiet: bool,
}

pub fn masks_cmd(a: MasksArgs) -> Result<i32> {
    let (mask, report) = derive_mask(
        a.model,
        &[],
        a.texts,
        &a.settings,
        None,
        &Terminal::new(a.quiet),
    )?;
    let n_blocks = a.settings.ctx / a.settings.block;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:>5} {:>4}  {:>8} {:>8}  pattern",
            "layer", "head", "coverage", "density"
        );
        for h in &report {
            println!(
                "{:>5} {:>4}  {:>8.4} {:>8.3}  {}",
                h.layer, h.head, h.coverage, h.density, h.pattern
            );
        }
        let dense = report.iter().filter(|h| h.pattern == "dense").count();
        println!(
            "\nmean density at {} tokens: {:.3} ({} of {} heads dense), block {}, coverage target {}",
            a.settings.ctx,
            mask.density(n_blocks),
            dense,
            report.len(),
            a.settings.block,
            a.settings.coverage
        );
    }
    match (a.artifact, a.output) {
        (Some(i), Some(o)) => {
            write_with_mask(i, o, &mask, a.settings.coverage)?;
            eprintln!("wrote {} with the mask", o.display());
        }
        (None, None) => {}
        _ => bail!("--artifact and -o go together"),
    }
    Ok(0)
}
