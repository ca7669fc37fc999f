//! GPU inventory: what GPUs a node has and how they are used right now.
//!
//! [`GpuInventory`] hides the hardware: [`nvml::NvmlInventory`] reads the NVIDIA driver
//! through NVML (loaded at run time), [`simulated::SimulatedInventory`] reads a description
//! file and models usage from the pods bound to the node. Both produce an
//! [`InventorySnapshot`] whose GPUs are already in the published `GpuNode` shape
//! ([`autoglm_api::GpuStatus`]), so the publisher and the device plugin never know which one
//! they talk to — except through [`InventorySnapshot::source`], which every published object
//! carries.

pub mod convert;
pub mod health;
pub mod nvml;
pub mod simulated;

use autoglm_api::{GpuStatus, InventorySource};

use crate::allocations::PodAllocation;

/// Errors reading a GPU inventory.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The NVML library (libnvidia-ml.so.1, shipped with the NVIDIA driver) could not be
    /// loaded or initialised: no driver on this machine, or the container lacks it.
    #[error(
        "failed to initialise NVML: {source}; is the NVIDIA driver installed and \
         libnvidia-ml.so.1 visible to this process? Use --inventory simulated on machines \
         without GPUs"
    )]
    NvmlUnavailable {
        /// The NVML error.
        source: ::nvml_wrapper::error::NvmlError,
    },
    /// An NVML query failed.
    #[error("failed to read {field} of GPU {index} through NVML: {source}")]
    NvmlQuery {
        /// GPU index (NVML enumeration order).
        index: u32,
        /// What was being read (e.g. "uuid").
        field: &'static str,
        /// The NVML error.
        source: ::nvml_wrapper::error::NvmlError,
    },
    /// The simulated inventory file could not be read.
    #[error("failed to read simulated inventory {path}: {source}")]
    ReadConfig {
        /// File path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The simulated inventory file is not valid YAML/JSON of the expected shape.
    #[error("failed to parse simulated inventory {path}: {source}")]
    ParseConfig {
        /// File path.
        path: String,
        /// The YAML error (YAML is a superset of JSON, so JSON files parse too).
        source: serde_yaml::Error,
    },
    /// The simulated inventory file breaks a rule (e.g. `gpus[0].memoryMiB must be > 0`).
    #[error("invalid simulated inventory {path}: {field} {rule}")]
    InvalidConfig {
        /// File path.
        path: String,
        /// Field path inside the file (e.g. `nodes.node-a.gpus[1].count`).
        field: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// One reading of a node's GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct InventorySnapshot {
    /// `nvml` or `simulated`; copied to `GpuNode.status.source`.
    pub source: InventorySource,
    /// NVIDIA driver version, when known.
    pub driver_version: Option<String>,
    /// CUDA driver API version as `major.minor`, when known.
    pub cuda_version: Option<String>,
    /// GPUs ordered by index, with `allocations` filled from the pods bound to the node.
    pub gpus: Vec<GpuStatus>,
}

impl InventorySnapshot {
    /// GPU memory free on the node in MiB, summed over healthy GPUs (unhealthy GPUs take no
    /// new work, so their free memory is not offered).
    #[must_use]
    pub fn free_memory_mib(&self) -> i64 {
        self.gpus
            .iter()
            .filter(|g| g.health.status == autoglm_api::HealthStatus::Healthy)
            .map(|g| g.memory_free_mib)
            .sum()
    }
}

/// A source of GPU inventory for one node.
///
/// `snapshot` is synchronous and may block for a few milliseconds per GPU (NVML queries);
/// async callers run it on a blocking thread.
pub trait GpuInventory: Send + Sync {
    /// Where the figures come from.
    fn source(&self) -> InventorySource;

    /// Reads the node's GPUs now. `allocations` are the GPU assignments of the pods bound to
    /// this node: each GPU's `allocations` list is built from them, and the simulated
    /// inventory also derives memory use and utilization from them.
    ///
    /// # Errors
    /// [`InventoryError::NvmlQuery`] when a GPU cannot be read at all.
    fn snapshot(&self, allocations: &[PodAllocation]) -> Result<InventorySnapshot, InventoryError>;
}
