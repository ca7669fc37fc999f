//! Well-known names shared by the controller, the node agent, the device plugin and the
//! worker: API group, finalizer, field managers, scheduler name, labels, annotations,
//! extended resources, condition types and reasons.
//!
//! Every string here is part of the on-cluster contract: changing one is a breaking change
//! for objects already stored in a cluster.

/// API group of every Open-AutoGLM kind.
pub const GROUP: &str = "autoglm.io";

/// API version served (and stored) by the CRDs.
pub const VERSION: &str = "v1alpha1";

/// `apiVersion` value of Open-AutoGLM objects: `autoglm.io/v1alpha1`.
pub const API_VERSION: &str = "autoglm.io/v1alpha1";

/// Finalizer the controller puts on each `InferenceJob` so that it can release GPU
/// allocations and delete replica pods before the job disappears.
pub const FINALIZER: &str = "autoglm.io/cleanup";

/// Server-side apply field manager of the controller (job status, replica pods, bindings).
pub const CONTROLLER_FIELD_MANAGER: &str = "autoglm-controller";

/// Server-side apply field manager of the node agent (`GpuNode` status, node labels).
pub const NODE_AGENT_FIELD_MANAGER: &str = "autoglm-node-agent";

/// `spec.schedulerName` of replica pods. The default scheduler ignores these pods; the
/// controller binds them through the `pods/binding` subresource. The cluster autoscaler must
/// be started with `--bypassed-scheduler-names=autoglm-scheduler` to act on them.
pub const SCHEDULER_NAME: &str = "autoglm-scheduler";

/// Default worker container image, used when `spec.workerImage` is not set.
pub const DEFAULT_WORKER_IMAGE: &str =
    concat!("open-autoglm/autoglm-worker:", env!("CARGO_PKG_VERSION"));

/// Version of this API crate, reported by the node agent as `status.agentVersion`.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Labels on objects the operator creates.
pub mod labels {
    /// Name of the owning `InferenceJob`, on every replica pod (value: the job name).
    pub const JOB: &str = "autoglm.io/job";

    /// Replica (shard) index of a pod, `0..spec.replicas` as a decimal string.
    pub const REPLICA_INDEX: &str = "autoglm.io/replica-index";

    /// The standard `app.kubernetes.io/managed-by` label.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

    /// Value of [`MANAGED_BY`] on objects the controller creates.
    pub const MANAGED_BY_VALUE: &str = "autoglm-controller";

    /// GPU-feature-discovery style node label set by the node agent: product name of the
    /// node's GPUs with spaces replaced by `-` (e.g. `NVIDIA-H100-80GB-HBM3`).
    pub const GPU_PRODUCT: &str = "autoglm.io/gpu.product";

    /// Node label set by the node agent: number of GPUs on the node (decimal string).
    pub const GPU_COUNT: &str = "autoglm.io/gpu.count";

    /// Node label set by the node agent: memory of one GPU in MiB (decimal string, e.g.
    /// `81559`), as NVML reports the total.
    pub const GPU_MEMORY: &str = "autoglm.io/gpu.memory";
}

/// Annotations on objects the operator creates or reads.
pub mod annotations {
    /// On replica pods: the GPU assignment chosen by the controller, JSON of
    /// [`crate::GpuAssignment`]. The device plugin reads it in `Allocate` to hand the
    /// container the right devices and memory cap.
    pub const GPU_ASSIGNMENT: &str = "autoglm.io/gpu-assignment";

    /// On replica pods: the worker's progress, JSON of [`crate::ReplicaProgress`], patched by
    /// the worker onto its own pod and copied by the controller into the job status.
    pub const PROGRESS: &str = "autoglm.io/progress";

    /// The cluster autoscaler's annotation; replica pods carry `"true"` because workers
    /// checkpoint and resume, so evicting them loses at most one checkpoint interval.
    ///
    /// # Source
    /// Cluster autoscaler FAQ, "What types of pods can prevent CA from removing a node?".
    pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
}

/// Extended resources advertised by the device plugin and requested by replica pods.
pub mod resources {
    /// Whole GPUs: one device per physical GPU.
    pub const GPU: &str = "autoglm.io/gpu";

