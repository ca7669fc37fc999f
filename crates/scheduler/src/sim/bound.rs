//! A lower bound on the GPU capacity that any placement leaves free in the [`placement`]
//! replay, from the GPU-sharing pods alone.
//!
//! A GPU that hosts shared pods (a fraction of one GPU each) keeps `1000 - sum of their
//! milli-GPU` free, and no whole-GPU pod can use it. Which shared pods end up on one GPU is a
//! one-dimensional bin-packing *pattern* (a multiset of sizes summing to at most 1000). If a
//! policy places every shared pod that arrives before some point (the "forced" pods: `fgd`,
//! `best-fit` and `autoglm` place every pod that arrives up to 90% of the capacity on the
//! openb lists), its GPUs hosting shared pods are some mix of patterns that covers the forced
//! pods and uses no more pods than arrived in the whole replay. The least free capacity over
//! all such mixes is a linear program (Gilmore and Gomory's cutting-stock formulation):
//!
//! ```text
//! minimise    sum_p x_p * (1000 - used_p)                 (free milli-GPU on shared GPUs)
//! subject to  forced_s <= sum_p a_ps * x_p <= arrived_s   for every size s
//!             x_p >= 0
//! ```
//!
//! where `a_ps` is how many pods of size `s` pattern `p` holds. Its optimum is a lower bound
//! on the free milli-GPU at the end of the replay: it ignores CPU, memory, GPU types, node
//! boundaries and arrival order, and it knows every arrival in advance. Every free milli-GPU
//! it finds is a sliver that only pods which never arrived could fill (for example 190
//! milli-GPU next to an 810-milli pod when the pods of at most 190 milli-GPU run out).
//!
//! Patterns are enumerated in full (a few thousand for the openb sizes), so the bound is
//! meant for workloads with tens of distinct sizes, not thousands.
//!
//! # Source
//! P. C. Gilmore and R. E. Gomory, "A Linear Programming Approach to the Cutting-Stock
//! Problem", Operations Research 9(6), 1961. Solved with the `microlp` simplex solver.
//!
//! [`placement`]: super::placement

use std::collections::BTreeMap;

use microlp::{ComparisonOp, OptimizationDirection, Problem};

use crate::model::{GpuRequest, MILLI_PER_GPU as GPU_MILLI, PodRequest};

/// Most patterns enumerated before giving up (the openb lists need under 7,000).
const MAX_PATTERNS: usize = 2_000_000;

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
    /// The LP solver failed.
    #[error("LP solver: {0}")]
    Solver(String),
}

/// Count the shared pods of `work` by size: `forced` are those whose arrival keeps the
/// cumulative arrived GPU request (whole and shared) at or below `forced_pct`% of
/// `capacity_milli`, as in the replay's steps; `arrived` are all of them. Shared pods asking
/// no compute (memory only) are left out: they use no milli-GPU.
pub fn shared_counts(
    work: &[PodRequest],
    capacity_milli: u64,
    forced_pct: u32,
) -> BTreeMap<u32, SizeCount> {
    let mut counts: BTreeMap<u32, SizeCount> = BTreeMap::new();
    let mut arrived = 0u64;
    for pod in work {
        arrived += pod.gpu.total_milli();
        if let GpuRequest::Shared { milli, .. } = pod.gpu
            && milli > 0
        {
            let c = counts.entry(milli).or_default();
            c.arrived += 1;
            if arrived * 100 <= capacity_milli * u64::from(forced_pct) {
                c.forced += 1;
            }
        }
    }
    counts
}

/// The cutting-stock LP bound of the module docs for the given counts by size (milli-GPU).
///
/// # Errors
/// [`BoundError::BadSize`] for a size outside 1..=1000 or with `forced > arrived`;
/// [`BoundError::TooManyPatterns`]; [`BoundError::Solver`].
pub fn sharing_bound(counts: &BTreeMap<u32, SizeCount>) -> Result<SharingBound, BoundError> {
    for (&milli, c) in counts {
        if milli == 0 || milli > GPU_MILLI {
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
    enumerate(&sizes, 0, GPU_MILLI, &mut current, &mut patterns)?;

    let mut lp = Problem::new(OptimizationDirection::Minimize);
    let vars: Vec<_> = patterns
        .iter()
        .map(|p| {
            let used: u32 = p.iter().sum();
            lp.add_var(f64::from(GPU_MILLI - used), (0.0, f64::INFINITY))
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
    let solution = lp
        .solve()
        .map_err(|e| BoundError::Solver(e.to_string()))?
        .into_solution()
        .map_err(|e| BoundError::Solver(format!("{e:?}")))?;
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

    fn counts(v: &[(u32, u64, u64)]) -> BTreeMap<u32, SizeCount> {
        v.iter()
            .map(|&(m, forced, arrived)| (m, SizeCount { forced, arrived }))
            .collect()
    }

    #[test]
    fn exact_complements_leave_nothing_free() {
        // 4 forced 600s, 4 400s available: four 600+400 GPUs, 0 free.
        let b = sharing_bound(&counts(&[(400, 0, 4), (600, 4, 4)])).unwrap();
        assert!(b.free_milli.abs() < 1e-6, "{b:?}");
        assert_eq!(b.mix, vec![(vec![400, 600], 4.0)]);
    }

    #[test]
    fn missing_complements_leave_slivers() {
        // 3 forced 810s, one 190 arrived: 810+190 on one GPU, two 190 slivers = 380.
        let b = sharing_bound(&counts(&[(190, 0, 1), (810, 3, 3)])).unwrap();
        assert!((b.free_milli - 380.0).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn unforced_pods_are_not_placed_when_they_only_add_waste() {
        // Nothing forced: the empty mix, 0 free.
        let b = sharing_bound(&counts(&[(700, 0, 5)])).unwrap();
        assert!(b.free_milli.abs() < 1e-6);
        // 2 forced 470s: 470+470 on one GPU, 60 free (better than two GPUs of 530 free).
        let b = sharing_bound(&counts(&[(470, 2, 9)])).unwrap();
        assert!((b.free_milli - 60.0).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn fractional_mixes_are_allowed_and_stay_a_lower_bound() {
        // 3 forced 500s: one GPU 500+500 and one 500 alone (500 free) is the best integer
        // packing; the LP takes 1.5 GPUs of 500+500, 0 free, which is still a lower bound.
        let b = sharing_bound(&counts(&[(500, 3, 3)])).unwrap();
        assert!(b.free_milli.abs() < 1e-6, "{b:?}");
        assert_eq!(b.mix, vec![(vec![500, 500], 1.5)]);
    }

    #[test]
    fn patterns_are_every_multiset_that_fits() {
        // Sizes 300 (2 available) and 400 (1): {300}, {300,300}, {400}, {300,400},
        // {300,300,400} = 1000.
        let b = sharing_bound(&counts(&[(300, 0, 2), (400, 0, 1)])).unwrap();
        assert_eq!(b.patterns, 5);
    }

    #[test]
    fn bad_sizes_are_named() {
        let e = sharing_bound(&counts(&[(1200, 1, 1)])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shared size 1200 milli-GPU: must be within 1..=1000"
        );
        let e = sharing_bound(&counts(&[(300, 2, 1)])).unwrap_err();
        assert!(e.to_string().contains("forced pods must not exceed"), "{e}");
    }

    #[test]
    fn shared_counts_split_at_the_forced_step() {
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
        let c = shared_counts(&work, 2000, 75);
        assert_eq!(
            c[&500],
            SizeCount {
                forced: 1,
                arrived: 3
            }
        );
    }
}
