//! Placement policies behind one trait.
//!
//! A [`Policy`] sees only nodes that passed [`crate::feasibility`] (taints, selector, GPU type,
//! CPU, memory, GPU count, milli-GPU, GPU MiB) and picks one node plus the GPUs on it.
//! Scores are "higher is better" on each policy's own scale; [`Placement::score`] carries it.
//!
//! Ties: the kube-scheduler baselines (`least-loaded`, `least-allocated`, `most-allocated`)
//! break ties uniformly at random among the top-scored nodes, as kube-scheduler's
//! `selectHost` does (reservoir sampling over the node list), with the policy's own seeded
//! RNG so runs are reproducible. The FGD paper's policies (`dot-prod`, `gpu-clustering`,
//! `gpu-packing`, `best-fit`, `fgd`) take the first top-scored node in node order: with that
//! rule our FGD lands within 0.15 point of the published allocation on the default trace,
//! while random ties cost it about 5 points (docs/benchmarks.md, "Fidelity against the
//! published numbers"), so the published numbers were evidently produced with an
//! order-stable choice.
//!
//! GPU choice inside a node, unless a policy says otherwise: a whole-GPU request takes the
//! lowest-index idle GPUs; a fractional request takes the fitting GPU with the least free
//! milli-GPU ("best fit", first index on ties).
//!
//! # Source
//! The FGD paper's baselines and their reference implementation: Weng et al., "Beware of
//! Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent",
//! USENIX ATC '23, §6.1, and the plugins of `hkust-adsl/kubernetes-scheduler-simulator`
//! (`pkg/simulator/plugin/*_score.go`, read for semantics, not copied).

mod baselines;
pub mod fgd;
mod frag_index;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::feasibility::{Unschedulable, explain, feasible_nodes};
use crate::model::{
    Cluster, GpuRequest, GpuShare, MILLI_PER_GPU, NodeState, Placement, PodRequest,
};

pub use baselines::{
    BestFit, DotProd, GpuClustering, GpuPacking, LeastAllocated, LeastLoaded, MostAllocated,
    RandomFit, RoundRobin,
};
pub use fgd::{AutoGlm, AutoGlmConfig, Fgd, TypePrices, TypicalPods, TypicalSpec};

/// Normalisation constant for CPU in BestFit and DotProd, in milli-CPU.
///
/// # Source
/// `MaxSpecCpu = 128000` in the FGD reference simulator (`open-gpu-share/utils/const.go`):
/// the largest node in the Alibaba trace family has 128 vCPUs.
pub const MAX_SPEC_CPU: f64 = 128_000.0;
/// Normalisation constant for GPU in BestFit, DotProd and GpuClustering, in milli-GPU.
///
/// # Source
/// `MaxSpecGpu = 8000` in the same file: at most 8 GPUs per node.
pub const MAX_SPEC_GPU: f64 = 8_000.0;

/// Which GPUs of a node a request would take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuPick {
    /// No GPU (CPU-only pod).
    None,
    /// Part of GPU `index` (fractional request).
    Shared(usize),
    /// The lowest-index idle GPUs (whole-GPU request).
    Whole,
}

/// A placement policy.
pub trait Policy {
    /// The policy's CLI name (`fgd`, `best-fit`, ...).
    fn name(&self) -> &str;

    /// Score `node` (feasible for `req`): higher is better. Returns the score and the GPUs the
    /// pod would take there.
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick);

    /// How this policy chooses among equally top-scored nodes: `None` (the default) takes the
    /// first in node order; a [`TieBreak::new`] draws at random as kube-scheduler does.
    fn tie_break(&mut self) -> Option<&mut TieBreak> {
        None
    }

    /// Pick a node among `feasible` (non-empty, all able to host `req`). The default takes the
    /// highest [`Policy::score`], ties settled by [`Policy::tie_break`].
    fn select(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        feasible: &[usize],
    ) -> Option<Placement> {
        let mut best = Best::default();
        for &n in feasible {
            let (s, pick) = self.score(cluster, n, req);
            best.offer(s, n, pick, self.tie_break());
        }
        best.into_placement(cluster, req)
    }

    /// Where `req` goes on `cluster`: the default filters with
    /// [`crate::feasibility::feasible_nodes`] into `feasible` (a scratch buffer) and calls
    /// [`Policy::select`]. A policy may override it with an index kept across decisions; the
    /// result must be the default's.
    ///
    /// # Errors
    /// [`Unschedulable`] with per-reason node counts when no node fits.
    fn place(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        feasible: &mut Vec<usize>,
    ) -> Result<Placement, Unschedulable> {
        filter_then_select(self, cluster, req, feasible)
    }
}

