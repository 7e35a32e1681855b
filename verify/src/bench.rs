//! Speed of a model in kiln's kernel: prefill of `pp` tokens and decode of `tg` tokens one at a
//! time, each from an empty cache, repeated, as mean ± sample standard deviation — the one
//! measurement behind `kiln bench` and `kiln build`'s reports.

use kernels::{forward, BlockMask, ForwardError, ForwardOptions, Logits, Model, NoObserver, State};

use crate::report::BenchResult;

fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (m, var.sqrt())
}

/// Measures `model` (with `mask`, if any) on deterministic pseudo-random tokens: `reps` runs of
/// a `pp`-token prefill and a `tg`-token greedy decode (either may be 0), after one untimed
/// prefill and decode step.
pub fn run(
    model: &Model,
    mask: Option<&BlockMask>,
    pp: usize,
    tg: usize,
    reps: usize,
) -> Result<BenchResult, ForwardError> {
    let c = &model.config;
    let mut rng = kernels::ops::Rng::new(42);
    let tokens: Vec<u32> = (0..pp.max(1))
        .map(|_| (rng.uniform() * c.vocab as f64) as u32)
        .collect();
    let mut st = State::new(c, pp.max(1) + tg, pp.max(1));
    let fo = ForwardOptions {
        mask,
        ..Default::default()
    };
    // Warm-up as llama-bench does it: the whole prompt once (touching every weight and every
    // activation and cache page, so no repetition pays for first-touch page faults), then
    // one decode step.
    forward(model, &mut st, &tokens, Logits::Last, fo, &NoObserver)?;
    if tg > 0 {
        st.reset();
        forward(model, &mut st, &tokens[..1], Logits::Last, fo, &NoObserver)?;
    }
    let (mut pps, mut tgs, mut att) = (Vec::new(), Vec::new(), Vec::new());
    let (mut density, mut selection) = (1.0, Vec::new());
    for _ in 0..reps.max(1) {
        if pp > 0 {
            st.reset();
            let a0 = st.attention_time;
            st.attention_counts = Default::default();
            let t = std::time::Instant::now();
            forward(model, &mut st, &tokens, Logits::Last, fo, &NoObserver)?;
            pps.push(pp as f64 / t.elapsed().as_secs_f64());
            att.push((st.attention_time - a0).as_secs_f64());
            density = st.attention_counts.density();
            selection.push(st.attention_counts.selection_s());
        }
        if tg > 0 {
            st.reset();
            let mut tok = tokens[0];
            let t = std::time::Instant::now();
            for _ in 0..tg {
                forward(model, &mut st, &[tok], Logits::Last, fo, &NoObserver)?;
                tok = kernels::ops::argmax(&st.logits) as u32;
            }
            tgs.push(tg as f64 / t.elapsed().as_secs_f64().max(1e-9));
        }
    }
    let ((pm, ps), (tm, ts), (am, _)) = (mean_sd(&pps), mean_sd(&tgs), mean_sd(&att));
    let (sm, _) = mean_sd(&selection);
    Ok(BenchResult {
        threads: rayon::current_num_threads(),
        pp_tokens: pp,
        pp_tokens_per_s: pm,
        pp_stddev: ps,
        tg_tokens: tg,
        tg_tokens_per_s: tm,
        tg_stddev: ts,
        pp_attention_s: am,
        simd: kernels::simd::level().name().into(),
        pp_density: density,
        pp_selection_s: sm,
    })
}
