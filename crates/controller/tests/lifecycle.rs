//! Job lifecycle against a real control plane with KWOK nodes: dependsOn chains and cycles,
//! priority order as capacity frees, failure retries with growing backoff, a replica moved off
//! a node that stays NotReady.

mod common;

use std::time::{Duration, Instant};

use autoglm_api::JobPhase;
use common::{A100, Env, job_spec, node_of, wait_for};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// A one-replica, one-GPU [`job_spec`] with the fields of `extra` set on top.
fn spec(extra: serde_json::Value) -> serde_json::Value {
    let mut s = job_spec(json!({"count": 1}), 1);
    for (k, v) in extra.as_object().expect("object") {
        s[k] = v.clone();
    }
    s
}

/// Waits until the job has exactly one live pod and it is Running (KWOK), returns its name.
async fn running_pod(env: &Env, job: &str) -> String {
    running_pod_other_than(env, job, None, Duration::from_secs(60)).await
}

/// [`running_pod`], for a pod not named `not` (a replacement), waiting at most `timeout`.
async fn running_pod_other_than(
    env: &Env,
    job: &str,
    not: Option<&str>,
    timeout: Duration,
) -> String {
    wait_for(timeout, &format!("a Running pod of {job}"), || async {
        let pods = env.job_pods(job).await;
        let live: Vec<_> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && !common::is_terminal(p))
            .collect();
        let p = live.first()?;
        (live.len() == 1
            && Some(p.name_any().as_str()) != not
            && p.status.as_ref()?.phase.as_deref() == Some("Running"))
        .then(|| p.name_any())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_chain_runs_in_order_and_a_cycle_is_refused() {
    let env = Env::new("ctl-deps").await;
    env.add_node("a100-0", A100, 4).await;
    env.wait_nodes_ready(1).await;
    let _ctl = env.controller(&[]);
    env.apply_job("step-c", spec(json!({"dependsOn": ["step-b"]})))
        .await;
    env.apply_job("step-b", spec(json!({"dependsOn": ["step-a"]})))
        .await;
    env.apply_job("step-a", spec(json!({}))).await;

    let a = running_pod(&env, "step-a").await;
    for (job, dep) in [("step-b", "step-a"), ("step-c", "step-b")] {
        let c = wait_for(
            Duration::from_secs(30),
            &format!("{job} Blocked"),
            || async {
                let c = env.condition(job, "Blocked").await?;
                (c.status == "True").then_some(c)
            },
        )
        .await;
        assert_eq!(c.reason, "DependenciesPending");
        assert!(
            c.message.contains(&format!("InferenceJob {dep}")),
            "{job}: {}",
            c.message
        );
        assert!(
            env.job_pods(job).await.is_empty(),
            "{job} has pods while blocked"
        );
    }
    env.set_pod_phase(&a, "Succeeded").await;
    wait_for(Duration::from_secs(30), "step-a Succeeded", || async {
        (env.phase("step-a").await == Some(JobPhase::Succeeded)).then_some(())
    })
    .await;
    let b = running_pod(&env, "step-b").await;
    assert!(
        env.job_pods("step-c").await.is_empty(),
        "step-c started before step-b completed"
    );
    env.set_pod_phase(&b, "Succeeded").await;
    let c = running_pod(&env, "step-c").await;
    env.set_pod_phase(&c, "Succeeded").await;
    wait_for(Duration::from_secs(30), "step-c Succeeded", || async {
        (env.phase("step-c").await == Some(JobPhase::Succeeded)).then_some(())
    })
    .await;
    let complete = env
        .condition("step-c", "Complete")
        .await
        .expect("Complete condition");
    assert_eq!(complete.status, "True");
    let blocked = env
        .condition("step-c", "Blocked")
        .await
        .expect("Blocked condition");
    assert_eq!(
        (blocked.status.as_str(), blocked.reason.as_str()),
        ("False", "DependenciesComplete")
    );

    // A cycle: loop-x -> loop-y -> loop-x.
    env.apply_job("loop-x", spec(json!({"dependsOn": ["loop-y"]})))
        .await;
    env.apply_job("loop-y", spec(json!({"dependsOn": ["loop-x"]})))
        .await;
    let c = wait_for(Duration::from_secs(30), "loop-x refused", || async {
        let c = env.condition("loop-x", "Blocked").await?;
        (c.reason == "DependencyCycle").then_some(c)
    })
    .await;
    assert_eq!(c.status, "True");
    assert!(
        c.message.contains("loop-x -> loop-y -> loop-x"),
        "{}",
        c.message
    );
    assert!(env.job_pods("loop-x").await.is_empty());
    assert!(env.job_pods("loop-y").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_replicas_are_placed_first_as_capacity_frees() {
    let env = Env::new("ctl-prio").await;
    env.add_node("a100-0", A100, 2).await;
    env.wait_nodes_ready(1).await;
    let _ctl = env.controller(&[]);
    // Fill both GPUs.
    env.apply_job("fill-0", spec(json!({}))).await;
    env.apply_job("fill-1", spec(json!({}))).await;
    let f0 = running_pod(&env, "fill-0").await;
    let f1 = running_pod(&env, "fill-1").await;
    // An older low-priority job, then a newer high-priority one; both wait.
    env.apply_job("low-old", spec(json!({"priority": 0}))).await;
    wait_for(Duration::from_secs(30), "low-old Waiting", || async {
        (env.phase("low-old").await == Some(JobPhase::Waiting)).then_some(())
    })
    .await;
    env.apply_job("high-new", spec(json!({"priority": 100})))
        .await;
    wait_for(Duration::from_secs(30), "high-new Waiting", || async {
        (env.phase("high-new").await == Some(JobPhase::Waiting)).then_some(())
    })
    .await;
    // One GPU frees: the high-priority job gets it although it is newer.
    env.set_pod_phase(&f0, "Succeeded").await;
    running_pod(&env, "high-new").await;
    let low = env.job_pods("low-old").await;
    assert_eq!(low.len(), 1);
    assert_eq!(node_of(&low[0]), None, "low-old must still wait");
    // The second GPU frees: now the low-priority job runs.
    env.set_pod_phase(&f1, "Succeeded").await;
    running_pod(&env, "low-old").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replica_is_retried_with_growing_delay_and_the_job_fails_after_the_limit() {
    let env = Env::new("ctl-retry").await;
    env.add_node("a100-0", A100, 1).await;
    env.wait_nodes_ready(1).await;
    let _ctl = env.controller(&[]);
    // maxRetries 2, backoff 2 s doubling: retry 1 after >= 2 s, retry 2 after >= 4 s.
    env.apply_job(
        "flaky",
        spec(json!({"retryPolicy": {"maxRetries": 2, "backoff": {"initialSeconds": 2, "maxSeconds": 60}}})),
    )
    .await;
    let mut delays = Vec::new();
    for attempt in 0..=2 {
        let name = running_pod(&env, "flaky").await;
        assert_eq!(name, format!("flaky-0-{attempt}"));
        env.set_pod_phase(&name, "Failed").await;
        if attempt == 2 {
            break;
        }
        // The controller stamps when it saw the failure; the successor's creation time
        // follows by at least the backoff delay.
        let failed_at = wait_for(Duration::from_secs(30), "failed-at annotation", || async {
            let p = env.pods().get(&name).await.ok()?;
            p.annotations()
                .get("autoglm.io/failed-at")?
                .parse::<k8s_openapi::jiff::Timestamp>()
                .ok()
        })
        .await;
        let next = format!("flaky-0-{}", attempt + 1);
        let created = wait_for(Duration::from_secs(60), &format!("pod {next}"), || async {
            let p = env.pods().get(&next).await.ok()?;
            p.metadata.creation_timestamp.map(|t| t.0)
        })
        .await;
        // creationTimestamp has 1 s resolution: allow the truncation.
        delays.push(created.duration_since(failed_at).as_secs_f64() + 1.0);
    }
    assert!(
        delays[0] >= 2.0,
        "first retry after {:.0} s, backoff is 2 s",
        delays[0]
    );
    assert!(
        delays[1] >= 4.0,
        "second retry after {:.0} s, backoff is 4 s",
        delays[1]
    );
    assert!(delays[1] > delays[0], "delays must grow: {delays:?}");
    let status = wait_for(Duration::from_secs(30), "flaky Failed", || async {
        let s = env.job("flaky").await.status?;
        (s.phase == Some(JobPhase::Failed)).then_some(s)
    })
    .await;
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "RetriesExhausted")
    );
    assert!(
        failed
            .message
            .contains("replica 0 failed 3 times (retryPolicy.maxRetries 2)"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.contains("simulated worker failure"),
        "{}",
        failed.message
    );
    assert_eq!(status.replicas[0].restarts, 2);
}

/// A replica whose node goes NotReady stays while the node may come back, and is placed on
/// another node once `--node-lost-after-s` has passed: the reconciler looks again at that
/// moment instead of at its 60 s resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_leaves_a_node_that_stays_not_ready_after_the_limit() {
    let env = Env::new("ctl-lost").await;
    env.add_node("a100-0", A100, 1).await;
    env.add_node("a100-1", A100, 1).await;
    env.wait_nodes_ready(2).await;
    let _ctl = env.controller(&["--node-lost-after-s", "8"]);
    env.apply_job("move", spec(json!({}))).await;
    let first = running_pod(&env, "move").await;
    let pods = env.job_pods("move").await;
    let lost = pods
        .iter()
        .find(|p| p.name_any() == first)
        .and_then(node_of)
        .expect("the running pod is bound");
    // Take the node from KWOK (which would keep it Ready), then mark it NotReady.
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .patch(
            &lost,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"kwok.x-k8s.io/node": null}}})),
        )
        .await
        .expect("unmanage the node");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    nodes
        .patch_status(
            &lost,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "KubeletStopped",
                "message": "test: kubelet stopped", "lastTransitionTime": now, "lastHeartbeatTime": now,
            }]}})),
        )
        .await
        .expect("mark the node NotReady");
    let t0 = Instant::now();
    // While the node may still come back the replica stays, and its status says until when.
    let message = wait_for(Duration::from_secs(6), "the NotReady message", || async {
        let job = env.job("move").await;
        let m = job.status?.replicas.first()?.message.clone()?;
        m.contains("is NotReady since").then_some(m)
    })
    .await;
    assert!(message.contains(&lost), "{message}");
    assert!(
        env.job_pods("move")
            .await
            .iter()
            .any(|p| p.name_any() == first && p.metadata.deletion_timestamp.is_none()),
        "the replica must not move before the limit"
    );
    // After the limit (8 s, whole seconds) it runs on the other node, well before a resync.
    let second = running_pod_other_than(&env, "move", Some(&first), Duration::from_secs(40)).await;
    let took = t0.elapsed();
    assert_ne!(second, first);
    let pods = env.job_pods("move").await;
    let on = pods
        .iter()
        .find(|p| p.name_any() == second)
        .and_then(node_of);
    assert!(
        on.is_some() && on.as_deref() != Some(lost.as_str()),
        "moved to {on:?}"
    );
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(30),
        "moved after {took:?}; expected about 8 s"
    );
}
