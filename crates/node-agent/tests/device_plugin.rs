//! The device plugin against a test kubelet: a gRPC `Registration` server on a temporary Unix
//! socket, driven by the test, and a `DevicePlugin` client dialling the plugin's socket as the
//! kubelet does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use autoglm_api::{AssignedGpu, GpuAssignment, GpuHealth, HealthStatus};
use autoglm_node_agent::allocations::PodAllocation;
use autoglm_node_agent::deviceplugin::gpu::{GpuDevices, ResourceKind, slice_id};
use autoglm_node_agent::deviceplugin::registration::{KubeletWatcher, connect_unix};
use autoglm_node_agent::deviceplugin::runner::{PluginConfig, PluginSignals, run_plugin};
use autoglm_node_agent::inventory::simulated::{SimulatedConfig, SimulatedInventory};
use autoglm_node_agent::inventory::{GpuInventory, InventorySnapshot};
use autoglm_node_agent::proto::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty,
    ListAndWatchResponse, PreferredAllocationRequest, RegisterRequest,
    device_plugin_client::DevicePluginClient,
    registration_server::{Registration, RegistrationServer},
};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Upper bound on waiting for an event that should come at once (not a timing assertion:
/// it only keeps a broken test from hanging).
const DEADLINE: Duration = Duration::from_secs(20);

struct TestKubelet {
    registrations: mpsc::UnboundedSender<RegisterRequest>,
}

#[tonic::async_trait]
impl Registration for TestKubelet {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<autoglm_node_agent::proto::Empty>, Status> {
        let _ = self.registrations.send(request.into_inner());
        Ok(Response::new(autoglm_node_agent::proto::Empty {}))
    }
}

/// Starts a test kubelet on `<dir>/kubelet.sock`; stop it with the returned token.
fn start_kubelet(dir: &Path) -> (mpsc::UnboundedReceiver<RegisterRequest>, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let socket = dir.join("kubelet.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind kubelet.sock");
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(TestKubelet { registrations: tx }))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await
            .expect("test kubelet serves");
    });
    (rx, stop)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("event within the deadline")
        .expect("channel open")
}

async fn next_list(stream: &mut Streaming<ListAndWatchResponse>) -> Vec<(String, String)> {
    let msg = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("ListAndWatch message within the deadline")
        .expect("stream ok")
        .expect("stream open");
    msg.devices.into_iter().map(|d| (d.id, d.health)).collect()
}

/// Two simulated 16 GiB GPUs on node `n1`.
fn snapshot() -> InventorySnapshot {
    let c = SimulatedConfig::parse(
        "gpus: [{product: Tesla T4-16G, memoryMiB: 16384, count: 2}]",
        "t",
    )
    .expect("valid config");
    SimulatedInventory::new(&c, "n1")
        .snapshot(&[])
        .expect("snapshot")
}

struct Harness {
    dir: tempfile::TempDir,
    inventory: watch::Sender<Option<InventorySnapshot>>,
    pods: watch::Sender<Vec<PodAllocation>>,
    cancel: CancellationToken,
    uuids: Vec<String>,
    _watcher: KubeletWatcher,
}

