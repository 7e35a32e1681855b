//! A build (`kiln build kiln.toml`): calibrate once, then quantize, verify and benchmark every
//! target, and write the artifacts, the reports and the manifest. Finished work is reused when
//! nothing it depends on changed, so a rerun writes identical bytes. A build may be split into
//! jobs by target ([`BuildPlan::only`]), whose directories [`merge`] combines into the one a
//! single build writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use calibrate::{CalibOptions, Imatrix};
use convert::ModelSource;
use quantize::mix::{Ftype, MixOptions};
use quantize::GgmlType;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use verify::eval::{EvalOptions, Protocol};
use verify::report::{BuildReport, TargetReport, SCHEMA_VERSION};

use crate::buildfile::BuildFile;
use crate::method::{MethodSpec, ProfileCache, TensorQuantizer};
use crate::quant::{write_artifact, Artifact};
use crate::text::{file_name, file_sha256, tokenize_files, tokenizer_of};
use crate::{Context, Error, Observer, Result};

/// A build to run: the build file, which of its targets, and where.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// The build file's path: its directory anchors the relative paths in the manifest.
    pub file: PathBuf,
    /// The whole build file, validated.
    pub config: BuildFile,
    /// Build only these targets (all when empty): one job of a build split by target.
    pub only: Vec<String>,
    /// The output directory.
    pub out: PathBuf,
    /// Report files written beside `report.json`, rendered from the report data.
    pub reports: Vec<ReportFile>,
    /// The tool as an input of its own results ([`tool_key`]): other code redoes the work.
    pub tool: String,
}

/// A report file a build writes: its name in the output directory and its renderer.
#[derive(Debug, Clone)]
pub struct ReportFile {
    pub name: String,
    pub render: fn(&BuildReport) -> String,
}

/// What a build (or a merge of jobs) produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The report data of every target (reused or new).
    pub report: BuildReport,
    /// The output directory.
    pub out: PathBuf,
}

impl BuildOutcome {
    /// True when every target passed its thresholds.
    pub fn pass(&self) -> bool {
        self.report.pass
    }

    /// The targets that failed their thresholds.
    pub fn failed(&self) -> Vec<&str> {
        self.report
            .targets
            .iter()
            .filter(|t| !t.pass)
            .map(|t| t.name.as_str())
            .collect()
    }
}

/// This kiln's identity for reuse: its version and the SHA-256 of the running executable.
pub fn tool_key() -> String {
    format!(
        "{} {}",
        env!("CARGO_PKG_VERSION"),
        std::env::current_exe()
            .ok()
            .and_then(|p| file_sha256(&p).ok())
            .unwrap_or_default()
    )
}

impl BuildPlan {
    /// Reads and validates the build file `file`; the output goes to `out` (default: `build/`
    /// beside the build file); `only` names targets to build (all when empty).
    pub fn load(file: &Path, out: Option<&Path>, only: &[String]) -> Result<Self> {
        let config = BuildFile::load(file)?;
        for n in only {
            if !config.targets.iter().any(|t| &t.name == n) {
                let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::BuildFile {
                    path: file.into(),
                    msg: format!("no target `{n}` (targets: {})", names.join(", ")),
                });
            }
        }
        let out = out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| file.parent().unwrap_or(Path::new(".")).join("build"));
        Ok(BuildPlan {
            file: file.into(),
            config,
            only: only.to_vec(),
            out,
            reports: Vec::new(),
            tool: tool_key(),
        })
    }
}

