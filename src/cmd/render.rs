//! Rendering report data: text, Markdown, JUnit XML, and the self-contained HTML build report
//! with SVG plots.

use verify::parity::{Check, Parity};
use verify::report::{BenchResult, BuildReport, MaskPoint, VerifyReport};

use super::{human_bytes, ranks};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn verify_text(r: &VerifyReport) -> String {
    let p = &r.parity;
    let mut s = format!(
        "reference {}\ncandidate {}\ntext {} ({} protocol, ctx {}, {} chunks, {} scored positions)\nkernel {}\n\n",
        r.reference, r.candidate, r.text, r.protocol, r.ctx, p.chunks, p.n_scored, r.simd
    );
    s += &format!(
        "KLD        mean {:.6}  median {:.6}  p99 {:.6}  max {:.6}\n",
        p.kld.mean, p.kld.median, p.kld.p99, p.kld.max
    );
    s += &format!("top-1      {:.3} %\n", 100.0 * p.top1);
    s += &format!(
        "perplexity reference {:.4}  candidate {:.4}  ratio {:.5}\n",
        p.ppl_reference, p.ppl_candidate, p.ppl_ratio
    );
    s += &format!(
        "Δp         mean {:+.5}  rms {:.5}\n",
        p.delta_p_mean, p.delta_p_rms
    );
    let mut worst: Vec<_> = r.tensors.iter().collect();
    worst.sort_by(|a, b| b.rel.total_cmp(&a.rel));
    s += "\nlargest weight errors:\n";
    for t in worst.iter().take(8) {
        s += &format!(
            "  {:<32} {:<5} rel {:.5}  rmse {:.3e}  cos {:.6}\n",
            t.name, t.ty, t.rel, t.rmse, t.cosine
        );
    }
    s += "\nchecks:\n";
    if r.checks.is_empty() {
        s += "  (no thresholds given)\n";
    }
    for c in &r.checks {
        s += &format!("  {}\n", c.describe());
    }
    s += &format!("\nresult: {}\n", if r.pass { "PASS" } else { "FAIL" });
    s
}

pub fn verify_md(r: &VerifyReport) -> String {
    let p = &r.parity;
    let mut s = format!(
        "# kiln verify: {}\n\nReference `{}`, text `{}` ({} protocol, ctx {}, {} positions).\n\n",
        r.candidate, r.reference, r.text, r.protocol, r.ctx, p.n_scored
    );
    s += "| metric | value |\n| --- | ---: |\n";
    s += &format!(
        "| KLD mean | {:.6} |\n| KLD median | {:.6} |\n| KLD p99 | {:.6} |\n| KLD max | {:.6} |\n",
        p.kld.mean, p.kld.median, p.kld.p99, p.kld.max
    );
    s += &format!("| top-1 | {:.3} % |\n| PPL reference | {:.4} |\n| PPL candidate | {:.4} |\n| PPL ratio | {:.5} |\n", 100.0 * p.top1, p.ppl_reference, p.ppl_candidate, p.ppl_ratio);
    s += &format!(
        "| Δp mean | {:+.5} |\n| Δp rms | {:.5} |\n\n",
        p.delta_p_mean, p.delta_p_rms
    );
    if !r.checks.is_empty() {
        s += "| check | value | limit | result |\n| --- | ---: | ---: | --- |\n";
        for c in &r.checks {
            s += &format!(
                "| {} | {:.6} | {} | {} |\n",
                c.name,
                c.value,
                c.limit,
                if c.pass { "pass" } else { "**FAIL**" }
            );
        }
    }
    s += &format!("\n**{}**\n", if r.pass { "PASS" } else { "FAIL" });
    s
}

pub fn verify_junit(r: &VerifyReport) -> String {
    let failures = r.checks.iter().filter(|c| !c.pass).count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s += &format!(
        "<testsuites name=\"kiln verify\" tests=\"{}\" failures=\"{failures}\">\n",
        r.checks.len()
    );
    s += &format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">\n",
        esc(&r.candidate),
        r.checks.len()
    );
    for c in &r.checks {
        s += &format!(
            "    <testcase classname=\"kiln.verify\" name=\"{}\">\n",
            esc(&c.name)
        );
        if !c.pass {
            s += &format!(
                "      <failure message=\"{}\">{}</failure>\n",
                esc(&c.describe()),
                esc(&c.describe())
            );
        }
        s += &format!(
            "      <system-out>{}</system-out>\n    </testcase>\n",
            esc(&c.describe())
        );
    }
    s += "  </testsuite>\n</testsuites>\n";
    s
}

