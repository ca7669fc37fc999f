//! Errors of the controller, named after the operation that failed.
//!
//! Each variant carries the object it was about; [`Error::category`] is a short PascalCase
//! word used both as the Kubernetes Event reason and as the `category` label of the
//! `autoglm_controller_reconcile_errors_total` metric, so a failure is countable by kind
//! without parsing messages.

/// Everything that can go wrong while reconciling a job or placing a replica.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing or reading objects from the API server failed.
    #[error("failed to get {kind} {name}: {source}")]
    Get {
        /// The Kubernetes kind (e.g. `Pod`).
        kind: &'static str,
        /// `namespace/name` of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Creating a replica pod failed.
    #[error("failed to create pod {name}: {source}")]
    CreatePod {
        /// `namespace/name` of the pod.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a replica pod failed.
    #[error("failed to delete pod {name}: {source}")]
    DeletePod {
        /// `namespace/name` of the pod.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Patching a pod (annotations or status condition) failed.
    #[error("failed to patch pod {name}: {source}")]
    PatchPod {
        /// `namespace/name` of the pod.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Binding a pod to a node through the `pods/binding` subresource failed.
    #[error("failed to bind pod {name} to node {node}: {source}")]
    BindPod {
        /// `namespace/name` of the pod.
        name: String,
        /// The node it was to be bound to.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the job status through server-side apply failed.
    #[error("failed to apply status of InferenceJob {name}: {source}")]
    ApplyStatus {
        /// `namespace/name` of the job.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer failed.
    #[error("failed to run finalizer on InferenceJob {name}: {source}")]
    Finalizer {
        /// `namespace/name` of the job.
        name: String,
        /// The finalizer helper's error (boxed: it nests this enum).
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
    /// Serialising an annotation or patch failed (a bug, not a cluster condition).
    #[error("failed to serialise {what} for {name}: {source}")]
    Serialize {
        /// What was being serialised (e.g. `gpu-assignment annotation`).
        what: &'static str,
        /// `namespace/name` of the object.
        name: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The job object lacks a field the API server always sets (name, namespace, uid).
    #[error("InferenceJob {name} is missing {field}")]
    MissingField {
        /// `namespace/name` or what is known of it.
        name: String,
        /// The missing field's path.
        field: &'static str,
    },
}

impl Error {
    /// A short PascalCase category: the Event reason and the `category` metric label.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Error::Get { .. } => "GetFailed",
            Error::CreatePod { .. } => "CreatePodFailed",
            Error::DeletePod { .. } => "DeletePodFailed",
            Error::PatchPod { .. } => "PatchPodFailed",
            Error::BindPod { .. } => "BindFailed",
            Error::ApplyStatus { .. } => "StatusFailed",
            Error::Finalizer { .. } => "FinalizerFailed",
            Error::Serialize { .. } => "SerializeFailed",
            Error::MissingField { .. } => "InvalidObject",
        }
    }
}

/// Result alias for controller operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation_and_object() {
        let e = Error::MissingField {
            name: "ns/job".into(),
            field: "metadata.uid",
        };
        assert_eq!(e.to_string(), "InferenceJob ns/job is missing metadata.uid");
        assert_eq!(e.category(), "InvalidObject");
    }
}