/// Fills each method target's comparison with its baseline: the target named by `baseline`,
/// else the target of the same type with the imatrix and no methods.
fn compare_with_baselines(cfg: &BuildFile, mut targets: Vec<TargetReport>) -> Vec<TargetReport> {
    let snapshot = targets.clone();
    for (t, sec) in targets.iter_mut().zip(&cfg.targets) {
        let Some(m) = t.method.as_mut() else { continue };
        let base = match &sec.baseline {
            Some(b) => snapshot.iter().find(|o| &o.name == b),
            None => snapshot.iter().zip(&cfg.targets).find_map(|(o, os)| {
                (o.ftype == t.ftype
                    && o.imatrix
                    && os.method.iter().all(|x| x == "imatrix")
                    && o.name != t.name)
                    .then_some(o)
            }),
        };
        if let Some(b) = base {
            m.baseline = Some(b.name.clone());
            m.baseline_bytes = Some(b.bytes);
            m.baseline_kld_mean = Some(b.parity.kld.mean);
            m.baseline_kld_p99 = Some(b.parity.kld.p99);
            m.baseline_top1 = Some(b.parity.top1);
            m.baseline_ppl_ratio = Some(b.parity.ppl_ratio);
            m.kld_ratio = (b.parity.kld.mean > 0.0).then(|| t.parity.kld.mean / b.parity.kld.mean);
        }
    }
    targets
}

/// What a previous run left: keys of finished work and their results.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    imatrix_key: Option<String>,
    targets: BTreeMap<String, (String, TargetReport)>,
}

fn sha_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    convert::tokenizer::hex(&h.finalize())
}

