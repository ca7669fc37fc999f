//! Hand-computed scores for every placement policy on a two-node case, and property tests
//! of exact accounting.
//!
//! The case: node A is a T4 node (16 vCPU, 64 GiB, 2 GPUs) with 500 milli-GPU of GPU 0 in
//! use; node B is an idle G2 node (96 vCPU, 384 GiB, 8 GPUs). The request asks 4 vCPU,
//! 8 GiB and 300 milli-GPU of one GPU. Every expected number below is worked out by hand in
//! the comment next to it.

use autoglm_scheduler::model::{Cluster, GpuRequest, GpuShare, NodeState, Placement, PodRequest};
use autoglm_scheduler::policy::fgd::fgd_int_score;
use autoglm_scheduler::policy::{
    AutoGlm, BestFit, DotProd, Fgd, GpuClustering, GpuPacking, GpuPick, LeastAllocated,
    LeastLoaded, MostAllocated, POLICY_NAMES, Placer, Policy, RoundRobin, TypePrices, TypicalPods,
    policy_by_name,
};
use proptest::prelude::*;

fn case() -> (Cluster, PodRequest) {
    let a = NodeState::new("a", 16_000, 65_536, 2, "T4", 16_384);
    let b = NodeState::new("b", 96_000, 393_216, 8, "G2", 0);
    let mut c = Cluster::new(vec![a, b]);
    let pre = PodRequest::new(
        "pre",
        0,
        0,
        GpuRequest::Shared {
            milli: 500,
            mem_mib: 0,
        },
    );
    c.allocate(
        &pre,
        &Placement {
            node: 0,
            gpus: vec![GpuShare {
                index: 0,
                milli: 500,
                mem_mib: 0,
            }],
            score: 0.0,
        },
    )
    .unwrap();
    let req = PodRequest::new(
        "p",
        4_000,
        8_192,
        GpuRequest::Shared {
            milli: 300,
            mem_mib: 0,
        },
    );
    (c, req)
}

/// The two-pod workload behind the FGD cases: S1 = 1 vCPU + 1 whole GPU, S2 = 1 vCPU + 500
/// milli-GPU; each is half of the typical pods.
fn workload() -> Vec<PodRequest> {
    vec![
        PodRequest::new("s1", 1_000, 0, GpuRequest::Whole { count: 1 }),
        PodRequest::new(
            "s2",
            1_000,
            0,
            GpuRequest::Shared {
                milli: 500,
                mem_mib: 0,
            },
        ),
    ]
}

#[test]
fn best_fit_raw_scores() {
    let (c, req) = case();
    // A: L = 0.5 * 12000/128000 + 0.5 * 1200/8000 = 0.046875 + 0.075 = 0.121875 -> 87.
    assert_eq!(BestFit::raw_score(&c.nodes[0], &req), 87);
    // B: L = 0.5 * 92000/128000 + 0.5 * 7700/8000 = 0.359375 + 0.48125 = 0.840625 -> 15.
    assert_eq!(BestFit::raw_score(&c.nodes[1], &req), 15);
    // Normalised: A 100, B 0; A wins on its best-fit GPU (GPU 0, 500 free).
    let p = c.place(&req, &mut BestFit::new()).unwrap();
    assert_eq!((p.node, p.gpus[0].index, p.score), (0, 0, 100.0));
}

#[test]
fn dot_prod_scores() {
    let (c, req) = case();
    // A: dot = 0.125 * 0.03125 + 0.1875 * 0.0375 = 0.0109375 -> 100 * (1 - 0.00546875) = 99.45 -> 99.
    assert_eq!(DotProd::node_score(&c.nodes[0], &req), 99);
    // B: dot = 0.75 * 0.03125 + 1.0 * 0.0375 = 0.0609375 -> 100 * (1 - 0.03046875) = 96.95 -> 96.
    assert_eq!(DotProd::node_score(&c.nodes[1], &req), 96);
}

