//! Running the pods bound to the development node as local processes.
//!
//! One watch on `spec.nodeName=<node>`; one task per pod that prepares its volumes, asks the
//! device plugins for its containers' extended resources, starts the containers (init
//! containers one after another, then the main containers together), restarts them as
//! `restartPolicy` says (with back-off), reports every state change to the pod's `status`
//! subresource, and on deletion stops them (SIGTERM to the process group, SIGKILL after the
//! grace period) before removing the pod for good, as the kubelet does.
//!
//! # Caveats
//! - No isolation of any kind: the process runs as the development node's user, shares its
//!   network and file system, and sees only the environment built by [`crate::launch`].
//! - Probes, lifecycle hooks, resource limits and `kubectl logs`/`exec` are not implemented;
//!   each container's output goes to `<state-dir>/pods/<ns>_<name>_<uid>/logs/<container>.log`.
//! - A development node that restarts cannot re-attach to processes it started before:
//!   such containers are reported as terminated (`ContainerLost`, exit code 137) and restarted
//!   or failed according to `restartPolicy`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::error::Error;
use crate::image::ImageMap;
use crate::launch::{CONFIG_ERROR_REASON, LaunchContext, LaunchSpec, build_launch};
use crate::plugins::DevicePlugins;
use crate::status::{ContainerState, PodModel, Terminated};

/// Pod `status.reason` when a container's extended resources cannot be allocated (the
/// kubelet's reason for device-manager admission failures).
pub const ADMISSION_ERROR_REASON: &str = "UnexpectedAdmissionError";

/// Pod `status.reason` when the development node shuts down under a running pod (the
/// kubelet's graceful node shutdown uses the same word).
pub const NODE_SHUTDOWN_REASON: &str = "NodeShutdown";

/// Pod `status.reason` when a volume cannot be prepared.
pub const FAILED_MOUNT_REASON: &str = "FailedMount";

/// How pods are run.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Node name (pods with this `spec.nodeName` are run).
    pub node_name: String,
    /// Root of per-pod directories (volumes, logs).
    pub state_dir: PathBuf,
    /// Known images.
    pub images: ImageMap,
    /// Environment every container starts from.
    pub base_env: BTreeMap<String, String>,
    /// Address reported as host and pod IP.
    pub host_ip: String,
    /// Extended resources that must be allocated by a device plugin even if none has
    /// registered yet (the pod waits up to `plugin_wait` for it).
    pub device_resources: BTreeSet<String>,
    /// How long a pod waits for a needed device plugin to register.
    pub plugin_wait: Duration,
    /// First restart back-off; doubles per restart up to `backoff_max`.
    pub backoff_base: Duration,
    /// Longest restart back-off.
    pub backoff_max: Duration,
    /// Upper bound on a deleted pod's grace period (its own may be longer).
    pub max_grace: Duration,
}

/// Watches the pods bound to the node and runs them.
pub struct PodRunner {
    client: Client,
    cfg: Arc<RunnerConfig>,
    plugins: DevicePlugins,
}

struct Tracked {
    tx: watch::Sender<Option<Pod>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodRunner {
    /// A runner for `cfg.node_name`.
    #[must_use]
    pub fn new(client: Client, cfg: RunnerConfig, plugins: DevicePlugins) -> Self {
        Self {
            client,
            cfg: Arc::new(cfg),
            plugins,
        }
    }

    /// Runs until `shutdown` flips to true; then stops every process (reporting its pod as
    /// `Failed`/[`NODE_SHUTDOWN_REASON`]) and returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let wc =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.cfg.node_name));
        let mut stream = watcher::watcher(api, wc).default_backoff().boxed();
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut listing: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                ev = stream.try_next() => match ev {
                    Ok(Some(Event::Init)) => listing = Some(HashSet::new()),
                    Ok(Some(Event::InitApply(pod))) => {
                        if let (Some(seen), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                            seen.insert(uid);
                        }
                        self.on_pod(pod, &mut tracked, &shutdown);
                    }
                    Ok(Some(Event::InitDone)) => {
                        if let Some(seen) = listing.take() {
                            for (uid, t) in &tracked {
                                if !seen.contains(uid) {
                                    t.tx.send_replace(None);
                                }
                            }
                            tracked.retain(|uid, _| seen.contains(uid));
                        }
                    }
                    Ok(Some(Event::Apply(pod))) => self.on_pod(pod, &mut tracked, &shutdown),
                    Ok(Some(Event::Delete(pod))) => {
                        if let Some(t) = pod.metadata.uid.as_ref().and_then(|u| tracked.remove(u)) {
                            t.tx.send_replace(None);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => warn!(error = %e, "pod watch error (retrying with back-off)"),
                },
                _ = shutdown.changed() => break,
            }
        }
        info!("stopping all pods");
        for (_, t) in tracked {
            // Each pod task sees the shutdown flag itself; wait for it to finish reporting.
            let _ = tokio::time::timeout(self.cfg.max_grace + Duration::from_secs(5), t.task).await;
        }
    }

