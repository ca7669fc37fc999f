//! A lower bound on the GPU capacity that a placement leaves free in the [`placement`]
//! replay (given the premise below), from packing the GPU-sharing pods.
//!
//! A GPU that hosts shared pods (a fraction of one GPU each) keeps `1000 - sum of their
//! milli-GPU` free, and no whole-GPU pod can use it. Which shared pods end up on one GPU is a
//! one-dimensional bin-packing *pattern* (a multiset of sizes summing to at most 1000).
//!
//! **Premise.** The bound holds for placements that place every pod arriving up to
//! `forced_pct`% of the capacity (the "forced" pods, shared and whole-GPU). It is not a bound
//! on every policy: one that refuses shared pods can leave less free. On the openb default,
//! `sharing` and `few-cpu` lists, `fgd`, `best-fit` and `autoglm` place every pod up to 90%
//! (no failures at the 90% step, seeds 42..51), so any policy allocating at least as much as
//! FGD at 90% meets the premise at 90%; on `gpu-type` every policy fails pods from a few
//! percent on, so there the premise does not hold at any useful step. Check it with
//! `autoglm-sim placement --format json` (`failed_pods` at the step).
//!
//! Given the premise, the GPUs hosting shared pods are some mix of patterns that covers the
//! forced pods, uses no more pods of a size than arrived in the whole replay, and fits in the
//! GPUs the forced whole-GPU pods leave. The least free capacity over all such mixes is a
//! linear program (Gilmore and Gomory's cutting-stock formulation):
//!
//! ```text
//! minimise    sum_p x_p * (1000 - used_p)                 (free milli-GPU on shared GPUs)
//! subject to  forced_s <= sum_p a_ps * x_p <= arrived_s   for every size s
//!             sum_p x_p <= GPUs - GPUs of forced whole-GPU pods
//!             x_p >= 0
//! ```
//!
//! where `a_ps` is how many pods of size `s` pattern `p` holds. Its optimum is a lower bound
//! on the free milli-GPU at the end of the replay: it ignores CPU, memory, GPU types, node
//! boundaries and arrival order, and it knows every arrival in advance. Every free milli-GPU
//! it finds is a sliver that only pods which never arrived could fill (for example 190
//! milli-GPU next to an 810-milli pod when the pods of at most 190 milli-GPU run out).
//!
//! An infeasible program means the premise itself is impossible: the forced pods do not fit
//! the cluster's GPUs at all. Patterns are enumerated in full (5,400-6,700 for the openb
//! lists), so the bound is meant for workloads with tens of distinct sizes, not thousands
//! (more than 200,000 patterns is an error).
//!
//! # Source
//! P. C. Gilmore and R. E. Gomory, "A Linear Programming Approach to the Cutting-Stock
//! Problem", Operations Research 9(6), 1961. Solved with the `microlp` simplex solver.
//!
//! [`placement`]: super::placement

use std::collections::BTreeMap;

use microlp::{ComparisonOp, OptimizationDirection, Problem};

use crate::model::{GpuRequest, MILLI_PER_GPU, PodRequest};

/// Most patterns enumerated before giving up (the openb lists need under 7,000; 400,000
/// take about 10 s and 260 MB).
const MAX_PATTERNS: usize = 200_000;

/// Shared pods of one size: how many must be placed and how many arrived in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeCount {
    /// Pods that every considered placement places.
    pub forced: u64,
    /// Pods that arrived (>= `forced`).
    pub arrived: u64,
}

/// Result of [`sharing_bound`].
#[derive(Debug, Clone, PartialEq)]
pub struct SharingBound {
    /// Least free milli-GPU on GPUs hosting shared pods, over all pattern mixes (LP optimum).
    pub free_milli: f64,
    /// Patterns enumerated.
    pub patterns: usize,
    /// The optimal mix's patterns with their GPU counts (sizes in milli-GPU, ascending),
    /// most used first.
    pub mix: Vec<(Vec<u32>, f64)>,
}

/// Why a bound could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum BoundError {
    /// A size's forced count exceeds its arrived count, or a size is 0 or above 1000.
    #[error("shared size {milli} milli-GPU: {rule}")]
    BadSize {
        /// The size.
        milli: u32,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Too many distinct sizes to enumerate the patterns.
    #[error("more than {MAX_PATTERNS} packing patterns; the bound is for tens of distinct sizes")]
    TooManyPatterns,
    /// No mix meets the premise: the forced pods do not fit the GPUs.
    #[error(
        "the forced pods do not fit: {forced_whole_gpus} GPUs of forced whole-GPU pods and the forced shared pods need more than the {gpus} GPUs; no placement places every pod arrived by that step"
    )]
    PremiseImpossible {
        /// GPUs in the cluster.
        gpus: u64,
        /// GPUs asked by forced whole-GPU pods.
        forced_whole_gpus: u64,
    },
    /// The LP solver failed.
    #[error("LP solver: {0}")]
    Solver(String),
}

