//! The cluster model: nodes with CPU (milli-CPU), memory (MiB) and GPUs, each GPU with a type,
//! memory (MiB) and [`MILLI_PER_GPU`] milli-GPU of compute; pod requests; exact allocation
//! and release.
//!
//! # Guarantees
//! - [`Cluster::allocate`] never lets any used quantity exceed its capacity: it checks the
//!   whole placement first and changes nothing when any part does not fit.
//! - [`Cluster::release`] of a placement previously allocated restores the node to exactly
//!   the state it had before (used CPU, memory, per-GPU milli and MiB, pod count).
//! - Every change bumps [`NodeState::generation`], so policies may cache per-node values
//!   keyed by `(node index, generation)`.
//!
//! # Assumptions
//! - A whole-GPU request takes GPUs that are entirely free (no milli-GPU and no MiB used),
//!   as the Kubernetes device plugins for whole GPUs do.
//! - A fractional request (milli-GPU and/or MiB) takes part of exactly one GPU.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Compute capacity of one GPU in milli-GPU (the Alibaba trace's `gpu_milli` unit).
///
/// # Source
/// Alibaba clusterdata `cluster-trace-gpu-v2023` README: "gpu_milli: 1000 = one GPU".
pub const MILLI_PER_GPU: u32 = 1000;

/// Errors of the cluster model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// A placement names a node index outside the cluster.
    #[error("failed to find node index {node} (cluster has {nodes} nodes)")]
    NoSuchNode {
        /// Node index asked for.
        node: usize,
        /// Number of nodes.
        nodes: usize,
    },
    /// A placement names a GPU index outside the node.
    #[error("failed to find GPU {gpu} on node {node}")]
    NoSuchGpu {
        /// Node name.
        node: String,
        /// GPU index asked for.
        gpu: usize,
    },
    /// Allocation would exceed a capacity.
    #[error("failed to allocate pod {pod} on node {node}: {what}")]
    Overcommit {
        /// Pod name.
        pod: String,
        /// Node name.
        node: String,
        /// Which quantity would overflow.
        what: String,
    },
    /// Release of something that was not allocated.
    #[error("failed to release pod {pod} from node {node}: {what}")]
    ReleaseUnderflow {
        /// Pod name.
        pod: String,
        /// Node name.
        node: String,
        /// Which quantity would go below zero.
        what: String,
    },
    /// Placement does not match the request's shape.
    #[error("failed to apply placement of pod {pod}: {what}")]
    ShapeMismatch {
        /// Pod name.
        pod: String,
        /// What does not match.
        what: String,
    },
    /// A request or node spec violates a rule.
    #[error("invalid {field}: {rule}")]
    Invalid {
        /// Field name.
        field: String,
        /// The rule that was violated.
        rule: String,
    },
}

/// Effect of a taint, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    /// Pods that do not tolerate the taint are not scheduled on the node.
    NoSchedule,
    /// Soft version of `NoSchedule`; never blocks placement here.
    PreferNoSchedule,
    /// Like `NoSchedule` (eviction of running pods is the controller's business).
    NoExecute,
}

/// A node taint (`key=value:effect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

/// A pod toleration, with Kubernetes semantics: `Exists` matches any value; an empty key with
/// `Exists` matches every taint; no effect matches every effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    /// Key to match; `None` with `exists` matches all keys.
    pub key: Option<String>,
    /// `true` for operator `Exists`, `false` for `Equal`.
    pub exists: bool,
    /// Value for `Equal`.
    pub value: String,
    /// Effect to match; `None` matches all.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint`.
    ///
    /// # Source
    /// Kubernetes `v1.Toleration.ToleratesTaint` (k8s.io/api/core/v1/toleration.go).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(effect) = self.effect
            && effect != taint.effect
        {
            return false;
        }
        match &self.key {
            None => self.exists,
            Some(key) if key != &taint.key => false,
            Some(_) => self.exists || self.value == taint.value,
        }
    }
}

