//! `kiln build`, `kiln build merge` and `kiln demo`: flags → a [`BuildPlan`] → the pipeline →
//! the rendered report.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pipeline::build::{BuildOutcome, ReportFile};
use pipeline::BuildPlan;

use super::progress::Terminal;
use super::render;

/// The report files a build writes beside report.json.
fn report_files() -> Vec<ReportFile> {
    vec![
        ReportFile {
            name: "report.md".into(),
            render: render::build_md,
        },
        ReportFile {
            name: "report.html".into(),
            render: render::build_html,
        },
    ]
}

pub struct BuildArgs<'a> {
    pub file: &'a Path,
    pub out: Option<&'a Path>,
    /// Build only these targets (all when empty).
    pub only: &'a [String],
    pub quiet: bool,
    pub json: bool,
}

pub fn build_cmd(a: BuildArgs) -> Result<i32> {
    let mut plan = BuildPlan::load(a.file, a.out, a.only)?;
    plan.reports = report_files();
    let outcome = pipeline::build::build(&plan, &Terminal::new(a.quiet))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcome.report)?);
    } else {
        print!("{}", render::build_md(&outcome.report));
        println!("\nreport: {}", outcome.out.join("report.html").display());
    }
    Ok(verdict(&outcome))
}

/// `kiln build merge FILE DIR… -o OUT`: the directories of `kiln build --target` jobs combined
/// into the one a single build writes ([`pipeline::build::merge`]).
pub fn merge_cmd(file: &Path, dirs: &[PathBuf], out: &Path, quiet: bool) -> Result<i32> {
    let outcome = pipeline::build::merge(file, dirs, out, &report_files(), &Terminal::new(quiet))?;
    print!("{}", render::build_md(&outcome.report));
    Ok(if outcome.pass() { 0 } else { 1 })
}

/// Exit code 1 and the failed targets on stderr when a target failed its thresholds.
fn verdict(o: &BuildOutcome) -> i32 {
    if o.pass() {
        return 0;
    }
    eprintln!(
        "kiln: build: targets failed their thresholds: {}",
        o.failed().join(", ")
    );
    1
}

/// `kiln demo`: the fixture model (fetched if missing) through `examples/smollm2.toml`.
pub fn demo_cmd(quiet: bool) -> Result<i32> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let toml = root.join("examples/smollm2.toml");
    let fixture = root.join(".fixtures/smollm2-hf/model.safetensors");
    if !fixture.exists() || !root.join(".fixtures/texts/hamlet_gut.txt").exists() {
        eprintln!("kiln demo: fetching the fixture model and texts (scripts/fetch-fixture.sh)");
        let exe = std::env::current_exe()?;
        let st = std::process::Command::new("bash")
            .arg(root.join("scripts/fetch-fixture.sh"))
            .arg(exe)
            .status()
            .context("running scripts/fetch-fixture.sh")?;
        if !st.success() {
            bail!("fetching the fixture failed (see above)");
        }
    }
    build_cmd(BuildArgs {
        file: &toml,
        out: None,
        only: &[],
        quiet,
        json: false,
    })
}