impl Harness {
    /// Starts both plugins (whole GPUs and memory slices) against the directory.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = snapshot();
        let uuids = snap.gpus.iter().map(|g| g.uuid.clone()).collect();
        let (inventory, inv_rx) = watch::channel(Some(snap));
        let (pods, pods_rx) = watch::channel(Vec::new());
        let watcher = KubeletWatcher::start(dir.path()).expect("watch dir");
        let cancel = CancellationToken::new();
        for kind in [ResourceKind::WholeGpu, ResourceKind::MemorySlice] {
            let logic = GpuDevices::spawn(kind, inv_rx.clone(), pods_rx.clone());
            let config = PluginConfig {
                dir: dir.path().to_path_buf(),
                endpoint: kind.endpoint().to_owned(),
            };
            tokio::spawn(run_plugin(
                config,
                logic,
                watcher.subscribe(),
                PluginSignals::default(),
                cancel.clone(),
            ));
        }
        Self {
            dir,
            inventory,
            pods,
            cancel,
            uuids,
            _watcher: watcher,
        }
    }

    fn socket(&self, kind: ResourceKind) -> PathBuf {
        self.dir.path().join(kind.endpoint())
    }

    async fn client(&self, kind: ResourceKind) -> DevicePluginClient<tonic::transport::Channel> {
        DevicePluginClient::new(connect_unix(&self.socket(kind)).await.expect("dial plugin"))
    }

    /// Dials the `kind` plugin and opens its `ListAndWatch` stream. The client comes back
    /// too: keep it for as long as the stream is read, as the kubelet does.
    async fn list_and_watch(
        &self,
        kind: ResourceKind,
    ) -> (
        DevicePluginClient<tonic::transport::Channel>,
        Streaming<ListAndWatchResponse>,
    ) {
        let mut client = self.client(kind).await;
        let stream = client
            .list_and_watch(Empty {})
            .await
            .expect("ListAndWatch")
            .into_inner();
        (client, stream)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts a [`Harness`] and a test kubelet in its directory, and waits until both plugins
/// have registered. Returns the registrations by resource name and the kubelet's stop token.
async fn start_registered() -> (Harness, HashMap<String, RegisterRequest>, CancellationToken) {
    let h = Harness::start();
    let (mut regs, kubelet) = start_kubelet(h.dir.path());
    let got = registrations(&mut regs).await;
    (h, got, kubelet)
}

/// Collects the two registrations (order not fixed) by resource name.
async fn registrations(
    rx: &mut mpsc::UnboundedReceiver<RegisterRequest>,
) -> HashMap<String, RegisterRequest> {
    let mut out = HashMap::new();
    for _ in 0..2 {
        let r = next(rx).await;
        out.insert(r.resource_name.clone(), r);
    }
    out
}

#[tokio::test]
async fn registers_both_resources_and_lists_devices() {
    let (h, got, _kubelet) = start_registered().await;

    let whole = &got["autoglm.io/gpu"];
    assert_eq!(whole.version, "v1beta1");
    assert_eq!(whole.endpoint, "autoglm-gpu.sock");
    assert!(
        whole
            .options
            .expect("options")
            .get_preferred_allocation_available
    );
    let slices = &got["autoglm.io/gpu-memory-gib"];
    assert_eq!(slices.endpoint, "autoglm-gpu-memory.sock");

    // Whole GPUs: one device per GPU, named by UUID.
    let (_client, mut stream) = h.list_and_watch(ResourceKind::WholeGpu).await;
    let list = next_list(&mut stream).await;
    assert_eq!(
        list,
        vec![
            (h.uuids[0].clone(), "Healthy".to_owned()),
            (h.uuids[1].clone(), "Healthy".to_owned())
        ]
    );

    // Slices: 16384 MiB / 1024 = 16 per GPU, 32 in all.
    let (_client, mut stream) = h.list_and_watch(ResourceKind::MemorySlice).await;
    let list = next_list(&mut stream).await;
    assert_eq!(list.len(), 32);
    assert_eq!(list[0].0, slice_id(&h.uuids[0], 0));
    assert_eq!(list[31].0, slice_id(&h.uuids[1], 15));
    assert!(list.iter().all(|(_, health)| health == "Healthy"));
}

#[tokio::test]
async fn health_changes_are_streamed() {
    let (h, _, _kubelet) = start_registered().await;
    let (_whole_client, mut whole) = h.list_and_watch(ResourceKind::WholeGpu).await;
    let (_slices_client, mut slices) = h.list_and_watch(ResourceKind::MemorySlice).await;
    assert_eq!(next_list(&mut whole).await.len(), 2);
    assert_eq!(next_list(&mut slices).await.len(), 32);

    // GPU 1 turns unhealthy (e.g. XID 79).
    h.inventory.send_modify(|s| {
        s.as_mut().expect("snapshot").gpus[1].health = GpuHealth {
            status: HealthStatus::Unhealthy,
            reason: Some("XID 79".into()),
        };
    });
    let list = next_list(&mut whole).await;
    assert_eq!(list[0], (h.uuids[0].clone(), "Healthy".to_owned()));
    assert_eq!(list[1], (h.uuids[1].clone(), "Unhealthy".to_owned()));
    let list = next_list(&mut slices).await;
    assert_eq!(list.iter().filter(|(_, s)| s == "Unhealthy").count(), 16);
    assert!(
        list[16..]
            .iter()
            .all(|(id, s)| id.starts_with(&h.uuids[1]) && s == "Unhealthy")
    );

    // ...and recovers.
    h.inventory.send_modify(|s| {
        s.as_mut().expect("snapshot").gpus[1].health = GpuHealth::default();
    });
    let list = next_list(&mut whole).await;
    assert_eq!(list[1], (h.uuids[1].clone(), "Healthy".to_owned()));
    let list = next_list(&mut slices).await;
    assert!(list.iter().all(|(_, s)| s == "Healthy"));
}

fn pod(
    name: &str,
    created: &str,
    gpu: (i32, &str),
    memory_mib: Option<i64>,
    compute_milli: Option<i32>,
) -> PodAllocation {
    PodAllocation {
        namespace: "team".into(),
        pod: name.into(),
        uid: format!("uid-{name}"),
        job: Some("job".into()),
        created: Some(created.into()),
        started: false,
        assignment: GpuAssignment {
            node: "n1".into(),
            gpus: vec![AssignedGpu {
                index: gpu.0,
                uuid: gpu.1.into(),
            }],
            memory_mib,
            compute_milli,
        },
    }
}

async fn preferred(
    c: &mut DevicePluginClient<tonic::transport::Channel>,
    available: Vec<String>,
    size: i32,
) -> Vec<String> {
    c.get_preferred_allocation(PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: available,
            must_include_device_i_ds: vec![],
            allocation_size: size,
        }],
    })
    .await
    .expect("GetPreferredAllocation")
    .into_inner()
    .container_responses
    .remove(0)
    .device_i_ds
}

