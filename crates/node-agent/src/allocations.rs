//! GPU allocations of the pods bound to this node, read from the controller's
//! `autoglm.io/gpu-assignment` annotation.
//!
//! The node agent watches the pods whose `spec.nodeName` is its node. Each non-terminated pod
//! with a valid assignment annotation becomes a [`PodAllocation`]; the inventory turns those
//! into each GPU's `allocations` list (and the simulated inventory into its memory use), and
//! the device plugin uses them to hand a container the GPU it was placed on.

use autoglm_api::{GpuAllocation, GpuAssignment, GpuStatus, wellknown};
use k8s_openapi::api::core::v1::Pod;

/// One pod's GPU assignment on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAllocation {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub uid: String,
    /// The owning InferenceJob (label `autoglm.io/job`), if any.
    pub job: Option<String>,
    /// When the pod was created (RFC 3339), used to order pending pods.
    pub created: Option<String>,
    /// Whether the pod has already started containers (its devices are then allocated).
    pub started: bool,
    /// The controller's assignment.
    pub assignment: GpuAssignment,
}

impl PodAllocation {
    /// Reads a pod. `None` for pods without a (valid) assignment annotation and for pods that
    /// have terminated (phase Succeeded or Failed), whose GPU share is free again.
    #[must_use]
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) || meta.deletion_timestamp.is_some() {
            return None;
        }
        let raw = meta.annotations.as_ref()?.get(GpuAssignment::ANNOTATION)?;
        let assignment = match GpuAssignment::from_annotation(raw) {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(
                    pod = meta.name.as_deref().unwrap_or_default(),
                    %error,
                    "ignoring pod with an invalid GPU assignment"
                );
                return None;
            }
        };
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state
                        .as_ref()
                        .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
                })
            });
        Some(Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            pod: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            job: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(wellknown::labels::JOB).cloned()),
            created: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            started,
            assignment,
        })
    }

    /// Whether the assignment names GPU `gpu` (by UUID, or by index when the UUID is empty).
    #[must_use]
    pub fn names(&self, gpu: &GpuStatus) -> bool {
        self.assignment
            .gpus
            .iter()
            .any(|a| a.uuid == gpu.uuid || (a.uuid.is_empty() && a.index == gpu.index))
    }

    /// The share of `gpu` this pod holds: memory in MiB and compute in milli-GPU.
    ///
    /// Whole GPUs hold the GPU's total memory and 1000 milli. A slice holds its `memoryMiB`
    /// and its `computeMilli`, or — when the controller gave none — a compute share in
    /// proportion to its memory (`memoryMiB * 1000 / totalMiB`, rounded down).
    #[must_use]
    pub fn share_of(&self, gpu: &GpuStatus) -> (i64, i32) {
        match self.assignment.memory_mib {
            None => (gpu.memory_total_mib, 1000),
            Some(mib) => {
                let milli = self.assignment.compute_milli.unwrap_or_else(|| {
                    if gpu.memory_total_mib > 0 {
                        i32::try_from(mib.saturating_mul(1000) / gpu.memory_total_mib)
                            .unwrap_or(1000)
                            .min(1000)
                    } else {
                        0
                    }
                });
                (mib, milli)
            }
        }
    }
}

/// The allocations list of one GPU: every pod whose assignment names it, ordered by
/// namespace and name.
#[must_use]
pub fn gpu_allocations(gpu: &GpuStatus, allocations: &[PodAllocation]) -> Vec<GpuAllocation> {
    let mut out: Vec<GpuAllocation> = allocations
        .iter()
        .filter(|a| a.names(gpu))
        .map(|a| {
            let (memory_mib, compute_milli) = a.share_of(gpu);
            GpuAllocation {
                namespace: a.namespace.clone(),
                pod: a.pod.clone(),
                job: a.job.clone(),
                memory_mib,
                compute_milli,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoglm_api::AssignedGpu;

    fn pod(annotation: &str, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "job-a-0", "namespace": "team", "uid": "u1",
                "labels": {"autoglm.io/job": "job-a"},
                "annotations": {"autoglm.io/gpu-assignment": annotation}
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "worker"}]},
            "status": {"phase": phase}
        }))
        .expect("valid pod")
    }

    fn gpu(index: i32, uuid: &str, total: i64) -> GpuStatus {
        GpuStatus {
            index,
            uuid: uuid.into(),
            product_name: "p".into(),
            memory_total_mib: total,
            memory_used_mib: 0,
            memory_free_mib: total,
            utilization_gpu_percent: None,
            utilization_memory_percent: None,
            compute_capability: None,
            mig_mode: Default::default(),
            mig_devices: vec![],
            temperature_c: None,
            power_w: None,
            health: Default::default(),
            allocations: vec![],
        }
    }

    #[test]
    fn reads_a_slice_assignment() {
        let a = PodAllocation::from_pod(&pod(
            r#"{"node":"node-a","gpus":[{"index":1,"uuid":"SIM-1"}],"memoryMiB":20480}"#,
            "Pending",
        ))
        .expect("allocation");
        assert_eq!(a.job.as_deref(), Some("job-a"));
        assert_eq!(
            a.assignment.gpus,
            vec![AssignedGpu {
                index: 1,
                uuid: "SIM-1".into()
            }]
        );
        // 20480 of 81920 MiB -> 250 milli when the controller gave no compute share.
        let g1 = gpu(1, "SIM-1", 81_920);
        assert_eq!(a.share_of(&g1), (20_480, 250));
        assert!(a.names(&g1));
        assert!(!a.names(&gpu(0, "SIM-0", 81_920)));
        let list = gpu_allocations(&g1, std::slice::from_ref(&a));
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].memory_mib, list[0].compute_milli), (20_480, 250));
    }

    #[test]
    fn whole_gpu_holds_all_memory_and_1000_milli() {
        let a = PodAllocation::from_pod(&pod(
            r#"{"node":"node-a","gpus":[{"index":0,"uuid":"SIM-0"}]}"#,
            "Running",
        ))
        .expect("allocation");
        assert_eq!(a.share_of(&gpu(0, "SIM-0", 40_960)), (40_960, 1000));
    }

    #[test]
    fn terminated_and_unannotated_pods_hold_nothing() {
        let ann = r#"{"node":"node-a","gpus":[{"index":0,"uuid":"SIM-0"}]}"#;
        assert!(PodAllocation::from_pod(&pod(ann, "Succeeded")).is_none());
        assert!(PodAllocation::from_pod(&pod(ann, "Failed")).is_none());
        assert!(PodAllocation::from_pod(&pod("not json", "Pending")).is_none());
    }
}
