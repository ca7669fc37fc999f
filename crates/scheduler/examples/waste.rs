//! Where the free GPU capacity sits at 130% arrived on the openb trace, and a lower bound on
//! it that no online policy placing every pod it can escapes (docs/benchmarks.md, "Where
//! the free GPUs are"; `autoglm-sim bound` computes a tighter bound).
//!
//! Run: `cargo run --release -p autoglm-scheduler --example waste -- [policy] [variant]
//! [strand weight] [scarcity exponent] [--cpu-scale K] [--reserve-above P]` (defaults
//! `autoglm default 1 2`; the two weights only for `autoglm`). Seeds 42..51; needs
//! `../shared/data/alibaba-openb/` next to the checkout.
//!
//! Two what-ifs, outside the replay's rules, to show where the remaining free capacity comes
//! from (docs/benchmarks.md, "What 96.5% would take"):
//! - `--cpu-scale K` multiplies every node's CPU and memory by `K` (100: CPU and memory never
//!   bind);
//! - `--reserve-above P` refuses a shared pod whose chosen GPU is idle once more than `P`%
//!   of the GPU capacity is allocated (admission control: such a pod counts as failed
//!   although it fits).
//!
//! Besides the end state it prints the allocation and failed pods at 90%, 94% and 100% arrived,
//! to compare with `fgd` (which places every pod by 94% on every seed).
//!
//! The bound: a pod asking 810 milli-GPU cannot share a GPU with another such pod, so every
//! placed one leaves 190 milli-GPU that only pods of at most 190 milli-GPU can use. Every
//! 810 pod that arrives before 90% of the capacity has arrived is placed by a policy that
//! places every pod while it can (`fgd`, `best-fit` and `autoglm` all allocate everything that
//! arrived up to 90%), so at least `190 x (810 pods arrived by 90%) - (milli-GPU of all pods
//! of at most 190 milli-GPU)` stays free.

use std::collections::BTreeMap;
use std::path::PathBuf;