async fn allocate(
    c: &mut DevicePluginClient<tonic::transport::Channel>,
    ids: Vec<String>,
) -> Result<HashMap<String, String>, Status> {
    let mut r = c
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest { devices_ids: ids }],
        })
        .await?
        .into_inner();
    Ok(r.container_responses.remove(0).envs)
}

#[tokio::test]
async fn allocate_follows_the_assignment_for_whole_and_fractional_requests() {
    let (h, _, _kubelet) = start_registered().await;
    let (u0, u1) = (h.uuids[0].clone(), h.uuids[1].clone());
    // The controller placed `whole` on GPU 1 and a 5000 MiB / 300 milli slice on GPU 0.
    h.pods.send_replace(vec![
        pod("whole", "2026-11-30T09:00:00Z", (1, &u1), None, None),
        pod(
            "slice",
            "2026-11-30T09:00:01Z",
            (0, &u0),
            Some(5000),
            Some(300),
        ),
    ]);

    // Whole GPU: the kubelet could pick either; we prefer the assigned GPU 1.
    let mut c = h.client(ResourceKind::WholeGpu).await;
    let chosen = preferred(&mut c, vec![u0.clone(), u1.clone()], 1).await;
    assert_eq!(chosen, vec![u1.clone()]);
    let env = allocate(&mut c, chosen).await.expect("Allocate");
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], u1);
    assert_eq!(env["CUDA_VISIBLE_DEVICES"], u1);
    assert_eq!(env["AUTOGLM_GPU_MEMORY_MIB"], "16384");
    assert_eq!(env["AUTOGLM_GPU_COMPUTE_MILLI"], "1000");
    assert!(!env.contains_key("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"));

    // Slice: 5000 MiB -> ceil(5000 / 1024) = 5 devices, all on GPU 0, lowest slices first.
    let mut c = h.client(ResourceKind::MemorySlice).await;
    let all: Vec<String> = (0..16)
        .map(|k| slice_id(&u1, k))
        .chain((0..16).map(|k| slice_id(&u0, k)))
        .collect();
    let chosen = preferred(&mut c, all, 5).await;
    assert_eq!(chosen, (0..5).map(|k| slice_id(&u0, k)).collect::<Vec<_>>());
    let env = allocate(&mut c, chosen).await.expect("Allocate");
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], u0);
    assert_eq!(env["AUTOGLM_GPU_MEMORY_MIB"], "5000"); // the exact MiB, not 5 x 1024
    assert_eq!(env["AUTOGLM_GPU_COMPUTE_MILLI"], "300");
    assert_eq!(env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], "30");
    assert_eq!(env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"], "0=5000M");

    // Slices nobody was assigned (no waiting pod wants 3): derived from the IDs alone:
    // 3 x 1024 = 3072 MiB, compute 3072 * 1000 / 16384 = 187 milli -> MPS ceil(18.7) = 19 %.
    let ids: Vec<String> = (10..13).map(|k| slice_id(&u1, k)).collect();
    let env = allocate(&mut c, ids).await.expect("Allocate");
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], u1);
    assert_eq!(env["AUTOGLM_GPU_MEMORY_MIB"], "3072");
    assert_eq!(env["AUTOGLM_GPU_COMPUTE_MILLI"], "187");
    assert_eq!(env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], "19");

    // An ID we never advertised is refused.
    let err = allocate(&mut c, vec![slice_id(&u1, 99)])
        .await
        .expect_err("unknown ID");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("unknown device ID"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn registers_again_after_the_kubelet_restarts() {
    let (h, _, kubelet) = start_registered().await;

    // The kubelet stops, and on start wipes the directory and recreates kubelet.sock.
    kubelet.cancel();
    for entry in std::fs::read_dir(h.dir.path()).expect("read dir") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove socket");
    }
    let (mut regs, _kubelet) = start_kubelet(h.dir.path());
    let got = registrations(&mut regs).await;
    assert!(got.contains_key("autoglm.io/gpu"));
    assert!(got.contains_key("autoglm.io/gpu-memory-gib"));

    // The plugins serve fresh sockets.
    let (_client, mut stream) = h.list_and_watch(ResourceKind::WholeGpu).await;
    assert_eq!(next_list(&mut stream).await.len(), 2);
}
