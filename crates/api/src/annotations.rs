//! JSON payloads carried in pod annotations: the GPU assignment the controller hands the
//! device plugin, and the progress the worker reports back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::inference_job::AssignedGpu;
use crate::wellknown::annotations;

/// Errors reading or writing an annotation payload.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    /// The annotation value is not valid JSON of the expected shape.
    #[error("failed to parse annotation {annotation}: {source}")]
    Parse {
        /// Annotation key.
        annotation: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The payload could not be serialized (only possible for non-finite floats).
    #[error("failed to serialize annotation {annotation}: {source}")]
    Serialize {
        /// Annotation key.
        annotation: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// The GPU(s) a replica pod may use, chosen by the controller and written as JSON into the
/// pod annotation [`annotations::GPU_ASSIGNMENT`]; the device plugin's `Allocate` reads it to
/// set the visible devices and the memory cap.
///
/// Whole GPUs: `gpus` lists them, `memoryMiB` and `computeMilli` are absent. A slice: `gpus`
/// holds exactly one GPU and `memoryMiB` (with optional `computeMilli`) caps its share.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GpuAssignment {
    /// Node the pod is bound to.
    pub node: String,
    /// Assigned GPUs (index and UUID).
    pub gpus: Vec<AssignedGpu>,
    /// GPU memory cap of a slice in MiB.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    /// Compute share of a slice in milli-GPU (1000 = a whole GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_milli: Option<i32>,
}

impl GpuAssignment {
    /// Annotation key this payload travels under.
    pub const ANNOTATION: &'static str = annotations::GPU_ASSIGNMENT;

    /// True when this is a slice of one GPU rather than whole GPUs.
    #[must_use]
    pub fn is_slice(&self) -> bool {
        self.memory_mib.is_some()
    }

    /// The annotation value (compact JSON).
    ///
    /// # Errors
    /// [`AnnotationError::Serialize`] if serialization fails (not expected for this shape).
    pub fn to_annotation(&self) -> Result<String, AnnotationError> {
        serde_json::to_string(self).map_err(|source| AnnotationError::Serialize {
            annotation: Self::ANNOTATION,
            source,
        })
    }

    /// Parse an annotation value.
    ///
    /// # Errors
    /// [`AnnotationError::Parse`] when the value is not JSON of this shape.
    pub fn from_annotation(value: &str) -> Result<Self, AnnotationError> {
        serde_json::from_str(value).map_err(|source| AnnotationError::Parse {
            annotation: Self::ANNOTATION,
            source,
        })
    }
}

/// What a worker reports about its shard, patched as JSON onto its own pod under
/// [`annotations::PROGRESS`] and copied by the controller into the job's replica status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaProgress {
    /// Items processed and committed (covered by the last checkpoint or earlier).
    pub items_done: u64,
    /// Items in the shard, once the worker has counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_total: Option<u64>,
    /// Items whose output record is an error (bad input lines: not JSON, or no text field).
    #[serde(default)]
    pub items_failed: u64,
    /// Throughput of the worker process in items per second: items it processed over the
    /// wall time since it started (after the last checkpoint's resume).
    #[serde(default)]
    pub items_per_second: f64,
    /// When the last checkpoint was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_time: Option<Time>,
    /// What the worker is doing.
    pub state: WorkerState,
}

impl ReplicaProgress {
    /// Annotation key this payload travels under.
    pub const ANNOTATION: &'static str = annotations::PROGRESS;

    /// The annotation value (compact JSON).
    ///
    /// # Errors
    /// [`AnnotationError::Serialize`] if `itemsPerSecond` is not finite (JSON has no NaN).
    pub fn to_annotation(&self) -> Result<String, AnnotationError> {
        if !self.items_per_second.is_finite() {
            return Err(AnnotationError::Serialize {
                annotation: Self::ANNOTATION,
                source: serde::ser::Error::custom("itemsPerSecond must be a finite number"),
            });
        }
        serde_json::to_string(self).map_err(|source| AnnotationError::Serialize {
            annotation: Self::ANNOTATION,
            source,
        })
    }

    /// Parse an annotation value.
    ///
    /// # Errors
    /// [`AnnotationError::Parse`] when the value is not JSON of this shape.
    pub fn from_annotation(value: &str) -> Result<Self, AnnotationError> {
        serde_json::from_str(value).map_err(|source| AnnotationError::Parse {
            annotation: Self::ANNOTATION,
            source,
        })
    }
}

/// What a worker is doing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Loading the model and tokenizer, or restoring the checkpoint.
    Starting,
    /// Processing items.
    Running,
    /// The whole shard is processed and committed.
    Succeeded,
    /// The worker gave up (error, or more bad items than maxFailedItems).
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_assignment_json_shape() {
        let a = GpuAssignment {
            node: "node-1".into(),
            gpus: vec![AssignedGpu {
                index: 2,
                uuid: "GPU-abc".into(),
            }],
            memory_mib: Some(20480),
            compute_milli: Some(250),
        };
        let s = a.to_annotation().unwrap();
        assert_eq!(
            s,
            r#"{"node":"node-1","gpus":[{"index":2,"uuid":"GPU-abc"}],"memoryMiB":20480,"computeMilli":250}"#
        );
        assert_eq!(GpuAssignment::from_annotation(&s).unwrap(), a);
        assert!(a.is_slice());
    }

    #[test]
    fn progress_json_shape_and_errors() {
        let p: ReplicaProgress = ReplicaProgress::from_annotation(
            r#"{"itemsDone":1234,"itemsTotal":5000,"itemsFailed":2,"itemsPerSecond":812.5,"lastCheckpointTime":"2026-11-30T09:00:00Z","state":"Running"}"#,
        )
        .unwrap();
        assert_eq!(p.items_done, 1234);
        assert_eq!(p.items_total, Some(5000));
        assert_eq!(p.state, WorkerState::Running);
        assert_eq!(
            p.last_checkpoint_time.as_ref().unwrap().0.to_string(),
            "2026-11-30T09:00:00Z"
        );
        let err = ReplicaProgress::from_annotation("{").unwrap_err();
        assert!(err.to_string().contains("autoglm.io/progress"), "{err}");
        let nan = ReplicaProgress {
            items_per_second: f64::NAN,
            ..p
        };
        assert!(nan.to_annotation().is_err());
    }
}
