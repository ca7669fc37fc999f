//! The InferenceJob reconciler: validation, `dependsOn` gating, `suspend`, replica pods
//! (creation, failure backoff and retries, node loss), status and events.
//!
//! Placement is not done here: the reconciler creates unbound replica pods and the
//! [`crate::binder`] places and binds them in priority order across all jobs. Pod changes
//! (bound, unschedulable, progress, finished) trigger a reconcile of the owning job, which
//! folds them into the job status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use autoglm_api::wellknown::{
    API_VERSION, CONTROLLER_FIELD_MANAGER, FINALIZER, conditions, labels, reasons,
};
use autoglm_api::{
    AssignedGpu, GpuAssignment, InferenceJob, InferenceJobStatus, ItemTotals, JobPhase,
    ReplicaProgress, ReplicaState, ReplicaStatus,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::binder::{UNSCHEDULABLE, is_terminal};
use crate::context::Context;
use crate::convert::node_ready;
use crate::deps::cycle_through;
use crate::error::{Error, Result};
use crate::pods::{
    self, ATTEMPT_LABEL, FAILED_AT_ANNOTATION, FAILURES_LABEL, SCORE_ANNOTATION, attempt_from_name,
    label_num,
};

/// Requeue of a job with nothing pending on a timer: catches deadlines and anything a
/// missed watch event would leave stale.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Reconciles one job (wrapped in the finalizer helper).
///
/// # Errors
/// [`Error::Finalizer`] wrapping the failing API call.
#[tracing::instrument(skip_all, fields(job = %format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())))]
pub async fn reconcile(job: Arc<InferenceJob>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.synced.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    ctx.metrics.reconciles.inc();
    let ns = job.namespace().ok_or_else(|| Error::MissingField {
        name: job.name_any(),
        field: "metadata.namespace",
    })?;
    let api: Api<InferenceJob> = Api::namespaced(ctx.client.clone(), &ns);
    let name = format!("{ns}/{}", job.name_any());
    finalizer(&api, FINALIZER, job, |event| async {
        match event {
            Finalizer::Apply(job) => apply(&job, &ctx).await,
            Finalizer::Cleanup(job) => cleanup(&job, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer {
        name,
        source: Box::new(e),
    })
}

/// Counts the failure, records a Warning event with the error's category, and retries soon.
pub fn error_policy(job: Arc<InferenceJob>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.category());
    tracing::warn!(error = %err, "reconcile failed");
    let note = err.to_string();
    let reason = err.category().to_owned();
    let reference = job.object_ref(&());
    tokio::spawn(async move {
        let ev = Event {
            type_: EventType::Warning,
            reason,
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        let _ = ctx.recorder.publish(&ev, &reference).await;
    });
    Action::requeue(Duration::from_secs(5))
}

/// Deletes the job's pods (all of them, by label) so none outlives the job.
async fn cleanup(job: &InferenceJob, ctx: &Context) -> Result<Action> {
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("{}={}", labels::JOB, job.name_any()));
    api.delete_collection(&DeleteParams::default(), &lp)
        .await
        .map_err(|source| Error::DeletePod {
            name: format!("{ns}/{}", lp.label_selector.clone().unwrap_or_default()),
            source,
        })?;
    ctx.status_memo.forget(&job.uid().unwrap_or_default());
    tracing::info!("deleted replica pods of the deleted job");
    Ok(Action::await_change())
}

/// Pods of `job` from the cache (same namespace, job label, owned by this job's UID).
fn job_pods(ctx: &Context, job: &InferenceJob) -> Vec<Arc<Pod>> {
    let ns = job.namespace();
    let name = job.name_any();
    let uid = job.uid();
    ctx.pods
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace() == ns
                && p.labels().get(labels::JOB) == Some(&name)
                && p.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect()
}

/// Why a job may not run now.
enum Gate {
    Go,
    Blocked {
        reason: &'static str,
        message: String,
    },
    Fail {
        reason: &'static str,
        message: String,
    },
    Suspended,
}

fn gate(job: &InferenceJob, ctx: &Context, now: Timestamp) -> Gate {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    if !job.spec.depends_on.is_empty() {
        let graph: BTreeMap<String, Vec<String>> = ctx
            .jobs
            .state()
            .iter()
            .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
            .map(|j| (j.name_any(), j.spec.depends_on.clone()))
            .chain(std::iter::once((name.clone(), job.spec.depends_on.clone())))
            .collect();
        if let Some(cycle) = cycle_through(&name, &graph) {
            return Gate::Blocked {
                reason: reasons::DEPENDENCY_CYCLE,
                message: format!(
                    "spec.dependsOn forms a cycle: {}; the job cannot run until it is broken",
                    cycle.join(" -> ")
                ),
            };
        }
        for dep in &job.spec.depends_on {
            match ctx.jobs.get(&ObjectRef::new(dep).within(&ns)) {
                None => {
                    return Gate::Blocked {
                        reason: reasons::DEPENDENCY_NOT_FOUND,
                        message: format!("waiting for InferenceJob {dep}, which does not exist"),
                    };
                }
                Some(d) => match d.status.as_ref().and_then(|s| s.phase) {
                    Some(JobPhase::Succeeded) => {}
                    Some(JobPhase::Failed) => {
                        return Gate::Fail {
                            reason: reasons::DEPENDENCY_FAILED,
                            message: format!("dependency InferenceJob {dep} failed"),
                        };
                    }
                    phase => {
                        return Gate::Blocked {
                            reason: reasons::DEPENDENCIES_PENDING,
                            message: format!(
                                "waiting for InferenceJob {dep} to complete (phase {})",
                                phase.map_or("Pending".to_owned(), |p| format!("{p:?}"))
                            ),
                        };
                    }
                },
            }
        }
    }
    if let Some(deadline) = &job.spec.deadline
        && now > deadline.0
    {
        return Gate::Fail {
            reason: reasons::DEADLINE_EXCEEDED,
            message: format!("deadline {} passed before the job completed", deadline.0),
        };
    }
    if job.spec.suspend {
        return Gate::Suspended;
    }
    Gate::Go
}

/// What the replica pass decided for one replica.
struct ReplicaOutcome {
    status: ReplicaStatus,
    /// Set when the pod is bound (or finished).
    bound: bool,
    /// The unschedulable message, while nothing fits.
    unschedulable: Option<String>,
    /// Set when the replica exhausted its retries.
    failed: Option<String>,
    /// Wake up again after this long (backoff).
    requeue: Option<Duration>,
}

fn new_replica(index: i32) -> ReplicaStatus {
    ReplicaStatus {
        index,
        pod: None,
        node: None,
        gpus: Vec::new(),
        memory_mib: None,
        compute_milli: None,
        placement_score: None,
        state: ReplicaState::Pending,
        items_done: 0,
        items_total: None,
        items_failed: 0,
        restarts: 0,
        last_checkpoint_time: None,
        message: None,
    }
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn unschedulable_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some(UNSCHEDULABLE)
        })
        .map(|c| c.message.clone().unwrap_or_default())
}

fn failure_reason(pod: &Pod) -> String {
    let st = pod.status.as_ref();
    let term = st
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find_map(|c| c.state.as_ref()?.terminated.clone()));
    match (
        st.and_then(|s| s.reason.clone()),
        st.and_then(|s| s.message.clone()),
        term,
    ) {
        (_, _, Some(t)) => format!(
            "exit code {}{}{}",
            t.exit_code,
            t.reason.map(|r| format!(", {r}")).unwrap_or_default(),
            t.message.map(|m| format!(": {m}")).unwrap_or_default()
        ),
        (Some(r), Some(m), None) => format!("{r}: {m}"),
        (Some(r), None, None) | (None, Some(r), None) => r,
        (None, None, None) => "pod failed".to_owned(),
    }
}

