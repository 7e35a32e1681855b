//! Type allocation under a byte budget: given, per tensor, candidate types with their size and
//! a predicted cost (the KL divergence the tensor adds when stored in that type), choose one
//! type per tensor minimising the total predicted cost with the total size at most the budget.
//!
//! This is a multiple-choice knapsack. [`allocate`] solves it as rate–distortion allocators
//! do — greedy ascent along each tensor's lower convex hull of (bytes, cost), and the
//! Lagrangian relaxation — and polishes every start (including a given one, the llama.cpp mix)
//! with exchange moves. Ties break by tensor order, so the result is deterministic.

/// One candidate type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Storage type.
    pub ty: crate::GgmlType,
    /// Bytes in the file (padding included).
    pub bytes: u64,
    /// Predicted cost (e.g. KL divergence added).
    pub cost: f64,
}

/// The error of a budget that cannot be met.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "a budget of {budget} bytes is below the {min} bytes of the smallest choice of every tensor"
)]
pub struct AllocError {
    pub budget: u64,
    pub min: u64,
}

/// Indices of the lower convex hull of `c` sorted by bytes (strictly decreasing cost).
fn hull(c: &[Candidate], order: &[usize]) -> Vec<usize> {
    let mut h: Vec<usize> = Vec::new();
    for &i in order {
        // Dominated: not cheaper in cost than something no larger.
        if let Some(&last) = h.last() {
            if c[i].cost >= c[last].cost {
                continue;
            }
        }
        while h.len() >= 2 {
            let (a, b) = (c[h[h.len() - 2]], c[h[h.len() - 1]]);
            // Slope a→b must be steeper (more cost saved per byte) than b→i.
            let s_ab = (a.cost - b.cost) / (b.bytes - a.bytes).max(1) as f64;
            let s_bi = (b.cost - c[i].cost) / (c[i].bytes - b.bytes).max(1) as f64;
            if s_ab <= s_bi {
                h.pop();
            } else {
                break;
            }
        }
        h.push(i);
    }
    h
}

/// Chooses one candidate per item (returned as indices into each item's candidates) with total
/// bytes at most `budget`, minimising the summed cost. Three starting points — the greedy
/// ascent from the cheapest choices, the Lagrangian choice (each item's argmin of
/// `cost + λ·bytes` for the smallest λ that fits, then filled greedily) and `start` (e.g. the
/// llama.cpp mix) when it fits — are each polished by exchange moves (one item up, another
/// down, or one alone) while they lower the cost within the budget; the cheapest wins, so the
/// result is never predicted worse than `start`.
pub fn allocate(
    items: &[Vec<Candidate>],
    budget: u64,
    start: Option<&[usize]>,
) -> Result<Vec<usize>, AllocError> {
    let min: u64 = items
        .iter()
        .map(|c| c.iter().map(|x| x.bytes).min().unwrap_or(0))
        .sum();
    if min > budget {
        return Err(AllocError { budget, min });
    }
    let mut sols = vec![greedy(items, budget), lagrangian(items, budget)];
    if let Some(s) = start {
        let ok = s.len() == items.len() && s.iter().zip(items).all(|(&i, c)| i < c.len());
        if ok {
            sols.push(repair(items, budget, s.to_vec()));
        }
    }
    let mut best: Option<(f64, Vec<usize>)> = None;
    for mut s in sols {
        polish(items, budget, &mut s);
        let c = cost_of(items, &s);
        if best.as_ref().is_none_or(|(bc, _)| c < *bc) {
            best = Some((c, s));
        }
    }
    Ok(best.expect("at least one solution").1)
}

/// Makes `s` fit: while it is over budget, the downgrade costing least per byte saved.
fn repair(items: &[Vec<Candidate>], budget: u64, mut s: Vec<usize>) -> Vec<usize> {
    let mut used = bytes_of(items, &s);
    while used > budget {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, c) in items.iter().enumerate() {
            for (a, ca) in c.iter().enumerate() {
                if ca.bytes < c[s[i]].bytes {
                    let r = (ca.cost - c[s[i]].cost) / (c[s[i]].bytes - ca.bytes) as f64;
                    if best.is_none_or(|b| r < b.0) {
                        best = Some((r, i, a));
                    }
                }
            }
        }
        let Some((_, i, a)) = best else { break };
        used = used - items[i][s[i]].bytes + items[i][a].bytes;
        s[i] = a;
    }
    s
}

fn bytes_of(items: &[Vec<Candidate>], s: &[usize]) -> u64 {
    s.iter().zip(items).map(|(&i, c)| c[i].bytes).sum()
}

