//! The `InferenceJob` kind: a batch of model-inference work over an input dataset, split
//! into `replicas` shards, each shard run by one worker pod on a GPU (whole or a slice).
//!
//! Admission rules live in the schema (OpenAPI bounds, enums, patterns and CEL
//! `x-kubernetes-validations`), so `kubectl apply` rejects a bad job with a message that
//! names the field. Rules that need other objects (does a dependency exist, is there a
//! cycle) are the controller's job and surface as conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::wellknown;

/// CEL rule for a data location: non-empty and one of the schemes `object_store` and the
/// worker understand.
const URI_RULE: &str = "self.matches('^(file|s3|gs|az|http|https)://.+$')";
const URI_MESSAGE: &str =
    "must be a URI with scheme file://, s3://, gs://, az://, http:// or https:// and a path";

/// DNS-1123 subdomain, the rule Kubernetes applies to object names.
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// An `InferenceJob` runs a TorchScript model over every item of an input dataset and
/// writes one output row per item. The input is split into `spec.replicas` shards; each
/// shard runs in its own worker pod on the GPU (or GPU slice) described by
/// `spec.resources`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "autoglm.io",
    version = "v1alpha1",
    kind = "InferenceJob",
    plural = "inferencejobs",
    singular = "inferencejob",
    shortname = "ij",
    category = "autoglm",
    namespaced,
    status = "InferenceJobStatus",
    derive = "PartialEq",
    doc = "An InferenceJob runs a TorchScript model over every item of an input dataset, split into spec.replicas shards, each shard in a worker pod on a whole GPU or a GPU slice.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase of the job"
    ),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progress",
        description = "Items done / items total"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Running replicas / desired replicas"
    ),
    printcolumn(
        name = "Items/s",
        type_ = "number",
        json_path = ".status.itemsPerSecond",
        description = "Measured throughput over all replicas, items per second",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        description = "Why the job waits or failed",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new(
        "!has(self.spec.dependsOn) || !self.spec.dependsOn.exists(d, d == self.metadata.name)"
    )
    .message("a job cannot depend on itself")
    .field_path(".spec.dependsOn")
)]
#[x_kube(validation = Rule::new("!has(self.priority) || !has(self.priorityClassName)")
    .message("set either priority or priorityClassName, not both")
    .field_path(".priorityClassName"))]
#[serde(rename_all = "camelCase")]
pub struct InferenceJobSpec {
    /// The model to run: TorchScript file, tokenizer and task. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("model is immutable"))]
    pub model: ModelSpec,

    /// The input dataset, one item per line. Immutable (shards and checkpoints refer to it).
    #[x_kube(validation = Rule::new("self == oldSelf").message("input is immutable"))]
    pub input: InputSpec,

    /// Where the outputs go: one file per replica under this location.
    pub output: OutputSpec,

    /// Number of replicas (shards) the input is split into; each replica is one worker pod.
    /// Immutable: checkpoints are per shard. Default 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicas is immutable"))]
    pub replicas: i32,

    /// What each replica needs: a GPU (whole GPUs or a slice), CPU and memory.
    #[serde(default)]
    pub resources: ReplicaResources,

    /// Dynamic batching bounds for the worker.
    #[serde(default)]
    pub batching: BatchingSpec,

    /// Scheduling priority as a number; higher runs first. Mutually exclusive with
    /// priorityClassName. When neither is set the job gets priority 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1_000_000_000, max = 1_000_000_000))]
    pub priority: Option<i32>,

    /// Name of a PriorityClass whose value is this job's priority (also set on the replica
    /// pods). Mutually exclusive with priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    pub priority_class_name: Option<String>,

    /// Optional deadline (RFC 3339, e.g. 2026-12-01T00:00:00Z). The scheduler favours jobs
    /// close to their deadline; a job not complete by then fails with reason
    /// DeadlineExceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,

    /// Names of InferenceJobs in the same namespace that must complete before this one
    /// starts. The job stays Blocked until then, and fails if one of them fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub depends_on: Vec<String>,

    /// What to do when a replica fails (pod lost, worker error).
    #[serde(default)]
    pub retry_policy: RetryPolicy,

    /// How often workers commit a checkpoint, by items and/or by time. A lost replica
    /// resumes from its last checkpoint with no item lost or written twice.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,

    /// Bad input lines (unparsable JSON, missing text field) tolerated per replica before
    /// the replica fails. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_failed_items: i64,

    /// Placement preferences for the replicas.
    #[serde(default)]
    pub placement: Placement,

    /// When true, no replica pods exist (running ones are deleted; progress is kept in the
    /// checkpoints). Lets queueing systems such as Kueue hold the job. Default false.
    #[serde(default)]
    pub suspend: bool,