#[test]
fn gpu_packing_scores() {
    let (c, req) = case();
    // A: uses shared GPU 0 (500 free): 100 - (500 * 100 / 1000) / 10 = 95.
    assert_eq!(GpuPacking::node_score(&c.nodes[0], &req), 95);
    // B: all 8 GPUs idle: max(33 - 8, 8) = 25.
    assert_eq!(GpuPacking::node_score(&c.nodes[1], &req), 25);
    // A whole-GPU request on A must take the idle GPU 1: 50 - 1 = 49.
    let whole = PodRequest::new("w", 0, 0, GpuRequest::Whole { count: 1 });
    assert_eq!(GpuPacking::node_score(&c.nodes[0], &whole), 49);
}

#[test]
fn gpu_clustering_scores() {
    let (c, req) = case();
    // A hosts only shape (1, 500), not (1, 300): band 0 + 25 * (8000 - 1500) / 8000 = 20.
    assert_eq!(GpuClustering::node_score(&c.nodes[0], &req), 20);
    // B hosts nothing: band 25 + 25 * 0 / 8000 = 25.
    assert_eq!(GpuClustering::node_score(&c.nodes[1], &req), 25);
    // A request of the same shape (1, 500) on A: band 75 + 20 = 95.
    let same = PodRequest::new(
        "s",
        0,
        0,
        GpuRequest::Shared {
            milli: 500,
            mem_mib: 0,
        },
    );
    assert_eq!(GpuClustering::node_score(&c.nodes[0], &same), 95);
}

#[test]
fn kube_allocated_scores() {
    let (c, req) = case();
    // LeastAllocated A: cpu 12000*100/16000 = 75, mem 57344*100/65536 = 87, gpu 1200*100/2000
    // = 60 -> 222 / 3 = 74. B: 95 + 97 + 96 = 288 / 3 = 96.
    assert_eq!(LeastAllocated::node_score(&c.nodes[0], &req), 74);
    assert_eq!(LeastAllocated::node_score(&c.nodes[1], &req), 96);
    // MostAllocated A: 25 + 12 + 40 = 77 / 3 = 25. B: 4 + 2 + 3 = 9 / 3 = 3.
    assert_eq!(MostAllocated::node_score(&c.nodes[0], &req), 25);
    assert_eq!(MostAllocated::node_score(&c.nodes[1], &req), 3);
}

#[test]
fn least_loaded_and_round_robin() {
    let (c, req) = case();
    // Dominant share: A 500/2000 = 0.25 -> 0.75; B 0 -> 1.0.
    let mut ll = LeastLoaded::new(1);
    assert_eq!(ll.score(&c, 0, &req).0, 0.75);
    assert_eq!(ll.score(&c, 1, &req).0, 1.0);
    assert_eq!(c.place(&req, &mut ll).unwrap().node, 1);
    let mut rr = RoundRobin::default();
    let picks: Vec<usize> = (0..3)
        .map(|_| c.place(&req, &mut rr).unwrap().node)
        .collect();
    assert_eq!(picks, vec![0, 1, 0]);
}

#[test]
fn fgd_fragmentation_by_hand() {
    let (c, req) = case();
    let typical = TypicalPods::from_requests(&workload(), 0.95);
    assert_eq!(typical.specs.len(), 2);
    assert_eq!(
        (typical.specs[0].milli, typical.specs[1].milli),
        (1000, 500)
    );
    assert_eq!(
        (typical.specs[0].weight, typical.specs[1].weight),
        (0.5, 0.5)
    );
    // A before: S1 fits on GPU 1, GPU 0 (500 < 1000) is fragment: 500; S2 fits, nothing
    // below 500: 0. F = 0.5 * 500 = 250.
    assert_eq!(typical.frag_of(&c.nodes[0]), 250.0);
    // 300 on GPU 0 -> [200, 1000]: S1 200, S2 200 -> F 200, delta -50.
    assert_eq!(typical.node_frag(12_000, &[200, 1000], Some("T4")), 200.0);
    // 300 on GPU 1 -> [500, 700]: S1 fits nowhere -> all 1200; S2 0 -> F 600, delta +350.
    assert_eq!(typical.node_frag(12_000, &[500, 700], Some("T4")), 600.0);
    // B: idle, F 0; after 300 on GPU 0: S1 700, S2 0 -> F 350, delta +350.
    // Integer scores: floor(100 * sigmoid(0.05)) = 51, floor(100 * sigmoid(-0.35)) = 41.
    assert_eq!(fgd_int_score(-50.0), 51);
    assert_eq!(fgd_int_score(350.0), 41);
    let mut fgd = Fgd::new(typical);
    assert_eq!(fgd.score(&c, 0, &req), (51.0, GpuPick::Shared(0)));
    assert_eq!(fgd.score(&c, 1, &req), (41.0, GpuPick::Shared(0)));
    let p = c.place(&req, &mut fgd).unwrap();
    assert_eq!((p.node, p.gpus[0].index), (0, 0));
}

