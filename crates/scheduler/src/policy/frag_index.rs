//! An incremental index for the fragmentation policies ([`super::Fgd`], [`super::AutoGlm`]):
//! one decision costs about (distinct requests seen) x log(nodes), not a scan of every node.
//!
//! # How
//! - **Per-node base**, cached by [`crate::model::NodeState::generation`]: the node's
//!   fragmentation before placement and, per typical spec, how many of its GPUs fit the spec
//!   and how much free milli-GPU sits on GPUs that do not. The fragmentation after placing a
//!   request follows from it in one pass over the specs (a whole-GPU request turns idle GPUs
//!   from "fit" to 0; a shared request moves one GPU's free compute).
//! - **One row per distinct request** (CPU, memory, GPU request, GPU types): every node's
//!   score for that request, or "infeasible", and a tournament tree over the nodes whose root
//!   is the policy's choice. Between decisions only the nodes named by the cluster's change
//!   journal ([`Cluster::changes_since`]) are rescored, when the row is next used.
//! - **`autoglm`'s GPU-type prices** ([`super::TypePrices`]) change with every placement
//!   and lower every node of a type at once, which the tree cannot hold: with prices, the
//!   row is brought up to date the same way and the choice is a scan of its leaves in node
//!   order ([`FragIndex::best_adjusted`], O(nodes) per decision, only for workloads that
//!   name GPU types).
//!
//! # Guarantees
//! - The score of each node is computed with the same integer parts, summed in the same order,
//!   as [`super::fgd::TypicalPods::node_frag`] (the specs that can use the node's GPU model in
//!   spec order, then the summed weight of the others times the free milli-GPU), so it is
//!   bit-identical to the straightforward scoring; the tree keeps the first top-scored node in
//!   node order (`Fgd`).
//! - Feasibility is [`crate::feasibility::check_node`]'s answer: the index is used only when
//!   every node is [`crate::model::NodeSummary::regular`] and the request has no node
//!   selector ([`FragIndex::usable`]).
//!
//! # Caveats
//! - `autoglm` compares scores within `1e-6` and then breaks ties by leftover; a scan and a
//!   tree agree as long as no two feasible scores differ by a non-zero amount below about
//!   `2e-6` milli-GPU. That is checked, not proven (`tests/frag_index.rs` and the
//!   simulator's JSON diff): the GPU-type scarcity weights and the real-valued CPU-stranding
//!   term could in principle bring two distinct scores closer than that.
//! - Memory: 16 bytes per node per row plus 4 per tree slot (twice the node count rounded up
//!   to a power of two); rows beyond [`ROW_BUDGET_BYTES`] are dropped least recently used
//!   first and rebuilt on next use.

use std::collections::HashMap;

use super::fgd::{TypicalPods, fgd_int_score};
use crate::feasibility::summary_fits;
use crate::model::{Cluster, GpuRequest, MILLI_PER_GPU, NodeSummary, PodRequest, gpu_model_ids};

/// Memory allowed for the rows of one index, in bytes (64 MiB: ~230 rows at 10,000 nodes,
/// against 151 distinct requests in the openb default list).
pub const ROW_BUDGET_BYTES: usize = 64 << 20;

/// `autoglm`'s score tolerance (see [`super::AutoGlm`]).
pub(crate) const AUTOGLM_EPS: f64 = 1e-6;

/// What a row's scores mean and how the best is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// FGD: integer score of the best GPU choice; first top-scored node.
    Fgd,
    /// `autoglm`: exact negative fragmentation growth minus `strand_weight` times the growth
    /// of stranded milli-GPU (`rho_cpu` milli-GPU per milli-CPU); ties within
    /// [`AUTOGLM_EPS`] go to the smaller leftover, then the first node.
    AutoGlm {
        /// Weight of the stranding growth.
        strand_weight: f64,
        /// Milli-GPU per milli-CPU of the workload's GPU pods.
        rho_cpu: f64,
    },
}

