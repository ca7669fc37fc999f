//! A kubelet device plugin (API `deviceplugin/v1beta1`).
//!
//! Layers, from the wire inwards:
//! - [`server`]: the gRPC `DevicePlugin` service on a Unix socket, a thin adapter that turns
//!   kubelet calls into [`DeviceLogic`] calls. It knows the protocol, nothing about GPUs.
//! - [`registration`]: the client side of the kubelet's `Registration` service, and
//!   [`registration::KubeletWatcher`], which notices the kubelet restarting (its
//!   `kubelet.sock` recreated).
//! - [`runner`]: the lifecycle of one plugin: serve, register, and start over when the
//!   kubelet restarts or the plugin's socket disappears.
//! - [`gpu`]: the device logic for GPUs — whole GPUs and 1 GiB memory slices — which honours
//!   the controller's `autoglm.io/gpu-assignment` annotation.
//!
//! Whole GPUs and memory slices are two extended resources, so they are two plugins: two
//! sockets, each registering its own resource name.

pub mod gpu;
pub mod registration;
pub mod runner;
pub mod server;

use std::collections::BTreeMap;

use tokio::sync::watch;

/// Device-plugin API version we implement, sent in `RegisterRequest.version`.
pub const API_VERSION: &str = "v1beta1";

/// File name of the kubelet's registration socket in the device-plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";

/// The kubelet's default device-plugin directory.
pub const DEFAULT_DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";

/// `Device.health` of a usable device.
pub const HEALTHY: &str = "Healthy";

/// `Device.health` of an unusable device.
pub const UNHEALTHY: &str = "Unhealthy";

/// One device as advertised to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceState {
    /// Device ID (at most 63 characters).
    pub id: String,
    /// Whether the kubelet may hand it out.
    pub healthy: bool,
}

/// The kubelet's question in `GetPreferredAllocation`, for one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreferredRequest {
    /// Device IDs the kubelet may choose from.
    pub available: Vec<String>,
    /// Device IDs that must be part of the answer.
    pub must_include: Vec<String>,
    /// Number of devices wanted.
    pub size: usize,
}

/// What a container receives from `Allocate`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerAllocation {
    /// Environment variables.
    pub envs: BTreeMap<String, String>,
    /// Annotations passed to the container runtime.
    pub annotations: BTreeMap<String, String>,
}

/// Errors of device logic, returned to the kubelet as gRPC statuses.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The kubelet named a device this plugin does not advertise.
    #[error("failed to allocate: unknown device ID {id} for resource {resource}")]
    UnknownDevice {
        /// The device ID.
        id: String,
        /// The extended resource.
        resource: String,
    },
    /// The request cannot be satisfied (e.g. fewer devices available than asked for).
    #[error("failed to choose devices for resource {resource}: {reason}")]
    Unsatisfiable {
        /// The extended resource.
        resource: String,
        /// Why.
        reason: String,
    },
}

impl From<PluginError> for tonic::Status {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::UnknownDevice { .. } => tonic::Status::invalid_argument(e.to_string()),
            PluginError::Unsatisfiable { .. } => tonic::Status::failed_precondition(e.to_string()),
        }
    }
}

/// The device-specific half of a device plugin; [`server::PluginService`] adapts it to the
/// kubelet protocol.
pub trait DeviceLogic: Send + Sync + 'static {
    /// Extended resource name registered with the kubelet (e.g. `autoglm.io/gpu`).
    fn resource_name(&self) -> &str;

    /// The device list; every change is streamed to the kubelet by `ListAndWatch`.
    fn devices(&self) -> watch::Receiver<Vec<DeviceState>>;

    /// Whether the kubelet should call `GetPreferredAllocation` (default true).
    fn preferred_allocation_available(&self) -> bool {
        true
    }

    /// Chooses `request.size` devices for one container.
    ///
    /// # Errors
    /// [`PluginError::Unsatisfiable`] when no choice is possible.
    fn preferred_allocation(&self, request: &PreferredRequest) -> Result<Vec<String>, PluginError>;

    /// What a container that got `device_ids` receives.
    ///
    /// # Errors
    /// [`PluginError::UnknownDevice`] for an ID this plugin does not advertise.
    fn allocate(&self, device_ids: &[String]) -> Result<ContainerAllocation, PluginError>;
}
