//! The kubelet's side of the device-plugin API (`deviceplugin/v1beta1`), for the development
//! node: the `Registration` service on `<dir>/kubelet.sock`, one `ListAndWatch` stream per
//! registered plugin (kept as the healthy-device count that becomes the Node's capacity and
//! allocatable), device selection and `Allocate` per container.
//!
//! # Guarantees
//! - A device is handed to at most one pod at a time; a pod's devices return to the free pool
//!   when [`DevicePlugins::release`] is called for it (the pod terminated or was deleted).
//! - Capacity updates are published on a `watch` channel: the latest value always wins, so a
//!   slow Node patcher never blocks a plugin stream.
//!
//! # Caveats
//! - Like the kubelet, a plugin that re-registers replaces the earlier connection for the same
//!   resource; its devices' allocations are kept (device IDs are stable across restarts).
//! - Only the protocol the node agent uses is exercised: `Register`, `ListAndWatch`,
//!   `GetPreferredAllocation` (when advertised), `Allocate`, `PreStartContainer` (when
//!   required). Topology (NUMA) hints are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use autoglm_node_agent::proto::{
    AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, DevicePluginOptions, Empty, PreStartContainerRequest,
    PreferredAllocationRequest, RegisterRequest,
    device_plugin_client::DevicePluginClient,
    registration_server::{Registration, RegistrationServer},
};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tracing::{info, warn};

use crate::error::Error;

/// Device-plugin API version the registration service accepts.
pub const API_VERSION: &str = "v1beta1";

/// File name of the registration socket inside the device-plugin directory, as the kubelet
/// names it (`/var/lib/kubelet/device-plugins/kubelet.sock`).
pub const KUBELET_SOCKET: &str = "kubelet.sock";

/// Healthy-device count per extended resource: resource name -> devices. A resource whose
/// plugin disconnected is reported with 0 (as the kubelet does) until it registers again.
pub type Capacity = BTreeMap<String, u64>;

/// What a container receives from its device plugins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Environment variables (later plugins win on conflicts).
    pub envs: BTreeMap<String, String>,
    /// Mounts: container path -> host path.
    pub mounts: Vec<(String, PathBuf)>,
    /// Device IDs handed out, per resource.
    pub devices: BTreeMap<String, Vec<String>>,
}

struct Plugin {
    client: DevicePluginClient<Channel>,
    options: DevicePluginOptions,
    /// Device ID -> healthy.
    devices: BTreeMap<String, bool>,
    /// Bumped on each registration, so a stale stream task does not clobber a newer one.
    generation: u64,
}

#[derive(Default)]
struct State {
    plugins: BTreeMap<String, Plugin>,
    /// Resource -> device ID -> pod UID holding it.
    allocated: BTreeMap<String, BTreeMap<String, String>>,
    generation: u64,
}

/// The registry of device plugins on this development node. Cheap to clone.
#[derive(Clone)]
pub struct DevicePlugins {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    capacity: watch::Sender<Capacity>,
    /// Admission is one pod at a time, as in the kubelet: plugins (ours included) rely on it
    /// to tell which pod an `Allocate` is for.
    admission: Arc<tokio::sync::Mutex<()>>,
}