/// Runs a build: the report data and where it went. Targets that fail their thresholds are
/// in the report (`pass` false), not an error.
pub fn build(plan: &BuildPlan, obs: &dyn Observer) -> Result<BuildOutcome> {
    let full = &plan.config;
    let mut cfg = full.clone();
    if !plan.only.is_empty() {
        cfg.targets.retain(|t| plan.only.contains(&t.name));
    }
    let out = plan.out.clone();
    std::fs::create_dir_all(&out)
        .map_err(|e| Error::io(&out, "cannot create the output directory", e))?;
    let say = |m: String| obs.note(&m);
    let cache_path = out.join(".kiln-cache.json");
    let mut cache: Cache = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let src = ModelSource::open(&cfg.model.path)?;
    let model_name = cfg.model.name.clone().unwrap_or_else(|| {
        cfg.model
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    say(format!(
        "kiln build: {} ({} targets) → {}",
        cfg.model.path.display(),
        cfg.targets.len(),
        out.display()
    ));
    let model_sha = src.sha256()?;
    // The tool is an input of its own results: a different kiln binary redoes the work.
    let version = plan.tool.as_str();
    let text_hashes = |ts: &[PathBuf]| -> Result<String> {
        Ok(ts
            .iter()
            .map(|t| file_sha256(t))
            .collect::<Result<Vec<_>>>()?
            .join(","))
    };
    let tok = tokenizer_of(&src, cfg.model.tokenizer_pre.as_deref())?;
    let bos = if tok.add_bos { tok.bos } else { None };

    // 1. Calibration, once, if any target needs it.
    let imatrix_path = out.join("imatrix.gguf");
    let mut imatrix_key = String::new();
    let imatrix: Option<Imatrix> = if cfg.targets.iter().any(|t| t.imatrix) {
        let c = cfg.calibration.as_ref().expect("validated");
        imatrix_key = sha_of(&[version, &model_sha, &json(c), &text_hashes(&c.texts)?]);
        if cache.imatrix_key.as_deref() == Some(imatrix_key.as_str()) && imatrix_path.exists() {
            say("calibration: reusing imatrix.gguf".into());
            Some(Imatrix::read(&imatrix_path)?)
        } else {
            let reference = verify::load::load(&cfg.model.path)?;
            let tokens = tokenize_files(&tok, &c.texts)?;
            let names = c.texts.iter().map(|t| file_name(t)).collect();
            let opts = CalibOptions {
                ctx: c.ctx,
                chunks: c.chunks,
                bos,
                process_output: false,
                datasets: names,
                kv_f16: true,
            };
            let m = calibrate::calibrate(&reference.model, &tokens, &opts, |d, t| {
                obs.step("calibrate", d, t, "chunks")
            })?;
            obs.finish("calibrate");
            m.write(&imatrix_path)?;
            cache.imatrix_key = Some(imatrix_key.clone());
            save_cache(&cache_path, &cache)?;
            Some(m)
        }
    } else {
        None
    };

    // 2. Quantize each target whose work is not already done.
    let eval = &cfg.evaluation;
    let protocol = if eval.protocol == "full" {
        Protocol::Full
    } else {
        Protocol::LlamaCpp
    };
    let eval_key = sha_of(&[&json(eval), &text_hashes(&eval.texts)?, &json(&cfg.bench)]);
    let mut todo = Vec::new();
    let mut keys = BTreeMap::new();
    let mut profiles = ProfileCache::default();
    let mut masks_done: BTreeMap<String, (kernels::BlockMask, Vec<calibrate::masks::HeadChoice>)> =
        BTreeMap::new();
    for t in &cfg.targets {
        let file = format!("{model_name}-{}.gguf", t.name);
        let path = out.join(&file);
        let key = sha_of(&[
            version,
            &model_sha,
            if t.imatrix { &imatrix_key } else { "" },
            &json(t),
            &json(&cfg.thresholds),
            &eval_key,
        ]);
        keys.insert(t.name.clone(), key.clone());
        let done = cache.targets.get(&t.name).filter(|(k, r)| {
            *k == key && path.exists() && file_sha256(&path).map(|h| h == r.sha256).unwrap_or(false)
        });
        if done.is_some() {
            say(format!("{}: reusing {file}", t.name));
            continue;
        }
        let ftype: Ftype = t.ftype.parse().map_err(Error::Options)?;
        let parse = |s: &Option<String>| s.as_ref().map(|x| x.parse::<GgmlType>()).transpose();
        let opts = MixOptions {
            has_imatrix: t.imatrix,
            pure: t.pure,
            output_tensor_type: parse(&t.output_tensor_type)?,
            token_embedding_type: parse(&t.token_embedding_type)?,
            overrides: quantize::mix::parse_overrides(&t.tensor_types)?,
        };
        let mut extra_meta = Vec::new();
        let mut mask = None;
        if let Some(ms) = &t.attention_masks {
            let key = json(ms);
            if !masks_done.contains_key(&key) {
                say(format!(
                    "{}: deriving attention masks (coverage {}, block {}, ctx {})",
                    t.name, ms.coverage, ms.block, ms.ctx
                ));
                let texts = &cfg.calibration.as_ref().expect("validated").texts;
                let derived = crate::masks::derive_mask(
                    &cfg.model.path,
                    texts,
                    ms,
                    cfg.model.tokenizer_pre.as_deref(),
                    obs,
                )?;
                masks_done.insert(key.clone(), derived);
            }
            let (m, _) = &masks_done[&key];
            extra_meta = calibrate::masks::to_metadata(m, ms.coverage);
            mask = Some((m.clone(), *ms));
        }
        say(format!(
            "{}: quantizing to {ftype}{}",
            t.name,
            if t.imatrix { " with the imatrix" } else { "" }
        ));
        let im = if t.imatrix {
            imatrix.as_ref().map(|m| (m, imatrix_path.as_path()))
        } else {
            None
        };
        let mut spec = MethodSpec::parse(&t.method)?;
        spec.calib_texts = cfg
            .calibration
            .as_ref()
            .map(|c| c.texts.clone())
            .unwrap_or_default();
        spec.target_size = t.target_size;
        spec.target_bpw = t.target_bpw;
        spec.chunks = t.sensitivity_chunks.unwrap_or(spec.chunks);
        // GPTQ's Hessians come from the imatrix's chunks unless the target says otherwise.
        spec.hessian_chunks = t
            .hessian_chunks
            .or(cfg.calibration.as_ref().and_then(|c| c.chunks))
            .unwrap_or(spec.hessian_chunks);
        spec.ctx = cfg.calibration.as_ref().map_or(spec.ctx, |c| c.ctx);
        spec.alloc_report = Some(out.join(format!("{model_name}-{}.alloc.json", t.name)));
        spec.validate()
            .context_with(|| format!("target {}", t.name))?;
        let mut opts = opts;
        let mut method_report = None;
        let mut tq = TensorQuantizer::default();
        if spec.any() {
            say(format!("{}: methods {}", t.name, t.method.join(", ")));
            let applied = crate::method::apply(
                &spec,
                &cfg.model.path,
                &[],
                ftype,
                &opts,
                im.map(|(m, _)| m),
                cfg.model.tokenizer_pre.as_deref(),
                &mut profiles,
                obs,
            )?;
            opts.overrides.extend(applied.overrides);
            let params = applied
                .metadata
                .iter()
                .find(|(k, _)| k == "kiln.quantize.method")
                .and_then(|(_, v)| v.as_str())
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            method_report = Some(verify::report::MethodReport {
                methods: t
                    .method
                    .iter()
                    .filter(|m| *m != "imatrix")
                    .cloned()
                    .collect(),
                parameters: params,
                predicted_kld: applied.allocation.as_ref().map(|a| a.predicted_kld),
                ..Default::default()
            });
            extra_meta.extend(applied.metadata);
            tq = applied.quantizer;
        }
        let q = write_artifact(
            &src,
            Artifact {
                out: &path,
                ftype,
                imatrix: im,
                imatrix_name: Some("imatrix.gguf"),
                mix: opts,
                tensor_types: &t.tensor_types,
                tokenizer_pre: cfg.model.tokenizer_pre.clone(),
                extra_meta,
                quantizer: &tq,
                split: None,
            },
            obs,
        )?;
        todo.push((t.clone(), file, path, q, mask, method_report));
    }

    // 3. Verify the new artifacts against the FP32 model (reference run once per chunk) and
    //    benchmark them.
    if !todo.is_empty() {
        let reference = verify::load::load(&cfg.model.path)?;
        let tokens = tokenize_files(&tok, &eval.texts)?;
        let opts = EvalOptions {
            ctx: eval.ctx,
            chunks: eval.chunks,
            protocol,
            bos,
            ..Default::default()
        };
        let cands: Vec<verify::load::Loaded> = todo
            .iter()
            .map(|t| verify::load::load(&t.2))
            .collect::<Result<_, _>>()?;
        let masked: Vec<verify::eval::Masked> = cands
            .iter()
            .zip(&todo)
            .map(|(c, t)| (&c.model, t.4.as_ref().map(|(m, _)| m)))
            .collect();
        verify::eval::n_chunks(tokens.len(), &opts)?;
        let parities = verify::parity::compare_masked(
            (&reference.model, None),
            &masked,
            &tokens,
            &opts,
            |d, t| obs.step("verify", d, t, "chunks"),
        )?;
        obs.finish("verify");
        let fp32_bytes: u64 = src
            .tensors()
            .iter()
            .map(|t| t.n_elements() as u64 * 4)
            .sum();
        for (((t, file, path, q, mask, method), cand), parity) in
            todo.into_iter().zip(&cands).zip(parities)
        {
            say(format!("{}: benchmarking", t.name));
            let b = &cfg.bench;
            let bench = verify::bench::run(&cand.model, None, b.pp, b.tg, b.reps)?;
            let masks = match &mask {
                None => None,
                Some((m, ms)) => {
                    say(format!(
                        "{}: masked against dense, and prefill at {} tokens",
                        t.name, ms.ctx
                    ));
                    let vs_dense = verify::parity::compare_masked(
                        (&cand.model, None),
                        &[(&cand.model, Some(m))],
                        &tokens,
                        &opts,
                        |_, _| {},
                    )?
                    .pop()
                    .expect("one candidate");
                    let masked = verify::bench::run(&cand.model, Some(m), ms.ctx, 0, 1)?;
                    let dense = verify::bench::run(&cand.model, None, ms.ctx, 0, 1)?;
                    let (pm, am) = (masked.pp_tokens_per_s, masked.pp_attention_s);
                    let (pd, ad) = (dense.pp_tokens_per_s, dense.pp_attention_s);
                    let heads = m.patterns.iter().map(|l| l.len()).sum();
                    let dense_heads = m
                        .patterns
                        .iter()
                        .flatten()
                        .filter(|p| **p == kernels::HeadPattern::Dense)
                        .count();
                    Some(verify::report::MaskReport {
                        coverage: ms.coverage,
                        block: ms.block,
                        ctx: ms.ctx,
                        density: m.density(ms.ctx.div_ceil(ms.block)),
                        dense_heads,
                        heads,
                        vs_dense,
                        prefill_masked_tps: pm,
                        prefill_dense_tps: pd,
                        attention_masked_s: am,
                        attention_dense_s: ad,
                    })
                }
            };
            let errors = verify::weights::weight_errors(&src, &cand.source)?;
            let thresholds = t.thresholds.or(&cfg.thresholds);
            let checks = thresholds.check(&parity);
            let mut types: BTreeMap<String, usize> = BTreeMap::new();
            for r in &q.report.tensors {
                *types.entry(r.ty.name().to_string()).or_default() += 1;
            }
            let report = TargetReport {
                name: t.name.clone(),
                ftype: t.ftype.to_uppercase(),
                imatrix: t.imatrix,
                file,
                sha256: file_sha256(&path)?,
                bytes: q.report.file_bytes,
                bits_per_weight: q.bits_per_weight(),
                ratio_to_fp32: q.report.file_bytes as f64 / fp32_bytes as f64,
                pass: checks.iter().all(|c| c.pass),
                checks,
                parity,
                bench,
                per_layer_error: verify::weights::per_layer(&errors),
                tensor_types: types.into_iter().collect(),
                masks,
                method,
            };
            cache
                .targets
                .insert(t.name.clone(), (keys[&t.name].clone(), report));
            save_cache(&cache_path, &cache)?;
        }
    }

    // 4. Reports and manifest, from the (possibly reused) results, in target order.
    let targets: Vec<TargetReport> = cfg
        .targets
        .iter()
        .map(|t| cache.targets[&t.name].1.clone())
        .collect();
    let targets = compare_with_baselines(&cfg, targets);
    let pass = targets.iter().all(|t| t.pass);
    let report = BuildReport {
        schema_version: SCHEMA_VERSION,
        kiln_version: env!("CARGO_PKG_VERSION").into(),
        model: model_name.clone(),
        model_sha256: model_sha.clone(),
        parameters: src.tensors().iter().map(|t| t.n_elements() as u64).sum(),
        fp32_bytes: src
            .tensors()
            .iter()
            .map(|t| t.n_elements() as u64 * 4)
            .sum(),
        calibration_texts: cfg
            .calibration
            .iter()
            .flat_map(|c| &c.texts)
            .map(|t| file_name(t))
            .collect(),
        evaluation_texts: eval.texts.iter().map(|t| file_name(t)).collect(),
        protocol: eval.protocol.clone(),
        ctx: eval.ctx,
        eval_chunks: targets.first().map_or(0, |t| t.parity.chunks),
        targets,
        pass,
    };
    write_reports(&out, &report, &plan.reports)?;
    let mut inputs = BTreeMap::new();
    inputs.insert("model".to_string(), model_sha.clone());
    for t in cfg
        .calibration
        .iter()
        .flat_map(|c| &c.texts)
        .chain(&eval.texts)
    {
        inputs.insert(file_name(t), file_sha256(t)?);
    }
    let mut artifacts = BTreeMap::new();
    for t in &report.targets {
        artifacts.insert(t.file.clone(), t.sha256.clone());
    }
    if imatrix.is_some() {
        artifacts.insert("imatrix.gguf".to_string(), file_sha256(&imatrix_path)?);
    }
    let mut manifest = serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "kiln_version": env!("CARGO_PKG_VERSION"),
        "config": relative_config(full, &plan.file),
        "inputs": inputs,
        "artifacts": artifacts,
    });
    if !plan.only.is_empty() {
        // One job of several: `kiln build merge` reads which targets it built.
        manifest["targets_built"] = cfg.targets.iter().map(|t| t.name.clone()).collect();
    }
    write_json(&out.join("manifest.json"), &manifest)?;
    Ok(BuildOutcome { report, out })
}

