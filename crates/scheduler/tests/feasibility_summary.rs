//! The flat node summary used by `feasible_nodes` and `explain` gives exactly the answers of
//! `check_node` on every node, through allocations and releases.

use autoglm_scheduler::feasibility::{check_node, explain, feasible_nodes};
use autoglm_scheduler::model::{
    Cluster, GpuRequest, NodeState, PodRequest, Taint, TaintEffect, Toleration,
};
use autoglm_scheduler::policy::{BestFit, Placer, RandomFit};
use proptest::prelude::*;

fn arb_node() -> impl Strategy<Value = NodeState> {
    (
        0u64..64_000,
        0u64..262_144,
        prop_oneof![Just(0usize), 1usize..=8, Just(10usize)],
        prop_oneof![Just("T4"), Just("V100"), Just("A10")],
        prop_oneof![Just(16_384u64), Just(32_768u64)],
        0u8..4,
        any::<bool>(),
    )
        .prop_map(|(cpu, mem, gpus, model, gmem, taint, zone)| {
            let mut n = NodeState::new("n", cpu, mem, gpus, model, gmem);
            match taint {
                1 => n.taints.push(Taint {
                    key: "dedicated".into(),
                    value: "x".into(),
                    effect: TaintEffect::NoSchedule,
                }),
                2 => n.taints.push(Taint {
                    key: "soft".into(),
                    value: "x".into(),
                    effect: TaintEffect::PreferNoSchedule,
                }),
                _ => {}
            }
            if zone {
                n.labels.insert("zone".into(), "z1".into());
            }
            n
        })
}

fn arb_req() -> impl Strategy<Value = PodRequest> {
    (
        0u64..16_000,
        0u64..65_536,
        prop_oneof![
            Just(GpuRequest::None),
            (1u32..=8).prop_map(|count| GpuRequest::Whole { count }),
            (1u32..=1000, 0u64..20_000)
                .prop_map(|(milli, mem_mib)| GpuRequest::Shared { milli, mem_mib }),
        ],
        0u8..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(cpu, mem, gpu, types, selector, tolerate)| {
            let mut r = PodRequest::new("p", cpu, mem, gpu);
            match types {
                1 => r.gpu_types = vec!["T4".into()],
                2 => r.gpu_types = vec!["V100".into(), "A10".into()],
                _ => {}
            }
            if selector {
                r.node_selector.insert("zone".into(), "z1".into());
            }
            if tolerate {
                r.tolerations.push(Toleration {
                    key: Some("dedicated".into()),
                    exists: true,
                    value: String::new(),
                    effect: None,
                });
            }
            r
        })
}

fn reference(c: &Cluster, req: &PodRequest) -> Vec<usize> {
    (0..c.nodes.len())
        .filter(|&i| check_node(&c.nodes[i], req).is_ok())
        .collect()
}

