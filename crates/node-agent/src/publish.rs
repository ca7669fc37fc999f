//! Publishing the inventory: the node's `GpuNode` status and its GFD-style Node labels, both
//! through server-side apply with the node agent's field manager.
//!
//! # Guarantees
//! - Only objects named after this agent's own node are written: every function here takes
//!   the node name once, at construction, and builds object names from it. The API server
//!   enforces the same rule (see `deploy/validating-admission-policy.yaml`), because RBAC
//!   cannot tell one node's agent from another's when they share a ServiceAccount.
//! - The `GpuNode` spec is never owned by the agent: the object is created with an empty
//!   spec, so an operator's `spec.unschedulable` is never overwritten.
//! - Status writes force ownership of the status fields (the agent is their only writer).

use std::collections::BTreeMap;

use autoglm_api::wellknown::{self, labels};
use autoglm_api::{GpuNode, GpuNodeStatus};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::inventory::InventorySnapshot;
use crate::inventory::convert::product_label_value;

/// Errors publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Creating the GpuNode or applying its status failed.
    #[error("failed to apply GpuNode {node}: {source}")]
    ApplyGpuNode {
        /// Node (and GpuNode) name.
        node: String,
        /// The API error.
        source: kube::Error,
    },
    /// Applying the Node labels failed.
    #[error("failed to apply GPU labels to Node {node}: {source}")]
    ApplyNodeLabels {
        /// Node name.
        node: String,
        /// The API error.
        source: kube::Error,
    },
}

/// Default period between publications (s), also the heartbeat period.
pub const DEFAULT_PUBLISH_INTERVAL_SECS: u64 = 10;

/// The status the agent publishes for `snapshot`, with `heartbeat` as its report time.
#[must_use]
pub fn status(snapshot: &InventorySnapshot, heartbeat: Time) -> GpuNodeStatus {
    GpuNodeStatus {
        source: Some(snapshot.source),
        heartbeat_time: Some(heartbeat),
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        driver_version: snapshot.driver_version.clone(),
        cuda_version: snapshot.cuda_version.clone(),
        gpu_count: i32::try_from(snapshot.gpus.len()).unwrap_or(i32::MAX),
        product: snapshot.gpus.first().map(|g| g.product_name.clone()),
        free_memory_mib: snapshot.free_memory_mib(),
        gpus: snapshot.gpus.clone(),
    }
}

/// GFD-style labels for users' nodeSelectors: product (of GPU 0, label-safe), GPU count, and
/// memory of GPU 0 in MiB. A node without GPUs gets count `0` and no product/memory label.
#[must_use]
pub fn node_labels(snapshot: &InventorySnapshot) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([(
        labels::GPU_COUNT.to_owned(),
        snapshot.gpus.len().to_string(),
    )]);
    if let Some(g) = snapshot.gpus.first() {
        out.insert(
            labels::GPU_PRODUCT.to_owned(),
            product_label_value(&g.product_name),
        );
        out.insert(
            labels::GPU_MEMORY.to_owned(),
            g.memory_total_mib.to_string(),
        );
    }
    out
}

/// Writes one node's objects.
#[derive(Clone)]
pub struct Publisher {
    node: String,
    gpu_nodes: Api<GpuNode>,
    nodes: Api<Node>,
    params: PatchParams,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher for node `node`.
    #[must_use]
    pub fn new(client: kube::Client, node: &str) -> Self {
        Self {
            node: node.to_owned(),
            gpu_nodes: Api::all(client.clone()),
            nodes: Api::all(client),
            params: PatchParams::apply(wellknown::NODE_AGENT_FIELD_MANAGER).force(),
        }
    }

    /// The node this publisher writes for.
    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Ensures the `GpuNode` exists (empty spec, owned by the Node when `node_uid` is known, so
    /// it is garbage-collected with the Node) and applies its status.
    ///
    /// # Errors
    /// [`PublishError::ApplyGpuNode`], e.g. when the API server refuses the write.
    pub async fn apply_status(
        &self,
        status: &GpuNodeStatus,
        node_uid: Option<&str>,
    ) -> Result<(), PublishError> {
        let err = |source| PublishError::ApplyGpuNode {
            node: self.node.clone(),
            source,
        };
        let mut metadata = serde_json::json!({ "name": self.node });
        if let Some(uid) = node_uid {
            metadata["ownerReferences"] = serde_json::json!([{
                "apiVersion": "v1", "kind": "Node", "name": self.node, "uid": uid,
            }]);
        }
        // Not forced: the spec is `{}` so the agent owns no spec field, and the owner
        // reference is the agent's alone.
        let object = serde_json::json!({
            "apiVersion": wellknown::API_VERSION,
            "kind": "GpuNode",
            "metadata": metadata,
            "spec": {},
        });
        let create = PatchParams::apply(wellknown::NODE_AGENT_FIELD_MANAGER);
        self.gpu_nodes
            .patch(&self.node, &create, &Patch::Apply(&object))
            .await
            .map_err(err)?;
        let body = serde_json::json!({
            "apiVersion": wellknown::API_VERSION,
            "kind": "GpuNode",
            "metadata": { "name": self.node },
            "status": status,
        });
        self.gpu_nodes
            .patch_status(&self.node, &self.params, &Patch::Apply(&body))
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Applies `labels` to the Node and returns the Node's UID; `None` (and no write) when
    /// the Node does not exist — the agent never creates Nodes.
    ///
    /// # Errors
    /// [`PublishError::ApplyNodeLabels`].
    pub async fn apply_labels(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<String>, PublishError> {
        let err = |source| PublishError::ApplyNodeLabels {
            node: self.node.clone(),
            source,
        };
        if self.nodes.get_opt(&self.node).await.map_err(err)?.is_none() {
            tracing::warn!(node = %self.node, "Node not found; GPU labels not applied");
            return Ok(None);
        }
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": self.node, "labels": labels },
        });
        let node = self
            .nodes
            .patch(&self.node, &self.params, &Patch::Apply(&body))
            .await
            .map_err(err)?;
        Ok(node.metadata.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::GpuInventory;
    use crate::inventory::simulated::{SimulatedConfig, SimulatedInventory};
    use autoglm_api::InventorySource;

    #[test]
    fn status_and_labels_of_a_simulated_node() {
        let c = SimulatedConfig::parse(
            "gpus: [{product: NVIDIA H100 80GB HBM3, memoryMiB: 81559, count: 8}]",
            "f",
        )
        .expect("valid");
        let snap = SimulatedInventory::new(&c, "n1")
            .snapshot(&[])
            .expect("snapshot");
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let s = status(&snap, t.clone());
        assert_eq!(s.source, Some(InventorySource::Simulated));
        assert_eq!(s.gpu_count, 8);
        assert_eq!(s.free_memory_mib, 8 * 81_559);
        assert_eq!(s.product.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(s.heartbeat_time, Some(t));
        let l = node_labels(&snap);
        assert_eq!(l["autoglm.io/gpu.product"], "NVIDIA-H100-80GB-HBM3");
        assert_eq!(l["autoglm.io/gpu.count"], "8");
        assert_eq!(l["autoglm.io/gpu.memory"], "81559");
    }
}
