//! The FGD paper's placement experiment.
//!
//! Procedure (FGD paper §6.1, "workload inflation"):
//! 1. **Inflate** the pod list to a total GPU request of `ratio` (1.3) times the cluster's GPU
//!    capacity: append clones drawn uniformly with replacement from the original list, and
//!    stop before the clone that would pass the target; if the list already exceeds the
//!    target, remove uniformly random pods until it does not.
//! 2. **Shuffle** the order with the seed (the same ChaCha8 stream as step 1).
//! 3. **Replay**: timestamps are ignored and pods never leave; each pod is tried once; a pod
//!    that fits nowhere is counted as failed but its GPU request still counts as arrived.
//! 4. **Report** at each 1% step of arrived GPU request (0..=130% of capacity) the state after
//!    every pod whose arrival keeps the cumulative arrived request at or below that step:
//!    allocated milli-GPU / total milli-GPU (%), fragmented GPU share (%): the cluster's FGD
//!    fragmentation (against the workload's typical pods) over total milli-GPU, and the
//!    failed pods so far.
//!
//! # Source
//! Weng et al., USENIX ATC '23, §6.1 (Figures 7 and 9 use this replay).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::model::{Cluster, GpuRequest, NodeState, PodRequest, gpu_model_ids};
use crate::policy::{Placer, Policy, TypicalPods, fgd::cluster_frag};

/// Target inflation: 130% of the cluster's GPU capacity.
pub const INFLATION_RATIO: f64 = 1.3;
/// Highest reported step, in percent of capacity.
pub const MAX_STEP: u32 = 130;

/// Inflate `pods` to at most `ratio * capacity_milli` total milli-GPU and shuffle, with `seed`
/// (see the module docs). Clones are named `<name>-clone-<k>`.
pub fn inflate_and_shuffle(
    pods: &[PodRequest],
    capacity_milli: u64,
    ratio: f64,
    seed: u64,
) -> Vec<PodRequest> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let target = (capacity_milli as f64 * ratio).floor() as u64;
    let mut out: Vec<PodRequest> = pods.to_vec();
    let mut total: u64 = out.iter().map(|p| p.gpu.total_milli()).sum();
    if pods.is_empty() {
        return out;
    }
    if total <= target {
        let mut k = 0usize;
        loop {
            let src = &pods[rng.random_range(0..pods.len())];
            let add = src.gpu.total_milli();
            if total + add > target {
                break;
            }
            // A list of only CPU pods never reaches the target: stop at 10x its size.
            if add == 0 && out.len() >= pods.len() * 10 {
                break;
            }
            total += add;
            let mut c = src.clone();
            c.name = format!("{}-clone-{k}", src.name);
            k += 1;
            out.push(c);
        }
    } else {
        while total > target {
            let i = rng.random_range(0..out.len());
            total -= out[i].gpu.total_milli();
            out.swap_remove(i);
        }
    }
    out.shuffle(&mut rng);
    out
}

/// One reported step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// Policy name.
    pub policy: String,
    /// Seed.
    pub seed: u64,
    /// Arrived GPU request, percent of capacity (step).
    pub arrived_pct: u32,
    /// Allocated milli-GPU over total milli-GPU, percent.
    pub allocated_pct: f64,
    /// Allocated milli-GPU (not in the JSON output, which keeps the documented keys).
    #[serde(skip)]
    pub allocated_milli: u64,
    /// Fragmented milli-GPU (FGD measure) over total milli-GPU, percent.
    pub frag_pct: f64,
    /// Pods that fitted nowhere so far.
    pub failed_pods: u64,
}

/// Totals of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Reports at steps 0..=130.
    pub steps: Vec<StepReport>,
    /// Pods replayed.
    pub pods: usize,
    /// Seconds spent in placement decisions (feasibility + policy + allocation).
    pub decide_secs: f64,
}

