//! Shared harness of the controller's integration tests: KWOK nodes with simulated GPU
//! inventory, the controller as a child process (so tests can kill -9 it), and helpers to
//! read what it did.
//!
//! Every test gets its own namespace and its own pool of nodes (label
//! `autoglm.test/pool=<namespace>`), and runs its own controller scoped to both
//! (`--namespace`, `--node-selector`), so tests run in parallel without sharing capacity.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use autoglm_api::{GpuAssignment, GpuNode, InferenceJob, JobPhase};
use autoglm_testkit::TestNamespace;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

pub const POOL_LABEL: &str = "autoglm.test/pool";

/// Installs the CRDs (server-side apply) and waits until they are served.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in autoglm_api::crd::all() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("autoglm-test").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("failed to apply CRD {name}: {e}"));
        wait_for(
            Duration::from_secs(30),
            &format!("CRD {name} established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let c = api.get(&name).await.ok()?;
                    c.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                }
            },
        )
        .await;
    }
}

pub use autoglm_testkit::wait_for;

/// One simulated GPU model.
#[derive(Clone, Copy, Debug)]
pub struct GpuModel {
    pub product: &'static str,
    pub memory_mib: i64,
}

pub const T4: GpuModel = GpuModel {
    product: "Tesla T4",
    memory_mib: 15_360,
};
pub const A100: GpuModel = GpuModel {
    product: "NVIDIA A100-SXM4-40GB",
    memory_mib: 40_960,
};
pub const H100: GpuModel = GpuModel {
    product: "NVIDIA H100 80GB HBM3",
    memory_mib: 81_559,
};
pub const B200: GpuModel = GpuModel {
    product: "NVIDIA B200",
    memory_mib: 183_359,
};

/// Creates a KWOK Node with `gpus` GPUs of `model` (capacity `autoglm.io/gpu`) and its
/// `GpuNode` with a simulated inventory, both labelled with the test's pool.
pub async fn add_gpu_node(client: &Client, pool: &str, name: &str, model: GpuModel, gpus: i32) {
    add_gpu_node_tainted(client, pool, name, model, gpus, &[]).await;
}

