//! One function per command: take the parsed flags, build the library's option structs, call
//! the library, print the result. Returns the process exit code.

mod convert;
mod inspect;

use anyhow::Result;

use crate::cli::Command;

pub fn run(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Types => {
            types();
            Ok(0)
        }
        Command::Inspect { path, json } => inspect::run(&path, json),
        Command::Convert {
            input,
            output,
            out_type,
            tokenizer_pre,
            name,
            allow_nonfinite,
        } => {
            let opts = ::convert::convert::ConvertOptions {
                out_type: out_type.ggml(),
                tokenizer_pre,
                name,
                allow_nonfinite,
            };
            convert::convert(&input, &output, &opts)
        }
        Command::Export { input, output } => convert::export(&input, &output),
    }
}

fn types() {
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

/// Bytes as a short human string.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}
