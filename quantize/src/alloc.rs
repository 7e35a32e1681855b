//! Type allocation under a byte budget: given, per tensor, candidate types with their size and
//! a predicted cost (the KL divergence the tensor adds when stored in that type), choose one
//! type per tensor minimising the total predicted cost with the total size at most the budget.
//!
//! This is a multiple-choice knapsack. [`allocate`] solves it the way rate–distortion
//! allocators do: every tensor starts at its cheapest candidate; the candidates of each tensor
//! are reduced to the lower convex hull of (bytes, cost); then the upgrade with the largest cost
//! reduction per byte among all tensors is taken while it fits, and when it does not fit the
//! remaining budget is filled by the best upgrades that still do. Ties break by tensor order,
//! so the result is deterministic.

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
/// bytes at most `budget`.
pub fn allocate(items: &[Vec<Candidate>], budget: u64) -> Result<Vec<usize>, AllocError> {
    let hulls: Vec<Vec<usize>> = items
        .iter()
        .map(|c| {
            let mut order: Vec<usize> = (0..c.len()).collect();
            order.sort_by(|&a, &b| {
                c[a].bytes
                    .cmp(&c[b].bytes)
                    .then(c[a].cost.total_cmp(&c[b].cost))
            });
            hull(c, &order)
        })
        .collect();
    let mut pos = vec![0usize; items.len()];
    let mut used: u64 = items.iter().zip(&hulls).map(|(c, h)| c[h[0]].bytes).sum();
    if used > budget {
        return Err(AllocError { budget, min: used });
    }
    let mut blocked = vec![false; items.len()];
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (k, (c, h)) in items.iter().zip(&hulls).enumerate() {
            if blocked[k] || pos[k] + 1 >= h.len() {
                continue;
            }
            let (a, b) = (c[h[pos[k]]], c[h[pos[k] + 1]]);
            let slope = (a.cost - b.cost) / (b.bytes - a.bytes).max(1) as f64;
            if best.is_none_or(|(s, _)| slope > s) {
                best = Some((slope, k));
            }
        }
        let Some((_, k)) = best else { break };
        let (c, h) = (&items[k], &hulls[k]);
        let extra = c[h[pos[k] + 1]].bytes - c[h[pos[k]]].bytes;
        if used + extra <= budget {
            used += extra;
            pos[k] += 1;
        } else {
            blocked[k] = true;
        }
    }
    Ok(pos.iter().zip(&hulls).map(|(&p, h)| h[p]).collect())
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
        let pick = allocate(&items, 220).unwrap();
        assert_eq!(pick, vec![1, 0]);
        let pick = allocate(&items, 400).unwrap();
        assert_eq!(pick, vec![2, 2]);
        assert!(allocate(&items, 199).is_err());
    }

    #[test]
    fn dominated_candidates_are_never_chosen() {
        // Q4_1 costs more bytes than Q5_0 would need for the same gain: off the hull.
        let items = vec![vec![
            c(Q4_0, 100, 10.0),
            c(Q4_1, 115, 9.5),
            c(Q5_0, 120, 4.0),
        ]];
        assert_eq!(allocate(&items, 118).unwrap(), vec![0]);
        assert_eq!(allocate(&items, 120).unwrap(), vec![2]);
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
            let pick = allocate(&items, budget).unwrap();
            let bytes: u64 = pick.iter().zip(&items).map(|(&p, c)| c[p].bytes).sum();
            assert!(bytes <= budget);
            let cost: f64 = pick.iter().zip(&items).map(|(&p, c)| c[p].cost).sum();
            let opt = brute(&items, budget);
            let step = items.iter().map(|c| c[0].cost).fold(0.0, f64::max);
            assert!(cost <= opt + step + 1e-9, "{cost} vs optimum {opt}");
        }
    }
}