    fn on_pod(
        &self,
        pod: Pod,
        tracked: &mut HashMap<String, Tracked>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(t) = tracked.get(&uid) {
            t.tx.send_replace(Some(pod));
            return;
        }
        let terminal = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        if terminal {
            return;
        }
        let (tx, rx) = watch::channel(Some(pod.clone()));
        let task = tokio::spawn(run_pod(
            self.client.clone(),
            Arc::clone(&self.cfg),
            self.plugins.clone(),
            pod,
            rx,
            shutdown.clone(),
        ));
        tracked.insert(uid, Tracked { tx, task });
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Everything one pod task needs.
struct PodCtx {
    client: Client,
    cfg: Arc<RunnerConfig>,
    plugins: DevicePlugins,
    api: Api<Pod>,
    name: String,
    key: String,
    uid: String,
    dir: PathBuf,
    /// Latest pod object seen (for the PodScheduled condition and deletion).
    pod: Pod,
    model: PodModel,
}

impl PodCtx {
    async fn report(&mut self) {
        let patch = self.model.status_patch(&self.pod, &self.cfg.host_ip);
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => warn!(pod = %self.key, error = %e, "failed to patch pod status"),
        }
    }

    /// Fails the whole pod before (or instead of) running it.
    async fn fail(&mut self, reason: &str, message: String) {
        warn!(pod = %self.key, %reason, %message, "pod failed");
        self.model.failed = Some((reason.to_owned(), message));
        self.report().await;
    }
}

/// How a group of containers ended.
enum StageEnd {
    /// All containers finished (see [`ContainerModel::finished`]).
    Finished,
    /// The pod is being deleted gracefully; its processes have been stopped.
    Deleting,
    /// The pod is gone from the API.
    Gone,
    /// The development node is shutting down.
    Shutdown,
}

async fn run_pod(
    client: Client,
    cfg: Arc<RunnerConfig>,
    plugins: DevicePlugins,
    pod: Pod,
    mut rx: watch::Receiver<Option<Pod>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = cfg
        .state_dir
        .join("pods")
        .join(format!("{ns}_{name}_{uid}"));
    let mut p = PodCtx {
        api: Api::namespaced(client.clone(), &ns),
        client,
        key: pod_key(&pod),
        name,
        uid,
        dir,
        model: PodModel::new(&pod),
        pod,
        cfg,
        plugins,
    };
    rx.mark_unchanged();
    if p.pod.metadata.deletion_timestamp.is_some() {
        finalize_delete(&p).await;
        return;
    }
    info!(pod = %p.key, dir = %p.dir.display(), "pod accepted");
    let end = match prepare_and_run(&mut p, &mut rx, &mut shutdown).await {
        Ok(end) => end,
        Err((reason, message)) => {
            p.fail(&reason, message).await;
            StageEnd::Finished
        }
    };
    p.plugins.release(&p.uid);
    match end {
        StageEnd::Finished => {
            info!(pod = %p.key, phase = p.model.phase().as_str(), "pod finished");
            // Keep watching for the deletion of a finished pod? The API server deletes
            // terminal pods at once, so nothing is left to do.
        }
        StageEnd::Deleting => {
            p.report().await;
            finalize_delete(&p).await;
        }
        StageEnd::Gone => info!(pod = %p.key, "pod deleted; processes stopped"),
        StageEnd::Shutdown => {
            if !p.model.phase().terminal() {
                p.model.failed = Some((
                    NODE_SHUTDOWN_REASON.to_owned(),
                    "the development node shut down; its processes were stopped".to_owned(),
                ));
            }
            p.report().await;
        }
    }
}

/// Deletes the pod for good (grace 0), as the kubelet does once its containers stopped.
async fn finalize_delete(p: &PodCtx) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(p.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match p.api.delete(&p.name, &dp).await {
        Ok(_) => info!(pod = %p.key, "pod deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => warn!(pod = %p.key, error = %e, "failed to delete pod"),
    }
}

type Failure = (String, String);

async fn prepare_and_run(
    p: &mut PodCtx,
    rx: &mut watch::Receiver<Option<Pod>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<StageEnd, Failure> {
    let spec = p.pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".to_owned());

    // A pod that already ran under an earlier devnode process: its processes are gone.
    if let Some(prev) = p
        .pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
    {
        for (m, st) in p.model.containers.iter_mut().zip(prev) {
            if let Some(id) = st.container_id.clone() {
                let lost = Terminated {
                    exit_code: 137,
                    signal: None,
                    reason: "ContainerLost".to_owned(),
                    message: Some(
                        "the development node restarted; the process it ran is gone".to_owned(),
                    ),
                    started_at: Utc::now(),
                    finished_at: Utc::now(),
                    container_id: id,
                };
                m.restart_count = st.restart_count;
                if policy == "Never" {
                    m.state = ContainerState::Terminated(lost);
                } else {
                    m.last = Some(lost);
                    m.restart_count += 1;
                }
            }
        }
        if policy == "Never"
            && p.model
                .containers
                .iter()
                .any(|c| matches!(c.state, ContainerState::Terminated(_)))
        {
            p.model.initialized = true;
            p.report().await;
            return Ok(StageEnd::Finished);
        }
    }

    std::fs::create_dir_all(p.dir.join("logs")).map_err(|e| {
        (
            FAILED_MOUNT_REASON.to_owned(),
            format!("failed to create pod directory {}: {e}", p.dir.display()),
        )
    })?;
    let volumes = prepare_volumes(p)
        .await
        .map_err(|m| (FAILED_MOUNT_REASON.to_owned(), m))?;
    let (config_maps, secrets) = fetch_env_sources(
        p,
        &spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .collect::<Vec<_>>(),
    )
    .await
    .map_err(|m| (CONFIG_ERROR_REASON.to_owned(), m))?;

    let base = LaunchContext {
        images: p.cfg.images.clone(),
        volumes,
        base_env: p.cfg.base_env.clone(),
        config_maps,
        secrets,
        host_ip: p.cfg.host_ip.clone(),
        pod_dir: p.dir.clone(),
        ..LaunchContext::default()
    };

    // Launch specs first (so an unknown image fails before any device is taken), then
    // devices per container.
    let mut init_specs = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        init_specs.push(launch_or_fail(p, true, i, c, &base)?);
    }
    let mut main_specs = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let requests = device_requests(p, c)
            .await
            .map_err(|m| (ADMISSION_ERROR_REASON.to_owned(), m))?;
        let mut ctx = base.clone();
        if !requests.is_empty() {
            let alloc = p
                .plugins
                .allocate(&p.uid, &p.key, &requests)
                .await
                .map_err(|e| (ADMISSION_ERROR_REASON.to_owned(), crate::display_chain(&e)))?;
            info!(pod = %p.key, container = %c.name, devices = ?alloc.devices, env = ?alloc.envs, "devices allocated");
            ctx.device_env = alloc.envs;
            ctx.device_mounts = alloc.mounts;
        }
        main_specs.push(launch_or_fail(p, false, i, c, &ctx)?);
    }
    p.model.sandbox_ready = true;
    p.report().await;

    for i in 0..init_specs.len() {
        match run_stage(p, true, &[i], &init_specs, &policy, rx, shutdown).await {
            StageEnd::Finished => {
                let ok = matches!(&p.model.init[i].state, ContainerState::Terminated(t) if t.exit_code == 0);
                if !ok {
                    p.model.failed = Some((
                        "InitContainerFailed".to_owned(),
                        format!("init container {:?} failed", p.model.init[i].name),
                    ));
                    p.report().await;
                    return Ok(StageEnd::Finished);
                }
            }
            other => return Ok(other),
        }
    }
    p.model.initialized = true;
    let all: Vec<usize> = (0..main_specs.len()).collect();
    let end = run_stage(p, false, &all, &main_specs, &policy, rx, shutdown).await;
    p.report().await;
    Ok(end)
}

fn launch_or_fail(
    p: &mut PodCtx,
    init: bool,
    i: usize,
    c: &Container,
    ctx: &LaunchContext,
) -> Result<LaunchSpec, Failure> {
    match build_launch(&p.pod, c, ctx) {
        Ok(spec) => {
            let m = if init {
                &mut p.model.init[i]
            } else {
                &mut p.model.containers[i]
            };
            m.image_id = format!("devnode://{}", spec.program.display());
            Ok(spec)
        }
        Err(e) => {
            let m = if init {
                &mut p.model.init[i]
            } else {
                &mut p.model.containers[i]
            };
            m.state = ContainerState::Waiting {
                reason: e.reason().to_owned(),
                message: Some(e.to_string()),
            };
            Err((e.reason().to_owned(), e.to_string()))
        }
    }
}

/// Extended resources of `c` that come from device plugins, as device counts. Waits (up to
/// `plugin_wait`) for a plugin that has not registered yet.
async fn device_requests(p: &PodCtx, c: &Container) -> Result<BTreeMap<String, usize>, String> {
    let Some(res) = c.resources.as_ref() else {
        return Ok(BTreeMap::new());
    };
    // Extended resources must have limits == requests; either map names them.
    let mut all = res.requests.clone().unwrap_or_default();
    all.extend(res.limits.clone().unwrap_or_default());
    let deadline = Instant::now() + p.cfg.plugin_wait;
    loop {
        let registered = p.plugins.resources();
        let mut out = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, q) in &all {
            if !(p.cfg.device_resources.contains(name) || registered.contains(name)) {
                continue;
            }
            let n: usize = q.0.parse().map_err(|_| {
                format!(
                    "container {:?}: extended resource {name} must be a whole number of devices, got {:?}",
                    c.name, q.0
                )
            })?;
            if n > 0 && !registered.contains(name) {
                missing.push(name.clone());
            }
            out.insert(name.clone(), n);
        }
        if missing.is_empty() {
            return Ok(out);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "container {:?} requests {} but no device plugin registered for it within {:?}",
                c.name,
                missing.join(", "),
                p.cfg.plugin_wait
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Local directories for the pod's volumes.
async fn prepare_volumes(p: &PodCtx) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let ns = p.pod.metadata.namespace.clone().unwrap_or_default();
    for v in p.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let own = p.dir.join("volumes").join(&v.name);
        let mkdir = |d: &Path| {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("volume {:?}: failed to create {}: {e}", v.name, d.display()))
        };
        let path = if v.empty_dir.is_some() {
            mkdir(&own)?;
            own
        } else if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "" | "DirectoryOrCreate" if !path.exists() => {
                    mkdir(&path)?;
                }
                "Directory" if !path.is_dir() => {
                    return Err(format!(
                        "volume {:?}: hostPath {} is not a directory",
                        v.name, h.path
                    ));
                }
                "File" if !path.is_file() => {
                    return Err(format!(
                        "volume {:?}: hostPath {} is not a file",
                        v.name, h.path
                    ));
                }
                _ => {}
            }
            path
        } else if let Some(claim) = &v.persistent_volume_claim {
            // No storage provisioner: a claim is a directory under the state dir, shared by
            // every pod of this node that names it.
            let d = p
                .cfg
                .state_dir
                .join("pvc")
                .join(&ns)
                .join(&claim.claim_name);
            mkdir(&d)?;
            d
        } else if let Some(cm) = &v.config_map {
            mkdir(&own)?;
            let api: Api<ConfigMap> = Api::namespaced(p.client.clone(), &ns);
            let data = match api.get_opt(&cm.name).await {
                Ok(Some(obj)) => obj.data.unwrap_or_default(),
                Ok(None) if cm.optional == Some(true) => BTreeMap::new(),
                Ok(None) => {
                    return Err(format!(
                        "volume {:?}: ConfigMap {:?} not found",
                        v.name, cm.name
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "volume {:?}: failed to get ConfigMap {:?}: {e}",
                        v.name, cm.name
                    ));
                }
            };
            write_items(&own, &data, cm.items.as_deref(), &v.name)?;
            own
        } else if let Some(sec) = &v.secret {
            mkdir(&own)?;
            let sname = sec.secret_name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(p.client.clone(), &ns);
            let data = match api.get_opt(&sname).await {
                Ok(Some(obj)) => decode_secret(&obj),
                Ok(None) if sec.optional == Some(true) => BTreeMap::new(),
                Ok(None) => return Err(format!("volume {:?}: Secret {sname:?} not found", v.name)),
                Err(e) => {
                    return Err(format!(
                        "volume {:?}: failed to get Secret {sname:?}: {e}",
                        v.name
                    ));
                }
            };
            write_items(&own, &data, sec.items.as_deref(), &v.name)?;
            own
        } else {
            return Err(format!(
                "volume {:?}: only emptyDir, hostPath, persistentVolumeClaim, configMap and secret volumes are supported by the development node",
                v.name
            ));
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, String>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    volume: &str,
) -> Result<(), String> {
    let pairs: Vec<(String, String)> = match items {
        Some(items) => items
            .iter()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    for (key, rel) in pairs {
        let Some(value) = data.get(&key) else {
            return Err(format!("volume {volume:?}: key {key:?} not found"));
        };
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("volume {volume:?}: {e}"))?;
        }
        std::fs::write(&path, value)
            .map_err(|e| format!("volume {volume:?}: failed to write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn decode_secret(s: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    out.extend(s.string_data.clone().unwrap_or_default());
    out
}

type Sources = (
    BTreeMap<String, BTreeMap<String, String>>,
    BTreeMap<String, BTreeMap<String, String>>,
);

/// ConfigMaps and Secrets named by the containers' `env` and `envFrom`.
async fn fetch_env_sources(p: &PodCtx, containers: &[&Container]) -> Result<Sources, String> {
    let ns = p.pod.metadata.namespace.clone().unwrap_or_default();
    let mut cms = BTreeSet::new();
    let mut secs = BTreeSet::new();
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                if let Some(r) = &v.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &v.secret_key_ref {
                    secs.insert(r.name.clone());
                }
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &f.secret_ref {
                secs.insert(r.name.clone());
            }
        }
    }
    let mut config_maps = BTreeMap::new();
    let cm_api: Api<ConfigMap> = Api::namespaced(p.client.clone(), &ns);
    for name in cms {
        match cm_api.get_opt(&name).await {
            Ok(Some(cm)) => {
                config_maps.insert(name, cm.data.unwrap_or_default());
            }
            Ok(None) => {}
            Err(e) => return Err(format!("failed to get ConfigMap {ns}/{name}: {e}")),
        }
    }
    let mut secrets = BTreeMap::new();
    let s_api: Api<Secret> = Api::namespaced(p.client.clone(), &ns);
    for name in secs {
        match s_api.get_opt(&name).await {
            Ok(Some(s)) => {
                secrets.insert(name, decode_secret(&s));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("failed to get Secret {ns}/{name}: {e}")),
        }
    }
    Ok((config_maps, secrets))
}

