//! How far content-aware block selection is from a perfect one (issue #25's "what limits it").
//!
//! Runs the FP32 model over one context of text and, for every query of every global-layer
//! head, compares ways of choosing key blocks (64 tokens; the first block and the two most
//! recent always kept, as `kiln masks` does) by the density each needs to keep a target share
//! of the query's true attention mass:
//!
//! * `oracle`: blocks in order of their true mass, until the target — the best any per-query
//!   selection of these blocks can do;
//! * `quest`: kiln's selection ([`kernels::select_blocks`] on the Quest bounds), per head the
//!   lowest threshold of [`calibrate::masks::THRESHOLDS`] whose mean coverage reaches the
//!   target, as `derive_select` calibrates it;
//! * `quest, true stop`: blocks in the order of their Quest bounds, until the true mass reaches
//!   the target (separates the ranking's loss from the stopping rule's);
//! * `quest cut`: the blocks whose bound is within `c` nats of the best (per head the smallest
//!   `c` reaching the target): another stopping rule;
//! * `block oracle` / `previous block`: one set per query block, from the block's own true mass
//!   (an oracle) or from the previous query block's (known before the block starts).
//!
//! With `--bounds-block 16`, the bounds are of 16-token sub-blocks and a 64-token block's
//! estimate is their log-sum-exp (four times the selection cost).
//!
//! Usage: `cargo run --release -p pipeline --example mask_estimators -- MODEL TEXT [CTX]
//! [--bounds-block N]` (README: "Attention masks by quality budget").

use std::path::PathBuf;
use std::sync::Mutex;

use calibrate::masks::{selection_curve, CurveSum, THRESHOLDS};
use kernels::{forward, ForwardOptions, Logits, MatKind, Observer, State};

const BLOCK: usize = 64;
const SINK: usize = 1;
const WINDOW: usize = 2;
const TARGETS: [f64; 4] = [0.9, 0.95, 0.97, 0.98];
/// Coverage levels of the oracle-style rules.
const LEVELS: [f64; 16] = [
    0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995, 0.998, 0.999,
];
/// Cuts (nats below the best bound) of the `quest cut` rule.
const CUTS: [f32; 14] = [
    0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0,
];

/// Per head: one row of sums per rule, one sum per parameter; and the block mass matrix.
struct Head {
    oracle: Vec<CurveSum>,
    quest: Vec<CurveSum>,
    true_stop: Vec<CurveSum>,
    cut: Vec<CurveSum>,
    mass: Vec<f64>,
}

struct Estimators {
    n_heads: usize,
    n_blocks: usize,
    bounds_block: usize,
    heads: Vec<Mutex<Head>>,
}