/// Delay before retry number `retry` (1-based): min(initial * 2^(retry-1), max) seconds.
#[must_use]
pub fn backoff_delay(initial_s: i32, max_s: i32, retry: u32) -> Duration {
    let exp = retry.saturating_sub(1).min(30);
    let d = i64::from(initial_s.max(0))
        .saturating_mul(1_i64 << exp)
        .min(i64::from(max_s.max(0)));
    Duration::from_secs(d as u64)
}

/// Fills placement and progress fields of a replica status from its current pod.
fn fill_from_pod(r: &mut ReplicaStatus, pod: &Pod) {
    r.pod = Some(pod.name_any());
    r.node = pod_node(pod).map(str::to_owned);
    if let Some(a) = pod
        .annotations()
        .get(GpuAssignment::ANNOTATION)
        .and_then(|v| GpuAssignment::from_annotation(v).ok())
    {
        r.gpus = a
            .gpus
            .iter()
            .map(|g| AssignedGpu {
                index: g.index,
                uuid: g.uuid.clone(),
            })
            .collect();
        r.memory_mib = a.memory_mib;
        r.compute_milli = a.compute_milli;
    }
    r.placement_score = pod
        .annotations()
        .get(SCORE_ANNOTATION)
        .and_then(|s| s.parse().ok());
    if let Some(p) = pod
        .annotations()
        .get(ReplicaProgress::ANNOTATION)
        .and_then(|v| ReplicaProgress::from_annotation(v).ok())
    {
        r.items_done = p.items_done as i64;
        r.items_total = p.items_total.map(|t| t as i64);
        r.items_failed = p.items_failed as i64;
        r.last_checkpoint_time = p.last_checkpoint_time;
    }
}

