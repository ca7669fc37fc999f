//! The edge between Kubernetes objects and the scheduling core: Nodes plus `GpuNode`
//! inventory become [`NodeState`]s, a job's replica needs become a [`PodRequest`], a core
//! [`Placement`] becomes the [`GpuAssignment`] written on the pod.
//!
//! Units: CPU in milli-CPU, memory and GPU memory in MiB, GPU compute in milli-GPU (1000 =
//! one GPU).

use std::collections::BTreeMap;

use autoglm_api::AssignedGpu;
use autoglm_api::{GpuAssignment, GpuNode, HealthStatus, InferenceJobSpec, PlacementPolicy};
use autoglm_scheduler::model::{
    GpuRequest, GpuShare, MILLI_PER_GPU, NodeState, PodRequest, Taint, TaintEffect, Toleration,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;

/// Taint the controller adds to its model of a Node that is not Ready, mirroring the taint the
/// node lifecycle controller sets (`node.kubernetes.io/not-ready`).
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// Taint the controller adds to its model of a cordoned Node (`spec.unschedulable`), as the
/// `TaintNodesByCondition` feature does.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// Taint the controller adds to its model of a Node whose `GpuNode` says
/// `spec.unschedulable`, or whose inventory heartbeat is older than
/// [`Inventory::max_heartbeat_age_s`].
pub const GPU_UNAVAILABLE_TAINT: &str = "autoglm.io/gpus-unavailable";

/// GPU memory that NVML may report as used on an idle GPU (driver and ECC reservations, a
/// few hundred MiB on current data-center GPUs); foreign use below this is ignored so that
/// whole-GPU requests, which need an idle GPU, still fit.
///
/// # Source
/// `nvidia-smi` on idle A100/H100 boards shows 0-600 MiB "used"; 1024 MiB leaves headroom.
pub const IDLE_NOISE_MIB: u64 = 1024;

/// Parses a Kubernetes CPU quantity (`"2"`, `"500m"`, `"1.5"`) into milli-CPU, rounding up.
///
/// # Errors
/// A message naming the quantity when it is not a plain decimal or `m`-suffixed number.
pub fn parse_cpu_milli(q: &str) -> Result<u64, String> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m
            .parse::<u64>()
            .map_err(|_| format!("invalid CPU quantity {q:?}"));
    }
    let v: f64 = q
        .parse()
        .map_err(|_| format!("invalid CPU quantity {q:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("invalid CPU quantity {q:?}"));
    }
    Ok((v * 1000.0).ceil() as u64)
}

/// Parses a Kubernetes memory quantity (`"2Gi"`, `"512Mi"`, `"1G"`, `"1048576"`) into MiB,
/// rounding up.
///
/// # Errors
/// A message naming the quantity when its suffix or number is not understood.
pub fn parse_mem_mib(q: &str) -> Result<u64, String> {
    const MIB: f64 = 1024.0 * 1024.0;
    let q = q.trim();
    let suffixes: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", MIB),
        ("Gi", 1024.0 * MIB),
        ("Ti", 1024.0 * 1024.0 * MIB),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * MIB),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("m", 1e-3),
        ("", 1.0),
    ];
    for (suffix, factor) in suffixes {
        if let Some(num) = q.strip_suffix(suffix) {
            if suffix.is_empty() && q.ends_with(|c: char| c.is_ascii_alphabetic()) {
                break;
            }
            let v: f64 = num
                .parse()
                .map_err(|_| format!("invalid memory quantity {q:?}"))?;
            if !v.is_finite() || v < 0.0 {
                return Err(format!("invalid memory quantity {q:?}"));
            }
            return Ok((v * factor / MIB).ceil() as u64);
        }
    }
    Err(format!("invalid memory quantity {q:?}"))
}