impl DevicePlugins {
    /// A registry for plugins that live in `dir` (the `--device-plugin-dir` given to the node
    /// agent); the registration socket is `dir/kubelet.sock`.
    #[must_use]
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            state: Arc::default(),
            capacity: watch::Sender::new(Capacity::new()),
            admission: Arc::default(),
        }
    }

    /// Path of the registration socket.
    #[must_use]
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(KUBELET_SOCKET)
    }

    /// Receives every change of the healthy-device counts.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Capacity> {
        self.capacity.subscribe()
    }

    /// Extended resources that have (or had) a registered plugin.
    #[must_use]
    pub fn resources(&self) -> BTreeSet<String> {
        self.lock().plugins.keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still consistent enough
        // to keep serving; recover rather than poison the whole node.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the registration socket until `shutdown` resolves. Removes a stale socket file
    /// first (the kubelet does the same on start, which is also what tells plugins to
    /// re-register).
    ///
    /// # Errors
    /// [`Error::Io`] when the directory or socket cannot be created, [`Error::Serve`] when
    /// the gRPC server fails.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("create device-plugin directory", &self.dir, e))?;
        let sock = self.socket_path();
        match std::fs::remove_file(&sock) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove stale socket", &sock, e)),
        }
        let listener = UnixListener::bind(&sock)
            .map_err(|e| Error::io("bind registration socket", &sock, e))?;
        info!(socket = %sock.display(), "device-plugin registration socket listening");
        Server::builder()
            .add_service(RegistrationServer::new(RegistrationService {
                plugins: self.clone(),
            }))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await
            .map_err(|source| Error::Serve { path: sock, source })
    }

    fn publish(&self, state: &State) {
        let capacity: Capacity = state
            .plugins
            .iter()
            .map(|(r, p)| (r.clone(), p.devices.values().filter(|h| **h).count() as u64))
            .collect();
        self.capacity.send_if_modified(|old| {
            if *old == capacity {
                false
            } else {
                *old = capacity;
                true
            }
        });
    }

    async fn register(&self, req: RegisterRequest) -> Result<(), Error> {
        let resource = req.resource_name.clone();
        let path = self.dir.join(&req.endpoint);
        let channel = connect_unix(&path)
            .await
            .map_err(|source| Error::ConnectPlugin {
                resource: resource.clone(),
                path: path.clone(),
                source,
            })?;
        let mut client = DevicePluginClient::new(channel);
        let mut stream = client
            .list_and_watch(Empty {})
            .await
            .map_err(|source| Error::PluginRpc {
                rpc: "ListAndWatch",
                resource: resource.clone(),
                source,
            })?
            .into_inner();
        let generation = {
            let mut st = self.lock();
            st.generation += 1;
            let generation = st.generation;
            st.plugins.insert(
                resource.clone(),
                Plugin {
                    client,
                    options: req.options.unwrap_or_default(),
                    devices: BTreeMap::new(),
                    generation,
                },
            );
            self.publish(&st);
            generation
        };
        info!(%resource, endpoint = %path.display(), "device plugin registered");
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        let mut st = this.lock();
                        let Some(p) = st
                            .plugins
                            .get_mut(&resource)
                            .filter(|p| p.generation == generation)
                        else {
                            return;
                        };
                        p.devices = resp
                            .devices
                            .iter()
                            .map(|d| (d.id.clone(), d.health == "Healthy"))
                            .collect();
                        let healthy = p.devices.values().filter(|h| **h).count();
                        info!(%resource, devices = resp.devices.len(), healthy, "ListAndWatch update");
                        this.publish(&st);
                    }
                    Ok(None) | Err(_) => {
                        warn!(%resource, "device plugin stream ended; capacity set to 0 until it registers again");
                        let mut st = this.lock();
                        if let Some(p) = st
                            .plugins
                            .get_mut(&resource)
                            .filter(|p| p.generation == generation)
                        {
                            p.devices.clear();
                        }
                        this.publish(&st);
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    /// Allocates `requests` (resource -> device count) for one container of pod `pod_uid`
    /// (`pod` is `namespace/name`, for messages): picks free healthy devices (asking the
    /// plugin's `GetPreferredAllocation` when it offers one), calls `Allocate` and, when the
    /// plugin requires it, `PreStartContainer`. On error nothing stays allocated for this
    /// container. Calls are serialised (one container is admitted at a time).
    ///
    /// # Errors
    /// [`Error::NoPlugin`], [`Error::InsufficientDevices`], or [`Error::PluginRpc`].
    pub async fn allocate(
        &self,
        pod_uid: &str,
        pod: &str,
        requests: &BTreeMap<String, usize>,
    ) -> Result<Allocation, Error> {
        let _admission = self.admission.lock().await;
        let mut out = Allocation::default();
        let mut taken: Vec<(String, Vec<String>)> = Vec::new();
        let result = async {
            for (resource, &count) in requests {
                if count == 0 {
                    continue;
                }
                let (ids, mut client) = self.reserve(pod_uid, pod, resource, count)?;
                taken.push((resource.clone(), ids.clone()));
                let options = self
                    .lock()
                    .plugins
                    .get(resource)
                    .map(|p| p.options)
                    .unwrap_or_default();
                let ids = if options.get_preferred_allocation_available {
                    self.preferred(&mut client, pod_uid, resource, ids, count)
                        .await?
                } else {
                    ids
                };
                if let Some(t) = taken.last_mut() {
                    t.1.clone_from(&ids);
                }
                let resp = client
                    .allocate(AllocateRequest {
                        container_requests: vec![ContainerAllocateRequest {
                            devices_ids: ids.clone(),
                        }],
                    })
                    .await
                    .map_err(|source| Error::PluginRpc {
                        rpc: "Allocate",
                        resource: resource.clone(),
                        source,
                    })?
                    .into_inner();
                if options.pre_start_required {
                    client
                        .pre_start_container(PreStartContainerRequest {
                            devices_ids: ids.clone(),
                        })
                        .await
                        .map_err(|source| Error::PluginRpc {
                            rpc: "PreStartContainer",
                            resource: resource.clone(),
                            source,
                        })?;
                }
                for c in resp.container_responses {
                    merge(&mut out, c);
                }
                out.devices.insert(resource.clone(), ids);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                let mut st = self.lock();
                for (resource, ids) in taken {
                    if let Some(held) = st.allocated.get_mut(&resource) {
                        for id in ids {
                            held.remove(&id);
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// Marks `count` free healthy devices of `resource` as held by `pod_uid`.
    fn reserve(
        &self,
        pod_uid: &str,
        pod: &str,
        resource: &str,
        count: usize,
    ) -> Result<(Vec<String>, DevicePluginClient<Channel>), Error> {
        let mut st = self.lock();
        let State {
            plugins, allocated, ..
        } = &mut *st;
        let plugin = plugins.get(resource).ok_or_else(|| Error::NoPlugin {
            resource: resource.to_owned(),
            pod: pod.to_owned(),
        })?;
        let held = allocated.entry(resource.to_owned()).or_default();
        let healthy: Vec<&String> = plugin
            .devices
            .iter()
            .filter(|(_, h)| **h)
            .map(|(id, _)| id)
            .collect();
        let free: Vec<String> = healthy
            .iter()
            .filter(|id| !held.contains_key(id.as_str()))
            .map(|id| (*id).clone())
            .collect();
        if free.len() < count {
            return Err(Error::InsufficientDevices {
                resource: resource.to_owned(),
                pod: pod.to_owned(),
                requested: count,
                free: free.len(),
                healthy: healthy.len(),
            });
        }
        let ids: Vec<String> = free.into_iter().take(count).collect();
        for id in &ids {
            held.insert(id.clone(), pod_uid.to_owned());
        }
        Ok((ids, plugin.client.clone()))
    }

    /// Asks the plugin which `count` devices it prefers among the free ones; falls back to
    /// `chosen` when the answer is unusable.
    async fn preferred(
        &self,
        client: &mut DevicePluginClient<Channel>,
        pod_uid: &str,
        resource: &str,
        chosen: Vec<String>,
        count: usize,
    ) -> Result<Vec<String>, Error> {
        let available: Vec<String> = {
            let st = self.lock();
            let held = st.allocated.get(resource);
            st.plugins
                .get(resource)
                .map(|p| {
                    p.devices
                        .iter()
                        .filter(|(id, h)| {
                            **h && held
                                .and_then(|m| m.get(id.as_str()))
                                .is_none_or(|u| u == pod_uid)
                        })
                        .map(|(id, _)| id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        let resp = client
            .get_preferred_allocation(PreferredAllocationRequest {
                container_requests: vec![ContainerPreferredAllocationRequest {
                    available_device_i_ds: available.clone(),
                    must_include_device_i_ds: Vec::new(),
                    allocation_size: i32::try_from(count).unwrap_or(i32::MAX),
                }],
            })
            .await
            .map_err(|source| Error::PluginRpc {
                rpc: "GetPreferredAllocation",
                resource: resource.to_owned(),
                source,
            })?
            .into_inner();
        let pick: Vec<String> = resp
            .container_responses
            .into_iter()
            .next()
            .map(|r| r.device_i_ds)
            .unwrap_or_default();
        let usable = pick.len() == count
            && pick.iter().all(|id| available.contains(id))
            && pick.iter().collect::<BTreeSet<_>>().len() == count;
        if !usable {
            return Ok(chosen);
        }
        let mut st = self.lock();
        let held = st.allocated.entry(resource.to_owned()).or_default();
        for id in &chosen {
            held.remove(id);
        }
        for id in &pick {
            held.insert(id.clone(), pod_uid.to_owned());
        }
        Ok(pick)
    }

    /// Returns every device held by `pod_uid` to the free pool.
    pub fn release(&self, pod_uid: &str) {
        let mut st = self.lock();
        for held in st.allocated.values_mut() {
            held.retain(|_, uid| uid != pod_uid);
        }
    }

    /// Devices currently held, per resource: resource -> device ID -> pod UID.
    #[must_use]
    pub fn allocated(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.lock().allocated.clone()
    }
}

fn merge(out: &mut Allocation, c: ContainerAllocateResponse) {
    out.envs.extend(c.envs);
    out.mounts.extend(
        c.mounts
            .into_iter()
            .map(|m| (m.container_path, PathBuf::from(m.host_path))),
    );
    // DeviceSpecs (device nodes) have no meaning for a local process; a real device node
    // would be visible on the host anyway. Map them like mounts so paths still resolve.
    out.mounts.extend(
        c.devices
            .into_iter()
            .map(|d| (d.container_path, PathBuf::from(d.host_path))),
    );
}

/// A gRPC channel over a Unix socket. The URI is a placeholder that tonic requires; the
/// connector ignores it.
///
/// # Errors
/// The transport error when the socket cannot be connected.
pub async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

struct RegistrationService {
    plugins: DevicePlugins,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<Empty>, tonic::Status> {
        let req = request.into_inner();
        if req.version != API_VERSION {
            return Err(tonic::Status::invalid_argument(format!(
                "unsupported device-plugin API version {:?}; this node serves {API_VERSION}",
                req.version
            )));
        }
        if req.resource_name.is_empty() || !req.resource_name.contains('/') {
            return Err(tonic::Status::invalid_argument(format!(
                "resource_name {:?} must be an extended resource name (domain/name)",
                req.resource_name
            )));
        }
        // Like the kubelet, answer Register first and connect afterwards: the plugin may
        // only start serving its own socket once Register returned.
        let plugins = self.plugins.clone();
        tokio::spawn(async move {
            let resource = req.resource_name.clone();
            // The plugin's server may need a moment after Register returns.
            let mut last = None;
            for _ in 0..50 {
                match plugins.register(req.clone()).await {
                    Ok(()) => return,
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if let Some(e) = last {
                warn!(%resource, error = %crate::display_chain(&e), "device plugin registration failed");
            }
        });
        Ok(tonic::Response::new(Empty {}))
    }
}
