//! Device logic for GPUs: whole GPUs (`autoglm.io/gpu`) and 1 GiB memory slices
//! (`autoglm.io/gpu-memory-gib`), advertised from the inventory and handed out as the
//! controller assigned them.
//!
//! # Device IDs
//! - Whole GPU: the GPU's UUID (`GPU-…`, or `SIM-…` when simulated).
//! - Memory slice `k` of a GPU: `<uuid>-gib-<k>`, `k` in `0..ceil(totalMiB / 1024)`
//!   (at most 48 characters; the API allows 63). The ID names its GPU, so `Allocate`, which
//!   receives only device IDs, always knows which GPU the kubelet handed out.
//!
//! # How the controller's assignment is honoured
//! The controller writes `autoglm.io/gpu-assignment` (GPU UUIDs, memory MiB, compute milli) on
//! each replica pod when it binds it to this node; the kubelet knows nothing of it and never
//! tells a device plugin which pod it is allocating for. We close the gap in two steps:
//! 1. `GetPreferredAllocation` (advertised, so the kubelet asks us whenever it has a choice):
//!    the kubelet admits pods one at a time, so the pod being admitted is the oldest pod
//!    bound to this node that has not started, wants this many devices of this resource and
//!    has not been served yet. We answer with device IDs on *its assigned GPU* and remember
//!    the answer as a claim for that pod.
//! 2. `Allocate`: the device IDs are matched to a claim (or, when the kubelet did not ask —
//!    it skips the call when exactly the needed number of devices is free — to the oldest
//!    waiting pod whose assigned GPUs are the GPUs the IDs name). The container's
//!    environment follows that pod's assignment: visible devices = its GPUs, memory cap = its
//!    exact `memoryMiB`, compute share = its `computeMilli`. With no matching pod the
//!    environment is derived from the device IDs alone (slices x 1024 MiB).
//!
//! # Caveats
//! - Pod identification is a heuristic built on the kubelet admitting one pod at a time.
//!   Two pods bound at the same moment that want the same number of devices on the same
//!   resource may swap claims; both still get GPU(s) the controller chose for one of them, and
//!   the swap is logged. The kubelet's pod-resources API (`List`) reports device IDs per pod
//!   only after allocation, so it can confirm but not drive the choice.
//! - If the kubelet allocates IDs on a GPU other than the assigned one (it ignores a
//!   preferred allocation it cannot satisfy), the environment still follows the assignment
//!   (the controller's accounting is the source of truth) and a warning is logged; the
//!   kubelet's per-device accounting is then off until the pod ends.
//! - The same GPU is advertised both whole and as slices; the controller, as the only
//!   scheduler of replica pods, never places both on one GPU. Pods placed by other
//!   schedulers that request these resources are not protected against that.
//! - Memory caps and compute shares are advisory to the worker (`AUTOGLM_GPU_MEMORY_MIB`) and
//!   enforced by CUDA only under MPS (`CUDA_MPS_*` variables); there is no hardware isolation
//!   without MIG.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use autoglm_api::wellknown::resources::{
    GPU, GPU_MEMORY_GIB, MIB_PER_MEMORY_DEVICE, memory_slice_devices,
};
use autoglm_api::{GpuAssignment, GpuStatus, HealthStatus};
use tokio::sync::watch;

use super::{ContainerAllocation, DeviceLogic, DeviceState, PluginError, PreferredRequest};
use crate::allocations::PodAllocation;
use crate::inventory::InventorySnapshot;

/// Environment variable with the memory cap per visible GPU in MiB (read by the worker).
pub const ENV_MEMORY_MIB: &str = "AUTOGLM_GPU_MEMORY_MIB";
/// Environment variable with the compute share per visible GPU in milli-GPU.
pub const ENV_COMPUTE_MILLI: &str = "AUTOGLM_GPU_COMPUTE_MILLI";
/// Environment variable with the visible GPUs' UUIDs, comma-separated.
pub const ENV_GPU_UUIDS: &str = "AUTOGLM_GPU_UUIDS";

/// Which extended resource a plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `autoglm.io/gpu`: one device per GPU.
    WholeGpu,
    /// `autoglm.io/gpu-memory-gib`: one device per GiB of a GPU's memory.
    MemorySlice,
}

