//! `fgd` and `autoglm` decide from an index kept across decisions (`Policy::place`); through
//! any sequence of allocations and releases their choice (node, GPUs, score) must be the one
//! of filtering every node and scoring each feasible one (`Policy::select`, which for
//! `autoglm` is the plain scan and for `fgd` is checked against the plain scan in
//! `feasibility_summary.rs`; here FGD is also checked against the plain scan directly).

use autoglm_scheduler::feasibility::feasible_nodes;
use autoglm_scheduler::model::{
    Cluster, GpuRequest, NodeState, Placement, PodRequest, Taint, TaintEffect,
};
use autoglm_scheduler::policy::{
    AutoGlm, BestFit, Fgd, Policy, TypePrices, TypicalPods, to_placement,
};
use proptest::prelude::*;

fn arb_node(irregular: bool) -> impl Strategy<Value = NodeState> {
    (
        0u64..64_000,
        0u64..262_144,
        prop_oneof![
            Just(0usize),
            1usize..=8,
            Just(if irregular { 10 } else { 8 })
        ],
        prop_oneof![Just("T4"), Just("V100"), Just("A10")],
        prop_oneof![Just(16_384u64), Just(32_768u64)],
        any::<bool>(),
    )
        .prop_map(move |(cpu, mem, gpus, model, gmem, taint)| {
            let mut n = NodeState::new("n", cpu, mem, gpus, model, gmem);
            if irregular && taint {
                n.taints.push(Taint {
                    key: "dedicated".into(),
                    value: "x".into(),
                    effect: TaintEffect::NoSchedule,
                });
            }
            n
        })
}

fn arb_req() -> impl Strategy<Value = PodRequest> {
    (
        0u64..24_000,
        0u64..65_536,
        prop_oneof![
            Just(GpuRequest::None),
            (1u32..=8).prop_map(|count| GpuRequest::Whole { count }),
            (1u32..1000, prop_oneof![Just(0u64), 0u64..20_000])
                .prop_map(|(milli, mem_mib)| GpuRequest::Shared { milli, mem_mib }),
        ],
        0u8..4,
    )
        .prop_map(|(cpu, mem, gpu, types)| {
            let mut r = PodRequest::new("p", cpu, mem, gpu);
            match types {
                1 => r.gpu_types = vec!["T4".into()],
                2 => r.gpu_types = vec!["V100".into(), "A10".into()],
                _ => {}
            }
            r
        })
}

/// FGD by the definition: score every feasible node, first strictly higher score wins.
fn fgd_plain(typical: &TypicalPods, c: &Cluster, req: &PodRequest) -> Option<Placement> {
    let mut out = Vec::new();
    feasible_nodes(c, req, &mut out).ok()?;
    let mut plain = Fgd::new(typical.clone());
    let mut best = None;
    for &n in &out {
        let (s, pick) = plain.score(c, n, req);
        if best.is_none_or(|(b, _, _)| s > b) {
            best = Some((s, n, pick));
        }
    }
    best.map(|(s, n, pick)| to_placement(&c.nodes[n], n, req, pick, s))
}

fn autoglm_plain(workload: &[PodRequest], c: &Cluster, req: &PodRequest) -> Option<Placement> {
    let mut out = Vec::new();
    feasible_nodes(c, req, &mut out).ok()?;
    AutoGlm::from_workload(workload).select(c, req, &out)
}