/// One GPU of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// GPU type (model), e.g. `V100M32`.
    pub model: String,
    /// GPU memory capacity in MiB.
    pub mem_mib: u64,
    /// Used compute in milli-GPU (0..=1000).
    pub milli_used: u32,
    /// Used GPU memory in MiB.
    pub mem_used_mib: u64,
}

impl Gpu {
    /// A free GPU of `model` with `mem_mib` of memory.
    pub fn new(model: impl Into<String>, mem_mib: u64) -> Self {
        Self {
            model: model.into(),
            mem_mib,
            milli_used: 0,
            mem_used_mib: 0,
        }
    }
    /// Free compute in milli-GPU.
    pub fn milli_free(&self) -> u32 {
        MILLI_PER_GPU - self.milli_used
    }
    /// Free memory in MiB.
    pub fn mem_free_mib(&self) -> u64 {
        self.mem_mib - self.mem_used_mib
    }
    /// Whether nothing is allocated on this GPU.
    pub fn is_idle(&self) -> bool {
        self.milli_used == 0 && self.mem_used_mib == 0
    }
}

/// A node and what is allocated on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// CPU capacity in milli-CPU.
    pub cpu_milli: u64,
    /// Memory capacity in MiB.
    pub mem_mib: u64,
    /// Allocated CPU in milli-CPU.
    pub cpu_used: u64,
    /// Allocated memory in MiB.
    pub mem_used: u64,
    /// GPUs, index = device index.
    pub gpus: Vec<Gpu>,
    /// Node labels (for node selectors).
    pub labels: BTreeMap<String, String>,
    /// Node taints.
    pub taints: Vec<Taint>,
    /// Number of pods placed on the node.
    pub pods: u32,
    /// GPU pods on the node per GPU request shape `(GPUs touched, milli-GPU per GPU)`, in
    /// order of first arrival; entries drop out when their count returns to 0.
    pub gpu_shapes: Vec<((u32, u32), u32)>,
    /// Bumped on every allocation or release (cache key for policies).
    pub generation: u64,
}

impl NodeState {
    /// A node with `gpus` GPUs of one `model`, each with `gpu_mem_mib` MiB.
    pub fn new(
        name: impl Into<String>,
        cpu_milli: u64,
        mem_mib: u64,
        gpus: usize,
        model: &str,
        gpu_mem_mib: u64,
    ) -> Self {
        Self {
            name: name.into(),
            cpu_milli,
            mem_mib,
            cpu_used: 0,
            mem_used: 0,
            gpus: (0..gpus).map(|_| Gpu::new(model, gpu_mem_mib)).collect(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            pods: 0,
            gpu_shapes: Vec::new(),
            generation: 0,
        }
    }
    /// Number of GPU pods on the node with request shape `(GPUs touched, milli-GPU per GPU)`.
    pub fn shape_count(&self, shape: (u32, u32)) -> u32 {
        self.gpu_shapes
            .iter()
            .find(|(s, _)| *s == shape)
            .map_or(0, |(_, n)| *n)
    }
    /// Free CPU in milli-CPU.
    pub fn cpu_free(&self) -> u64 {
        self.cpu_milli - self.cpu_used
    }
    /// Free memory in MiB.
    pub fn mem_free(&self) -> u64 {
        self.mem_mib - self.mem_used
    }
    /// Total free GPU compute in milli-GPU.
    pub fn gpu_milli_free(&self) -> u32 {
        self.gpus.iter().map(Gpu::milli_free).sum()
    }
    /// Total allocated GPU compute in milli-GPU.
    pub fn gpu_milli_used(&self) -> u32 {
        self.gpus.iter().map(|g| g.milli_used).sum()
    }
    /// Number of GPUs with nothing allocated.
    pub fn idle_gpus(&self) -> usize {
        self.gpus.iter().filter(|g| g.is_idle()).count()
    }
    /// GPU model of the node: the first GPU's model (`None` for a CPU-only node).
    pub fn gpu_model(&self) -> Option<&str> {
        self.gpus.first().map(|g| g.model.as_str())
    }
    /// Whether the node, with nothing allocated, has at least `num_gpu` GPUs and `cpu_milli`
    /// milli-CPU (GPU type, memory, taints and labels not checked): the "host" test of the
    /// fragmentation policies' scarcity weights and type prices.
    pub fn could_host(&self, num_gpu: u32, cpu_milli: u64) -> bool {
        self.gpus.len() >= num_gpu as usize && self.cpu_milli >= cpu_milli
    }
}

/// The GPU models of `nodes` in order of first appearance, and each node's index into that
/// list (`None` for a node without GPUs).
pub fn gpu_model_ids(nodes: &[NodeState]) -> (Vec<String>, Vec<Option<usize>>) {
    let mut models: Vec<String> = Vec::new();
    let ids = nodes
        .iter()
        .map(|n| {
            let m = n.gpu_model()?;
            Some(models.iter().position(|x| x == m).unwrap_or_else(|| {
                models.push(m.to_string());
                models.len() - 1
            }))
        })
        .collect();
    (models, ids)
}

/// What a pod asks of GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GpuRequest {
    /// No GPU.
    None,
    /// `count` whole GPUs (each entirely free).
    Whole {
        /// Number of GPUs (>= 1).
        count: u32,
    },
    /// A fraction of one GPU: `milli` milli-GPU of compute (1..1000) and/or `mem_mib` MiB.
    Shared {
        /// Compute in milli-GPU (0..1000).
        milli: u32,
        /// GPU memory in MiB.
        mem_mib: u64,
    },
}

