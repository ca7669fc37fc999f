//! Placement against a real control plane with KWOK nodes: 50 jobs on 20 mixed GPU nodes,
//! a replica nothing fits until a bigger node arrives, and replicas limited to GPU types.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    A100, Env, H100, T4, assert_no_oversubscription, assignment, job_spec, node_of, wait_for,
};
use kube::ResourceExt;
use serde_json::json;

/// The GPU part of job `i`'s spec and its replica count (see the test for the totals).
fn job_shape(i: usize) -> (serde_json::Value, i64) {
    match i % 5 {
        0 => (json!({"count": 1}), 1),
        1 => (json!({"count": 2}), 1),
        2 => (json!({"memoryMiB": 8192}), 2),
        3 => (json!({"memoryMiB": 12288, "computeMilli": 500}), 1),
        _ => (json!({"memoryMiB": 4096}), 3),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_jobs_on_twenty_mixed_nodes_are_all_bound_without_oversubscription() {
    let env = Env::new("ctl-place").await;
    // 20 nodes, 136 GPUs: 6 x 8 T4 (15360 MiB), 8 x 8 A100 (40960 MiB), 6 x 4 H100 (81559 MiB).
    env.add_nodes("t4", T4, 8, 6).await;
    env.add_nodes("a100", A100, 8, 8).await;
    env.add_nodes("h100", H100, 4, 6).await;
    env.wait_nodes_ready(20).await;
    let _ctl = env.controller(&[]);
    // 50 jobs, 80 replicas: 10 x 1 whole GPU, 10 x 2 whole GPUs, 20 slices of 8192 MiB,
    // 10 slices of 12288 MiB, 30 slices of 4096 MiB. Even one slice per GPU needs 60 + 30
    // whole = 90 of 136 GPUs, so every replica is feasible whatever the order.
    let mut expected = BTreeMap::new();
    for i in 0..50 {
        let (gpu, replicas) = job_shape(i);
        env.apply_job(&format!("job-{i:02}"), job_spec(gpu.clone(), replicas))
            .await;
        expected.insert(format!("job-{i:02}"), (gpu, replicas));
    }
    wait_for(
        Duration::from_secs(180),
        "all 50 jobs Scheduled",
        || async {
            let (_, scheduled) = env.scheduled_jobs().await?;
            (scheduled == 50).then_some(())
        },
    )
    .await;
    let live = env.live_pods().await;
    assert_eq!(
        live.len(),
        80,
        "one pod per replica: 10 + 10 + 20 + 10 + 30"
    );
    let gpu_mem = env.gpu_memory().await;
    for p in &live {
        let node = node_of(p).unwrap_or_else(|| panic!("pod {} is not bound", p.name_any()));
        assert!(
            gpu_mem.contains_key(&node),
            "pod {} bound outside the pool: {node}",
            p.name_any()
        );
        let a = assignment(p).unwrap_or_else(|| panic!("pod {} has no assignment", p.name_any()));
        let job = &p.labels()["autoglm.io/job"];
        let (gpu, _) = &expected[job];
        match gpu.get("count").and_then(serde_json::Value::as_i64) {
            Some(n) => {
                assert_eq!(a.gpus.len() as i64, n, "pod {}", p.name_any());
                assert_eq!(a.memory_mib, None);
            }
            None => {
                assert_eq!(a.gpus.len(), 1);
                assert_eq!(a.memory_mib, gpu["memoryMiB"].as_i64());
                // A 12288 MiB slice only fits GPUs of at least that size (not T4's 15360? it
                // does fit: 12288 <= 15360), every slice within its GPU's memory.
                assert!(a.memory_mib.unwrap() <= gpu_mem[&node]);
            }
        }
        assert_eq!(
            p.annotations()
                .get("cluster-autoscaler.kubernetes.io/safe-to-evict")
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(
            p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()),
            Some("autoglm-scheduler")
        );
    }
    let used = assert_no_oversubscription(&live, &gpu_mem);
    assert!(
        used >= 30,
        "at least the 30 whole GPUs are in use, got {used} GPUs"
    );
    let out = env.ns.kubectl(&["get", "ij", "-n", env.name()]);
    println!("{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_nothing_fits_is_unschedulable_then_binds_when_a_node_with_room_arrives() {
    let env = Env::new("ctl-unsched").await;
    // 12 nodes: 9 with one 15360 MiB T4, 3 with one A100 behind a taint the job does not
    // tolerate.
    env.add_nodes("t4", T4, 1, 9).await;
    for i in 0..3 {
        env.add_tainted_node(&format!("a100-{i}"), A100, 1, &[("dedicated", "training")])
            .await;
    }
    env.wait_nodes_ready(12).await;
    let _ctl = env.controller(&[]);
    env.apply_job("big", job_spec(json!({"memoryMiB": 65536}), 1))
        .await;
    let expected = "0/12 nodes are available: 9 lack 65536 MiB free on one GPU, 3 have an untolerated taint dedicated";
    let pod = wait_for(
        Duration::from_secs(60),
        "pod PodScheduled=False Unschedulable",
        || async {
            let pods = env.job_pods("big").await;
            let p = pods.into_iter().next()?;
            let c = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled")?
                .clone();
            (c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(expected))
            .then_some(p)
        },
    )
    .await;
    assert_eq!(node_of(&pod), None);
    let waiting = wait_for(Duration::from_secs(30), "job Waiting", || async {
        let j = env.job("big").await;
        let s = j.status?;
        (s.phase == Some(autoglm_api::JobPhase::Waiting)).then_some(s)
    })
    .await;
    let message = waiting.message.clone().unwrap_or_default();
    assert!(
        message.starts_with(&format!("replica 0: {expected}")),
        "{message}"
    );
    // Validation beyond the CRD: even idle, no node of the cluster holds 64 GiB on one GPU.
    assert!(
        message.contains("no node in the cluster could hold a replica even when idle"),
        "{message}"
    );
    let sched = waiting
        .conditions
        .iter()
        .find(|c| c.type_ == "Scheduled")
        .expect("Scheduled condition");
    assert_eq!(
        (sched.status.as_str(), sched.reason.as_str()),
        ("False", "Unschedulable")
    );

    env.add_node("h100-0", H100, 1).await;
    let bound = wait_for(
        Duration::from_secs(60),
        "pod bound to the new node",
        || async {
            let p = env.job_pods("big").await.into_iter().next()?;
            node_of(&p).map(|n| (n, p))
        },
    )
    .await;
    assert_eq!(bound.0, format!("{}-h100-0", env.name()));
    let a = assignment(&bound.1).expect("assignment");
    assert_eq!(a.memory_mib, Some(65536));
    assert_eq!(a.gpus[0].uuid, format!("SIM-{}-h100-0-0", env.name()));
    wait_for(
        Duration::from_secs(30),
        "job Scheduled condition",
        || async {
            let c = env.condition("big", "Scheduled").await?;
            (c.status == "True").then_some(())
        },
    )
    .await;
}

/// `resources.gpu.types` limits a job's replicas to nodes with those GPU products (NVML
/// names, as `kubectl get gpunodes` shows them); a product no node has leaves the replica
/// Unschedulable with that reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_types_limit_replicas_to_nodes_with_those_gpus() {
    let env = Env::new("ctl-types").await;
    env.add_node("a100-0", A100, 2).await;
    env.add_node("t4-0", T4, 2).await;
    env.wait_nodes_ready(2).await;
    let _ctl = env.controller(&[]);
    env.apply_job(
        "on-t4",
        job_spec(json!({"count": 1, "types": [T4.product]}), 2),
    )
    .await;
    env.apply_job(
        "on-b200",
        job_spec(json!({"count": 1, "types": ["NVIDIA B200"]}), 1),
    )
    .await;
    let nodes = wait_for(
        Duration::from_secs(60),
        "both on-t4 replicas bound",
        || async {
            let nodes: Vec<String> = env
                .job_pods("on-t4")
                .await
                .iter()
                .filter_map(node_of)
                .collect();
            (nodes.len() == 2).then_some(nodes)
        },
    )
    .await;
    let t4 = format!("{}-t4-0", env.name());
    assert!(nodes.iter().all(|n| *n == t4), "{nodes:?}");
    let expected = "0/2 nodes are available: 2 have no allowed GPU type";
    let waiting = wait_for(Duration::from_secs(30), "on-b200 Waiting", || async {
        let s = env.job("on-b200").await.status?;
        (s.phase == Some(autoglm_api::JobPhase::Waiting)
            && s.message.as_deref().is_some_and(|m| m.contains(expected)))
        .then_some(s)
    })
    .await;
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.ends_with(&format!(
            "{expected}; no node in the cluster could hold a replica even when idle, for the same reasons; waiting for a node that fits"
        )),
        "{message}"
    );
    let pods = env.job_pods("on-b200").await;
    assert_eq!(pods.len(), 1);
    assert_eq!(node_of(&pods[0]), None);
}
