//! A build (`kiln build kiln.toml`): calibrate once, then quantize, verify and benchmark every
//! target, and write the artifacts, the reports and the manifest. Finished work is reused when
//! nothing it depends on changed, so a rerun writes identical bytes. A build may be split into
//! jobs by target ([`BuildPlan::only`]), whose directories [`merge`] combines into the one a
//! single build writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use calibrate::{CalibOptions, Imatrix};
use convert::lora::{LoraAdapter, LoraSpec};
use convert::ModelSource;
use quantize::mix::{Ftype, MixOptions};
use quantize::GgmlType;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use verify::eval::{EvalOptions, Protocol};
use verify::load::LoraLoad;
use verify::report::{AdapterInfo, BuildReport, CombinationReport, TargetReport, SCHEMA_VERSION};

use crate::buildfile::{AdapterSection, BuildFile, TargetSection};
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
    /// Importance matrices by file ([`imatrix_file`]): their keys.
    #[serde(default)]
    imatrices: BTreeMap<String, String>,
    targets: BTreeMap<String, (String, TargetReport)>,
    /// Adapter artifacts by `[[adapter]]` name: their keys and report data.
    #[serde(default)]
    adapters: BTreeMap<String, (String, AdapterInfo)>,
}

fn sha_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    convert::tokenizer::hex(&h.finalize())
}

/// The prefix of a build's artifact names.
fn model_name(cfg: &BuildFile) -> String {
    cfg.model.name.clone().unwrap_or_else(|| {
        cfg.model
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    })
}

/// The importance matrix of the model with the adapters `lora` merged.
fn imatrix_file(lora: &[String]) -> String {
    if lora.is_empty() {
        "imatrix.gguf".into()
    } else {
        format!("imatrix+{}.gguf", lora.join("+"))
    }
}

/// An `[[adapter]]`'s artifact.
fn adapter_file(model: &str, adapter: &str) -> String {
    format!("{model}-{adapter}.lora.gguf")
}