    /// Container image of the inference worker. Defaults to the worker built with this
    /// operator version.
    #[serde(default = "default_worker_image")]
    #[schemars(length(min = 1, max = 512))]
    pub worker_image: String,
}

fn default_replicas() -> i32 {
    1
}

fn default_worker_image() -> String {
    wellknown::DEFAULT_WORKER_IMAGE.to_owned()
}

/// The model a job runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.task == 'classification' || !has(self.labels)")
    .message("labels are only allowed when task is classification")
    .field_path(".labels"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// URI of the TorchScript model file (e.g. s3://models/minilm.pt, file:///models/m.pt).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(URI_RULE).message(URI_MESSAGE))]
    pub uri: String,

    /// URI of the HuggingFace tokenizer.json used to tokenize the input text.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(URI_RULE).message(URI_MESSAGE))]
    pub tokenizer_uri: String,

    /// What the model computes: `embedding` (one vector per item) or `classification`
    /// (one label and score per item).
    pub task: Task,

    /// Class labels in the order of the model's logits; only for task classification.
    /// Without them the output carries the class index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), inner(length(min = 1, max = 256)))]
    pub labels: Option<Vec<String>>,
}

/// What a model computes for each item.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One embedding vector (list of float32) per item.
    Embedding,
    /// One class label and its probability per item.
    Classification,
}

/// The input dataset.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// URI of the input file (e.g. s3://corpus/part-0000.jsonl, file:///data/in.jsonl).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(URI_RULE).message(URI_MESSAGE))]
    pub uri: String,

    /// File format; only `jsonl` (one JSON object per line) today.
    #[serde(default)]
    pub format: InputFormat,

    /// JSON field holding the text to run the model on. Default `text`.
    #[serde(default = "default_text_field")]
    #[schemars(length(min = 1, max = 256))]
    pub text_field: String,

    /// Optional JSON field holding a stable item id, copied to the output; without it the
    /// line number is the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub id_field: Option<String>,
}

fn default_text_field() -> String {
    "text".to_owned()
}

/// Input file format.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// JSON Lines: one JSON object per line.
    #[default]
    Jsonl,
}

/// Where outputs are written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// URI of the output directory; replica i writes part-<i>.<format> under it.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(URI_RULE).message(URI_MESSAGE))]
    pub uri: String,

    /// Output file format: `parquet` (default) or `jsonl`.
    #[serde(default)]
    pub format: OutputFormat,
}

/// Output file format.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Apache Parquet, one row group per checkpoint.
    #[default]
    Parquet,
    /// JSON Lines.
    Jsonl,
}

/// What one replica needs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaResources {
    /// GPU per replica: either whole GPUs (count; extended resource autoglm.io/gpu) or a
    /// slice of one GPU (memoryMiB with an optional computeMilli; extended resource
    /// autoglm.io/gpu-memory-gib, 1 device per GiB, the exact MiB cap enforced through the
    /// pod's GPU assignment). Default: one whole GPU.
    #[serde(default)]
    pub gpu: GpuRequest,

    /// CPU request per replica (Kubernetes quantity, e.g. "2" or "500m"). Default "1".
    #[serde(default = "default_cpu")]
    pub cpu: Quantity,

    /// Memory request per replica (Kubernetes quantity, e.g. "4Gi"). Default "2Gi".
    #[serde(default = "default_memory")]
    pub memory: Quantity,
}

impl Default for ReplicaResources {
    fn default() -> Self {
        Self {
            gpu: GpuRequest::default(),
            cpu: default_cpu(),
            memory: default_memory(),
        }
    }
}

fn default_cpu() -> Quantity {
    Quantity("1".to_owned())
}

fn default_memory() -> Quantity {
    Quantity("2Gi".to_owned())
}

/// GPU need of one replica: whole GPUs, or a slice of one GPU.
///
/// Whole GPUs are requested as the extended resource `autoglm.io/gpu`; a slice as
/// `autoglm.io/gpu-memory-gib` (memoryMiB rounded up to GiB), with the exact MiB cap and
/// compute share carried in the pod's `autoglm.io/gpu-assignment` annotation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.count) != has(self.memoryMiB)")
        .message("set either count (whole GPUs) or memoryMiB (a GPU slice), exactly one of them"),
    validation = Rule::new("!has(self.computeMilli) || has(self.memoryMiB)")
        .message("computeMilli is only allowed with memoryMiB (a GPU slice)")
        .field_path(".computeMilli")
)]
#[serde(rename_all = "camelCase")]
pub struct GpuRequest {
    /// Whole GPUs per replica (1-16). Mutually exclusive with memoryMiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub count: Option<i32>,

    /// GPU memory of a slice in MiB (> 0, at most 1 TiB); the slice is one GPU shared with
    /// other replicas. Mutually exclusive with count.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub memory_mib: Option<i64>,

