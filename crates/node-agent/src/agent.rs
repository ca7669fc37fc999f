//! Wiring of the node agent's tasks: pod watch, inventory polling, publishing, device plugins
//! and the admin port. Each task is a public function so tests can run the ones they need.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::allocations::PodAllocation;
use crate::deviceplugin::gpu::{GpuDevices, ResourceKind};
use crate::deviceplugin::registration::{KubeletWatcher, RegistrationError};
use crate::deviceplugin::runner::{PluginConfig, PluginSignals, run_plugin};
use crate::inventory::{GpuInventory, InventorySnapshot};
use crate::metrics::{Metrics, ResourceLabels};
use crate::publish::{Publisher, node_labels, status};

/// Shortest gap between two publications triggered by inventory changes; NVML memory
/// figures move with every allocation a workload makes, and the controller needs them
/// fresh, not at 100 Hz. One second keeps the API write rate per node at most 1/s.
const MIN_PUBLISH_GAP: Duration = Duration::from_secs(1);

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The device-plugin directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] RegistrationError),
    /// A device plugin's socket cannot be created.
    #[error(transparent)]
    Serve(#[from] crate::deviceplugin::server::ServeError),
    /// The admin server failed.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
}

/// Settings of a running agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name.
    pub node: String,
    /// Period of GpuNode publications and heartbeats.
    pub publish_interval: Duration,
    /// Period of inventory readings.
    pub poll_interval: Duration,
    /// The kubelet's device-plugin directory; `None` runs no device plugin.
    pub device_plugin_dir: Option<PathBuf>,
    /// Admin address; `None` serves no admin port.
    pub admin_addr: Option<SocketAddr>,
}

/// Keeps `tx` equal to the GPU allocations of the pods bound to `node`, until `cancel`.
pub async fn watch_pods(
    client: kube::Client,
    node: String,
    tx: watch::Sender<Vec<PodAllocation>>,
    cancel: CancellationToken,
) {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let (store, writer) = reflector::store();
    // Every watch event (including deletions and re-lists) recomputes the list from the store.
    let stream = watcher(pods, config).default_backoff().reflect(writer);
    futures::pin_mut!(stream);
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            None => return,
            Some(Err(error)) => tracing::warn!(%error, "pod watch error"),
            Some(Ok(_)) => {
                let mut list: Vec<PodAllocation> = store
                    .state()
                    .iter()
                    .filter_map(|p| PodAllocation::from_pod(p))
                    .collect();
                list.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
                tx.send_if_modified(|cur| {
                    let changed = *cur != list;
                    if changed {
                        *cur = list;
                    }
                    changed
                });
            }
        }
    }
}

/// Reads the inventory every `interval` and whenever the pods change, publishing each reading
/// that differs from the last on `tx`, until `cancel`.
pub async fn poll_inventory(
    inventory: Arc<dyn GpuInventory>,
    mut pods: watch::Receiver<Vec<PodAllocation>>,
    interval: Duration,
    tx: watch::Sender<Option<InventorySnapshot>>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
            changed = pods.changed() => if changed.is_err() { return },
        }
        let allocations = pods.borrow_and_update().clone();
        let inv = inventory.clone();
        let read = tokio::task::spawn_blocking(move || inv.snapshot(&allocations)).await;
        match read {
            Ok(Ok(snapshot)) => {
                Metrics::count(&metrics.inventory_reads, true);
                metrics.observe(&snapshot);
                tx.send_if_modified(|cur| {
                    let changed = cur.as_ref() != Some(&snapshot);
                    if changed {
                        *cur = Some(snapshot);
                    }
                    changed
                });
            }
            Ok(Err(error)) => {
                Metrics::count(&metrics.inventory_reads, false);
                tracing::error!(%error, "failed to read the GPU inventory");
            }
            Err(error) => tracing::error!(%error, "inventory task failed"),
        }
    }
}

/// What of a snapshot makes a publication urgent: everything except fast-moving telemetry
/// (utilization, temperature, power), which the periodic publication carries.
fn significant(s: &InventorySnapshot) -> InventorySnapshot {
    let mut s = s.clone();
    for g in &mut s.gpus {
        g.utilization_gpu_percent = None;
        g.utilization_memory_percent = None;
        g.temperature_c = None;
        g.power_w = None;
    }
    s
}

