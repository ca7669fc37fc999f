//! Crash and failover against a real control plane with KWOK nodes: kill -9 mid-reconcile
//! and restart, and two controllers with leader election.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{A100, Env, T4, assert_no_oversubscription, job_spec, node_of, wait_for};
use kube::ResourceExt;
use serde_json::json;

/// `Some` when the namespace has exactly `n` jobs and all are `Scheduled`.
async fn all_scheduled(env: &Env, n: usize) -> Option<()> {
    (env.scheduled_jobs().await? == (n, n)).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_reconcile_then_restart_leaves_no_duplicates_and_consistent_placements() {
    let env = Env::new("ctl-crash").await;
    env.add_nodes("a100", A100, 8, 5).await;
    env.add_nodes("t4", T4, 4, 5).await;
    env.wait_nodes_ready(10).await;
    let mut ctl = env.controller(&[]);
    // 30 jobs x 2 replicas of 6144 MiB slices (60 replicas).
    for i in 0..30 {
        env.apply_job(
            &format!("job-{i:02}"),
            job_spec(json!({"memoryMiB": 6144}), 2),
        )
        .await;
    }
    // Kill as soon as the first replica pods exist, while jobs are still being reconciled
    // and bound.
    wait_for(Duration::from_secs(60), "first replica pods", || async {
        let pods = env.pods().list(&Default::default()).await.ok()?;
        (!pods.items.is_empty()).then_some(())
    })
    .await;
    ctl.kill9();
    let pods_before = env.all_pods().await.len();
    let bound_before = env
        .all_pods()
        .await
        .iter()
        .filter(|p| node_of(p).is_some())
        .count();
    let _ctl2 = env.controller(&[]);
    wait_for(
        Duration::from_secs(180),
        "all 30 jobs Scheduled after restart",
        || all_scheduled(&env, 30),
    )
    .await;
    let live = env.live_pods().await;
    // Exactly one pod per (job, replica), all bound; nothing lost.
    let mut per_replica: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in &live {
        let l = p.labels();
        *per_replica
            .entry((
                l["autoglm.io/job"].clone(),
                l["autoglm.io/replica-index"].clone(),
            ))
            .or_default() += 1;
        assert!(node_of(p).is_some(), "pod {} unbound", p.name_any());
    }
    assert_eq!(per_replica.len(), 60);
    assert!(
        per_replica.values().all(|&n| n == 1),
        "duplicate replica pods: {per_replica:?}"
    );
    assert_no_oversubscription(&live, &env.gpu_memory().await);
    println!("bound before kill -9: {bound_before} of 60; pods before kill -9: {pods_before}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_controllers_only_the_leader_acts() {
    let env = Env::new("ctl-leader").await;
    env.add_node("a100-0", A100, 8).await;
    env.wait_nodes_ready(1).await;
    let lease = env.name().to_owned();
    let args = [
        "--leader-election",
        "--lease-namespace",
        &lease,
        "--lease-name",
        "autoglm-controller",
        "--lease-duration-s",
        "6",
        "--lease-grace-s",
        "2",
    ];
    let mut first = env.controller(&args);
    wait_for(Duration::from_secs(30), "a leader", || async {
        (first.metric("autoglm_controller_leader").await == Some(1.0)).then_some(())
    })
    .await;
    let second = env.controller(&args);
    wait_for(
        Duration::from_secs(30),
        "second controller up as standby",
        || async { (second.metric("autoglm_controller_leader").await == Some(0.0)).then_some(()) },
    )
    .await;
    env.apply_job("one", job_spec(json!({"count": 1}), 2)).await;
    wait_for(Duration::from_secs(60), "job one Scheduled", || {
        all_scheduled(&env, 1)
    })
    .await;
    assert!(
        first
            .metric("autoglm_controller_reconciles_total")
            .await
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        second
            .metric("autoglm_controller_reconciles_total")
            .await
            .unwrap_or(0.0),
        0.0,
        "the standby reconciled"
    );
    assert_eq!(second.metric("autoglm_controller_leader").await, Some(0.0));

    // The leader dies without releasing the Lease; the standby takes over once it expires.
    first.kill9();
    wait_for(
        Duration::from_secs(60),
        "standby becomes leader",
        || async { (second.metric("autoglm_controller_leader").await == Some(1.0)).then_some(()) },
    )
    .await;
    env.apply_job("two", job_spec(json!({"count": 1}), 2)).await;
    wait_for(
        Duration::from_secs(60),
        "job two Scheduled by the new leader",
        || all_scheduled(&env, 2),
    )
    .await;
    let pods = env.all_pods().await;
    let names: Vec<String> = pods
        .iter()
        .map(|p| {
            format!(
                "{} {:?} {:?}",
                p.name_any(),
                p.status.as_ref().and_then(|s| s.phase.clone()),
                p.metadata.deletion_timestamp
            )
        })
        .collect();
    assert_eq!(pods.len(), 4, "{names:#?}");
    assert_no_oversubscription(&pods, &env.gpu_memory().await);
}