/// A value's JSON (for reuse keys).
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("build file sections serialize")
}

/// `v` as pretty JSON and a newline at `path`, atomically.
fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("report data serializes") + "\n";
    convert::atomic::write_file(path, text.as_bytes())?;
    Ok(())
}

/// report.json of `report` in `out`, and the rendered report files.
fn write_reports(out: &Path, report: &BuildReport, files: &[ReportFile]) -> Result<()> {
    write_json(&out.join("report.json"), report)?;
    for f in files {
        convert::atomic::write_file(out.join(&f.name), (f.render)(report).as_bytes())?;
    }
    Ok(())
}

/// One `kiln build --target` job's output directory, as `kiln build merge` reads it.
struct JobDir {
    dir: PathBuf,
    manifest: serde_json::Value,
    report: BuildReport,
    cache: Cache,
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let b = std::fs::read(p).map_err(|e| Error::io(p, "cannot read", e))?;
    serde_json::from_slice(&b).map_err(|e| Error::Json {
        path: p.into(),
        source: e,
    })
}

/// Refuses a merge: missing, duplicated or foreign work.
macro_rules! refuse {
    ($($t:tt)*) => {
        return Err(Error::Merge { msg: format!($($t)*) })
    };
}

/// `kiln build merge FILE DIR… -o OUT`: the directories of `kiln build --target` jobs (each
/// target built once, from the same build file, model, texts and kiln) combined into the
/// directory one `kiln build` writes — the same artifacts and manifest bytes, the report of all
/// targets (baseline comparisons filled in across jobs) — and its cache, so a later `kiln
/// build` into OUT reuses every target. Checks everything before writing anything.
/// `reports` are rendered as a build's are.
pub fn merge(
    file: &Path,
    dirs: &[PathBuf],
    out: &Path,
    reports: &[ReportFile],
    obs: &dyn Observer,
) -> Result<BuildOutcome> {
    let cfg = BuildFile::load(file)?;
    let want_config = relative_config(&cfg, file);
    let mut jobs = Vec::new();
    for d in dirs {
        let job = JobDir {
            dir: d.clone(),
            manifest: read_json(&d.join("manifest.json"))?,
            report: read_json(&d.join("report.json"))?,
            cache: read_json(&d.join(".kiln-cache.json")).unwrap_or_default(),
        };
        if job.manifest["config"] != want_config {
            refuse!(
                "{}: built from another build file or configuration than {} (a foreign job)",
                d.display(),
                file.display()
            );
        }
        if let Some(first) = jobs.first() {
            let first: &JobDir = first;
            for key in ["inputs", "kiln_version", "schema_version"] {
                if job.manifest[key] != first.manifest[key] {
                    refuse!(
                        "{}: its {key} differ from {}'s (a foreign job: another model, text or kiln)",
                        d.display(),
                        first.dir.display()
                    );
                }
            }
        }
        jobs.push(job);
    }
    // Each target from exactly one job.
    let mut from: BTreeMap<String, (usize, TargetReport)> = BTreeMap::new();
    for (j, job) in jobs.iter().enumerate() {
        for t in &job.report.targets {
            if !cfg.targets.iter().any(|c| c.name == t.name) {
                refuse!(
                    "{}: target `{}` is not in {}",
                    job.dir.display(),
                    t.name,
                    file.display()
                );
            }
            if let Some((k, _)) = from.get(&t.name) {
                refuse!(
                    "target `{}` was built by {} and by {} (a duplicated job)",
                    t.name,
                    jobs[*k].dir.display(),
                    job.dir.display()
                );
            }
            let art = job.dir.join(&t.file);
            if file_sha256(&art).ok().as_deref() != Some(t.sha256.as_str()) {
                refuse!(
                    "{}: missing, or not the file its report describes",
                    art.display()
                );
            }
            from.insert(t.name.clone(), (j, t.clone()));
        }
    }
    let missing: Vec<&str> = cfg
        .targets
        .iter()
        .filter(|t| !from.contains_key(&t.name))
        .map(|t| t.name.as_str())
        .collect();
    if !missing.is_empty() {
        refuse!(
            "target(s) {} of {} were built by none of the directories",
            missing.join(", "),
            file.display()
        );
    }
    let imatrix = if cfg.targets.iter().any(|t| t.imatrix) {
        let shas: Vec<(&JobDir, String)> = jobs
            .iter()
            .filter(|j| j.manifest["artifacts"].get("imatrix.gguf").is_some())
            .map(|j| Ok((j, file_sha256(&j.dir.join("imatrix.gguf"))?)))
            .collect::<Result<_>>()?;
        let Some((first, sha)) = shas.first() else {
            refuse!("no directory holds the imatrix.gguf the targets with `imatrix = true` used");
        };
        if let Some((j, _)) = shas.iter().find(|(_, s)| s != sha) {
            refuse!(
                "{}: its imatrix.gguf differs from {}'s (a foreign job)",
                j.dir.display(),
                first.dir.display()
            );
        }
        Some((first.dir.join("imatrix.gguf"), sha.clone()))
    } else {
        None
    };

    // Everything checked: write.
    std::fs::create_dir_all(out)
        .map_err(|e| Error::io(out, "cannot create the output directory", e))?;
    let targets: Vec<TargetReport> = cfg
        .targets
        .iter()
        .map(|t| from[&t.name].1.clone())
        .collect();
    let mut cache = Cache::default();
    for t in &targets {
        let (j, _) = &from[&t.name];
        copy_atomic(&jobs[*j].dir.join(&t.file), &out.join(&t.file))?;
        if let Some(c) = jobs[*j].cache.targets.get(&t.name) {
            cache.targets.insert(t.name.clone(), c.clone());
        }
    }
    let mut artifacts = BTreeMap::new();
    for t in &targets {
        artifacts.insert(t.file.clone(), t.sha256.clone());
    }
    if let Some((p, sha)) = &imatrix {
        copy_atomic(p, &out.join("imatrix.gguf"))?;
        artifacts.insert("imatrix.gguf".to_string(), sha.clone());
        cache.imatrix_key = jobs.iter().find_map(|j| j.cache.imatrix_key.clone());
    }
    let targets = compare_with_baselines(&cfg, targets);
    let first = &jobs[0].report;
    let pass = targets.iter().all(|t| t.pass);
    let report = BuildReport {
        eval_chunks: targets.first().map_or(0, |t| t.parity.chunks),
        targets,
        pass,
        ..first.clone()
    };
    write_reports(out, &report, reports)?;
    let mut manifest = jobs[0].manifest.clone();
    manifest["artifacts"] = serde_json::json!(artifacts);
    if let Some(m) = manifest.as_object_mut() {
        m.remove("targets_built");
    }
    write_json(&out.join("manifest.json"), &manifest)?;
    save_cache(&out.join(".kiln-cache.json"), &cache)?;
    obs.note(&format!(
        "kiln build merge: {} targets from {} directories → {}",
        report.targets.len(),
        jobs.len(),
        out.display()
    ));
    Ok(BuildOutcome {
        report,
        out: out.into(),
    })
}

