//! The openb trace files load as documented, and inflation to 130% obeys its rule on them.
//! Skipped (passing) when `../shared/data/alibaba-openb/` is not next to the checkout.

use std::path::PathBuf;

use autoglm_scheduler::model::{GpuRequest, NodeState, PodRequest};
use autoglm_scheduler::policy::{TypicalPods, fgd::TYPICAL_POPULARITY, policy_by_name};
use autoglm_scheduler::sim::placement::{
    StepReport, Variant, inflate_and_shuffle, make_variant, replay_workload, run,
};
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

/// `fgd`'s and `autoglm`'s reports per step when each replays `work` on `nodes` with `seed`.
fn fgd_and_autoglm(
    nodes: &[NodeState],
    work: &[PodRequest],
    seed: u64,
) -> (Vec<StepReport>, Vec<StepReport>) {
    let typical = TypicalPods::from_requests(work.iter(), TYPICAL_POPULARITY);
    let replay = |name: &str| {
        let mut policy = policy_by_name(name, seed, work).unwrap();
        run(nodes, work, policy.as_mut(), name, &typical, seed).steps
    };
    (replay("fgd"), replay("autoglm"))
}

/// Panics unless `autoglm` allocates at least what `fgd` does at every step from 90% (the
/// issue's requirement), naming `label` and the step.
fn assert_keeps_up_from_90(label: &str, fgd: &[StepReport], autoglm: &[StepReport]) {
    for (g, f) in autoglm.iter().zip(fgd).filter(|(g, _)| g.arrived_pct >= 90) {
        assert!(
            g.allocated_pct >= f.allocated_pct,
            "{label}: autoglm {} < fgd {} at {}%",
            g.allocated_pct,
            f.allocated_pct,
            g.arrived_pct
        );
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

/// The cutting-stock bound (`sim::bound`) on seed 42 of the default list, under both
/// premises: it matches an independent solve, is at least the 810-milli sliver floor, and
/// `autoglm`'s real replay (which meets both premises on this seed) stays within it.
#[test]
fn packing_bound_holds_for_real_replays() {
    use autoglm_scheduler::sim::bound::{Arrivals, Floors, allocation_bound};

    let Some((nodes, pods)) = openb() else {
        return;
    };
    let cap = 6_212_000;
    let work = inflate_and_shuffle(&pods, cap, 1.3, 42);
    let arrivals = Arrivals::of(&work, cap);
    let (fgd, autoglm) = fgd_and_autoglm(&nodes, &work, 42);

    // Premise "place every pod arriving by 90%": 210.27 GPUs free at least, the same LP
    // and its integer version solved with SciPy's HiGHS (`linprog`, `milp`) on this seed.
    let all90 = allocation_bound(&arrivals, &Floors::place_all_by(&arrivals, 90), 6212).unwrap();
    assert!(
        (all90.free_milli - 210_270.0).abs() < 50.0,
        "{}",
        all90.free_milli
    );
    // Floor: each 810 pod arrived by 90% leaves 190 that only pods of <= 190 milli fill.
    let count = |pred: &dyn Fn(u32, u32) -> bool| -> u64 {
        arrivals
            .shared
            .iter()
            .filter(|((q, m), _)| pred(*q, *m))
            .map(|(&(_, m), &n)| u64::from(m) * n)
            .sum()
    };
    let big = count(&|q, m| q <= 90 && m == 810) / 810;
    let small = count(&|_, m| m <= 190);
    let floor = (190 * big).saturating_sub(small) as f64;
    assert!(
        all90.free_milli >= floor,
        "bound {} < floor {floor}",
        all90.free_milli
    );

    // Premise "allocate at least what fgd does at every step from 90%": SciPy's `linprog`
    // gives 224,206.7 milli-GPU free (`milp` 224,560) with the same floors. It adds floors
    // to the one above (fgd places everything by 90%), so it can only be tighter.
    let floors = Floors::keep_up(&fgd, 90);
    assert_eq!(
        floors.0[&90],
        arrivals.milli_by(90),
        "fgd failed a pod by 90%"
    );
    let keep_up = allocation_bound(&arrivals, &floors, 6212).unwrap();
    assert!(
        (keep_up.free_milli - 224_206.7).abs() < 50.0,
        "{}",
        keep_up.free_milli
    );
    assert!(keep_up.free_milli >= all90.free_milli);

    // autoglm meets the premise on this seed and ends below the bound. (fgd meets it by
    // construction and cannot end above it: the floor at 130% is its own allocation.)
    assert_keeps_up_from_90("default", &fgd, &autoglm);
    let bound_pct = 100.0 * keep_up.allocated_milli / cap as f64;
    let end = autoglm.last().unwrap();
    assert_eq!(end.arrived_pct, 130);
    assert!(
        end.allocated_pct <= bound_pct,
        "autoglm {} above {bound_pct}",
        end.allocated_pct
    );
}

#[test]
fn gpu_spec_column_is_a_set_of_names() {
    // The published gpuspec lists repeat names (`V100M16|V100M32|V100M32`); the loader keeps
    // each name once, sorted, as the controller does; `nan` and CPU-only pods name none.
    let path = std::env::temp_dir().join(format!("gpuspec-{}.csv", std::process::id()));
    std::fs::write(
        &path,
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n\
         a,1000,1024,1,1000,V100M32|V100M16|V100M32\n\
         b,1000,1024,1,500, NaN\n\
         c,1000,1024,0,0,T4\n\
         d,1000,1024,2,1000,T4\n",
    )
    .unwrap();
    let pods = load_pods(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let types: Vec<Vec<String>> = pods.iter().map(|p| p.gpu_types.clone()).collect();
    assert_eq!(
        types,
        vec![
            vec!["V100M16".to_string(), "V100M32".to_string()],
            vec![],
            vec![],
            vec!["T4".to_string()],
        ]
    );
}

#[test]
fn published_gpuspec_rows_are_rows_of_the_default_list() {
    // crates/scheduler/data/openb-gpuspec keeps the rows of the FGD paper's gpuspec lists that
    // name GPU types. `--variant gpuspecNN` accepts the default list only if each row is its
    // pod of that name, once, with the same GPU request (`Variant::check`); then exactly those
    // pods name types, about the list's share of the 7,064 GPU pods.
    let Some((_, default)) = openb() else { return };
    for (pct, rows) in [(5, 369), (10, 732), (20, 1444), (25, 1759), (33, 2388)] {
        let v = Variant::parse(&format!("gpuspec{pct:02}")).unwrap();
        assert_eq!(v.check(&default), Ok(()));
        let typed = make_variant(&default, &[], v, 42)
            .iter()
            .filter(|p| !p.gpu_types.is_empty())
            .count();
        assert_eq!(typed, rows, "gpuspec{pct:02}");
        let share = typed as f64 / 7064.0;
        assert!(
            (share - f64::from(pct) / 100.0).abs() < 0.02,
            "gpuspec{pct:02}: {share}"
        );
    }
}

#[test]
fn autoglm_keeps_up_with_fgd_on_the_fgd_papers_own_lists() {
    // The lists where change 6 mattered most (docs/benchmarks.md, "The FGD paper's workload
    // families"): `autoglm` allocates at least what `fgd` does at every step from 90% to
    // 130%, and more at 130%. Before change 6 it fell behind on the first two of these seeds
    // (`multigpu40` seed 49 by 0.11 point from 100%, `gpuspec10` seed 44 by up to 0.37 point
    // from 90% to 94%).
    let Some((nodes, pods)) = openb() else {
        return;
    };
    for (name, seed) in [
        ("multigpu40", 49),
        ("gpuspec10", 44),
        ("gpuspec33", 42),
        ("cpu250", 42),
    ] {
        let (work, _) = replay_workload(&pods, &nodes, Variant::parse(name).unwrap(), seed);
        let (fgd, autoglm) = fgd_and_autoglm(&nodes, &work, seed);
        assert_keeps_up_from_90(name, &fgd, &autoglm);
        let (g, f) = (autoglm.last().unwrap(), fgd.last().unwrap());
        assert!(g.allocated_pct > f.allocated_pct, "{name} at 130%");
    }
}
