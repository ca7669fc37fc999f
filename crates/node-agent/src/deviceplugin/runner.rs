//! The lifecycle of one device plugin: serve its socket, register with the kubelet, and do
//! both again whenever the kubelet restarts.
//!
//! # Guarantees
//! - The plugin's socket is listening before `Register` is sent (the kubelet dials it back
//!   during registration).
//! - After a kubelet restart — its `kubelet.sock` replaced by a new file, or our socket
//!   removed (a starting kubelet wipes the directory) — the plugin serves a fresh socket and
//!   registers again; while the kubelet is down it waits for `kubelet.sock` to reappear.
//! - `registered` is true exactly while the latest registration stands.
//!
//! # Assumptions
//! - The directory is watched by a [`super::registration::KubeletWatcher`] whose generation
//!   is passed in; identity of `kubelet.sock` is its (device, inode) pair.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::registration::register;
use super::server::{ServeError, serve};
use super::{DeviceLogic, KUBELET_SOCKET};
use crate::proto::DevicePluginOptions;

/// First retry delay after a failed registration; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest retry delay: a kubelet that is starting answers within seconds, so 30 s keeps the
/// node's resources unavailable for at most that long after it is back.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where and how one plugin runs.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The kubelet's device-plugin directory.
    pub dir: PathBuf,
    /// Our socket's file name in `dir` (e.g. `autoglm-gpu.sock`).
    pub endpoint: String,
}

/// Signals a running plugin gives out.
#[derive(Debug, Clone)]
pub struct PluginSignals {
    /// True while registered with the kubelet.
    pub registered: watch::Sender<bool>,
    /// Successful registrations.
    pub registrations: Counter,
}

impl Default for PluginSignals {
    fn default() -> Self {
        Self {
            registered: watch::Sender::new(false),
            registrations: Counter::default(),
        }
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Runs the plugin until `cancel` fires.
///
/// # Errors
/// [`ServeError::Bind`] when our socket cannot be created (e.g. the directory is missing or
/// read-only); the caller decides whether to retry.
pub async fn run_plugin<L: DeviceLogic + ?Sized>(
    config: PluginConfig,
    logic: Arc<L>,
    mut kubelet: watch::Receiver<u64>,
    signals: PluginSignals,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    let socket = config.dir.join(&config.endpoint);
    let kubelet_socket = config.dir.join(KUBELET_SOCKET);
    let resource = logic.resource_name().to_owned();
    let options = DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: logic.preferred_allocation_available(),
    };
    loop {
        let stop = CancellationToken::new();
        let server = serve(&socket, logic.clone(), stop.clone().cancelled_owned())?;
        let mut server = tokio::spawn(server);
        tracing::info!(%resource, socket = %socket.display(), "device plugin serving");

        // Register, retrying until it works, the kubelet restarts, or we are cancelled.
        let mut delay = FIRST_RETRY;
        let registered_with = loop {
            kubelet.mark_unchanged();
            match identity(&kubelet_socket) {
                None => {
                    tracing::info!(%resource, path = %kubelet_socket.display(), "waiting for the kubelet socket");
                }
                Some(id) => {
                    match register(&kubelet_socket, &config.endpoint, &resource, options).await {
                        Ok(()) => break Some(id),
                        Err(error) => {
                            tracing::warn!(%resource, %error, retry_in = ?delay, "registration failed")
                        }
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break None,
                _ = kubelet.changed() => {}
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY);
        };
        let Some(registered_with) = registered_with else {
            stop.cancel();
            let _ = server.await;
            return Ok(());
        };
        tracing::info!(%resource, "registered with the kubelet");
        signals.registrations.inc();
        signals.registered.send_replace(true);

        // Serve until the kubelet restarts, our socket disappears, the server dies, or we are
        // cancelled.
        let done = loop {
            tokio::select! {
                () = cancel.cancelled() => break true,
                changed = kubelet.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                    let kubelet_replaced = identity(&kubelet_socket) != Some(registered_with);
                    let ours_removed = !socket.exists();
                    if kubelet_replaced || ours_removed {
                        tracing::info!(%resource, kubelet_replaced, ours_removed, "kubelet restarted; registering again");
                        break false;
                    }
                }
                result = &mut server => {
                    match result {
                        Ok(Ok(())) => tracing::warn!(%resource, "device plugin server stopped"),
                        Ok(Err(error)) => tracing::error!(%resource, %error, "device plugin server failed"),
                        Err(error) => tracing::error!(%resource, %error, "device plugin server task failed"),
                    }
                    break false;
                }
            }
        };
        signals.registered.send_replace(false);
        stop.cancel();
        if !server.is_finished() {
            let _ = server.await;
        }
        if done {
            let _ = std::fs::remove_file(&socket);
            return Ok(());
        }
    }
}
