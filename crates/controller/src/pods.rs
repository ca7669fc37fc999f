//! Replica pods: names, labels, and the pod spec built from a job.

use std::collections::BTreeMap;

use autoglm_api::InferenceJob;
use autoglm_api::wellknown::{SCHEDULER_NAME, annotations, labels, resources};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

/// Label on replica pods: the attempt number of the replica (0 for the first pod, +1 for
/// each replacement), also the last part of the pod name.
pub const ATTEMPT_LABEL: &str = "autoglm.io/attempt";
/// Label on replica pods: how many failed pods of this replica preceded this one (the
/// retries used so far).
pub const FAILURES_LABEL: &str = "autoglm.io/failures";
/// Annotation the controller puts on a failed replica pod: when it first saw the failure
/// (RFC 3339). The backoff delay runs from there, so it survives controller restarts.
pub const FAILED_AT_ANNOTATION: &str = "autoglm.io/failed-at";
/// Annotation written with the binding: the core policy's score of the chosen slot.
pub const SCORE_ANNOTATION: &str = "autoglm.io/placement-score";
/// Name of the worker container.
pub const WORKER_CONTAINER: &str = "worker";

/// Longest pod name Kubernetes accepts (a DNS-1123 subdomain).
const MAX_NAME: usize = 253;

/// Name of attempt `attempt` of replica `index` of job `job`: `<job>-<index>-<attempt>`
/// (the job part shortened when the whole would pass 253 characters).
#[must_use]
pub fn pod_name(job: &str, index: i32, attempt: u32) -> String {
    let suffix = format!("-{index}-{attempt}");
    let keep = MAX_NAME.saturating_sub(suffix.len()).min(job.len());
    let head = job[..keep].trim_end_matches(['-', '.']);
    format!("{head}{suffix}")
}

/// Attempt number from a pod name made by [`pod_name`].
#[must_use]
pub fn attempt_from_name(name: &str) -> Option<u32> {
    name.rsplit('-').next()?.parse().ok()
}

/// A label of a pod parsed as a number.
#[must_use]
pub fn label_num(pod: &Pod, key: &str) -> Option<i64> {
    pod.labels().get(key)?.parse().ok()
}

/// Arguments of `autoglm-worker run` for replica `index` of `job`.
#[must_use]
pub fn worker_args(job: &InferenceJob, index: i32) -> Vec<String> {
    let s = &job.spec;
    let task = match s.model.task {
        autoglm_api::Task::Embedding => "embedding",
        autoglm_api::Task::Classification => "classification",
    };
    let output_format = match s.output.format {
        autoglm_api::OutputFormat::Parquet => "parquet",
        autoglm_api::OutputFormat::Jsonl => "jsonl",
    };
    let mut args = vec![
        "run".to_owned(),
        format!("--model={}", s.model.uri),
        format!("--tokenizer={}", s.model.tokenizer_uri),
        format!("--task={task}"),
        format!("--input={}", s.input.uri),
        format!("--text-field={}", s.input.text_field),
        format!("--output={}", s.output.uri),
        format!("--output-format={output_format}"),
        format!("--replica-index={index}"),
        format!("--replicas={}", s.replicas),
        format!("--max-batch-size={}", s.batching.max_batch_size),
        format!("--max-delay-ms={}", s.batching.max_delay_ms),
        format!("--max-failed-items={}", s.max_failed_items),
    ];
    if let Some(id) = &s.input.id_field {
        args.push(format!("--id-field={id}"));
    }
    if let Some(p99) = s.batching.target_p99_latency_ms {
        args.push(format!("--target-p99-ms={p99}"));
    }
    if let Some(t) = s.batching.max_batch_tokens {
        args.push(format!("--max-batch-tokens={t}"));
    }
    if let Some(n) = s.checkpoint.every_items {
        args.push(format!("--checkpoint-every-items={n}"));
    }
    if let Some(n) = s.checkpoint.every_seconds {
        args.push(format!("--checkpoint-every-seconds={n}"));
    }
    args
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The extended resource (name, quantity) a replica requests: whole GPUs as
/// `autoglm.io/gpu`, a slice as `autoglm.io/gpu-memory-gib` (MiB rounded up to GiB).
#[must_use]
pub fn gpu_resource(job: &InferenceJob) -> (&'static str, String) {
    let g = &job.spec.resources.gpu;
    match (g.count, g.memory_mib) {
        (None, Some(mib)) => (
            resources::GPU_MEMORY_GIB,
            resources::memory_slice_devices(mib.max(0) as u64).to_string(),
        ),
        (count, _) => (resources::GPU, count.unwrap_or(1).to_string()),
    }
}

/// The replica pod for attempt `attempt` of replica `index`; `failures` failed pods of this
/// replica came before it. Unbound: the binder assigns the node and GPU.
#[must_use]
pub fn replica_pod(
    job: &InferenceJob,
    index: i32,
    attempt: u32,
    failures: u32,
    image_override: Option<&str>,
) -> Pod {
    let name = job.name_any();
    let spec = &job.spec;
    let (gpu_name, gpu_qty) = gpu_resource(job);
    let mut requests = BTreeMap::from([
        ("cpu".to_owned(), spec.resources.cpu.clone()),
        ("memory".to_owned(), spec.resources.memory.clone()),
        (gpu_name.to_owned(), Quantity(gpu_qty.clone())),
    ]);
    // Extended resources must have limits equal to requests; CPU stays unlimited (burst),
    // memory is capped at the request (the worker's batching adapts to it).
    let limits = BTreeMap::from([
        ("memory".to_owned(), spec.resources.memory.clone()),
        (gpu_name.to_owned(), Quantity(gpu_qty)),
    ]);
    requests.retain(|_, q| !q.0.is_empty());
    let labels = BTreeMap::from([
        (labels::JOB.to_owned(), name.clone()),
        (labels::REPLICA_INDEX.to_owned(), index.to_string()),
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (ATTEMPT_LABEL.to_owned(), attempt.to_string()),
        (FAILURES_LABEL.to_owned(), failures.to_string()),
    ]);
    let annotations = BTreeMap::from([(annotations::SAFE_TO_EVICT.to_owned(), "true".to_owned())]);
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name, index, attempt)),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            scheduler_name: Some(SCHEDULER_NAME.to_owned()),
            restart_policy: Some("Never".to_owned()),
            priority_class_name: spec.priority_class_name.clone(),
            node_selector: (!spec.placement.node_selector.is_empty())
                .then(|| spec.placement.node_selector.clone()),
            tolerations: (!spec.placement.tolerations.is_empty())
                .then(|| spec.placement.tolerations.clone()),
            containers: vec![Container {
                name: WORKER_CONTAINER.to_owned(),
                image: Some(image_override.unwrap_or(&spec.worker_image).to_owned()),
                command: Some(vec!["autoglm-worker".to_owned()]),
                args: Some(worker_args(job, index)),
                env: Some(vec![
                    field_env("POD_NAME", "metadata.name"),
                    field_env("POD_NAMESPACE", "metadata.namespace"),
                ]),
                resources: Some(ResourceRequirements {
                    requests: Some(requests),
                    limits: Some(limits),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_short() {
        assert_eq!(pod_name("embed", 3, 0), "embed-3-0");
        assert_eq!(attempt_from_name("embed-3-12"), Some(12));
        let long = "a".repeat(300);
        let n = pod_name(&long, 1, 2);
        assert_eq!(n.len(), 253);
        assert!(n.ends_with("-1-2"));
    }
}