#[test]
fn fgd_cpu_lack_counts_all_free_gpu() {
    let typical = TypicalPods::from_requests(&workload(), 1.0);
    // 500 milli-CPU free < 1000 asked by both specs: every free milli-GPU is fragment.
    assert_eq!(typical.node_frag(500, &[1000, 300], None), 1300.0);
}

#[test]
fn autoglm_scores_by_hand() {
    let (c, req) = case();
    // rho = (1000 + 500) milli-GPU / (1000 + 1000) milli-CPU = 0.75. A: 1500 - 0.75 * 16000
    // < 0, so no stranding before or after; the score is -delta_frag = +50 on GPU 0.
    let mut ag = AutoGlm::from_workload(&workload());
    assert_eq!(ag.rho_cpu(), 0.75);
    assert_eq!(ag.score(&c, 0, &req), (50.0, GpuPick::Shared(0)));
    assert_eq!(ag.score(&c, 1, &req), (-350.0, GpuPick::Shared(0)));
    // Stranding: 8000 milli-GPU free with 4000 milli-CPU free strands 8000 - 3000 = 5000.
    assert_eq!(ag.stranded(8000.0, 4000.0), 5000.0);
    assert_eq!(c.place(&req, &mut ag).unwrap().node, 0);
}

/// A pod of `count` whole GPUs and 1 vCPU, optionally limited to one GPU type.
fn whole(count: u32, ty: Option<&str>) -> PodRequest {
    let mut p = PodRequest::new("w", 1000, 1024, GpuRequest::Whole { count });
    if let Some(t) = ty {
        p.gpu_types = vec![t.to_string()];
    }
    p
}