impl GpuRequest {
    /// Number of GPUs touched (0, 1 or `count`).
    pub fn gpu_count(&self) -> u32 {
        match *self {
            GpuRequest::None => 0,
            GpuRequest::Whole { count } => count,
            GpuRequest::Shared { .. } => 1,
        }
    }
    /// Compute asked of each touched GPU, in milli-GPU.
    pub fn milli_per_gpu(&self) -> u32 {
        match *self {
            GpuRequest::None => 0,
            GpuRequest::Whole { .. } => MILLI_PER_GPU,
            GpuRequest::Shared { milli, .. } => milli,
        }
    }
    /// Total compute asked, in milli-GPU.
    pub fn total_milli(&self) -> u64 {
        u64::from(self.gpu_count()) * u64::from(self.milli_per_gpu())
    }
    /// Build from the Alibaba trace's `num_gpu` and `gpu_milli` columns.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] when `gpu_milli` is over 1000, or below 1000 with `num_gpu > 1`.
    pub fn from_trace(num_gpu: u32, gpu_milli: u32) -> Result<Self, ModelError> {
        match (num_gpu, gpu_milli) {
            (0, _) => Ok(GpuRequest::None),
            (_, m) if m > MILLI_PER_GPU => Err(ModelError::Invalid {
                field: "gpu_milli".into(),
                rule: format!("must be at most {MILLI_PER_GPU}, got {m}"),
            }),
            (1, m) if m < MILLI_PER_GPU => Ok(GpuRequest::Shared {
                milli: m,
                mem_mib: 0,
            }),
            (n, MILLI_PER_GPU) => Ok(GpuRequest::Whole { count: n }),
            (n, m) => Err(ModelError::Invalid {
                field: "gpu_milli".into(),
                rule: format!("must be 1000 when num_gpu > 1 (num_gpu {n}, gpu_milli {m})"),
            }),
        }
    }
}

/// A pod's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRequest {
    /// Pod name.
    pub name: String,
    /// CPU in milli-CPU.
    pub cpu_milli: u64,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// GPU request.
    pub gpu: GpuRequest,
    /// Allowed GPU types (empty: any type).
    pub gpu_types: Vec<String>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Node selector: every pair must be a label of the node.
    pub node_selector: BTreeMap<String, String>,
}