/// What a replay's pod sequence forces, for [`sharing_bound`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forced {
    /// Shared pods by size (milli-GPU).
    pub shared: BTreeMap<u32, SizeCount>,
    /// GPUs asked by whole-GPU pods that arrive by the step.
    pub whole_gpus: u64,
}

/// Count what `work` forces at `forced_pct`% of `capacity_milli`: pods whose arrival keeps
/// the cumulative arrived GPU request (whole and shared) at or below that share, as in the
/// replay's steps. Shared pods are counted by size, forced and in all; shared pods asking no
/// compute (memory only) are left out, as they use no milli-GPU.
pub fn forced_counts(work: &[PodRequest], capacity_milli: u64, forced_pct: u32) -> Forced {
    let mut out = Forced::default();
    let mut arrived = 0u64;
    for pod in work {
        arrived += pod.gpu.total_milli();
        let forced = arrived * 100 <= capacity_milli * u64::from(forced_pct);
        match pod.gpu {
            GpuRequest::Shared { milli, .. } if milli > 0 => {
                let c = out.shared.entry(milli).or_default();
                c.arrived += 1;
                c.forced += u64::from(forced);
            }
            GpuRequest::Whole { count } if forced => out.whole_gpus += u64::from(count),
            _ => {}
        }
    }
    out
}

/// The cutting-stock LP bound of the module docs on a cluster of `gpus` GPUs.
///
/// # Errors
/// [`BoundError::BadSize`] for a size outside 1..=1000 or with `forced > arrived`;
/// [`BoundError::TooManyPatterns`]; [`BoundError::PremiseImpossible`];
/// [`BoundError::Solver`].
pub fn sharing_bound(forced: &Forced, gpus: u64) -> Result<SharingBound, BoundError> {
    let counts = &forced.shared;
    let impossible = BoundError::PremiseImpossible {
        gpus,
        forced_whole_gpus: forced.whole_gpus,
    };
    let Some(budget) = gpus.checked_sub(forced.whole_gpus) else {
        return Err(impossible);
    };
    for (&milli, c) in counts {
        if milli == 0 || milli > MILLI_PER_GPU {
            return Err(BoundError::BadSize {
                milli,
                rule: "must be within 1..=1000",
            });
        }
        if c.forced > c.arrived {
            return Err(BoundError::BadSize {
                milli,
                rule: "forced pods must not exceed arrived pods",
            });
        }
    }
    let sizes: Vec<(u32, u64)> = counts
        .iter()
        .filter(|(_, c)| c.arrived > 0)
        .map(|(&m, c)| (m, c.arrived))
        .collect();
    let mut patterns: Vec<Vec<u32>> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    enumerate(&sizes, 0, MILLI_PER_GPU, &mut current, &mut patterns)?;

    let mut lp = Problem::new(OptimizationDirection::Minimize);
    let vars: Vec<_> = patterns
        .iter()
        .map(|p| {
            let used: u32 = p.iter().sum();
            lp.add_var(f64::from(MILLI_PER_GPU - used), (0.0, f64::INFINITY))
        })
        .collect();
    for &(milli, _) in &sizes {
        let c = counts[&milli];
        let terms: Vec<_> = patterns
            .iter()
            .zip(&vars)
            .filter_map(|(p, &v)| {
                let k = p.iter().filter(|&&m| m == milli).count();
                (k > 0).then_some((v, k as f64))
            })
            .collect();
        lp.add_constraint(terms.as_slice(), ComparisonOp::Le, c.arrived as f64);
        if c.forced > 0 {
            lp.add_constraint(terms.as_slice(), ComparisonOp::Ge, c.forced as f64);
        }
    }
    if !vars.is_empty() {
        let all: Vec<_> = vars.iter().map(|&v| (v, 1.0)).collect();
        lp.add_constraint(all.as_slice(), ComparisonOp::Le, budget as f64);
    }
    let solution = match lp.solve() {
        Err(microlp::Error::Infeasible) => return Err(impossible),
        Err(e) => return Err(BoundError::Solver(e.to_string())),
        Ok(outcome) => outcome
            .into_solution()
            .map_err(|e| BoundError::Solver(format!("{e:?}")))?,
    };
    let mut mix: Vec<(Vec<u32>, f64)> = patterns
        .iter()
        .zip(&vars)
        .map(|(p, &v)| (p.clone(), solution.var_value(v)))
        .filter(|(_, x)| *x > 1e-6)
        .collect();
    mix.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(SharingBound {
        free_milli: solution.objective().max(0.0),
        patterns: patterns.len(),
        mix,
    })
}