/// The job's `itemsPerSecond` (rounded to 0.01): while it runs, `running_rate` (the running
/// replicas' reported rates, summed); once it has a `completionTime`, the whole run's
/// average, items done / (completionTime - startTime) in whole seconds (the precision both
/// times are stored with, so the figure does not change once they are persisted), and it
/// stays after the replicas are gone. `None` when there is nothing to report: no
/// `startTime` (the controller never saw a replica running) or a run of under one second.
fn job_rate(
    running_rate: f64,
    done: i64,
    start: Option<&Time>,
    completion: Option<&Time>,
) -> Option<f64> {
    let rate = match (start, completion) {
        (Some(start), Some(end)) => done as f64 / (end.0.as_second() - start.0.as_second()) as f64,
        (_, Some(_)) => return None,
        (_, None) => running_rate,
    };
    (rate > 0.0 && rate.is_finite()).then_some((rate * 100.0).round() / 100.0)
}

fn progress_rate(pod: &Pod) -> f64 {
    pod.annotations()
        .get(ReplicaProgress::ANNOTATION)
        .and_then(|v| ReplicaProgress::from_annotation(v).ok())
        .map_or(0.0, |p| p.items_per_second)
}

/// What the node of a bound pod says about the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeHealth {
    /// Ready (or not tracked as lost).
    Ready,
    /// NotReady since `since`, for less than `--node-lost-after-s`: it counts as lost at
    /// `lost_at`, `remaining` from now.
    NotReadyFor {
        since: Timestamp,
        lost_at: Timestamp,
        remaining: Duration,
    },
    /// Gone, or NotReady for `--node-lost-after-s` or longer (or with no transition time):
    /// the pod is deleted so the replica is placed again.
    Lost(String),
}

/// [`NodeHealth`] of node `name` (`node`: its cached object, `None` when it no longer
/// exists) at `now`, with the Ready condition's `lastTransitionTime` as the start of a
/// NotReady spell and `lost_after_s` the setting `--node-lost-after-s`.
fn node_health(node: Option<&Node>, name: &str, lost_after_s: i64, now: Timestamp) -> NodeHealth {
    let Some(n) = node else {
        return NodeHealth::Lost(format!("node {name} no longer exists"));
    };
    if node_ready(n) {
        return NodeHealth::Ready;
    }
    let since = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    let lost_at = since.and_then(|t| t.checked_add(SignedDuration::from_secs(lost_after_s)).ok());
    match (since, lost_at) {
        (Some(since), Some(lost_at)) if now < lost_at => NodeHealth::NotReadyFor {
            since,
            lost_at,
            remaining: Duration::from_secs(lost_at.duration_since(now).as_secs().max(1) as u64),
        },
        _ => NodeHealth::Lost(format!("node {name} is NotReady")),
    }
}

async fn publish(ctx: &Context, job: &InferenceJob, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &job.object_ref(&())).await {
        tracing::debug!(error = %e, "failed to publish event");
    }
}

async fn create_pod(
    ctx: &Context,
    job: &InferenceJob,
    index: i32,
    attempt: u32,
    failures: u32,
) -> Result<()> {
    let pod = pods::replica_pod(
        job,
        index,
        attempt,
        failures,
        ctx.settings.worker_image.as_deref(),
    );
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    match api
        .create(
            &PostParams {
                field_manager: Some(CONTROLLER_FIELD_MANAGER.into()),
                ..PostParams::default()
            },
            &pod,
        )
        .await
    {
        Ok(_) => Ok(()),
        // Created by an earlier reconcile whose result the cache has not shown yet (or
        // before a restart): deterministic names make creation idempotent.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(Error::CreatePod {
            name: format!("{ns}/{}", pod.name_any()),
            source,
        }),
    }
}