impl PodRequest {
    /// A request with no GPU-type constraint, toleration or selector.
    pub fn new(name: impl Into<String>, cpu_milli: u64, mem_mib: u64, gpu: GpuRequest) -> Self {
        Self {
            name: name.into(),
            cpu_milli,
            mem_mib,
            gpu,
            gpu_types: Vec::new(),
            tolerations: Vec::new(),
            node_selector: BTreeMap::new(),
        }
    }
    /// Check the request's own rules.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] naming the field: a whole-GPU count of 0, a shared request of
    /// 0 milli and 0 MiB, or a shared request of 1000 milli or more.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self.gpu {
            GpuRequest::Whole { count: 0 } => Err(ModelError::Invalid {
                field: "gpu.count".into(),
                rule: "a whole-GPU request needs at least 1 GPU".into(),
            }),
            GpuRequest::Shared {
                milli: 0,
                mem_mib: 0,
            } => Err(ModelError::Invalid {
                field: "gpu.milli".into(),
                rule: "a shared request needs milli-GPU > 0 or MiB > 0".into(),
            }),
            GpuRequest::Shared { milli, .. } if milli >= MILLI_PER_GPU => {
                Err(ModelError::Invalid {
                    field: "gpu.milli".into(),
                    rule: format!(
                        "a shared request must ask below {MILLI_PER_GPU} milli-GPU, got {milli}; ask for whole GPUs instead"
                    ),
                })
            }
            _ => Ok(()),
        }
    }
    /// Whether the node's GPU type is allowed (always for a pod with no GPU or no constraint).
    pub fn allows_gpu_model(&self, model: Option<&str>) -> bool {
        if self.gpu == GpuRequest::None || self.gpu_types.is_empty() {
            return true;
        }
        match model {
            Some(m) => self.gpu_types.iter().any(|t| t == m),
            None => false,
        }
    }
}

/// The part of one GPU a placement takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuShare {
    /// GPU index on the node.
    pub index: usize,
    /// Compute in milli-GPU.
    pub milli: u32,
    /// Memory in MiB.
    pub mem_mib: u64,
}

/// Where a pod goes: a node, the GPU shares on it, and the policy's score (higher is better;
/// its scale is the policy's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Node index in the [`Cluster`].
    pub node: usize,
    /// GPU shares taken (empty for a CPU-only pod).
    pub gpus: Vec<GpuShare>,
    /// Policy score.
    pub score: f64,
}

/// Most GPUs per node that [`NodeSummary`] keeps inline; nodes with more are checked on
/// their [`NodeState`] (still correct, just not the fast path).
pub const SUMMARY_GPUS: usize = 8;

/// A flat, copyable digest of one node's free resources, kept by [`Cluster::new`],
/// [`Cluster::allocate`] and [`Cluster::release`] so that the feasibility filter scans one
/// contiguous array (one 64-byte cache line per node) instead of chasing each node's GPU,
/// label and taint allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, align(64))]
pub struct NodeSummary {
    /// Free CPU in milli-CPU (meaningful only when `inline`).
    pub cpu_free: u32,
    /// Free memory in MiB (meaningful only when `inline`).
    pub mem_free: u32,
    /// Free GPU memory in MiB per GPU (first `gpus` entries).
    pub gpu_mem_free: [u32; SUMMARY_GPUS],
    /// Free milli-GPU per GPU (first `gpus` entries).
    pub gpu_milli_free: [u16; SUMMARY_GPUS],
    /// GPUs with nothing allocated.
    pub idle_gpus: u8,
    /// Number of GPUs.
    pub gpus: u8,
    /// Whether this digest is complete: at most [`SUMMARY_GPUS`] GPUs and every quantity
    /// fits its field. When `false`, check the [`NodeState`] itself.
    pub inline: bool,
    /// Whether the node has a `NoSchedule`/`NoExecute` taint (then taints must be checked
    /// on the [`NodeState`]).
    pub hard_taints: bool,
}