#[test]
fn type_prices_by_hand() {
    // T4: 2 GPUs, V100: 3 GPUs, A10: 1 GPU with 4 vCPUs.
    let mut c = Cluster::new(vec![
        NodeState::new("t4", 32_000, 65_536, 2, "T4", 16_384),
        NodeState::new("v100", 32_000, 65_536, 3, "V100", 16_384),
        NodeState::new("a10", 4_000, 65_536, 1, "A10", 16_384),
    ]);
    let mut a10_cpu_heavy = PodRequest::new(
        "a",
        8_000,
        1024,
        GpuRequest::Shared {
            milli: 500,
            mem_mib: 0,
        },
    );
    a10_cpu_heavy.gpu_types = vec!["A10".into()];
    let mut either = whole(1, None);
    either.gpu_types = vec!["V100".into(), "T4".into()];
    // GPU demand 1000 + 1000 + 2000 + 500 + 8000 + 1000 = 13,500 milli-GPU. Groups that name
    // a type, with their shares: T4 x1 1000/13500, V100 x2 2000/13500, {T4, V100} x1
    // 1000/13500. The A10 pod needs 8 vCPUs (the A10 node has 4) and the T4 x8 pod 8 GPUs
    // (the T4 node has 2): no node hosts them, so they price nothing.
    let workload = [
        whole(1, None),
        whole(1, Some("T4")),
        whole(2, Some("V100")),
        a10_cpu_heavy,
        whole(8, Some("T4")),
        either,
    ];
    let near = |got: f64, want: f64| assert!((got - want).abs() < 1e-12, "{got} != {want}");
    // Idle: free T4 2000, V100 3000, A10 1000, all 6000 milli-GPU; {T4, V100} 5000.
    // T4: 1000/13500 * 6000/2000 + 1000/13500 * 6000/5000 = (3000 + 1200) / 13500;
    // V100: 2000/13500 * 6000/3000 + 1000/13500 * 6000/5000 = (4000 + 1200) / 13500.
    let p = TypePrices::for_workload(&workload, &c).unwrap();
    near(p.of_model("T4"), 4200.0 / 13500.0);
    near(p.of_model("V100"), 5200.0 / 13500.0);
    assert_eq!(p.of_model("A10"), 0.0);
    assert_eq!(p.of_node(2), 0.0);
    // One GPU of the T4 node taken: T4 1000, V100 3000, all 5000, {T4, V100} 4000.
    // T4: 1000/13500 * 5000/1000 + 1000/13500 * 5000/4000 = (5000 + 1250) / 13500;
    // V100: 2000/13500 * 5000/3000 + 1000/13500 * 5000/4000 = (10000/3 + 1250) / 13500.
    let first = whole(1, None);
    let at_t4 = Placement {
        node: 0,
        gpus: vec![GpuShare {
            index: 0,
            milli: 1000,
            mem_mib: 16_384,
        }],
        score: 0.0,
    };
    c.allocate(&first, &at_t4).unwrap();
    let p = TypePrices::for_workload(&workload, &c).unwrap();
    near(p.of_node(0), 6250.0 / 13500.0);
    near(p.of_node(1), (10_000.0 / 3.0 + 1250.0) / 13500.0);
    // No pod names a type: no prices.
    assert_eq!(TypePrices::for_workload(&[whole(1, None)], &c), None);
}

#[test]
fn type_prices_move_unconstrained_pods_off_scarce_types() {
    // A 2-GPU T4 node and a 4-GPU V100 node. Workload: one 1-GPU pod limited to each type
    // and two unconstrained 1-GPU pods (one typical shape of weight 0.5; the limited ones 0.25
    // each, of pods and of GPU demand). With type prices on, the limited specs get no
    // host-scarcity factor (the prices handle them): they keep weight 0.25.
    // Local score of one unconstrained GPU on either node: every 1-GPU spec still fits
    // afterwards, and the spec limited to the other type counts the node's free GPUs as
    // fragment (FGD's rule), which drops by 1000: delta_frag = -0.25 * 1000, score +250 on
    // both. Type prices (all 6000 milli-GPU free): T4 0.25 * 6000 / 2000 = 0.75, V100
    // 0.25 * 6000 / 4000 = 0.375, so the scores are 250 - 750 = -500 and 250 - 375 = -125.
    let nodes = vec![
        NodeState::new("t4", 32_000, 65_536, 2, "T4", 16_384),
        NodeState::new("v100", 32_000, 65_536, 4, "V100", 16_384),
    ];
    let workload = [
        whole(1, Some("T4")),
        whole(1, Some("V100")),
        whole(1, None),
        whole(1, None),
    ];
    let req = whole(1, None);
    let c = Cluster::new(nodes);
    let mut ag = AutoGlm::from_workload(&workload);
    let p = c.place(&req, &mut ag).unwrap();
    assert_eq!((p.node, p.score), (1, -125.0));
    // The policy's own score leaves the price out (weights set up by `place`).
    assert_eq!(ag.score(&c, 0, &req).0, 250.0);
    assert_eq!(ag.score(&c, 1, &req).0, 250.0);
    let prices = ag.type_prices().unwrap();
    assert_eq!(
        (prices.of_model("T4"), prices.of_model("V100")),
        (0.75, 0.375)
    );
    // Without the price the limited specs keep the host-scarcity factor (each fits 1 of the
    // 2 GPU nodes: 0.25 * (2 / 1)^2 = 1), and the weights are scaled back to the workload's
    // total of 1: 1 / 2.5 = 0.4 per limited spec, 0.5 / 2.5 = 0.2 for the unconstrained one.
    // Both local scores are +0.4 * 1000 = 400, and the equal scores go to the smaller
    // leftover: the T4 node.
    let mut plain = policy_by_name("autoglm-no-type-price", 0, &workload).unwrap();
    let q = c.place(&req, plain.as_mut()).unwrap();
    assert_eq!((q.node, q.score), (0, 400.0));
    // A pod that may use either type scores like the unconstrained one (the local score
    // depends on the workload, not on the request's types): the price sends it to V100 too.
    let mut either = whole(1, None);
    either.gpu_types = vec!["T4".into(), "V100".into()];
    assert_eq!(c.place(&either, &mut ag).unwrap().node, 1);
    assert_eq!(c.place(&either, plain.as_mut()).unwrap().node, 0);
}

