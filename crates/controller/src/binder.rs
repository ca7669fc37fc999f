//! The binder: takes pending replica pods in priority order, asks the scheduling core for
//! the best (node, GPU) slot for each, and binds them through the `pods/binding`
//! subresource.
//!
//! The binder is this controller acting as a secondary scheduler: replica pods carry
//! `schedulerName: autoglm-scheduler`, so kube-scheduler ignores them. One task runs
//! placement passes one after another, woken by any change of pods, nodes, GPU inventory or
//! jobs, and every [`RESYNC`] for aging.
//!
//! # Guarantees
//! - No GPU's memory or compute is promised twice: a pass starts from the cached pods'
//!   assignments plus the [`Ledger`] of bindings not yet visible in the cache, and every
//!   placement is allocated in the pass's model before the next pod is considered.
//! - The node and the assignment annotation are written by one `pods/binding` call (the
//!   API server copies the Binding's annotations onto the pod), so no pod is ever bound
//!   without its assignment, whatever happens to this process.
//! - A pod nothing fits stays unbound with `PodScheduled=False`, reason `Unschedulable`,
//!   and the core's per-reason message.
//!
//! # Caveats
//! - Lower-priority pods may take capacity that a higher-priority pod cannot use (a pod that
//!   fits nowhere does not block the queue); there is no preemption.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use autoglm_api::wellknown::{SCHEDULER_NAME, labels};
use autoglm_api::{GpuAssignment, GpuNode, InferenceJob};
use autoglm_scheduler::feasibility::feasible_nodes;
use autoglm_scheduler::model::{Cluster, GpuRequest, Placement, PodRequest};
use autoglm_scheduler::policy::Policy;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::convert::{self, GpuUse, Inventory};
use crate::error::Error;
use crate::ledger::{Entry, Ledger};
use crate::queue::{self, QueueItem};

/// Longest time between placement passes when nothing changes (aging, stale heartbeats).
pub const RESYNC: Duration = Duration::from_secs(5);

/// Pause after a wake-up before a pass starts, so a burst of watch events (e.g. 1,000 pods
/// created by one `kubectl apply`) is handled by one pass rather than 1,000.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Reason of the `PodScheduled=False` condition and of the job's Waiting state.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// Whether a pod is finished (its resources are free again).
#[must_use]
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a pod waits for this binder: our scheduler name, unbound, not deleting, not
/// finished.
#[must_use]
pub fn is_pending_for_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.scheduler_name.as_deref()) == Some(SCHEDULER_NAME)
        && spec
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
}

/// The owning job of a replica pod, from the cache.
#[must_use]
pub fn owning_job(ctx: &Context, pod: &Pod) -> Option<std::sync::Arc<InferenceJob>> {
    let ns = pod.namespace()?;
    let name = pod.labels().get(labels::JOB)?;
    ctx.jobs.get(&ObjectRef::new(name).within(&ns))
}

/// Runs placement passes until `shutdown` is cancelled.
pub async fn run(ctx: Context, shutdown: CancellationToken) {
    let mut ledger = Ledger::default();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = ctx.wake_binder.notified() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
        pass(&ctx, &mut ledger).await;
    }
    tracing::info!("binder stopped");
}

/// One pending pod with what the pass needs to place it.
struct Pending {
    pod: std::sync::Arc<Pod>,
    job: std::sync::Arc<InferenceJob>,
    item: QueueItem,
}