impl NodeSummary {
    /// Whether the summary decides [`crate::feasibility::check_node`] alone for requests
    /// without a node selector: complete (`inline`) and no hard taints.
    pub fn regular(&self) -> bool {
        self.inline && !self.hard_taints
    }
    /// Digest of `node`.
    pub fn of(node: &NodeState) -> Self {
        let mut s = Self {
            hard_taints: node
                .taints
                .iter()
                .any(|t| t.effect != TaintEffect::PreferNoSchedule),
            ..Self::default()
        };
        let (Ok(cpu), Ok(mem)) = (
            u32::try_from(node.cpu_free()),
            u32::try_from(node.mem_free()),
        ) else {
            return s;
        };
        if node.gpus.len() > SUMMARY_GPUS {
            return s;
        }
        s.cpu_free = cpu;
        s.mem_free = mem;
        for (i, g) in node.gpus.iter().enumerate() {
            let (Ok(milli), Ok(mem)) = (
                u16::try_from(g.milli_free()),
                u32::try_from(g.mem_free_mib()),
            ) else {
                return s;
            };
            s.gpu_milli_free[i] = milli;
            s.gpu_mem_free[i] = mem;
            if g.is_idle() {
                s.idle_gpus += 1;
            }
        }
        s.gpus = node.gpus.len() as u8;
        s.inline = true;
        s
    }
}

/// Identity of one [`Cluster`] value, for policies that keep indexes across decisions: every
/// new, cloned, deserialised or [`Cluster::resync`]ed cluster gets a fresh id, so an index
/// built for one never serves another.
#[derive(Debug, PartialEq, Eq)]
struct ClusterId(u64);

impl ClusterId {
    fn fresh() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Default for ClusterId {
    fn default() -> Self {
        Self::fresh()
    }
}

impl Clone for ClusterId {
    /// A clone is a different cluster from then on: it gets its own id.
    fn clone(&self) -> Self {
        Self::fresh()
    }
}

/// Longest change journal kept, in entries per node (plus a constant); older entries are
/// dropped and readers further behind rebuild (see [`Cluster::changes_since`]).
const JOURNAL_PER_NODE: usize = 2;

/// A set of nodes.
///
/// Besides `nodes`, a cluster keeps one [`NodeSummary`] per node for the feasibility filter;
/// [`Cluster::allocate`] and [`Cluster::release`] keep it current. Code that changes
/// `nodes` directly (other than `generation`) must call [`Cluster::resync`] afterwards;
/// while the summary's length differs from `nodes` (e.g. after deserialising or pushing a
/// node), feasibility falls back to checking every [`NodeState`].
///
/// It also keeps a journal of the nodes changed by `allocate` and `release`, so that a
/// policy's per-node index can catch up on the nodes that changed since its last decision
/// instead of rescanning the cluster ([`Cluster::changes_since`]).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Cluster {
    /// Nodes, index = node id used by [`Placement::node`].
    pub nodes: Vec<NodeState>,
    #[serde(skip)]
    summary: Vec<NodeSummary>,
    #[serde(skip)]
    id: ClusterId,
    /// Node indexes changed, in order; `journal[0]` is change number `journal_start`.
    #[serde(skip)]
    journal: Vec<u32>,
    #[serde(skip)]
    journal_start: u64,
    /// Summaries that are not [`NodeSummary::regular`].
    #[serde(skip)]
    irregular: usize,
}

impl PartialEq for Cluster {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
    }
}