    /// Compute share of a slice in milli-GPU: 1000 is a whole GPU's compute, 250 a quarter
    /// (the unit of the Alibaba GPU-sharing trace's gpu_milli). Range 1-1000. Only with
    /// memoryMiB; absent means no compute reservation (best-effort time-slicing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub compute_milli: Option<i32>,

    /// GPU products a replica may run on, exactly (case-sensitive) as NVML names them in the
    /// `GpuNode` status (`status.product`, e.g. `NVIDIA A100-SXM4-80GB` or `Tesla T4`). Unset
    /// or empty: any GPU. At most 16 distinct names of 1-128 characters, not blank. A replica
    /// is placed only on nodes whose GPU type (that of their first GPU) is one of these; with
    /// the `binpack` policy, jobs that may run anywhere are kept off the types that pending
    /// type-limited jobs need (whole GPUs and slices with computeMilli).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 128), regex(pattern = r"\S")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub types: Vec<String>,
}

impl Default for GpuRequest {
    fn default() -> Self {
        Self {
            count: Some(1),
            memory_mib: None,
            compute_milli: None,
            types: Vec::new(),
        }
    }
}

/// Dynamic batching bounds: the worker grows batches up to maxBatchSize items and
/// maxBatchTokens tokens, waits at most maxDelayMs for a batch to fill, and shrinks batches
/// when the measured p99 latency exceeds targetP99LatencyMs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("!has(self.targetP99LatencyMs) || self.targetP99LatencyMs >= self.maxDelayMs")
    .message("targetP99LatencyMs must be at least maxDelayMs (a batch may wait maxDelayMs before it runs)")
    .field_path(".targetP99LatencyMs"))]
#[serde(rename_all = "camelCase")]
pub struct BatchingSpec {
    /// Largest batch in items (1-4096). Default 32.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_batch_size: i32,

    /// Longest time in milliseconds a batch waits to fill before it runs (0-60000; 0 runs
    /// whatever is queued at once). Default 10.
    #[serde(default = "default_max_delay_ms")]
    #[schemars(range(min = 0, max = 60_000))]
    pub max_delay_ms: i32,

    /// Target p99 latency of one batch in milliseconds (1-600000); the worker shrinks the
    /// batch size when exceeded. Unset: no latency target, batches grow to maxBatchSize.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600_000))]
    pub target_p99_latency_ms: Option<i32>,

    /// Token budget of one batch (sum of tokenized lengths, 1-1048576). Unset: no token
    /// bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub max_batch_tokens: Option<i32>,
}

impl Default for BatchingSpec {
    fn default() -> Self {
        Self {
            max_batch_size: default_max_batch_size(),
            max_delay_ms: default_max_delay_ms(),
            target_p99_latency_ms: None,
            max_batch_tokens: None,
        }
    }
}

fn default_max_batch_size() -> i32 {
    32
}

fn default_max_delay_ms() -> i32 {
    10
}

/// What happens when a replica fails.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// How many times a failed replica is restarted (from its last checkpoint) before the
    /// job fails (0-100). Default 3.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 100))]
    pub max_retries: i32,

    /// Exponential backoff between restarts of a replica.
    #[serde(default)]
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            backoff: Backoff::default(),
        }
    }
}

fn default_max_retries() -> i32 {
    3
}

/// Exponential backoff: the n-th restart (n from 0) waits
/// min(initialSeconds * 2^n, maxSeconds) seconds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.initialSeconds <= self.maxSeconds")
    .message("initialSeconds must be less than or equal to maxSeconds")
    .field_path(".initialSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the first restart, in seconds (1-86400). Default 10.
    #[serde(default = "default_backoff_initial")]
    #[schemars(range(min = 1, max = 86_400))]
    pub initial_seconds: i32,

    /// Upper bound of the delay, in seconds (1-86400). Default 300.
    #[serde(default = "default_backoff_max")]
    #[schemars(range(min = 1, max = 86_400))]
    pub max_seconds: i32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_seconds: default_backoff_initial(),
            max_seconds: default_backoff_max(),
        }
    }
}

fn default_backoff_initial() -> i32 {
    10
}

fn default_backoff_max() -> i32 {
    300
}

/// Checkpoint cadence: a worker commits its position and outputs after everyItems items or
/// everySeconds seconds, whichever comes first. At least one must be set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.everyItems) || has(self.everySeconds)")
    .message("set everyItems, everySeconds or both"))]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Commit a checkpoint after this many items (1-10000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub every_items: Option<i64>,

    /// Commit a checkpoint after this many seconds (1-86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86_400))]
    pub every_seconds: Option<i32>,
}