/// Every non-empty multiset of `sizes[i..]` (each at most its count) fitting in `room`.
fn enumerate(
    sizes: &[(u32, u64)],
    i: usize,
    room: u32,
    current: &mut Vec<u32>,
    out: &mut Vec<Vec<u32>>,
) -> Result<(), BoundError> {
    if i == sizes.len() {
        if !current.is_empty() {
            if out.len() >= MAX_PATTERNS {
                return Err(BoundError::TooManyPatterns);
            }
            out.push(current.clone());
        }
        return Ok(());
    }
    let (milli, count) = sizes[i];
    let most = u64::from(room / milli).min(count) as usize;
    for k in 0..=most {
        current.extend(std::iter::repeat_n(milli, k));
        enumerate(sizes, i + 1, room - milli * k as u32, current, out)?;
        current.truncate(current.len() - k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[(u32, u64, u64)]) -> Forced {
        Forced {
            shared: v
                .iter()
                .map(|&(m, forced, arrived)| (m, SizeCount { forced, arrived }))
                .collect(),
            whole_gpus: 0,
        }
    }

    /// The bound on a cluster with room to spare (1,000 GPUs).
    fn bound(v: &[(u32, u64, u64)]) -> Result<SharingBound, BoundError> {
        sharing_bound(&counts(v), 1000)
    }

    #[test]
    fn exact_complements_leave_nothing_free() {
        // 4 forced 600s, 4 400s available: four 600+400 GPUs, 0 free.
        let b = bound(&[(400, 0, 4), (600, 4, 4)]).unwrap();
        assert!(b.free_milli.abs() < 1e-6, "{b:?}");
        assert_eq!(b.mix, vec![(vec![400, 600], 4.0)]);
    }

    #[test]
    fn missing_complements_leave_slivers() {
        // 3 forced 810s, one 190 arrived: 810+190 on one GPU, two 190 slivers = 380.
        let b = bound(&[(190, 0, 1), (810, 3, 3)]).unwrap();
        assert!((b.free_milli - 380.0).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn unforced_pods_are_not_placed_when_they_only_add_waste() {
        // Nothing forced: the empty mix, 0 free.
        let b = bound(&[(700, 0, 5)]).unwrap();
        assert!(b.free_milli.abs() < 1e-6);
        // 2 forced 470s: 470+470 on one GPU, 60 free (better than two GPUs of 530 free).
        let b = bound(&[(470, 2, 9)]).unwrap();
        assert!((b.free_milli - 60.0).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn fractional_mixes_are_allowed_and_stay_a_lower_bound() {
        // 3 forced 500s: one GPU 500+500 and one 500 alone (500 free) is the best integer
        // packing; the LP takes 1.5 GPUs of 500+500, 0 free, which is still a lower bound.
        let b = bound(&[(500, 3, 3)]).unwrap();
        assert!(b.free_milli.abs() < 1e-6, "{b:?}");
        assert_eq!(b.mix, vec![(vec![500, 500], 1.5)]);
    }

    #[test]
    fn patterns_are_every_multiset_that_fits() {
        // Sizes 300 (2 available) and 400 (1): {300}, {300,300}, {400}, {300,400},
        // {300,300,400} = 1000.
        let b = bound(&[(300, 0, 2), (400, 0, 1)]).unwrap();
        assert_eq!(b.patterns, 5);
    }

    #[test]
    fn bad_sizes_are_named() {
        let e = bound(&[(1200, 1, 1)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shared size 1200 milli-GPU: must be within 1..=1000"
        );
        let e = bound(&[(300, 2, 1)]).unwrap_err();
        assert!(e.to_string().contains("forced pods must not exceed"), "{e}");
    }

    #[test]
    fn a_premise_that_cannot_hold_is_an_error() {
        // 700 + 400 forced on one GPU left by a forced whole-GPU pod on a 2-GPU cluster.
        let mut f = counts(&[(400, 1, 1), (700, 1, 1)]);
        f.whole_gpus = 1;
        let e = sharing_bound(&f, 2).unwrap_err();
        assert!(matches!(e, BoundError::PremiseImpossible { .. }), "{e}");
        assert!(e.to_string().contains("do not fit"), "{e}");
        // With 3 GPUs they fit: 700 and 400 on GPUs of their own, 900 free.
        let b = sharing_bound(&f, 3).unwrap();
        assert!((b.free_milli - 900.0).abs() < 1e-6, "{b:?}");
        // More forced whole GPUs than GPUs.
        f.whole_gpus = 4;
        assert!(matches!(
            sharing_bound(&f, 3),
            Err(BoundError::PremiseImpossible { .. })
        ));
    }

    #[test]
    fn forced_counts_split_at_the_forced_step() {
        let pod = |gpu| PodRequest::new("p", 0, 0, gpu);
        let half = GpuRequest::Shared {
            milli: 500,
            mem_mib: 0,
        };
        // Capacity 2000 milli: arrivals 1000 (50%), 1500 (75%), 2000 (100%), 2500 (125%).
        let work = vec![
            pod(GpuRequest::Whole { count: 1 }),
            pod(half),
            pod(half),
            pod(half),
        ];
        let c = forced_counts(&work, 2000, 75);
        assert_eq!(
            c.shared[&500],
            SizeCount {
                forced: 1,
                arrived: 3
            }
        );
        assert_eq!(c.whole_gpus, 1);
        assert_eq!(forced_counts(&work, 2000, 40).whole_gpus, 0);
    }
}
