//! Errors of the development node.

use std::path::PathBuf;

/// Everything that can go wrong in the development node, named after the failed operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--image PATTERN=PROGRAM` rule is malformed.
    #[error("invalid image rule {rule:?}: expected PATTERN=PROGRAM with both sides non-empty")]
    InvalidImageRule {
        /// The rule as given.
        rule: String,
    },
    /// Creating or reading a local directory or file failed.
    #[error("failed to {op} {path}")]
    Io {
        /// What was attempted, e.g. `create pod directory`.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A Kubernetes API call failed.
    #[error("failed to {op} {object}")]
    Kube {
        /// What was attempted, e.g. `patch status of node`.
        op: &'static str,
        /// The object, e.g. `node devnode-a` or `pod demo/job-r0`.
        object: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Serving the kubelet registration socket failed.
    #[error("failed to serve the device-plugin registration socket {path}")]
    Serve {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting to a device plugin's socket failed.
    #[error("failed to connect to device plugin {resource} at {path}")]
    ConnectPlugin {
        /// Extended resource name.
        resource: String,
        /// Plugin socket.
        path: PathBuf,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// A device-plugin RPC failed.
    #[error("failed to call {rpc} on device plugin {resource}")]
    PluginRpc {
        /// RPC name, e.g. `Allocate`.
        rpc: &'static str,
        /// Extended resource name.
        resource: String,
        /// Cause.
        #[source]
        source: tonic::Status,
    },
    /// A container asks for more devices of a resource than are free.
    #[error(
        "failed to allocate {requested} {resource} for {pod}: only {free} of {healthy} healthy devices are free"
    )]
    InsufficientDevices {
        /// Extended resource name.
        resource: String,
        /// Pod `namespace/name`.
        pod: String,
        /// Devices requested.
        requested: usize,
        /// Devices free.
        free: usize,
        /// Healthy devices in total.
        healthy: usize,
    },
    /// A container asks for a resource no device plugin has registered.
    #[error("failed to allocate {resource} for {pod}: no device plugin registered for it")]
    NoPlugin {
        /// Extended resource name.
        resource: String,
        /// Pod `namespace/name`.
        pod: String,
    },
    /// Starting a container's process failed.
    #[error("failed to start {program} for container {container} of {pod}")]
    Spawn {
        /// Program path.
        program: PathBuf,
        /// Container name.
        container: String,
        /// Pod `namespace/name`.
        pod: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::Kube`].
    pub fn kube(op: &'static str, object: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            op,
            object: object.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
