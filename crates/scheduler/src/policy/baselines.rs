//! Baseline policies: what people run today, and the FGD paper's baselines.

use super::{
    GpuPick, MAX_SPEC_CPU, MAX_SPEC_GPU, Policy, TieBreak, best_fit_gpu, gpu_fits, to_placement,
};
use crate::model::{Cluster, GpuRequest, MILLI_PER_GPU, NodeState, Placement, PodRequest};

/// Uniformly random feasible node; a fractional request takes a uniformly random fitting GPU.
///
/// # Source
/// FGD paper §6.1 "Random-fit"; reference simulator `random_score.go` (random node among the
/// feasible ones) with `allocateGpuIdBasedOnRandomFit` (random fitting GPU).
#[derive(Debug, Clone)]
pub struct RandomFit {
    tie: TieBreak,
}

impl RandomFit {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self {
            tie: TieBreak::new(seed),
        }
    }
    fn random_gpu(&mut self, node: &NodeState, req: &PodRequest) -> GpuPick {
        match req.gpu {
            GpuRequest::Shared { .. } => {
                let mut pick = GpuPick::None;
                let mut seen = 0;
                for g in 0..node.gpus.len() {
                    if gpu_fits(node, g, req) {
                        seen += 1;
                        if self.tie.below(seen) == 0 {
                            pick = GpuPick::Shared(g);
                        }
                    }
                }
                pick
            }
            _ => best_fit_gpu(node, req),
        }
    }
}

impl Policy for RandomFit {
    fn name(&self) -> &str {
        "random"
    }
    /// Every feasible node scores 0: the choice is the draw in [`Policy::select`].
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        (0.0, self.random_gpu(&cluster.nodes[node], req))
    }
    /// One uniform draw among the feasible nodes, as the reference's random plugin does; the
    /// default `select` (reservoir sampling over equal scores, and a GPU draw per node)
    /// would consume the RNG differently and change every later placement.
    fn select(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        feasible: &[usize],
    ) -> Option<Placement> {
        if feasible.is_empty() {
            return None;
        }
        let n = feasible[self.tie.below(feasible.len())];
        let pick = self.random_gpu(&cluster.nodes[n], req);
        Some(to_placement(&cluster.nodes[n], n, req, pick, 0.0))
    }
}

/// The next feasible node after the last one used, in node order, wrapping around.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &str {
        "round-robin"
    }
    /// Distance ahead of the cursor, negated: the node right at the cursor scores 0.
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        let len = cluster.nodes.len().max(1);
        let ahead = (node + len - self.next % len) % len;
        (-(ahead as f64), best_fit_gpu(&cluster.nodes[node], req))
    }
    /// The default `select` would pick the same node; this one also moves the cursor, without
    /// scoring every feasible node.
    fn select(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        feasible: &[usize],
    ) -> Option<Placement> {
        let n = feasible
            .iter()
            .copied()
            .find(|&n| n >= self.next)
            .or_else(|| feasible.first().copied())?;
        self.next = n + 1;
        let pick = best_fit_gpu(&cluster.nodes[n], req);
        Some(to_placement(&cluster.nodes[n], n, req, pick, 0.0))
    }
}

/// Dominant share of a node: the largest of allocated CPU, memory and GPU fractions.
fn dominant_share(node: &NodeState) -> f64 {
    let cpu = node.cpu_used as f64 / node.cpu_milli.max(1) as f64;
    let mem = node.mem_used as f64 / node.mem_mib.max(1) as f64;
    let gpu = if node.gpus.is_empty() {
        0.0
    } else {
        f64::from(node.gpu_milli_used()) / (node.gpus.len() as f64 * f64::from(MILLI_PER_GPU))
    };
    cpu.max(mem).max(gpu)
}

/// The node with the smallest dominant share (largest of allocated CPU, memory and GPU
/// fractions) before placement: score `1 - share`; random among ties.
#[derive(Debug, Clone)]
pub struct LeastLoaded {
    tie: TieBreak,
}

impl LeastLoaded {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self {
            tie: TieBreak::new(seed),
        }
    }
}

