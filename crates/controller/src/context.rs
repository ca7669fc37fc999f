//! State shared by the job reconciler and the binder.

use std::sync::Arc;

use autoglm_api::{GpuNode, InferenceJob};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Tunables of the controller (from the CLI).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `GpuNode` heartbeats older than this (seconds) make a node's GPUs unavailable; `None`
    /// disables the check (simulated inventories that never refresh).
    pub max_heartbeat_age_s: Option<i64>,
    /// Seconds a Node may stay NotReady before its replicas are rescheduled elsewhere.
    pub node_lost_after_s: i64,
    /// Worker image override (else `spec.workerImage`).
    pub worker_image: Option<String>,
    /// Bind calls in flight at once.
    pub bind_concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_heartbeat_age_s: None,
            node_lost_after_s: 60,
            worker_image: None,
            bind_concurrency: 32,
        }
    }
}

/// Everything a reconcile or placement pass needs.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder (events on InferenceJobs).
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cache of all pods.
    pub pods: Store<Pod>,
    /// Cache of Nodes.
    pub nodes: Store<Node>,
    /// Cache of GpuNodes.
    pub gpu_nodes: Store<GpuNode>,
    /// Cache of InferenceJobs.
    pub jobs: Store<InferenceJob>,
    /// Wakes the binder (pods, nodes, inventory or jobs changed).
    pub wake_binder: Arc<Notify>,
    /// Tunables.
    pub settings: Settings,
    /// True once every cache (jobs, pods, nodes, GpuNodes) has listed once; reconciles wait
    /// for it, or a missing pod in a half-filled cache would look like a lost replica.
    pub synced: Arc<std::sync::atomic::AtomicBool>,
}