impl ResourceKind {
    /// The extended resource name.
    #[must_use]
    pub fn resource_name(self) -> &'static str {
        match self {
            Self::WholeGpu => GPU,
            Self::MemorySlice => GPU_MEMORY_GIB,
        }
    }

    /// The plugin's socket file name in the device-plugin directory.
    #[must_use]
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::WholeGpu => "autoglm-gpu.sock",
            Self::MemorySlice => "autoglm-gpu-memory.sock",
        }
    }

    /// Devices of this kind a pod with `assignment` requests (0 when it requests the other
    /// kind).
    #[must_use]
    pub fn devices_wanted(self, assignment: &GpuAssignment) -> usize {
        match (self, assignment.memory_mib) {
            (Self::WholeGpu, None) => assignment.gpus.len(),
            (Self::MemorySlice, Some(mib)) => {
                usize::try_from(memory_slice_devices(u64::try_from(mib).unwrap_or(0)))
                    .unwrap_or(usize::MAX)
            }
            _ => 0,
        }
    }
}

const SLICE_INFIX: &str = "-gib-";

/// Device ID of memory slice `k` of GPU `uuid`.
#[must_use]
pub fn slice_id(uuid: &str, k: u64) -> String {
    format!("{uuid}{SLICE_INFIX}{k}")
}

/// Splits a device ID into the GPU UUID and, for a memory slice, the slice number.
#[must_use]
pub fn parse_device_id(kind: ResourceKind, id: &str) -> Option<(&str, Option<u64>)> {
    match kind {
        ResourceKind::WholeGpu => Some((id, None)),
        ResourceKind::MemorySlice => {
            let (uuid, k) = id.rsplit_once(SLICE_INFIX)?;
            Some((uuid, Some(k.parse().ok()?)))
        }
    }
}

/// The devices of `kind` that `snapshot` offers: each GPU whole, or `ceil(totalMiB / 1024)`
/// slices of it (the same rounding as the controller's slice requests). Unhealthy GPUs' devices
/// are listed as unhealthy, so the kubelet stops handing them out but keeps their count.
#[must_use]
pub fn device_list(kind: ResourceKind, snapshot: &InventorySnapshot) -> Vec<DeviceState> {
    let mut out = Vec::new();
    for gpu in &snapshot.gpus {
        let healthy = gpu.health.status == HealthStatus::Healthy;
        match kind {
            ResourceKind::WholeGpu => out.push(DeviceState {
                id: gpu.uuid.clone(),
                healthy,
            }),
            ResourceKind::MemorySlice => {
                let n = memory_slice_devices(u64::try_from(gpu.memory_total_mib).unwrap_or(0));
                out.extend((0..n).map(|k| DeviceState {
                    id: slice_id(&gpu.uuid, k),
                    healthy,
                }));
            }
        }
    }
    out
}

/// GPU device logic for one [`ResourceKind`].
pub struct GpuDevices {
    kind: ResourceKind,
    inventory: watch::Receiver<Option<InventorySnapshot>>,
    pods: watch::Receiver<Vec<PodAllocation>>,
    devices: watch::Receiver<Vec<DeviceState>>,
    state: Mutex<ClaimState>,
}

#[derive(Default)]
struct ClaimState {
    /// Pod UID -> device IDs we proposed for it in GetPreferredAllocation.
    claims: HashMap<String, BTreeSet<String>>,
    /// Pod UIDs already allocated (their containers may not have started yet).
    allocated: HashSet<String>,
}