/// One typical spec, flattened.
#[derive(Debug, Clone)]
struct Spec {
    cpu: u64,
    milli: u32,
    num: u32,
    weight: f64,
    /// Whether the spec can use each model id (index 0: no GPU).
    allows: Vec<bool>,
}

/// A node's state before placement.
#[derive(Debug, Clone, Copy)]
struct Base {
    generation: u64,
    before: f64,
    total: u32,
}

/// A node's score in a row; `s == -inf` means infeasible.
#[derive(Debug, Clone, Copy)]
struct Leaf {
    s: f64,
    left: f64,
}

const INFEASIBLE: Leaf = Leaf {
    s: f64::NEG_INFINITY,
    left: 0.0,
};
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RowKey {
    cpu: u64,
    mem: u64,
    gpu: GpuRequest,
    types: Vec<String>,
}

#[derive(Debug, Clone)]
struct Row {
    /// Cluster change count the leaves reflect.
    seen: u64,
    last_use: u64,
    /// Whether the request may use each model id.
    allows: Vec<bool>,
    leaf: Vec<Leaf>,
    /// Tournament tree: `win[1]` is the best node, `win[p + i]` is node `i` or [`NONE`].
    win: Vec<u32>,
}

/// Per-node bases and the spec table, shared by all rows.
#[derive(Debug, Clone, Default)]
struct Bases {
    specs: Vec<Spec>,
    /// Model id per node (0: no GPU).
    model: Vec<u16>,
    models: Vec<String>,
    base: Vec<Base>,
    /// Per node and spec: (GPUs with free >= spec milli, free milli-GPU on the others);
    /// kept only for the specs that can use the node's GPU model.
    fit_small: Vec<(u32, u32)>,
    /// Per model id: the specs that can use it, in spec order, and the summed weight (in
    /// spec order) of those that cannot (they count all free milli-GPU as fragment).
    usable: Vec<(Vec<usize>, f64)>,
}

/// The index; see the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct FragIndex {
    cluster: Option<(u64, usize)>,
    bases: Bases,
    rows: HashMap<RowKey, Row>,
    clock: u64,
    /// Tree leaves start here (a power of two, at least the node count).
    p: usize,
}

impl FragIndex {
    /// Whether the index decides exactly for this cluster and request.
    pub(crate) fn usable(cluster: &Cluster, req: &PodRequest) -> bool {
        req.node_selector.is_empty() && cluster.all_regular()
    }

    /// Forget everything (the typical specs or their weights changed).
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// The policy's choice for `req`: its node index and score, `None` when no node fits.
    /// Call only when [`FragIndex::usable`] holds.
    pub(crate) fn best(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        typical: &TypicalPods,
        mode: Mode,
    ) -> Option<(usize, f64)> {
        let row = self.row(cluster, req, typical, mode)?;
        let w = row.win[1];
        (w != NONE).then(|| (w as usize, row.leaf[w as usize].s))
    }

    /// `autoglm`'s choice when every node's score is lowered by `cost(node)` (the GPU-type
    /// price): the same order as [`autoglm_better`] over the nodes in index order, by a scan
    /// of the row's leaves (O(nodes); the tree cannot hold a cost that changes every
    /// decision). Returns the node and its lowered score.
    pub(crate) fn best_adjusted(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        typical: &TypicalPods,
        mode: Mode,
        cost: impl Fn(usize) -> f64,
    ) -> Option<(usize, f64)> {
        debug_assert!(matches!(mode, Mode::AutoGlm { .. }), "autoglm's order only");
        let row = self.row(cluster, req, typical, mode)?;
        let mut best: Option<(f64, f64, usize)> = None;
        for (i, l) in row.leaf.iter().enumerate() {
            if l.s == f64::NEG_INFINITY {
                continue;
            }
            let s = l.s - cost(i);
            if best.is_none_or(|(bs, bl, _)| autoglm_better(s, l.left, bs, bl)) {
                best = Some((s, l.left, i));
            }
        }
        best.map(|(s, _, i)| (i, s))
    }