/// The GPU part of a replica's needs, from `spec.resources.gpu`.
#[must_use]
pub fn gpu_request(spec: &InferenceJobSpec) -> GpuRequest {
    let g = &spec.resources.gpu;
    match (g.count, g.memory_mib) {
        (Some(count), _) => GpuRequest::Whole {
            count: count.max(0) as u32,
        },
        (None, Some(mib)) => GpuRequest::Shared {
            milli: g
                .compute_milli
                .map_or(0, |m| m.clamp(0, MILLI_PER_GPU as i32) as u32),
            mem_mib: mib.max(0) as u64,
        },
        // The CRD requires exactly one of them; treat a bypassed rule as one whole GPU.
        (None, None) => GpuRequest::Whole { count: 1 },
    }
}

/// Converts Kubernetes tolerations into core tolerations.
#[must_use]
pub fn tolerations(ts: &[k8s_openapi::api::core::v1::Toleration]) -> Vec<Toleration> {
    ts.iter()
        .map(|t| Toleration {
            key: t.key.clone().filter(|k| !k.is_empty()),
            exists: t.operator.as_deref() == Some("Exists"),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.as_deref().and_then(taint_effect),
        })
        .collect()
}

fn taint_effect(e: &str) -> Option<TaintEffect> {
    match e {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

/// The core request of one replica of a job.
///
/// # Errors
/// A message naming `spec.resources.cpu` or `spec.resources.memory` when a quantity does not
/// parse.
pub fn pod_request(name: &str, spec: &InferenceJobSpec) -> Result<PodRequest, String> {
    let cpu =
        parse_cpu_milli(&spec.resources.cpu.0).map_err(|e| format!("spec.resources.cpu: {e}"))?;
    let mem = parse_mem_mib(&spec.resources.memory.0)
        .map_err(|e| format!("spec.resources.memory: {e}"))?;
    let mut req = PodRequest::new(name, cpu, mem, gpu_request(spec));
    req.tolerations = tolerations(&spec.placement.tolerations);
    req.node_selector = spec.placement.node_selector.clone();
    req.gpu_types = spec
        .resources
        .gpu
        .types
        .iter()
        .map(|t| gpu_model_name(t))
        .collect();
    req.gpu_types.sort();
    req.gpu_types.dedup();
    Ok(req)
}

/// The core's GPU model name for an NVML product name (`NVIDIA A100-SXM4-80GB` ->
/// `NVIDIA-A100-SXM4-80GB`): used for the node inventory and for `resources.gpu.types`, so
/// both compare equal.
#[must_use]
pub fn gpu_model_name(product: &str) -> String {
    product.trim().replace(' ', "-")
}

/// Name of the core policy used for a job's placement preference.
///
/// `binpack` maps to the core's `autoglm` policy (fragmentation-aware packing, the default),
/// `spread` to kube-scheduler's LeastAllocated.
#[must_use]
pub fn policy_name(p: PlacementPolicy) -> &'static str {
    match p {
        PlacementPolicy::Binpack => "autoglm",
        PlacementPolicy::Spread => "least-allocated",
    }
}

/// Inventory settings for [`node_state`].
#[derive(Clone, Copy, Debug)]
pub struct Inventory {
    /// A `GpuNode` heartbeat older than this many seconds makes its GPUs unavailable
    /// (`None`: never stale; simulated inventories in tests do not refresh).
    pub max_heartbeat_age_s: Option<i64>,
}

/// GPU memory and compute held by this controller's pods on one GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuUse {
    /// Compute in milli-GPU.
    pub milli: u32,
    /// Memory in MiB.
    pub mem_mib: u64,
}

