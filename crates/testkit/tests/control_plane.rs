//! Integration tests proving the test control plane is a real Kubernetes API server:
//! server-side apply (with field ownership conflicts), watches, ServiceAccount tokens and RBAC
//! decisions, and KWOK-simulated GPU nodes.
//!
//! They start (or reuse) the shared control plane through `autoglm_testkit`; it needs the
//! binaries from `make tools`.

use std::collections::BTreeMap;
use std::time::Duration;

use autoglm_testkit::TestNamespace;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use serde_json::json;

/// Upper bound for things the cluster does asynchronously (watch delivery, RBAC cache, KWOK).
/// Generous because the CI machine has 2 shared cores; this is a liveness bound, not a timing
/// assertion.
const PATIENCE: Duration = Duration::from_secs(120);

fn api_status(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn server_side_apply_watch_and_rbac_are_real() {
    let ns = TestNamespace::new("testkit-api").await;
    let cms: Api<ConfigMap> = ns.api();

    // --- server-side apply: the server records field ownership per manager.
    let applied = cms
        .patch(
            "demo",
            &PatchParams::apply("autoglm-testkit"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "demo"},
                "data": {"step": "1", "owner": "testkit"}
            })),
        )
        .await
        .expect("server-side apply creates the ConfigMap");
    let data = applied.data.clone().unwrap_or_default();
    assert_eq!(data.get("step").map(String::as_str), Some("1"));
    let managers: Vec<(String, String)> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        managers,
        vec![("autoglm-testkit".to_owned(), "Apply".to_owned())]
    );

    // A second manager applying a field owned by the first, without force: 409 Conflict.
    let conflict = cms
        .patch(
            "demo",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "demo"},
                "data": {"owner": "someone-else"}
            })),
        )
        .await
        .expect_err("applying a field owned by another manager must conflict");
    assert_eq!(api_status(&conflict), Some(409), "{conflict}");

    // --- watch: start a watcher, change the object, see the change arrive.
    let mut changes = watcher(
        cms.clone(),
        watcher::Config::default().fields("metadata.name=demo"),
    )
    .applied_objects()
    .boxed();
    // The initial listing delivers the current object first.
    let first = tokio::time::timeout(PATIENCE, changes.try_next())
        .await
        .expect("watch delivers the current object")
        .expect("watch stream ok")
        .expect("watch stream open");
    assert_eq!(
        first
            .data
            .unwrap_or_default()
            .get("step")
            .map(String::as_str),
        Some("1")
    );
    cms.patch(
        "demo",
        &PatchParams::apply("autoglm-testkit"),
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "demo"},
            "data": {"step": "2", "owner": "testkit"}
        })),
    )
    .await
    .expect("second apply");
    let changed = tokio::time::timeout(PATIENCE, async {
        while let Some(cm) = changes.try_next().await.expect("watch stream ok") {
            if cm
                .data
                .as_ref()
                .and_then(|d| d.get("step"))
                .map(String::as_str)
                == Some("2")
            {
                return cm;
            }
        }
        panic!("watch stream ended before the change arrived");
    })
    .await
    .expect("the change arrives through the watch");
    assert_eq!(changed.metadata.name.as_deref(), Some("demo"));

    // --- RBAC: a ServiceAccount with a real token (TokenRequest, signed with the plane's
    // service-account key) and no bindings is Forbidden; a Role + RoleBinding grants exactly
    // get/list.
    let sas: Api<ServiceAccount> = ns.api();
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "restricted"}})).expect("valid SA"),
    )
    .await
    .expect("create ServiceAccount");
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600}
    }))
    .expect("valid TokenRequest");
    let token: TokenRequest = sas
        .create_subresource("token", "restricted", &PostParams::default(), &request)
        .await
        .expect("TokenRequest works (service-account signing key configured)");
    let token = token
        .status
        .and_then(|s| s.token)
        .expect("token in the TokenRequest status");
    assert!(!token.is_empty());

    let mut config = autoglm_testkit::config().await;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..kube::config::AuthInfo::default()
    };
    let restricted = Client::try_from(config).expect("client with the SA token");
    let restricted_cms: Api<ConfigMap> = Api::namespaced(restricted.clone(), ns.name());
    let denied = restricted_cms
        .list(&ListParams::default())
        .await
        .expect_err("an unbound ServiceAccount must not list ConfigMaps");
    assert_eq!(api_status(&denied), Some(403), "{denied}");
    if let kube::Error::Api(status) = &denied {
        assert!(
            status
                .message
                .contains(&format!("system:serviceaccount:{}:restricted", ns.name())),
            "403 names the ServiceAccount: {}",
            status.message
        );
    }

    let roles: Api<Role> = ns.api();
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    }))
    .expect("valid Role");
    roles
        .create(&PostParams::default(), &role)
        .await
        .expect("create Role");
    let bindings: Api<RoleBinding> = ns.api();
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "restricted-reads-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "restricted", "namespace": ns.name()}]
    }))
    .expect("valid RoleBinding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
    // The RBAC authorizer reads bindings from an informer: wait until the grant is visible.
    let listed = tokio::time::timeout(PATIENCE, async {
        loop {
            match restricted_cms.list(&ListParams::default()).await {
                Ok(list) => return list,
                Err(e) if api_status(&e) == Some(403) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("unexpected error listing as the bound SA: {e}"),
            }
        }
    })
    .await
    .expect("the RoleBinding takes effect");
    let names: Vec<String> = listed
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .filter(|n| n == "demo")
        .collect();
    assert_eq!(names, vec!["demo".to_owned()]);
    // Only get/list were granted: delete stays Forbidden.
    let denied = restricted_cms
        .delete("demo", &DeleteParams::default())
        .await
        .expect_err("delete is not granted");
    assert_eq!(api_status(&denied), Some(403), "{denied}");

    // The failure dump (printed when a test panics) lists the namespace's objects.
    let dump = ns.dump();
    assert!(dump.contains("configmap/demo"), "{dump}");
    assert!(
        dump.contains("role.rbac.authorization.k8s.io/configmap-reader"),
        "{dump}"
    );
}