impl std::fmt::Debug for GpuDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDevices")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl GpuDevices {
    /// Device logic for `kind`, fed by the inventory and by the pods bound to this node.
    /// Spawns a task (on the current tokio runtime) that recomputes the device list whenever
    /// the inventory changes and publishes it only when it differs.
    #[must_use]
    pub fn spawn(
        kind: ResourceKind,
        inventory: watch::Receiver<Option<InventorySnapshot>>,
        pods: watch::Receiver<Vec<PodAllocation>>,
    ) -> Arc<Self> {
        let initial = inventory
            .borrow()
            .as_ref()
            .map(|s| device_list(kind, s))
            .unwrap_or_default();
        let (tx, devices) = watch::channel(initial);
        let mut rx = inventory.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let list = rx
                    .borrow_and_update()
                    .as_ref()
                    .map(|s| device_list(kind, s))
                    .unwrap_or_default();
                tx.send_if_modified(|current| {
                    let changed = *current != list;
                    if changed {
                        *current = list;
                    }
                    changed
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        Arc::new(Self {
            kind,
            inventory,
            pods,
            devices,
            state: Mutex::new(ClaimState::default()),
        })
    }

    fn unsatisfiable(&self, reason: impl Into<String>) -> PluginError {
        PluginError::Unsatisfiable {
            resource: self.kind.resource_name().to_owned(),
            reason: reason.into(),
        }
    }

    /// UUIDs of the GPUs an assignment names, in its order (UUIDs filled from the inventory
    /// by index when the assignment carries none).
    fn assigned_uuids(&self, a: &GpuAssignment) -> Vec<String> {
        let snapshot = self.inventory.borrow();
        a.gpus
            .iter()
            .map(|g| {
                if g.uuid.is_empty() {
                    snapshot
                        .as_ref()
                        .and_then(|s| s.gpus.iter().find(|x| x.index == g.index))
                        .map(|x| x.uuid.clone())
                        .unwrap_or_default()
                } else {
                    g.uuid.clone()
                }
            })
            .collect()
    }

    /// Pods bound here that have not started, want `size` devices of our kind and have not
    /// been allocated, oldest first.
    fn waiting_pods(&self, size: usize, state: &ClaimState) -> Vec<PodAllocation> {
        let pods = self.pods.borrow();
        let mut out: Vec<PodAllocation> = pods
            .iter()
            .filter(|p| {
                !p.started
                    && !state.allocated.contains(&p.uid)
                    && self.kind.devices_wanted(&p.assignment) == size
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (&a.created, &a.namespace, &a.pod).cmp(&(&b.created, &b.namespace, &b.pod))
        });
        out
    }

    /// Devices on the assigned GPU(s) of `a`, out of `available`, including `must_include`.
    fn devices_for(
        &self,
        a: &GpuAssignment,
        available: &BTreeSet<String>,
        must_include: &[String],
        size: usize,
    ) -> Option<Vec<String>> {
        let uuids = self.assigned_uuids(a);
        match self.kind {
            ResourceKind::WholeGpu => {
                let ok = uuids.len() == size
                    && uuids.iter().all(|u| available.contains(u))
                    && must_include.iter().all(|m| uuids.contains(m));
                ok.then_some(uuids)
            }
            ResourceKind::MemorySlice => {
                let uuid = uuids.first()?;
                let on_gpu =
                    |id: &String| parse_device_id(self.kind, id).is_some_and(|(u, _)| u == uuid);
                if !must_include.iter().all(on_gpu) {
                    return None;
                }
                let mut chosen: Vec<String> = must_include.to_vec();
                let mut rest: Vec<&String> = available
                    .iter()
                    .filter(|id| on_gpu(id) && !chosen.contains(id))
                    .collect();
                rest.sort_by_key(|id| parse_device_id(self.kind, id).and_then(|(_, k)| k));
                chosen.extend(
                    rest.into_iter()
                        .take(size.saturating_sub(chosen.len()))
                        .cloned(),
                );
                (chosen.len() == size).then_some(chosen)
            }
        }
    }

    /// Choice without an assignment: must-include first, then whole GPUs in order, or slices
    /// packed onto the GPU with the fewest free slices that still fits the rest (best fit),
    /// spilling over GPUs only when none fits.
    fn fallback(&self, req: &PreferredRequest) -> Result<Vec<String>, PluginError> {
        let mut chosen: Vec<String> = req.must_include.clone();
        let rest: Vec<&String> = req
            .available
            .iter()
            .filter(|id| !chosen.contains(id))
            .collect();
        let need = req.size.saturating_sub(chosen.len());
        match self.kind {
            ResourceKind::WholeGpu => chosen.extend(rest.into_iter().take(need).cloned()),
            ResourceKind::MemorySlice => {
                let mut by_gpu: BTreeMap<&str, Vec<(u64, &String)>> = BTreeMap::new();
                for id in rest {
                    if let Some((uuid, Some(k))) = parse_device_id(self.kind, id) {
                        by_gpu.entry(uuid).or_default().push((k, id));
                    }
                }
                for list in by_gpu.values_mut() {
                    list.sort();
                }
                let mut gpus: Vec<(&str, Vec<(u64, &String)>)> = by_gpu.into_iter().collect();
                // Best fit: the smallest free count that holds `need`; else largest first.
                gpus.sort_by_key(|(uuid, list)| (list.len() < need, list.len(), *uuid));
                if gpus.first().is_some_and(|(_, l)| l.len() < need) {
                    gpus.sort_by_key(|(uuid, list)| (std::cmp::Reverse(list.len()), *uuid));
                }
                let mut left = need;
                for (_, list) in gpus {
                    for (_, id) in list.into_iter().take(left) {
                        chosen.push(id.clone());
                        left -= 1;
                    }
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        if chosen.len() < req.size {
            return Err(self.unsatisfiable(format!(
                "{} devices wanted, {} available",
                req.size,
                req.available.len()
            )));
        }
        chosen.truncate(req.size);
        Ok(chosen)
    }

    /// The container environment for `uuids` (visible GPUs) and a share.
    fn env(
        uuids: &[String],
        memory_mib: Option<i64>,
        compute_milli: i32,
        slice: bool,
    ) -> ContainerAllocation {
        let list = uuids.join(",");
        let mut envs = BTreeMap::from([
            ("NVIDIA_VISIBLE_DEVICES".to_owned(), list.clone()),
            ("CUDA_VISIBLE_DEVICES".to_owned(), list.clone()),
            (ENV_GPU_UUIDS.to_owned(), list),
            (ENV_COMPUTE_MILLI.to_owned(), compute_milli.to_string()),
        ]);
        if let Some(mib) = memory_mib {
            envs.insert(ENV_MEMORY_MIB.to_owned(), mib.to_string());
        }
        if slice {
            // MPS reads these when an MPS control daemon serves the GPU; without MPS they
            // are inert. Percentage rounded up so a share never becomes 0 %.
            let percent = ((compute_milli + 9) / 10).clamp(1, 100);
            envs.insert(
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".to_owned(),
                percent.to_string(),
            );
            if let Some(mib) = memory_mib {
                envs.insert(
                    "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".to_owned(),
                    format!("0={mib}M"),
                );
            }
        }
        ContainerAllocation {
            envs,
            annotations: BTreeMap::new(),
        }
    }

    fn gpu(&self, uuid: &str) -> Option<GpuStatus> {
        self.inventory
            .borrow()
            .as_ref()
            .and_then(|s| s.gpus.iter().find(|g| g.uuid == uuid).cloned())
    }
}

impl DeviceLogic for GpuDevices {
    fn resource_name(&self) -> &str {
        self.kind.resource_name()
    }

    fn devices(&self) -> watch::Receiver<Vec<DeviceState>> {
        self.devices.clone()
    }

    fn preferred_allocation(&self, req: &PreferredRequest) -> Result<Vec<String>, PluginError> {
        let available: BTreeSet<String> = req.available.iter().cloned().collect();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let pods = self.waiting_pods(req.size, &state);
        for pod in pods.iter().filter(|p| !state.claims.contains_key(&p.uid)) {
            if let Some(ids) =
                self.devices_for(&pod.assignment, &available, &req.must_include, req.size)
            {
                tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.pod), devices = ?ids, "preferring the assigned GPU");
                state
                    .claims
                    .insert(pod.uid.clone(), ids.iter().cloned().collect());
                return Ok(ids);
            }
        }
        drop(state);
        self.fallback(req)
    }

    fn allocate(&self, device_ids: &[String]) -> Result<ContainerAllocation, PluginError> {
        // Every ID must be one we advertise; collect the GPUs they name, in ID order.
        let known: HashSet<String> = self.devices.borrow().iter().map(|d| d.id.clone()).collect();
        let mut named: Vec<String> = Vec::new();
        for id in device_ids {
            let parsed = parse_device_id(self.kind, id).filter(|_| known.contains(id));
            let Some((uuid, _)) = parsed else {
                return Err(PluginError::UnknownDevice {
                    id: id.clone(),
                    resource: self.kind.resource_name().to_owned(),
                });
            };
            if !named.iter().any(|u| u == uuid) {
                named.push(uuid.to_owned());
            }
        }
        let requested: BTreeSet<String> = device_ids.iter().cloned().collect();

        // Which pod is this? A claim with exactly these IDs, else the oldest waiting pod
        // assigned to exactly these GPUs.
        let pod = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let pods = self.waiting_pods(device_ids.len(), &state);
            let claimed = state
                .claims
                .iter()
                .find(|(_, ids)| **ids == requested)
                .map(|(uid, _)| uid.clone());
            let pod = match claimed {
                Some(uid) => {
                    state.claims.remove(&uid);
                    pods.into_iter().find(|p| p.uid == uid)
                }
                None => pods.into_iter().find(|p| {
                    !state.claims.contains_key(&p.uid) && {
                        let mut a = self.assigned_uuids(&p.assignment);
                        let mut n = named.clone();
                        a.sort();
                        n.sort();
                        a == n
                    }
                }),
            };
            if let Some(p) = &pod {
                state.allocated.insert(p.uid.clone());
            }
            // Forget pods that are gone or running (keeps both sets bounded).
            let live: HashSet<String> = self
                .pods
                .borrow()
                .iter()
                .filter(|p| !p.started)
                .map(|p| p.uid.clone())
                .collect();
            state.allocated.retain(|uid| live.contains(uid));
            state.claims.retain(|uid, _| live.contains(uid));
            pod
        };

        let slice = self.kind == ResourceKind::MemorySlice;
        match pod {
            Some(p) => {
                let uuids = self.assigned_uuids(&p.assignment);
                let mut sorted_named = named.clone();
                let mut sorted_assigned = uuids.clone();
                sorted_named.sort();
                sorted_assigned.sort();
                if sorted_named != sorted_assigned {
                    tracing::warn!(
                        pod = %format!("{}/{}", p.namespace, p.pod),
                        kubelet_gave = ?named,
                        assigned = ?uuids,
                        "the kubelet allocated devices on other GPUs than the controller assigned; following the assignment"
                    );
                }
                let memory = match p.assignment.memory_mib {
                    Some(mib) => Some(mib),
                    None => uuids
                        .iter()
                        .filter_map(|u| self.gpu(u))
                        .map(|g| g.memory_total_mib)
                        .min(),
                };
                let compute = match (p.assignment.memory_mib, p.assignment.compute_milli) {
                    (None, _) => 1000,
                    (Some(_), Some(milli)) => milli,
                    (Some(_), None) => {
                        let gpu = uuids.first().and_then(|u| self.gpu(u));
                        p.share_of(gpu.as_ref().unwrap_or(&placeholder_gpu())).1
                    }
                };
                tracing::info!(pod = %format!("{}/{}", p.namespace, p.pod), "allocating as assigned");
                Ok(Self::env(&uuids, memory, compute, slice))
            }
            None => {
                tracing::info!(devices = ?device_ids, "no waiting pod matches; allocating from device IDs");
                if slice {
                    let n = i64::try_from(device_ids.len()).unwrap_or(i64::MAX);
                    let mib = n.saturating_mul(MIB_PER_MEMORY_DEVICE as i64);
                    let total = named
                        .first()
                        .and_then(|u| self.gpu(u))
                        .map(|g| g.memory_total_mib);
                    let milli = match total {
                        Some(t) if t > 0 => {
                            i32::try_from((mib * 1000 / t).min(1000)).unwrap_or(1000)
                        }
                        _ => 0,
                    };
                    Ok(Self::env(&named, Some(mib), milli, true))
                } else {
                    let memory = named
                        .iter()
                        .filter_map(|u| self.gpu(u))
                        .map(|g| g.memory_total_mib)
                        .min();
                    Ok(Self::env(&named, memory, 1000, false))
                }
            }
        }
    }
}

/// A GPU of unknown size, for share computations when the inventory lacks the GPU: a slice
/// then gets compute 0 (no share can be derived).
fn placeholder_gpu() -> GpuStatus {
    GpuStatus {
        index: -1,
        uuid: String::new(),
        product_name: String::new(),
        memory_total_mib: 0,
        memory_used_mib: 0,
        memory_free_mib: 0,
        utilization_gpu_percent: None,
        utilization_memory_percent: None,
        compute_capability: None,
        mig_mode: Default::default(),
        mig_devices: Vec::new(),
        temperature_c: None,
        power_w: None,
        health: Default::default(),
        allocations: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoglm_api::InventorySource;

    fn snapshot(totals: &[i64]) -> InventorySnapshot {
        InventorySnapshot {
            source: InventorySource::Simulated,
            driver_version: None,
            cuda_version: None,
            gpus: totals
                .iter()
                .enumerate()
                .map(|(i, t)| GpuStatus {
                    index: i32::try_from(i).expect("small"),
                    uuid: format!("GPU-{i}"),
                    memory_total_mib: *t,
                    memory_free_mib: *t,
                    ..placeholder_gpu()
                })
                .collect(),
        }
    }

    #[test]
    fn ids_name_their_gpu() {
        assert_eq!(slice_id("GPU-a", 7), "GPU-a-gib-7");
        assert_eq!(
            parse_device_id(ResourceKind::MemorySlice, "GPU-a-gib-7"),
            Some(("GPU-a", Some(7)))
        );
        assert_eq!(parse_device_id(ResourceKind::MemorySlice, "GPU-a"), None);
        assert_eq!(
            parse_device_id(ResourceKind::MemorySlice, "GPU-a-gib-x"),
            None
        );
        assert_eq!(
            parse_device_id(ResourceKind::WholeGpu, "GPU-a"),
            Some(("GPU-a", None))
        );
        // The longest ID for an 80 GiB GPU fits the API's 63 characters.
        assert!(slice_id("GPU-fef8089b-4820-abfc-e83e-94318197576e", 79).len() <= 63);
    }

    #[test]
    fn slices_round_up_to_whole_gib() {
        // 81559 MiB = 79.65 GiB -> 80 slices; 15360 MiB = 15 GiB -> 15.
        let list = device_list(ResourceKind::MemorySlice, &snapshot(&[81_559, 15_360]));
        assert_eq!(list.len(), 95);
        assert_eq!(list[79].id, "GPU-0-gib-79");
        assert_eq!(list[80].id, "GPU-1-gib-0");
        assert_eq!(
            device_list(ResourceKind::WholeGpu, &snapshot(&[1, 2])).len(),
            2
        );
    }

    #[test]
    fn devices_wanted_by_assignment_kind() {
        let a = |mib: Option<i64>, n: usize| GpuAssignment {
            node: "n".into(),
            gpus: (0..n)
                .map(|i| autoglm_api::AssignedGpu {
                    index: i32::try_from(i).expect("small"),
                    uuid: format!("GPU-{i}"),
                })
                .collect(),
            memory_mib: mib,
            compute_milli: None,
        };
        assert_eq!(ResourceKind::WholeGpu.devices_wanted(&a(None, 2)), 2);
        assert_eq!(ResourceKind::MemorySlice.devices_wanted(&a(None, 2)), 0);
        assert_eq!(
            ResourceKind::MemorySlice.devices_wanted(&a(Some(5000), 1)),
            5
        );
        assert_eq!(ResourceKind::WholeGpu.devices_wanted(&a(Some(5000), 1)), 0);
    }

    #[tokio::test]
    async fn fallback_packs_slices_onto_the_best_fitting_gpu() {
        let (_inv_tx, inv) = watch::channel(Some(snapshot(&[8192, 8192, 8192])));
        let (_pods_tx, pods) = watch::channel(Vec::new());
        let d = GpuDevices::spawn(ResourceKind::MemorySlice, inv, pods);
        // Free: GPU-0 has 6 slices, GPU-1 has 3, GPU-2 has 8. Wanting 3: GPU-1 (best fit).
        let available: Vec<String> = (2..8)
            .map(|k| slice_id("GPU-0", k))
            .chain((5..8).map(|k| slice_id("GPU-1", k)))
            .chain((0..8).map(|k| slice_id("GPU-2", k)))
            .collect();
        let req = |size| PreferredRequest {
            available: available.clone(),
            must_include: vec![],
            size,
        };
        assert_eq!(
            d.preferred_allocation(&req(3)).expect("choice"),
            vec![
                slice_id("GPU-1", 5),
                slice_id("GPU-1", 6),
                slice_id("GPU-1", 7)
            ]
        );
        // Wanting 7: only GPU-2 holds 7.
        let seven = d.preferred_allocation(&req(7)).expect("choice");
        assert!(seven.iter().all(|id| id.starts_with("GPU-2-")), "{seven:?}");
        // Wanting 10: no GPU holds 10; spill from the largest (GPU-2: 8) then GPU-0 (2).
        let ten = d.preferred_allocation(&req(10)).expect("choice");
        assert_eq!(ten.iter().filter(|id| id.starts_with("GPU-2-")).count(), 8);
        assert_eq!(ten.iter().filter(|id| id.starts_with("GPU-0-")).count(), 2);
        // Wanting more than available fails with a clear error.
        let err = d.preferred_allocation(&req(18)).expect_err("too many");
        assert_eq!(
            err.to_string(),
            "failed to choose devices for resource autoglm.io/gpu-memory-gib: 18 devices wanted, 17 available"
        );
    }
}