/// Copies `from` to `to` through a temporary file beside `to`.
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    if from.canonicalize().ok() == to.canonicalize().ok() && to.exists() {
        return Ok(());
    }
    let mut f = convert::atomic::AtomicFile::create(to)?;
    let mut src = std::fs::File::open(from).map_err(|e| Error::io(from, "cannot read", e))?;
    std::io::copy(&mut src, f.writer()).map_err(|e| Error::io(to, "cannot write", e))?;
    f.commit()?;
    Ok(())
}

/// The resolved config with paths relative to the build file (so the manifest does not depend
/// on where the checkout lives).
fn relative_config(cfg: &BuildFile, file: &Path) -> serde_json::Value {
    let base = file.parent().unwrap_or(Path::new("."));
    let rel = |p: &Path| p.strip_prefix(base).unwrap_or(p).display().to_string();
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    v["model"]["path"] = rel(&cfg.model.path).into();
    if let Some(c) = &cfg.calibration {
        v["calibration"]["texts"] = c.texts.iter().map(|t| rel(t)).collect::<Vec<_>>().into();
    }
    v["evaluation"]["texts"] = cfg
        .evaluation
        .texts
        .iter()
        .map(|t| rel(t))
        .collect::<Vec<_>>()
        .into();
    v
}

fn save_cache(path: &Path, cache: &Cache) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(cache).expect("the cache serializes");
    convert::atomic::write_file(path, &bytes)?;
    Ok(())
}