/// Replay `pods` (already inflated and shuffled) on `nodes` with `policy`, reported under
/// `label`; `typical` is the fragmentation yardstick for `frag_pct`.
pub fn run(
    nodes: &[NodeState],
    pods: &[PodRequest],
    policy: &mut dyn Policy,
    label: &str,
    typical: &TypicalPods,
    seed: u64,
) -> RunSummary {
    let mut cluster = Cluster::new(nodes.to_vec());
    let cap = cluster.gpu_milli_capacity().max(1);
    let mut placer = Placer::default();
    let mut steps = Vec::with_capacity(MAX_STEP as usize + 1);
    let mut arrived: u64 = 0;
    let mut failed: u64 = 0;
    let mut next_step: u32 = 0;
    let mut decide = std::time::Duration::ZERO;
    let name = label.to_string();
    let snapshot = |cluster: &Cluster, step: u32, failed: u64, steps: &mut Vec<StepReport>| {
        let used = cluster.gpu_milli_used();
        steps.push(StepReport {
            policy: name.clone(),
            seed,
            arrived_pct: step,
            allocated_pct: 100.0 * used as f64 / cap as f64,
            allocated_milli: used,
            frag_pct: 100.0 * cluster_frag(typical, cluster) / cap as f64,
            failed_pods: failed,
        });
    };
    for pod in pods {
        let after = arrived + pod.gpu.total_milli();
        // Emit every step the arrival of this pod would pass.
        while next_step <= MAX_STEP && next_step < arrival_step(after, cap) {
            snapshot(&cluster, next_step, failed, &mut steps);
            next_step += 1;
        }
        arrived = after;
        let t0 = std::time::Instant::now();
        match placer.place(&cluster, pod, policy) {
            Ok(p) => {
                if cluster.allocate(pod, &p).is_err() {
                    failed += 1;
                }
            }
            Err(_) => failed += 1,
        }
        decide += t0.elapsed();
    }
    while next_step <= MAX_STEP {
        snapshot(&cluster, next_step, failed, &mut steps);
        next_step += 1;
    }
    RunSummary {
        steps,
        pods: pods.len(),
        decide_secs: decide.as_secs_f64(),
    }
}

/// Workload variants of a pod list, for checking that a policy is not tuned to one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The list as given.
    Default,
    /// GPU-sharing pods drawn 2x as often (more fractional requests).
    Sharing,
    /// Multi-GPU pods (2, 4, 8 GPUs) drawn 10x as often.
    MultiGpu,
    /// A third of GPU pods constrained to one GPU type (drawn by GPU share of the cluster);
    /// the FGD paper's trace notes report ~33% of GPU tasks carry such a constraint.
    GpuType,
    /// CPU-only pods drawn 0.25x as often.
    FewCpu,
    /// A third of GPU pods constrained to one GPU type drawn uniformly over the cluster's
    /// types, so the rare types are asked for far beyond their capacity (openb: the 2 A10
    /// GPUs get as many constrained pods as the 4,392 G2 GPUs). A stress case for type-aware
    /// placement.
    RareTypes,
    /// One of the FGD paper's workload families (§6.3-6.6), built by the rule its published
    /// lists follow; see [`Family`].
    Family(Family, u16),
    /// The FGD paper's published `openb_pod_list_gpuspec<NN>.csv` (NN = 5, 10, 20, 25 or 33):
    /// the default list with the GPU types its published copy names for NN% of the GPU pods,
    /// matched by pod name (`crates/scheduler/data/openb-gpuspec`; [`Variant::check`] refuses
    /// a list whose pods do not match).
    GpuSpec(u8),
}

/// The published `gpuspec` rows (`name,num_gpu,gpu_milli,gpu_spec`), by share.
const GPUSPEC: [(u8, &str); 5] = [
    (5, include_str!("../../data/openb-gpuspec/gpuspec05.csv")),
    (10, include_str!("../../data/openb-gpuspec/gpuspec10.csv")),
    (20, include_str!("../../data/openb-gpuspec/gpuspec20.csv")),
    (25, include_str!("../../data/openb-gpuspec/gpuspec25.csv")),
    (33, include_str!("../../data/openb-gpuspec/gpuspec33.csv")),
];

/// One published `gpuspec` row: pod name, GPU count, milli-GPU per GPU, allowed types.
type GpuSpecRow = (&'static str, u32, u32, Vec<String>);

/// The published `gpuspec` rows for `pct` percent: pod name, GPU count, milli-GPU per GPU and
/// allowed types ([`crate::sim::trace::gpu_type_set`], as the trace loader keeps them); `None`
/// for a share that was not published.
///
/// # Panics
/// On a malformed line of the embedded files (a test reads every line of all five).
fn gpuspec_rows(pct: u8) -> Option<Vec<GpuSpecRow>> {
    let text = GPUSPEC.iter().find(|(p, _)| *p == pct)?.1;
    let rows = text
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.splitn(4, ',').collect();
            let parsed = match f[..] {
                [name, num, milli, spec] => num
                    .parse()
                    .ok()
                    .zip(milli.parse().ok())
                    .map(|(n, m)| (name, n, m, crate::sim::trace::gpu_type_set(spec))),
                _ => None,
            };
            match parsed {
                Some(r) if !r.3.is_empty() => r,
                _ => panic!("gpuspec{pct:02}.csv: malformed line {line:?}"),
            }
        })
        .collect();
    Some(rows)
}

