//! The development node against a real kube-apiserver (started by `autoglm-testkit`): Node
//! registration with device-plugin capacity, the kubelet side of the device-plugin protocol
//! (a fake plugin in this test registers, advertises two devices and answers `Allocate`),
//! and the pod lifecycle of local processes: success, exit codes, restarts under
//! `OnFailure`, an unknown image, and deletion killing the process.
//!
//! Pods here bind themselves (`spec.nodeName`); the image `test.local/sh` is mapped to
//! `/bin/sh` for this test only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autoglm_devnode::plugins::connect_unix;
use autoglm_node_agent::proto::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse, Device, DevicePluginOptions,
    Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse, RegisterRequest,
    device_plugin_server::{DevicePlugin, DevicePluginServer},
    registration_client::RegistrationClient,
};
use autoglm_testkit::{ChildGuard, TestNamespace, wait_for};
use futures::Stream;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio_stream::wrappers::UnixListenerStream;

const RESOURCE: &str = "example.com/fakegpu";

/// A device plugin with two healthy devices, `fake-0` and `fake-1`; `Allocate` answers with
/// `FAKE_DEVICES=<ids joined by ,>` and records the request.
#[derive(Clone, Default)]
struct FakePlugin {
    allocations: Arc<Mutex<Vec<Vec<String>>>>,
}

type LawStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for FakePlugin {
    type ListAndWatchStream = LawStream;

    async fn get_device_plugin_options(
        &self,
        _: tonic::Request<Empty>,
    ) -> Result<tonic::Response<DevicePluginOptions>, tonic::Status> {
        Ok(tonic::Response::new(DevicePluginOptions::default()))
    }

    async fn list_and_watch(
        &self,
        _: tonic::Request<Empty>,
    ) -> Result<tonic::Response<Self::ListAndWatchStream>, tonic::Status> {
        let devices = ["fake-0", "fake-1"]
            .iter()
            .map(|id| Device {
                id: (*id).to_owned(),
                health: "Healthy".to_owned(),
                topology: None,
            })
            .collect();
        let first = futures::stream::once(async move { Ok(ListAndWatchResponse { devices }) });
        // Keep the stream open, as a real plugin does.
        Ok(tonic::Response::new(Box::pin(futures::StreamExt::chain(
            first,
            futures::stream::pending(),
        ))))
    }

    async fn get_preferred_allocation(
        &self,
        _: tonic::Request<PreferredAllocationRequest>,
    ) -> Result<tonic::Response<PreferredAllocationResponse>, tonic::Status> {
        Ok(tonic::Response::new(PreferredAllocationResponse::default()))
    }

    async fn allocate(
        &self,
        request: tonic::Request<AllocateRequest>,
    ) -> Result<tonic::Response<AllocateResponse>, tonic::Status> {
        let req = request.into_inner();
        let mut responses = Vec::new();
        for c in req.container_requests {
            self.allocations.lock().unwrap().push(c.devices_ids.clone());
            responses.push(ContainerAllocateResponse {
                envs: BTreeMap::from([("FAKE_DEVICES".to_owned(), c.devices_ids.join(","))])
                    .into_iter()
                    .collect(),
                ..ContainerAllocateResponse::default()
            });
        }
        Ok(tonic::Response::new(AllocateResponse {
            container_responses: responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: tonic::Request<PreStartContainerRequest>,
    ) -> Result<tonic::Response<PreStartContainerResponse>, tonic::Status> {
        Ok(tonic::Response::new(PreStartContainerResponse::default()))
    }
}

fn sh_pod(name: &str, node: &str, script: &str, policy: &str, host_dir: &Path, gpus: u32) -> Pod {
    let mut container = json!({
        "name": "main",
        "image": "test.local/sh:1",
        "command": ["/bin/sh", "-c", script],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "OUT", "value": "/out"},
        ],
        "volumeMounts": [{"name": "out", "mountPath": "/out"}],
    });
    if gpus > 0 {
        container["resources"] = json!({"limits": {RESOURCE: gpus.to_string()}});
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 2,
            "containers": [container],
            "volumes": [{"name": "out", "hostPath": {"path": host_dir.to_string_lossy()}}],
        },
    }))
    .unwrap()
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn wait_phase(pods: &Api<Pod>, name: &str, want: &str) -> Pod {
    wait_for(
        Duration::from_secs(60),
        &format!("pod {name} phase {want}"),
        || async {
            let p = pods.get(name).await.ok()?;
            (phase(&p) == want).then_some(p)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnode_runs_pods_as_processes_and_plays_the_kubelet_for_device_plugins() {
    let ns = TestNamespace::new("devnode").await;
    let client = ns.client();
    let tmp = tempfile::tempdir().unwrap();
    let node_name = format!("devnode-{}", ns.name());
    let plugin_dir = tmp.path().join("dp");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    // SIGTERM on drop, so the devnode stops its pods and marks the node not ready.
    let devnode = ChildGuard::spawn(
        "autoglm-devnode",
        Command::new(env!("CARGO_BIN_EXE_autoglm-devnode"))
            .args([
                "--node-name",
                &node_name,
                "--state-dir",
                &tmp.path().join("state").to_string_lossy(),
                "--device-plugin-dir",
                &plugin_dir.to_string_lossy(),
                "--image",
                "test.local/sh*=/bin/sh",
                "--device-resource",
                RESOURCE,
                "--restart-backoff-ms",
                "200",
                "--cpu",
                "4",
                "--memory",
                "8Gi",
            ])
            .env("KUBECONFIG", ns.kubeconfig())
            .env("RUST_LOG", "info"),
    );

    // Node registered, Ready, with the capacity given on the command line.
    let nodes: Api<Node> = Api::all(client.clone());
    let node = wait_for(Duration::from_secs(30), "node registration", || async {
        nodes.get_opt(&node_name).await.ok().flatten()
    })
    .await;
    let status = node.status.clone().unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["cpu"].0, "4");
    assert_eq!(status.capacity.as_ref().unwrap()["memory"].0, "8Gi");
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");

    // The fake device plugin registers on kubelet.sock; its two devices become capacity.
    let plugin = FakePlugin::default();
    let sock = plugin_dir.join("fake.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(plugin.clone()))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let kubelet_sock = plugin_dir.join("kubelet.sock");
    wait_for(Duration::from_secs(10), "kubelet.sock", || async {
        kubelet_sock.exists().then_some(())
    })
    .await;
    let mut reg = RegistrationClient::new(connect_unix(&kubelet_sock).await.unwrap());
    reg.register(RegisterRequest {
        version: "v1beta1".into(),
        endpoint: "fake.sock".into(),
        resource_name: RESOURCE.into(),
        options: None,
    })
    .await
    .unwrap();
    wait_for(Duration::from_secs(30), "device capacity 2", || async {
        let n = nodes.get(&node_name).await.ok()?;
        let s = n.status?;
        (s.capacity?.get(RESOURCE)?.0 == "2" && s.allocatable?.get(RESOURCE)?.0 == "2")
            .then_some(())
    })
    .await;

    let pods: Api<Pod> = ns.api();
    let pp = PostParams::default();

    // 1. Succeeds; gets its device through Allocate (env) and its name through the
    //    downward API; writes through a hostPath mount at /out.
    pods.create(
        &pp,
        &sh_pod(
            "ok",
            &node_name,
            "echo \"$POD_NAME $FAKE_DEVICES\" > $OUT/ok.txt",
            "Never",
            &out,
            1,
        ),
    )
    .await
    .unwrap();
    let p = wait_phase(&pods, "ok", "Succeeded").await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    let term = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    // First free healthy device in ID order.
    assert_eq!(
        std::fs::read_to_string(out.join("ok.txt")).unwrap(),
        "ok fake-0\n"
    );
    assert_eq!(
        plugin.allocations.lock().unwrap().clone(),
        vec![vec!["fake-0".to_owned()]]
    );

    // 2. Exit code 3 under Never: Failed, exit code reported.
    pods.create(
        &pp,
        &sh_pod("fails", &node_name, "exit 3", "Never", &out, 0),
    )
    .await
    .unwrap();
    let p = wait_phase(&pods, "fails", "Failed").await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    let term = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(term.exit_code, 3);
    assert_eq!(term.reason.as_deref(), Some("Error"));
    assert_eq!(cs.restart_count, 0);

    // 3. OnFailure: first run fails, the restart succeeds -> Succeeded, restartCount 1,
    //    lastState holds the failed run.
    let script = "if [ -f $OUT/flaky.seen ]; then exit 0; fi; touch $OUT/flaky.seen; exit 7";
    pods.create(
        &pp,
        &sh_pod("flaky", &node_name, script, "OnFailure", &out, 0),
    )
    .await
    .unwrap();
    let p = wait_phase(&pods, "flaky", "Succeeded").await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(cs.restart_count, 1);
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 7);

    // 4. An unknown image is never run: the pod fails with ErrImageNeverPull.
    let mut unknown = sh_pod(
        "unknown",
        &node_name,
        "touch $OUT/unknown.ran",
        "Never",
        &out,
        0,
    );
    unknown.spec.as_mut().unwrap().containers[0].image = Some("busybox:1.36".into());
    pods.create(&pp, &unknown).await.unwrap();
    let p = wait_phase(&pods, "unknown", "Failed").await;
    let st = p.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("ErrImageNeverPull"));
    assert!(st.message.unwrap().contains("busybox:1.36"));
    let waiting = st.container_statuses.unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ErrImageNeverPull"));
    assert!(!out.join("unknown.ran").exists());

    // 5. Deleting a running pod stops its process (SIGTERM), then removes the pod.
    pods.create(
        &pp,
        &sh_pod("sleeper", &node_name, "exec sleep 1000", "Never", &out, 1),
    )
    .await
    .unwrap();
    let p = wait_phase(&pods, "sleeper", "Running").await;
    let id = p.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let pid: i32 = id.strip_prefix("devnode://").unwrap().parse().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(
        plugin.allocations.lock().unwrap().last().cloned(),
        // fake-0 was released when "ok" finished, so it is free again.
        Some(vec!["fake-0".to_owned()])
    );
    pods.delete("sleeper", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "pod sleeper gone", || async {
        pods.get_opt("sleeper")
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    wait_for(Duration::from_secs(10), "process gone", || async {
        // A zombie has no cmdline; either way the process no longer runs.
        (!proc_dir.exists()
            || std::fs::read(proc_dir.join("cmdline"))
                .map(|c| c.is_empty())
                .unwrap_or(true))
        .then_some(())
    })
    .await;

    drop(devnode);
    server.abort();
    // The node says it stopped.
    let n = nodes.get(&node_name).await.unwrap();
    let ready = n
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    let _ = nodes.delete(&node_name, &DeleteParams::default()).await;
}