/// Builds the core model of one Node and its GPU inventory, before any of this controller's
/// allocations are applied (see [`apply_use`]).
///
/// CPU and memory come from `status.allocatable`; labels and `NoSchedule`/`NoExecute`/
/// `PreferNoSchedule` taints are copied, and synthetic taints stand for a cordoned or
/// not-Ready node and for unavailable GPU inventory. GPUs come from the `GpuNode` status in
/// index order; an unhealthy GPU is modelled as fully used.
///
/// Foreign GPU memory use (NVML's used minus what our pods hold) is applied by
/// [`apply_use`], because it depends on our allocations.
#[must_use]
pub fn node_state(
    node: &Node,
    gpu_node: Option<&GpuNode>,
    inv: Inventory,
    now: Timestamp,
) -> NodeState {
    let name = node.metadata.name.clone().unwrap_or_default();
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let q = |k: &str| alloc.and_then(|a| a.get(k)).map(|q| q.0.clone());
    let cpu = q("cpu").and_then(|c| parse_cpu_milli(&c).ok()).unwrap_or(0);
    let mem = q("memory")
        .and_then(|m| parse_mem_mib(&m).ok())
        .unwrap_or(0);
    let mut state = NodeState::new(name, cpu, mem, 0, "", 0);
    state.labels = node.metadata.labels.clone().unwrap_or_default();
    let spec = node.spec.as_ref();
    for t in spec.and_then(|s| s.taints.as_ref()).into_iter().flatten() {
        if let Some(effect) = taint_effect(&t.effect) {
            state.taints.push(Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect,
            });
        }
    }
    let synthetic = |key: &str| Taint {
        key: key.into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    };
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        state.taints.push(synthetic(UNSCHEDULABLE_TAINT));
    }
    let not_ready = !node_ready(node);
    if not_ready {
        state.taints.push(synthetic(NOT_READY_TAINT));
    }
    if let Some(gn) = gpu_node {
        let status = gn.status.clone().unwrap_or_default();
        let stale = match (inv.max_heartbeat_age_s, status.heartbeat_time.as_ref()) {
            (Some(max), Some(t)) => now.duration_since(t.0).as_secs() > max,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if gn.spec.unschedulable || stale {
            state.taints.push(synthetic(GPU_UNAVAILABLE_TAINT));
        }
        let mut gpus = status.gpus.clone();
        gpus.sort_by_key(|g| g.index);
        for g in gpus {
            let total = g.memory_total_mib.max(0) as u64;
            let mut gpu =
                autoglm_scheduler::model::Gpu::new(gpu_model_name(&g.product_name), total);
            // A NotReady node takes nothing, whatever a pod tolerates: a catch-all toleration
            // (no key, Exists) matches the taint above, and a replica placed there would be
            // found lost and moved again and again.
            if not_ready || g.health.status == HealthStatus::Unhealthy {
                gpu.milli_used = MILLI_PER_GPU;
                gpu.mem_used_mib = total;
            }
            state.gpus.push(gpu);
        }
    }
    state
}

/// Whether a Node's `Ready` condition is `True`.
#[must_use]
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// NVML's used MiB per GPU index from a `GpuNode`, for [`apply_use`].
#[must_use]
pub fn nvml_used(gpu_node: Option<&GpuNode>) -> BTreeMap<usize, u64> {
    gpu_node
        .and_then(|g| g.status.as_ref())
        .map(|s| {
            s.gpus
                .iter()
                .filter(|g| g.index >= 0)
                .map(|g| (g.index as usize, g.memory_used_mib.max(0) as u64))
                .collect()
        })
        .unwrap_or_default()
}

/// Applies this controller's allocations (`ours`, per GPU position) and foreign use to a
/// node's GPUs: `mem_used = ours + foreign`, where `foreign = NVML used - ours` when that is
/// at least [`IDLE_NOISE_MIB`], else 0 (so `mem_used = max(NVML used, ours)` up to the noise
/// floor). Compute used is ours only; NVML has no notion of reserved compute.
pub fn apply_use(
    state: &mut NodeState,
    ours: &BTreeMap<usize, GpuUse>,
    nvml: &BTreeMap<usize, u64>,
) {
    for (i, gpu) in state.gpus.iter_mut().enumerate() {
        if gpu.milli_used == MILLI_PER_GPU && gpu.mem_used_mib == gpu.mem_mib {
            continue; // unhealthy: already full
        }
        let o = ours.get(&i).copied().unwrap_or_default();
        let foreign = nvml.get(&i).copied().unwrap_or(0).saturating_sub(o.mem_mib);
        let foreign = if foreign < IDLE_NOISE_MIB { 0 } else { foreign };
        gpu.milli_used = o.milli.min(MILLI_PER_GPU);
        gpu.mem_used_mib = (o.mem_mib + foreign).min(gpu.mem_mib);
    }
}