impl Policy for LeastLoaded {
    fn name(&self) -> &str {
        "least-loaded"
    }
    #[inline]
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        let n = &cluster.nodes[node];
        (1.0 - dominant_share(n), best_fit_gpu(n, req))
    }
    fn tie_break(&mut self) -> Option<&mut TieBreak> {
        Some(&mut self.tie)
    }
}

/// Per-resource (capacity, requested after placement) for CPU, memory and milli-GPU; GPU is
/// left out on a node without GPUs.
fn requested_after(node: &NodeState, req: &PodRequest) -> [(u64, u64); 3] {
    let gpu_cap = node.gpus.len() as u64 * u64::from(MILLI_PER_GPU);
    [
        (node.cpu_milli, node.cpu_used + req.cpu_milli),
        (node.mem_mib, node.mem_used + req.mem_mib),
        (
            gpu_cap,
            u64::from(node.gpu_milli_used()) + req.gpu.total_milli(),
        ),
    ]
}

/// kube-scheduler `NodeResourcesFit` with `LeastAllocated`: per resource
/// `(capacity - requested) * 100 / capacity` (integer), averaged with weight 1 over CPU,
/// memory and milli-GPU (resources with zero capacity are skipped); random among ties.
///
/// # Source
/// `pkg/scheduler/framework/plugins/noderesources/least_allocated.go` (Kubernetes); GPU added
/// as an extended resource with weight 1, as operators configure for `nvidia.com/gpu`.
#[derive(Debug, Clone)]
pub struct LeastAllocated {
    tie: TieBreak,
}

impl LeastAllocated {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self {
            tie: TieBreak::new(seed),
        }
    }
    /// The integer score (0..=100).
    pub fn node_score(node: &NodeState, req: &PodRequest) -> u64 {
        weighted(node, req, |cap, used| {
            (cap.saturating_sub(used)) * 100 / cap
        })
    }
}

fn weighted(node: &NodeState, req: &PodRequest, f: impl Fn(u64, u64) -> u64) -> u64 {
    let mut sum = 0;
    let mut weights = 0;
    for (cap, used) in requested_after(node, req) {
        if cap > 0 {
            sum += f(cap, used.min(cap));
            weights += 1;
        }
    }
    sum.checked_div(weights).unwrap_or(0)
}

impl Policy for LeastAllocated {
    fn name(&self) -> &str {
        "least-allocated"
    }
    #[inline]
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        let n = &cluster.nodes[node];
        (Self::node_score(n, req) as f64, best_fit_gpu(n, req))
    }
    fn tie_break(&mut self) -> Option<&mut TieBreak> {
        Some(&mut self.tie)
    }
}

/// kube-scheduler `NodeResourcesFit` with `MostAllocated`: per resource
/// `requested * 100 / capacity` (integer), averaged like [`LeastAllocated`]; random among ties.
///
/// # Source
/// `pkg/scheduler/framework/plugins/noderesources/most_allocated.go` (Kubernetes).
#[derive(Debug, Clone)]
pub struct MostAllocated {
    tie: TieBreak,
}

impl MostAllocated {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self {
            tie: TieBreak::new(seed),
        }
    }
    /// The integer score (0..=100).
    pub fn node_score(node: &NodeState, req: &PodRequest) -> u64 {
        weighted(node, req, |cap, used| used * 100 / cap)
    }
}

impl Policy for MostAllocated {
    fn name(&self) -> &str {
        "most-allocated"
    }
    #[inline]
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        let n = &cluster.nodes[node];
        (Self::node_score(n, req) as f64, best_fit_gpu(n, req))
    }
    fn tie_break(&mut self) -> Option<&mut TieBreak> {
        Some(&mut self.tie)
    }
}

/// DotProd (Tetris-style alignment, as the FGD paper uses it): with the node's free vector
/// `[cpu_free / 128000, gpu_free / 8000]` and the request `[cpu / 128000, gpu / 8000]`
/// (milli-CPU, total milli-GPU), score `floor(100 * (1 - dot / 2))`: the smallest normalised
/// dot product wins; first top-scored node on ties.
///
/// # Source
/// FGD paper §6.1 "Dot-product"; reference `dot_product_score.go` with the merged GPU
/// dimension and normalisation by the max spec.
#[derive(Debug, Clone, Default)]
pub struct DotProd;