async fn delete_pod(ctx: &Context, pod: &Pod, force: bool) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = if force {
        DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        }
    } else {
        DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::DeletePod {
            name: format!("{ns}/{}", pod.name_any()),
            source,
        }),
    }
}

async fn annotate_failed_at(ctx: &Context, pod: &Pod, at: Timestamp) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let patch =
        serde_json::json!({"metadata": {"annotations": {FAILED_AT_ANNOTATION: at.to_string()}}});
    api.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::PatchPod {
        name: format!("{ns}/{}", pod.name_any()),
        source,
    })
}

/// Drives one replica towards a running pod: creates, retries with backoff, replaces pods
/// on lost nodes.
async fn replica(
    ctx: &Context,
    job: &InferenceJob,
    index: i32,
    mut pods: Vec<Arc<Pod>>,
    prev: Option<&ReplicaStatus>,
    now: Timestamp,
) -> Result<ReplicaOutcome> {
    let mut out = ReplicaOutcome {
        status: new_replica(index),
        bound: false,
        unschedulable: None,
        failed: None,
        requeue: None,
    };
    let attempt_of = |p: &Pod| {
        label_num(p, ATTEMPT_LABEL).map_or_else(
            || attempt_from_name(&p.name_any()).unwrap_or(0),
            |a| a as u32,
        )
    };
    pods.sort_by_key(|p| attempt_of(p));
    let latest = pods.pop();
    // Older attempts (failed pods already replaced) go away.
    for old in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        delete_pod(ctx, old, false).await?;
    }
    let max_retries = job.spec.retry_policy.max_retries.max(0) as u32;
    let Some(pod) = latest else {
        // No pod: first start, or the previous one was deleted (node loss, eviction, user).
        let prev_attempt = prev
            .and_then(|r| r.pod.as_deref())
            .and_then(attempt_from_name);
        let attempt = prev_attempt.map_or(0, |a| a + 1);
        let failures = prev.map_or(0, |r| r.restarts.max(0) as u32);
        if prev_attempt.is_some() {
            // The status names an earlier pod the cache does not show: make sure it is really
            // gone (the cache may lag its deletion or creation) before replacing it.
            let api: Api<Pod> =
                Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
            let lp = ListParams::default().labels(&format!(
                "{}={},{}={index}",
                labels::JOB,
                job.name_any(),
                labels::REPLICA_INDEX
            ));
            let live = api.list(&lp).await.map_err(|source| Error::Get {
                kind: "Pod",
                name: format!(
                    "{}/{}",
                    job.namespace().unwrap_or_default(),
                    lp.label_selector.clone().unwrap_or_default()
                ),
                source,
            })?;
            if !live.items.is_empty() {
                if let Some(r) = prev {
                    out.status = r.clone();
                }
                out.requeue = Some(Duration::from_secs(1));
                return Ok(out);
            }
            publish(
                ctx,
                job,
                EventType::Normal,
                "Rescheduling",
                format!("replica {index} lost its pod; creating attempt {attempt}"),
            )
            .await;
        }
        create_pod(ctx, job, index, attempt, failures).await?;
        out.status.pod = Some(pods::pod_name(&job.name_any(), index, attempt));
        out.status.restarts = failures as i32;
        return Ok(out);
    };
    let attempt = attempt_of(&pod);
    let failures = label_num(&pod, FAILURES_LABEL).unwrap_or(0).max(0) as u32;
    out.status.restarts = failures as i32;
    fill_from_pod(&mut out.status, &pod);
    if pod.metadata.deletion_timestamp.is_some() {
        out.status.message = Some("waiting for the previous pod to terminate".into());
        out.bound = pod_node(&pod).is_some();
        out.requeue = Some(Duration::from_secs(2));
        return Ok(out);
    }
    match pod_phase(&pod) {
        "Succeeded" => {
            out.status.state = ReplicaState::Succeeded;
            out.bound = true;
        }
        "Failed" => {
            let reason = failure_reason(&pod);
            let retry = failures + 1;
            if retry > max_retries {
                out.status.state = ReplicaState::Failed;
                out.status.message = Some(reason.clone());
                out.bound = true;
                out.failed = Some(format!(
                    "replica {index} failed {retry} times (retryPolicy.maxRetries {max_retries}); last failure: {reason}"
                ));
                return Ok(out);
            }
            let delay = backoff_delay(
                job.spec.retry_policy.backoff.initial_seconds,
                job.spec.retry_policy.backoff.max_seconds,
                retry,
            );
            let failed_at = pod
                .annotations()
                .get(FAILED_AT_ANNOTATION)
                .and_then(|s| s.parse::<Timestamp>().ok());
            let failed_at = match failed_at {
                Some(t) => t,
                None => {
                    annotate_failed_at(ctx, &pod, now).await?;
                    publish(ctx, job, EventType::Warning, "ReplicaFailed", format!(
                        "replica {index} pod {} failed: {reason}; retry {retry} of {max_retries} in {}s", pod.name_any(), delay.as_secs()
                    )).await;
                    now
                }
            };
            let waited = now.duration_since(failed_at).as_secs().max(0) as u64;
            if waited >= delay.as_secs() {
                create_pod(ctx, job, index, attempt + 1, retry).await?;
                publish(ctx, job, EventType::Normal, "Retrying", format!(
                    "recreating replica {index} as attempt {} (retry {retry} of {max_retries}) after {}s backoff; the worker resumes from its checkpoint",
                    attempt + 1, delay.as_secs()
                )).await;
                delete_pod(ctx, &pod, false).await?;
                out.status.pod = Some(pods::pod_name(&job.name_any(), index, attempt + 1));
                out.status.restarts = retry as i32;
                out.status.state = ReplicaState::Pending;
                out.status.node = None;
                out.status.gpus.clear();
            } else {
                out.status.state = ReplicaState::BackingOff;
                out.status.message = Some(format!(
                    "{reason}; retry {retry} of {max_retries} in {}s",
                    delay.as_secs() - waited
                ));
                out.requeue = Some(Duration::from_secs(delay.as_secs() - waited));
            }
        }
        phase => match pod_node(&pod) {
            None => {
                out.unschedulable = unschedulable_message(&pod);
                out.status.message.clone_from(&out.unschedulable);
            }
            Some(node) => {
                let cached = ctx.nodes.get(&ObjectRef::new(node));
                let health =
                    node_health(cached.as_deref(), node, ctx.settings.node_lost_after_s, now);
                match health {
                    NodeHealth::Ready => {}
                    NodeHealth::NotReadyFor {
                        since,
                        lost_at,
                        remaining,
                    } => {
                        // Look again when the node would count as lost, not at the next
                        // resync. Absolute times keep the message, and so the status,
                        // unchanged between reconciles.
                        out.requeue = Some(remaining);
                        out.status.message = Some(format!(
                            "node {node} is NotReady since {since}; the replica is placed again if it still is at {lost_at}"
                        ));
                    }
                    NodeHealth::Lost(why) => {
                        publish(
                            ctx,
                            job,
                            EventType::Warning,
                            "NodeLost",
                            format!(
                                "replica {index}: {why}; deleting pod {} to reschedule it",
                                pod.name_any()
                            ),
                        )
                        .await;
                        delete_pod(ctx, &pod, true).await?;
                        out.status.message = Some(why);
                        out.requeue = Some(Duration::from_secs(1));
                        return Ok(out);
                    }
                }
                out.bound = true;
                out.status.state = if phase == "Running" {
                    ReplicaState::Running
                } else {
                    ReplicaState::Scheduled
                };
            }
        },
    }
    Ok(out)
}

