//! Progress to the control plane: the worker patches its own Pod's `autoglm.io/progress`
//! annotation with [`ReplicaProgress`] JSON (the API crate's type, so the controller parses
//! exactly what is written), which the controller aggregates into the job's status.
//!
//! Rate: at each checkpoint and state change (woken through [`Telemetry::changed`]), and every
//! [`PERIOD`] otherwise when something changed, never more often than every [`MIN_GAP`].
//! Outside a cluster (no `POD_NAME`/`POD_NAMESPACE`, or no in-cluster config) it logs one line
//! and does nothing.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "kube")]
use k8s_openapi::api::core::v1::Pod;
#[cfg(feature = "kube")]
use kube::api::{Api, Patch, PatchParams};

use autoglm_api::ReplicaProgress;

use crate::telemetry::Telemetry;

/// Periodic patch interval.
pub const PERIOD: Duration = Duration::from_secs(2);
/// Smallest gap between two patches (checkpoints can be frequent).
pub const MIN_GAP: Duration = Duration::from_millis(500);

/// The merge patch that sets the annotation.
///
/// # Errors
/// When the progress cannot be encoded (a non-finite `itemsPerSecond`).
pub fn annotation_patch(
    p: &ReplicaProgress,
) -> Result<serde_json::Value, autoglm_api::AnnotationError> {
    let value = p.to_annotation()?;
    Ok(serde_json::json!({ "metadata": { "annotations": { ReplicaProgress::ANNOTATION: value } } }))
}

/// Runs until the task is dropped (abort it at exit after one last [`report_once`]).
pub async fn run_reporter(telemetry: Arc<Telemetry>) {
    let Some(api) = pod_api().await else { return };
    let mut last: Option<ReplicaProgress> = None;
    loop {
        let _ = tokio::time::timeout(PERIOD, telemetry.changed.notified()).await;
        let now = telemetry.snapshot();
        if last.as_ref() != Some(&now) {
            patch(&api, &now).await;
            last = Some(now);
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}

/// Patches the current snapshot once (used at exit so the final state is seen).
pub async fn report_once(telemetry: &Telemetry) {
    if let Some(api) = pod_api().await {
        patch(&api, &telemetry.snapshot()).await;
    }
}

#[cfg(feature = "kube")]
struct PodApi {
    api: Api<Pod>,
    name: String,
}

#[cfg(not(feature = "kube"))]
struct PodApi;

#[cfg(not(feature = "kube"))]
async fn pod_api() -> Option<PodApi> {
    tracing::info!("built without the `kube` feature: progress is not reported to a Pod");
    None
}

#[cfg(not(feature = "kube"))]
async fn patch(_: &PodApi, _: &ReplicaProgress) {}

#[cfg(feature = "kube")]
async fn pod_api() -> Option<PodApi> {
    let (Ok(name), Ok(ns)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) else {
        tracing::info!(
            "POD_NAME/POD_NAMESPACE not set: not in a cluster, progress is not reported to a Pod"
        );
        return None;
    };
    match kube::Client::try_default().await {
        Ok(client) => Some(PodApi {
            api: Api::namespaced(client, &ns),
            name,
        }),
        Err(e) => {
            tracing::info!(error = %e, "no Kubernetes client: progress is not reported to a Pod");
            None
        }
    }
}

#[cfg(feature = "kube")]
async fn patch(p: &PodApi, snap: &ReplicaProgress) {
    let params = PatchParams::default();
    let body = match annotation_patch(snap) {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(error = %e, "progress not reported");
            return;
        }
    };
    if let Err(e) = p.api.patch(&p.name, &params, &Patch::Merge(body)).await {
        tracing::warn!(pod = %p.name, error = %e, "failed to patch the progress annotation");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_carries_the_snapshot_as_a_json_string() {
        let snap = ReplicaProgress {
            items_done: 10,
            items_total: Some(20),
            items_failed: 1,
            items_per_second: 2.5,
            last_checkpoint_time: crate::pipeline::checkpoint_time("2026-11-30T09:00:00Z"),
            state: autoglm_api::WorkerState::Running,
        };
        let v = annotation_patch(&snap).unwrap();
        assert_eq!(
            v["metadata"]["annotations"]["autoglm.io/progress"],
            r#"{"itemsDone":10,"itemsTotal":20,"itemsFailed":1,"itemsPerSecond":2.5,"lastCheckpointTime":"2026-11-30T09:00:00Z","state":"Running"}"#
        );
    }
}