impl DotProd {
    /// First top-scored node in node order wins.
    pub fn new() -> Self {
        Self
    }
    /// The integer score (0..=100).
    pub fn node_score(node: &NodeState, req: &PodRequest) -> i64 {
        let dot = (node.cpu_free() as f64 / MAX_SPEC_CPU) * (req.cpu_milli as f64 / MAX_SPEC_CPU)
            + (f64::from(node.gpu_milli_free()) / MAX_SPEC_GPU)
                * (req.gpu.total_milli() as f64 / MAX_SPEC_GPU);
        (100.0 * (1.0 - dot / 2.0)) as i64
    }
}

impl Policy for DotProd {
    fn name(&self) -> &str {
        "dot-prod"
    }
    #[inline]
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        let n = &cluster.nodes[node];
        (Self::node_score(n, req) as f64, best_fit_gpu(n, req))
    }
}

/// GpuClustering: prefer nodes already hosting pods of the same GPU request shape
/// `(GPUs, milli-GPU per GPU)`. Integer score in four bands, each raised by how full the
/// node's GPUs are (`25 * (8000 - free milli-GPU) / 8000`): 75+ when the node hosts only that
/// shape, 50+ when it hosts it among others, 25+ on a node with no GPU pods, 0+ otherwise.
/// CPU-only pods score 0 everywhere. First top-scored node on ties.
///
/// # Source
/// FGD paper §6.1 "GPU Clustering"; reference `gpu_clustering_score.go`.
#[derive(Debug, Clone, Default)]
pub struct GpuClustering;

impl GpuClustering {
    /// First top-scored node in node order wins.
    pub fn new() -> Self {
        Self
    }
    /// The integer score (0..=100).
    pub fn node_score(node: &NodeState, req: &PodRequest) -> i64 {
        if req.gpu == GpuRequest::None {
            return 0;
        }
        let shape = (req.gpu.gpu_count(), req.gpu.milli_per_gpu());
        let used_part = 25 * (MAX_SPEC_GPU as i64 - i64::from(node.gpu_milli_free())).max(0)
            / MAX_SPEC_GPU as i64;
        let band = if node.shape_count(shape) > 0 {
            if node.gpu_shapes.len() == 1 { 75 } else { 50 }
        } else if node.gpu_shapes.is_empty() {
            25
        } else {
            0
        };
        used_part + band
    }
}

impl Policy for GpuClustering {
    fn name(&self) -> &str {
        "gpu-clustering"
    }
    #[inline]
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        let n = &cluster.nodes[node];
        (Self::node_score(n, req) as f64, best_fit_gpu(n, req))
    }
}

/// GpuPacking: prefer (1) already shared GPUs: `100 - sum over used GPUs of
/// (free milli * 100 / 1000) / 10`, at least 50; then (2) idle GPUs on a node already in use:
/// `50 - idle GPUs taken`, at least 33; then (3) a node whose GPUs are all idle:
/// `max(33 - idle GPUs, idle GPUs)`. CPU-only pods score 0. First top-scored node on ties.
///
/// # Source
/// FGD paper §6.1 "GPU Packing"; reference `gpu_packing_score.go`.
#[derive(Debug, Clone, Default)]
pub struct GpuPacking;

impl GpuPacking {
    /// First top-scored node in node order wins.
    pub fn new() -> Self {
        Self
    }
    /// The integer score (0..=100).
    pub fn node_score(node: &NodeState, req: &PodRequest) -> i64 {
        if req.gpu == GpuRequest::None {
            return 0;
        }
        let idle = node.idle_gpus() as i64;
        if idle == node.gpus.len() as i64 {
            return (33 - idle).max(idle);
        }
        // GPUs in ascending order of free milli-GPU (stable: index order on ties).
        let mut order: Vec<usize> = (0..node.gpus.len()).collect();
        order.sort_by_key(|&g| node.gpus[g].milli_free());
        let per = req.gpu.milli_per_gpu();
        let mut want = req.gpu.gpu_count();
        let mut idle_used = 0i64;
        let mut free_ratio = 0i64;
        for g in order {
            if want == 0 {
                break;
            }
            let free = node.gpus[g].milli_free();
            if per <= free {
                want -= 1;
                if free == MILLI_PER_GPU {
                    idle_used += 1;
                }
                free_ratio += i64::from(free) * 100 / i64::from(MILLI_PER_GPU);
            }
        }
        if idle_used > 0 {
            (50 - idle_used).max(33)
        } else {
            (100 - free_ratio / 10).max(50)
        }
    }
}

