//! The `kiln` command line: parse flags, validate them into config structs, hand them to the
//! library crates. Nothing numeric lives here.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// kiln turns FP32 language-model checkpoints into small, verified GGUF builds.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    /// Force the scalar compute kernels (also: KILN_FORCE_SCALAR=1).
    #[arg(long, global = true)]
    force_scalar: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the tensor types kiln handles, with ids, block sizes and the SIMD level in use.
    Types,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.force_scalar {
        kernels::simd::force_scalar(true);
    }
    match cli.command {
        Command::Types => {
            println!(
                "{:<6} {:>3} {:>6} {:>6} {:>6}  vec_dot",
                "type", "id", "block", "bytes", "bpw"
            );
            for t in quantize::ALL_TYPES {
                println!(
                    "{:<6} {:>3} {:>6} {:>6} {:>6.2}  {}",
                    t.name(),
                    t.id(),
                    t.block_size(),
                    t.type_size(),
                    t.bits_per_weight(),
                    t.vec_dot_type()
                );
            }
            println!("simd: {}", kernels::simd::level().name());
        }
    }
    Ok(())
}