impl Observer for Estimators {
    fn wants_attention(&self) -> bool {
        true
    }
    fn matmul_input(&self, _: usize, _: MatKind, _: &[f32], _: usize) {}
    fn attention_bounds_block(&self) -> Option<usize> {
        Some(self.bounds_block)
    }
    fn attention(&self, layer: usize, head: usize, q_pos: usize, probs: &[f32], bounds: &[f32]) {
        let qb = q_pos / BLOCK;
        let mass: Vec<f64> = probs
            .chunks(BLOCK)
            .map(|c| c.iter().map(|&p| p as f64).sum())
            .collect();
        let mut h = self.heads[layer * self.n_heads + head].lock().unwrap();
        for (m, &t) in h.mass[qb * self.n_blocks..].iter_mut().zip(&mass) {
            *m += t;
        }
        let sub = BLOCK / self.bounds_block;
        // Windowed layers get no bounds; queries with no candidate block teach nothing.
        if bounds.len() < qb * sub || qb < SINK + WINDOW {
            return;
        }
        let est: Vec<f32> = (0..qb)
            .map(|kb| {
                let b = &bounds[kb * sub..(kb + 1) * sub];
                let m = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                m + b.iter().map(|&x| (x - m).exp()).sum::<f32>().ln()
            })
            .collect();
        let keys_of = |kb: usize| ((kb + 1) * BLOCK).min(q_pos + 1) - kb * BLOCK;
        let causal = q_pos + 1;
        let (mut base, mut base_keys) = (0f64, 0usize);
        let mut cand = Vec::new();
        for kb in 0..=qb {
            if kb < SINK || qb - kb < WINDOW {
                base += mass[kb];
                base_keys += keys_of(kb);
            } else {
                cand.push(kb);
            }
        }
        // Blocks added in `order` until the true mass reaches each level.
        let until = |order: &[usize], sums: &mut [CurveSum]| {
            for (s, &t) in sums.iter_mut().zip(LEVELS.iter()) {
                let (mut cov, mut keys) = (base, base_keys);
                for &kb in order {
                    if cov >= t {
                        break;
                    }
                    cov += mass[kb];
                    keys += keys_of(kb);
                }
                s.add(cov, keys, causal);
            }
        };
        let mut by_mass = cand.clone();
        by_mass.sort_by(|&a, &b| mass[b].total_cmp(&mass[a]).then(a.cmp(&b)));
        until(&by_mass, &mut h.oracle);
        let mut by_est = cand.clone();
        by_est.sort_by(|&a, &b| est[b].total_cmp(&est[a]).then(a.cmp(&b)));
        until(&by_est, &mut h.true_stop);
        let best = est.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for (s, &c) in h.cut.iter_mut().zip(CUTS.iter()) {
            let (mut cov, mut keys) = (base, base_keys);
            for &kb in cand.iter().filter(|&&kb| est[kb] >= best - c) {
                cov += mass[kb];
                keys += keys_of(kb);
            }
            s.add(cov, keys, causal);
        }
        // kiln's selection, summed as `kiln masks` calibrates it.
        selection_curve(&est, &mass, q_pos, BLOCK, SINK, WINDOW, &mut h.quest);
    }
}

/// One set per query block from `pred` rows (`[qb][kb]`), applied to the true `mass` rows:
/// per level, (mean coverage over query blocks, density).
fn block_rule(mass: &[f64], pred: impl Fn(usize) -> usize, n: usize) -> Vec<CurveSum> {
    LEVELS
        .iter()
        .map(|&t| {
            let mut s = CurveSum::default();
            for qb in SINK + WINDOW..n {
                let row = &mass[qb * n..qb * n + qb + 1];
                let p = &mass[pred(qb) * n..pred(qb) * n + qb + 1];
                let (total, ptotal) = (row.iter().sum::<f64>(), p.iter().sum::<f64>());
                let always = |kb: usize| kb < SINK || qb - kb < WINDOW;
                let mut keep: Vec<bool> = (0..=qb).map(always).collect();
                let mut got: f64 = (0..=qb).filter(|&kb| keep[kb]).map(|kb| p[kb]).sum();
                let mut cand: Vec<usize> = (0..=qb).filter(|&kb| !always(kb)).collect();
                cand.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
                for kb in cand {
                    if got >= t * ptotal {
                        break;
                    }
                    keep[kb] = true;
                    got += p[kb];
                }
                let cov: f64 = (0..=qb).filter(|&kb| keep[kb]).map(|kb| row[kb]).sum();
                // Row mass is one per query: weight the block's coverage by its queries.
                let queries = BLOCK as f64;
                s.coverage += cov / total * queries;
                s.keys += keep.iter().filter(|&&k| k).count() as f64 * queries;
                s.causal += (qb + 1) as f64 * queries;
                s.n += queries;
            }
            s
        })
        .collect()
}

