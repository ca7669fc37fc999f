//! The development node's Node object: registration (with capacity, allocatable and a Ready
//! condition), heartbeats (the `kube-node-lease` Lease and the condition's
//! `lastHeartbeatTime`), device-plugin capacity updates, and `Ready=False` on shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::plugins::Capacity;

/// Namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Label on every development node, so tests and tools can find (and clean up) them.
pub const DEVNODE_LABEL: &str = "autoglm.io/devnode";

/// Annotation that says, on the Node itself, what it is.
pub const DEVNODE_ANNOTATION: &str = "autoglm.io/devnode-notice";

/// Lease duration in seconds. The kubelet's default: the node lifecycle controller marks a
/// node unreachable after this long without a renewal.
///
/// # Source
/// kubelet `--node-lease-duration-seconds` default (40 s).
pub const LEASE_DURATION_S: i32 = 40;

/// Heartbeat period: a quarter of the lease duration, as the kubelet renews.
///
/// # Source
/// kubelet `nodeLeaseRenewIntervalFraction` = 0.25.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// What the Node reports about itself.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// CPU capacity as a Kubernetes quantity (e.g. `"2"`).
    pub cpu: String,
    /// Memory capacity as a Kubernetes quantity (e.g. `"8Gi"`).
    pub memory: String,
    /// Pod capacity.
    pub pods: u32,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Address of the node (loopback: processes run on this machine).
    pub host_ip: String,
    /// When this development node started: the conditions' `lastTransitionTime` (heartbeats
    /// only move `lastHeartbeatTime`).
    pub started: chrono::DateTime<Utc>,
}

impl NodeSpec {
    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            ("kubernetes.io/hostname".to_owned(), self.name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            (
                "kubernetes.io/arch".to_owned(),
                match std::env::consts::ARCH {
                    "x86_64" => "amd64",
                    "aarch64" => "arm64",
                    other => other,
                }
                .to_owned(),
            ),
            (
                "node.kubernetes.io/instance-type".to_owned(),
                "autoglm-devnode".to_owned(),
            ),
            (DEVNODE_LABEL.to_owned(), "true".to_owned()),
        ]);
        l.extend(self.labels.clone());
        l
    }

    fn resources(&self, gpus: &Capacity) -> BTreeMap<String, String> {
        let mut r = BTreeMap::from([
            ("cpu".to_owned(), self.cpu.clone()),
            ("memory".to_owned(), self.memory.clone()),
            ("pods".to_owned(), self.pods.to_string()),
        ]);
        r.extend(gpus.iter().map(|(k, v)| (k.clone(), v.to_string())));
        r
    }

    /// The Node object, status included, as created on registration.
    #[must_use]
    pub fn node_object(&self, gpus: &Capacity, ready: bool) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.labels(),
                "annotations": {
                    DEVNODE_ANNOTATION: "development node (autoglm-devnode): a test and demo tool that runs worker pods as local processes; not a kubelet",
                },
            },
            "spec": {},
            "status": self.status(gpus, ready, "registered"),
        })
    }

    /// The `status` part: capacity, allocatable, conditions, addresses, node info.
    #[must_use]
    pub fn status(&self, gpus: &Capacity, ready: bool, why: &str) -> Value {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let since = self
            .started
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let ready_since = if ready { &since } else { &now };
        let resources = self.resources(gpus);
        let pressure = |t: &str, reason: &str, msg: &str| {
            json!({"type": t, "status": "False", "reason": reason, "message": msg,
                   "lastHeartbeatTime": now, "lastTransitionTime": since})
        };
        json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                pressure("MemoryPressure", "DevnodeHasSufficientMemory", "not measured by the development node"),
                pressure("DiskPressure", "DevnodeHasNoDiskPressure", "not measured by the development node"),
                pressure("PIDPressure", "DevnodeHasSufficientPID", "not measured by the development node"),
                {
                    "type": "Ready",
                    "status": if ready { "True" } else { "False" },
                    "reason": if ready { "DevnodeReady" } else { "DevnodeStopped" },
                    "message": format!("autoglm-devnode {why}"),
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": ready_since,
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": std::env::consts::ARCH,
                "operatingSystem": "linux",
                "kubeletVersion": concat!("autoglm-devnode/", env!("CARGO_PKG_VERSION")),
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "devnode://local-processes",
                "kernelVersion": "",
                "osImage": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        })
    }
}