    /// The row for `req`, brought up to date with the cluster.
    fn row(
        &mut self,
        cluster: &Cluster,
        req: &PodRequest,
        typical: &TypicalPods,
        mode: Mode,
    ) -> Option<&Row> {
        let summary = cluster.summary()?;
        let n = cluster.nodes.len();
        if n == 0 {
            // No nodes: nothing to index (an empty tree has no root to read).
            return None;
        }
        if self.cluster != Some((cluster.identity(), n)) {
            self.start(cluster, typical);
        }
        self.clock += 1;
        let key = RowKey {
            cpu: req.cpu_milli,
            mem: req.mem_mib,
            gpu: req.gpu,
            types: if req.gpu == GpuRequest::None {
                Vec::new()
            } else {
                req.gpu_types.clone()
            },
        };
        if !self.rows.contains_key(&key) {
            self.evict(n);
            // Model id 0 (no GPU) never hosts a GPU request: `summary_fits` rules it out.
            let allows = std::iter::once(false)
                .chain(
                    self.bases
                        .models
                        .iter()
                        .map(|m| req.allows_gpu_model(Some(m))),
                )
                .collect();
            self.rows.insert(
                key.clone(),
                Row {
                    seen: 0,
                    last_use: 0,
                    allows,
                    leaf: Vec::new(),
                    win: Vec::new(),
                },
            );
        }
        let p = self.p;
        let clock = self.clock;
        // The row was inserted above when missing.
        let row = self.rows.get_mut(&key)?;
        row.last_use = clock;
        let bases = &mut self.bases;
        let changes = if row.leaf.len() == n {
            cluster.changes_since(row.seen)
        } else {
            None
        };
        match changes {
            Some(ch) if ch.len() <= n / 4 => {
                for &c in ch {
                    let i = c as usize;
                    row.leaf[i] = bases.leaf(cluster, summary, i, req, &row.allows, mode);
                    let mut k = p + i;
                    row.win[k] = if row.leaf[i].s == f64::NEG_INFINITY {
                        NONE
                    } else {
                        c
                    };
                    while k > 1 {
                        k /= 2;
                        row.win[k] = pick(&row.leaf, row.win[2 * k], row.win[2 * k + 1], mode);
                    }
                }
            }
            _ => {
                row.leaf.clear();
                row.leaf.extend(
                    (0..n).map(|i| bases.leaf(cluster, summary, i, req, &row.allows, mode)),
                );
                row.win.clear();
                row.win.resize(2 * p, NONE);
                for i in 0..n {
                    if row.leaf[i].s != f64::NEG_INFINITY {
                        row.win[p + i] = i as u32;
                    }
                }
                for k in (1..p).rev() {
                    row.win[k] = pick(&row.leaf, row.win[2 * k], row.win[2 * k + 1], mode);
                }
            }
        }
        row.seen = cluster.change_count();
        Some(row)
    }

    /// Start over on a new cluster: model ids, spec table, empty bases and rows.
    fn start(&mut self, cluster: &Cluster, typical: &TypicalPods) {
        let n = cluster.nodes.len();
        let (models, ids) = gpu_model_ids(&cluster.nodes);
        // Distinct GPU models per cluster: far below 65,535.
        let model = ids
            .iter()
            .map(|id| id.map_or(0, |i| (i + 1) as u16))
            .collect();
        let specs = typical
            .specs
            .iter()
            .map(|s| Spec {
                cpu: s.cpu_milli,
                milli: s.milli,
                num: s.num_gpu,
                weight: s.weight,
                allows: std::iter::once(s.gpu_types.is_empty())
                    .chain(
                        models
                            .iter()
                            .map(|m| s.gpu_types.is_empty() || s.gpu_types.iter().any(|t| t == m)),
                    )
                    .collect(),
            })
            .collect();
        let t = typical.specs.len();
        self.bases = Bases {
            specs,
            model,
            models,
            base: vec![
                Base {
                    generation: u64::MAX,
                    before: 0.0,
                    total: 0,
                };
                n
            ],
            fit_small: vec![(0, 0); n * t],
            usable: Vec::new(),
        };
        self.bases.usable = (0..=self.bases.models.len())
            .map(|model| {
                let (mut specs, mut other) = (Vec::new(), 0.0);
                for (m, spec) in self.bases.specs.iter().enumerate() {
                    if spec.allows[model] {
                        specs.push(m);
                    } else {
                        other += spec.weight;
                    }
                }
                (specs, other)
            })
            .collect();
        self.rows.clear();
        self.p = n.next_power_of_two().max(1);
        self.cluster = Some((cluster.identity(), n));
    }