/// CPU (milli) and memory (MiB) requested by a pod's containers.
#[must_use]
pub fn pod_cpu_mem(pod: &Pod) -> (u64, u64) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        if let Some(req) = c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
            cpu += req
                .get("cpu")
                .and_then(|q| parse_cpu_milli(&q.0).ok())
                .unwrap_or(0);
            mem += req
                .get("memory")
                .and_then(|q| parse_mem_mib(&q.0).ok())
                .unwrap_or(0);
        }
    }
    (cpu, mem)
}

/// GPU shares a pod holds according to its assignment annotation: per GPU index, the
/// slice's MiB and milli (whole GPUs: the GPU's whole memory, `whole_mib(index)`, and 1000).
#[must_use]
pub fn assignment_use(a: &GpuAssignment, whole_mib: impl Fn(usize) -> u64) -> Vec<(usize, GpuUse)> {
    a.gpus
        .iter()
        .filter(|g| g.index >= 0)
        .map(|g| {
            let i = g.index as usize;
            let u = match a.memory_mib {
                Some(mib) => GpuUse {
                    milli: a.compute_milli.map_or(0, |m| m.max(0) as u32),
                    mem_mib: mib.max(0) as u64,
                },
                None => GpuUse {
                    milli: MILLI_PER_GPU,
                    mem_mib: whole_mib(i),
                },
            };
            (i, u)
        })
        .collect()
}