#[test]
fn host_scarcity_moves_weight_between_shapes_and_keeps_the_total() {
    // An idle 8-GPU node with 128 vCPUs and an idle 2-GPU T4 node with 32 vCPUs. Workload: two
    // 1-GPU 1-vCPU pods (one shape, weight 2/3) and one 8-GPU 100-vCPU pod (weight 1/3).
    // Host scarcity (exponent 2): the 8-GPU shape fits 1 of the 2 GPU nodes, x (2/1)^2 = 4:
    // 4/3; the 1-GPU shape fits both, x1: 2/3. Scaled back to the workload's total of 1:
    // 8-GPU 2/3, 1-GPU 1/3.
    // One more 1-GPU pod: on the 8-GPU node the 8-GPU shape stops fitting, so its 7000 free
    // milli-GPU become fragment: growth 2/3 * 7000, score -4666.7. On the T4 node the 8-GPU
    // shape never fits, so its free GPUs are fragment before and after: 2000 -> 1000, score
    // +2/3 * 1000 = +666.7. The 1-GPU shape fits either way, and no GPU is stranded (rho =
    // 10,000 milli-GPU / 102,000 milli-CPU; 31 free vCPUs feed 3,039 milli-GPU > 1,000).
    // Without the scaling the 8-GPU shape weighs 4/3 and the scores double.
    let c = Cluster::new(vec![
        NodeState::new("big", 128_000, 524_288, 8, "G3", 16_384),
        NodeState::new("t4", 32_000, 65_536, 2, "T4", 16_384),
    ]);
    let mut big = whole(8, None);
    big.cpu_milli = 100_000;
    let workload = [whole(1, None), whole(1, None), big];
    let mut ag = AutoGlm::from_workload(&workload);
    let p = c.place(&whole(1, None), &mut ag).unwrap();
    assert_eq!(p.node, 1);
    assert!((p.score - 2000.0 / 3.0).abs() < 1e-9, "{}", p.score);
    let (on_big, _) = ag.score(&c, 0, &whole(1, None));
    assert!((on_big + 14000.0 / 3.0).abs() < 1e-9, "{on_big}");
}

#[test]
fn autoglm_moved_to_another_cluster_decides_as_a_fresh_one() {
    // Host scarcity is worked out per cluster; a policy that served one cluster must not carry
    // (or compound) those weights into the next, of the same or another size.
    let mut big = whole(8, None);
    big.cpu_milli = 100_000;
    // A CPU-only pod too: its shape takes no factor but is scaled with the others.
    let cpu_only = PodRequest::new("c", 1000, 1024, GpuRequest::None);
    let workload = [whole(1, None), whole(1, None), big, cpu_only];
    let first = Cluster::new(vec![
        NodeState::new("g3", 128_000, 524_288, 8, "G3", 16_384),
        NodeState::new("t4", 32_000, 65_536, 2, "T4", 16_384),
    ]);
    // 8-GPU, 100-vCPU hosts: 1 of 2 GPU nodes here (weight x4), 2 of 2 (x1) and 2 of 3 (x2.25)
    // in the next two.
    let same_size = Cluster::new(vec![
        NodeState::new("g3a", 128_000, 524_288, 8, "G3", 16_384),
        NodeState::new("g3b", 128_000, 524_288, 8, "G3", 16_384),
    ]);
    let mut larger = same_size.clone();
    larger
        .nodes
        .push(NodeState::new("t4", 32_000, 65_536, 2, "T4", 16_384));
    larger.resync();
    let req = whole(1, None);
    let mut reused = AutoGlm::from_workload(&workload);
    c_place(&first, &req, &mut reused);
    for next in [&same_size, &larger, &first] {
        let fresh = c_place(next, &req, &mut AutoGlm::from_workload(&workload));
        assert_eq!(c_place(next, &req, &mut reused), fresh);
    }
}