/// Builds the cluster model from the caches and the ledger: nodes, GPU inventory, and
/// everything bound or being bound.
fn build_cluster(ctx: &Context, ledger: &Ledger) -> (Cluster, HashMap<String, usize>) {
    let now = Timestamp::now();
    let inv = Inventory {
        max_heartbeat_age_s: ctx.settings.max_heartbeat_age_s,
    };
    let mut nodes: Vec<_> = ctx.nodes.state();
    nodes.sort_by_key(|n| n.name_any());
    let mut index = HashMap::new();
    let mut states = Vec::with_capacity(nodes.len());
    let mut gpu_nodes: Vec<Option<std::sync::Arc<GpuNode>>> = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let gn = ctx.gpu_nodes.get(&ObjectRef::new(&node.name_any()));
        index.insert(node.name_any(), states.len());
        states.push(convert::node_state(node, gn.as_deref(), inv, now));
        gpu_nodes.push(gn);
    }
    let mut cpu_mem: Vec<(u64, u64)> = vec![(0, 0); states.len()];
    let mut ours: Vec<BTreeMap<usize, GpuUse>> = vec![BTreeMap::new(); states.len()];
    let mut add = |node: usize, cpu: u64, mem: u64, a: Option<&GpuAssignment>, states: &Vec<_>| {
        cpu_mem[node].0 += cpu;
        cpu_mem[node].1 += mem;
        if let Some(a) = a {
            let st: &autoglm_scheduler::model::NodeState = &states[node];
            for (gpu, u) in convert::assignment_use(a, |i| st.gpus.get(i).map_or(0, |g| g.mem_mib))
            {
                let e = ours[node].entry(gpu).or_default();
                e.milli += u.milli;
                e.mem_mib += u.mem_mib;
            }
        }
    };
    for pod in ctx.pods.state() {
        if is_terminal(&pod) {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        if let Some(entry) = ledger.get(&uid) {
            if let Some(&n) = index.get(&entry.node) {
                add(
                    n,
                    entry.cpu_milli,
                    entry.mem_mib,
                    Some(&entry.assignment),
                    &states,
                );
            }
            continue;
        }
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let Some(&n) = index.get(&node) else { continue };
        let (cpu, mem) = convert::pod_cpu_mem(&pod);
        let assignment = pod
            .annotations()
            .get(GpuAssignment::ANNOTATION)
            .and_then(|v| GpuAssignment::from_annotation(v).ok());
        add(n, cpu, mem, assignment.as_ref(), &states);
    }
    for (i, st) in states.iter_mut().enumerate() {
        st.cpu_used = cpu_mem[i].0.min(st.cpu_milli);
        st.mem_used = cpu_mem[i].1.min(st.mem_mib);
        convert::apply_use(st, &ours[i], &convert::nvml_used(gpu_nodes[i].as_deref()));
    }
    (Cluster::new(states), index)
}

/// Whether `req` would fit some node of the cluster if every GPU were idle (nothing placed,
/// no foreign use): `Err` with the core's explanation when not, i.e. when no node in the
/// cluster as it is could ever hold the replica (a bigger node must be added).
///
/// # Errors
/// The per-reason message of the idle cluster.
pub fn idle_fit(ctx: &Context, req: &PodRequest) -> Result<(), String> {
    let inv = Inventory {
        max_heartbeat_age_s: None,
    };
    let now = Timestamp::now();
    let states = ctx
        .nodes
        .state()
        .iter()
        .map(|n| {
            convert::node_state(
                n,
                ctx.gpu_nodes.get(&ObjectRef::new(&n.name_any())).as_deref(),
                inv,
                now,
            )
        })
        .collect();
    let mut out = Vec::new();
    feasible_nodes(&Cluster::new(states), req, &mut out).map_err(|u| u.message())
}

/// A placement to bind: pod, UID, node, assignment, score, when the pass picked it.
type Bind = (
    std::sync::Arc<Pod>,
    String,
    String,
    GpuAssignment,
    f64,
    Instant,
);