/// The FGD paper's workload families: the `openb_pod_list_<family><pct>.csv` lists published
/// with the trace (`alibaba/clusterdata`, `cluster-trace-gpu-v2023/csv`), which its §6.3-6.6
/// use to vary one property of the default list. The published files are samples of the
/// default list; [`make_variant`] rebuilds them from any list by the rule each one follows,
/// read off the published files' pod counts (stated per family), and draws with the
/// variant's seed. When a class the rule draws from is empty in the given list (e.g. no
/// CPU-only pods for `cpu`), nothing is drawn from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `cpu<NNN>`: every GPU pod of the list, plus CPU-only pods drawn uniformly with
    /// replacement from the list's CPU-only pods until they are `NNN / 10` % of all pods
    /// (`n = round(G x f / (1 - f))`, `f = NNN / 1000`, `G` the GPU pods). Published:
    /// `cpu050` 375 CPU-only pods of 7,439 (5.0%), `cpu100` 789 of 7,853 (10.0%), `cpu250`
    /// 2,356 of 9,420 (25.0%), each with the default list's 7,064 GPU pods; the rule gives
    /// 372, 785 and 2,355 (the published lists have 0.1-0.8% more, for a reason the files do
    /// not show). The default list itself has 1,088 of 8,152 (13.3%).
    Cpu,
    /// `gpushare<NN>`: the list's CPU-only pods, and as many GPU pods as the list has, drawn
    /// uniformly with replacement from its GPU-sharing pods (one GPU, under 1000 milli-GPU)
    /// and from its other GPU pods, such that the sharing pods carry `NN`% of the GPU request:
    /// `s x m_s / (s x m_s + (G - s) x m_o) = NN / 100` with `m_s`, `m_o` the two classes'
    /// mean milli-GPU. Published: `gpushare40` has 4,001 sharing pods of 7,064 GPU pods (the
    /// rule gives 3,985), `gpushare100` all 7,064; the default list's sharing pods carry 28.5%.
    GpuShare,
    /// `multigpu<NN>`: the whole list, plus multi-GPU pods drawn uniformly with replacement
    /// from the list's multi-GPU pods until they carry at least `NN`% of the GPU request.
    /// Published: `multigpu50` is the default list plus 909 appended multi-GPU pods (the rule
    /// needs about 880); the default list's multi-GPU pods carry 7.3%.
    MultiGpu,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::Cpu => "cpu",
            Family::GpuShare => "gpushare",
            Family::MultiGpu => "multigpu",
        }
    }
}