fn c_place(c: &Cluster, req: &PodRequest, policy: &mut AutoGlm) -> Placement {
    c.place(req, policy).unwrap()
}

// ---- properties ----

fn arb_node() -> impl Strategy<Value = NodeState> {
    (1u64..64, 1u64..256, 0usize..5).prop_map(|(cpu, mem, gpus)| {
        NodeState::new(
            "n",
            cpu * 1000,
            mem * 1024,
            gpus,
            if gpus % 2 == 0 { "T4" } else { "A10" },
            16_384,
        )
    })
}

fn arb_req() -> impl Strategy<Value = PodRequest> {
    let gpu = prop_oneof![
        Just(GpuRequest::None),
        (1u32..4).prop_map(|count| GpuRequest::Whole { count }),
        (1u32..1000, 0u64..8192).prop_map(|(milli, mem_mib)| GpuRequest::Shared { milli, mem_mib }),
    ];
    (0u64..16_000, 0u64..32_768, gpu, any::<bool>()).prop_map(|(cpu, mem, gpu, typed)| {
        let mut p = PodRequest::new("p", cpu, mem, gpu);
        if typed && gpu != GpuRequest::None {
            p.gpu_types = vec!["A10".into()];
        }
        p
    })
}

fn assert_within_capacity(c: &Cluster) {
    for n in &c.nodes {
        assert!(n.cpu_used <= n.cpu_milli, "CPU over capacity on {}", n.name);
        assert!(
            n.mem_used <= n.mem_mib,
            "memory over capacity on {}",
            n.name
        );
        for g in &n.gpus {
            assert!(
                g.milli_used <= 1000,
                "GPU compute over capacity on {}",
                n.name
            );
            assert!(
                g.mem_used_mib <= g.mem_mib,
                "GPU memory over capacity on {}",
                n.name
            );
        }
    }
}

fn without_generation(c: &Cluster) -> Cluster {
    let mut c = c.clone();
    for n in &mut c.nodes {
        n.generation = 0;
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_policy_overallocates_and_release_restores(
        nodes in prop::collection::vec(arb_node(), 1..5),
        reqs in prop::collection::vec(arb_req(), 1..40),
    ) {
        for name in POLICY_NAMES {
            let mut cluster = Cluster::new(nodes.clone());
            let mut policy = policy_by_name(name, 7, &reqs).unwrap();
            let mut placer = Placer::default();
            let mut placed: Vec<(PodRequest, Placement)> = Vec::new();
            for r in &reqs {
                if let Ok(p) = placer.place(&cluster, r, policy.as_mut()) {
                    // A policy's choice always passes the model's own check.
                    let before = without_generation(&cluster);
                    cluster.allocate(r, &p).unwrap();
                    assert_within_capacity(&cluster);
                    // Release right away restores exactly, then allocate again.
                    cluster.release(r, &p).unwrap();
                    prop_assert_eq!(without_generation(&cluster), before);
                    cluster.allocate(r, &p).unwrap();
                    placed.push((r.clone(), p));
                }
            }
            // Releasing everything (in any order: here reversed) leaves the nodes empty.
            for (r, p) in placed.iter().rev() {
                cluster.release(r, p).unwrap();
            }
            prop_assert_eq!(without_generation(&cluster), Cluster::new(nodes.clone()));
        }
    }
}
