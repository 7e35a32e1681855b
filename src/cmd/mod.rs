//! One function per command: take the parsed flags, build the library's option structs, call
//! the library, print the result. Returns the process exit code.

mod build;
pub mod buildfile;
mod convert;
mod infer;
mod inspect;
mod masks;
mod method;
mod progress;
mod quant;
mod render;
mod verify;

use anyhow::Result;

use crate::cli::{BenchFormat, Command, ProtocolArg, ReportFormat};

pub fn run(cmd: Command, quiet: bool) -> Result<i32> {
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
        Command::Export {
            input,
            output,
            continuous_seed,
        } => convert::export(&input, &output, continuous_seed),
        Command::Calibrate {
            model,
            text,
            ctx,
            chunks,
            process_output,
            output,
        } => quant::calibrate_cmd(quant::CalibrateArgs {
            model: &model,
            texts: &text,
            ctx,
            chunks,
            process_output,
            output: &output,
            quiet,
        }),
        Command::Verify {
            reference,
            candidate,
            text,
            ctx,
            chunks,
            protocol,
            max_kld,
            max_kld_p99,
            min_top1,
            max_ppl_ratio,
            format,
            dense,
        } => verify::verify_cmd(verify::VerifyArgs {
            reference: &reference,
            candidate: &candidate,
            text: &text,
            ctx,
            chunks,
            protocol: match protocol {
                ProtocolArg::Llama => ::verify::eval::Protocol::LlamaCpp,
                ProtocolArg::Full => ::verify::eval::Protocol::Full,
            },
            thresholds: ::verify::parity::Thresholds {
                max_kld,
                max_kld_p99,
                min_top1: min_top1.map(|p| if p > 1.0 { p / 100.0 } else { p }),
                max_ppl_ratio,
            },
            format: match format {
                ReportFormat::Text => "text",
                ReportFormat::Json => "json",
                ReportFormat::Md => "md",
                ReportFormat::Junit => "junit",
            },
            dense,
            quiet,
        }),
        Command::Build { file, output, json } => build::build_cmd(build::BuildArgs {
            file: &file,
            out: output.as_deref(),
            quiet,
            json,
        }),
        Command::Demo => build::demo_cmd(quiet),
        Command::Masks {
            model,
            text,
            coverage,
            block,
            ctx,
            chunks,
            artifact,
            output,
            json,
        } => masks::masks_cmd(masks::MasksArgs {
            model: &model,
            texts: &text,
            settings: masks::MaskSettings {
                coverage,
                block,
                ctx,
                chunks,
            },
            artifact: artifact.as_deref(),
            output: output.as_deref(),
            json,
            quiet,
        }),
        Command::Imatrix { input, output } => quant::imatrix_cmd(&input, output.as_deref()),
        Command::Quantize {
            input,
            output,
            ftype,
            imatrix,
            tensor_type,
            output_tensor_type,
            token_embedding_type,
            pure,
            dry_run,
            tokenizer_pre,
            method,
            calib_text,
            target_size,
            target_bpw,
            sensitivity_chunks,
            sensitivity_ctx,
            hessian_chunks,
            alloc_report,
        } => {
            let mut method = method::MethodSpec::parse(&method)?;
            method.calib_texts = calib_text;
            method.target_size = target_size;
            method.target_bpw = target_bpw;
            method.chunks = sensitivity_chunks;
            method.ctx = sensitivity_ctx;
            method.hessian_chunks = hessian_chunks;
            method.alloc_report = alloc_report;
            method.validate()?;
            let parse_ty = |s: Option<String>| -> Result<Option<quantize::GgmlType>> {
                s.map(|s| s.parse::<quantize::GgmlType>().map_err(anyhow::Error::from))
                    .transpose()
            };
            quant::quantize_cmd(quant::QuantizeArgs {
                input: &input,
                output: &output,
                ftype: ftype.parse().map_err(anyhow::Error::msg)?,
                imatrix: imatrix.as_deref(),
                tensor_types: &tensor_type,
                output_tensor_type: parse_ty(output_tensor_type)?,
                token_embedding_type: parse_ty(token_embedding_type)?,
                pure,
                dry_run,
                tokenizer_pre,
                method,
                quiet,
            })
        }
        Command::Perplexity {
            model,
            text,
            ctx,
            chunks,
            protocol,
            batch,
            dequantized,
            json,
            dense,
        } => infer::perplexity_cmd(infer::PerplexityArgs {
            model: &model,
            text: &text,
            ctx,
            chunks,
            protocol: match protocol {
                ProtocolArg::Llama => ::verify::eval::Protocol::LlamaCpp,
                ProtocolArg::Full => ::verify::eval::Protocol::Full,
            },
            batch,
            dequantized,
            json,
            dense,
        }),
        Command::Tokenize {
            model,
            text,
            prompt,
            no_bos,
            parse_special,
            json,
        } => infer::tokenize_cmd(infer::TokenizeArgs {
            model: &model,
            text: text.as_deref(),
            prompt: prompt.as_deref(),
            add_special: !no_bos,
            parse_special,
            json,
        }),
        Command::Run {
            model,
            prompt,
            n,
            temp,
            top_k,
            seed,
        } => infer::run_cmd(infer::RunArgs {
            model: &model,
            prompt: &prompt,
            n,
            temp,
            top_k,
            seed,
        }),
        Command::Bench {
            model,
            pp,
            tg,
            reps,
            format,
            dense,
        } => infer::bench_cmd(infer::BenchArgs {
            dense,
            model: &model,
            pp,
            tg,
            reps,
            format: match format {
                BenchFormat::Md => "md",
                BenchFormat::Json => "json",
                BenchFormat::Csv => "csv",
            },
        }),
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
