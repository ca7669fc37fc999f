//! The `GpuNode` kind: the live GPU inventory of one Kubernetes Node, published by the node
//! agent (from NVML, or from a simulated inventory file on machines without GPUs).
//!
//! Cluster-scoped, one object per Node, with the Node's name. The node agent owns
//! `status` (field manager `autoglm-node-agent`); the controller reads it to place replicas.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired settings of a node's GPUs, written by cluster operators.
// The printcolumn(...) groups repeat `type_ = ...`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "autoglm.io",
    version = "v1alpha1",
    kind = "GpuNode",
    plural = "gpunodes",
    singular = "gpunode",
    shortname = "gn",
    category = "autoglm",
    status = "GpuNodeStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "GpuNode is the live GPU inventory of one Kubernetes Node (same name as the Node), published by the Open-AutoGLM node agent from NVML or from a simulated inventory.",
    printcolumn(
        name = "GPUs",
        type_ = "integer",
        json_path = ".status.gpuCount",
        description = "Number of GPUs on the node"
    ),
    printcolumn(
        name = "Product",
        type_ = "string",
        json_path = ".status.product",
        description = "GPU product name"
    ),
    printcolumn(
        name = "Free MiB",
        type_ = "integer",
        json_path = ".status.freeMemoryMiB",
        description = "GPU memory free on the node, summed over GPUs, in MiB"
    ),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".status.source",
        description = "nvml or simulated"
    ),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.heartbeatTime",
        description = "Time of the node agent's last report"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeSpec {
    /// When true, the controller places no new replicas on this node's GPUs (running ones
    /// stay). Default false.
    #[serde(default)]
    pub unschedulable: bool,
}

/// GPU inventory of a node, written by the node agent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeStatus {
    /// Where the figures come from: `nvml` (real GPUs) or `simulated` (an inventory file;
    /// never real hardware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<InventorySource>,

    /// Time of the node agent's last report; the controller treats a node whose heartbeat
    /// is older than a few report periods as having no schedulable GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<Time>,

    /// Version of the node agent that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,

    /// NVIDIA driver version (e.g. "580.65.06"), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,

    /// CUDA driver API version (e.g. "13.0"), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,

    /// Number of GPUs on the node (the length of gpus).
    #[serde(default)]
    pub gpu_count: i32,

    /// Product name of the node's GPUs (of GPU 0 when they differ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,

    /// GPU memory free on the node, summed over healthy GPUs, in MiB.
    #[serde(default, rename = "freeMemoryMiB")]
    pub free_memory_mib: i64,

    /// One entry per GPU, by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["index"]))]
    pub gpus: Vec<GpuStatus>,
}

/// Where a GpuNode's figures come from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum InventorySource {
    /// Read from the NVIDIA driver through NVML.
    Nvml,
    /// Read from a simulated inventory file (test and demo clusters without GPUs).
    Simulated,
}

/// One GPU as the node agent sees it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuStatus {
    /// NVML index of the GPU on the node (0-based).
    pub index: i32,

    /// GPU UUID (GPU-... from NVML; SIM-... for simulated GPUs).
    pub uuid: String,

    /// Product name (e.g. "NVIDIA H100 80GB HBM3").
    pub product_name: String,

    /// Total GPU memory in MiB.
    #[serde(rename = "memoryTotalMiB")]
    pub memory_total_mib: i64,

    /// GPU memory in use in MiB (by any process, ours or not).
    #[serde(rename = "memoryUsedMiB")]
    pub memory_used_mib: i64,

    /// GPU memory free in MiB.
    #[serde(rename = "memoryFreeMiB")]
    pub memory_free_mib: i64,

    /// GPU (SM) utilization over the last sample period, percent 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_gpu_percent: Option<i32>,

    /// Memory-controller utilization over the last sample period, percent 0-100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_memory_percent: Option<i32>,

    /// CUDA compute capability as major.minor (e.g. "9.0" for H100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,

    /// Multi-Instance GPU mode.
    #[serde(default)]
    pub mig_mode: MigMode,

    /// MIG devices carved out of this GPU (when migMode is Enabled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mig_devices: Vec<MigDevice>,

    /// GPU temperature in degrees Celsius.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<i32>,

    /// Power draw in watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,

    /// Health of the GPU.
    #[serde(default)]
    pub health: GpuHealth,

    /// Replicas this GPU is allocated to (by the device plugin / controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocations: Vec<GpuAllocation>,
}

/// Multi-Instance GPU mode of a GPU.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MigMode {
    /// The GPU does not support MIG.
    #[default]
    Unsupported,
    /// MIG is supported but off.
    Disabled,
    /// MIG is on; the GPU is used through its MIG devices.
    Enabled,
}

/// A MIG device (GPU instance + compute instance).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MigDevice {
    /// MIG device UUID (MIG-...).
    pub uuid: String,
    /// MIG profile (e.g. "1g.10gb").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Memory of the MIG device in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
    /// GPU instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance_id: Option<i32>,
    /// Compute instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_instance_id: Option<i32>,
}

/// Health of a GPU.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GpuHealth {
    /// Healthy or Unhealthy.
    pub status: HealthStatus,
    /// Why the GPU is unhealthy (e.g. "XID 79: GPU has fallen off the bus").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Health status of a GPU.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthStatus {
    /// Usable.
    #[default]
    Healthy,
    /// Not usable; no new replicas are placed on it.
    Unhealthy,
}

/// A share of a GPU held by a replica pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GpuAllocation {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
    /// InferenceJob the pod belongs to, when it is a replica pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// GPU memory allocated in MiB (the whole GPU's memory for a whole-GPU allocation).
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
    /// Compute share allocated in milli-GPU (1000 for a whole GPU).
    pub compute_milli: i32,
}