impl Eq for Cluster {}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster of `nodes`.
    pub fn new(nodes: Vec<NodeState>) -> Self {
        let summary: Vec<NodeSummary> = nodes.iter().map(NodeSummary::of).collect();
        let irregular = summary.iter().filter(|s| !s.regular()).count();
        Self {
            nodes,
            summary,
            irregular,
            ..Self::default()
        }
    }
    /// Rebuild the per-node summaries after changing `nodes` directly. The cluster counts as a
    /// new one for [`Cluster::identity`] (indexes built on it start over).
    pub fn resync(&mut self) {
        self.summary = self.nodes.iter().map(NodeSummary::of).collect();
        self.irregular = self.summary.iter().filter(|s| !s.regular()).count();
        self.id = ClusterId::fresh();
        self.journal_start += self.journal.len() as u64;
        self.journal.clear();
    }
    /// An id unique to this cluster value: fresh for every new, cloned or deserialised cluster
    /// and after [`Cluster::resync`]. With [`Cluster::changes_since`] it lets a policy keep
    /// per-node values across decisions.
    pub fn identity(&self) -> u64 {
        self.id.0
    }
    /// Number of node changes made so far by [`Cluster::allocate`] and [`Cluster::release`]
    /// (a position in the change journal).
    pub fn change_count(&self) -> u64 {
        self.journal_start + self.journal.len() as u64
    }
    /// Indexes of the nodes changed since change number `pos` (from [`Cluster::change_count`]),
    /// in order, possibly repeated. `None` when the journal no longer reaches back that far
    /// (it keeps about two entries per node): the reader must then rebuild from scratch.
    pub fn changes_since(&self, pos: u64) -> Option<&[u32]> {
        let skip = usize::try_from(pos.checked_sub(self.journal_start)?).ok()?;
        self.journal.get(skip..)
    }
    /// The per-node summaries, when they cover every node (see [`Cluster::resync`]).
    pub fn summary(&self) -> Option<&[NodeSummary]> {
        (self.summary.len() == self.nodes.len()).then_some(self.summary.as_slice())
    }
    /// Whether every node's summary is current and [`NodeSummary::regular`]: then the
    /// summaries alone decide feasibility for any request without a node selector.
    pub fn all_regular(&self) -> bool {
        self.irregular == 0 && self.summary.len() == self.nodes.len()
    }
    /// Whether the summaries match the nodes exactly (for debug assertions and tests).
    pub fn summary_is_current(&self) -> bool {
        self.summary.len() == self.nodes.len()
            && self
                .nodes
                .iter()
                .zip(&self.summary)
                .all(|(n, s)| NodeSummary::of(n) == *s)
    }
    fn refresh(&mut self, node: usize) {
        if self.summary.len() == self.nodes.len() {
            let new = NodeSummary::of(&self.nodes[node]);
            let old = std::mem::replace(&mut self.summary[node], new);
            self.irregular =
                self.irregular + usize::from(!new.regular()) - usize::from(!old.regular());
        }
        if self.journal.len() >= JOURNAL_PER_NODE * self.nodes.len() + 1024 {
            self.journal_start += self.journal.len() as u64;
            self.journal.clear();
        }
        // Node indexes fit u32: a cluster of 4 billion nodes is out of scope.
        self.journal.push(node as u32);
    }
    /// Total GPU compute in milli-GPU.
    pub fn gpu_milli_capacity(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.gpus.len() as u64 * u64::from(MILLI_PER_GPU))
            .sum()
    }
    /// Allocated GPU compute in milli-GPU.
    pub fn gpu_milli_used(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| u64::from(n.gpu_milli_used()))
            .sum()
    }
    /// Number of GPUs.
    pub fn gpu_count(&self) -> usize {
        self.nodes.iter().map(|n| n.gpus.len()).sum()
    }

    /// Check that `placement` has the shape of `req` and fits on its node.
    ///
    /// # Errors
    /// [`ModelError::NoSuchNode`], [`ModelError::NoSuchGpu`], [`ModelError::ShapeMismatch`] or
    /// [`ModelError::Overcommit`] naming what does not fit.
    pub fn check(&self, req: &PodRequest, placement: &Placement) -> Result<(), ModelError> {
        let node = self
            .nodes
            .get(placement.node)
            .ok_or(ModelError::NoSuchNode {
                node: placement.node,
                nodes: self.nodes.len(),
            })?;
        let over = |what: String| ModelError::Overcommit {
            pod: req.name.clone(),
            node: node.name.clone(),
            what,
        };
        let shape = |what: String| ModelError::ShapeMismatch {
            pod: req.name.clone(),
            what,
        };
        if req.cpu_milli > node.cpu_free() {
            return Err(over(format!(
                "{} milli-CPU asked, {} free",
                req.cpu_milli,
                node.cpu_free()
            )));
        }
        if req.mem_mib > node.mem_free() {
            return Err(over(format!(
                "{} MiB memory asked, {} free",
                req.mem_mib,
                node.mem_free()
            )));
        }
        if placement.gpus.len() != req.gpu.gpu_count() as usize {
            return Err(shape(format!(
                "{} GPU shares given, request touches {} GPUs",
                placement.gpus.len(),
                req.gpu.gpu_count()
            )));
        }
        for (i, share) in placement.gpus.iter().enumerate() {
            if placement.gpus[..i].iter().any(|s| s.index == share.index) {
                return Err(shape(format!("GPU {} given twice", share.index)));
            }
            let gpu = node.gpus.get(share.index).ok_or(ModelError::NoSuchGpu {
                node: node.name.clone(),
                gpu: share.index,
            })?;
            let (milli, mem) = match req.gpu {
                GpuRequest::None => (0, 0),
                GpuRequest::Whole { .. } => {
                    if !gpu.is_idle() {
                        return Err(over(format!("GPU {} is not idle", share.index)));
                    }
                    (MILLI_PER_GPU, gpu.mem_mib)
                }
                GpuRequest::Shared { milli, mem_mib } => (milli, mem_mib),
            };
            if share.milli != milli || share.mem_mib != mem {
                return Err(shape(format!(
                    "GPU {} share is {} milli / {} MiB, request implies {} milli / {} MiB",
                    share.index, share.milli, share.mem_mib, milli, mem
                )));
            }
            if share.milli > gpu.milli_free() || share.mem_mib > gpu.mem_free_mib() {
                return Err(over(format!(
                    "GPU {} has {} milli / {} MiB free, {} milli / {} MiB asked",
                    share.index,
                    gpu.milli_free(),
                    gpu.mem_free_mib(),
                    share.milli,
                    share.mem_mib
                )));
            }
        }
        Ok(())
    }

    /// Apply `placement` for `req`: all or nothing.
    ///
    /// # Errors
    /// As [`Cluster::check`]; nothing changes on error.
    pub fn allocate(&mut self, req: &PodRequest, placement: &Placement) -> Result<(), ModelError> {
        self.check(req, placement)?;
        let node = &mut self.nodes[placement.node]; // index checked above
        node.cpu_used += req.cpu_milli;
        node.mem_used += req.mem_mib;
        for share in &placement.gpus {
            let gpu = &mut node.gpus[share.index];
            gpu.milli_used += share.milli;
            gpu.mem_used_mib += share.mem_mib;
        }
        if req.gpu != GpuRequest::None {
            let shape = (req.gpu.gpu_count(), req.gpu.milli_per_gpu());
            match node.gpu_shapes.iter_mut().find(|(s, _)| *s == shape) {
                Some((_, n)) => *n += 1,
                None => node.gpu_shapes.push((shape, 1)),
            }
        }
        node.pods += 1;
        node.generation += 1;
        self.refresh(placement.node);
        Ok(())
    }

    /// Undo an earlier [`Cluster::allocate`] of the same `req` and `placement`.
    ///
    /// # Errors
    /// [`ModelError::ReleaseUnderflow`] when the node does not hold that much; nothing changes
    /// on error.
    pub fn release(&mut self, req: &PodRequest, placement: &Placement) -> Result<(), ModelError> {
        let nodes = self.nodes.len();
        let node = self
            .nodes
            .get_mut(placement.node)
            .ok_or(ModelError::NoSuchNode {
                node: placement.node,
                nodes,
            })?;
        let under = |what: &str| ModelError::ReleaseUnderflow {
            pod: req.name.clone(),
            node: node.name.clone(),
            what: what.to_string(),
        };
        if node.cpu_used < req.cpu_milli {
            return Err(under("CPU"));
        }
        if node.mem_used < req.mem_mib {
            return Err(under("memory"));
        }
        if node.pods == 0 {
            return Err(under("pod count"));
        }
        for share in &placement.gpus {
            let gpu = node.gpus.get(share.index).ok_or(ModelError::NoSuchGpu {
                node: node.name.clone(),
                gpu: share.index,
            })?;
            if gpu.milli_used < share.milli || gpu.mem_used_mib < share.mem_mib {
                return Err(under(&format!("GPU {}", share.index)));
            }
        }
        node.cpu_used -= req.cpu_milli;
        node.mem_used -= req.mem_mib;
        for share in &placement.gpus {
            let gpu = &mut node.gpus[share.index];
            gpu.milli_used -= share.milli;
            gpu.mem_used_mib -= share.mem_mib;
        }
        if req.gpu != GpuRequest::None {
            let shape = (req.gpu.gpu_count(), req.gpu.milli_per_gpu());
            if let Some(pos) = node.gpu_shapes.iter().position(|(s, _)| *s == shape) {
                node.gpu_shapes[pos].1 -= 1;
                if node.gpu_shapes[pos].1 == 0 {
                    node.gpu_shapes.remove(pos);
                }
            }
        }
        node.pods -= 1;
        node.generation += 1;
        self.refresh(placement.node);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeState {
        NodeState::new("n0", 8000, 16384, 2, "T4", 16384)
    }

    #[test]
    fn allocate_and_release_restore_exactly() {
        let mut c = Cluster::new(vec![node()]);
        let before = c.clone();
        let req = PodRequest::new(
            "p",
            2000,
            1024,
            GpuRequest::Shared {
                milli: 300,
                mem_mib: 4096,
            },
        );
        let pl = Placement {
            node: 0,
            gpus: vec![GpuShare {
                index: 1,
                milli: 300,
                mem_mib: 4096,
            }],
            score: 0.0,
        };
        c.allocate(&req, &pl).unwrap();
        assert_eq!(c.nodes[0].gpus[1].milli_free(), 700);
        assert_eq!(c.nodes[0].gpus[1].mem_free_mib(), 12288);
        assert_eq!(c.nodes[0].cpu_free(), 6000);
        c.release(&req, &pl).unwrap();
        let mut after = c.clone();
        after.nodes[0].generation = 0;
        assert_eq!(after, before);
    }

    #[test]
    fn whole_gpu_needs_idle_gpu() {
        let mut c = Cluster::new(vec![node()]);
        let share = PodRequest::new(
            "s",
            0,
            0,
            GpuRequest::Shared {
                milli: 1,
                mem_mib: 0,
            },
        );
        c.allocate(
            &share,
            &Placement {
                node: 0,
                gpus: vec![GpuShare {
                    index: 0,
                    milli: 1,
                    mem_mib: 0,
                }],
                score: 0.0,
            },
        )
        .unwrap();
        let whole = PodRequest::new("w", 0, 0, GpuRequest::Whole { count: 1 });
        let err = c
            .allocate(
                &whole,
                &Placement {
                    node: 0,
                    gpus: vec![GpuShare {
                        index: 0,
                        milli: 1000,
                        mem_mib: 16384,
                    }],
                    score: 0.0,
                },
            )
            .unwrap_err();
        assert!(matches!(err, ModelError::Overcommit { .. }), "{err}");
    }

    #[test]
    fn trace_gpu_request_rules() {
        assert_eq!(GpuRequest::from_trace(0, 0).unwrap(), GpuRequest::None);
        assert_eq!(
            GpuRequest::from_trace(1, 470).unwrap(),
            GpuRequest::Shared {
                milli: 470,
                mem_mib: 0
            }
        );
        assert_eq!(
            GpuRequest::from_trace(8, 1000).unwrap(),
            GpuRequest::Whole { count: 8 }
        );
        assert!(GpuRequest::from_trace(2, 500).is_err());
        assert!(GpuRequest::from_trace(1, 1200).is_err());
    }

    #[test]
    fn toleration_semantics() {
        let t = Taint {
            key: "gpu".into(),
            value: "a100".into(),
            effect: TaintEffect::NoSchedule,
        };
        let exists_all = Toleration {
            key: None,
            exists: true,
            value: String::new(),
            effect: None,
        };
        let equal_wrong = Toleration {
            key: Some("gpu".into()),
            exists: false,
            value: "t4".into(),
            effect: None,
        };
        let equal_right = Toleration {
            value: "a100".into(),
            ..equal_wrong.clone()
        };
        let wrong_effect = Toleration {
            effect: Some(TaintEffect::NoExecute),
            ..equal_right.clone()
        };
        assert!(exists_all.tolerates(&t));
        assert!(!equal_wrong.tolerates(&t));
        assert!(equal_right.tolerates(&t));
        assert!(!wrong_effect.tolerates(&t));
    }
}
