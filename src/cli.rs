//! Command-line flags (clap). Only this module and `cmd` see clap types.

use std::path::PathBuf;

use ::convert::lora::LoraSpec;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// kiln turns FP32 language-model checkpoints into small, verified GGUF builds.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about, long_about = None)]
pub struct Cli {
    /// Force the scalar compute kernels (also: KILN_FORCE_SCALAR=1).
    #[arg(long, global = true)]
    pub force_scalar: bool,

    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,

    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

// One value per run, parsed once: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the tensor types kiln handles, with ids, block sizes and the SIMD level in use.
    Types,
    /// Show what a checkpoint directory or GGUF file holds: metadata, tensors, totals.
    Inspect {
        /// A checkpoint directory or a GGUF file.
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Convert a Hugging Face checkpoint directory to GGUF.
    Convert {
        /// The checkpoint directory (config.json, safetensors, tokenizer.json or tokenizer.model).
        input: PathBuf,
        /// Output GGUF file.
        #[arg(short, long)]
        output: PathBuf,
        /// Type of the weight matrices (norms and biases stay f32).
        #[arg(long = "type", value_enum, default_value_t = OutType::F16)]
        out_type: OutType,
        /// llama.cpp pre-tokenizer name, when kiln cannot tell it (e.g. smollm, llama-bpe, qwen2).
        #[arg(long)]
        tokenizer_pre: Option<String>,
        /// general.name of the output.
        #[arg(long)]
        name: Option<String>,
        /// Convert even if weights hold NaN or infinity.
        #[arg(long)]
        allow_nonfinite: bool,
        /// LoRA adapter (PEFT directory or LoRA GGUF) merged into the weights, with an optional
        /// strength (`DIR:0.5`); repeatable, applied in order.
        #[arg(long = "lora", value_name = "PATH[:SCALE]", value_parser = LoraSpec::parse)]
        lora: Vec<LoraSpec>,
        #[command(flatten)]
        split: SplitArgs,
    },
    /// Perplexity of a model on a text (llama.cpp's protocol by default).
    Perplexity {
        /// A GGUF file or checkpoint directory.
        model: PathBuf,
        /// The text file.
        #[arg(long)]
        text: PathBuf,
        /// Tokens per chunk.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Most chunks (default: the whole text).
        #[arg(long)]
        chunks: Option<usize>,
        /// `llama`: second half of each chunk scored (llama-perplexity); `full`: every position.
        #[arg(long, value_enum, default_value_t = ProtocolArg::Llama)]
        protocol: ProtocolArg,
        /// Tokens per forward call.
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Dequantize weights to f32 instead of quantizing activations (for checking).
        #[arg(long)]
        dequantized: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Ignore attention masks stored in the model (run dense).
        #[arg(long)]
        dense: bool,
        /// LoRA adapter (LoRA GGUF or PEFT directory) applied at run time, with an optional
        /// strength (`FILE:0.5`); repeatable.
        #[arg(long = "lora", value_name = "PATH[:SCALE]", value_parser = LoraSpec::parse)]
        lora: Vec<LoraSpec>,
    },
    /// Token ids of a text, as llama-tokenize prints them (`--ids`).
    Tokenize {
        /// A GGUF file or checkpoint directory.
        model: PathBuf,
        /// The text file.
        #[arg(long, conflicts_with = "prompt", required_unless_present = "prompt")]
        text: Option<PathBuf>,
        /// The text itself.
        #[arg(long)]
        prompt: Option<String>,
        /// Do not add the BOS/EOS tokens the model asks for.
        #[arg(long)]
        no_bos: bool,
        /// Read control-token text (`<start_of_turn>` …) as those tokens, as llama-tokenize
        /// does by default (llama-perplexity does not).
        #[arg(long)]
        parse_special: bool,
        /// Print JSON: the ids, their count and their SHA-256 (of Python's `str(ids)`).
        #[arg(long)]
        json: bool,
    },
    /// Generate text from a prompt.
    Run {
        /// A GGUF file or checkpoint directory.
        model: PathBuf,
        /// The prompt.
        #[arg(long)]
        prompt: String,
        /// Tokens to generate.
        #[arg(short = 'n', long = "n-predict", default_value_t = 64)]
        n: usize,
        /// Sampling temperature (0 = greedy).
        #[arg(long, default_value_t = 0.0)]
        temp: f32,
        /// Sample among the k most likely tokens (0 = all).
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// LoRA adapter (LoRA GGUF or PEFT directory) applied at run time, with an optional
        /// strength (`FILE:0.5`); repeatable.
        #[arg(long = "lora", value_name = "PATH[:SCALE]", value_parser = LoraSpec::parse)]
        lora: Vec<LoraSpec>,
    },
    /// Prefill and decode speed, with the machine's memory bandwidth measured in the same run.
    Bench {
        /// A GGUF file or checkpoint directory.
        model: PathBuf,
        /// Prompt tokens of the prefill test (0 = skip).
        #[arg(long, default_value_t = 512)]
        pp: usize,
        /// Generated tokens of the decode test (0 = skip).
        #[arg(long, default_value_t = 128)]
        tg: usize,
        /// Repetitions.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = BenchFormat::Md)]
        format: BenchFormat,
        /// Ignore attention masks stored in the model (run dense).
        #[arg(long)]
        dense: bool,
        /// LoRA adapter (LoRA GGUF or PEFT directory) applied at run time, with an optional
        /// strength (`FILE:0.5`); repeatable.
        #[arg(long = "lora", value_name = "PATH[:SCALE]", value_parser = LoraSpec::parse)]
        lora: Vec<LoraSpec>,
    },
    /// Collect an importance matrix (llama-imatrix's statistics) from calibration text.
    Calibrate {
        /// A GGUF file or checkpoint directory (the FP32 model).
        model: PathBuf,
        /// Calibration text files (tokens of all of them, in order).
        #[arg(long, required = true, num_args = 1..)]
        text: Vec<PathBuf>,
        /// Tokens per chunk.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Most chunks (default: all the text holds).
        #[arg(long)]
        chunks: Option<usize>,
        /// Also collect the output projection's input (llama-imatrix's --process-output).
        #[arg(long)]
        process_output: bool,
        /// Output file: GGUF imatrix, or the legacy format when the name ends in .dat.
        #[arg(short, long)]
        output: PathBuf,
        /// Collect only share i of N of the chunks (`i/N`, from 1) and write a partial imatrix
        /// that `kiln imatrix merge` sums with the others, exactly.
        #[arg(long, value_name = "i/N")]
        shard: Option<String>,
        /// LoRA adapter (PEFT directory or LoRA GGUF) merged into the weights, with an optional
        /// strength (`DIR:0.5`); repeatable, applied in order.
        #[arg(long = "lora", value_name = "PATH[:SCALE]", value_parser = LoraSpec::parse)]
        lora: Vec<LoraSpec>,
    },
    /// Show an importance matrix file, convert it between the GGUF and .dat formats, or merge
    /// partial ones (`kiln imatrix merge A B … -o OUT`).
    #[command(args_conflicts_with_subcommands = true)]
    Imatrix {
        #[command(subcommand)]
        action: Option<ImatrixAction>,
        /// An imatrix file (GGUF or .dat).
        input: Option<PathBuf>,
        /// Write it here (format by extension: .dat is the legacy format).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Put the files of a split GGUF model (e.g. written by `--shard` jobs, in any
    /// directories) together into one GGUF, byte-identical to the unsplit build.
    Merge {
        /// The split files: all of them, in any order, or only the first (the others are found
        /// beside it by name).
        #[arg(required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// The merged GGUF.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Quantize a checkpoint directory or GGUF to one of llama.cpp's file types.
    Quantize {
        /// A checkpoint directory (converted in one step) or a GGUF file.
        input: PathBuf,
        /// Output GGUF file.
        #[arg(short, long)]
        output: PathBuf,
        /// File type: Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q4_K_M, Q4_K_S, IQ4_NL, IQ4_XS, Q3_K_L, Q3_K_M,
        /// Q3_K_S, Q2_K, Q5_0, Q5_1, Q4_0, Q4_1, F16, BF16, F32.
        #[arg(long = "type")]
        ftype: String,
        /// Importance matrix (GGUF or .dat) for the weighted quantizers.
        #[arg(long)]
        imatrix: Option<PathBuf>,
        /// REGEX=TYPE: tensors whose name matches get TYPE (repeatable; first match wins).
        #[arg(long = "tensor-type")]
        tensor_type: Vec<String>,
        /// Type of output.weight (and of a tied token embedding).
        #[arg(long)]
        output_tensor_type: Option<String>,
        /// Type of token_embd.weight.
        #[arg(long)]
        token_embedding_type: Option<String>,
        /// Every quantized tensor gets the file type's default type.
        #[arg(long)]
        pure: bool,
        /// Print the per-tensor plan and totals; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// llama.cpp pre-tokenizer name, when kiln cannot tell it.
        #[arg(long)]
        tokenizer_pre: Option<String>,
        /// Calibration methods beyond llama.cpp's, comma-separated: `search` (stronger block
        /// scale search), `awq` (activation-aware channel scalings folded into the norms; needs
        /// --imatrix), `gptq` (error feedback under the calibration Hessian), `alloc`
        /// (sensitivity-driven type allocation within a byte budget).
        #[arg(long, value_delimiter = ',')]
        method: Vec<String>,
        /// Calibration text the methods measure on.
        #[arg(long)]
        calib_text: Vec<PathBuf>,
        /// Whole-file size budget for `alloc`, in bytes (default: the size of the file type's
        /// llama.cpp mix).
        #[arg(long)]
        target_size: Option<u64>,
        /// Budget for `alloc` in bits per weight.
        #[arg(long)]
        target_bpw: Option<f64>,
        /// Chunks of calibration text `alloc` measures each tensor on.
        #[arg(long, default_value_t = 1)]
        sensitivity_chunks: usize,
        /// Tokens per chunk of that measurement (and of the GPTQ Hessians').
        #[arg(long, default_value_t = 512)]
        sensitivity_ctx: usize,
        /// Chunks of calibration text the GPTQ Hessians are accumulated over.
        #[arg(long, default_value_t = 32)]
        hessian_chunks: usize,
        /// Write `alloc`'s per-tensor choice (candidates, measured and predicted KLD) as JSON.
        #[arg(long)]
        alloc_report: Option<PathBuf>,
        #[command(flatten)]
        split: SplitArgs,
        /// Write only file i of the --split-count N split (`i/N`, from 1): one of N independent
        /// jobs quantizing one model; `kiln merge` (or llama.cpp, as they are) puts them together.
        #[arg(long, value_name = "i/N")]
        shard: Option<String>,
        /// LoRA adapter (PEFT directory or LoRA GGUF) merged into the weights, with an optional
        /// strength (`DIR:0.5`); repeatable, applied in order.
        #[arg(long = "lora", value_name = "PATH[:SCALE]", value_parser = LoraSpec::parse)]
        lora: Vec<LoraSpec>,
    },
    /// Parity of a candidate GGUF with its FP32 reference; exit 0 pass, 1 a threshold failed, 2 error.
    Verify {
        /// The FP32 reference (checkpoint directory or GGUF).
        #[arg(long)]
        reference: PathBuf,
        /// The candidate GGUF.
        #[arg(long)]
        candidate: PathBuf,
        /// Evaluation text.
        #[arg(long)]
        text: PathBuf,
        /// Tokens per chunk.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Most chunks (default: the whole text).
        #[arg(long)]
        chunks: Option<usize>,
        /// `llama`: second half of each chunk (llama-perplexity's KLD protocol); `full`: every position.
        #[arg(long, value_enum, default_value_t = ProtocolArg::Llama)]
        protocol: ProtocolArg,
        /// Largest mean KL divergence.
        #[arg(long)]
        max_kld: Option<f64>,
        /// Largest 99th-percentile KL divergence.
        #[arg(long)]
        max_kld_p99: Option<f64>,
        /// Smallest top-1 agreement, as a fraction (0.9) or percent (90).
        #[arg(long)]
        min_top1: Option<f64>,
        /// Largest perplexity ratio candidate / reference.
        #[arg(long)]
        max_ppl_ratio: Option<f64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        /// Ignore an attention mask stored in the candidate (run it dense).
        #[arg(long)]
        dense: bool,
        /// LoRA adapter (LoRA GGUF or PEFT directory) the candidate runs with at run time, with
        /// an optional strength (`FILE:0.5`); repeatable.
        #[arg(long = "lora", value_name = "PATH[:SCALE]", value_parser = LoraSpec::parse)]
        lora: Vec<LoraSpec>,
        /// LoRA adapter merged into the reference's weights (the FP32 fine-tuned model);
        /// repeatable, applied in order.
        #[arg(long = "reference-lora", value_name = "PATH[:SCALE]", value_parser = LoraSpec::parse)]
        reference_lora: Vec<LoraSpec>,
    },
    /// Build every target of a kiln.toml: calibrate, quantize, verify, benchmark, report.
    #[command(args_conflicts_with_subcommands = true)]
    Build {
        #[command(subcommand)]
        action: Option<BuildAction>,
        /// The build file.
        file: Option<PathBuf>,
        /// Output directory (default: build/ next to the file).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Build only this target (repeatable): one of N jobs building a build file's targets;
        /// `kiln build merge` puts their output directories together.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Derive block-sparse attention masks from calibration text (and store them in an artifact).
    Masks {
        /// The FP32 model to calibrate on.
        model: PathBuf,
        /// Calibration texts.
        #[arg(long, required = true, num_args = 1..)]
        text: Vec<PathBuf>,
        /// Quality budget: ship the sparsest mask whose mean KLD against dense attention on
        /// the --eval-text stays within it (measures a ladder of settings of each kind).
        #[arg(long, conflicts_with = "coverage")]
        max_kld: Option<f64>,
        /// Held-out text the ladder is measured on (with --max-kld; not the calibration text).
        #[arg(long, num_args = 1..)]
        eval_text: Vec<PathBuf>,
        /// Expert knob instead of a budget: one mask keeping this share of each head's
        /// attention mass [default: 0.99].
        #[arg(long)]
        coverage: Option<f64>,
        /// Mask kinds: auto (both with --max-kld, static otherwise), static or content.
        #[arg(long, default_value = "auto")]
        kind: String,
        /// Tokens per block.
        #[arg(long, default_value_t = 64)]
        block: usize,
        /// Calibration context.
        #[arg(long, default_value_t = 2048)]
        ctx: usize,
        /// Calibration chunks.
        #[arg(long, default_value_t = 2)]
        chunks: usize,
        /// Context the ladder is measured at [default: --ctx].
        #[arg(long)]
        eval_ctx: Option<usize>,
        /// Evaluation chunks of --eval-ctx tokens.
        #[arg(long, default_value_t = 1)]
        eval_chunks: usize,
        /// Content-aware heads: leading blocks always kept.
        #[arg(long, default_value_t = 1)]
        sink: usize,
        /// Content-aware heads: recent blocks always kept, counting the query's own.
        #[arg(long, default_value_t = 2)]
        window: usize,
        /// Write the ladder's curve as an SVG plot.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// A GGUF to copy with the mask added (with -o).
        #[arg(long)]
        artifact: Option<PathBuf>,
        /// Output GGUF (with --artifact).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print the per-head choices as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a PEFT LoRA adapter as llama.cpp's LoRA GGUF (`llama-cli --lora`), checked
    /// against its base model.
    Adapter {
        /// The PEFT adapter directory (adapter_config.json, adapter_model.safetensors).
        input: PathBuf,
        /// The base model (checkpoint directory or GGUF) the adapter was trained on.
        #[arg(long)]
        base: PathBuf,
        /// Output GGUF file.
        #[arg(short, long)]
        output: PathBuf,
        /// Type of lora_a / lora_b: f32, f16 or q8_0.
        #[arg(long = "type", value_enum, default_value_t = OutType::F32)]
        out_type: OutType,
    },
    /// The demo: fetch the SmolLM2 fixture if missing and build examples/smollm2.toml.
    Demo,
    /// Write any GGUF kiln reads as an FP32 Hugging Face directory.
    Export {
        /// Input GGUF file.
        input: PathBuf,
        /// Output directory.
        output: PathBuf,
        /// Make the weights continuous again: add to every value of a Q4_1/Q8_0 tensor
        /// d·(u − 0.5) (d its block's scale, u uniform from this seed).
        #[arg(long, value_name = "SEED")]
        continuous_seed: Option<u64>,
    },
}

/// How an output GGUF is split into llama.cpp's split files (`OUT-00001-of-0000N.gguf` …).
#[derive(Args, Debug, Clone, Default)]
pub struct SplitArgs {
    /// Split files of at most this much tensor data each (llama-gguf-split's `500M`, `2G`;
    /// also `K` or plain bytes).
    #[arg(long, value_name = "SIZE", conflicts_with_all = ["split_max_tensors", "split_count"])]
    pub split_max_size: Option<String>,
    /// Split files of at most this many tensors each.
    #[arg(long, value_name = "N", conflicts_with = "split_count")]
    pub split_max_tensors: Option<usize>,
    /// Exactly N split files, contiguous runs of tensors balanced by bytes (what `--shard i/N`
    /// cuts).
    #[arg(long, value_name = "N")]
    pub split_count: Option<usize>,
}

/// `kiln build` subcommands.
#[derive(Subcommand, Debug)]
pub enum BuildAction {
    /// Combine the output directories of `kiln build --target` jobs into the directory one
    /// `kiln build` writes: the artifacts, report.json/md/html and manifest.json.
    Merge {
        /// The build file the jobs built.
        file: PathBuf,
        /// The jobs' output directories.
        #[arg(required = true, num_args = 1..)]
        dirs: Vec<PathBuf>,
        /// The combined output directory.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// `kiln imatrix` subcommands.
#[derive(Subcommand, Debug)]
pub enum ImatrixAction {
    /// Sum partial importance matrices (from `kiln calibrate --shard i/N`, or any imatrix files,
    /// as llama-imatrix's --in-file does) into one.
    Merge {
        /// The imatrix files.
        #[arg(required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
        /// The merged imatrix (GGUF, or .dat).
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutType {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
}

impl OutType {
    pub fn ggml(self) -> quantize::GgmlType {
        match self {
            OutType::F32 => quantize::GgmlType::F32,
            OutType::F16 => quantize::GgmlType::F16,
            OutType::Bf16 => quantize::GgmlType::BF16,
            OutType::Q8_0 => quantize::GgmlType::Q8_0,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    Llama,
    Full,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchFormat {
    Md,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Md,
    Junit,
}