impl Policy for GpuPacking {
    fn name(&self) -> &str {
        "gpu-packing"
    }
    #[inline]
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        let n = &cluster.nodes[node];
        (Self::node_score(n, req) as f64, best_fit_gpu(n, req))
    }
}

/// BestFit: leftover `L = 0.5 * (cpu_free - cpu) / 128000 + 0.5 * (gpu_free - gpu) / 8000`
/// (milli-CPU; total milli-GPU), raw score `floor(100 * (1 - L))`, then min-max normalised to
/// 0..=100 over the feasible nodes with integer arithmetic (kube-scheduler `NormalizeScore`);
/// first top-scored node on ties.
///
/// # Source
/// FGD paper §6.1 "Best-fit" (weights 0.5/0.5); reference `best_fit_score.go` and
/// `plugin_utils.go::NormalizeScore`.
#[derive(Debug, Clone)]
pub struct BestFit {
    raw: Vec<i64>,
}

impl BestFit {
    /// First top-scored node in node order wins.
    pub fn new() -> Self {
        Self { raw: Vec::new() }
    }
    /// The raw integer score before normalisation.
    pub fn raw_score(node: &NodeState, req: &PodRequest) -> i64 {
        Self::raw_from(node.cpu_free(), node.gpu_milli_free(), req)
    }
    fn raw_from(cpu_free: u64, gpu_milli_free: u32, req: &PodRequest) -> i64 {
        let left = 0.5 * (cpu_free as f64 - req.cpu_milli as f64) / MAX_SPEC_CPU
            + 0.5 * (f64::from(gpu_milli_free) - req.gpu.total_milli() as f64) / MAX_SPEC_GPU;
        ((1.0 - left) * 100.0) as i64
    }
}

impl Policy for BestFit {
    fn name(&self) -> &str {
        "best-fit"
    }
    fn score(&mut self, cluster: &Cluster, node: usize, req: &PodRequest) -> (f64, GpuPick) {
        let n = &cluster.nodes[node];
        (Self::raw_score(n, req) as f64, best_fit_gpu(n, req))
    }
    fn select(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        feasible: &[usize],
    ) -> Option<Placement> {
        self.raw.clear();
        let summary = cluster.summary();
        self.raw.extend(feasible.iter().map(|&n| match summary {
            // Same arithmetic on the same integers, read from the flat summary.
            Some(s) if s[n].inline => {
                let s = &s[n];
                let gpu_free: u32 = s.gpu_milli_free[..usize::from(s.gpus)]
                    .iter()
                    .map(|&m| u32::from(m))
                    .sum();
                Self::raw_from(u64::from(s.cpu_free), gpu_free, req)
            }
            _ => Self::raw_score(&cluster.nodes[n], req),
        }));
        let hi = self.raw.iter().copied().max()?;
        let lo = self.raw.iter().copied().min()?;
        let range = hi - lo;
        // The normalised score `(raw - lo) * 100 / range` is 100 exactly at `raw == hi` and
        // below 100 elsewhere (0 everywhere when `range == 0`), so the first top-scored node
        // in node order is the first node with the highest raw score; only its GPU pick is
        // needed.
        let k = self.raw.iter().position(|&r| r == hi)?;
        let n = feasible[k];
        let s = if range == 0 { 0 } else { 100 };
        let node = &cluster.nodes[n];
        Some(to_placement(
            node,
            n,
            req,
            best_fit_gpu(node, req),
            s as f64,
        ))
    }
}

impl Default for BestFit {
    fn default() -> Self {
        Self::new()
    }
}
