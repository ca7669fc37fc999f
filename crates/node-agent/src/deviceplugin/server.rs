//! The kubelet-facing gRPC `DevicePlugin` service: a protocol adapter over [`DeviceLogic`].

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::net::UnixListener;
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tonic::{Request, Response, Status};

use super::{DeviceLogic, HEALTHY, PreferredRequest, UNHEALTHY};
use crate::proto::{
    self, AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse,
    device_plugin_server::{DevicePlugin, DevicePluginServer},
};

/// Adapts a [`DeviceLogic`] to the `v1beta1.DevicePlugin` gRPC service.
pub struct PluginService<L: ?Sized> {
    logic: Arc<L>,
}

impl<L: DeviceLogic + ?Sized> PluginService<L> {
    /// Wraps `logic`.
    pub fn new(logic: Arc<L>) -> Self {
        Self { logic }
    }
}

fn to_proto_devices(devices: &[super::DeviceState]) -> ListAndWatchResponse {
    ListAndWatchResponse {
        devices: devices
            .iter()
            .map(|d| proto::Device {
                id: d.id.clone(),
                health: if d.healthy { HEALTHY } else { UNHEALTHY }.to_owned(),
                topology: None,
            })
            .collect(),
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<L: DeviceLogic + ?Sized> DevicePlugin for PluginService<L> {
    async fn get_device_plugin_options(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: self.logic.preferred_allocation_available(),
        }))
    }

    type ListAndWatchStream = DeviceStream;

    #[tracing::instrument(skip_all, fields(resource = self.logic.resource_name()))]
    async fn list_and_watch(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        tracing::info!("kubelet opened ListAndWatch");
        // WatchStream yields the current list first, then every change; a slow reader only
        // ever sees the latest list, which is what the protocol asks for (the full list
        // each time).
        let stream =
            WatchStream::new(self.logic.devices()).map(|devices| Ok(to_proto_devices(&devices)));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(resource = self.logic.resource_name()))]
    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let mut container_responses = Vec::new();
        for c in request.into_inner().container_requests {
            let req = PreferredRequest {
                available: c.available_device_i_ds,
                must_include: c.must_include_device_i_ds,
                size: usize::try_from(c.allocation_size).unwrap_or(0),
            };
            let device_i_ds = self.logic.preferred_allocation(&req)?;
            tracing::info!(size = req.size, chosen = ?device_i_ds, "preferred allocation");
            container_responses.push(ContainerPreferredAllocationResponse { device_i_ds });
        }
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    #[tracing::instrument(skip_all, fields(resource = self.logic.resource_name()))]
    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let mut container_responses = Vec::new();
        for c in request.into_inner().container_requests {
            let a = self.logic.allocate(&c.devices_ids)?;
            tracing::info!(devices = ?c.devices_ids, envs = ?a.envs, "allocated");
            container_responses.push(ContainerAllocateResponse {
                envs: a.envs.into_iter().collect(),
                annotations: a.annotations.into_iter().collect(),
                ..Default::default()
            });
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        // Registered with pre_start_required = false, so the kubelet does not call this;
        // answer anyway, as the protocol allows.
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// Errors serving a plugin socket.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be bound.
    #[error("failed to listen on device-plugin socket {path}: {source}")]
    Bind {
        /// Socket path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("failed to serve device-plugin socket {path}: {source}")]
    Serve {
        /// Socket path.
        path: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
}

/// Binds `socket` (removing a stale file first) and returns a future serving `logic` on it
/// until `shutdown` resolves.
///
/// Binding happens before this returns, so a caller may register with the kubelet as soon
/// as it has the future (the kubelet connects back to the socket during `Register`).
///
/// # Errors
/// [`ServeError::Bind`] when the socket cannot be created.
pub fn serve<L, F>(
    socket: &Path,
    logic: Arc<L>,
    shutdown: F,
) -> Result<impl Future<Output = Result<(), ServeError>> + Send + use<L, F>, ServeError>
where
    L: DeviceLogic + ?Sized,
    F: Future<Output = ()> + Send + 'static,
{
    let path = socket.display().to_string();
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ServeError::Bind { path, source }),
    }
    let listener = UnixListener::bind(socket).map_err(|source| ServeError::Bind {
        path: path.clone(),
        source,
    })?;
    let service = DevicePluginServer::new(PluginService::new(logic));
    Ok(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await
            .map_err(|source| ServeError::Serve { path, source })
    })
}
