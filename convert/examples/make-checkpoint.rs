//! Writes a generated Llama-architecture checkpoint of any shape (seeded weights, byte-level BPE
//! tokenizer), for measurements at real model widths — e.g. one layer with Llama-2-7B's shapes:
//!
//!     make-checkpoint DIR --hidden 4096 --ffn 11008 --layers 1 --heads 32 --kv-heads 32 --vocab 49152
//!
//! (`kiln convert/quantize` it with `--tokenizer-pre gpt-2`.)
use convert::testing::{write_checkpoint, TinySpec};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: make-checkpoint DIR [--hidden N] [--ffn N] [--layers N] [--heads N] \
                 [--kv-heads N] [--vocab N] [--seed N]";
    let Some(dir) = a.get(1).filter(|d| !d.starts_with("--")) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let mut spec = TinySpec::default();
    let mut i = 2;
    while i < a.len() {
        let v: usize = match a.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) if v > 0 => v,
            _ => {
                eprintln!("make-checkpoint: {} needs a positive number\n{usage}", a[i]);
                std::process::exit(2);
            }
        };
        match a[i].as_str() {
            "--hidden" => spec.hidden = v,
            "--ffn" => spec.intermediate = v,
            "--layers" => spec.layers = v,
            "--heads" => spec.heads = v,
            "--kv-heads" => spec.kv_heads = v,
            "--vocab" => spec.vocab = v,
            "--seed" => spec.seed = v as u64,
            other => {
                eprintln!("make-checkpoint: unknown option {other}\n{usage}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    if let Err(e) = write_checkpoint(dir.as_ref(), &spec) {
        eprintln!("make-checkpoint: {dir}: {e}");
        std::process::exit(2);
    }
}