/// Registers (creates, or takes over an existing) Node with the current capacity and
/// `Ready=True`.
///
/// # Errors
/// [`Error::Kube`] when the Node cannot be created or patched.
pub async fn register(client: &Client, spec: &NodeSpec, gpus: &Capacity) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let obj = spec.node_object(gpus, true);
    let node: Node = serde_json::from_value(obj.clone())
        .map_err(|e| Error::kube("build node", &spec.name, kube::Error::SerdeError(e)))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => info!(node = %spec.name, "node registered"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let meta = json!({"metadata": {"labels": spec.labels(), "annotations": obj["metadata"]["annotations"]}});
            nodes
                .patch(&spec.name, &PatchParams::default(), &Patch::Merge(&meta))
                .await
                .map_err(|e| Error::kube("patch node", format!("node {}", spec.name), e))?;
            info!(node = %spec.name, "node existed; taking it over");
        }
        Err(e) => return Err(Error::kube("create node", format!("node {}", spec.name), e)),
    }
    patch_status(client, spec, gpus, true, "registered").await
}

/// Writes the Node status (capacity, allocatable, conditions with fresh heartbeat times).
///
/// # Errors
/// [`Error::Kube`] when the patch fails.
pub async fn patch_status(
    client: &Client,
    spec: &NodeSpec,
    gpus: &Capacity,
    ready: bool,
    why: &str,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"status": spec.status(gpus, ready, why)});
    nodes
        .patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube("patch status of", format!("node {}", spec.name), e))?;
    Ok(())
}

/// Renews the node's Lease (creating it the first time).
///
/// # Errors
/// [`Error::Kube`] when the Lease cannot be created or patched.
pub async fn renew_lease(client: &Client, name: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let patch = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S, "renewTime": now},
    });
    leases
        .patch(
            name,
            &PatchParams::apply("autoglm-devnode").force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| {
            Error::kube(
                "renew lease",
                format!("lease {NODE_LEASE_NAMESPACE}/{name}"),
                e,
            )
        })?;
    Ok(())
}

/// Keeps the Node alive until `shutdown` flips to true: Lease and Ready heartbeat every
/// [`HEARTBEAT`], capacity patched as soon as a device plugin's device count changes. Errors
/// are logged and retried on the next tick (a heartbeat loop that gave up would make the node
/// look dead while its pods still run).
pub async fn heartbeat(
    client: Client,
    spec: NodeSpec,
    mut capacity: watch::Receiver<Capacity>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = renew_lease(&client, &spec.name).await {
                    warn!(error = %crate::display_chain(&e), "lease renewal failed");
                }
                let gpus = capacity.borrow().clone();
                if let Err(e) = patch_status(&client, &spec, &gpus, true, "heartbeat").await {
                    warn!(error = %crate::display_chain(&e), "node heartbeat failed");
                }
                debug!(node = %spec.name, "heartbeat");
            }
            changed = capacity.changed() => {
                if changed.is_err() { return; }
                let gpus = capacity.borrow_and_update().clone();
                info!(node = %spec.name, ?gpus, "device-plugin capacity changed");
                if let Err(e) = patch_status(&client, &spec, &gpus, true, "capacity update").await {
                    warn!(error = %crate::display_chain(&e), "capacity patch failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            name: "devnode-a".into(),
            cpu: "2".into(),
            memory: "8Gi".into(),
            pods: 110,
            labels: BTreeMap::from([("zone".to_owned(), "z1".to_owned())]),
            host_ip: "127.0.0.1".into(),
            started: Utc::now(),
        }
    }

    #[test]
    fn node_object_has_capacity_ready_and_labels() {
        let gpus = Capacity::from([
            ("autoglm.io/gpu".to_owned(), 2),
            ("autoglm.io/gpu-memory-gib".to_owned(), 160),
        ]);
        let obj = spec().node_object(&gpus, true);
        let node: Node = serde_json::from_value(obj).unwrap();
        let status = node.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "8Gi");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["autoglm.io/gpu"].0, "2");
        assert_eq!(cap["autoglm.io/gpu-memory-gib"].0, "160");
        assert_eq!(status.allocatable.unwrap(), cap);
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels[DEVNODE_LABEL], "true");
        assert_eq!(labels["kubernetes.io/hostname"], "devnode-a");
        assert_eq!(labels["zone"], "z1");
    }

    #[test]
    fn stopped_node_is_not_ready() {
        let status = spec().status(&Capacity::new(), false, "stopped");
        let conds = status["conditions"].as_array().unwrap();
        let ready = conds.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "DevnodeStopped");
    }
}