    /// Drop least recently used rows while one more would pass [`ROW_BUDGET_BYTES`].
    fn evict(&mut self, n: usize) {
        let per_row = n * std::mem::size_of::<Leaf>() + 2 * self.p * 4;
        let cap = (ROW_BUDGET_BYTES / per_row.max(1)).max(4);
        while self.rows.len() >= cap {
            let Some(oldest) = self
                .rows
                .iter()
                .min_by_key(|(_, r)| r.last_use)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.rows.remove(&oldest);
        }
    }
}

/// The better of two tournament entries; `a` covers lower node indexes than `b`.
#[inline]
fn pick(leaf: &[Leaf], a: u32, b: u32, mode: Mode) -> u32 {
    if a == NONE {
        return b;
    }
    if b == NONE {
        return a;
    }
    let (x, y) = (leaf[a as usize], leaf[b as usize]);
    let b_wins = match mode {
        Mode::Fgd => y.s > x.s,
        Mode::AutoGlm { .. } => autoglm_better(y.s, y.left, x.s, x.left),
    };
    if b_wins { b } else { a }
}

/// `autoglm`'s order: score `s` with leftover `left` beats the best so far (`bs`, `bl`) when
/// it is higher by more than [`AUTOGLM_EPS`], or equal within it and the leftover is smaller.
#[inline]
pub(crate) fn autoglm_better(s: f64, left: f64, bs: f64, bl: f64) -> bool {
    s > bs + AUTOGLM_EPS || (s > bs - AUTOGLM_EPS && left < bl - AUTOGLM_EPS)
}

impl Bases {
    /// Refresh node `i`'s base when its generation moved.
    fn ensure(&mut self, cluster: &Cluster, s: &NodeSummary, i: usize) {
        let generation = cluster.nodes[i].generation;
        if self.base[i].generation == generation {
            return;
        }
        let t = self.specs.len();
        let gpus = &s.gpu_milli_free[..usize::from(s.gpus)];
        let total: u32 = gpus.iter().map(|&g| u32::from(g)).sum();
        let model = usize::from(self.model[i]);
        let cpu = u64::from(s.cpu_free);
        let fs = &mut self.fit_small[i * t..(i + 1) * t];
        let (usable, other) = &self.usable[model];
        let mut before = 0.0;
        for &m in usable {
            let spec = &self.specs[m];
            let (mut fit, mut small) = (0u32, 0u32);
            for &g in gpus {
                let g = u32::from(g);
                if g >= spec.milli {
                    fit += 1;
                } else {
                    small += g;
                }
            }
            fs[m] = (fit, small);
            let part = if spec.milli == 0 || cpu < spec.cpu {
                total
            } else if fit >= spec.num {
                small
            } else {
                total
            };
            before += spec.weight * f64::from(part);
        }
        before += other * f64::from(total);
        self.base[i] = Base {
            generation,
            before: if total == 0 { 0.0 } else { before },
            total,
        };
    }

