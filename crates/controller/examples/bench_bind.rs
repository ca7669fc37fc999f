//! Binding throughput benchmark (not a test): time from applying N single-replica
//! InferenceJobs on M KWOK nodes until every replica pod is bound by autoglm-controller, side
//! by side with kube-scheduler binding N equivalent plain pods on the same nodes.
//!
//! ```text
//! cargo run --release -p autoglm-controller --example bench_bind -- [--nodes 500] [--jobs 1000] [--runs 1] [--timeline 1]
//! ```
//!
//! After each run it prints the API requests the control plane served during the run per pod,
//! by verb and resource (deltas of kube-apiserver's `apiserver_request_total`; they include
//! the bench's own creates and polls, and every other client's requests meanwhile).
//!
//! `--timeline 1` prints, each second of a controller run, how many jobs have been created and
//! how many of their pods exist and are bound (one extra pod list per second). With
//! `RUST_LOG` set, the in-process controller logs to stderr.
//!
//! Starts (or reuses) the test control plane with KWOK and kube-scheduler
//! (`e2e/cluster.sh up --with-kwok --with-scheduler`), runs the controller in-process, prints
//! a table. Both sides start the clock before the first create call and stop it when a list
//! shows every pod with `spec.nodeName`; both create with the same client concurrency.

use std::time::{Duration, Instant};

use autoglm_testkit::Component;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const POOL: &str = "autoglm.bench/pool";
/// Creates in flight at once, for both sides.
const CREATE_CONCURRENCY: usize = 32;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pods with `spec.nodeName` set.
fn count_bound(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count()
}

async fn wait_bound(
    pods: &Api<Pod>,
    selector: &str,
    n: usize,
    timeout: Duration,
) -> Option<Instant> {
    let start = Instant::now();
    loop {
        // A list can time out on a loaded API server: keep polling.
        if let Ok(list) = pods.list(&ListParams::default().labels(selector)).await {
            let bound = count_bound(&list.items);
            if bound >= n {
                return Some(Instant::now());
            }
            if start.elapsed() > timeout {
                eprintln!("timed out: {bound}/{n} bound");
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `n` nodes of `pool` report `Ready=True`; returns how many did.
async fn wait_nodes_ready(client: &Client, pool: &str, n: usize, timeout: Duration) -> usize {
    let nodes: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let ready = nodes
            .list(&ListParams::default().labels(&format!("{POOL}={pool}")))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|n| {
                        n.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count()
            })
            .unwrap_or(0);
        if ready >= n || start.elapsed() > timeout {
            return ready;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn make_nodes(client: &Client, pool: &str, n: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    let gpu_nodes: Api<autoglm_api::GpuNode> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .for_each_concurrent(CREATE_CONCURRENCY, |i| {
            let nodes = nodes.clone();
            let gpu_nodes = gpu_nodes.clone();
            async move {
                let name = format!("{pool}-{i:04}");
                let cap = json!({"cpu": "64", "memory": "512Gi", "pods": "110", "autoglm.io/gpu": "8"});
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"}, "labels": {POOL: pool, "type": "kwok"}},
                    "status": {"capacity": cap, "allocatable": cap},
                }))
                .expect("node json");
                let _ = nodes.create(&PostParams::default(), &node).await;
                let _ = nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": {"capacity": cap, "allocatable": cap}}))).await;
                let gn = json!({"apiVersion": "autoglm.io/v1alpha1", "kind": "GpuNode", "metadata": {"name": name, "labels": {POOL: pool}}, "spec": {}});
                let _ = gpu_nodes.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&gn)).await;
                let gpus: Vec<_> = (0..8).map(|g| json!({"index": g, "uuid": format!("SIM-{name}-{g}"), "productName": "NVIDIA A100-SXM4-40GB",
                    "memoryTotalMiB": 40960, "memoryUsedMiB": 0, "memoryFreeMiB": 40960, "health": {"status": "Healthy"}})).collect();
                let st = json!({"apiVersion": "autoglm.io/v1alpha1", "kind": "GpuNode", "status": {"source": "simulated", "gpuCount": 8, "gpus": gpus}});
                let _ = gpu_nodes.patch_status(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&st)).await;
            }
        })
        .await;
}