/// [`Policy::place`]'s default: feasibility filter, then [`Policy::select`].
///
/// # Errors
/// [`Unschedulable`] with per-reason node counts when no node fits.
pub fn filter_then_select<P: Policy + ?Sized>(
    policy: &mut P,
    cluster: &Cluster,
    req: &PodRequest,
    feasible: &mut Vec<usize>,
) -> Result<Placement, Unschedulable> {
    feasible_nodes(cluster, req, feasible)?;
    policy
        .select(cluster, req, feasible)
        .ok_or_else(|| explain(cluster, req))
}

/// The names accepted by [`policy_by_name`], in the order the simulator reports them.
pub const POLICY_NAMES: [&str; 11] = [
    "random",
    "round-robin",
    "least-loaded",
    "least-allocated",
    "most-allocated",
    "dot-prod",
    "gpu-clustering",
    "gpu-packing",
    "best-fit",
    "fgd",
    "autoglm",
];

/// Extra names accepted by [`policy_by_name`] for experiments: `fgd-random-ties` is FGD with
/// kube-scheduler's random choice among top-scored nodes; `autoglm-95` uses FGD's 95%
/// typical pods; `autoglm-no-strand` drops the CPU-stranding term; `autoglm-no-scarcity`
/// drops the host-scarcity factor; `autoglm-no-type-price` drops the GPU-type prices
/// (ablations).
pub const EXTRA_POLICY_NAMES: [&str; 5] = [
    "fgd-random-ties",
    "autoglm-95",
    "autoglm-no-strand",
    "autoglm-no-scarcity",
    "autoglm-no-type-price",
];

/// Errors building a policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Unknown policy name.
    #[error("failed to build policy {0:?}: unknown name (known: {known})", known = POLICY_NAMES.join(", "))]
    Unknown(String),
}

/// Build a policy by its CLI name. `seed` seeds its tie-breaking RNG; `workload` is the pod
/// population the fragmentation-aware policies measure against (`fgd` builds its typical
/// pods from it; `autoglm` its request shapes).
///
/// # Errors
/// [`PolicyError::Unknown`] for a name not in [`POLICY_NAMES`].
pub fn policy_by_name(
    name: &str,
    seed: u64,
    workload: &[PodRequest],
) -> Result<Box<dyn Policy>, PolicyError> {
    Ok(match name {
        "random" => Box::new(RandomFit::new(seed)),
        "round-robin" => Box::new(RoundRobin::default()),
        "least-loaded" => Box::new(LeastLoaded::new(seed)),
        "least-allocated" => Box::new(LeastAllocated::new(seed)),
        "most-allocated" => Box::new(MostAllocated::new(seed)),
        "dot-prod" => Box::new(DotProd::new()),
        "gpu-clustering" => Box::new(GpuClustering::new()),
        "gpu-packing" => Box::new(GpuPacking::new()),
        "best-fit" => Box::new(BestFit::new()),
        "fgd" => Box::new(Fgd::new(TypicalPods::from_requests(
            workload,
            fgd::TYPICAL_POPULARITY,
        ))),
        "fgd-random-ties" => Box::new(Fgd::with_random_ties(
            TypicalPods::from_requests(workload, fgd::TYPICAL_POPULARITY),
            seed,
        )),
        "autoglm" => Box::new(AutoGlm::from_workload(workload)),
        "autoglm-95" => Box::new(AutoGlm::with_config(
            workload,
            AutoGlmConfig {
                popularity: fgd::TYPICAL_POPULARITY,
                ..AutoGlmConfig::default()
            },
        )),
        "autoglm-no-scarcity" => Box::new(AutoGlm::with_config(
            workload,
            AutoGlmConfig {
                scarcity: 0.0,
                ..AutoGlmConfig::default()
            },
        )),
        "autoglm-no-type-price" => Box::new(AutoGlm::with_config(
            workload,
            AutoGlmConfig {
                type_price: 0.0,
                ..AutoGlmConfig::default()
            },
        )),
        "autoglm-no-strand" => Box::new(AutoGlm::with_config(
            workload,
            AutoGlmConfig {
                cpu_strand_weight: 0.0,
                ..AutoGlmConfig::default()
            },
        )),
        other => return Err(PolicyError::Unknown(other.to_string())),
    })
}

/// Turn a pick into concrete GPU shares.
pub fn to_placement(
    node: &NodeState,
    index: usize,
    req: &PodRequest,
    pick: GpuPick,
    score: f64,
) -> Placement {
    let gpus = match (req.gpu, pick) {
        (GpuRequest::Shared { milli, mem_mib }, GpuPick::Shared(g)) => vec![GpuShare {
            index: g,
            milli,
            mem_mib,
        }],
        (GpuRequest::Whole { count }, _) => node
            .gpus
            .iter()
            .enumerate()
            .filter(|(_, g)| g.is_idle())
            .take(count as usize)
            .map(|(i, g)| GpuShare {
                index: i,
                milli: MILLI_PER_GPU,
                mem_mib: g.mem_mib,
            })
            .collect(),
        _ => Vec::new(),
    };
    Placement {
        node: index,
        gpus,
        score,
    }
}

