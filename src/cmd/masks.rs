//! `kiln masks`: derive block-sparse attention masks from calibration text — one at a coverage,
//! or the sparsest of a measured ladder within a quality budget — and store them in a copy of
//! an artifact.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
pub use pipeline::masks::MaskSettings;
use pipeline::masks::{derive_mask, write_with_mask};

use super::progress::Terminal;

pub struct MasksArgs<'a> {
    pub model: &'a Path,
    pub texts: &'a [PathBuf],
    pub eval_texts: &'a [PathBuf],
    pub settings: MaskSettings,
    pub plot: Option<&'a Path>,
    pub artifact: Option<&'a Path>,
    pub output: Option<&'a Path>,
    pub json: bool,
    pub quiet: bool,
}

pub fn masks_cmd(a: MasksArgs) -> Result<i32> {
    if a.artifact.is_some() != a.output.is_some() {
        bail!("--artifact and -o go together");
    }
    if a.plot.is_some() && a.settings.max_kld.is_none() {
        bail!("--plot draws the ladder measured with --max-kld");
    }
    let out = derive_mask(
        a.model,
        &[],
        a.texts,
        a.eval_texts,
        a.artifact,
        &a.settings,
        None,
        &Terminal::new(a.quiet),
    )?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "kind": out.kind,
                "coverage": out.coverage,
                "heads": out.choices,
                "curve": out.curve,
            }))?
        );
    } else {
        if !out.choices.is_empty() {
            println!(
                "{:>5} {:>4}  {:>8} {:>8}  pattern",
                "layer", "head", "coverage", "density"
            );
            for h in &out.choices {
                println!(
                    "{:>5} {:>4}  {:>8.4} {:>8.3}  {}",
                    h.layer, h.head, h.coverage, h.density, h.pattern
                );
            }
            let dense = out.choices.iter().filter(|h| h.pattern == "dense").count();
            println!(
                "\n{} mask, coverage target {}: {} of {} heads dense, block {}, calibrated at {} tokens",
                out.kind,
                out.coverage,
                dense,
                out.choices.len(),
                a.settings.block,
                a.settings.ctx
            );
        }
        if !out.curve.is_empty() {
            println!();
            print!("{}", super::render::mask_curve_md(&out.curve));
            let chosen = out.curve.iter().find(|p| p.chosen).expect("one is chosen");
            println!(
                "\nshipped: {} {} (KLD {:.5} ≤ {} at {} tokens)",
                chosen.kind,
                chosen.setting,
                chosen.kld,
                a.settings.max_kld.unwrap_or(0.0),
                chosen.ctx
            );
        }
    }
    if let Some(p) = a.plot {
        let svg = super::render::mask_curve_svg(&out.curve, a.settings.max_kld)?;
        std::fs::write(p, svg).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    if let (Some(i), Some(o)) = (a.artifact, a.output) {
        write_with_mask(i, o, out.metadata(&a.settings))?;
        eprintln!("wrote {} with the mask", o.display());
    }
    Ok(0)
}