/// Mean over heads of the density (and coverage) of each head's cheapest parameter reaching
/// `target`; a head no parameter satisfies counts as dense.
fn at_target(curves: &[Vec<CurveSum>], target: f64) -> (f64, f64) {
    let (mut d, mut c) = (0.0, 0.0);
    for cv in curves {
        let p = cv
            .iter()
            .map(CurveSum::mean)
            .filter(|&(cov, _)| cov >= target)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((1.0, 1.0));
        d += p.1;
        c += p.0;
    }
    let n = curves.len().max(1) as f64;
    (d / n, c / n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut bounds_block = BLOCK;
    if let Some(i) = args.iter().position(|a| a == "--bounds-block") {
        bounds_block = args.get(i + 1).ok_or("--bounds-block N")?.parse()?;
        args.drain(i..i + 2);
    }
    if args.len() < 2 || bounds_block == 0 || !BLOCK.is_multiple_of(bounds_block) {
        return Err("usage: mask_estimators MODEL TEXT [CTX] [--bounds-block N | 64]".into());
    }
    let ctx: usize = args.get(2).map_or(Ok(8192), |c| c.parse())?;
    let loaded = verify::load::load_with(
        &PathBuf::from(&args[0]),
        &verify::load::LoraLoad::merged(&[]),
    )?;
    let m = &loaded.model;
    let tok = pipeline::text::tokenizer_of(&loaded.source, None)?;
    let tokens = pipeline::text::tokenize_files(&tok, &[PathBuf::from(&args[1])])?;
    if tokens.len() < ctx {
        return Err(format!("{}: {} tokens, fewer than {ctx}", args[1], tokens.len()).into());
    }
    let c = &m.config;
    let n_blocks = ctx.div_ceil(BLOCK);
    let obs = Estimators {
        n_heads: c.n_heads,
        n_blocks,
        bounds_block,
        heads: (0..c.n_layers * c.n_heads)
            .map(|_| {
                Mutex::new(Head {
                    oracle: vec![CurveSum::default(); LEVELS.len()],
                    quest: vec![CurveSum::default(); THRESHOLDS.len()],
                    true_stop: vec![CurveSum::default(); LEVELS.len()],
                    cut: vec![CurveSum::default(); CUTS.len()],
                    mass: vec![0.0; n_blocks * n_blocks],
                })
            })
            .collect(),
    };
    let mut st = State::new(c, ctx, 512);
    for part in tokens[..ctx].chunks(512) {
        forward(
            m,
            &mut st,
            part,
            Logits::None,
            ForwardOptions::default(),
            &obs,
        )?;
    }
    // Global layers only: a windowed layer keeps its window.
    let heads: Vec<Head> = obs
        .heads
        .into_iter()
        .enumerate()
        .filter(|(i, _)| c.window(i / c.n_heads).is_none())
        .map(|(_, h)| h.into_inner().unwrap())
        .collect();
    let rules: Vec<(&str, Vec<Vec<CurveSum>>)> = vec![
        ("oracle", heads.iter().map(|h| h.oracle.clone()).collect()),
        ("quest", heads.iter().map(|h| h.quest.clone()).collect()),
        (
            "quest, true stop",
            heads.iter().map(|h| h.true_stop.clone()).collect(),
        ),
        ("quest cut", heads.iter().map(|h| h.cut.clone()).collect()),
        (
            "block oracle",
            heads
                .iter()
                .map(|h| block_rule(&h.mass, |qb| qb, n_blocks))
                .collect(),
        ),
        (
            "previous block",
            heads
                .iter()
                .map(|h| block_rule(&h.mass, |qb| qb - 1, n_blocks))
                .collect(),
        ),
    ];
    println!(
        "ctx {ctx}, blocks of {BLOCK}, bounds of {bounds_block}-token blocks: density (mean \
         coverage) needed per mean-coverage target, over {} heads",
        heads.len()
    );
    print!("| rule |");
    TARGETS.iter().for_each(|t| print!(" {t} |"));
    println!();
    println!("|---|{}", "---:|".repeat(TARGETS.len()));
    for (name, curves) in &rules {
        print!("| {name} |");
        for &t in &TARGETS {
            let (d, cov) = at_target(curves, t);
            print!(" {d:.3} ({cov:.4}) |");
        }
        println!();
    }
    Ok(())
}