fn reference_reasons(c: &Cluster, req: &PodRequest) -> Vec<String> {
    // A cluster built without `Cluster::new` has no summary covering its nodes, so
    // `explain` walks every NodeState: the reference.
    let mut slow = Cluster::default();
    slow.nodes = c.nodes.clone();
    assert!(slow.summary().is_none());
    let mut v: Vec<String> = explain(&slow, req)
        .reasons
        .iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn summary_matches_check_node(
        nodes in prop::collection::vec(arb_node(), 1..24),
        fill in prop::collection::vec(arb_req(), 0..40),
        probes in prop::collection::vec(arb_req(), 1..16),
        seed in any::<u64>(),
    ) {
        let mut c = Cluster::new(nodes);
        let mut placer = Placer::default();
        let mut random = RandomFit::new(seed);
        let mut best = BestFit::new();
        let mut placed = Vec::new();
        for (k, req) in fill.iter().enumerate() {
            let pol: &mut dyn autoglm_scheduler::policy::Policy =
                if k % 2 == 0 { &mut random } else { &mut best };
            if let Ok(p) = placer.place(&c, req, pol) {
                c.allocate(req, &p).unwrap();
                placed.push((req.clone(), p));
            }
            prop_assert!(c.summary_is_current());
        }
        // Release every third placement again.
        for (req, p) in placed.iter().step_by(3) {
            c.release(req, p).unwrap();
            prop_assert!(c.summary_is_current());
        }
        let mut out = Vec::new();
        for req in &probes {
            let fast = feasible_nodes(&c, req, &mut out);
            prop_assert_eq!(&out, &reference(&c, req));
            let mut reasons: Vec<String> = explain(&c, req)
                .reasons
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect();
            reasons.sort();
            prop_assert_eq!(reasons, reference_reasons(&c, req));
            if let Err(u) = fast {
                prop_assert_eq!(u, explain(&c, req));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// FGD scores each distinct node state once per decision; the choice must equal scoring
    /// every feasible node (first top score in node order).
    #[test]
    fn fgd_memo_matches_scoring_every_node(
        shapes in prop::collection::vec(arb_node(), 1..4),
        picks in prop::collection::vec(0usize..4, 4..40),
        fill in prop::collection::vec(arb_req(), 0..30),
        probes in prop::collection::vec(arb_req(), 1..12),
    ) {
        use autoglm_scheduler::policy::{Fgd, Policy, TypicalPods};
        // Few shapes, many nodes: many nodes share a state.
        let nodes: Vec<NodeState> =
            picks.iter().map(|&k| shapes[k % shapes.len()].clone()).collect();
        let mut c = Cluster::new(nodes);
        let workload: Vec<PodRequest> = fill.iter().chain(&probes).cloned().collect();
        let typical = TypicalPods::from_requests(workload.iter(), 0.95);
        let mut placer = Placer::default();
        let mut fgd = Fgd::new(typical.clone());
        for req in &fill {
            if let Ok(p) = placer.place(&c, req, &mut fgd) {
                c.allocate(req, &p).unwrap();
            }
        }
        let mut out = Vec::new();
        for req in &probes {
            if feasible_nodes(&c, req, &mut out).is_err() {
                continue;
            }
            let mut memo = Fgd::new(typical.clone());
            let got = memo.select(&c, req, &out).unwrap();
            let mut plain = Fgd::new(typical.clone());
            let mut best: Option<(f64, usize)> = None;
            for &n in &out {
                let (s, _) = plain.score(&c, n, req);
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, n));
                }
            }
            let (s, n) = best.unwrap();
            let (_, pick) = plain.score(&c, n, req);
            let want = autoglm_scheduler::policy::to_placement(&c.nodes[n], n, req, pick, s);
            prop_assert_eq!(got, want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// BestFit reads its raw scores from the summary and only computes the winner's GPU pick;
    /// node and GPUs must be those of scoring every node (first highest raw score).
    #[test]
    fn best_fit_fast_select_matches_scoring_every_node(
        nodes in prop::collection::vec(arb_node(), 1..24),
        fill in prop::collection::vec(arb_req(), 0..30),
        probes in prop::collection::vec(arb_req(), 1..12),
        seed in any::<u64>(),
    ) {
        use autoglm_scheduler::policy::Policy;
        let mut c = Cluster::new(nodes);
        let mut placer = Placer::default();
        let mut random = RandomFit::new(seed);
        for req in &fill {
            if let Ok(p) = placer.place(&c, req, &mut random) {
                c.allocate(req, &p).unwrap();
            }
        }
        let mut out = Vec::new();
        for req in &probes {
            if feasible_nodes(&c, req, &mut out).is_err() {
                continue;
            }
            let got = BestFit::new().select(&c, req, &out).unwrap();
            let mut plain = BestFit::new();
            let mut best: Option<(f64, usize, autoglm_scheduler::policy::GpuPick)> = None;
            for &n in &out {
                let (s, pick) = plain.score(&c, n, req);
                if best.is_none_or(|(b, _, _)| s > b) {
                    best = Some((s, n, pick));
                }
            }
            let (_, n, pick) = best.unwrap();
            let want = autoglm_scheduler::policy::to_placement(&c.nodes[n], n, req, pick, 0.0);
            prop_assert_eq!(got.node, want.node);
            prop_assert_eq!(got.gpus, want.gpus);
        }
    }
}
