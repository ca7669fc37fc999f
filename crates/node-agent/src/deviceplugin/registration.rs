//! The kubelet's `Registration` service, from the plugin's side, and the watch on the
//! kubelet's socket that tells a plugin to register again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{API_VERSION, KUBELET_SOCKET};
use crate::proto::{DevicePluginOptions, RegisterRequest, registration_client::RegistrationClient};

/// Errors talking to the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// The socket could not be connected to.
    #[error("failed to connect to {path}: {source}")]
    Connect {
        /// Socket path.
        path: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The kubelet refused the registration.
    #[error("failed to register resource {resource} with the kubelet at {path}: {source}")]
    Register {
        /// Extended resource.
        resource: String,
        /// Kubelet socket path.
        path: String,
        /// The gRPC status.
        source: tonic::Status,
    },
    /// The device-plugin directory could not be watched.
    #[error("failed to watch device-plugin directory {path}: {source}")]
    Watch {
        /// Directory.
        path: String,
        /// The notify error.
        source: notify::Error,
    },
}

/// Opens a gRPC channel over the Unix socket at `path`.
///
/// tonic speaks HTTP/2 over any byte stream; the URI is a placeholder that only fills the
/// `:authority` header (the kubelet ignores it), the connector dials the socket.
///
/// # Errors
/// [`RegistrationError::Connect`] when the socket does not accept a connection.
pub async fn connect_unix(path: &Path) -> Result<Channel, RegistrationError> {
    let socket = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|source| RegistrationError::Connect {
            path: path.display().to_string(),
            source,
        })
}

/// Registers a plugin whose socket is `endpoint` (a file name inside the device-plugin
/// directory) for `resource` with the kubelet listening on `kubelet_socket`.
///
/// # Errors
/// [`RegistrationError::Connect`] or [`RegistrationError::Register`].
pub async fn register(
    kubelet_socket: &Path,
    endpoint: &str,
    resource: &str,
    options: DevicePluginOptions,
) -> Result<(), RegistrationError> {
    let channel = connect_unix(kubelet_socket).await?;
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            version: API_VERSION.to_owned(),
            endpoint: endpoint.to_owned(),
            resource_name: resource.to_owned(),
            options: Some(options),
        })
        .await
        .map_err(|source| RegistrationError::Register {
            resource: resource.to_owned(),
            path: kubelet_socket.display().to_string(),
            source,
        })?;
    Ok(())
}

/// Watches the device-plugin directory (inotify through `notify`) and counts kubelet
/// (re)starts: every time `kubelet.sock` is created, and every time any file in the
/// directory is removed (a kubelet that starts wipes the directory, which removes our
/// sockets), the generation published on [`KubeletWatcher::subscribe`] goes up by one.
///
/// # Caveats
/// inotify sees only changes made on this host's view of the directory; the DaemonSet must
/// mount the kubelet's directory itself (a hostPath), not a copy.
pub struct KubeletWatcher {
    dir: PathBuf,
    generation: watch::Receiver<u64>,
    // Kept alive: dropping the watcher stops the notifications.
    _watcher: notify::RecommendedWatcher,
}

impl KubeletWatcher {
    /// Starts watching `dir`.
    ///
    /// # Errors
    /// [`RegistrationError::Watch`] when the directory cannot be watched (e.g. it does not
    /// exist).
    pub fn start(dir: &Path) -> Result<Self, RegistrationError> {
        let (tx, rx) = watch::channel(0_u64);
        let map_err = |source| RegistrationError::Watch {
            path: dir.display().to_string(),
            source,
        };
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                let kubelet_created = matches!(event.kind, EventKind::Create(_))
                    && event
                        .paths
                        .iter()
                        .any(|p| p.file_name().is_some_and(|n| n == KUBELET_SOCKET));
                let removed = matches!(event.kind, EventKind::Remove(_));
                if kubelet_created || removed {
                    tx.send_modify(|g| *g += 1);
                }
            })
            .map_err(map_err)?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(map_err)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            generation: rx,
            _watcher: watcher,
        })
    }

    /// The watched directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A receiver that changes on every kubelet restart sign.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }
}