/// kube-apiserver's `apiserver_request_total` counters, by `verb resource[/subresource]`.
async fn request_counts(client: &Client) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(req) = http::Request::get("/metrics").body(Vec::new()) else {
        return out;
    };
    let text = match client.request_text(req).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kube-apiserver /metrics: {e}; no request counts for this run");
            return out;
        }
    };
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        // Match `{name="` or `,name="` so `resource` does not match inside `subresource`.
        let label = |name: &str| {
            let (a, b) = (format!("{{{name}=\""), format!(",{name}=\""));
            let key = if line.contains(&a) { a } else { b };
            line.split(&key)
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let sub = label("subresource");
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            if sub.is_empty() {
                String::new()
            } else {
                format!("/{sub}")
            }
        );
        *out.entry(key).or_default() += value;
    }
    out
}

/// Prints the requests between two [`request_counts`] per pod: the total, and each kind
/// above 5% of one per pod.
fn report_calls(
    what: &str,
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    n: usize,
) {
    let mut calls: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect();
    let total: f64 = calls.iter().map(|c| c.1).sum();
    calls.retain(|(_, d)| *d >= n as f64 / 20.0);
    calls.sort_by(|a, b| b.1.total_cmp(&a.1));
    let per: Vec<String> = calls
        .iter()
        .map(|(k, d)| format!("{k} {:.2}", d / n as f64))
        .collect();
    eprintln!(
        "{what}: API requests per pod {:.1} ({})",
        total / n as f64,
        per.join(", ")
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n_nodes = arg("--nodes", 500);
    let n_jobs = arg("--jobs", 1000);
    let runs = arg("--runs", 1);
    let timeline = arg("--timeline", 0) > 0;
    if std::env::var_os("RUST_LOG").is_some() {
        autoglm_controller::app::init_tracing(autoglm_controller::app::LogFormat::Plain);
    }
    autoglm_testkit::ensure_components(&[
        Component::ControllerManager,
        Component::Kwok,
        Component::Scheduler,
    ]);
    let client = autoglm_testkit::client().await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    for crd in autoglm_api::crd::all() {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pool = format!("bench{}", std::process::id());
    eprintln!("creating {n_nodes} KWOK nodes (pool {pool})...");
    make_nodes(&client, &pool, n_nodes).await;
    // KWOK initialises new nodes (status patches, Ready) at its own pace; a run that starts
    // before it is done competes with those writes and with the reactions they trigger.
    let t = Instant::now();
    let ready = wait_nodes_ready(&client, &pool, n_nodes, Duration::from_secs(600)).await;
    eprintln!(
        "{ready}/{n_nodes} nodes Ready after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..runs {
        // --- autoglm-controller ---
        let ns = autoglm_testkit::TestNamespace::new(&format!("bench-ctl-{run}")).await;
        let args = <autoglm_controller::app::Args as clap::Parser>::parse_from([
            "autoglm-controller",
            "--admin-addr",
            "127.0.0.1:0",
            "--namespace",
            ns.name(),
            "--node-selector",
            &format!("{POOL}={pool}"),
            "--worker-image",
            "autoglm-worker:bench",
        ]);
        let ctl = tokio::spawn(autoglm_controller::app::run_with_client(
            args,
            client.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let jobs: Api<autoglm_api::InferenceJob> = Api::namespaced(client.clone(), ns.name());
        let before = request_counts(&client).await;
        let t0 = Instant::now();
        let created_jobs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watcher = timeline.then(|| {
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
            let created_jobs = created_jobs.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let Ok(list) = pods
                        .list(&ListParams::default().labels("autoglm.io/job"))
                        .await
                    else {
                        continue;
                    };
                    let bound = count_bound(&list.items);
                    eprintln!(
                        "t={:5.1}s jobs created {:4} pods {:4} bound {bound:4}",
                        t0.elapsed().as_secs_f64(),
                        created_jobs.load(std::sync::atomic::Ordering::Relaxed),
                        list.items.len()
                    );
                }
            })
        });
        futures::stream::iter(0..n_jobs)
            .for_each_concurrent(CREATE_CONCURRENCY, |i| {
                let jobs = jobs.clone();
                let created_jobs = created_jobs.clone();
                async move {
                    let j: autoglm_api::InferenceJob = serde_json::from_value(json!({
                        "apiVersion": "autoglm.io/v1alpha1", "kind": "InferenceJob", "metadata": {"name": format!("j-{i:04}")},
                        "spec": {"model": {"uri": "file:///m.pt", "tokenizerUri": "file:///t.json", "task": "embedding"},
                                 "input": {"uri": "file:///in.jsonl"}, "output": {"uri": "file:///out/"},
                                 "replicas": 1, "resources": {"gpu": {"count": 1}, "cpu": "100m", "memory": "128Mi"}}
                    }))
                    .expect("job json");
                    match jobs.create(&PostParams::default(), &j).await {
                        Ok(_) => {
                            created_jobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("create job: {e}"),
                    }
                }
            })
            .await;
        let created = t0.elapsed();
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
        let done = wait_bound(&pods, "autoglm.io/job", n_jobs, Duration::from_secs(900)).await;
        // Stop the controller and free the GPUs for kube-scheduler. The jobs keep their
        // finalizer; the benchmark cluster is thrown away afterwards (`cluster.sh down`).
        ctl.abort();
        if let Some(w) = watcher {
            w.abort();
        }
        report_calls(
            &format!("autoglm-controller run {run}"),
            &before,
            &request_counts(&client).await,
            n_jobs,
        );
        if let Some(t1) = done {
            let s = (t1 - t0).as_secs_f64();
            eprintln!(
                "autoglm-controller run {run}: {n_jobs} jobs created in {:.1} s, all bound after {s:.2} s",
                created.as_secs_f64()
            );
            ours.push(s);
        }
        // Free the GPUs for kube-scheduler: delete the jobs' pods outright.
        let _ = pods
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
                &ListParams::default(),
            )
            .await;
        drop(ns);

        // --- kube-scheduler ---
        let ns = autoglm_testkit::TestNamespace::new(&format!("bench-ks-{run}")).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
        let before = request_counts(&client).await;
        let t0 = Instant::now();
        futures::stream::iter(0..n_jobs)
            .for_each_concurrent(CREATE_CONCURRENCY, |i| {
                let pods = pods.clone();
                let pool = pool.clone();
                async move {
                    let p: Pod = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{i:04}"), "labels": {"bench": "ks"}},
                        "spec": {"nodeSelector": {POOL: pool}, "restartPolicy": "Never",
                                 "containers": [{"name": "worker", "image": "autoglm-worker:bench",
                                   "resources": {"requests": {"cpu": "100m", "memory": "128Mi", "autoglm.io/gpu": "1"}, "limits": {"autoglm.io/gpu": "1"}}}]}
                    }))
                    .expect("pod json");
                    if let Err(e) = pods.create(&PostParams::default(), &p).await {
                        eprintln!("create pod: {e}");
                    }
                }
            })
            .await;
        let created = t0.elapsed();
        if let Some(t1) = wait_bound(&pods, "bench=ks", n_jobs, Duration::from_secs(900)).await {
            let s = (t1 - t0).as_secs_f64();
            eprintln!(
                "kube-scheduler run {run}: {n_jobs} pods created in {:.1} s, all bound after {s:.2} s",
                created.as_secs_f64()
            );
            theirs.push(s);
        }
        report_calls(
            &format!("kube-scheduler run {run}"),
            &before,
            &request_counts(&client).await,
            n_jobs,
        );
        let _ = pods
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
                &ListParams::default(),
            )
            .await;
        drop(ns);
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = nodes
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{POOL}={pool}")),
        )
        .await;
    let gns: Api<autoglm_api::GpuNode> = Api::all(client.clone());
    let _ = gns
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{POOL}={pool}")),
        )
        .await;

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    println!("| binder | nodes | pods | runs | median time to all bound (s) | pods/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, v) in [
        (
            "autoglm-controller (InferenceJob -> pod -> bind)",
            &mut ours,
        ),
        ("kube-scheduler (plain pods)", &mut theirs),
    ] {
        let runs = v.len();
        match median(v) {
            Some(s) => println!(
                "| {name} | {n_nodes} | {n_jobs} | {runs} | {s:.2} | {:.0} |",
                n_jobs as f64 / s
            ),
            None => println!("| {name} | {n_nodes} | {n_jobs} | 0 | timed out | - |"),
        }
    }
    Ok(())
}
