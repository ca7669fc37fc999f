//! An upper bound on the GPU allocation that a placement reaches at the end of the
//! [`placement`] replay (given a premise on its earlier steps), from packing the GPU-sharing
//! pods.
//!
//! A GPU that hosts shared pods (a fraction of one GPU each) keeps `1000 - sum of their
//! milli-GPU` free, and no whole-GPU pod can use it. Which shared pods end up on one GPU is a
//! one-dimensional bin-packing *pattern* (a multiset of sizes summing to at most 1000).
//!
//! **Premise.** The bound holds for placements whose allocated milli-GPU at each listed step
//! (percent of the capacity arrived, as in the replay's reports) is at least a given floor.
//! Two premises are used ([`Floors`]):
//! - *keep up with a reference policy*: the floor at each step from 90% to 130% is what the
//!   reference (FGD) allocated at that step on the same seed. This is the issue's own
//!   requirement for `autoglm` ("allocates more than FGD at every step from 90% to 130%",
//!   read as "at least", which is weaker, so the bound covers "more than" too), read seed by
//!   seed; `autoglm` meets it on the openb default, `sharing` and `few-cpu`
//!   lists (`autoglm-sim placement --format json`). Read on the means over the seeds
//!   instead, it is one LP over all of them ([`joint_allocation_bound`]);
//! - *place everything up to a step*: the floor at that step is all the GPU request arrived
//!   by it ([`Floors::place_all_by`]).
//!
//! It is not a bound on every policy: one that refuses pods early can leave less free later.
//!
//! Given the premise, the GPUs hosting shared pods are some mix of patterns; the shared pods
//! placed from each arrival band and the whole-GPU pods placed from each band are bounded by
//! what arrived in it, the patterns and whole-GPU pods share the cluster's GPUs, and each
//! floor bounds what was placed from the bands up to its step. The most allocation over all
//! such choices is a linear program (Gilmore and Gomory's cutting-stock formulation with the
//! placed counts as variables):
//!
//! ```text
//! maximise    sum_{b,s} s * y_bs + 1000 * sum_b w_b               (allocated milli-GPU)
//! subject to  sum_b y_bs  = sum_p a_ps * x_p                      for every size s
//!             sum_p x_p + sum_b w_b <= GPUs
//!             sum_{b <= q} (sum_s s * y_bs + 1000 * w_b) >= floor_q   for every floor step q
//!             0 <= y_bs <= shared pods of size s arrived in band b
//!             0 <= w_b  <= GPUs asked by whole-GPU pods arrived in band b
//!             x_p >= 0
//! ```
//!
//! where `a_ps` is how many pods of size `s` pattern `p` holds and band `b` is the first
//! floor step at or after the pod's arrival step (one band after the last floor). Its
//! optimum bounds the allocation at the end of the replay from above: it ignores CPU, memory,
//! GPU types, node boundaries and the order within a band, it packs fractionally, and it
//! knows every arrival in advance. What it leaves free is slivers that only pods which never
//! arrived could fill (for example 190 milli-GPU next to an 810-milli pod when the pods of at
//! most 190 milli-GPU run out), and idle GPUs when the whole-GPU arrivals run out.
//!
//! An infeasible program means the premise itself is impossible: no placement of these
//! arrivals on these GPUs meets the floors. Patterns are enumerated in full (up to about 7,000 for
//! the openb lists), so the bound is meant for workloads with tens of distinct sizes, not
//! thousands (more than 200,000 patterns is an error).
//!
//! # Source
//! P. C. Gilmore and R. E. Gomory, "A Linear Programming Approach to the Cutting-Stock
//! Problem", Operations Research 9(6), 1961. Solved with the `microlp` simplex solver.
//!
//! [`placement`]: super::placement

use std::collections::BTreeMap;

use microlp::{ComparisonOp, OptimizationDirection, Problem, Variable};