fn cost_of(items: &[Vec<Candidate>], s: &[usize]) -> f64 {
    s.iter().zip(items).map(|(&i, c)| c[i].cost).sum()
}

/// Exchange moves until none lowers the cost: every single change that fits, and every pair
/// (one item to any other candidate, a second item to any other candidate) that fits.
fn polish(items: &[Vec<Candidate>], budget: u64, s: &mut [usize]) {
    let mut used = bytes_of(items, s);
    loop {
        // (gain, i, a, j, b): item i → candidate a, item j → candidate b (j = usize::MAX: none).
        let mut best: Option<(f64, usize, usize, usize, usize)> = None;
        for i in 0..items.len() {
            let ci = &items[i][s[i]];
            for (a, ca) in items[i].iter().enumerate() {
                if a == s[i] {
                    continue;
                }
                let gain_i = ci.cost - ca.cost;
                let used_i = used - ci.bytes + ca.bytes;
                if used_i <= budget && gain_i > 1e-15 && best.is_none_or(|b| gain_i > b.0) {
                    best = Some((gain_i, i, a, usize::MAX, 0));
                }
                if gain_i <= 0.0 {
                    continue;
                }
                // Pay for it with another item.
                for j in 0..items.len() {
                    if j == i {
                        continue;
                    }
                    let cj = &items[j][s[j]];
                    for (b, cb) in items[j].iter().enumerate() {
                        if b == s[j] || cb.bytes >= cj.bytes {
                            continue;
                        }
                        let u = used_i - cj.bytes + cb.bytes;
                        let g = gain_i + cj.cost - cb.cost;
                        if u <= budget && g > 1e-15 && best.is_none_or(|bb| g > bb.0) {
                            best = Some((g, i, a, j, b));
                        }
                    }
                }
            }
        }
        let Some((_, i, a, j, b)) = best else { break };
        used = used - items[i][s[i]].bytes + items[i][a].bytes;
        s[i] = a;
        if j != usize::MAX {
            used = used - items[j][s[j]].bytes + items[j][b].bytes;
            s[j] = b;
        }
    }
}