/// The checks that failed, described, `; `-separated.
pub fn failed_checks(checks: &[Check]) -> String {
    checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.describe())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A row of a build's targets table: a target, or a target's artifact + one of its adapters
/// at run time (no bits per weight or share of FP32 of its own).
struct Row<'a> {
    name: String,
    ftype: &'a str,
    imatrix: bool,
    bytes: u64,
    /// Bits per weight and bytes / FP32 bytes.
    size: Option<(f64, f64)>,
    parity: &'a Parity,
    bench: &'a BenchResult,
    pass: bool,
}

impl Row<'_> {
    /// The cells between the name and the result.
    fn cells(&self) -> Vec<String> {
        let p = self.parity;
        vec![
            self.ftype.to_string(),
            if self.imatrix { "yes" } else { "no" }.to_string(),
            human_bytes(self.bytes),
            self.size.map_or(String::new(), |(b, _)| format!("{b:.2}")),
            self.size
                .map_or(String::new(), |(_, f)| format!("{:.1} %", 100.0 * f)),
            format!("{:.5}", p.kld.mean),
            format!("{:.4}", p.kld.p99),
            format!("{:.2} %", 100.0 * p.top1),
            format!("{:.3}", p.ppl_candidate),
            format!("{:.4}", p.ppl_ratio),
            format!("{:.1}", self.bench.pp_tokens_per_s),
            format!("{:.1}", self.bench.tg_tokens_per_s),
        ]
    }
}

/// The targets table's rows: each target, then its artifact with each of its adapters.
fn rows(r: &BuildReport) -> Vec<Row<'_>> {
    r.targets
        .iter()
        .flat_map(|t| {
            let own = Row {
                name: t.name.clone(),
                ftype: &t.ftype,
                imatrix: t.imatrix,
                bytes: t.bytes,
                size: Some((t.bits_per_weight, t.ratio_to_fp32)),
                parity: &t.parity,
                bench: &t.bench,
                pass: t.pass,
            };
            std::iter::once(own).chain(t.combinations.iter().map(|c| Row {
                name: format!("{} + {}", t.name, c.adapter),
                ftype: &t.ftype,
                imatrix: t.imatrix,
                bytes: c.bytes,
                size: None,
                parity: &c.parity,
                bench: &c.bench,
                pass: c.pass,
            }))
        })
        .collect()
}

pub fn build_md(r: &BuildReport) -> String {
    let mut s = format!(
        "# kiln build: {}\n\nkiln {} · {} parameters · FP32 {} · calibration: {} · evaluation: {} ({} protocol, ctx {}, {} chunks)\n\n",
        r.model,
        r.kiln_version,
        r.parameters,
        human_bytes(r.fp32_bytes),
        r.calibration_texts.join(", "),
        r.evaluation_texts.join(", "),
        r.protocol,
        r.ctx,
        r.eval_chunks
    );
    s += "| target | type | imatrix | size | bpw | vs FP32 | KLD mean | KLD p99 | top-1 | PPL | PPL ratio | prefill t/s | decode t/s | result |\n";
    s += "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n";
    for row in rows(r) {
        s += &format!(
            "| {} | {} | {} |\n",
            row.name,
            row.cells().join(" | "),
            if row.pass { "pass" } else { "**FAIL**" }
        );
    }
    if let Some(t) = r.targets.first() {
        s += &format!(
            "\nSpeed: kiln's kernel at SIMD level {}, {} threads.\n",
            t.bench.simd, t.bench.threads
        );
        s += &format!(
            "\nFP32 reference perplexity: {:.4}.\n",
            t.parity.ppl_reference
        );
    }
    for t in r.targets.iter().filter(|t| !t.pass) {
        if t.checks.iter().any(|c| !c.pass) {
            s += &format!("\n{} failed: {}\n", t.name, failed_checks(&t.checks));
        }
        for c in t.combinations.iter().filter(|c| !c.pass) {
            s += &format!(
                "\n{} + {} failed: {}\n",
                t.name,
                c.adapter,
                failed_checks(&c.checks)
            );
        }
    }
    s += &adapters_md(r);
    s += &masks_md(r);
    s += &methods_md(r);
    s
}

