//! Progress: a bar on a terminal (indicatif), plain lines otherwise, nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress reporter for one stage.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    label: String,
    last: Mutex<usize>,
}

impl Progress {
    /// A reporter for `total` steps of `label`.
    pub fn new(label: &str, total: usize, quiet: bool) -> Self {
        if quiet {
            return Progress {
                bar: None,
                plain: false,
                label: label.into(),
                last: Mutex::new(0),
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            Progress {
                bar: Some(bar),
                plain: false,
                label: label.into(),
                last: Mutex::new(0),
            }
        } else {
            Progress {
                bar: None,
                plain: true,
                label: label.into(),
                last: Mutex::new(0),
            }
        }
    }

    /// Step `done` of `total` finished (`what` names it).
    pub fn step(&self, done: usize, total: usize, what: &str) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(what.to_string());
        } else if self.plain {
            // About twenty lines per stage, and the last one.
            let mut last = self.last.lock().unwrap();
            if done < *last {
                // A new stage under the same label.
                *last = 0;
            }
            if done == total || done * 20 / total.max(1) > *last * 20 / total.max(1) {
                eprintln!("{}: {done}/{total} {what}", self.label);
                *last = done;
            }
        }
    }

    /// Ends the stage.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The pipeline's observer for the terminal: a [`Progress`] per stage, notes and warnings on
/// stderr; with `--quiet` only warnings.
pub struct Terminal {
    quiet: bool,
    stages: Mutex<Vec<(String, std::sync::Arc<Progress>)>>,
}

impl Terminal {
    pub fn new(quiet: bool) -> Self {
        Terminal {
            quiet,
            stages: Mutex::new(Vec::new()),
        }
    }
}

impl pipeline::Observer for Terminal {
    fn step(&self, stage: &str, done: usize, total: usize, unit: &str) {
        let p = {
            let mut s = self.stages.lock().unwrap();
            match s.iter().find(|(n, _)| n == stage) {
                Some((_, p)) => p.clone(),
                None => {
                    let p = std::sync::Arc::new(Progress::new(stage, total, self.quiet));
                    s.push((stage.to_string(), p.clone()));
                    p
                }
            }
        };
        p.step(done, total, unit);
    }

    fn finish(&self, stage: &str) {
        let mut s = self.stages.lock().unwrap();
        if let Some(i) = s.iter().position(|(n, _)| n == stage) {
            s.remove(i).1.finish();
        }
    }

    fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    fn warn(&self, msg: &str) {
        eprintln!("kiln: warning: {msg}");
    }
}