    /// Fragmentation of node `i` after its free CPU becomes `cpu_after`, `whole` idle GPUs
    /// become fully used and (for a shared request) one GPU goes from `change.0` to
    /// `change.1` free milli-GPU; `total_after` is the node's free milli-GPU then.
    fn after(
        &self,
        i: usize,
        cpu_after: u64,
        total_after: u32,
        whole: u32,
        change: Option<(u32, u32)>,
    ) -> f64 {
        if total_after == 0 {
            return 0.0;
        }
        let t = self.specs.len();
        let fs = &self.fit_small[i * t..(i + 1) * t];
        let model = usize::from(self.model[i]);
        let (usable, other) = &self.usable[model];
        let mut f = 0.0;
        for &m in usable {
            let spec = &self.specs[m];
            let part = if spec.milli == 0 || cpu_after < spec.cpu {
                total_after
            } else {
                let (mut fit, mut small) = fs[m];
                // Idle GPUs (1000 free) fit every spec; taken, they add 0 to `small`.
                fit -= whole;
                if let Some((from, to)) = change {
                    if from >= spec.milli {
                        fit -= 1;
                    } else {
                        small -= from;
                    }
                    if to >= spec.milli {
                        fit += 1;
                    } else {
                        small += to;
                    }
                }
                if fit >= spec.num { small } else { total_after }
            };
            f += spec.weight * f64::from(part);
        }
        f + other * f64::from(total_after)
    }

    /// Node `i`'s leaf for `req`: infeasible, or the score of its best GPU choice.
    fn leaf(
        &mut self,
        cluster: &Cluster,
        summary: &[NodeSummary],
        i: usize,
        req: &PodRequest,
        allows: &[bool],
        mode: Mode,
    ) -> Leaf {
        let s = &summary[i];
        if !summary_fits(s, req)
            || (req.gpu != GpuRequest::None && !allows[usize::from(self.model[i])])
        {
            return INFEASIBLE;
        }
        self.ensure(cluster, s, i);
        let Base { before, total, .. } = self.base[i];
        let cpu_free = u64::from(s.cpu_free);
        let cpu_after = cpu_free.saturating_sub(req.cpu_milli);
        let mut best: Option<f64> = None;
        let mut visit = |after: f64| {
            let d = after - before;
            let v = match mode {
                Mode::Fgd => fgd_int_score(d) as f64,
                Mode::AutoGlm { .. } => -d,
            };
            if best.is_none_or(|b| v > b) {
                best = Some(v);
            }
        };
        match req.gpu {
            GpuRequest::None => visit(self.after(i, cpu_after, total, 0, None)),
            GpuRequest::Whole { count } => {
                visit(self.after(i, cpu_after, total - count * MILLI_PER_GPU, count, None));
            }
            GpuRequest::Shared { milli, mem_mib } => {
                let n = usize::from(s.gpus);
                for g in 0..n {
                    let free = u32::from(s.gpu_milli_free[g]);
                    if free < milli || u64::from(s.gpu_mem_free[g]) < mem_mib {
                        continue;
                    }
                    // Same rule as the straightforward scoring: equal free compute on an
                    // earlier GPU that also fits gives the same result; keep the first.
                    if (0..g).any(|h| {
                        u32::from(s.gpu_milli_free[h]) == free
                            && u64::from(s.gpu_mem_free[h]) >= mem_mib
                    }) {
                        continue;
                    }
                    visit(self.after(i, cpu_after, total - milli, 0, Some((free, free - milli))));
                }
            }
        }
        let Some(mut v) = best else {
            return INFEASIBLE;
        };
        let mut left = 0.0;
        if let Mode::AutoGlm {
            strand_weight,
            rho_cpu,
        } = mode
        {
            let gpu = f64::from(total);
            let cpu = cpu_free as f64;
            let stranded = |g: f64, c: f64| (g - c * rho_cpu).max(0.0);
            if strand_weight > 0.0 {
                let b = stranded(gpu, cpu);
                let a = stranded(
                    gpu - req.gpu.total_milli() as f64,
                    cpu - req.cpu_milli as f64,
                );
                v -= strand_weight * (a - b);
            }
            left = 0.5 * (cpu - req.cpu_milli as f64) / super::MAX_SPEC_CPU
                + 0.5 * (gpu - req.gpu.total_milli() as f64) / super::MAX_SPEC_GPU;
        }
        Leaf { s: v, left }
    }
}