/// Exit of one process: (container index, start generation, status).
type Exit = (usize, u64, std::io::Result<std::process::ExitStatus>);

/// Runs the containers `which` (indices into `specs` and the model list) until they all
/// finish, the pod is deleted, or the node shuts down.
async fn run_stage(
    p: &mut PodCtx,
    init: bool,
    which: &[usize],
    specs: &[LaunchSpec],
    policy: &str,
    rx: &mut watch::Receiver<Option<Pod>>,
    shutdown: &mut watch::Receiver<bool>,
) -> StageEnd {
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<Exit>();
    let mut generation: HashMap<usize, u64> = HashMap::new();
    for &i in which {
        start(p, init, i, &specs[i], &exit_tx, &mut generation);
    }
    p.report().await;
    loop {
        let models = if init {
            &p.model.init
        } else {
            &p.model.containers
        };
        if which.iter().all(|&i| models[i].finished()) {
            return StageEnd::Finished;
        }
        let next_restart = which.iter().filter_map(|&i| models[i].restart_at).min();
        tokio::select! {
            Some((i, g, status)) = exit_rx.recv() => {
                if generation.get(&i) != Some(&g) { continue; }
                record_exit(p, init, i, status);
                let m = if init { &mut p.model.init[i] } else { &mut p.model.containers[i] };
                let code = match &m.state { ContainerState::Terminated(t) => t.exit_code, _ => 0 };
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => !init || code != 0,
                };
                if restart {
                    let delay = backoff(&p.cfg, m.restart_count);
                    m.restart_at = Some(Instant::now() + delay);
                    info!(pod = %p.key, container = %m.name, exit_code = code, ?delay, "container exited; restarting after back-off");
                } else {
                    info!(pod = %p.key, container = %m.name, exit_code = code, "container exited");
                }
                p.report().await;
            }
            () = sleep_until(next_restart), if next_restart.is_some() => {
                let now = Instant::now();
                for &i in which {
                    let m = if init { &mut p.model.init[i] } else { &mut p.model.containers[i] };
                    if m.restart_at.is_some_and(|t| t <= now) {
                        m.restart_at = None;
                        if let ContainerState::Terminated(t) = &m.state {
                            m.last = Some(t.clone());
                        }
                        m.restart_count += 1;
                        start(p, init, i, &specs[i], &exit_tx, &mut generation);
                    }
                }
                p.report().await;
            }
            changed = rx.changed() => {
                let current = if changed.is_ok() { rx.borrow_and_update().clone() } else { None };
                match current {
                    None => {
                        stop_all(p, init, which, &mut exit_rx, &generation, Duration::from_secs(2)).await;
                        return StageEnd::Gone;
                    }
                    Some(pod) => {
                        let deleting = pod.metadata.deletion_timestamp.is_some();
                        let grace = pod.metadata.deletion_grace_period_seconds;
                        p.pod = pod;
                        if deleting {
                            let grace = Duration::from_secs(u64::try_from(grace.unwrap_or(30)).unwrap_or(0)).min(p.cfg.max_grace);
                            info!(pod = %p.key, ?grace, "pod deleted; stopping containers");
                            stop_all(p, init, which, &mut exit_rx, &generation, grace).await;
                            return StageEnd::Deleting;
                        }
                    }
                }
            }
            _ = shutdown.changed() => {
                stop_all(p, init, which, &mut exit_rx, &generation, p.cfg.max_grace).await;
                return StageEnd::Shutdown;
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Restart back-off after `restarts` earlier restarts: `base * 2^restarts`, capped.
///
/// # Source
/// The kubelet's CrashLoopBackOff doubles from 10 s to 300 s; the development node's
/// defaults are shorter (see `--restart-backoff`), the shape is the same.
#[must_use]
pub fn backoff_delay(base: Duration, max: Duration, restarts: i32) -> Duration {
    let exp = u32::try_from(restarts.clamp(0, 20)).unwrap_or(20);
    base.saturating_mul(2u32.saturating_pow(exp)).min(max)
}

fn backoff(cfg: &RunnerConfig, restarts: i32) -> Duration {
    backoff_delay(cfg.backoff_base, cfg.backoff_max, restarts)
}

fn start(
    p: &mut PodCtx,
    init: bool,
    i: usize,
    spec: &LaunchSpec,
    exit_tx: &mpsc::UnboundedSender<Exit>,
    generation: &mut HashMap<usize, u64>,
) {
    let key = p.key.clone();
    let log = p.dir.join("logs").join(format!(
        "{}.log",
        if init {
            &p.model.init[i].name
        } else {
            &p.model.containers[i].name
        }
    ));
    let m = if init {
        &mut p.model.init[i]
    } else {
        &mut p.model.containers[i]
    };
    let g = generation.entry(i).or_insert(0);
    *g += 1;
    let g = *g;
    match spawn(spec, &log, m.restart_count) {
        Ok(mut child) => {
            let pid = child.id().unwrap_or(0);
            info!(pod = %key, container = %m.name, pid, log = %log.display(), program = %spec.program.display(), args = ?spec.args, "container started");
            m.state = ContainerState::Running {
                started_at: Utc::now(),
                pid,
            };
            let tx = exit_tx.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                // The receiver is gone only when the pod task ended; nothing to tell then.
                let _ = tx.send((i, g, status));
            });
        }
        Err(e) => {
            let err = Error::Spawn {
                program: spec.program.clone(),
                container: m.name.clone(),
                pod: key.clone(),
                source: e,
            };
            warn!(pod = %key, error = %crate::display_chain(&err), "container failed to start");
            m.state = ContainerState::Terminated(Terminated {
                exit_code: 128,
                signal: None,
                reason: "StartError".to_owned(),
                message: Some(crate::display_chain(&err)),
                started_at: Utc::now(),
                finished_at: Utc::now(),
                container_id: String::new(),
            });
            // Report the failure as an exit so the restart policy applies.
            let _ = exit_tx.send((i, g, Err(std::io::Error::other("start failed"))));
        }
    }
}

/// Placeholder in environment values replaced by a free loopback port at each start.
pub const FREE_PORT: &str = "{free-port}";

/// A TCP port free on loopback right now (the OS picks it; there is a small window in which
/// another process could take it, acceptable for a development node).
fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

fn spawn(spec: &LaunchSpec, log: &Path, restart: i32) -> std::io::Result<tokio::process::Child> {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    writeln!(
        out,
        "=== autoglm-devnode: start #{restart} at {}: {} {:?}",
        Utc::now().to_rfc3339(),
        spec.program.display(),
        spec.args
    )?;
    let err = out.try_clone()?;
    let mut env = spec.env.clone();
    for v in env.values_mut() {
        while v.contains(FREE_PORT) {
            *v = v.replacen(FREE_PORT, &free_port()?.to_string(), 1);
        }
    }
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(&env)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group, so SIGTERM/SIGKILL reach anything the worker starts.
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn()
}

fn record_exit(
    p: &mut PodCtx,
    init: bool,
    i: usize,
    status: std::io::Result<std::process::ExitStatus>,
) {
    let m = if init {
        &mut p.model.init[i]
    } else {
        &mut p.model.containers[i]
    };
    let (started_at, pid) = match &m.state {
        ContainerState::Running { started_at, pid } => (*started_at, *pid),
        // A start failure already recorded its own termination.
        _ => return,
    };
    // Anything the process left behind in its group goes with it.
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
    let (code, signal) = match status {
        Ok(s) => (s.code(), s.signal()),
        Err(_) => (Some(128), None),
    };
    m.state = ContainerState::Terminated(Terminated::from_exit(
        code,
        signal,
        started_at,
        format!("devnode://{pid}"),
    ));
}

/// SIGTERM to every running container's process group, SIGKILL to what is left after
/// `grace`; records the exits.
async fn stop_all(
    p: &mut PodCtx,
    init: bool,
    which: &[usize],
    exit_rx: &mut mpsc::UnboundedReceiver<Exit>,
    generation: &HashMap<usize, u64>,
    grace: Duration,
) {
    for &i in which {
        let m = if init {
            &mut p.model.init[i]
        } else {
            &mut p.model.containers[i]
        };
        m.restart_at = None;
    }
    let pids = |p: &PodCtx| -> Vec<(usize, u32)> {
        which
            .iter()
            .filter_map(|&i| {
                let m = if init {
                    &p.model.init[i]
                } else {
                    &p.model.containers[i]
                };
                match m.state {
                    ContainerState::Running { pid, .. } => Some((i, pid)),
                    _ => None,
                }
            })
            .collect()
    };
    let signal_all = |list: &[(usize, u32)], sig: Signal| {
        for (_, pid) in list {
            if let Ok(raw) = i32::try_from(*pid) {
                let _ = killpg(Pid::from_raw(raw), sig);
            }
        }
    };
    let running = pids(p);
    if running.is_empty() {
        return;
    }
    signal_all(&running, Signal::SIGTERM);
    let mut deadline = Instant::now() + grace;
    let mut killed = false;
    while !pids(p).is_empty() {
        match tokio::time::timeout_at(deadline.into(), exit_rx.recv()).await {
            Ok(Some((i, g, status))) => {
                if generation.get(&i) == Some(&g) {
                    record_exit(p, init, i, status);
                }
            }
            Ok(None) => break,
            Err(_) if !killed => {
                signal_all(&pids(p), Signal::SIGKILL);
                killed = true;
                deadline = Instant::now() + Duration::from_secs(5);
            }
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(30);
        assert_eq!(backoff_delay(b, m, 0), Duration::from_secs(1));
        assert_eq!(backoff_delay(b, m, 1), Duration::from_secs(2));
        assert_eq!(backoff_delay(b, m, 4), Duration::from_secs(16));
        assert_eq!(backoff_delay(b, m, 5), Duration::from_secs(30));
        assert_eq!(backoff_delay(b, m, 1000), Duration::from_secs(30));
        assert_eq!(backoff_delay(b, m, -1), Duration::from_secs(1));
    }
}
