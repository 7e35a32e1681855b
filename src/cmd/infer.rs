//! `kiln perplexity`, `kiln run` and `kiln bench`: kiln's kernel on a model.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use convert::tokenizer::Tokenizer;
use kernels::{forward, ForwardOptions, Logits, MatmulMode, NoObserver, State};
use verify::eval::{EvalOptions, Protocol};
use verify::load::LoraLoad;

use super::human_bytes;

pub use pipeline::text::{load_with_tokenizer, stored_mask, tokenize_file};

pub struct TokenizeArgs<'a> {
    pub model: &'a Path,
    pub text: Option<&'a Path>,
    pub prompt: Option<&'a str>,
    pub add_special: bool,
    pub parse_special: bool,
    pub json: bool,
}

/// `kiln tokenize`: only the tokenizer is loaded (a GGUF of any architecture will do).
pub fn tokenize_cmd(a: TokenizeArgs) -> Result<i32> {
    let tok = if a.model.is_dir() {
        let c = convert::ModelConfig::from_hf_file(&a.model.join("config.json"))?;
        Tokenizer::from_hf_dir(a.model, &c, None)?
    } else {
        let g = convert::gguf::GgufFile::open(a.model)?;
        Tokenizer::from_gguf(g.path(), &g.metadata)?
    };
    let text = match (a.text, a.prompt) {
        (Some(p), _) => std::fs::read_to_string(p)
            .with_context(|| format!("{}: cannot read the text", p.display()))?,
        (None, Some(t)) => t.to_string(),
        (None, None) => bail!("give --text FILE or --prompt TEXT"),
    };
    let ids = tok
        .encode_with(&text, a.add_special, a.parse_special)
        .map_err(|e| anyhow::anyhow!("tokenizing failed: {e}"))?;
    if a.json {
        let v = serde_json::json!({
            "n_tokens": ids.len(),
            "sha256": convert::tokenizer::ids_hash(&ids),
            "ids": ids,
        });
        println!("{v}");
    } else {
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("[{}]", list.join(", "));
    }
    Ok(0)
}

pub struct PerplexityArgs<'a> {
    pub model: &'a Path,
    pub text: &'a Path,
    pub ctx: usize,
    pub chunks: Option<usize>,
    pub protocol: Protocol,
    pub batch: usize,
    pub dequantized: bool,
    pub json: bool,
    pub dense: bool,
    pub lora: LoraLoad,
}

pub fn perplexity_cmd(a: PerplexityArgs) -> Result<i32> {
    let (loaded, tok) = load_with_tokenizer(a.model, &a.lora)?;
    let tokens = tokenize_file(&tok, a.text)?;
    let opts = EvalOptions {
        ctx: a.ctx,
        chunks: a.chunks,
        protocol: a.protocol,
        batch: a.batch.min(a.ctx),
        mode: if a.dequantized {
            MatmulMode::Dequantized
        } else {
            MatmulMode::Quantized
        },
        bos: if tok.add_bos { tok.bos } else { None },
    };
    let mask = stored_mask(&loaded, a.dense)?;
    let t0 = Instant::now();
    let p = verify::eval::perplexity_masked(&loaded.model, mask.as_ref(), &tokens, &opts)?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let mut v = serde_json::to_value(&p)?;
        v["tokens"] = tokens.len().into();
        v["seconds"] = secs.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "{} tokens, {} chunks of {}, {:?} protocol",
            tokens.len(),
            p.chunks,
            a.ctx,
            a.protocol
        );
        let line: Vec<String> = p
            .per_chunk
            .iter()
            .enumerate()
            .map(|(i, v)| format!("[{}]{v:.4}", i + 1))
            .collect();
        println!("{}", line.join(","));
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5} ({} predictions, top-1 {:.2}%, {:.1} tokens/s)",
            p.ppl,
            p.ppl * p.nll_stderr,
            p.n_scored,
            100.0 * p.top1_hit_rate,
            (p.chunks * a.ctx) as f64 / secs
        );
    }
    Ok(0)
}

pub struct RunArgs<'a> {
    pub model: &'a Path,
    pub prompt: &'a str,
    pub n: usize,
    pub temp: f32,
    pub top_k: usize,
    pub seed: u64,
    pub lora: LoraLoad,
}