use crate::model::{GpuRequest, MILLI_PER_GPU, PodRequest};
use crate::sim::placement::{StepReport, arrival_step};

/// Most patterns enumerated before giving up (the openb lists need up to about 7,000; 400,000
/// take about 10 s and 260 MB).
const MAX_PATTERNS: usize = 200_000;

/// A replay's GPU request grouped by arrival step: the first reported step (percent of the
/// capacity) whose report includes the pod ([`arrival_step`]).
/// Pods asking no milli-GPU (CPU-only, or GPU memory only) are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arrivals {
    /// Shared pods: `(step, milli-GPU)` to pod count.
    pub shared: BTreeMap<(u32, u32), u64>,
    /// Whole-GPU pods: step to GPUs asked.
    pub whole_gpus: BTreeMap<u32, u64>,
}

impl Arrivals {
    /// Group `work` (the replay's sequence) against a capacity of `capacity_milli` (> 0).
    pub fn of(work: &[PodRequest], capacity_milli: u64) -> Self {
        let mut out = Self::default();
        let mut arrived = 0u64;
        for pod in work {
            let milli = pod.gpu.total_milli();
            arrived += milli;
            if milli == 0 {
                continue;
            }
            let step = arrival_step(arrived, capacity_milli);
            match pod.gpu {
                GpuRequest::Shared { milli, .. } => {
                    *out.shared.entry((step, milli)).or_default() += 1
                }
                GpuRequest::Whole { count } => {
                    *out.whole_gpus.entry(step).or_default() += u64::from(count)
                }
                GpuRequest::None => {}
            }
        }
        out
    }

    /// Milli-GPU asked by the pods arriving at or before `step`.
    pub fn milli_by(&self, step: u32) -> u64 {
        let shared: u64 = self
            .shared
            .range(..=(step, u32::MAX))
            .map(|(&(_, m), &n)| u64::from(m) * n)
            .sum();
        let whole: u64 = self.whole_gpus.range(..=step).map(|(_, &g)| g).sum();
        shared + whole * u64::from(MILLI_PER_GPU)
    }

    /// Shared pods arrived in all.
    pub fn shared_pods(&self) -> u64 {
        self.shared.values().sum()
    }
}

/// The premise: at each step (percent of the capacity arrived), the least milli-GPU a
/// placement has allocated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Floors(pub BTreeMap<u32, u64>);

impl Floors {
    /// Keep up with a reference replay: at each of its steps from `from_pct` on, the floor
    /// is what it allocated.
    pub fn keep_up(reference: &[StepReport], from_pct: u32) -> Self {
        Self(
            reference
                .iter()
                .filter(|s| s.arrived_pct >= from_pct)
                .map(|s| (s.arrived_pct, s.allocated_milli))
                .collect(),
        )
    }

    /// Every pod arriving by `step` is placed: the floor there is all they ask.
    pub fn place_all_by(arrivals: &Arrivals, step: u32) -> Self {
        Self(BTreeMap::from([(step, arrivals.milli_by(step))]))
    }
}

/// Result of [`allocation_bound`].
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationBound {
    /// Most allocated milli-GPU at the end of the replay (LP optimum).
    pub allocated_milli: f64,
    /// Least free milli-GPU at the end: `1000 x GPUs - allocated_milli`.
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
    /// A shared size is 0 or above 1000.
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
    /// No placement meets the floors.
    #[error(
        "the premise cannot hold: no placement of these arrivals on {gpus} GPUs allocates the floor at every step (for example, the pods it requires do not fit)"
    )]
    PremiseImpossible {
        /// GPUs in the cluster.
        gpus: u64,
    },
    /// The LP solver failed.
    #[error("LP solver: {0}")]
    Solver(String),
}

