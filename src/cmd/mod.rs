//! One function per command: take the parsed flags, build the library's option structs, call
//! the library, print the result. Returns the process exit code.

mod build;
mod convert;
mod infer;
mod inspect;
mod masks;
mod plot;
mod progress;
mod quant;
mod render;
mod verify;

use anyhow::Result;

use ::convert::gguf::split::parse_shard;

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
            lora,
            split,
        } => {
            let opts = ::convert::convert::ConvertOptions {
                out_type: out_type.ggml(),
                tokenizer_pre,
                name,
                allow_nonfinite,
                split: split_options(&split, None)?,
            };
            convert::convert(&input, &lora, &output, &opts)
        }
        Command::Adapter {
            input,
            base,
            output,
            out_type,
        } => convert::adapter(&input, &base, &output, out_type.ggml()),
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
            shard,
            lora,
        } => quant::calibrate_cmd(
            pipeline::calibration::Calibration {
                model,
                lora,
                texts: text,
                ctx,
                chunks,
                process_output,
                shard: shard
                    .map(|s| parse_shard(&s).map_err(|e| anyhow::anyhow!("--shard: {e}")))
                    .transpose()?,
                output,
            },
            quiet,
        ),
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
            lora,
            reference_lora,
        } => verify::verify_cmd(verify::VerifyArgs {
            lora: ::verify::load::LoraLoad::runtime(&lora),
            reference_lora: ::verify::load::LoraLoad::merged(&reference_lora),
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
        Command::Build {
            action: Some(crate::cli::BuildAction::Merge { file, dirs, output }),
            ..
        } => build::merge_cmd(&file, &dirs, &output, quiet),
        Command::Build {
            file: Some(file),
            output,
            targets,
            json,
            ..
        } => build::build_cmd(build::BuildArgs {
            file: &file,
            out: output.as_deref(),
            only: &targets,
            quiet,
            json,
        }),
        Command::Build { .. } => {
            anyhow::bail!("kiln build: give a build file, or `merge FILE DIR… -o OUT`")
        }
        Command::Demo => build::demo_cmd(quiet),
        Command::Masks {
            model,
            text,
            max_kld,
            eval_text,
            coverage,
            kind,
            block,
            ctx,
            chunks,
            eval_ctx,
            eval_chunks,
            sink,
            window,
            plot,
            artifact,
            output,
            json,
        } => masks::masks_cmd(masks::MasksArgs {
            model: &model,
            texts: &text,
            eval_texts: &eval_text,
            settings: masks::MaskSettings {
                max_kld,
                coverage,
                kind: kind.parse().map_err(anyhow::Error::msg)?,
                block,
                ctx,
                chunks,
                eval_ctx,
                eval_chunks,
                sink,
                window,
            },
            plot: plot.as_deref(),
            artifact: artifact.as_deref(),
            output: output.as_deref(),
            json,
            quiet,
        }),
        Command::Imatrix {
            action: Some(crate::cli::ImatrixAction::Merge { inputs, output }),
            ..
        } => quant::imatrix_merge_cmd(&inputs, &output),
        Command::Imatrix {
            input: Some(input),
            output,
            ..
        } => quant::imatrix_cmd(&input, output.as_deref()),
        Command::Imatrix { .. } => {
            anyhow::bail!("kiln imatrix: give an imatrix file, or `merge A B … -o OUT`")
        }
        Command::Merge { inputs, output } => convert::merge(&inputs, &output),
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
            split,
            shard,
            lora,
        } => {
            let mut method = pipeline::MethodSpec::parse(&method)?;
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
            let job = pipeline::Quantization {
                input,
                output,
                ftype: ftype.parse().map_err(anyhow::Error::msg)?,
                imatrix,
                tensor_types: tensor_type,
                output_tensor_type: parse_ty(output_tensor_type)?,
                token_embedding_type: parse_ty(token_embedding_type)?,
                pure,
                tokenizer_pre,
                method,
                split: split_options(&split, shard.as_deref())?,
                lora,
            };
            quant::quantize_cmd(job, dry_run, quiet)
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
            lora,
        } => infer::perplexity_cmd(infer::PerplexityArgs {
            lora: ::verify::load::LoraLoad::runtime(&lora),
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
            lora,
        } => infer::run_cmd(infer::RunArgs {
            lora: ::verify::load::LoraLoad::runtime(&lora),
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
            lora,
        } => infer::bench_cmd(infer::BenchArgs {
            lora: ::verify::load::LoraLoad::runtime(&lora),
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
/// The split a command's `--split-*` flags and `--shard i/N` ask for.
pub fn split_options(
    a: &crate::cli::SplitArgs,
    shard: Option<&str>,
) -> Result<Option<::convert::convert::SplitOptions>> {
    use ::convert::convert::SplitOptions;
    use ::convert::gguf::split::{parse_size, SplitPolicy};
    let policy = match (&a.split_max_size, a.split_max_tensors, a.split_count) {
        (Some(s), _, _) => Some(SplitPolicy::MaxBytes(
            parse_size(s).map_err(|e| anyhow::anyhow!("--split-max-size: {e}"))?,
        )),
        (_, Some(0), _) => anyhow::bail!("--split-max-tensors must be positive"),
        (_, Some(n), _) => Some(SplitPolicy::MaxTensors(n)),
        (_, _, Some(0)) => anyhow::bail!("--split-count must be positive"),
        (_, _, Some(n)) => Some(SplitPolicy::Count(n)),
        _ => None,
    };
    let Some(shard) = shard else {
        return Ok(policy.map(|policy| SplitOptions { policy, only: None }));
    };
    let (i, n) = parse_shard(shard).map_err(|e| anyhow::anyhow!("--shard: {e}"))?;
    match policy {
        None => {}
        Some(SplitPolicy::Count(c)) if c == n => {}
        Some(SplitPolicy::Count(c)) => {
            anyhow::bail!("--shard {shard} is file {} of {n}, but --split-count says {c}", i + 1)
        }
        Some(_) => anyhow::bail!(
            "--shard {shard} writes file {} of {n} files balanced by bytes; it does not combine with --split-max-size or --split-max-tensors",
            i + 1
        ),
    }
    Ok(Some(SplitOptions {
        policy: SplitPolicy::Count(n),
        only: Some(i),
    }))
}

/// LoRA ranks as `8/16`.
pub fn ranks(r: &[usize]) -> String {
    r.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("/")
}

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