    /// GPU memory slices: one device per GiB of GPU memory. A slice request of `memoryMiB`
    /// asks for [`memory_slice_devices`]`(memoryMiB)` devices; the exact MiB cap travels in
    /// the [`GPU_ASSIGNMENT`](super::annotations::GPU_ASSIGNMENT) annotation.
    pub const GPU_MEMORY_GIB: &str = "autoglm.io/gpu-memory-gib";

    /// MiB of GPU memory represented by one [`GPU_MEMORY_GIB`] device (1 GiB = 1024 MiB).
    pub const MIB_PER_MEMORY_DEVICE: u64 = 1024;

    /// Number of [`GPU_MEMORY_GIB`] devices a slice of `memory_mib` MiB requests: the MiB
    /// rounded up to whole GiB (e.g. 1 MiB -> 1, 1024 -> 1, 1025 -> 2, 0 -> 0).
    #[must_use]
    pub const fn memory_slice_devices(memory_mib: u64) -> u64 {
        memory_mib.div_ceil(MIB_PER_MEMORY_DEVICE)
    }
}

/// `InferenceJob` condition types (`status.conditions[].type`).
pub mod conditions {
    /// True once every replica has a GPU slot and its pod is bound to a node.
    pub const SCHEDULED: &str = "Scheduled";
    /// True while replicas are running and items are being processed.
    pub const PROGRESSING: &str = "Progressing";
    /// True when every replica finished its shard; terminal.
    pub const COMPLETE: &str = "Complete";
    /// True when the job failed (retries exhausted, deadline exceeded, a dependency failed,
    /// too many bad items); terminal.
    pub const FAILED: &str = "Failed";
    /// True while the job waits for the jobs in `spec.dependsOn`.
    pub const BLOCKED: &str = "Blocked";
}

/// Condition reasons (PascalCase); the same strings are used as Event reasons.
pub mod reasons {
    /// Waiting for dependencies in `spec.dependsOn` to complete.
    pub const DEPENDENCIES_PENDING: &str = "DependenciesPending";
    /// A job in `spec.dependsOn` does not exist.
    pub const DEPENDENCY_NOT_FOUND: &str = "DependencyNotFound";
    /// A job in `spec.dependsOn` failed, so this job cannot run.
    pub const DEPENDENCY_FAILED: &str = "DependencyFailed";
    /// `spec.dependsOn` forms a cycle across jobs.
    pub const DEPENDENCY_CYCLE: &str = "DependencyCycle";
    /// All dependencies completed.
    pub const DEPENDENCIES_COMPLETE: &str = "DependenciesComplete";
    /// No node has a feasible GPU slot for a replica right now.
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// Every replica pod is bound to a node.
    pub const ALL_REPLICAS_BOUND: &str = "AllReplicasBound";
    /// Replicas are running.
    pub const REPLICAS_RUNNING: &str = "ReplicasRunning";
    /// Every replica processed its whole shard.
    pub const ALL_ITEMS_PROCESSED: &str = "AllItemsProcessed";
    /// A replica failed more than `spec.retryPolicy.maxRetries` times.
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    /// `spec.deadline` passed before the job completed.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// A replica hit more than `spec.maxFailedItems` bad input items.
    pub const TOO_MANY_FAILED_ITEMS: &str = "TooManyFailedItems";
    /// `spec.suspend` is true.
    pub const SUSPENDED: &str = "Suspended";
    /// The spec failed a check the API server cannot express.
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

#[cfg(test)]
mod tests {
    use super::resources::memory_slice_devices;

    #[test]
    fn memory_slice_devices_round_up_to_gib() {
        assert_eq!(memory_slice_devices(0), 0);
        assert_eq!(memory_slice_devices(1), 1);
        assert_eq!(memory_slice_devices(1024), 1);
        assert_eq!(memory_slice_devices(1025), 2);
        assert_eq!(memory_slice_devices(10 * 1024), 10);
        assert_eq!(memory_slice_devices(81_559), 80); // 79.65 GiB -> 80 devices
    }
}