/// The files besides their artifacts that `targets` need in the output directory: the
/// importance matrices they were quantized with and the adapters they ship with.
fn side_files<'a>(
    cfg: &BuildFile,
    targets: impl IntoIterator<Item = &'a TargetSection>,
) -> Vec<String> {
    let model = model_name(cfg);
    let mut files: Vec<String> = Vec::new();
    for t in targets {
        let mut mine = Vec::new();
        if t.imatrix {
            mine.push(imatrix_file(&t.lora));
        }
        mine.extend(t.adapters.iter().map(|a| adapter_file(&model, a)));
        for f in mine {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    files
}

/// One verification of a build: the index of a new artifact, and the shipped adapter it runs
/// with (none: the artifact alone).
type Unit = (usize, Option<String>);

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
    let model_name = model_name(&cfg);
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

    // The adapters: their sources' digests (inputs of everything that uses them).
    let section = |n: &str| {
        cfg.adapters
            .iter()
            .find(|a| a.name == n)
            .expect("validated: targets name declared adapters")
    };
    let specs =
        |names: &[String]| -> Vec<LoraSpec> { names.iter().map(|n| section(n).spec()).collect() };
    let mut adapter_keys: BTreeMap<String, String> = BTreeMap::new();
    let mut adapter_shas: BTreeMap<String, String> = BTreeMap::new();
    for a in &full.adapters {
        let sha = LoraAdapter::open(&a.path, src.config())?.sha256()?;
        adapter_keys.insert(
            a.name.clone(),
            sha_of(&[version, &model_sha, &json(a), &sha]),
        );
        adapter_shas.insert(a.name.clone(), sha);
    }
    // The model each set of merged adapters makes, and its digest.
    let mut merged: BTreeMap<Vec<String>, (ModelSource, String)> = BTreeMap::new();
    for t in &cfg.targets {
        if !t.lora.is_empty() && !merged.contains_key(&t.lora) {
            let m = ModelSource::open_with_lora(&cfg.model.path, &specs(&t.lora))?;
            // The base is hashed once, above.
            let sha = convert::source::merged_sha256(&model_sha, m.lora())?;
            merged.insert(t.lora.clone(), (m, sha));
        }
    }
    let source_of = |lora: &[String]| -> (&ModelSource, &str) {
        match merged.get(lora) {
            Some((m, sha)) => (m, sha.as_str()),
            None => (&src, model_sha.as_str()),
        }
    };

    // 1. Calibration, once per set of merged adapters, if any target needs it: the imatrix of
    //    the model the target is quantized from.
    let mut imatrices: BTreeMap<Vec<String>, (Imatrix, String, String)> = BTreeMap::new();
    for t in cfg.targets.iter().filter(|t| t.imatrix) {
        if imatrices.contains_key(&t.lora) {
            continue;
        }
        let c = cfg.calibration.as_ref().expect("validated");
        let file = imatrix_file(&t.lora);
        let path = out.join(&file);
        let (_, set_sha) = source_of(&t.lora);
        let key = sha_of(&[version, set_sha, &json(c), &text_hashes(&c.texts)?]);
        let m = if cache.imatrices.get(&file) == Some(&key) && path.exists() {
            say(format!("calibration: reusing {file}"));
            Imatrix::read(&path)?
        } else {
            let reference =
                verify::load::load_with(&cfg.model.path, &LoraLoad::merged(&specs(&t.lora)))?;
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
            let stage = if t.lora.is_empty() {
                "calibrate".to_string()
            } else {
                format!("calibrate (+{})", t.lora.join(" +"))
            };
            let m = calibrate::calibrate(&reference.model, &tokens, &opts, |d, n| {
                obs.step(&stage, d, n, "chunks")
            })?;
            obs.finish(&stage);
            m.write(&path)?;
            cache.imatrices.insert(file.clone(), key.clone());
            save_cache(&cache_path, &cache)?;
            m
        };
        imatrices.insert(t.lora.clone(), (m, file, key));
    }

    // 2. The adapter artifacts the targets ship with, each written once (with its strength
    //    in its alpha, so llama.cpp's plain `--lora FILE` runs it as verified).
    let shipped: Vec<&AdapterSection> = cfg
        .adapters
        .iter()
        .filter(|a| cfg.targets.iter().any(|t| t.adapters.contains(&a.name)))
        .collect();
    for a in &shipped {
        let file = adapter_file(&model_name, &a.name);
        let path = out.join(&file);
        let key = &adapter_keys[&a.name];
        let done = cache.adapters.get(&a.name).is_some_and(|(k, r)| {
            k == key && file_sha256(&path).map(|h| h == r.sha256).unwrap_or(false)
        });
        if done {
            say(format!("adapter {}: reusing {file}", a.name));
            continue;
        }
        say(format!("adapter {}: writing {file}", a.name));
        let ty = a.ggml_type().map_err(Error::Options)?;
        let adapter = LoraAdapter::open(&a.path, src.config())?;
        let r = convert::lora::write_adapter(
            &adapter,
            src.config(),
            &path,
            ty,
            Some(&a.name),
            a.scale,
        )?;
        for t in &r.f16_fallbacks {
            say(format!(
                "adapter {}: {t} stored as F16: its rows do not fit {ty}'s blocks",
                a.name
            ));
        }
        let info = AdapterInfo {
            name: a.name.clone(),
            source: file_name(&a.path),
            source_sha256: adapter_shas[&a.name].clone(),
            scale: a.scale,
            file: file.clone(),
            sha256: file_sha256(&path)?,
            bytes: r.file_bytes,
            ty: ty.name().to_uppercase(),
            ranks: r.ranks,
            alpha: r.alpha,
            modules: r.modules,
            tensors: r.n_targets,
        };
        cache.adapters.insert(a.name.clone(), (key.clone(), info));
        save_cache(&cache_path, &cache)?;
    }

    // 3. Quantize each target whose work is not already done.
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
    let mut masks_done: BTreeMap<String, crate::masks::MaskOutcome> = BTreeMap::new();
    for t in &cfg.targets {
        let file = format!("{model_name}-{}.gguf", t.name);
        let path = out.join(&file);
        let (tsrc, set_sha) = source_of(&t.lora);
        let im_key = if t.imatrix {
            imatrices[&t.lora].2.as_str()
        } else {
            ""
        };
        let shipped_keys: Vec<&str> = t
            .adapters
            .iter()
            .map(|a| adapter_keys[a].as_str())
            .collect();
        let key = sha_of(&[
            version,
            set_sha,
            im_key,
            &json(t),
            &json(&cfg.thresholds),
            &eval_key,
            &shipped_keys.join(","),
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
        let lora = specs(&t.lora);
        let mut extra_meta = Vec::new();
        if !t.lora.is_empty() {
            extra_meta.push((
                "kiln.lora.merged".to_string(),
                convert::gguf::Value::String(
                    t.lora
                        .iter()
                        .map(|n| format!("{n}:{}", section(n).scale))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            ));
        }
        let mut mask = None;
        if let Some(ms) = &t.attention_masks {
            let key = format!("{:?} {}", t.lora, json(ms));
            if !masks_done.contains_key(&key) {
                say(match ms.max_kld {
                    Some(k) => format!(
                        "{}: deriving attention masks (max KLD {k} at ctx {}, block {}, calibrated at ctx {})",
                        t.name,
                        ms.eval_ctx(),
                        ms.block,
                        ms.ctx
                    ),
                    None => format!(
                        "{}: deriving attention masks (coverage {}, block {}, ctx {})",
                        t.name,
                        ms.fixed_coverage(),
                        ms.block,
                        ms.ctx
                    ),
                });
                let texts = &cfg.calibration.as_ref().expect("validated").texts;
                let derived = crate::masks::derive_mask(
                    &cfg.model.path,
                    &lora,
                    texts,
                    &eval.texts,
                    None,
                    ms,
                    cfg.model.tokenizer_pre.as_deref(),
                    obs,
                )?;
                masks_done.insert(key.clone(), derived);
            }
            let outcome = &masks_done[&key];
            extra_meta.extend(outcome.metadata(ms));
            mask = Some((outcome.clone(), *ms));
        }
        say(format!(
            "{}: quantizing to {ftype}{}{}",
            t.name,
            if t.imatrix { " with the imatrix" } else { "" },
            if t.lora.is_empty() {
                String::new()
            } else {
                format!(" (merged: {})", t.lora.join(", "))
            }
        ));
        let im = if t.imatrix {
            imatrices
                .get(&t.lora)
                .map(|(m, f, _)| (m, out.join(f), f.as_str()))
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
                &lora,
                ftype,
                &opts,
                im.as_ref().map(|(m, _, _)| *m),
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
            tsrc,
            Artifact {
                out: &path,
                ftype,
                imatrix: im.as_ref().map(|(m, p, _)| (*m, p.as_path())),
                imatrix_name: im.as_ref().map(|(_, _, f)| *f),
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

    // 4. Verify the new artifacts against the FP32 model with their merged adapters, and each
    //    artifact + shipped adapter at run time against the FP32 model with that adapter merged
    //    too (one reference run per set of adapters), and benchmark them.
    if !todo.is_empty() {
        let tokens = tokenize_files(&tok, &eval.texts)?;
        let opts = EvalOptions {
            ctx: eval.ctx,
            chunks: eval.chunks,
            protocol,
            bos,
            ..Default::default()
        };
        verify::eval::n_chunks(tokens.len(), &opts)?;
        let cands: Vec<verify::load::Loaded> = todo
            .iter()
            .map(|t| verify::load::load(&t.2))
            .collect::<Result<_, _>>()?;
        // (todo index, shipped adapter) by the adapters their reference merges, in first-use
        // order.
        let mut groups: Vec<(Vec<String>, Vec<Unit>)> = Vec::new();
        let mut add =
            |set: Vec<String>, unit: Unit| match groups.iter_mut().find(|(s, _)| *s == set) {
                Some((_, u)) => u.push(unit),
                None => groups.push((set, vec![unit])),
            };
        for (i, t) in todo.iter().enumerate() {
            add(t.0.lora.clone(), (i, None));
            for a in &t.0.adapters {
                let mut set = t.0.lora.clone();
                set.push(a.clone());
                add(set, (i, Some(a.clone())));
            }
        }
        let mut parities: Vec<Option<verify::parity::Parity>> = vec![None; todo.len()];
        let mut combos: Vec<Vec<CombinationReport>> = vec![Vec::new(); todo.len()];
        for (set, units) in &groups {
            let reference =
                verify::load::load_with(&cfg.model.path, &LoraLoad::merged(&specs(set)))?;
            let with_adapter: Vec<Option<verify::load::Loaded>> = units
                .iter()
                .map(|(i, a)| {
                    a.as_ref()
                        .map(|a| {
                            verify::load::load_with(
                                &todo[*i].2,
                                &LoraLoad::runtime(&[LoraSpec {
                                    path: out.join(adapter_file(&model_name, a)),
                                    scale: 1.0,
                                }]),
                            )
                        })
                        .transpose()
                })
                .collect::<Result<_, _>>()?;
            let masked: Vec<verify::eval::Masked> = units
                .iter()
                .zip(&with_adapter)
                .map(|((i, _), w)| {
                    (
                        w.as_ref().map_or(&cands[*i].model, |l| &l.model),
                        todo[*i].4.as_ref().map(|(o, _)| &o.mask),
                    )
                })
                .collect();
            let stage = if set.is_empty() {
                "verify".to_string()
            } else {
                format!("verify (+{})", set.join(" +"))
            };
            let got = verify::parity::compare_masked(
                (&reference.model, None),
                &masked,
                &tokens,
                &opts,
                |d, n| obs.step(&stage, d, n, "chunks"),
            )?;
            obs.finish(&stage);
            for (((i, a), w), parity) in units.iter().zip(&with_adapter).zip(got) {
                let (Some(a), Some(w)) = (a, w) else {
                    parities[*i] = Some(parity);
                    continue;
                };
                let t = &todo[*i].0;
                say(format!("{} + {a}: benchmarking", t.name));
                let b = &cfg.bench;
                let mask = todo[*i].4.as_ref().map(|(o, _)| &o.mask);
                let bench = verify::bench::run(&w.model, mask, b.pp, b.tg, b.reps)?;
                let checks = t.thresholds.or(&cfg.thresholds).check(&parity);
                combos[*i].push(CombinationReport {
                    adapter: a.clone(),
                    file: adapter_file(&model_name, a),
                    bytes: todo[*i].3.report.file_bytes + cache.adapters[a].1.bytes,
                    pass: checks.iter().all(|c| c.pass),
                    checks,
                    parity,
                    bench,
                });
            }
        }
        let fp32_bytes: u64 = src
            .tensors()
            .iter()
            .map(|t| t.n_elements() as u64 * 4)
            .sum();
        for ((((t, file, path, q, mask, method), cand), parity), combinations) in
            todo.into_iter().zip(&cands).zip(parities).zip(combos)
        {
            let parity = parity.expect("every artifact is verified");
            say(format!("{}: benchmarking", t.name));
            let b = &cfg.bench;
            let bench = verify::bench::run(&cand.model, None, b.pp, b.tg, b.reps)?;
            let masks = match &mask {
                None => None,
                Some((outcome, ms)) => {
                    let m = &outcome.mask;
                    say(format!(
                        "{}: masked against dense, and prefill at {} tokens",
                        t.name,
                        ms.eval_ctx()
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
                    let masked = verify::bench::run(&cand.model, Some(m), ms.eval_ctx(), 0, 1)?;
                    let dense = verify::bench::run(&cand.model, None, ms.eval_ctx(), 0, 1)?;
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
                        coverage: outcome.coverage,
                        block: ms.block,
                        ctx: ms.eval_ctx(),
                        density: masked.pp_density,
                        dense_heads,
                        heads,
                        vs_dense,
                        prefill_masked_tps: pm,
                        prefill_dense_tps: pd,
                        attention_masked_s: am,
                        attention_dense_s: ad,
                        max_kld: ms.max_kld,
                        kind: outcome.kind.clone(),
                        curve: outcome.curve.clone(),
                    })
                }
            };
            // The weights' error against the model the artifact was quantized from.
            let errors = verify::weights::weight_errors(source_of(&t.lora).0, &cand.source)?;
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
                pass: checks.iter().all(|c| c.pass) && combinations.iter().all(|c| c.pass),
                checks,
                parity,
                bench,
                per_layer_error: verify::weights::per_layer(&errors),
                tensor_types: types.into_iter().collect(),
                masks,
                method,
                lora: t.lora.clone(),
                combinations,
            };
            cache
                .targets
                .insert(t.name.clone(), (keys[&t.name].clone(), report));
            save_cache(&cache_path, &cache)?;
        }
    }

    // 5. Reports and manifest, from the (possibly reused) results, in target order.
    let targets: Vec<TargetReport> = cfg
        .targets
        .iter()
        .map(|t| cache.targets[&t.name].1.clone())
        .collect();
    let targets = compare_with_baselines(&cfg, targets);
    let pass = targets.iter().all(|t| t.pass);
    let adapters: Vec<AdapterInfo> = shipped
        .iter()
        .map(|a| cache.adapters[&a.name].1.clone())
        .collect();
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
        adapters,
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
    for (name, sha) in &adapter_shas {
        inputs.insert(format!("adapter:{name}"), sha.clone());
    }
    let mut artifacts = BTreeMap::new();
    for t in &report.targets {
        artifacts.insert(t.file.clone(), t.sha256.clone());
    }
    for f in side_files(&cfg, &cfg.targets) {
        artifacts.insert(f.clone(), file_sha256(&out.join(&f))?);
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
    // The importance matrices and adapter artifacts the targets need, each from the jobs
    // holding it (all of them the same file).
    let mut sides: Vec<(String, PathBuf, String)> = Vec::new();
    for f in side_files(&cfg, &cfg.targets) {
        let shas: Vec<(&JobDir, String)> = jobs
            .iter()
            .filter(|j| j.manifest["artifacts"].get(&f).is_some())
            .map(|j| Ok((j, file_sha256(&j.dir.join(&f))?)))
            .collect::<Result<_>>()?;
        let Some((first, sha)) = shas.first() else {
            refuse!("no directory holds the {f} the targets need");
        };
        if let Some((j, _)) = shas.iter().find(|(_, s)| s != sha) {
            refuse!(
                "{}: its {f} differs from {}'s (a foreign job)",
                j.dir.display(),
                first.dir.display()
            );
        }
        sides.push((f.clone(), first.dir.join(&f), sha.clone()));
    }

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
    for (f, p, sha) in &sides {
        copy_atomic(p, &out.join(f))?;
        artifacts.insert(f.clone(), sha.clone());
        for j in &jobs {
            if let Some(k) = j.cache.imatrices.get(f) {
                cache.imatrices.insert(f.clone(), k.clone());
            }
        }
    }
    // Adapter artifacts: their report data and reuse keys, in build-file order.
    let mut adapters = Vec::new();
    for a in &cfg.adapters {
        if !cfg.targets.iter().any(|t| t.adapters.contains(&a.name)) {
            continue;
        }
        let Some(info) = jobs
            .iter()
            .find_map(|j| j.report.adapters.iter().find(|x| x.name == a.name))
        else {
            refuse!("no directory's report describes adapter `{}`", a.name);
        };
        adapters.push(info.clone());
        if let Some(c) = jobs.iter().find_map(|j| j.cache.adapters.get(&a.name)) {
            cache.adapters.insert(a.name.clone(), c.clone());
        }
    }
    let targets = compare_with_baselines(&cfg, targets);
    let first = &jobs[0].report;
    let pass = targets.iter().all(|t| t.pass);
    let report = BuildReport {
        eval_chunks: targets.first().map_or(0, |t| t.parity.chunks),
        targets,
        adapters,
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
    for (i, a) in cfg.adapters.iter().enumerate() {
        v["adapter"][i]["path"] = rel(&a.path).into();
    }
    v
}

fn save_cache(path: &Path, cache: &Cache) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(cache).expect("the cache serializes");
    convert::atomic::write_file(path, &bytes)?;
    Ok(())
}