/// Sets condition `type_` in `conds`, keeping `lastTransitionTime` from `prev` when the
/// status did not change.
#[allow(clippy::too_many_arguments)]
fn set_condition(
    conds: &mut Vec<Condition>,
    prev: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    let ltt = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    conds.push(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: ltt,
    });
}

/// Status of a job, with the parts needed for events.
struct Summary {
    phase: JobPhase,
    reason: &'static str,
    message: Option<String>,
}

async fn apply(job: &InferenceJob, ctx: &Context) -> Result<Action> {
    // Whole seconds, as `metav1.Time` round-trips through the API server: a status computed
    // here then compares equal to the same status read back (see `StatusMemo`).
    let now = Timestamp::now();
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let uid = job.uid().unwrap_or_default();
    // The cache may not show this controller's last status write yet.
    let known = ctx.status_memo.known(
        &uid,
        job.metadata.resource_version.as_deref(),
        job.status.as_ref(),
    );
    let prev = known.clone().unwrap_or_default();
    let pods = job_pods(ctx, job);
    if prev.phase.is_some_and(JobPhase::is_terminal) {
        if prev.phase == Some(JobPhase::Failed) {
            for p in pods
                .iter()
                .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
            {
                delete_pod(ctx, p, false).await?;
            }
        }
        return Ok(Action::await_change());
    }
    let gate = gate(job, ctx, now);
    let blocked = matches!(gate, Gate::Blocked { .. });
    let mut replicas: Vec<ReplicaStatus> = Vec::new();
    let mut requeue = RESYNC;
    let mut unschedulable = None;
    let mut failed = None;
    let (mut bound, mut running, mut succeeded) = (0, 0, 0);
    let mut rate = 0.0;
    let n = job.spec.replicas.max(0);
    let summary = match gate {
        Gate::Go => {
            for index in 0..n {
                let mine: Vec<Arc<Pod>> = pods
                    .iter()
                    .filter(|p| label_num(p, labels::REPLICA_INDEX) == Some(i64::from(index)))
                    .cloned()
                    .collect();
                let prev_r = prev.replicas.iter().find(|r| r.index == index);
                let o = replica(ctx, job, index, mine.clone(), prev_r, now).await?;
                if let Some(r) = o.requeue {
                    requeue = requeue.min(r);
                }
                bound += i32::from(o.bound);
                running += i32::from(o.status.state == ReplicaState::Running);
                succeeded += i32::from(o.status.state == ReplicaState::Succeeded);
                if o.status.state == ReplicaState::Running {
                    rate += mine.iter().map(|p| progress_rate(p)).fold(0.0, f64::max);
                }
                if unschedulable.is_none() {
                    unschedulable = o.unschedulable.map(|m| format!("replica {index}: {m}"));
                }
                if failed.is_none() {
                    failed = o.failed;
                }
                replicas.push(o.status);
            }
            // Replicas beyond spec.replicas (cannot happen while replicas is immutable).
            for p in pods
                .iter()
                .filter(|p| label_num(p, labels::REPLICA_INDEX).is_none_or(|i| i >= i64::from(n)))
            {
                delete_pod(ctx, p, false).await?;
            }
            if let Some(m) = failed.clone() {
                for p in job_pods(ctx, job).iter().filter(|p| !is_terminal(p)) {
                    delete_pod(ctx, p, false).await?;
                }
                Summary {
                    phase: JobPhase::Failed,
                    reason: reasons::RETRIES_EXHAUSTED,
                    message: Some(m),
                }
            } else if succeeded == n {
                Summary {
                    phase: JobPhase::Succeeded,
                    reason: reasons::ALL_ITEMS_PROCESSED,
                    message: None,
                }
            } else if running > 0 {
                Summary {
                    phase: JobPhase::Running,
                    reason: reasons::REPLICAS_RUNNING,
                    message: unschedulable.clone(),
                }
            } else if bound == n {
                Summary {
                    phase: JobPhase::Scheduled,
                    reason: reasons::ALL_REPLICAS_BOUND,
                    message: None,
                }
            } else if let Some(m) = unschedulable.clone() {
                // Validation the CRD cannot do: would any node hold a replica even if idle?
                let req = crate::convert::pod_request(&job.name_any(), &job.spec);
                let never = req
                    .ok()
                    .and_then(|r| crate::binder::idle_fit(ctx, &r).err());
                let message = match never {
                    // The same reasons as now (e.g. no node has the GPU type): say so once.
                    Some(idle) if m.ends_with(&idle) => format!(
                        "{m}; no node in the cluster could hold a replica even when idle, for the same reasons; waiting for a node that fits"
                    ),
                    Some(idle) => format!(
                        "{m}; no node in the cluster could hold a replica even when idle ({idle}); waiting for a node that fits"
                    ),
                    None => m,
                };
                Summary {
                    phase: JobPhase::Waiting,
                    reason: reasons::UNSCHEDULABLE,
                    message: Some(message),
                }
            } else {
                Summary {
                    phase: JobPhase::Pending,
                    reason: "ReplicasPending",
                    message: Some("replica pods are waiting for placement".into()),
                }
            }
        }
        Gate::Blocked { reason, message } => {
            for p in pods.iter().filter(|p| !is_terminal(p)) {
                delete_pod(ctx, p, false).await?;
            }
            Summary {
                phase: JobPhase::Blocked,
                reason,
                message: Some(message),
            }
        }
        Gate::Fail { reason, message } => {
            for p in pods.iter().filter(|p| !is_terminal(p)) {
                delete_pod(ctx, p, false).await?;
            }
            Summary {
                phase: JobPhase::Failed,
                reason,
                message: Some(message),
            }
        }
        Gate::Suspended => {
            for p in pods.iter().filter(|p| !is_terminal(p)) {
                delete_pod(ctx, p, false).await?;
            }
            Summary {
                phase: JobPhase::Suspended,
                reason: reasons::SUSPENDED,
                message: Some("spec.suspend is true".into()),
            }
        }
    };
    // Keep progress of replicas we did not look at (blocked/suspended/failed).
    if replicas.is_empty() {
        replicas = prev.replicas.clone();
    }

    let generation = job.metadata.generation;
    let mut conds = Vec::new();
    let msg = summary.message.clone().unwrap_or_default();
    let scheduled = bound == n && n > 0 || matches!(summary.phase, JobPhase::Succeeded);
    let sched_reason = if scheduled {
        reasons::ALL_REPLICAS_BOUND
    } else if unschedulable.is_some() {
        UNSCHEDULABLE
    } else {
        summary.reason
    };
    let sched_msg = if scheduled {
        format!("{n}/{n} replicas bound")
    } else {
        unschedulable.clone().unwrap_or_else(|| msg.clone())
    };
    set_condition(
        &mut conds,
        &prev.conditions,
        conditions::SCHEDULED,
        scheduled,
        sched_reason,
        &sched_msg,
        generation,
        now,
    );
    set_condition(
        &mut conds,
        &prev.conditions,
        conditions::PROGRESSING,
        running > 0,
        summary.reason,
        &msg,
        generation,
        now,
    );
    let complete = summary.phase == JobPhase::Succeeded;
    set_condition(
        &mut conds,
        &prev.conditions,
        conditions::COMPLETE,
        complete,
        summary.reason,
        &msg,
        generation,
        now,
    );
    let is_failed = summary.phase == JobPhase::Failed;
    set_condition(
        &mut conds,
        &prev.conditions,
        conditions::FAILED,
        is_failed,
        summary.reason,
        &msg,
        generation,
        now,
    );
    if !job.spec.depends_on.is_empty() {
        let (r, m) = if blocked {
            (summary.reason, msg.as_str())
        } else {
            (reasons::DEPENDENCIES_COMPLETE, "all dependencies completed")
        };
        set_condition(
            &mut conds,
            &prev.conditions,
            conditions::BLOCKED,
            blocked,
            r,
            m,
            generation,
            now,
        );
    }

    let done: i64 = replicas.iter().map(|r| r.items_done).sum();
    let total: Option<i64> = replicas.iter().map(|r| r.items_total).sum();
    let total = if replicas.len() == n as usize {
        total
    } else {
        None
    };
    let terminal = summary.phase.is_terminal();
    let start_time = prev
        .start_time
        .clone()
        .or_else(|| (running > 0).then_some(Time(now)));
    let completion_time = prev
        .completion_time
        .clone()
        .or_else(|| terminal.then_some(Time(now)));
    let items_per_second = job_rate(rate, done, start_time.as_ref(), completion_time.as_ref());
    let status = InferenceJobStatus {
        observed_generation: generation,
        phase: Some(summary.phase),
        conditions: conds,
        ready_replicas: Some(running),
        ready: Some(format!("{running}/{n}")),
        progress: Some(format!(
            "{done}/{}",
            total.map_or("?".to_owned(), |t| t.to_string())
        )),
        totals: Some(ItemTotals {
            items_done: done,
            items_total: total,
            items_failed: replicas.iter().map(|r| r.items_failed).sum(),
        }),
        replicas,
        completion_time,
        start_time,
        items_per_second,
        message: summary.message.clone(),
    };
    if Some(&status) != known.as_ref() {
        let ns = job.namespace().unwrap_or_default();
        let api: Api<InferenceJob> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"apiVersion": API_VERSION, "kind": "InferenceJob", "status": status});
        let written = api
            .patch_status(
                &job.name_any(),
                &PatchParams::apply(CONTROLLER_FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| Error::ApplyStatus {
                name: format!("{ns}/{}", job.name_any()),
                source,
            })?;
        ctx.status_memo.record(
            &uid,
            job.metadata.resource_version.as_deref(),
            written.metadata.resource_version.as_deref(),
            status.clone(),
        );
    }
    if prev.phase != Some(summary.phase)
        || (summary.phase == JobPhase::Blocked && prev.message != summary.message)
    {
        let (t, reason) = match summary.phase {
            JobPhase::Failed => (EventType::Warning, summary.reason),
            JobPhase::Waiting => (EventType::Warning, UNSCHEDULABLE),
            JobPhase::Blocked if summary.reason == reasons::DEPENDENCY_CYCLE => {
                (EventType::Warning, summary.reason)
            }
            JobPhase::Blocked => (EventType::Normal, "Blocked"),
            JobPhase::Scheduled => (EventType::Normal, "Scheduled"),
            JobPhase::Running => (EventType::Normal, "Running"),
            JobPhase::Succeeded => (EventType::Normal, "Completed"),
            JobPhase::Suspended => (EventType::Normal, "Suspended"),
            JobPhase::Pending => (EventType::Normal, "Pending"),
        };
        let note = summary
            .message
            .clone()
            .unwrap_or_else(|| format!("phase {:?}", summary.phase));
        publish(ctx, job, t, reason, note).await;
    }
    if terminal {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        // initial 10 s, max 300 s: 10, 20, 40, 80, 160, 300, 300
        let d: Vec<u64> = (1..=7)
            .map(|r| backoff_delay(10, 300, r).as_secs())
            .collect();
        assert_eq!(d, [10, 20, 40, 80, 160, 300, 300]);
    }

    fn node(ready: &str, since: Option<&str>) -> Node {
        use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
        Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    last_transition_time: since.map(|t| Time(t.parse().unwrap())),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn node_health_counts_down_to_lost() {
        let now: Timestamp = "2026-11-30T10:01:00Z".parse().unwrap();
        let ready = node("True", Some("2026-11-30T09:00:00Z"));
        assert_eq!(node_health(Some(&ready), "n1", 60, now), NodeHealth::Ready);
        // NotReady since 10:00:15 with a 60 s limit: lost at 10:01:15, 15 s from now.
        let spell = node("False", Some("2026-11-30T10:00:15Z"));
        assert_eq!(
            node_health(Some(&spell), "n1", 60, now),
            NodeHealth::NotReadyFor {
                since: "2026-11-30T10:00:15Z".parse().unwrap(),
                lost_at: "2026-11-30T10:01:15Z".parse().unwrap(),
                remaining: Duration::from_secs(15),
            }
        );
        // Exactly at the limit, past it, with no transition time, or gone: lost.
        let lost = NodeHealth::Lost("node n1 is NotReady".into());
        let at_limit = node("Unknown", Some("2026-11-30T10:00:00Z"));
        assert_eq!(node_health(Some(&at_limit), "n1", 60, now), lost);
        assert_eq!(node_health(Some(&spell), "n1", 30, now), lost);
        assert_eq!(node_health(Some(&node("False", None)), "n1", 60, now), lost);
        assert_eq!(
            node_health(None, "n1", 60, now),
            NodeHealth::Lost("node n1 no longer exists".into())
        );
        // Under a second left rounds up to one, so the requeue is never zero.
        let late: Timestamp = "2026-11-30T10:01:14.5Z".parse().unwrap();
        assert!(matches!(
            node_health(Some(&spell), "n1", 60, late),
            NodeHealth::NotReadyFor { remaining, .. } if remaining == Duration::from_secs(1)
        ));
    }

    #[test]
    fn job_rate_is_the_running_sum_then_the_run_average() {
        let t = |s: &str| Time(s.parse().unwrap());
        let (start, end) = (t("2026-11-30T10:00:00Z"), t("2026-11-30T10:00:30Z"));
        // Running: the replicas' summed rate, rounded to 0.01.
        assert_eq!(job_rate(123.456, 500, Some(&start), None), Some(123.46));
        assert_eq!(job_rate(0.0, 0, None, None), None);
        // Finished: 3000 items in 30 s.
        assert_eq!(job_rate(0.0, 3000, Some(&start), Some(&end)), Some(100.0));
        // Finished with no startTime (never seen running), or within one second: nothing.
        let sub_second = t("2026-11-30T10:00:30.900Z");
        assert_eq!(job_rate(0.0, 10, Some(&end), Some(&sub_second)), None);
        assert_eq!(job_rate(0.0, 0, None, Some(&end)), None);
        assert_eq!(job_rate(0.0, 10, Some(&end), Some(&end)), None);
    }
}
