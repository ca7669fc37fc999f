//! The openb trace files load as documented, and inflation to 130% obeys its rule on them.
//! Skipped (passing) when `../shared/data/alibaba-openb/` is not next to the checkout.

use std::path::PathBuf;

use autoglm_scheduler::model::{GpuRequest, NodeState, PodRequest};
use autoglm_scheduler::sim::placement::inflate_and_shuffle;
use autoglm_scheduler::sim::trace::{load_nodes, load_pods};

fn data(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/alibaba-openb")
        .join(file)
}

/// The openb node list and default pod list, or `None` (with a note) when the trace is not
/// next to the checkout.
fn openb() -> Option<(Vec<NodeState>, Vec<PodRequest>)> {
    match (
        load_nodes(&data("openb_node_list_gpu_node.csv")),
        load_pods(&data("openb_pod_list_default.csv")),
    ) {
        (Ok(nodes), Ok(pods)) => Some((nodes, pods)),
        _ => {
            eprintln!("skipping: trace not found");
            None
        }
    }
}

#[test]
fn openb_counts_and_inflation() {
    let Some((nodes, pods)) = openb() else {
        return;
    };
    // Counts from the trace notes (../shared/data/alibaba-openb.md).
    assert_eq!(nodes.len(), 1213);
    assert_eq!(nodes.iter().map(|n| n.gpus.len()).sum::<usize>(), 6212);
    assert_eq!(pods.len(), 8152);
    assert_eq!(
        pods.iter().filter(|p| p.gpu == GpuRequest::None).count(),
        1088
    );
    assert_eq!(
        pods.iter()
            .filter(|p| matches!(p.gpu, GpuRequest::Shared { .. }))
            .count(),
        3078
    );
    let total: u64 = pods.iter().map(|p| p.gpu.total_milli()).sum();
    assert_eq!(total, 6_086_800); // 6,086.8 GPUs
    // Target 1.3 * 6,212,000 = 8,075,600 milli-GPU. The list is below it, so only clones are
    // added, and the stop rule leaves the total within one pod (at most 8 GPUs) of it.
    for seed in [42, 51] {
        let out = inflate_and_shuffle(&pods, 6_212_000, 1.3, seed);
        let t: u64 = out.iter().map(|p| p.gpu.total_milli()).sum();
        assert!(t <= 8_075_600 && t > 8_075_600 - 8_000, "total {t}");
        let clones = out.iter().filter(|p| p.name.contains("-clone-")).count();
        assert_eq!(out.len(), 8152 + clones);
        // The missing 1,988.8 GPUs at 6,086.8 / 8,152 = 0.747 GPU per drawn pod on average:
        // about 2,660 clones; accept +-10% for the draw.
        assert!((2_400..2_950).contains(&clones), "clones {clones}");
    }
}

/// The cutting-stock bound (`sim::bound`) on seed 42 of the default list: it matches an
/// independent solve, is at least the 810-milli sliver floor, and real replays of `fgd` and
/// `autoglm` (which place every pod up to 90%, the bound's premise) stay within it.
#[test]
fn packing_bound_holds_for_real_replays() {
    use autoglm_scheduler::policy::{TypicalPods, fgd::TYPICAL_POPULARITY, policy_by_name};
    use autoglm_scheduler::sim::bound::{forced_counts, sharing_bound};
    use autoglm_scheduler::sim::placement::run;

    let Some((nodes, pods)) = openb() else {
        return;
    };
    let cap = 6_212_000;
    let work = inflate_and_shuffle(&pods, cap, 1.3, 42);
    let forced = forced_counts(&work, cap, 90);
    let counts = &forced.shared;
    let b = sharing_bound(&forced, 6212).unwrap();
    // 210.3 GPUs: the same LP and its integer version solved with SciPy's HiGHS
    // (`linprog` and `milp` over the same pattern set) on this seed's counts.
    assert!(
        (b.free_milli / 1000.0 - 210.3).abs() < 0.05,
        "{}",
        b.free_milli
    );
    // Floor: each forced 810 pod leaves 190 that only pods of <= 190 milli fill.
    let small: u64 = counts
        .iter()
        .filter(|(m, _)| **m <= 190)
        .map(|(m, c)| u64::from(*m) * c.arrived)
        .sum();
    let floor = (190 * counts[&810].forced).saturating_sub(small) as f64;
    assert!(
        b.free_milli >= floor,
        "bound {} < floor {floor}",
        b.free_milli
    );
    let bound_pct = 100.0 * (1.0 - b.free_milli / cap as f64);
    let typical = TypicalPods::from_requests(work.iter(), TYPICAL_POPULARITY);
    for name in ["fgd", "autoglm"] {
        let mut policy = policy_by_name(name, 42, &work).unwrap();
        let r = run(&nodes, &work, policy.as_mut(), name, &typical, 42);
        let at = |pct: u32| r.steps.iter().find(|s| s.arrived_pct == pct).unwrap();
        assert_eq!(at(90).failed_pods, 0, "{name} failed a pod by 90%");
        let end = at(130).allocated_pct;
        assert!(end <= bound_pct, "{name} {end} above the bound {bound_pct}");
    }
}
