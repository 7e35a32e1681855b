//! The `kiln` command line: parse flags, validate them into config structs, hand them to the
//! library crates. Nothing numeric lives here.
//!
//! Exit codes: 0 success, 1 a check failed (verify thresholds), 2 an error (bad input, I/O).

mod cli;
mod cmd;

use clap::Parser;

fn main() {
    reset_sigpipe();
    let cli = cli::Cli::parse();
    if let Err(e) = kernels::simd::env_cap() {
        eprintln!("kiln: error: {e}");
        std::process::exit(2);
    }
    if cli.force_scalar {
        kernels::simd::force_scalar(true);
    }
    if let Some(n) = cli.threads {
        // Ignore the error of a pool already built: only the first call sets the size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let code = match cmd::run(cli.command, cli.quiet) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: error: {}", error_chain(&e));
            2
        }
    };
    std::process::exit(code);
}

/// The error and its causes, `: `-joined, leaving out a cause whose text the message before it
/// already ends with (the libraries' errors name their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.ends_with(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// Restores the default SIGPIPE action so that `kiln inspect … | head` ends quietly, as other
/// Unix tools do, instead of panicking on a closed pipe (Rust ignores SIGPIPE by default).
fn reset_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; only sets a signal action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