pub fn run_cmd(a: RunArgs) -> Result<i32> {
    let (loaded, tok) = load_with_tokenizer(a.model, &a.lora)?;
    let model = &loaded.model;
    let prompt = tok
        .encode(a.prompt)
        .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let ctx = (prompt.len() + a.n).min(model.config.max_ctx.max(prompt.len() + 1));
    let mut st = State::new(&model.config, ctx, prompt.len().clamp(1, 512));
    let mut rng = kernels::ops::Rng::new(a.seed);
    let mask = stored_mask(&loaded, false)?;
    let fo = ForwardOptions {
        mask: mask.as_ref(),
        ..Default::default()
    };
    let t0 = Instant::now();
    for chunk in prompt.chunks(st.max_batch) {
        forward(model, &mut st, chunk, Logits::Last, fo, &NoObserver)?;
    }
    let t_prompt = t0.elapsed().as_secs_f64();
    let mut out: Vec<u32> = Vec::new();
    let mut printed = 0;
    let stdout = std::io::stdout();
    let mut so = stdout.lock();
    let t1 = Instant::now();
    while out.len() < a.n && st.pos < ctx {
        let next = kernels::ops::sample(&st.logits, a.temp, a.top_k, &mut rng) as u32;
        if Some(next) == tok.eos {
            break;
        }
        out.push(next);
        let text = tok.decode(&out).unwrap_or_default();
        // Print only complete characters: a partial UTF-8 sequence decodes to U+FFFD.
        if !text.ends_with('\u{FFFD}') && text.len() > printed {
            write!(so, "{}", &text[printed..])?;
            so.flush()?;
            printed = text.len();
        }
        if st.pos >= ctx {
            break;
        }
        forward(model, &mut st, &[next], Logits::Last, fo, &NoObserver)?;
    }
    writeln!(so)?;
    eprintln!(
        "prompt {} tokens in {:.2}s ({:.1} t/s), generated {} tokens in {:.2}s ({:.1} t/s)",
        prompt.len(),
        t_prompt,
        prompt.len() as f64 / t_prompt,
        out.len(),
        t1.elapsed().as_secs_f64(),
        out.len() as f64 / t1.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(0)
}

pub struct BenchArgs<'a> {
    pub dense: bool,
    pub model: &'a Path,
    pub pp: usize,
    pub tg: usize,
    pub reps: usize,
    pub format: &'a str,
    pub lora: LoraLoad,
}

/// Read bandwidth of this machine, all threads, over a buffer far larger than the caches (GB/s).
pub fn memory_bandwidth() -> f64 {
    use rayon::prelude::*;
    let words = 256 << 17; // 256 MiB of u64
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .sum();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(s);
        best = best.max((words * 8) as f64 / secs / 1e9);
    }
    best
}

pub fn bench_cmd(a: BenchArgs) -> Result<i32> {
    let loaded = verify::load::load_with(a.model, &a.lora)?;
    let model = &loaded.model;
    let threads = rayon::current_num_threads();
    let bw = memory_bandwidth();
    let mask = stored_mask(&loaded, a.dense)?;
    let runs: Vec<(&str, Option<&kernels::BlockMask>)> = match &mask {
        Some(m) => vec![("masked", Some(m)), ("dense", None)],
        None => vec![("", None)],
    };
    let mut rows = Vec::new();
    for (label, m) in runs {
        let r = verify::bench::run(model, m, a.pp, a.tg, a.reps)?;
        let suffix = if label.is_empty() {
            String::new()
        } else {
            format!(" {label}")
        };
        if a.pp > 0 {
            rows.push((
                format!("pp{}{suffix}", a.pp),
                (r.pp_tokens_per_s, r.pp_stddev),
                Some(r.pp_attention_s),
            ));
        }
        if a.tg > 0 {
            rows.push((
                format!("tg{}{suffix}", a.tg),
                (r.tg_tokens_per_s, r.tg_stddev),
                None,
            ));
        }
    }
    let size = model.weight_bytes() as u64;
    let params: usize = loaded.source.tensors().iter().map(|t| t.n_elements()).sum();
    let name = a
        .model
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let simd = kernels::simd::level().name();
    match a.format {
        "json" => {
            let v = serde_json::json!({
                "model": name, "size_bytes": size, "params": params, "threads": threads, "simd": simd,
                "memory_bandwidth_gbs": bw, "reps": a.reps,
                "tests": rows.iter().map(|(t, (m, s), att)| serde_json::json!({"test": t, "tokens_per_s": m, "stddev": s, "attention_seconds": att})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        "csv" => {
            println!("model,size_bytes,params,threads,simd,memory_bandwidth_gbs,test,tokens_per_s,stddev,attention_seconds");
            for (t, (m, s), att) in &rows {
                let att = att.map(|x| format!("{x:.4}")).unwrap_or_default();
                println!("{name},{size},{params},{threads},{simd},{bw:.2},{t},{m:.2},{s:.2},{att}");
            }
        }
        _ => {
            println!("| model | size | params | threads | simd | test | t/s | attention s |");
            println!("| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |");
            for (t, (m, s), att) in &rows {
                let att = att.map(|x| format!("{x:.3}")).unwrap_or_default();
                println!(
                    "| {name} | {} | {:.2} M | {threads} | {simd} | {t} | {m:.2} ± {s:.2} | {att} |",
                    human_bytes(size),
                    params as f64 / 1e6
                );
            }
            println!("\nmemory read bandwidth (same run, {threads} threads): {bw:.2} GB/s");
        }
    }
    Ok(0)
}