/// Deletes the Nodes of one test run (label `autoglm.test/run=<id>`) on drop.
struct NodeCleanup(String);

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let selector = format!("autoglm.test/run={}", self.0);
        let out = autoglm_testkit::kubectl(&["delete", "nodes", "-l", &selector, "--wait=false"]);
        if !out.status.success() {
            eprintln!(
                "failed to delete test nodes {selector}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn kwok_turns_100_gpu_nodes_ready_and_runs_a_bound_pod() {
    const NODES: usize = 100;
    autoglm_testkit::ensure_kwok().await;
    let ns = TestNamespace::new("testkit-kwok").await;
    // Nodes are cluster-scoped: name and label them after the (random) namespace name.
    let run = ns.name().to_owned();
    let _cleanup = NodeCleanup(run.clone());
    let nodes: Api<Node> = Api::all(ns.client());

    futures::stream::iter(0..NODES)
        .map(|i| {
            let nodes = nodes.clone();
            let run = run.clone();
            async move {
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {
                        "name": format!("{run}-gpu-{i:03}"),
                        "labels": {"autoglm.test/run": run, "type": "kwok"},
                        "annotations": {"kwok.x-k8s.io/node": "fake"}
                    },
                    "status": {
                        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"},
                        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"}
                    }
                }))
                .expect("valid Node");
                nodes.create(&PostParams::default(), &node).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("create 100 fake nodes");

    let selector = ListParams::default().labels(&format!("autoglm.test/run={run}"));
    let ready = tokio::time::timeout(PATIENCE, async {
        loop {
            let list = nodes.list(&selector).await.expect("list nodes");
            let ready: Vec<Node> = list.items.into_iter().filter(is_ready).collect();
            if ready.len() == NODES {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("KWOK marks all 100 nodes Ready");
    for node in &ready {
        let capacity: BTreeMap<String, Quantity> = node
            .status
            .as_ref()
            .and_then(|s| s.capacity.clone())
            .unwrap_or_default();
        assert_eq!(
            capacity.get("nvidia.com/gpu"),
            Some(&Quantity("8".into())),
            "node {:?}",
            node.metadata.name
        );
    }

    let pods: Api<Pod> = ns.api();
    let node_name = format!("{run}-gpu-042");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "worker"},
        "spec": {
            "nodeName": node_name,
            "containers": [{
                "name": "worker", "image": "example.invalid/worker:test",
                "resources": {"limits": {"nvidia.com/gpu": "1"}}
            }]
        }
    }))
    .expect("valid Pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod bound to a fake node");
    let running = tokio::time::timeout(PATIENCE, async {
        loop {
            let p = pods.get("worker").await.expect("get pod");
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
    .expect("KWOK marks the bound pod Running");
    assert_eq!(
        running.spec.and_then(|s| s.node_name).as_deref(),
        Some(node_name.as_str())
    );
}