/// The adapter artifacts and the targets merged with adapters. A target's rows `T + A` are
/// its artifact with adapter `A` at run time against the FP32 model with `A` merged.
fn adapters_md(r: &BuildReport) -> String {
    let merged: Vec<_> = r.targets.iter().filter(|t| !t.lora.is_empty()).collect();
    if r.adapters.is_empty() && merged.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Adapters\n\n");
    if !r.adapters.is_empty() {
        s += "| adapter | source | scale | file | type | rank | alpha | modules | tensors | size |\n| --- | --- | ---: | --- | --- | ---: | ---: | --- | ---: | ---: |\n";
        for a in &r.adapters {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                a.name,
                a.source,
                a.scale,
                a.file,
                a.ty,
                ranks(&a.ranks),
                a.alpha,
                a.modules.join(", "),
                a.tensors,
                human_bytes(a.bytes)
            );
        }
        s += "\nA row `target + adapter` above is the target's artifact with the adapter applied at run time, against the FP32 model with the adapter merged.\n";
    }
    for t in merged {
        s += &format!(
            "\n{} is the model with {} merged before calibration and quantization; its reference is the FP32 model with the same merge.\n",
            t.name,
            t.lora.join(", ")
        );
    }
    s
}

/// kiln's methods against their llama.cpp-style baselines: bytes, KLD mean/p99, top-1 and
/// perplexity ratio of both, and the KLD ratio.
pub fn methods_md(r: &BuildReport) -> String {
    let rows: Vec<_> = r
        .targets
        .iter()
        .filter_map(|t| t.method.as_ref().map(|m| (t, m)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Calibration methods vs the llama.cpp imatrix baseline\n\n| target | methods | baseline | bytes (baseline → kiln) | KLD mean | KLD p99 | top-1 | PPL ratio | KLD ratio |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (t, m) in rows {
        let base = m.baseline.clone().unwrap_or_else(|| "(none)".into());
        let pair = |b: Option<f64>, k: f64, prec: usize| match b {
            Some(b) => format!("{b:.prec$} → {k:.prec$}"),
            None => format!("{k:.prec$}"),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            t.name,
            m.methods.join(", "),
            base,
            match m.baseline_bytes {
                Some(b) => format!("{b} → {}", t.bytes),
                None => t.bytes.to_string(),
            },
            pair(m.baseline_kld_mean, t.parity.kld.mean, 5),
            pair(m.baseline_kld_p99, t.parity.kld.p99, 4),
            match m.baseline_top1 {
                Some(b) => format!("{:.2} % → {:.2} %", 100.0 * b, 100.0 * t.parity.top1),
                None => format!("{:.2} %", 100.0 * t.parity.top1),
            },
            pair(m.baseline_ppl_ratio, t.parity.ppl_ratio, 4),
            m.kld_ratio.map_or("-".into(), |x| format!("{x:.3}×")),
        );
    }
    s
}

fn masks_md(r: &BuildReport) -> String {
    let masked: Vec<_> = r
        .targets
        .iter()
        .filter_map(|t| t.masks.as_ref().map(|m| (t, m)))
        .collect();
    if masked.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Block-sparse attention\n\n| target | coverage | block | density | dense heads | KLD vs dense | top-1 vs dense | KLD vs FP32 | prefill t/s masked / dense | attention s masked / dense |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (t, m) in masked {
        s += &format!(
            "| {} | {} | {} | {:.3} | {}/{} | {:.5} | {:.2} % | {:.5} | {:.1} / {:.1} (ctx {}) | {:.3} / {:.3} ({:.2}×) |\n",
            t.name,
            m.coverage,
            m.block,
            m.density,
            m.dense_heads,
            m.heads,
            m.vs_dense.kld.mean,
            100.0 * m.vs_dense.top1,
            t.parity.kld.mean,
            m.prefill_masked_tps,
            m.prefill_dense_tps,
            m.ctx,
            m.attention_masked_s,
            m.attention_dense_s,
            m.attention_dense_s / m.attention_masked_s.max(1e-9)
        );
    }
    for t in &r.targets {
        if let Some(m) = t.masks.as_ref().filter(|m| !m.curve.is_empty()) {
            s += &format!(
                "\n### {}: the ladder on held-out text (budget: mean KLD ≤ {}; shipped: {} {})\n\n",
                t.name,
                m.max_kld.unwrap_or(0.0),
                m.kind,
                m.coverage
            );
            s += &mask_curve_md(&m.curve);
        }
    }
    s
}

/// Size (MiB) against mean KLD (log), one labelled point per target, failing ones ringed.
fn svg_size_kld(r: &BuildReport) -> String {
    let series = r
        .targets
        .iter()
        .map(|t| super::plot::Series {
            name: format!("{} ({})", t.name, if t.pass { "pass" } else { "FAIL" }),
            points: vec![(
                t.bytes as f64 / (1 << 20) as f64,
                t.parity.kld.mean.max(1e-6),
            )],
            labels: vec![t.name.clone()],
            marked: vec![!t.pass],
            line: false,
        })
        .collect();
    plot_or_note(super::plot::Plot {
        id: "plot-size-kld",
        x_label: "size (MiB)",
        y_label: "mean KLD vs FP32 (nats)",
        log_y: true,
        series,
        hline: None,
        legend: plotters::prelude::SeriesLabelPosition::UpperRight,
        x_integer: false,
    })
}

/// Mean relative weight error per layer, one line per target.
fn svg_per_layer(r: &BuildReport) -> String {
    let series = r
        .targets
        .iter()
        .map(|t| super::plot::Series {
            name: t.name.clone(),
            points: t
                .per_layer_error
                .iter()
                .map(|&(l, e)| (l as f64, e))
                .collect(),
            labels: Vec::new(),
            marked: Vec::new(),
            line: true,
        })
        .collect();
    plot_or_note(super::plot::Plot {
        id: "plot-per-layer",
        x_label: "layer",
        y_label: "mean relative weight error",
        log_y: false,
        series,
        hline: None,
        legend: plotters::prelude::SeriesLabelPosition::UpperLeft,
        x_integer: true,
    })
}

/// The mask ladders of the targets that have one.
fn svg_masks(r: &BuildReport) -> String {
    r.targets
        .iter()
        .filter_map(|t| t.masks.as_ref().map(|m| (t, m)))
        .filter(|(_, m)| !m.curve.is_empty())
        .map(|(t, m)| {
            let id = format!("plot-masks-{}", t.name);
            let svg = super::plot::mask_curve(&id, &m.curve, m.max_kld)
                .unwrap_or_else(|e| format!("<p>{}</p>", esc(&e.to_string())));
            format!(
                "<figure><figcaption>{}: attention masks, KLD against dense over attention speed-up (ctx {})</figcaption>\n{svg}</figure>\n",
                esc(&t.name),
                m.ctx
            )
        })
        .collect()
}

fn plot_or_note(p: super::plot::Plot) -> String {
    p.svg()
        .unwrap_or_else(|e| format!("<p id=\"{}\">{}</p>", p.id, esc(&e.to_string())))
}

/// The self-contained HTML report: targets table and the two SVG plots, no external resources.
/// A small script marks the page as rendered (`data-ready`) after checking both plots exist.
pub fn build_html(r: &BuildReport) -> String {
    let md_rows: Vec<String> = rows(r)
        .iter()
        .map(|row| {
            let cells: String = row
                .cells()
                .iter()
                .map(|c| format!("<td>{}</td>", esc(c)))
                .collect();
            format!(
                "<tr class=\"{}\"><td>{}</td>{cells}<td>{}</td></tr>",
                if row.pass { "pass" } else { "fail" },
                esc(&row.name),
                if row.pass { "pass" } else { "FAIL" }
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>kiln build: {model}</title>\n<style>\n\
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}\n\
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }}\n\
th:first-child, td:first-child {{ text-align: left; }} tr.fail td {{ background: #fdd; }}\n\
.plots {{ display: flex; flex-wrap: wrap; gap: 2em; margin-top: 1.5em; }}\n\
</style>\n</head>\n<body>\n<h1>kiln build: {model}</h1>\n\
<p>kiln {ver} · {params} parameters · FP32 {fp32} · calibration: {cal} · evaluation: {ev} ({proto} protocol, ctx {ctx}, {chunks} chunks) · result: <strong id=\"result\">{result}</strong></p>\n\
<table id=\"targets\">\n<thead><tr><th>target</th><th>type</th><th>imatrix</th><th>size</th><th>bpw</th><th>vs FP32</th><th>KLD mean</th><th>KLD p99</th><th>top-1</th><th>PPL</th><th>PPL ratio</th><th>prefill t/s</th><th>decode t/s</th><th>result</th></tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n\
<div class=\"plots\">\n<figure><figcaption>Size against mean KL divergence</figcaption>\n{p1}</figure>\n<figure><figcaption>Per-layer weight error</figcaption>\n{p2}</figure>\n{p3}</div>\n\
{masks}\n<script>\n(function () {{\n  var ok = document.querySelectorAll('#targets tbody tr').length === {n} &&\n    document.getElementById('plot-size-kld') && document.getElementById('plot-per-layer');\n  document.body.setAttribute('data-ready', ok ? '1' : '0');\n}})();\n</script>\n</body>\n</html>\n",
        model = esc(&r.model),
        ver = esc(&r.kiln_version),
        params = r.parameters,
        fp32 = human_bytes(r.fp32_bytes),
        cal = esc(&r.calibration_texts.join(", ")),
        ev = esc(&r.evaluation_texts.join(", ")),
        proto = esc(&r.protocol),
        ctx = r.ctx,
        chunks = r.eval_chunks,
        result = if r.pass { "pass" } else { "FAIL" },
        rows = md_rows.join("\n"),
        p1 = svg_size_kld(r),
        p2 = svg_per_layer(r),
        p3 = svg_masks(r),
        n = md_rows.len(),
        masks = {
            let m = masks_md(r);
            let mut h = if m.is_empty() { String::new() } else { format!("<h2>Block-sparse attention</h2>\n<pre>{}</pre>", esc(m.trim())) };
            let a = adapters_md(r);
            if !a.is_empty() {
                h += &format!("\n<h2>Adapters</h2>\n<pre id=\"adapters\">{}</pre>", esc(a.trim_start_matches("\n## Adapters\n").trim()));
            }
            let k = methods_md(r);
            if !k.is_empty() {
                h += &format!("\n<h2>Calibration methods vs the llama.cpp imatrix baseline</h2>\n<pre id=\"methods\">{}</pre>", esc(k.trim()));
            }
            h
        },
    )
}

/// A mask ladder as a Markdown table: per setting, the context, measured density, KLD and top-1
/// against dense attention, and attention, prefill and decode speed-ups over dense measured in
/// the same run; the shipped point marked.
pub fn mask_curve_md(curve: &[MaskPoint]) -> String {
    let mut s = String::from("| kind | setting | ctx | density | scored | cost | KLD vs dense | KLD p99 | top-1 | attention s | ×attention | ×prefill | selection thread-s | decode t/s | ×decode | |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for p in curve {
        s += &format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.5} | {:.4} | {:.2} % | {:.2} | {:.2}× | {:.2}× | {:.3} | {} | {} | {} |\n",
            p.kind,
            p.setting,
            p.ctx,
            p.density,
            p.computed,
            p.cost,
            p.kld,
            p.kld_p99,
            100.0 * p.top1,
            p.attention_s,
            p.attention_speedup,
            p.prefill_speedup,
            p.selection_s,
            p.decode_tps.map_or("-".into(), |x| format!("{x:.1}")),
            p.decode_speedup.map_or("-".into(), |x| format!("{x:.2}×")),
            if p.chosen { "**shipped**" } else { "" }
        );
    }
    s
}

/// The ladder plot of `kiln masks --plot`.
pub fn mask_curve_svg(curve: &[MaskPoint], max_kld: Option<f64>) -> anyhow::Result<String> {
    super::plot::mask_curve("plot-masks", curve, max_kld)
}