impl Variant {
    /// Parse a CLI name: one of [`Variant::NAMES`], or a family name such as `cpu050`,
    /// `gpushare80` or `multigpu30` (the published lists' names; `cpu` takes three digits,
    /// 000..=900, so the published `cpu0` is `cpu000`; `gpushare` 0..=100 and `multigpu`
    /// 0..=90 without leading zeros).
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(i) = Variant::NAMES.iter().position(|n| *n == s) {
            return Some(Variant::FIXED[i]);
        }
        if let Some(d) = s.strip_prefix("gpuspec") {
            return GPUSPEC
                .iter()
                .find(|(p, _)| format!("{p:02}") == d)
                .map(|(p, _)| Variant::GpuSpec(*p));
        }
        let (family, digits) = [Family::Cpu, Family::GpuShare, Family::MultiGpu]
            .into_iter()
            .find_map(|f| s.strip_prefix(f.prefix()).map(|d| (f, d)))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let pct: u16 = digits.parse().ok()?;
        // One spelling per variant, so that names print back as given: `cpu` takes exactly
        // three digits (tenths of a percent), the others none with a leading zero.
        let canonical = Variant::Family(family, pct).name() == s;
        let in_range = match family {
            Family::Cpu => pct <= 900,
            Family::GpuShare => pct <= 100,
            Family::MultiGpu => pct <= 90,
        };
        (canonical && in_range).then_some(Variant::Family(family, pct))
    }
    /// The fixed CLI names (the families' names are `cpu<NNN>`, `gpushare<NN>`,
    /// `multigpu<NN>`; [`Variant::FAMILY_HELP`]), in the order of [`Variant::FIXED`].
    pub const NAMES: [&'static str; 6] = [
        "default",
        "sharing",
        "multi-gpu",
        "gpu-type",
        "few-cpu",
        "rare-types",
    ];
    /// The variants named by [`Variant::NAMES`].
    pub const FIXED: [Variant; 6] = [
        Variant::Default,
        Variant::Sharing,
        Variant::MultiGpu,
        Variant::GpuType,
        Variant::FewCpu,
        Variant::RareTypes,
    ];
    /// How the family names are formed, for error messages.
    pub const FAMILY_HELP: &'static str = "cpu<000..900> (CPU-only pods in tenths of a percent of all pods, three \
digits, e.g. cpu050), gpushare<0..100> (% of the GPU request from GPU-sharing pods), \
multigpu<0..90> (% of the GPU request from multi-GPU pods), gpuspec05/10/20/25/33 (the published \
GPU types of that share of the GPU pods, for openb_pod_list_default.csv)";

    /// Whether this variant can be built from `pods`: a `gpuspec` variant names pods of the
    /// default openb list, and each must be in `pods` with the same GPU request.
    ///
    /// # Errors
    /// A message naming the first pod that is missing or differs.
    pub fn check(&self, pods: &[PodRequest]) -> Result<(), String> {
        let Variant::GpuSpec(pct) = *self else {
            return Ok(());
        };
        let Some(rows) = gpuspec_rows(pct) else {
            return Err(format!(
                "--variant {self}: no gpuspec list was published for {pct}%"
            ));
        };
        let mut by_name: std::collections::HashMap<&str, Vec<&PodRequest>> =
            std::collections::HashMap::new();
        for p in pods {
            by_name.entry(p.name.as_str()).or_default().push(p);
        }
        for (name, num, milli, _) in &rows {
            let want = GpuRequest::from_trace(*num, *milli);
            match by_name.get(name).map(Vec::as_slice) {
                Some([p]) if Ok(p.gpu) == want => {}
                Some([p]) => {
                    return Err(format!(
                        "--variant {self}: pod {name} asks {} GPU(s) of {} milli-GPU, the \
                         published list {num} of {milli}; it applies to \
                         openb_pod_list_default.csv",
                        p.gpu.gpu_count(),
                        p.gpu.milli_per_gpu()
                    ));
                }
                Some(_) => {
                    return Err(format!(
                        "--variant {self}: the pod list names {name} more than once; the \
                         types go by pod name, so names must be unique"
                    ));
                }
                None => {
                    return Err(format!(
                        "--variant {self}: the pod list has no pod named {name} (one of the {} \
                         the published list names GPU types for); it applies to \
                         openb_pod_list_default.csv",
                        rows.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// The CLI name (`cpu050` keeps the published lists' three digits).
    pub fn name(&self) -> String {
        match *self {
            Variant::Family(Family::Cpu, pct) => format!("cpu{pct:03}"),
            Variant::Family(f, pct) => format!("{}{pct}", f.prefix()),
            Variant::GpuSpec(pct) => format!("gpuspec{pct:02}"),
            v => {
                let i = Variant::FIXED.iter().position(|f| *f == v).unwrap_or(0);
                Variant::NAMES[i].to_string()
            }
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Whether `p` is a GPU-sharing pod (one GPU, a fraction of it).
fn is_sharing(p: &PodRequest) -> bool {
    matches!(p.gpu, GpuRequest::Shared { .. })
}

/// Whether `p` asks for more than one GPU.
fn is_multi_gpu(p: &PodRequest) -> bool {
    matches!(p.gpu, GpuRequest::Whole { count } if count > 1)
}

/// `n` pods drawn uniformly with replacement from `from`, named `<name>-v<k>` from `first`.
fn draw(from: &[&PodRequest], n: usize, first: usize, rng: &mut ChaCha8Rng) -> Vec<PodRequest> {
    if from.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|k| {
            let src = from[rng.random_range(0..from.len())];
            let mut p = src.clone();
            p.name = format!("{}-v{}", src.name, first + k);
            p
        })
        .collect()
}

/// The family variant `family` at `pct` of `pods` (rules in [`Family`]).
fn make_family(
    pods: &[PodRequest],
    family: Family,
    pct: u16,
    rng: &mut ChaCha8Rng,
) -> Vec<PodRequest> {
    let gpu: Vec<&PodRequest> = pods.iter().filter(|p| p.gpu != GpuRequest::None).collect();
    let cpu_only: Vec<&PodRequest> = pods.iter().filter(|p| p.gpu == GpuRequest::None).collect();
    let mean_milli = |ps: &[&PodRequest]| -> f64 {
        ps.iter().map(|p| p.gpu.total_milli() as f64).sum::<f64>() / ps.len().max(1) as f64
    };
    match family {
        Family::Cpu => {
            let f = f64::from(pct) / 1000.0;
            let n = (gpu.len() as f64 * f / (1.0 - f)).round() as usize;
            let mut out: Vec<PodRequest> = gpu.iter().map(|p| (*p).clone()).collect();
            out.extend(draw(&cpu_only, n, 0, rng));
            out
        }
        Family::GpuShare => {
            let sharing: Vec<&PodRequest> = gpu.iter().copied().filter(|p| is_sharing(p)).collect();
            let other: Vec<&PodRequest> = gpu.iter().copied().filter(|p| !is_sharing(p)).collect();
            let (m_s, m_o) = (mean_milli(&sharing), mean_milli(&other));
            let f = f64::from(pct) / 100.0;
            let g = gpu.len() as f64;
            // s m_s / (s m_s + (g - s) m_o) = f  =>  s = f g m_o / (m_s (1 - f) + f m_o).
            let s = if sharing.is_empty() {
                0
            } else if other.is_empty() || pct >= 100 {
                gpu.len()
            } else {
                ((f * g * m_o / (m_s * (1.0 - f) + f * m_o)).round() as usize).min(gpu.len())
            };
            let mut out: Vec<PodRequest> = cpu_only.iter().map(|p| (*p).clone()).collect();
            out.extend(draw(&sharing, s, 0, rng));
            out.extend(draw(&other, gpu.len() - s, s, rng));
            out
        }
        Family::MultiGpu => {
            let multi: Vec<&PodRequest> = gpu.iter().copied().filter(|p| is_multi_gpu(p)).collect();
            let mut out = pods.to_vec();
            if multi.is_empty() {
                return out;
            }
            let mut total: u64 = pods.iter().map(|p| p.gpu.total_milli()).sum();
            let mut part: u64 = multi.iter().map(|p| p.gpu.total_milli()).sum();
            let mut k = 0;
            // Integers: "at least pct%" exactly, e.g. 7,000 of 100,000 is 7%.
            while part * 100 < u64::from(pct) * total {
                let p = draw(&multi, 1, k, rng).remove(0);
                total += p.gpu.total_milli();
                part += p.gpu.total_milli();
                out.push(p);
                k += 1;
            }
            out
        }
    }
}

/// Build a variant of `pods`: a weighted resample with as many pods (`Sharing`, `MultiGpu`,
/// `FewCpu`), the same list with GPU-type constraints (`GpuType`, `RareTypes`), or a family
/// list ([`Family`]), deterministic for `seed`.
pub fn make_variant(
    pods: &[PodRequest],
    nodes: &[NodeState],
    variant: Variant,
    seed: u64,
) -> Vec<PodRequest> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_7a11);
    let weight = |p: &PodRequest| -> f64 {
        match (variant, p.gpu) {
            (Variant::Sharing, GpuRequest::Shared { .. }) => 2.0,
            (Variant::MultiGpu, GpuRequest::Whole { count }) if count > 1 => 10.0,
            (Variant::FewCpu, GpuRequest::None) => 0.25,
            _ => 1.0,
        }
    };
    match variant {
        Variant::Default => pods.to_vec(),
        Variant::Family(family, pct) => make_family(pods, family, pct, &mut rng),
        Variant::GpuSpec(pct) => {
            let types: std::collections::HashMap<&str, Vec<String>> = gpuspec_rows(pct)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, _, _, t)| (name, t))
                .collect();
            pods.iter()
                .map(|p| {
                    let mut p = p.clone();
                    if p.gpu != GpuRequest::None
                        && let Some(t) = types.get(p.name.as_str())
                    {
                        p.gpu_types = t.clone();
                    }
                    p
                })
                .collect()
        }
        Variant::GpuType | Variant::RareTypes => {
            let (names, ids) = gpu_model_ids(nodes);
            let mut models: Vec<(String, usize)> = names.into_iter().map(|m| (m, 0)).collect();
            for (n, id) in nodes.iter().zip(&ids) {
                if let Some(i) = id {
                    models[*i].1 += n.gpus.len();
                }
            }
            let total: usize = models.iter().map(|(_, c)| c).sum();
            pods.iter()
                .map(|p| {
                    let mut p = p.clone();
                    if p.gpu != GpuRequest::None && total > 0 && rng.random_bool(1.0 / 3.0) {
                        if variant == Variant::RareTypes {
                            let (m, _) = &models[rng.random_range(0..models.len())];
                            p.gpu_types = vec![m.clone()];
                            return p;
                        }
                        let mut x = rng.random_range(0..total);
                        for (m, c) in &models {
                            if x < *c {
                                p.gpu_types = vec![m.clone()];
                                break;
                            }
                            x -= c;
                        }
                    }
                    p
                })
                .collect()
        }
        _ => {
            let cum: Vec<f64> = pods
                .iter()
                .scan(0.0, |acc, p| {
                    *acc += weight(p);
                    Some(*acc)
                })
                .collect();
            let total = cum.last().copied().unwrap_or(0.0);
            (0..pods.len())
                .map(|k| {
                    let x = rng.random_range(0.0..total);
                    let i = cum.partition_point(|&c| c <= x).min(pods.len() - 1);
                    let mut p = pods[i].clone();
                    p.name = format!("{}-v{k}", pods[i].name);
                    p
                })
                .collect()
        }
    }
}

/// The first reported step (percent of `capacity_milli`) whose report includes the pod that
/// brings the cumulative arrived GPU request to `cumulative_milli`:
/// `ceil(100 x cumulative / capacity)`. A step's report covers every pod whose arrival keeps
/// the cumulative request at or below that step (module docs, step 4); [`run`], the bound's
/// arrival bands and the `waste` example all use this one definition.
pub fn arrival_step(cumulative_milli: u64, capacity_milli: u64) -> u32 {
    u32::try_from((cumulative_milli * 100).div_ceil(capacity_milli.max(1))).unwrap_or(u32::MAX)
}

/// The replay's pod sequence for one seed (steps 1 and 2 of the module docs): `variant` of
/// `base`, inflated to [`INFLATION_RATIO`] times the GPU capacity of `nodes` and shuffled.
/// Returns the sequence and that capacity in milli-GPU (1000 per GPU).
pub fn replay_workload(
    base: &[PodRequest],
    nodes: &[NodeState],
    variant: Variant,
    seed: u64,
) -> (Vec<PodRequest>, u64) {
    let capacity = gpu_capacity_milli(nodes);
    let list = make_variant(base, nodes, variant, seed);
    (
        inflate_and_shuffle(&list, capacity, INFLATION_RATIO, seed),
        capacity,
    )
}

/// GPU capacity of `nodes` in milli-GPU (1000 per GPU).
pub fn gpu_capacity_milli(nodes: &[NodeState]) -> u64 {
    nodes
        .iter()
        .map(|n| n.gpus.len() as u64 * u64::from(crate::model::MILLI_PER_GPU))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, num_gpu: u32, milli: u32) -> PodRequest {
        PodRequest::new(
            name,
            1000,
            1024,
            GpuRequest::from_trace(num_gpu, milli).unwrap(),
        )
    }

    /// 2 CPU-only pods, 3 sharing pods of 500 milli, 2 one-GPU pods and 1 two-GPU pod:
    /// GPU request 1,500 + 2,000 + 2,000 = 5,500 milli over 6 GPU pods.
    fn family_list() -> Vec<PodRequest> {
        vec![
            pod("c0", 0, 0),
            pod("c1", 0, 0),
            pod("s0", 1, 500),
            pod("s1", 1, 500),
            pod("s2", 1, 500),
            pod("w0", 1, 1000),
            pod("w1", 1, 1000),
            pod("m0", 2, 1000),
        ]
    }

    /// The variant `name` of [`family_list`] for `seed`.
    fn family(name: &str, seed: u64) -> Vec<PodRequest> {
        make_variant(&family_list(), &[], Variant::parse(name).unwrap(), seed)
    }

    fn counts(pods: &[PodRequest]) -> (usize, usize, usize, usize) {
        let c = pods.iter().filter(|p| p.gpu == GpuRequest::None).count();
        let s = pods.iter().filter(|p| is_sharing(p)).count();
        let m = pods.iter().filter(|p| is_multi_gpu(p)).count();
        (c, s, pods.len() - c - s - m, m)
    }

    #[test]
    fn family_names_parse_and_print_back() {
        for name in [
            "cpu000",
            "cpu050",
            "cpu250",
            "gpushare0",
            "gpushare20",
            "gpushare100",
            "multigpu0",
            "multigpu50",
        ] {
            let v = Variant::parse(name).unwrap();
            assert!(matches!(v, Variant::Family(..)), "{name}");
            assert_eq!(v.name(), name);
        }
        for name in [
            "gpuspec05",
            "gpuspec10",
            "gpuspec20",
            "gpuspec25",
            "gpuspec33",
        ] {
            let v = Variant::parse(name).unwrap();
            assert!(matches!(v, Variant::GpuSpec(_)), "{name}");
            assert_eq!(v.name(), name);
        }
        for (i, name) in Variant::NAMES.iter().enumerate() {
            assert_eq!(Variant::parse(name), Some(Variant::FIXED[i]));
            assert_eq!(Variant::FIXED[i].name(), *name);
        }
        // Out of range, not three digits for cpu, leading zeros, not a number.
        for bad in [
            "gpushare101",
            "multigpu91",
            "cpu901",
            "cpu0",
            "cpu50",
            "cpu0500",
            "gpushare080",
            "multigpu05",
            "cpu",
            "cpu-5",
            "cpu5x",
            "gpushare+5",
            "gpuspec5",
            "gpuspec11",
            "gpuspec",
        ] {
            assert_eq!(Variant::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn gpuspec_variant_names_types_by_pod_name_and_refuses_other_lists() {
        // The first published gpuspec33 row is openb-pod-0009, 1 x 1000 milli-GPU, limited to
        // V100M16|V100M32; openb-pod-0000 names no type in any published list.
        let v = Variant::parse("gpuspec33").unwrap();
        let list = vec![
            pod("openb-pod-0000", 1, 1000),
            pod("openb-pod-0009", 1, 1000),
        ];
        let out = make_variant(&list, &[], v, 1);
        assert!(out[0].gpu_types.is_empty());
        assert_eq!(out[1].gpu_types, vec!["V100M16", "V100M32"]);
        // Check against the whole published list: this two-pod list lacks most of its pods,
        // and a pod of that name with another request is refused too.
        let err = v.check(&list).unwrap_err();
        assert!(
            err.contains("has no pod named") && err.contains("2388"),
            "{err}"
        );
        let other = vec![pod("openb-pod-0009", 1, 500)];
        let err = v.check(&other).unwrap_err();
        assert!(err.contains("openb-pod-0009 asks 1 GPU(s) of 500"), "{err}");
        assert_eq!(Variant::Default.check(&other), Ok(()));
        let twice = vec![
            pod("openb-pod-0009", 1, 1000),
            pod("openb-pod-0009", 1, 500),
        ];
        let err = v.check(&twice).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
        let err = Variant::GpuSpec(7).check(&list).unwrap_err();
        assert!(
            err.contains("no gpuspec list was published for 7%"),
            "{err}"
        );
    }

    #[test]
    fn every_embedded_gpuspec_row_parses_to_a_clean_type_set() {
        // Every data line of the five files becomes a row (a malformed one panics), with
        // the published counts, and the types are non-empty, trimmed, sorted and unique.
        for (pct, rows) in [(5, 369), (10, 732), (20, 1444), (25, 1759), (33, 2388)] {
            let text = GPUSPEC.iter().find(|(p, _)| *p == pct).unwrap().1;
            assert_eq!(text.lines().count(), rows + 1, "gpuspec{pct:02}");
            let parsed = gpuspec_rows(pct).unwrap();
            assert_eq!(parsed.len(), rows, "gpuspec{pct:02}");
            for (name, _, _, types) in &parsed {
                assert!(types.windows(2).all(|w| w[0] < w[1]), "{name}: {types:?}");
                assert!(
                    types.iter().all(|t| !t.is_empty() && t.trim() == t),
                    "{name}: {types:?}"
                );
            }
        }
        // A repeated name in the published spec is kept once: gpuspec33 has 141 pods limited
        // to V100M16|V100M32 and 22 to V100M16|V100M32|V100M32.
        let both = gpuspec_rows(33)
            .unwrap()
            .into_iter()
            .filter(|(_, _, _, t)| t == &["V100M16", "V100M32"])
            .count();
        assert_eq!(both, 141 + 22);
    }

    #[test]
    fn cpu_family_keeps_gpu_pods_and_sets_the_cpu_only_share() {
        // f = 0.25, 6 GPU pods: round(6 x 0.25 / 0.75) = 2 CPU-only pods.
        let out = family("cpu250", 1);
        assert_eq!(counts(&out), (2, 3, 2, 1));
        // f = 0.5: 6 CPU-only pods; f = 0: none.
        let out = family("cpu500", 1);
        assert_eq!(counts(&out), (6, 3, 2, 1));
        let out = family("cpu000", 1);
        assert_eq!(counts(&out), (0, 3, 2, 1));
        assert!(out.iter().all(|p| !p.name.starts_with('c')));
    }

    #[test]
    fn gpushare_family_sets_the_sharing_share_of_the_gpu_request() {
        // m_s = 500, m_o = (1000 + 1000 + 2000) / 3 = 4000/3, G = 6, f = 0.5:
        // s = 0.5 x 6 x 4000/3 / (500 x 0.5 + 0.5 x 4000/3) = 4000 / (250 + 2000/3) = 4.36 -> 4.
        let out = family("gpushare50", 7);
        let (c, s, w, m) = counts(&out);
        assert_eq!((c, s, w + m), (2, 4, 2));
        assert!(
            out.iter()
                .filter(|p| is_sharing(p))
                .all(|p| p.gpu.total_milli() == 500)
        );
        // 100%: every GPU pod is a sharing pod.
        let out = family("gpushare100", 7);
        assert_eq!(counts(&out), (2, 6, 0, 0));
    }

    #[test]
    fn multigpu_family_appends_multi_gpu_pods_until_their_share() {
        // 2,000 of 5,500 milli (36%) is multi-GPU. Each appended m0 adds 2,000 to both:
        // (2000 + 2000k) / (5500 + 2000k) >= 0.6 first at k = 2 (6000 / 9500 = 0.63;
        // k = 1: 4000 / 7500 = 0.53).
        let out = family("multigpu60", 3);
        assert_eq!(out.len(), 10);
        assert_eq!(&out[..8], &family_list()[..]);
        assert_eq!(counts(&out), (2, 3, 2, 3));
        // Exactly at the share: 7,000 of 100,000 milli-GPU is 7% (93 one-GPU pods and one
        // seven-GPU pod); nothing is appended (a float comparison appended one).
        let mut exact: Vec<PodRequest> = (0..93).map(|i| pod(&format!("w{i}"), 1, 1000)).collect();
        exact.push(pod("m", 7, 1000));
        let out = make_variant(&exact, &[], Variant::parse("multigpu7").unwrap(), 3);
        assert_eq!(out.len(), 94);
        // Already above 30%: nothing appended.
        let out = family("multigpu30", 3);
        assert_eq!(out, family_list());
    }

    #[test]
    fn inflation_reaches_exact_count_when_pods_are_uniform() {
        // 4 pods of 1 GPU each, capacity 10 GPUs: the target 13 GPUs is hit exactly, so
        // whatever the draws, 9 clones are appended: 13 pods, 13,000 milli-GPU.
        let pods: Vec<_> = (0..4).map(|i| pod(&format!("p{i}"), 1, 1000)).collect();
        for seed in [1, 42, 51] {
            let out = inflate_and_shuffle(&pods, 10_000, 1.3, seed);
            assert_eq!(out.len(), 13);
            assert_eq!(out.iter().map(|p| p.gpu.total_milli()).sum::<u64>(), 13_000);
            assert_eq!(out.iter().filter(|p| p.name.contains("-clone-")).count(), 9);
        }
    }

    #[test]
    fn inflation_removes_pods_when_over_target() {
        // 20 pods of 500 milli = 10 GPUs on a 5-GPU cluster: target 6.5 GPUs -> remove until
        // at most 6,500 milli: exactly 13 pods remain.
        let pods: Vec<_> = (0..20).map(|i| pod(&format!("p{i}"), 1, 500)).collect();
        let out = inflate_and_shuffle(&pods, 5_000, 1.3, 42);
        assert_eq!(out.len(), 13);
        assert_eq!(out.iter().map(|p| p.gpu.total_milli()).sum::<u64>(), 6_500);
    }

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let pods: Vec<_> = (0..50)
            .map(|i| pod(&format!("p{i}"), 1, 100 + i * 10))
            .collect();
        let a = inflate_and_shuffle(&pods, 100_000, 0.0, 7);
        let b = inflate_and_shuffle(&pods, 100_000, 0.0, 7);
        assert_eq!(a, b);
        assert!(a.is_empty(), "ratio 0 leaves no GPU pod");
        // Total is 50 * 100 + 10 * (0 + ... + 49) = 17,250 milli = the target: no clone.
        let c = inflate_and_shuffle(&pods, 172_500, 0.1, 7);
        assert_eq!(c, inflate_and_shuffle(&pods, 172_500, 0.1, 7));
        assert_ne!(c, pods, "the order is shuffled");
        let mut names: Vec<_> = c.iter().map(|p| p.name.clone()).collect();
        names.sort();
        let mut orig: Vec<_> = pods.iter().map(|p| p.name.clone()).collect();
        orig.sort();
        assert_eq!(names, orig);
    }
}