/// Whether GPU `g` of `node` can take the fractional part of `req`.
pub fn gpu_fits(node: &NodeState, g: usize, req: &PodRequest) -> bool {
    match req.gpu {
        GpuRequest::Shared { milli, mem_mib } => {
            let gpu = &node.gpus[g];
            gpu.milli_free() >= milli && gpu.mem_free_mib() >= mem_mib
        }
        _ => false,
    }
}

/// Default GPU pick: best fit for a fractional request (least free milli-GPU that fits, first
/// index on ties), lowest-index idle GPUs for whole GPUs.
pub fn best_fit_gpu(node: &NodeState, req: &PodRequest) -> GpuPick {
    match req.gpu {
        GpuRequest::None => GpuPick::None,
        GpuRequest::Whole { .. } => GpuPick::Whole,
        GpuRequest::Shared { .. } => {
            let mut best: Option<(u32, usize)> = None;
            for g in 0..node.gpus.len() {
                if gpu_fits(node, g, req) {
                    let free = node.gpus[g].milli_free();
                    if best.is_none_or(|(b, _)| free < b) {
                        best = Some((free, g));
                    }
                }
            }
            best.map_or(GpuPick::None, |(_, g)| GpuPick::Shared(g))
        }
    }
}

/// How a policy chooses among equally scored nodes.
#[derive(Debug, Clone)]
pub struct TieBreak {
    rng: ChaCha8Rng,
    random: bool,
}

impl TieBreak {
    /// Uniformly random among ties (kube-scheduler `selectHost`), seeded.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            random: true,
        }
    }
    /// The first tied node in node order.
    pub fn first() -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(0),
            random: false,
        }
    }
    /// Whether ties are drawn at random (else the first tied node wins).
    pub fn is_random(&self) -> bool {
        self.random
    }
    /// Uniform integer in `0..n` (always available, also for [`TieBreak::first`]).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }
    /// Highest score over `feasible`, ties settled by this rule (see [`Policy::select`]).
    pub fn select_max(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        feasible: &[usize],
        mut score: impl FnMut(&Cluster, usize) -> (f64, GpuPick),
    ) -> Option<Placement> {
        let mut best = Best::default();
        for &n in feasible {
            let (s, pick) = score(cluster, n);
            best.offer(s, n, pick, Some(self));
        }
        best.into_placement(cluster, req)
    }
}

/// Running best of a scan in node order: a higher score replaces it; an equal one replaces it
/// only under a random [`TieBreak`], with kube-scheduler's reservoir sampling (the k-th tie
/// replaces the pick with probability 1/k).
#[derive(Debug, Default)]
struct Best {
    best: Option<(f64, usize, GpuPick)>,
    ties: usize,
}

impl Best {
    #[inline]
    fn offer(&mut self, s: f64, n: usize, pick: GpuPick, tie: Option<&mut TieBreak>) {
        match self.best {
            Some((b, _, _)) if s < b => {}
            Some((b, _, _)) if s == b => {
                self.ties += 1;
                if let Some(t) = tie
                    && t.random
                    && t.below(self.ties) == 0
                {
                    self.best = Some((s, n, pick));
                }
            }
            _ => {
                self.best = Some((s, n, pick));
                self.ties = 1;
            }
        }
    }
    fn into_placement(self, cluster: &Cluster, req: &PodRequest) -> Option<Placement> {
        self.best
            .map(|(s, n, pick)| to_placement(&cluster.nodes[n], n, req, pick, s))
    }
}

/// Reusable placement driver: feasibility, then the policy's choice.
#[derive(Debug, Default)]
pub struct Placer {
    feasible: Vec<usize>,
}

impl Placer {
    /// Where `policy` would put `req` (the cluster is not changed).
    ///
    /// # Errors
    /// [`Unschedulable`] with per-reason node counts when no node fits.
    pub fn place(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        policy: &mut dyn Policy,
    ) -> Result<Placement, Unschedulable> {
        policy.place(cluster, req, &mut self.feasible)
    }
}

impl Cluster {
    /// Where `policy` would put `req`; call [`Cluster::allocate`] with the result to commit it.
    /// Allocates a scratch buffer; loops should keep a [`Placer`].
    ///
    /// # Errors
    /// [`Unschedulable`] with per-reason node counts when no node fits.
    pub fn place(
        &self,
        req: &PodRequest,
        policy: &mut dyn Policy,
    ) -> Result<Placement, Unschedulable> {
        Placer::default().place(self, req, policy)
    }
}