/// Publishes the latest inventory as the node's GpuNode status every `interval` (the
/// heartbeat) and soon after each significant change, and keeps the Node's GPU labels
/// current, until `cancel`. `published` turns true after the first successful publication.
pub async fn publish_loop(
    publisher: Publisher,
    mut inventory: watch::Receiver<Option<InventorySnapshot>>,
    interval: Duration,
    metrics: Arc<Metrics>,
    published: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_significant: Option<InventorySnapshot> = None;
    let mut last_labels: Option<BTreeMap<String, String>> = None;
    let mut node_uid: Option<String> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
            changed = inventory.changed() => {
                if changed.is_err() { return }
                let now = inventory.borrow().as_ref().map(significant);
                if now.is_none() || now == last_significant {
                    continue;
                }
                tokio::time::sleep(MIN_PUBLISH_GAP).await;
            }
        }
        let Some(snapshot) = inventory.borrow_and_update().clone() else {
            continue;
        };
        let labels = node_labels(&snapshot);
        if last_labels.as_ref() != Some(&labels) {
            match publisher.apply_labels(&labels).await {
                Ok(uid) => {
                    node_uid = uid;
                    last_labels = Some(labels);
                }
                Err(error) => tracing::warn!(%error, "failed to label the Node"),
            }
        }
        let s = status(&snapshot, Time(k8s_openapi::jiff::Timestamp::now()));
        match publisher.apply_status(&s, node_uid.as_deref()).await {
            Ok(()) => {
                Metrics::count(&metrics.publishes, true);
                last_significant = Some(significant(&snapshot));
                published.send_replace(true);
                tracing::debug!(
                    gpus = s.gpu_count,
                    free_mib = s.free_memory_mib,
                    "published GpuNode status"
                );
            }
            Err(error) => {
                Metrics::count(&metrics.publishes, false);
                tracing::warn!(%error, "failed to publish GpuNode status");
            }
        }
    }
}

/// Runs the whole agent until `cancel` fires.
///
/// # Errors
/// [`AgentError`] when the device-plugin directory cannot be watched, a plugin socket cannot
/// be created, or the admin port cannot be bound.
pub async fn run(
    config: AgentConfig,
    inventory: Arc<dyn GpuInventory>,
    client: Option<kube::Client>,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let registry = Arc::new(registry);
    let mut tasks = tokio::task::JoinSet::new();

    let (pods_tx, pods_rx) = watch::channel(Vec::new());
    match &client {
        Some(client) => {
            tasks.spawn(watch_pods(
                client.clone(),
                config.node.clone(),
                pods_tx,
                cancel.clone(),
            ));
        }
        None => {
            tracing::warn!("no Kubernetes client: pods are not watched and nothing is published");
            // Keep the sender alive so the inventory loop does not stop.
            let cancel = cancel.clone();
            tasks.spawn(async move {
                cancel.cancelled().await;
                drop(pods_tx);
            });
        }
    }

    let (inv_tx, inv_rx) = watch::channel(None);
    tasks.spawn(poll_inventory(
        inventory,
        pods_rx.clone(),
        config.poll_interval,
        inv_tx,
        metrics.clone(),
        cancel.clone(),
    ));

    let (published_tx, published_rx) = watch::channel(false);
    if let Some(client) = &client {
        tasks.spawn(publish_loop(
            Publisher::new(client.clone(), &config.node),
            inv_rx.clone(),
            config.publish_interval,
            metrics.clone(),
            published_tx,
            cancel.clone(),
        ));
    }

    // Readiness: every device plugin registered; without plugins, the first publication.
    let (ready_tx, ready_rx) = watch::channel(false);
    let mut _kubelet_watcher = None;
    if let Some(dir) = &config.device_plugin_dir {
        let watcher = KubeletWatcher::start(dir)?;
        let mut registered = Vec::new();
        for kind in [ResourceKind::WholeGpu, ResourceKind::MemorySlice] {
            let logic = GpuDevices::spawn(kind, inv_rx.clone(), pods_rx.clone());
            let labels = ResourceLabels {
                resource: kind.resource_name().to_owned(),
            };
            let signals = PluginSignals {
                registered: watch::Sender::new(false),
                registrations: metrics.registrations.get_or_create(&labels).clone(),
            };
            registered.push(signals.registered.subscribe());
            let gauge = metrics.registered.get_or_create(&labels).clone();
            let mut reg_rx = signals.registered.subscribe();
            tasks.spawn(async move {
                while reg_rx.changed().await.is_ok() {
                    gauge.set(i64::from(*reg_rx.borrow_and_update()));
                }
            });
            let plugin = PluginConfig {
                dir: dir.clone(),
                endpoint: kind.endpoint().to_owned(),
            };
            let (kubelet, cancel) = (watcher.subscribe(), cancel.clone());
            tasks.spawn(async move {
                if let Err(error) =
                    run_plugin(plugin, logic, kubelet, signals, cancel.clone()).await
                {
                    tracing::error!(%error, "device plugin stopped");
                    cancel.cancel();
                }
            });
        }
        tasks.spawn(readiness(registered, ready_tx, cancel.clone()));
        _kubelet_watcher = Some(watcher);
    } else {
        tasks.spawn(readiness(vec![published_rx], ready_tx, cancel.clone()));
    }

    if let Some(addr) = config.admin_addr {
        let (registry, cancel) = (registry.clone(), cancel.clone());
        tasks.spawn(async move {
            if let Err(error) = crate::admin::serve(addr, registry, ready_rx, cancel.clone()).await
            {
                tracing::error!(%error, "admin server stopped");
                cancel.cancel();
            }
        });
    }

    cancel.cancelled().await;
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Sets `ready` to whether every receiver in `all` is true, on every change.
async fn readiness(
    mut all: Vec<watch::Receiver<bool>>,
    ready: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    loop {
        let now = all.iter_mut().all(|r| *r.borrow_and_update());
        ready.send_replace(now);
        let changes = futures::future::select_all(all.iter_mut().map(|r| Box::pin(r.changed())));
        tokio::select! {
            () = cancel.cancelled() => return,
            (result, _, _) = changes => if result.is_err() { return },
        }
    }
}