/// [`add_gpu_node`] with `NoSchedule` taints `(key, value)`.
pub async fn add_gpu_node_tainted(
    client: &Client,
    pool: &str,
    name: &str,
    model: GpuModel,
    gpus: i32,
    taints: &[(&str, &str)],
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mem_gib = model.memory_mib * i64::from(gpus) / 1024;
    let capacity = json!({
        "cpu": "64", "memory": "512Gi", "pods": "110",
        "autoglm.io/gpu": gpus.to_string(),
        "autoglm.io/gpu-memory-gib": mem_gib.to_string(),
    });
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {POOL_LABEL: pool, "kubernetes.io/hostname": name, "type": "kwok"},
        },
        "spec": {"taints": taints.iter().map(|(k, v)| json!({"key": k, "value": v, "effect": "NoSchedule"})).collect::<Vec<_>>()},
        "status": {"capacity": capacity, "allocatable": capacity},
    });
    let node: Node = serde_json::from_value(node).expect("node json");
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("failed to create node {name}: {e}"),
    }
    // KWOK fills the status (Ready) itself; make sure allocatable is there for the controller.
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"capacity": capacity, "allocatable": capacity}})),
        )
        .await
        .unwrap_or_else(|e| panic!("failed to patch node {name} status: {e}"));
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let gn = json!({
        "apiVersion": "autoglm.io/v1alpha1", "kind": "GpuNode",
        "metadata": {"name": name, "labels": {POOL_LABEL: pool}},
        "spec": {},
    });
    gpu_nodes
        .patch(
            name,
            &PatchParams::apply("autoglm-test").force(),
            &Patch::Apply(&gn),
        )
        .await
        .unwrap_or_else(|e| panic!("failed to apply GpuNode {name}: {e}"));
    let gpus_json: Vec<_> = (0..gpus)
        .map(|i| json!({
            "index": i, "uuid": format!("SIM-{name}-{i}"), "productName": model.product,
            "memoryTotalMiB": model.memory_mib, "memoryUsedMiB": 0, "memoryFreeMiB": model.memory_mib,
            "health": {"status": "Healthy"},
        }))
        .collect();
    let status = json!({
        "apiVersion": "autoglm.io/v1alpha1", "kind": "GpuNode",
        "status": {
            "source": "simulated", "gpuCount": gpus, "product": model.product,
            "freeMemoryMiB": model.memory_mib * i64::from(gpus), "gpus": gpus_json,
            "heartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        },
    });
    gpu_nodes
        .patch_status(
            name,
            &PatchParams::apply("autoglm-test").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap_or_else(|e| panic!("failed to apply GpuNode {name} status: {e}"));
}

/// Deletes the pool's Nodes and GpuNodes.
pub async fn remove_pool(client: &Client, pool: &str) {
    let lp = ListParams::default().labels(&format!("{POOL_LABEL}={pool}"));
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = nodes.delete_collection(&DeleteParams::default(), &lp).await;
    let gpu_nodes: Api<GpuNode> = Api::all(client.clone());
    let _ = gpu_nodes
        .delete_collection(&DeleteParams::default(), &lp)
        .await;
}

/// A controller child process; killed (SIGKILL) on drop.
pub struct ControllerProc {
    pub child: Child,
    pub namespace: String,
    pub killed: bool,
    pub admin_port: u16,
    pub log: PathBuf,
}

impl ControllerProc {
    /// Starts `autoglm-controller` scoped to `ns` and its node pool; `extra` args appended.
    pub fn start(ns: &str, kubeconfig: &std::path::Path, extra: &[&str]) -> Self {
        let admin_port = free_port();
        let log = std::env::temp_dir().join(format!("autoglm-controller-{ns}-{admin_port}.log"));
        let file = std::fs::File::create(&log).expect("controller log file");
        let child = Command::new(env!("CARGO_BIN_EXE_autoglm-controller"))
            .args([
                "--admin-addr",
                &format!("127.0.0.1:{admin_port}"),
                "--namespace",
                ns,
                "--node-selector",
                &format!("{POOL_LABEL}={ns}"),
                "--worker-image",
                "autoglm-worker:test",
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                "info,autoglm_controller=debug,kube_lease_manager=info",
            )
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("failed to start autoglm-controller");
        Self {
            child,
            namespace: ns.to_owned(),
            killed: false,
            admin_port,
            log,
        }
    }

    /// SIGKILL, no cleanup (what `kill -9` does).
    pub fn kill9(&mut self) {
        self.killed = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of a metric series (first line starting with `name`), from `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.admin_port, "/metrics").await?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- controller log tail ({}) ---\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        if !self.killed {
            // Let the live controller run its finalizers so the namespace can go away.
            let _ = autoglm_testkit::kubectl(&[
                "delete",
                "inferencejobs",
                "--all",
                "-n",
                &self.namespace,
                "--timeout=30s",
            ]);
        }
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Minimal HTTP/1.0 GET on loopback (no client dependency needed for two endpoints).
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}

/// A test environment: namespace, CRDs, KWOK, kubeconfig path.
pub struct Env {
    pub ns: TestNamespace,
    pub client: Client,
    pub kubeconfig: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let sel = format!("{POOL_LABEL}={}", self.ns.name());
        let _ = autoglm_testkit::kubectl(&["delete", "nodes,gpunodes", "-l", &sel, "--wait=false"]);
    }
}

impl Env {
    pub async fn new(prefix: &str) -> Self {
        autoglm_testkit::ensure_kwok().await;
        let ns = TestNamespace::new(prefix).await;
        let client = ns.client();
        install_crds(&client).await;
        let kubeconfig = ns.kubeconfig().to_path_buf();
        Self {
            ns,
            client,
            kubeconfig,
        }
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    pub fn controller(&self, extra: &[&str]) -> ControllerProc {
        ControllerProc::start(self.name(), &self.kubeconfig, extra)
    }

    pub async fn add_node(&self, name: &str, model: GpuModel, gpus: i32) {
        add_gpu_node(
            &self.client,
            self.name(),
            &format!("{}-{name}", self.name()),
            model,
            gpus,
        )
        .await;
    }

    /// Adds `count` nodes `<prefix>-0` .. `<prefix>-<count - 1>`, each with `gpus` GPUs of
    /// `model` (see [`Env::add_node`]).
    pub async fn add_nodes(&self, prefix: &str, model: GpuModel, gpus: i32, count: usize) {
        for i in 0..count {
            self.add_node(&format!("{prefix}-{i}"), model, gpus).await;
        }
    }

    pub async fn add_tainted_node(
        &self,
        name: &str,
        model: GpuModel,
        gpus: i32,
        taints: &[(&str, &str)],
    ) {
        add_gpu_node_tainted(
            &self.client,
            self.name(),
            &format!("{}-{name}", self.name()),
            model,
            gpus,
            taints,
        )
        .await;
    }

    /// Waits until every Node of the pool is Ready (KWOK heartbeats) and untainted by the
    /// node lifecycle controller.
    pub async fn wait_nodes_ready(&self, count: usize) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{POOL_LABEL}={}", self.name()));
        wait_for(Duration::from_secs(60), "pool nodes Ready", || {
            let nodes = nodes.clone();
            let lp = lp.clone();
            async move {
                let list = nodes.list(&lp).await.ok()?;
                let ready = list
                    .items
                    .iter()
                    .filter(|n| {
                        let ok = n
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            });
                        let lifecycle_taint = n
                            .spec
                            .as_ref()
                            .and_then(|s| s.taints.as_ref())
                            .is_some_and(|ts| {
                                ts.iter().any(|t| t.key.starts_with("node.kubernetes.io/"))
                            });
                        ok && !lifecycle_taint
                    })
                    .count();
                (ready == count).then_some(())
            }
        })
        .await;
    }

    /// GPU memory (MiB) of one GPU per node of the pool, from the GpuNodes.
    pub async fn gpu_memory(&self) -> BTreeMap<String, i64> {
        let api: Api<GpuNode> = Api::all(self.client.clone());
        let lp = ListParams::default().labels(&format!("{POOL_LABEL}={}", self.name()));
        api.list(&lp)
            .await
            .expect("list GpuNodes")
            .items
            .into_iter()
            .map(|g| {
                let mib = g
                    .status
                    .as_ref()
                    .and_then(|s| s.gpus.first())
                    .map_or(0, |g| g.memory_total_mib);
                (g.name_any(), mib)
            })
            .collect()
    }

    pub fn jobs(&self) -> Api<InferenceJob> {
        Api::namespaced(self.client.clone(), self.name())
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), self.name())
    }

    /// Every pod of the namespace, deleting ones included.
    pub async fn all_pods(&self) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default())
            .await
            .expect("list pods")
            .items
    }

    /// The pods of the namespace that are not being deleted.
    pub async fn live_pods(&self) -> Vec<Pod> {
        let mut pods = self.all_pods().await;
        pods.retain(|p| p.metadata.deletion_timestamp.is_none());
        pods
    }

    /// How many jobs the namespace has, and how many of them are `Scheduled=True`; `None`
    /// when they cannot be listed (for polling with [`wait_for`]).
    pub async fn scheduled_jobs(&self) -> Option<(usize, usize)> {
        let jobs = self.jobs().list(&ListParams::default()).await.ok()?;
        let scheduled = jobs.items.iter().filter(|j| is_scheduled(j)).count();
        Some((jobs.items.len(), scheduled))
    }

    /// Applies a job from a JSON spec (server-side apply).
    pub async fn apply_job(&self, name: &str, spec: serde_json::Value) {
        let job = json!({"apiVersion": "autoglm.io/v1alpha1", "kind": "InferenceJob", "metadata": {"name": name}, "spec": spec});
        self.jobs()
            .patch(
                name,
                &PatchParams::apply("autoglm-test").force(),
                &Patch::Apply(&job),
            )
            .await
            .unwrap_or_else(|e| panic!("failed to apply InferenceJob {name}: {e}"));
    }

    pub async fn job(&self, name: &str) -> InferenceJob {
        self.jobs()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("failed to get InferenceJob {name}: {e}"))
    }

    pub async fn phase(&self, name: &str) -> Option<JobPhase> {
        self.jobs().get(name).await.ok()?.status?.phase
    }

    /// Pods of a job (label selector), not deleting.
    pub async fn job_pods(&self, job: &str) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!("autoglm.io/job={job}"));
        self.pods()
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Sets a pod's phase (standing in for the worker/kubelet), with a terminated container
    /// status for `Failed`.
    pub async fn set_pod_phase(&self, pod: &str, phase: &str) {
        let mut status = json!({"phase": phase});
        if phase == "Failed" {
            status["containerStatuses"] = json!([{
                "name": "worker", "image": "autoglm-worker:test", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 3, "reason": "Error", "message": "simulated worker failure"}},
            }]);
        }
        self.pods()
            .patch_status(
                pod,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("failed to set pod {pod} phase {phase}: {e}"));
    }

    /// The condition `type_` of a job.
    pub async fn condition(
        &self,
        job: &str,
        type_: &str,
    ) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        self.jobs()
            .get(job)
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
    }
}

/// A job spec (the embedding model on `file://` URIs, 1 CPU, 2Gi) with `gpu` as its
/// `resources.gpu` and `replicas` replicas.
pub fn job_spec(gpu: serde_json::Value, replicas: i64) -> serde_json::Value {
    json!({
        "model": {"uri": "file:///models/minilm.pt", "tokenizerUri": "file:///models/tokenizer.json", "task": "embedding"},
        "input": {"uri": "file:///data/in.jsonl"},
        "output": {"uri": "file:///data/out/"},
        "replicas": replicas,
        "resources": {"gpu": gpu, "cpu": "1", "memory": "2Gi"},
    })
}

/// Whether the job's `Scheduled` condition is `True`.
pub fn is_scheduled(job: &InferenceJob) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Scheduled" && c.status == "True")
    })
}

/// Assignment of a bound pod.
pub fn assignment(pod: &Pod) -> Option<GpuAssignment> {
    GpuAssignment::from_annotation(pod.annotations().get(GpuAssignment::ANNOTATION)?).ok()
}

pub fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Checks that no GPU is oversubscribed by the live (non-terminal) pods: per (node, GPU),
/// whole-GPU holders are alone, and slice MiB sum to at most the GPU's memory. Returns the
/// number of (node, GPU) pairs in use.
pub fn assert_no_oversubscription(pods: &[Pod], gpu_mem: &BTreeMap<String, i64>) -> usize {
    let mut used: BTreeMap<(String, i32), (i64, u32, u32)> = BTreeMap::new(); // (MiB, whole, slices)
    for p in pods.iter().filter(|p| !is_terminal(p)) {
        let Some(a) = assignment(p) else { continue };
        let node = node_of(p).expect("a pod with an assignment is bound");
        assert_eq!(
            a.node,
            node,
            "pod {} assignment names another node",
            p.name_any()
        );
        for g in &a.gpus {
            let e = used.entry((node.clone(), g.index)).or_default();
            match a.memory_mib {
                Some(m) => {
                    e.0 += m;
                    e.2 += 1;
                }
                None => {
                    e.0 += gpu_mem[&node];
                    e.1 += 1;
                }
            }
        }
    }
    for ((node, gpu), (mib, whole, slices)) in &used {
        let cap = gpu_mem[node];
        assert!(
            *mib <= cap,
            "GPU {gpu} of {node} promised {mib} MiB of {cap}"
        );
        assert!(
            *whole == 0 || (*whole == 1 && *slices == 0),
            "GPU {gpu} of {node}: {whole} whole holders, {slices} slices"
        );
    }
    used.len()
}