/// One placement pass.
#[tracing::instrument(skip_all, fields(pending))]
pub async fn pass(ctx: &Context, ledger: &mut Ledger) {
    let pods = ctx.pods.state();
    // The cache caught up with a binding when it shows the pod bound, or the pod is gone.
    let by_uid: HashMap<String, &std::sync::Arc<Pod>> = pods
        .iter()
        .filter_map(|p| p.uid().map(|u| (u, p)))
        .collect();
    ledger.retain_unseen(|uid| {
        by_uid
            .get(uid)
            .is_none_or(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
    });

    let now = Timestamp::now();
    let mut pending: Vec<Pending> = pods
        .iter()
        .filter(|p| is_pending_for_us(p) && !ledger.contains(&p.uid().unwrap_or_default()))
        .filter_map(|p| {
            let job = owning_job(ctx, p)?;
            if job.metadata.deletion_timestamp.is_some() {
                return None;
            }
            let item = QueueItem {
                priority: i64::from(job.spec.priority.unwrap_or(0)),
                deadline: job.spec.deadline.as_ref().map(|t| t.0),
                created: p.creation_timestamp().map_or(now, |t| t.0),
                name: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
            };
            Some(Pending {
                pod: p.clone(),
                job,
                item,
            })
        })
        .collect();
    tracing::Span::current().record("pending", pending.len());
    if pending.is_empty() {
        ctx.metrics.queue_depth.set(0);
        ctx.metrics.pending_gpu_memory_mib.set(0);
        ctx.metrics.pending_gpus.set(0);
        return;
    }
    pending.sort_by(|a, b| queue::compare(&a.item, &b.item, now));

    let (mut cluster, _index) = build_cluster(ctx, ledger);
    let requests: Vec<Option<PodRequest>> = pending
        .iter()
        .map(|p| convert::pod_request(&p.item.name, &p.job.spec).ok())
        .collect();
    // Policies are not Send: they live only in this synchronous block.
    let (binds, unschedulable, waiting, waiting_mib, waiting_gpus) = {
        let mut policies: HashMap<&'static str, Box<dyn Policy>> = HashMap::new();
        let mut feasible = Vec::new();
        let mut binds: Vec<Bind> = Vec::new();
        let mut unschedulable: Vec<(std::sync::Arc<Pod>, String)> = Vec::new();

        let (mut waiting, mut waiting_mib, mut waiting_gpus) = (0_i64, 0_i64, 0_i64);
        for (p, req) in pending.iter().zip(&requests) {
            let started = Instant::now();
            let Some(req) = req else {
                unschedulable.push((p.pod.clone(), "invalid resources in the job spec".into()));
                continue;
            };
            let name = convert::policy_name(p.job.spec.placement.policy);
            let policy = policies
                .entry(name)
                .or_insert_with(|| crate::policy::build(name, &requests));
            // `place`: fgd and autoglm decide from an index kept across this pass's decisions;
            // the others filter, then select.
            let placement: Result<Placement, String> = policy
                .place(&cluster, req, &mut feasible)
                .map_err(|u| u.message());
            match placement {
                Ok(pl) => {
                    let pl = match cluster.allocate(req, &pl) {
                        Ok(()) => pl,
                        Err(e) => {
                            // The policy picked something the model refuses (a core bug): log it
                            // and fall back to best-fit, whose picks the model always accepts.
                            tracing::error!(pod = %p.item.name, error = %e, "placement refused by the model");
                            ctx.metrics.error("PlacementRefused");
                            let Ok(pl) =
                                crate::policy::fallback().place(&cluster, req, &mut feasible)
                            else {
                                continue;
                            };
                            if cluster.allocate(req, &pl).is_err() {
                                continue;
                            }
                            pl
                        }
                    };
                    let node = cluster.nodes[pl.node].name.clone();
                    let gn = ctx.gpu_nodes.get(&ObjectRef::new(&node));
                    let assignment = convert::assignment(&node, &pl.gpus, &req.gpu, gn.as_deref());
                    let uid = p.pod.uid().unwrap_or_default();
                    ledger.insert(
                        uid.clone(),
                        Entry {
                            pod: p.item.name.clone(),
                            node: node.clone(),
                            assignment: assignment.clone(),
                            cpu_milli: req.cpu_milli,
                            mem_mib: req.mem_mib,
                            since: Instant::now(),
                        },
                    );
                    binds.push((p.pod.clone(), uid, node, assignment, pl.score, started));
                }
                Err(message) => {
                    waiting += 1;
                    match req.gpu {
                        GpuRequest::Whole { count } => waiting_gpus += i64::from(count),
                        GpuRequest::Shared { mem_mib, .. } => waiting_mib += mem_mib as i64,
                        GpuRequest::None => {}
                    }
                    unschedulable.push((p.pod.clone(), message));
                }
            }
        }
        (binds, unschedulable, waiting, waiting_mib, waiting_gpus)
    };
    ctx.metrics.queue_depth.set(waiting);
    ctx.metrics.pending_gpu_memory_mib.set(waiting_mib);
    ctx.metrics.pending_gpus.set(waiting_gpus);

    let results: Vec<_> = futures::stream::iter(binds.into_iter().map(
        |(pod, uid, node, a, score, started)| {
            let ctx = ctx.clone();
            async move {
                let r = bind(&ctx, &pod, &uid, &node, &a, score).await;
                ctx.metrics
                    .placement_latency
                    .observe(started.elapsed().as_secs_f64());
                (uid, r)
            }
        },
    ))
    .buffer_unordered(ctx.settings.bind_concurrency.max(1))
    .collect()
    .await;
    for (uid, r) in results {
        match r {
            Ok(()) => ctx.metrics.outcome("bound"),
            Err(e) => {
                ledger.remove(&uid);
                ctx.metrics.outcome("bind_error");
                ctx.metrics.error(e.category());
                tracing::warn!(error = %e, "bind failed; the pod will be placed again");
            }
        }
    }
    let patches = unschedulable.into_iter().map(|(pod, msg)| {
        let ctx = ctx.clone();
        async move {
            ctx.metrics.outcome("unschedulable");
            if let Err(e) = mark_unschedulable(&ctx, &pod, &msg).await {
                ctx.metrics.error(e.category());
                tracing::warn!(error = %e, "failed to mark pod unschedulable");
            }
        }
    });
    futures::stream::iter(patches)
        .buffer_unordered(ctx.settings.bind_concurrency.max(1))
        .collect::<Vec<()>>()
        .await;
}

/// Binds `pod` to `node` with the assignment annotation, through `pods/binding`.
///
/// # Errors
/// [`Error::Serialize`] or [`Error::BindPod`].
/// `score` is the core policy's score of the slot, kept in an annotation for the job status.
pub async fn bind(
    ctx: &Context,
    pod: &Pod,
    uid: &str,
    node: &str,
    a: &GpuAssignment,
    score: f64,
) -> Result<(), Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let value = a.to_annotation().map_err(|e| Error::Serialize {
        what: "gpu-assignment annotation",
        name: format!("{ns}/{name}"),
        source: match e {
            autoglm_api::AnnotationError::Serialize { source, .. }
            | autoglm_api::AnnotationError::Parse { source, .. } => source,
        },
    })?;
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            // Precondition: bind exactly the pod we placed, not a same-name successor.
            uid: Some(uid.to_owned()),
            annotations: Some(BTreeMap::from([
                (GpuAssignment::ANNOTATION.to_owned(), value),
                (
                    crate::pods::SCORE_ANNOTATION.to_owned(),
                    format!("{score:.4}"),
                ),
            ])),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    api.create_subresource::<Binding, serde_json::Value>(
        "binding",
        &name,
        &PostParams::default(),
        &binding,
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::BindPod {
        name: format!("{ns}/{name}"),
        node: node.to_owned(),
        source,
    })
}

/// Sets `PodScheduled=False`, reason `Unschedulable`, with `message`, unless the pod already
/// says exactly that.
///
/// # Errors
/// [`Error::PatchPod`].
pub async fn mark_unschedulable(ctx: &Context, pod: &Pod, message: &str) -> Result<(), Error> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some(UNSCHEDULABLE)
            && c.message.as_deref() == Some(message)
    }) {
        return Ok(());
    }
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let patch = serde_json::json!({
        "status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": UNSCHEDULABLE,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
        }]}
    });
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map(|_| ())
        .map_err(|source| Error::PatchPod {
            name: format!("{ns}/{name}"),
            source,
        })
}
