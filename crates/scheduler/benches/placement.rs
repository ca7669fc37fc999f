//! Criterion benchmark of one placement decision (feasibility + policy choice, then allocate
//! and release so the changed node is rescored next time) on
//! the Alibaba openb cluster (1,213 nodes) and on a synthetic 10,000-node cluster, both
//! filled to about 70% of their GPUs with the trace's pods by BestFit first.
//!
//! Run: `cargo bench -p autoglm-scheduler --bench placement`. Needs
//! `../shared/data/alibaba-openb/` next to the checkout (the workspace's trace folder); the
//! bench is skipped with a message when it is missing.

use std::hint::black_box;
use std::path::PathBuf;

use autoglm_scheduler::model::{Cluster, NodeState, PodRequest};
use autoglm_scheduler::policy::{BestFit, Placer, policy_by_name};
use autoglm_scheduler::sim::placement::inflate_and_shuffle;
use autoglm_scheduler::sim::trace::{load_nodes, load_pods};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

fn data(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/alibaba-openb")
        .join(file)
}

/// Fill `nodes` to ~70% of GPU capacity; return the cluster and the next 64 pods to place.
fn prepared(nodes: Vec<NodeState>, pods: &[PodRequest]) -> (Cluster, Vec<PodRequest>) {
    let mut cluster = Cluster::new(nodes);
    let cap = cluster.gpu_milli_capacity();
    let work = inflate_and_shuffle(pods, cap, 1.3, 42);
    let mut placer = Placer::default();
    let mut bf = BestFit::new();
    let mut i = 0;
    while i < work.len() && cluster.gpu_milli_used() * 10 < cap * 7 {
        if let Ok(p) = placer.place(&cluster, &work[i], &mut bf) {
            let _ = cluster.allocate(&work[i], &p);
        }
        i += 1;
    }
    let next = work[i..].iter().take(64).cloned().collect();
    (cluster, next)
}

fn bench(c: &mut Criterion) {
    let (Ok(nodes), Ok(pods)) = (
        load_nodes(&data("openb_node_list_gpu_node.csv")),
        load_pods(&data("openb_pod_list_default.csv")),
    ) else {
        eprintln!("skipping: ../shared/data/alibaba-openb not found");
        return;
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let big: Vec<NodeState> = (0..10_000)
        .map(|_| nodes[rng.random_range(0..nodes.len())].clone())
        .collect();
    let big_pods: Vec<PodRequest> = (0..100_000)
        .map(|_| pods[rng.random_range(0..pods.len())].clone())
        .collect();
    let setups = [
        ("openb-1213", prepared(nodes, &pods), &pods),
        ("synthetic-10000", prepared(big, &big_pods), &big_pods),
    ];
    let mut group = c.benchmark_group("place_commit_release");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(3));
    group.warm_up_time(std::time::Duration::from_secs(1));
    for (label, (cluster, next), workload) in &setups {
        for name in ["random", "best-fit", "fgd", "autoglm"] {
            let mut policy = policy_by_name(name, 42, workload).expect("known policy");
            let mut placer = Placer::default();
            let mut k = 0usize;
            // Each iteration commits the placement and releases it again, so the node it
            // changed must be rescored: without that, `fgd` and `autoglm` would answer every
            // decision from their index untouched (about 0.5 µs), which no replay sees.
            let mut cluster = cluster.clone();
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| {
                    let pod = &next[k % next.len()];
                    k += 1;
                    if let Ok(p) = placer.place(&cluster, pod, policy.as_mut()) {
                        cluster.allocate(pod, &p).expect("placement fits");
                        cluster.release(pod, &p).expect("just allocated");
                        black_box(p);
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