/// For the smallest λ ≥ 0 (by bisection) at which every item's argmin of `cost + λ·bytes`
/// fits, that choice, then greedily filled.
fn lagrangian(items: &[Vec<Candidate>], budget: u64) -> Vec<usize> {
    let pick = |lambda: f64| -> Vec<usize> {
        items
            .iter()
            .map(|c| {
                let mut bi = 0;
                for (i, x) in c.iter().enumerate() {
                    let (v, bv) = (
                        x.cost + lambda * x.bytes as f64,
                        c[bi].cost + lambda * c[bi].bytes as f64,
                    );
                    if v < bv || (v == bv && x.bytes < c[bi].bytes) {
                        bi = i;
                    }
                }
                bi
            })
            .collect()
    };
    let s0 = pick(0.0);
    if bytes_of(items, &s0) <= budget {
        return s0;
    }
    let (mut lo, mut hi) = (0f64, 1e-12f64);
    while bytes_of(items, &pick(hi)) > budget && hi < 1e30 {
        hi *= 4.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if bytes_of(items, &pick(mid)) > budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let s = pick(hi);
    fill(items, budget, s)
}

/// The greedy ascent from every item's cheapest candidate.
fn greedy(items: &[Vec<Candidate>], budget: u64) -> Vec<usize> {
    let start = items
        .iter()
        .map(|c| {
            (0..c.len())
                .min_by(|&a, &b| {
                    c[a].bytes
                        .cmp(&c[b].bytes)
                        .then(c[a].cost.total_cmp(&c[b].cost))
                })
                .unwrap_or(0)
        })
        .collect();
    fill(items, budget, start)
}

/// From `s`, repeatedly takes the upgrade (along each item's lower convex hull above its
/// current choice) with the most cost saved per byte that still fits.
fn fill(items: &[Vec<Candidate>], budget: u64, mut s: Vec<usize>) -> Vec<usize> {
    let hulls: Vec<Vec<usize>> = items
        .iter()
        .zip(&s)
        .map(|(c, &cur)| {
            let mut order: Vec<usize> = (0..c.len())
                .filter(|&i| c[i].bytes >= c[cur].bytes)
                .collect();
            order.sort_by(|&a, &b| {
                c[a].bytes
                    .cmp(&c[b].bytes)
                    .then(c[a].cost.total_cmp(&c[b].cost))
            });
            let mut h = hull(c, &order);
            if h.first() != Some(&cur) {
                h.insert(0, cur);
            }
            h
        })
        .collect();
    let mut pos = vec![0usize; items.len()];
    let mut used = bytes_of(items, &s);
    let mut blocked = vec![false; items.len()];
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (k, (c, h)) in items.iter().zip(&hulls).enumerate() {
            if blocked[k] || pos[k] + 1 >= h.len() {
                continue;
            }
            let (a, b) = (c[h[pos[k]]], c[h[pos[k] + 1]]);
            let slope = (a.cost - b.cost) / (b.bytes.saturating_sub(a.bytes)).max(1) as f64;
            if best.is_none_or(|(sl, _)| slope > sl) {
                best = Some((slope, k));
            }
        }
        let Some((slope, k)) = best else { break };
        if slope <= 0.0 {
            break;
        }
        let (c, h) = (&items[k], &hulls[k]);
        let extra = c[h[pos[k] + 1]].bytes - c[h[pos[k]]].bytes;
        if used + extra <= budget {
            used += extra;
            pos[k] += 1;
            s[k] = h[pos[k]];
        } else {
            blocked[k] = true;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GgmlType::*;

    fn c(ty: crate::GgmlType, bytes: u64, cost: f64) -> Candidate {
        Candidate { ty, bytes, cost }
    }

    /// Exhaustive search over all choices, for checking.
    fn brute(items: &[Vec<Candidate>], budget: u64) -> f64 {
        let mut best = f64::INFINITY;
        let n = items.len();
        let mut idx = vec![0usize; n];
        loop {
            let bytes: u64 = (0..n).map(|k| items[k][idx[k]].bytes).sum();
            if bytes <= budget {
                best = best.min((0..n).map(|k| items[k][idx[k]].cost).sum());
            }
            let mut k = 0;
            while k < n {
                idx[k] += 1;
                if idx[k] < items[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
            if k == n {
                return best;
            }
        }
    }

    #[test]
    fn takes_the_best_upgrades_within_the_budget() {
        let items = vec![
            vec![c(Q4_0, 100, 10.0), c(Q5_0, 120, 4.0), c(Q8_0, 190, 0.5)],
            vec![c(Q4_0, 100, 1.0), c(Q5_0, 120, 0.6), c(Q8_0, 190, 0.1)],
        ];
        let pick = allocate(&items, 220, None).unwrap();
        assert_eq!(pick, vec![1, 0]);
        let pick = allocate(&items, 400, None).unwrap();
        assert_eq!(pick, vec![2, 2]);
        assert!(allocate(&items, 199, None).is_err());
    }

    #[test]
    fn small_budgets_take_the_exact_optimum() {
        // Q4_1 is off the hull (Q5_0 saves more per byte) but it is what fits 118 bytes best.
        let items = vec![vec![
            c(Q4_0, 100, 10.0),
            c(Q4_1, 115, 9.5),
            c(Q5_0, 120, 4.0),
        ]];
        assert_eq!(allocate(&items, 118, None).unwrap(), vec![1]);
        assert_eq!(allocate(&items, 120, None).unwrap(), vec![2]);
    }

    #[test]
    fn near_optimal_on_random_instances() {
        // Greedy on convex hulls is optimal up to the last partly-fitting upgrade; on random
        // small instances it stays within the cost of one upgrade step of the optimum.
        let mut s = 0x1234_5678_9abc_def0u64;
        let mut r = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 1000) as f64 / 1000.0
        };
        for _ in 0..200 {
            let items: Vec<Vec<Candidate>> = (0..4)
                .map(|_| {
                    let base = 1.0 + 9.0 * r();
                    vec![
                        c(Q4_0, 100, base),
                        c(Q5_0, 120, base * (0.3 + 0.3 * r())),
                        c(Q8_0, 190, base * 0.05 * r()),
                    ]
                })
                .collect();
            let budget = 400 + (r() * 360.0) as u64;
            let pick = allocate(&items, budget, None).unwrap();
            let bytes: u64 = pick.iter().zip(&items).map(|(&p, c)| c[p].bytes).sum();
            assert!(bytes <= budget);
            let cost: f64 = pick.iter().zip(&items).map(|(&p, c)| c[p].cost).sum();
            let opt = brute(&items, budget);
            let step = items.iter().map(|c| c[0].cost).fold(0.0, f64::max);
            assert!(cost <= opt + step + 1e-9, "{cost} vs optimum {opt}");
        }
    }
}