impl Default for CheckpointSpec {
    /// Every 1000 items or 60 seconds.
    fn default() -> Self {
        Self {
            every_items: Some(1000),
            every_seconds: Some(60),
        }
    }
}

/// Placement preferences.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// `binpack` (default): fill the fullest GPUs first, keeping whole GPUs free for large
    /// jobs. `spread`: put replicas on the emptiest GPUs and nodes.
    #[serde(default)]
    pub policy: PlacementPolicy,

    /// Only nodes with all these labels are considered (like a pod's nodeSelector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations copied to the replica pods; tainted nodes are considered only when
    /// tolerated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,
}

/// How replicas are placed over GPUs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlacementPolicy {
    /// Prefer the most-used GPUs that still fit (less fragmentation).
    #[default]
    Binpack,
    /// Prefer the least-used GPUs and nodes (less interference, more failure isolation).
    Spread,
}

/// Observed state of an InferenceJob, written by the controller.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceJobStatus {
    /// metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Lifecycle phase (a summary of the conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,

    /// Conditions of types Scheduled, Progressing, Complete, Failed and Blocked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// One entry per replica (shard), by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["index"]))]
    pub replicas: Vec<ReplicaStatus>,

    /// Number of replicas whose pod is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Display form of readyReplicas/spec.replicas, e.g. "2/2".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,

    /// Display form of the item totals, e.g. "1234/5000" ("1234/?" while the total is not
    /// known yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,

    /// Item counts summed over replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<ItemTotals>,

    /// When the first replica started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the job reached Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Throughput in items per second: while the job runs, the running replicas' measured
    /// rates summed; once it has finished, the run's average (items done / (completionTime -
    /// startTime)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_per_second: Option<f64>,

    /// Human-readable reason the job waits or failed (e.g. "no node has 20480 MiB free on
    /// one GPU; best: node-3 GPU 1 with 16384 MiB").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Lifecycle phase of an InferenceJob.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobPhase {
    /// Accepted; the controller has not acted on it yet.
    Pending,
    /// Waiting for the jobs in spec.dependsOn to complete (condition Blocked).
    Blocked,
    /// Ready to run, but no node has a feasible GPU slot for every replica yet; status.message
    /// says what is missing.
    Waiting,
    /// Every replica has a GPU slot and its pod is bound; pods are starting.
    Scheduled,
    /// Replicas are processing items (condition Progressing).
    Running,
    /// Every item was processed (condition Complete). Terminal.
    Succeeded,
    /// The job failed: retries exhausted, deadline exceeded, a dependency failed or too many
    /// bad items (condition Failed). Terminal.
    Failed,
    /// spec.suspend is true; no replica pods exist.
    Suspended,
}

impl JobPhase {
    /// True for Succeeded and Failed, the phases a job never leaves.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Item counts summed over replicas.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ItemTotals {
    /// Items processed and committed.
    pub items_done: i64,
    /// Items in the input, once every replica has counted its shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_total: Option<i64>,
    /// Bad input items skipped.
    #[serde(default)]
    pub items_failed: i64,
}

/// Observed state of one replica (shard).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Replica (shard) index, 0 to spec.replicas - 1.
    pub index: i32,

    /// Name of the current replica pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,

    /// Node the replica is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// GPUs assigned to the replica (one for a slice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<AssignedGpu>,

    /// GPU memory cap of a slice in MiB (absent for whole GPUs).
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,

    /// Compute share of a slice in milli-GPU (absent for whole GPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_milli: Option<i32>,

    /// Score of the chosen placement (higher is better; see the scheduler docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_score: Option<f64>,

    /// State of the replica.
    pub state: ReplicaState,

    /// Items processed and committed.
    #[serde(default)]
    pub items_done: i64,

    /// Items in this replica's shard, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_total: Option<i64>,

    /// Bad input items skipped.
    #[serde(default)]
    pub items_failed: i64,

    /// How many times the replica pod was recreated after a failure.
    #[serde(default)]
    pub restarts: i32,

    /// When the replica last committed a checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_time: Option<Time>,

    /// Why the replica waits or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A GPU assigned to a replica.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct AssignedGpu {
    /// GPU index on the node (NVML index).
    pub index: i32,
    /// GPU UUID (e.g. GPU-5f1c...; SIM-... for simulated GPUs).
    pub uuid: String,
}

/// State of one replica.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaState {
    /// Not placed yet (no feasible GPU slot, or dependencies pending).
    Pending,
    /// Placed and bound; the pod is starting.
    Scheduled,
    /// The worker is processing its shard.
    Running,
    /// Waiting for the backoff delay before the pod is recreated.
    BackingOff,
    /// The shard is fully processed.
    Succeeded,
    /// The replica failed and will not be retried.
    Failed,
}
