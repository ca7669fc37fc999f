//! The node agent against a real kube-apiserver (etcd + kube-apiserver from `autoglm-testkit`):
//! with the simulated inventory it publishes a correct `GpuNode` within 10 s, updates it when
//! the pods bound to its node change, and the API server refuses its writes to another node's
//! objects (deploy/validating-admission-policy.yaml).
//!
//! The agent runs in-process with a client that impersonates its ServiceAccount and carries the
//! node-name claim a pod-bound token would (`authentication.kubernetes.io/node-name`), since
//! this control plane has no kubelet to mint such tokens.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_api::{GpuNode, InventorySource};
use autoglm_node_agent::agent::{self, AgentConfig};
use autoglm_node_agent::inventory::simulated::{
    SimulatedConfig, SimulatedInventory, simulated_uuid,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use tokio_util::sync::CancellationToken;

const AGENT_USER: &str = "system:serviceaccount:autoglm-system:autoglm-node-agent";
const NODE_NAME_CLAIM: &str = "authentication.kubernetes.io/node-name";
/// What the issue asks: a correct GpuNode within 10 s.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);

fn deploy(file: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("read deploy file")
}

async fn install(admin: &kube::Client) {
    // The GpuNode CRD, from the API crate's types.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd = GpuNode::crd();
    let name = crd.metadata.name.clone().expect("crd name");
    crds.patch(
        &name,
        &PatchParams::apply("node-agent-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply GpuNode CRD");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = crds.get(&name).await.expect("get CRD");
        let established = c.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            break;
        }
        assert!(Instant::now() < deadline, "GpuNode CRD not established");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: autoglm-system\n";
    for doc in [
        ns.to_owned(),
        deploy("rbac.yaml"),
        deploy("validating-admission-policy.yaml"),
    ] {
        let out = autoglm_testkit::kubectl_stdin(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            &doc,
        );
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

async fn create_node(admin: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(admin.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .expect("node");
    let _ = nodes.delete(name, &DeleteParams::default()).await;
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create Node");
}

/// A client acting as the node agent of `node`.
async fn agent_client(node: &str) -> kube::Client {
    let mut config = autoglm_testkit::config().await;
    config.auth_info.impersonate = Some(AGENT_USER.to_owned());
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".to_owned(),
        "system:serviceaccounts:autoglm-system".to_owned(),
        "system:authenticated".to_owned(),
    ]);
    config.auth_info.impersonate_user_extra = Some(HashMap::from([(
        NODE_NAME_CLAIM.to_owned(),
        vec![node.to_owned()],
    )]));
    kube::Client::try_from(config).expect("agent client")
}

/// Polls `check` on the node's GpuNode until it passes or `deadline` passes.
async fn wait_for_gpu_node<F: Fn(&GpuNode) -> bool>(
    api: &Api<GpuNode>,
    name: &str,
    deadline: Instant,
    what: &str,
    check: F,
) -> GpuNode {
    // Not `autoglm_testkit::wait_for`: the failure message shows the last GpuNode seen.
    loop {
        if let Ok(Some(g)) = api.get_opt(name).await
            && check(&g)
        {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            api.get_opt(name).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn simulated_agent_publishes_its_gpunode_and_only_its_own() {
    let admin = autoglm_testkit::client().await;
    install(&admin).await;
    let ns = autoglm_testkit::TestNamespace::new("node-agent").await;
    let suffix = std::process::id();
    let (node_a, node_b) = (format!("agent-a-{suffix}"), format!("agent-b-{suffix}"));
    create_node(&admin, &node_a).await;
    create_node(&admin, &node_b).await;

    let config = SimulatedConfig::parse(
        "gpus: [{product: NVIDIA A100-SXM4-80GB, memoryMiB: 81920, count: 2, computeCapability: '8.0'}]",
        "test",
    )
    .expect("config");
    let inventory = Arc::new(SimulatedInventory::new(&config, &node_a));
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let agent = tokio::spawn(agent::run(
        AgentConfig {
            node: node_a.clone(),
            publish_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            device_plugin_dir: None,
            admin_addr: None,
        },
        inventory,
        Some(agent_client(&node_a).await),
        cancel.clone(),
    ));

    // A correct GpuNode within 10 s.
    let gpu_nodes: Api<GpuNode> = Api::all(admin.clone());
    let g = wait_for_gpu_node(
        &gpu_nodes,
        &node_a,
        started + PUBLISH_DEADLINE,
        "the first GpuNode",
        |g| g.status.is_some(),
    )
    .await;
    eprintln!("GpuNode {node_a} published after {:?}", started.elapsed());
    let s = g.status.expect("status");
    assert_eq!(s.source, Some(InventorySource::Simulated));
    assert_eq!(s.gpu_count, 2);
    assert_eq!(s.product.as_deref(), Some("NVIDIA A100-SXM4-80GB"));
    assert_eq!(s.free_memory_mib, 2 * 81_920);
    assert!(s.heartbeat_time.is_some());
    assert_eq!(s.gpus[0].uuid, simulated_uuid(&node_a, 0));
    assert_eq!(s.gpus[1].uuid, simulated_uuid(&node_a, 1));
    assert_eq!(s.gpus[1].compute_capability.as_deref(), Some("8.0"));
    assert!(!g.spec.unschedulable);
    let nodes: Api<Node> = Api::all(admin.clone());
    let labels = nodes
        .get(&node_a)
        .await
        .expect("node")
        .metadata
        .labels
        .expect("labels");
    assert_eq!(labels["autoglm.io/gpu.product"], "NVIDIA-A100-SXM4-80GB");
    assert_eq!(labels["autoglm.io/gpu.count"], "2");
    assert_eq!(labels["autoglm.io/gpu.memory"], "81920");

    // Usage changes: a replica pod bound to node A with a 20480 MiB / 250 milli slice of GPU 1.
    let pods: Api<Pod> = ns.api();
    let assignment = serde_json::json!({
        "node": node_a, "gpus": [{"index": 1, "uuid": simulated_uuid(&node_a, 1)}],
        "memoryMiB": 20480, "computeMilli": 250,
    });
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "replica-0", "annotations": {"autoglm.io/gpu-assignment": assignment.to_string()}},
        "spec": {"nodeName": node_a, "containers": [{"name": "worker", "image": "worker:test"}]},
    }))
    .expect("pod");
    let changed_at = Instant::now();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let g = wait_for_gpu_node(
        &gpu_nodes,
        &node_a,
        changed_at + PUBLISH_DEADLINE,
        "the usage update",
        |g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.gpus.get(1).is_some_and(|g1| g1.memory_used_mib == 20_480))
        },
    )
    .await;
    eprintln!("usage change published after {:?}", changed_at.elapsed());
    let s = g.status.expect("status");
    assert_eq!(s.free_memory_mib, 2 * 81_920 - 20_480);
    let g1 = &s.gpus[1];
    assert_eq!(g1.memory_free_mib, 81_920 - 20_480);
    assert_eq!(g1.utilization_gpu_percent, Some(25));
    assert_eq!(g1.allocations.len(), 1);
    assert_eq!(g1.allocations[0].pod, "replica-0");
    assert_eq!(g1.allocations[0].namespace, ns.name());
    assert_eq!(
        (
            g1.allocations[0].memory_mib,
            g1.allocations[0].compute_milli
        ),
        (20_480, 250)
    );
    assert!(s.gpus[0].allocations.is_empty());

    // The pod goes away: the share is free again.
    pods.delete("replica-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    wait_for_gpu_node(
        &gpu_nodes,
        &node_a,
        Instant::now() + PUBLISH_DEADLINE,
        "the release",
        |g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.free_memory_mib == 2 * 81_920)
        },
    )
    .await;

    // Node A's agent may not write node B's objects.
    let as_agent = agent_client(&node_a).await;
    let other: Api<GpuNode> = Api::all(as_agent.clone());
    let body = serde_json::json!({
        "apiVersion": "autoglm.io/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": node_b}, "spec": {},
    });
    let err = other
        .patch(
            &node_b,
            &PatchParams::apply("autoglm-node-agent"),
            &Patch::Apply(&body),
        )
        .await
        .expect_err("writing another node's GpuNode must be refused");
    assert_forbidden(&err, &node_b);
    let other_nodes: Api<Node> = Api::all(as_agent.clone());
    let label = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_b, "labels": {"autoglm.io/gpu.count": "8"}},
    });
    let err = other_nodes
        .patch(
            &node_b,
            &PatchParams::apply("autoglm-node-agent"),
            &Patch::Apply(&label),
        )
        .await
        .expect_err("labelling another node must be refused");
    assert_forbidden(&err, &node_b);
    // The same agent identity can still write its own node (the refusal is about the name).
    let own = serde_json::json!({
        "apiVersion": "autoglm.io/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": node_a}, "spec": {},
    });
    other
        .patch(
            &node_a,
            &PatchParams::apply("autoglm-node-agent"),
            &Patch::Apply(&own),
        )
        .await
        .expect("own GpuNode");

    cancel.cancel();
    agent.await.expect("agent task").expect("agent");
    for n in [&node_a, &node_b] {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
        let _ = gpu_nodes.delete(n, &DeleteParams::default()).await;
    }
}

fn assert_forbidden(err: &kube::Error, other: &str) {
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains("may only write its own node objects")
                    && status.message.contains(other),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 403 from the API server, got {other}"),
    }
}