/// Replay `steps` (index into `pool`, or release of an earlier placement) on one cluster,
/// with persistent `fgd` and `autoglm` instances deciding through `place`, and compare every
/// decision with the plain scan.
fn check(
    nodes: Vec<NodeState>,
    pool: &[PodRequest],
    steps: &[(usize, bool)],
) -> Result<(), TestCaseError> {
    let typical = TypicalPods::from_requests(pool.iter(), 0.95);
    for which in ["fgd", "autoglm"] {
        let mut c = Cluster::new(nodes.clone());
        let mut fgd = Fgd::new(typical.clone());
        let mut agl = AutoGlm::from_workload(pool);
        let mut placed: Vec<(PodRequest, Placement)> = Vec::new();
        let mut scratch = Vec::new();
        for &(k, release) in steps {
            if release && !placed.is_empty() {
                let (req, p) = placed.swap_remove(k % placed.len());
                c.release(&req, &p).unwrap();
                continue;
            }
            let req = &pool[k % pool.len()];
            let (got, want) = if which == "fgd" {
                (
                    fgd.place(&c, req, &mut scratch).ok(),
                    fgd_plain(&typical, &c, req),
                )
            } else {
                (
                    agl.place(&c, req, &mut scratch).ok(),
                    autoglm_plain(pool, &c, req),
                )
            };
            prop_assert_eq!(&got, &want, "{} on request {:?}", which, req);
            if let Some(p) = got {
                c.allocate(req, &p).unwrap();
                placed.push((req.clone(), p));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Regular nodes only: the index decides every request.
    #[test]
    fn index_matches_plain_scan(
        shapes in prop::collection::vec(arb_node(false), 1..5),
        picks in prop::collection::vec(0usize..5, 1..40),
        pool in prop::collection::vec(arb_req(), 1..8),
        steps in prop::collection::vec((0usize..64, prop::bool::weighted(0.15)), 1..120),
    ) {
        let nodes: Vec<NodeState> =
            picks.iter().map(|&k| shapes[k % shapes.len()].clone()).collect();
        check(nodes, &pool, &steps)?;
    }

    /// With tainted and 10-GPU nodes the policies fall back to the scan; same answers.
    #[test]
    fn fallback_matches_plain_scan(
        nodes in prop::collection::vec(arb_node(true), 1..16),
        pool in prop::collection::vec(arb_req(), 1..6),
        steps in prop::collection::vec((0usize..64, prop::bool::weighted(0.15)), 1..60),
    ) {
        check(nodes, &pool, &steps)?;
    }
}

/// A pod asking 300 milli-GPU of one GPU and 1 vCPU.
fn shared_300() -> PodRequest {
    PodRequest::new(
        "a",
        1000,
        1024,
        GpuRequest::Shared {
            milli: 300,
            mem_mib: 0,
        },
    )
}

/// Long run on one cluster: the change journal is truncated (about 2 entries per node are
/// kept) and rows fall behind it; decisions still match the plain scan.
#[test]
fn journal_truncation_keeps_answers() {
    let nodes: Vec<NodeState> = (0..6)
        .map(|i| NodeState::new(format!("n{i}"), 32_000, 131_072, 4, "T4", 16_384))
        .collect();
    let a = shared_300();
    let b = PodRequest::new("b", 2000, 2048, GpuRequest::Whole { count: 1 });
    let rare = PodRequest::new("r", 500, 512, GpuRequest::None);
    let pool = [a.clone(), b.clone(), rare.clone()];
    let typical = TypicalPods::from_requests(pool.iter(), 0.95);
    let mut c = Cluster::new(nodes);
    let mut fgd = Fgd::new(typical.clone());
    let mut scratch = Vec::new();
    // Warm the `rare` row, then churn far past the journal's length (1,024 + 2 per node).
    assert_eq!(
        fgd.place(&c, &rare, &mut scratch).ok(),
        fgd_plain(&typical, &c, &rare)
    );
    for round in 0..1500 {
        let req = if round % 2 == 0 { &a } else { &b };
        let p = fgd.place(&c, req, &mut scratch).unwrap();
        assert_eq!(Some(&p), fgd_plain(&typical, &c, req).as_ref());
        c.allocate(req, &p).unwrap();
        // Keep one placement in a hundred so the final state differs from the first.
        if round % 100 != 0 {
            c.release(req, &p).unwrap();
        }
    }
    assert_eq!(
        fgd.place(&c, &rare, &mut scratch).ok(),
        fgd_plain(&typical, &c, &rare)
    );
}

/// Four 4-GPU T4 nodes and two 4-GPU V100 nodes (64 vCPUs each), a 300 milli-GPU pod and a
/// 1-GPU pod limited to T4: a pool whose type prices differ between the two models.
fn t4_v100_case() -> (Cluster, PodRequest, PodRequest) {
    let mut nodes: Vec<NodeState> = (0..4)
        .map(|i| NodeState::new(format!("t{i}"), 64_000, 262_144, 4, "T4", 16_384))
        .collect();
    nodes.extend(
        (0..2).map(|i| NodeState::new(format!("v{i}"), 64_000, 262_144, 4, "V100", 16_384)),
    );
    let mut t4 = PodRequest::new("t4", 2000, 2048, GpuRequest::Whole { count: 1 });
    t4.gpu_types = vec!["T4".into()];
    (Cluster::new(nodes), shared_300(), t4)
}

/// The same churn for `autoglm` with GPU-type prices (a pod limited to T4 in the pool, and a
/// second model so the prices differ): its free-capacity tally follows the change journal
/// and falls back to a full pass once the journal is truncated; decisions still match a fresh
/// policy's plain scan.
#[test]
fn journal_truncation_keeps_type_prices() {
    let (mut c, a, t4) = t4_v100_case();
    let pool = [a.clone(), t4.clone()];
    let mut agl = AutoGlm::from_workload(&pool);
    let mut scratch = Vec::new();
    for round in 0..1500 {
        let req = if round % 2 == 0 { &a } else { &t4 };
        let p = agl.place(&c, req, &mut scratch).unwrap();
        assert_eq!(
            Some(&p),
            autoglm_plain(&pool, &c, req).as_ref(),
            "round {round}"
        );
        c.allocate(req, &p).unwrap();
        if round % 100 != 0 {
            c.release(req, &p).unwrap();
        }
    }
    assert!(agl.type_prices().is_some_and(|p| p.of_model("T4") > 0.0));
}

#[test]
fn an_empty_cluster_is_unschedulable_not_a_panic() {
    let req = PodRequest::new("a", 1000, 1024, GpuRequest::Whole { count: 1 });
    let pool = [req.clone()];
    let typical = TypicalPods::from_requests(pool.iter(), 0.95);
    let c = Cluster::new(Vec::new());
    let mut scratch = Vec::new();
    assert!(Fgd::new(typical).place(&c, &req, &mut scratch).is_err());
    assert!(
        AutoGlm::from_workload(&pool)
            .place(&c, &req, &mut scratch)
            .is_err()
    );
}

/// `autoglm`'s type prices when more changes than the journal keeps (1,024 + 2 per node)
/// happen between two of its GPU decisions, with a net change in between: it must fall back to
/// a full pass and price exactly as a fresh computation, and decide as the plain scan.
#[test]
fn type_prices_survive_a_truncated_journal() {
    let (mut c, a, t4) = t4_v100_case();
    let pool = [a.clone(), t4.clone()];
    let mut agl = AutoGlm::from_workload(&pool);
    let mut other = BestFit::new();
    let mut scratch = Vec::new();
    for round in 0..5 {
        let p = agl.place(&c, &t4, &mut scratch).unwrap();
        assert_eq!(
            Some(&p),
            autoglm_plain(&pool, &c, &t4).as_ref(),
            "round {round}"
        );
        let fresh = TypePrices::for_workload(&pool, &c).unwrap();
        let kept = agl.type_prices().unwrap();
        for n in 0..c.nodes.len() {
            assert_eq!(kept.of_node(n), fresh.of_node(n), "round {round} node {n}");
        }
        c.allocate(&t4, &p).unwrap();
        // 1,200 changes by another policy, 6 of them kept.
        for k in 0..600 {
            let q = other.place(&c, &a, &mut scratch).unwrap();
            c.allocate(&a, &q).unwrap();
            if k % 100 != 0 {
                c.release(&a, &q).unwrap();
            }
        }
    }
}