/// The assignment annotation for a core placement on `node` (whose `GpuNode` gives UUIDs).
#[must_use]
pub fn assignment(
    node: &str,
    shares: &[GpuShare],
    req: &GpuRequest,
    gpu_node: Option<&GpuNode>,
) -> GpuAssignment {
    let uuid = |i: usize| {
        gpu_node
            .and_then(|g| g.status.as_ref())
            .and_then(|s| s.gpus.iter().find(|g| g.index == i as i32))
            .map(|g| g.uuid.clone())
            .unwrap_or_default()
    };
    let gpus = shares
        .iter()
        .map(|s| AssignedGpu {
            index: s.index as i32,
            uuid: uuid(s.index),
        })
        .collect();
    let (memory_mib, compute_milli) = match *req {
        GpuRequest::Shared { milli, mem_mib } => {
            (Some(mem_mib as i64), (milli > 0).then_some(milli as i32))
        }
        _ => (None, None),
    };
    GpuAssignment {
        node: node.to_owned(),
        gpus,
        memory_mib,
        compute_milli,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu_milli("2"), Ok(2000));
        assert_eq!(parse_cpu_milli("500m"), Ok(500));
        assert_eq!(parse_cpu_milli("1.5"), Ok(1500));
        assert!(parse_cpu_milli("two").is_err());
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_mem_mib("2Gi"), Ok(2048));
        assert_eq!(parse_mem_mib("512Mi"), Ok(512));
        // 1 G = 10^9 bytes = 953.67 MiB -> 954
        assert_eq!(parse_mem_mib("1G"), Ok(954));
        assert_eq!(parse_mem_mib("1048576"), Ok(1));
        assert_eq!(parse_mem_mib("1048577"), Ok(2));
        assert!(parse_mem_mib("3Xi").is_err());
    }

    /// A Node with `allocatable` CPU and memory and the Ready condition `ready`, and its
    /// `GpuNode` with one GPU of `product` (80 GiB).
    fn node_pair(ready: &str, product: &str) -> (Node, GpuNode) {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {
                "allocatable": {"cpu": "32", "memory": "128Gi"},
                "conditions": [{"type": "Ready", "status": ready}],
            },
        }))
        .unwrap();
        let gn: GpuNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "autoglm.io/v1alpha1", "kind": "GpuNode",
            "metadata": {"name": "n1"},
            "spec": {},
            "status": {"source": "simulated", "gpuCount": 1, "product": product,
                "freeMemoryMiB": 81920, "gpus": [{"index": 0, "uuid": "GPU-0",
                "productName": product, "memoryTotalMiB": 81920, "memoryUsedMiB": 0,
                "memoryFreeMiB": 81920, "health": {"status": "Healthy"}}]},
        }))
        .unwrap();
        (node, gn)
    }

    /// A minimal valid spec with field `key` set to `value`.
    fn spec_with(key: &str, value: serde_json::Value) -> InferenceJobSpec {
        let mut spec = serde_json::json!({
            "model": {"uri": "file:///m.pt", "tokenizerUri": "file:///t.json", "task": "embedding"},
            "input": {"uri": "file:///in.jsonl"},
            "output": {"uri": "file:///out/"},
        });
        spec[key] = value;
        serde_json::from_value(spec).unwrap()
    }

    fn state(node: &Node, gn: &GpuNode) -> NodeState {
        let inv = Inventory {
            max_heartbeat_age_s: None,
        };
        node_state(node, Some(gn), inv, Timestamp::now())
    }

    #[test]
    fn gpu_types_match_the_inventory_names() {
        let spec = spec_with(
            "resources",
            serde_json::json!({"gpu": {"count": 1,
                "types": ["Tesla T4 ", "NVIDIA A100-SXM4-80GB", "Tesla T4"]}}),
        );
        let req = pod_request("j-0", &spec).unwrap();
        // Trimmed, spaces as in the inventory, sorted, duplicates dropped.
        assert_eq!(req.gpu_types, ["NVIDIA-A100-SXM4-80GB", "Tesla-T4"]);
        // Against the names the node inventory gives the same products.
        for (product, ok) in [
            ("NVIDIA A100-SXM4-80GB", true),
            ("Tesla T4", true),
            ("NVIDIA H100 80GB HBM3", false),
            ("tesla t4", false),
        ] {
            let (node, gn) = node_pair("True", product);
            let n = state(&node, &gn);
            assert_eq!(req.allows_gpu_model(n.gpu_model()), ok, "{product}");
            assert_eq!(
                autoglm_scheduler::feasibility::check_node(&n, &req).is_ok(),
                ok,
                "{product}"
            );
        }
    }

    #[test]
    fn a_not_ready_node_takes_nothing_even_with_a_catch_all_toleration() {
        let spec = spec_with(
            "placement",
            serde_json::json!({"tolerations": [{"operator": "Exists"}]}),
        );
        let req = pod_request("j-0", &spec).unwrap();
        let (ready, gn) = node_pair("True", "Tesla T4");
        assert!(autoglm_scheduler::feasibility::check_node(&state(&ready, &gn), &req).is_ok());
        // The toleration matches the not-ready taint, but the node's GPUs count as taken.
        let (lost, gn) = node_pair("False", "Tesla T4");
        let n = state(&lost, &gn);
        assert!(n.taints.iter().any(|t| t.key == NOT_READY_TAINT));
        assert_eq!(
            (n.gpus[0].milli_used, n.gpus[0].mem_used_mib),
            (1000, 81920)
        );
        assert!(autoglm_scheduler::feasibility::check_node(&n, &req).is_err());
    }

    #[test]
    fn foreign_use_counts_above_noise_floor() {
        let mut n = NodeState::new("n", 1000, 1000, 3, "T4", 16_384);
        let ours = BTreeMap::from([
            (
                0,
                GpuUse {
                    milli: 250,
                    mem_mib: 4096,
                },
            ),
            (
                1,
                GpuUse {
                    milli: 0,
                    mem_mib: 2048,
                },
            ),
        ]);
        // GPU 0: NVML sees 5000 of which 4096 ours -> foreign 904 < 1024 -> ignored.
        // GPU 1: NVML has not seen ours yet (500 used) -> foreign 0 after noise -> 2048.
        // GPU 2: 3000 MiB of someone else's.
        let nvml = BTreeMap::from([(0, 5000), (1, 500), (2, 3000)]);
        apply_use(&mut n, &ours, &nvml);
        assert_eq!((n.gpus[0].milli_used, n.gpus[0].mem_used_mib), (250, 4096));
        assert_eq!(n.gpus[1].mem_used_mib, 2048);
        assert_eq!(n.gpus[2].mem_used_mib, 3000);
    }
}