use autoglm_scheduler::model::{Cluster, GpuRequest};
use autoglm_scheduler::policy::{AutoGlm, AutoGlmConfig, Placer, Policy, policy_by_name};
use autoglm_scheduler::sim::placement::{
    Variant, arrival_step, gpu_capacity_milli, replay_workload,
};
use autoglm_scheduler::sim::trace::{load_nodes, load_pods};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| -> anyhow::Result<Option<f64>> {
        let Some(i) = args.iter().position(|a| a == name) else {
            return Ok(None);
        };
        let v = args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("{name} needs a number"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        args.drain(i..i + 2);
        Ok(Some(v))
    };
    let cpu_scale = flag("--cpu-scale")?.unwrap_or(1.0);
    let reserve_above = flag("--reserve-above")?;
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let policy = arg(0, "autoglm");
    let variant = Variant::parse(&arg(1, "default")).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown variant (known: {:?}, or {})",
            Variant::NAMES,
            Variant::FAMILY_HELP
        )
    })?;
    let config = AutoGlmConfig {
        cpu_strand_weight: arg(2, "1").parse()?,
        scarcity: arg(3, "2").parse()?,
        ..AutoGlmConfig::default()
    };
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/alibaba-openb");
    let mut nodes = load_nodes(&data.join("openb_node_list_gpu_node.csv"))?;
    for n in &mut nodes {
        n.cpu_milli = (n.cpu_milli as f64 * cpu_scale) as u64;
        n.mem_mib = (n.mem_mib as f64 * cpu_scale) as u64;
    }
    let base = load_pods(&data.join("openb_pod_list_default.csv"))?;
    let cap = gpu_capacity_milli(&nodes);
    let seeds: Vec<u64> = (42..52).collect();
    let (mut free, mut cpu_starved, mut idle, mut floor) = (0u64, 0u64, 0u64, 0u64);
    let mut slivers: BTreeMap<u32, u64> = BTreeMap::new();
    // Per checkpoint (90%, 94%, 100% arrived): allocated milli-GPU and failed pods, summed.
    let checkpoints = [90u32, 94, 100];
    let mut at = [(0u64, 0u64); 3];
    // GPU pods failed after 100% arrived, per (GPUs, milli-GPU per GPU).
    let mut failed_late: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for &seed in &seeds {
        let (work, _) = replay_workload(&base, &nodes, variant, seed);
        let (mut arrived, mut big, mut small) = (0u64, 0u64, 0u64);
        for pod in &work {
            arrived += pod.gpu.total_milli();
            if let GpuRequest::Shared { milli, .. } = pod.gpu {
                if milli == 810 && arrived * 100 <= cap * 90 {
                    big += 1;
                }
                if milli <= 190 {
                    small += u64::from(milli);
                }
            }
        }
        floor += (big * 190).saturating_sub(small);
        let mut pol: Box<dyn Policy> = if policy == "autoglm" {
            Box::new(AutoGlm::with_config(&work, config))
        } else {
            policy_by_name(&policy, seed, &work)?
        };
        let mut cluster = Cluster::new(nodes.clone());
        let mut placer = Placer::default();
        let (mut arrived, mut failed) = (0u64, 0u64);
        for pod in &work {
            let after = arrived + pod.gpu.total_milli();
            // The replay reports these steps just before this pod.
            let reported = arrival_step(arrived, cap)..arrival_step(after, cap);
            for (c, slot) in checkpoints.iter().zip(&mut at) {
                if reported.contains(c) {
                    slot.0 += cluster.gpu_milli_used();
                    slot.1 += failed;
                }
            }
            arrived = after;
            let mut choice = placer.place(&cluster, pod, pol.as_mut()).ok();
            if let (Some(p), Some(limit)) = (&choice, reserve_above) {
                let opens_idle = matches!(pod.gpu, GpuRequest::Shared { milli, .. } if milli > 0)
                    && p.gpus
                        .iter()
                        .all(|s| cluster.nodes[p.node].gpus[s.index].is_idle());
                let used_pct = 100.0 * cluster.gpu_milli_used() as f64 / cap as f64;
                if opens_idle && used_pct > limit {
                    choice = None;
                }
            }
            match choice {
                Some(p) => cluster.allocate(pod, &p)?,
                None => {
                    failed += 1;
                    if arrived > cap && pod.gpu != GpuRequest::None {
                        let shape = (pod.gpu.gpu_count(), pod.gpu.milli_per_gpu());
                        *failed_late.entry(shape).or_default() += 1;
                    }
                }
            }
        }
        for (c, slot) in checkpoints.iter().zip(&mut at) {
            if arrival_step(arrived, cap) <= *c {
                slot.0 += cluster.gpu_milli_used();
                slot.1 += failed;
            }
        }
        for n in &cluster.nodes {
            for g in &n.gpus {
                let f = u64::from(g.milli_free());
                free += f;
                // Under 2 vCPUs free: only 41 of the trace's GPU pods (1 vCPU each) could still fit.
                if f > 0 && n.cpu_free() < 2000 {
                    cpu_starved += f;
                } else if f == 1000 {
                    idle += f;
                } else if f > 0 {
                    *slivers.entry(g.milli_free()).or_default() += f;
                }
            }
        }
    }
    let k = seeds.len() as f64 * 1000.0;
    let pct = |milli: u64| 100.0 * (1.0 - milli as f64 / seeds.len() as f64 / cap as f64);
    println!(
        "{policy} ({}): mean over seeds 42..51 at 130% arrived, in GPUs",
        variant
    );
    println!(
        "free {:.1} (allocation {:.2}%): on CPU-starved nodes (< 2 vCPU free) {:.1}, idle GPUs {:.1}, partly used GPUs {:.1}",
        free as f64 / k,
        pct(free),
        cpu_starved as f64 / k,
        idle as f64 / k,
        slivers.values().sum::<u64>() as f64 / k
    );
    let mut top: Vec<(u32, u64)> = slivers.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    let top: Vec<String> = top
        .iter()
        .take(8)
        .map(|(f, m)| format!("{f}: {:.1}", *m as f64 / k))
        .collect();
    println!("partly used GPUs by free milli-GPU: {}", top.join(", "));
    let mut late: Vec<((u32, u32), u64)> = failed_late.into_iter().collect();
    late.sort_by_key(|t| std::cmp::Reverse(t.1));
    let late: Vec<String> = late
        .iter()
        .take(6)
        .map(|((g, m), n)| format!("{g}x{m}: {:.1}", *n as f64 / seeds.len() as f64))
        .collect();
    println!(
        "GPU pods failed after 100% arrived (GPUs x milli-GPU: pods): {}",
        late.join(", ")
    );
    for (c, (used, failed)) in checkpoints.iter().zip(at) {
        println!(
            "at {c}% arrived: allocation {:.2}%, failed pods {:.1}",
            100.0 * used as f64 / seeds.len() as f64 / cap as f64,
            failed as f64 / seeds.len() as f64
        );
    }
    println!(
        "810-milli sliver floor: at least {:.1} GPUs free, allocation at most {:.2}%",
        floor as f64 / k,
        pct(floor)
    );
    Ok(())
}