/// The LP bound of the module docs for `arrivals` on a cluster of `gpus` GPUs, under the
/// premise `floors` (milli-GPU).
///
/// # Errors
/// [`BoundError::BadSize`] for a shared size outside 1..=1000;
/// [`BoundError::TooManyPatterns`]; [`BoundError::PremiseImpossible`];
/// [`BoundError::Solver`].
pub fn allocation_bound(
    arrivals: &Arrivals,
    floors: &Floors,
    gpus: u64,
) -> Result<AllocationBound, BoundError> {
    joint_allocation_bound(std::slice::from_ref(arrivals), floors, gpus)
}

/// The same LP over several replays at once (one cluster of `gpus` GPUs each), with
/// `floors` bounding what they allocate **together** at each step: the premise read on
/// totals (or means) over seeds instead of seed by seed. The result's allocation, free
/// capacity and mix are totals over the replays; divide by their number for means.
///
/// # Errors
/// As [`allocation_bound`].
pub fn joint_allocation_bound(
    replays: &[Arrivals],
    floors: &Floors,
    gpus: u64,
) -> Result<AllocationBound, BoundError> {
    // Band of a step: the first floor step at or after it (u32::MAX after the last).
    let band = |step: u32| floors.0.range(step..).next().map_or(u32::MAX, |(&q, _)| q);
    let mut lp = Problem::new(OptimizationDirection::Maximize);
    // Per replay: its patterns and their variables.
    let mut all_patterns: Vec<(Vec<Vec<u32>>, Vec<Variable>)> = Vec::new();
    // (band, variable, milli-GPU per unit) of every placed-count variable, all replays.
    let mut placed: Vec<(u32, Variable, f64)> = Vec::new();
    for arrivals in replays {
        let mut per_size: BTreeMap<u32, u64> = BTreeMap::new();
        let mut shared: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for (&(step, milli), &n) in &arrivals.shared {
            if milli == 0 || milli > MILLI_PER_GPU {
                return Err(BoundError::BadSize {
                    milli,
                    rule: "must be within 1..=1000",
                });
            }
            *per_size.entry(milli).or_default() += n;
            *shared.entry((band(step), milli)).or_default() += n;
        }
        let mut whole: BTreeMap<u32, u64> = BTreeMap::new();
        for (&step, &g) in &arrivals.whole_gpus {
            *whole.entry(band(step)).or_default() += g;
        }
        let sizes: Vec<(u32, u64)> = per_size.into_iter().filter(|&(_, n)| n > 0).collect();
        let mut patterns: Vec<Vec<u32>> = Vec::new();
        let mut current: Vec<u32> = Vec::new();
        enumerate(&sizes, 0, MILLI_PER_GPU, &mut current, &mut patterns)?;
        let x: Vec<Variable> = patterns
            .iter()
            .map(|_| lp.add_var(0.0, (0.0, f64::INFINITY)))
            .collect();
        // Shared pods placed equal the slots the patterns hold, size by size.
        for &(milli, _) in &sizes {
            let mut terms: Vec<(Variable, f64)> = patterns
                .iter()
                .zip(&x)
                .filter_map(|(p, &v)| {
                    let k = p.iter().filter(|&&m| m == milli).count();
                    (k > 0).then_some((v, -(k as f64)))
                })
                .collect();
            for (&(b, m), &n) in shared.iter().filter(|(k, _)| k.1 == milli) {
                let v = lp.add_var(f64::from(m), (0.0, n as f64));
                placed.push((b, v, f64::from(m)));
                terms.push((v, 1.0));
            }
            lp.add_constraint(terms.as_slice(), ComparisonOp::Eq, 0.0);
        }
        // Patterns and whole-GPU pods share the GPUs.
        let mut gpu_terms: Vec<(Variable, f64)> = x.iter().map(|&v| (v, 1.0)).collect();
        for (&b, &g) in &whole {
            let per = f64::from(MILLI_PER_GPU);
            let v = lp.add_var(per, (0.0, g as f64));
            placed.push((b, v, per));
            gpu_terms.push((v, 1.0));
        }
        if !gpu_terms.is_empty() {
            lp.add_constraint(gpu_terms.as_slice(), ComparisonOp::Le, gpus as f64);
        }
        all_patterns.push((patterns, x));
    }
    for (&q, &floor) in &floors.0 {
        let terms: Vec<(Variable, f64)> = placed
            .iter()
            .filter(|p| p.0 <= q)
            .map(|p| (p.1, p.2))
            .collect();
        if terms.is_empty() {
            if floor > 0 {
                return Err(BoundError::PremiseImpossible { gpus });
            }
            continue;
        }
        lp.add_constraint(terms.as_slice(), ComparisonOp::Ge, floor as f64);
    }
    let solution = match lp.solve() {
        Err(microlp::Error::Infeasible) => return Err(BoundError::PremiseImpossible { gpus }),
        Err(e) => return Err(BoundError::Solver(e.to_string())),
        Ok(outcome) => outcome
            .into_solution()
            .map_err(|e| BoundError::Solver(format!("{e:?}")))?,
    };
    let mut mix: BTreeMap<Vec<u32>, f64> = BTreeMap::new();
    for (patterns, x) in &all_patterns {
        for (p, &v) in patterns.iter().zip(x) {
            let n = solution.var_value(v);
            if n > 1e-6 {
                *mix.entry(p.clone()).or_default() += n;
            }
        }
    }
    let mut mix: Vec<(Vec<u32>, f64)> = mix.into_iter().collect();
    mix.sort_by(|a, b| b.1.total_cmp(&a.1));
    let allocated = solution.objective();
    let capacity = (gpus * replays.len() as u64) as f64 * f64::from(MILLI_PER_GPU);
    Ok(AllocationBound {
        allocated_milli: allocated,
        free_milli: (capacity - allocated).max(0.0),
        patterns: all_patterns.iter().map(|(p, _)| p.len()).sum(),
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

    /// Arrivals from `(step, milli-GPU, pods)` shared entries and `(step, GPUs)` whole ones.
    fn arrivals(shared: &[(u32, u32, u64)], whole: &[(u32, u64)]) -> Arrivals {
        Arrivals {
            shared: shared.iter().map(|&(q, m, n)| ((q, m), n)).collect(),
            whole_gpus: whole.iter().copied().collect(),
        }
    }

    fn floors(v: &[(u32, u64)]) -> Floors {
        Floors(v.iter().copied().collect())
    }

    #[test]
    fn arrivals_group_by_the_first_step_that_reports_them() {
        let pod = |gpu| PodRequest::new("p", 0, 0, gpu);
        let half = GpuRequest::Shared {
            milli: 500,
            mem_mib: 0,
        };
        // Capacity 2000 milli: cumulative 1000 (50%), 1000 (CPU-only), 1500 (75%),
        // 2000 (100%), 2010 (100.5% -> step 101).
        let work = vec![
            pod(GpuRequest::Whole { count: 1 }),
            pod(GpuRequest::None),
            pod(half),
            pod(half),
            pod(GpuRequest::Shared {
                milli: 10,
                mem_mib: 0,
            }),
        ];
        let a = Arrivals::of(&work, 2000);
        assert_eq!(
            a,
            arrivals(&[(75, 500, 1), (100, 500, 1), (101, 10, 1)], &[(50, 1)])
        );
        assert_eq!(a.milli_by(74), 1000);
        assert_eq!(a.milli_by(75), 1500);
        assert_eq!(a.milli_by(130), 2010);
        assert_eq!(a.shared_pods(), 3);
        assert_eq!(Floors::place_all_by(&a, 100), floors(&[(100, 2000)]));
    }

    #[test]
    fn exact_complements_leave_nothing_free() {
        // 10 GPUs. Four 600s must be placed by 50%; four 400s and 100 whole GPUs arrive
        // later. Four 600+400 GPUs and six whole-GPU pods: 10,000 milli, nothing free.
        let a = arrivals(&[(50, 600, 4), (100, 400, 4)], &[(100, 100)]);
        let b = allocation_bound(&a, &Floors::place_all_by(&a, 50), 10).unwrap();
        assert!(b.free_milli.abs() < 1e-6, "{b:?}");
        assert!((b.allocated_milli - 10_000.0).abs() < 1e-6, "{b:?}");
        assert_eq!(b.mix, vec![(vec![400, 600], 4.0)]);
    }

    #[test]
    fn missing_complements_leave_slivers() {
        // 5 GPUs, three 810s by 50%, one 190 later, whole pods to spare: 810+190, 810, 810
        // and two whole GPUs; 2 x 190 = 380 free.
        let a = arrivals(&[(50, 810, 3), (100, 190, 1)], &[(100, 10)]);
        let b = allocation_bound(&a, &Floors::place_all_by(&a, 50), 5).unwrap();
        assert!((b.free_milli - 380.0).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn pods_the_premise_does_not_require_are_left_out_when_they_only_add_waste() {
        // No floor: four whole GPUs beat any 700-milli pod.
        let a = arrivals(&[(50, 700, 5)], &[(100, 10)]);
        let b = allocation_bound(&a, &Floors::default(), 4).unwrap();
        assert!(b.free_milli.abs() < 1e-6, "{b:?}");
        assert!(b.mix.is_empty());
        // Two 470s required, seven more arrive later: 470+470 on one GPU (60 free) and two
        // whole GPUs; another pair would put 940 where a whole-GPU pod puts 1000.
        let a = arrivals(&[(50, 470, 2), (100, 470, 7)], &[(100, 10)]);
        let b = allocation_bound(&a, &Floors::place_all_by(&a, 50), 3).unwrap();
        assert!((b.free_milli - 60.0).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn a_floor_below_the_arrivals_lets_the_bound_skip_pods() {
        // 2 GPUs; two 810s arrive by 50%, two whole GPUs by 100%.
        let a = arrivals(&[(50, 810, 2)], &[(100, 2)]);
        // Both 810s required: 2 x 190 free.
        let all = allocation_bound(&a, &Floors::place_all_by(&a, 50), 2).unwrap();
        assert!((all.free_milli - 380.0).abs() < 1e-6, "{all:?}");
        // A reference that placed one 810 by 50%: one 810 and one whole GPU, 190 free.
        let one = allocation_bound(&a, &floors(&[(50, 810)]), 2).unwrap();
        assert!((one.free_milli - 190.0).abs() < 1e-6, "{one:?}");
        // A floor counts everything placed from the bands up to its step, whole GPUs too:
        // 1,620 by 100% is met by two whole GPUs, nothing free.
        let late = allocation_bound(&a, &floors(&[(100, 1620)]), 2).unwrap();
        assert!(late.free_milli.abs() < 1e-6, "{late:?}");
    }

    #[test]
    fn a_joint_premise_lets_one_replay_cover_for_another() {
        // One GPU each. A: two 500s by 50%, its reference placed none. B: an 810 by 50% and
        // a whole-GPU pod later, its reference placed the 810.
        let a = arrivals(&[(50, 500, 2)], &[]);
        let b = arrivals(&[(50, 810, 1)], &[(100, 1)]);
        // Seed by seed, B must place its 810: 190 free in B, A packs 500+500.
        let free_a = allocation_bound(&a, &floors(&[(50, 0)]), 1)
            .unwrap()
            .free_milli;
        let free_b = allocation_bound(&b, &floors(&[(50, 810)]), 1)
            .unwrap()
            .free_milli;
        assert!(free_a.abs() < 1e-6 && (free_b - 190.0).abs() < 1e-6);
        // On the total (810 by 50%), A's 1,000 covers it and B takes the whole-GPU pod.
        let j = joint_allocation_bound(&[a, b], &floors(&[(50, 810)]), 1).unwrap();
        assert!(j.free_milli.abs() < 1e-6, "{j:?}");
        assert!((j.allocated_milli - 2000.0).abs() < 1e-6, "{j:?}");
        assert_eq!(j.mix, vec![(vec![500, 500], 1.0)]);
    }

    #[test]
    fn each_floor_counts_the_bands_up_to_its_step() {
        // 2 GPUs. A 600 by 50%, a 400 at 75%, an 810 at 100%, two whole GPUs at 120%.
        let a = arrivals(&[(50, 600, 1), (75, 400, 1), (100, 810, 1)], &[(120, 2)]);
        // Floors 600 at 50% and 1,000 at 100%: the 400 (band 100) must join the 600 by
        // 100%, the 810 is optional. 600+400 on one GPU and one whole GPU: 2,000, none free.
        let b = allocation_bound(&a, &floors(&[(50, 600), (100, 1000)]), 2).unwrap();
        assert!(b.free_milli.abs() < 1e-6, "{b:?}");
        assert_eq!(b.mix, vec![(vec![400, 600], 1.0)]);
        // Raise the 100% floor to 1,810: the 810 must be placed too, on the second GPU,
        // and 190 stays free.
        let b = allocation_bound(&a, &floors(&[(50, 600), (100, 1810)]), 2).unwrap();
        assert!((b.free_milli - 190.0).abs() < 1e-6, "{b:?}");
        // A floor at 75% sees only the 600 and the 400: 1,000 is the most it can ask.
        assert!(allocation_bound(&a, &floors(&[(75, 1000)]), 2).is_ok());
        let e = allocation_bound(&a, &floors(&[(75, 1001)]), 2).unwrap_err();
        assert!(matches!(e, BoundError::PremiseImpossible { .. }), "{e}");
    }

    #[test]
    fn fractional_mixes_are_allowed_and_stay_a_bound() {
        // 3 GPUs, three 500s required. Best integer placement: 500+500, 500 alone and one
        // whole GPU (500 free); the LP takes 1.5 GPUs of 500+500 and 1.5 whole GPUs, 0 free,
        // which still bounds the allocation from above.
        let a = arrivals(&[(50, 500, 3)], &[(100, 10)]);
        let b = allocation_bound(&a, &Floors::place_all_by(&a, 50), 3).unwrap();
        assert!(b.free_milli.abs() < 1e-6, "{b:?}");
        assert_eq!(b.mix, vec![(vec![500, 500], 1.5)]);
    }

    #[test]
    fn patterns_are_every_multiset_that_fits() {
        // Sizes 300 (2 arrived) and 400 (1): {300}, {300,300}, {400}, {300,400},
        // {300,300,400} = 1000.
        let a = arrivals(&[(50, 300, 2), (60, 400, 1)], &[]);
        let b = allocation_bound(&a, &Floors::default(), 10).unwrap();
        assert_eq!(b.patterns, 5);
    }

    #[test]
    fn bad_sizes_are_named() {
        let a = arrivals(&[(50, 1200, 1)], &[]);
        let e = allocation_bound(&a, &Floors::default(), 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shared size 1200 milli-GPU: must be within 1..=1000"
        );
    }

    #[test]
    fn a_premise_that_cannot_hold_is_an_error() {
        // 2 GPUs: a whole-GPU pod, a 400 and a 700 all required by 50%; 400+700 > 1000.
        let a = arrivals(&[(50, 400, 1), (50, 700, 1)], &[(50, 1)]);
        let e = allocation_bound(&a, &Floors::place_all_by(&a, 50), 2).unwrap_err();
        assert!(
            matches!(e, BoundError::PremiseImpossible { gpus: 2 }),
            "{e}"
        );
        assert!(e.to_string().contains("premise cannot hold"), "{e}");
        // A floor above everything that arrived by its step.
        let e = allocation_bound(&a, &floors(&[(40, 1)]), 2).unwrap_err();
        assert!(matches!(e, BoundError::PremiseImpossible { .. }), "{e}");
    }
}
