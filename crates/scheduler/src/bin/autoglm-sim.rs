//! `autoglm-sim`: replay real traces through the scheduling core and compare policies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use autoglm_scheduler::model::{NodeState, PodRequest};
use autoglm_scheduler::policy::{
    EXTRA_POLICY_NAMES, POLICY_NAMES, TypicalPods, fgd::TYPICAL_POPULARITY, policy_by_name,
};
use autoglm_scheduler::sim::bound::{Arrivals, Floors, allocation_bound, joint_allocation_bound};
use autoglm_scheduler::sim::placement::{
    MAX_STEP, RunSummary, StepReport, Variant, gpu_capacity_milli, make_variant, replay_workload,
    run,
};
use autoglm_scheduler::sim::trace::{load_nodes, load_pods};

#[derive(Parser)]
#[command(
    name = "autoglm-sim",
    version,
    about = "Trace-driven scheduling simulator for Open-AutoGLM"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay the FGD paper's placement experiment (inflate to 130%, shuffle, place once).
    Placement {
        /// Node list CSV (sn,cpu_milli,memory_mib,gpu,model).
        #[arg(long)]
        nodes: PathBuf,
        /// Pod list CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]).
        #[arg(long)]
        pods: PathBuf,
        /// Policies, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "fgd")]
        policy: Vec<String>,
        /// Seeds: `A..B` (inclusive) or a comma-separated list.
        #[arg(long, default_value = "42..51")]
        seeds: String,
        /// Workload variant of the pod list (default, sharing, multi-gpu, gpu-type, few-cpu,
        /// rare-types, or one of the FGD paper's families: cpu<NNN>, gpushare<NN>,
        /// multigpu<NN>, e.g. cpu050, gpushare80, multigpu30, and gpuspec05/10/20/25/33 for
        /// the default list).
        #[arg(long, default_value = "default")]
        variant: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Table: show every 1% step instead of the usual rows.
        #[arg(long)]
        all_steps: bool,
        /// Worker threads for independent (policy, seed) runs.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Upper bound on the allocation at 130% arrived of any placement that keeps up with a
    /// reference policy (`--keep-up`, default `fgd`) at every step from `--from-pct` to
    /// 130%, seed by seed, or that places every pod arriving by `--forced-pct`
    /// (cutting-stock LP; see `sim::bound`).
    Bound {
        /// Node list CSV (for the capacity).
        #[arg(long)]
        nodes: PathBuf,
        /// Pod list CSV.
        #[arg(long)]
        pods: PathBuf,
        /// Seeds: `A..B` (inclusive) or a comma-separated list.
        #[arg(long, default_value = "42..51")]
        seeds: String,
        /// Workload variant of the pod list.
        #[arg(long, default_value = "default")]
        variant: String,
        /// The premise: placements allocate at least what this policy allocates on the same
        /// seed at every step from `--from-pct` to 130% (the requirement for
        /// `autoglm` against `fgd`).
        #[arg(long, default_value = "fgd")]
        keep_up: String,
        /// First step (percent of the capacity arrived) of the `--keep-up` premise.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(0..=130))]
        from_pct: u32,
        /// The premise instead: placements place every pod arriving up to this % of the
        /// capacity (check `failed_pods` at that step with `placement --format json`).
        #[arg(long, conflicts_with_all = ["keep_up", "from_pct"], value_parser = clap::value_parser!(u32).range(0..=100))]
        forced_pct: Option<u32>,
        /// Read the `--keep-up` premise on the means over the seeds (one LP over all of
        /// them) instead of seed by seed: a weaker premise, so a looser bound.
        #[arg(long, conflicts_with = "forced_pct")]
        means: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Write a workload variant of a pod list as a 5-column CSV (plus gpu_spec).
    Generate {
        /// Node list CSV (for the GPU types of the `gpu-type` and `rare-types` variants).
        #[arg(long)]
        nodes: PathBuf,
        /// Source pod list CSV.
        #[arg(long)]
        pods: PathBuf,
        /// Variant name.
        #[arg(long)]
        variant: String,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Replay Azure LLM inference requests onto heterogeneous GPU servers.
    Serving {
        /// Azure LLM trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens).
        #[arg(long)]
        trace: PathBuf,
        /// Cluster YAML (model, GPU types, servers, batching, SLO).
        #[arg(long)]
        cluster: PathBuf,
        /// Routing policies, comma separated: rr, least-loaded, autoglm.
        #[arg(long, value_delimiter = ',', default_value = "rr,least-loaded,autoglm")]
        policy: Vec<String>,
        /// Arrival-rate multipliers, comma separated (2 = twice as many requests per second).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        rate_scale: Vec<f64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Placement speed on a synthetic cluster: nodes and pods drawn from the trace lists.
    Synthetic {
        /// Node list CSV to draw node shapes from.
        #[arg(long)]
        nodes: PathBuf,
        /// Pod list CSV to draw pods from.
        #[arg(long)]
        pods: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 10_000)]
        node_count: usize,
        /// Number of pods.
        #[arg(long, default_value_t = 100_000)]
        pod_count: usize,
        /// Policies, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "best-fit,fgd,autoglm")]
        policy: Vec<String>,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Workload variant applied to the drawn pods (as `placement --variant`; the GPU types
        /// of `gpu-type` and `rare-types` come from the drawn nodes).
        #[arg(long, default_value = "default")]
        variant: String,
    },
}

/// CPU seconds used so far by the calling thread (user + system), from
/// `/proc/thread-self/stat` fields 14 and 15 in clock ticks of 1/100 s (Linux's USER_HZ).
/// On the shared development machine wall time is inflated by other processes; CPU time is
/// what a decision costs. `None` off Linux.
fn thread_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn parse_seeds(s: &str) -> anyhow::Result<Vec<u64>> {
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a
            .trim()
            .parse()
            .context("--seeds: start of A..B must be an integer")?;
        let b: u64 = b
            .trim()
            .parse()
            .context("--seeds: end of A..B must be an integer")?;
        if b < a {
            bail!("--seeds: {a}..{b} is empty (the range is inclusive, A <= B)");
        }
        return Ok((a..=b).collect());
    }
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<u64>()
                .with_context(|| format!("--seeds: {x:?} is not an integer"))
        })
        .collect()
}

/// `--variant`, with the known names in the error.
fn parse_variant(name: &str) -> anyhow::Result<Variant> {
    Variant::parse(name).with_context(|| {
        format!(
            "--variant: unknown or out of range {name:?} (known: {}, or a family of the FGD paper: {})",
            Variant::NAMES.join(", "),
            Variant::FAMILY_HELP
        )
    })
}

/// `--pods`, checked against `--variant` ([`Variant::check`]).
fn load_pods_for(pods: &Path, variant: Variant) -> anyhow::Result<Vec<PodRequest>> {
    let base = load_pods(pods)?;
    variant.check(&base).map_err(anyhow::Error::msg)?;
    Ok(base)
}

fn check_policies(names: &[String]) -> anyhow::Result<()> {
    for n in names {
        if !POLICY_NAMES.contains(&n.as_str()) && !EXTRA_POLICY_NAMES.contains(&n.as_str()) {
            bail!(
                "--policy: unknown policy {n:?} (known: {})",
                POLICY_NAMES.join(", ")
            );
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

#[allow(clippy::too_many_arguments)]
fn placement(
    nodes: PathBuf,
    pods: PathBuf,
    policies: Vec<String>,
    seeds: String,
    variant: String,
    format: Format,
    all_steps: bool,
    jobs: usize,
) -> anyhow::Result<()> {
    check_policies(&policies)?;
    let seeds = parse_seeds(&seeds)?;
    let variant = parse_variant(&variant)?;
    let node_list = load_nodes(&nodes)?;
    let base = load_pods_for(&pods, variant)?;
    let cap = gpu_capacity_milli(&node_list);

    let mut tasks: Vec<(String, u64)> = Vec::new();
    for p in &policies {
        for &s in &seeds {
            tasks.push((p.clone(), s));
        }
    }
    let run_one = |policy: &str, seed: u64| -> anyhow::Result<(RunSummary, f64)> {
        let (workload, _) = replay_workload(&base, &node_list, variant, seed);
        let typical = TypicalPods::from_requests(workload.iter(), TYPICAL_POPULARITY);
        let mut pol = policy_by_name(policy, seed, &workload)?;
        let c0 = thread_cpu_secs();
        let r = run(&node_list, &workload, pol.as_mut(), policy, &typical, seed);
        let cpu = match (c0, thread_cpu_secs()) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        Ok((r, cpu))
    };
    let jobs = jobs.max(1);
    let results: Vec<anyhow::Result<(RunSummary, f64)>> = if jobs == 1 {
        tasks.iter().map(|(p, s)| run_one(p, *s)).collect()
    } else {
        let chunks: Vec<Vec<(usize, (String, u64))>> = (0..jobs)
            .map(|j| {
                tasks
                    .iter()
                    .cloned()
                    .enumerate()
                    .filter(|(i, _)| i % jobs == j)
                    .collect()
            })
            .collect();
        let mut out: Vec<Option<anyhow::Result<(RunSummary, f64)>>> =
            (0..tasks.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|chunk| {
                    scope.spawn(|| {
                        chunk
                            .iter()
                            .map(|(i, (p, s))| (*i, run_one(p, *s)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                if let Ok(v) = h.join() {
                    for (i, r) in v {
                        out[i] = Some(r);
                    }
                }
            }
        });
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("failed to run a simulation thread"))))
            .collect()
    };
    let mut summaries = Vec::new();
    let mut cpus = Vec::new();
    for r in results {
        let (s, c) = r?;
        summaries.push(s);
        cpus.push(c);
    }
    for p in &policies {
        let mine: Vec<usize> = (0..summaries.len())
            .filter(|&i| summaries[i].steps.first().is_some_and(|r| &r.policy == p))
            .collect();
        let pods = mine.first().map_or(0, |&i| summaries[i].pods);
        let wall: Vec<f64> = mine.iter().map(|&i| summaries[i].decide_secs).collect();
        let cpu: Vec<f64> = mine.iter().map(|&i| cpus[i]).collect();
        let rate: Vec<f64> = mine
            .iter()
            .map(|&i| summaries[i].pods as f64 / cpus[i].max(1e-9))
            .collect();
        eprintln!(
            "{p}: {pods} pods per run; median per run: {:.2} s wall in decisions, {:.2} CPU-s for the whole replay, {:.0} pods per CPU-s",
            median(wall),
            median(cpu),
            median(rate)
        );
    }
    let all: Vec<&StepReport> = summaries.iter().flat_map(|s| s.steps.iter()).collect();
    match format {
        Format::Json => println!("{}", serde_json::to_string(&all)?),
        Format::Table => {
            let rows: Vec<u32> = if all_steps {
                (0..=MAX_STEP).collect()
            } else {
                vec![
                    10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100, 105, 110, 115, 120, 125, 130,
                ]
            };
            println!(
                "GPU allocation (% of {} GPUs), mean (sd) over {} seeds; variant {}",
                cap / 1000,
                seeds.len(),
                variant
            );
            print!("| arrived % |");
            for p in &policies {
                print!(" {p} |");
            }
            println!();
            print!("|---|");
            for _ in &policies {
                print!("---|");
            }
            println!();
            let cell = |p: &str, step: u32, f: &dyn Fn(&StepReport) -> f64| -> (f64, f64) {
                let v: Vec<f64> = all
                    .iter()
                    .filter(|r| r.policy == p && r.arrived_pct == step)
                    .map(|r| f(r))
                    .collect();
                mean_sd(&v)
            };
            for &step in &rows {
                print!("| {step} |");
                for p in &policies {
                    let (m, sd) = cell(p, step, &|r| r.allocated_pct);
                    print!(" {m:.2} ({sd:.2}) |");
                }
                println!();
            }
            println!();
            println!("At 100% / 130% arrived: fragmented GPU % and failed pods (means)");
            println!("| policy | frag % @100 | frag % @130 | failed @100 | failed @130 |");
            println!("|---|---|---|---|---|");
            for p in &policies {
                let f100 = cell(p, 100, &|r| r.frag_pct).0;
                let f130 = cell(p, 130, &|r| r.frag_pct).0;
                let x100 = cell(p, 100, &|r| r.failed_pods as f64).0;
                let x130 = cell(p, 130, &|r| r.failed_pods as f64).0;
                println!("| {p} | {f100:.2} | {f130:.2} | {x100:.1} | {x130:.1} |");
            }
        }
    }
    Ok(())
}

fn generate(nodes: PathBuf, pods: PathBuf, variant: String, seed: u64) -> anyhow::Result<()> {
    let variant = parse_variant(&variant)?;
    let node_list = load_nodes(&nodes)?;
    let base = load_pods_for(&pods, variant)?;
    let list = make_variant(&base, &node_list, variant, seed);
    println!("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec");
    for p in list {
        println!(
            "{},{},{},{},{},{}",
            p.name,
            p.cpu_milli,
            p.mem_mib,
            p.gpu.gpu_count(),
            p.gpu.milli_per_gpu(),
            p.gpu_types.join("|")
        );
    }
    Ok(())
}

fn synthetic(
    nodes: PathBuf,
    pods: PathBuf,
    node_count: usize,
    pod_count: usize,
    policies: Vec<String>,
    seed: u64,
    variant: &str,
) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    check_policies(&policies)?;
    let variant = parse_variant(variant)?;
    let shapes = load_nodes(&nodes)?;
    let base = load_pods_for(&pods, variant)?;
    if shapes.is_empty() || base.is_empty() {
        bail!("--nodes and --pods must each hold at least one row");
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let node_list: Vec<NodeState> = (0..node_count)
        .map(|i| {
            let mut n = shapes[rng.random_range(0..shapes.len())].clone();
            n.name = format!("synthetic-node-{i:05}");
            n
        })
        .collect();
    let workload: Vec<_> = (0..pod_count)
        .map(|_| base[rng.random_range(0..base.len())].clone())
        .collect();
    let workload = make_variant(&workload, &node_list, variant, seed);
    let typical = TypicalPods::from_requests(workload.iter(), TYPICAL_POPULARITY);
    println!("| policy | nodes | pods | placed | wall s | CPU s | decisions per CPU-s |");
    println!("|---|---|---|---|---|---|---|");
    for p in &policies {
        let mut pol = policy_by_name(p, seed, &workload)?;
        let t0 = Instant::now();
        let c0 = thread_cpu_secs();
        let r = run(&node_list, &workload, pol.as_mut(), p, &typical, seed);
        let cpu = match (c0, thread_cpu_secs()) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let placed = r.pods as u64 - r.steps.last().map_or(0, |s| s.failed_pods);
        println!(
            "| {p} | {node_count} | {pod_count} | {placed} | {:.1} | {:.1} | {:.0} |",
            t0.elapsed().as_secs_f64(),
            cpu,
            r.pods as f64 / cpu.max(1e-9)
        );
    }
    Ok(())
}

fn serving_cmd(
    trace: PathBuf,
    cluster: PathBuf,
    policies: Vec<String>,
    scales: Vec<f64>,
    format: Format,
) -> anyhow::Result<()> {
    use autoglm_scheduler::sim::serving::{Routing, ServingCluster, load_trace, simulate};
    let cluster = ServingCluster::load(&cluster)?;
    let trace = load_trace(&trace)?;
    let routes = policies
        .iter()
        .map(|p| Routing::parse(p))
        .collect::<Result<Vec<_>, _>>()?;
    for &x in &scales {
        if x.is_nan() || x <= 0.0 {
            bail!("--rate-scale: {x} must be positive");
        }
    }
    let mut reports = Vec::new();
    for &x in &scales {
        for &r in &routes {
            reports.push(simulate(&cluster, &trace, r, x));
        }
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string(&reports)?),
        Format::Table => {
            println!(
                "| rate x | policy | requests | mean ms | p50 ms | p99 ms | req/s | tokens/s | req/s in SLO | GPU busy % | SLO % |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|");
            for r in &reports {
                println!(
                    "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.1} | {:.1} |",
                    r.rate_scale,
                    r.policy,
                    r.requests,
                    r.mean_ms,
                    r.p50_ms,
                    r.p99_ms,
                    r.throughput_rps,
                    r.tokens_per_s,
                    r.goodput_rps,
                    r.gpu_busy_pct,
                    r.slo_pct
                );
            }
        }
    }
    Ok(())
}

/// One seed's row of `autoglm-sim bound` (the JSON format prints these).
#[derive(serde::Serialize)]
struct BoundRow {
    /// `None` for the one row of `--means` (all seeds in one LP).
    seed: Option<u64>,
    arrived_shared_pods: u64,
    patterns: usize,
    /// GPUs (1000 milli-GPU each).
    free_gpus_at_least: f64,
    /// Percent of the GPU capacity.
    allocated_pct_at_most: f64,
    /// The `--keep-up` policy's allocation at 130% on this seed, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_allocated_pct: Option<f64>,
}

/// The premise of `autoglm-sim bound`.
enum Premise {
    /// Allocate at least what `policy` does at every step from `from_pct`, seed by seed or
    /// (`means`) on the means over the seeds.
    KeepUp {
        policy: String,
        from_pct: u32,
        means: bool,
    },
    /// Place every pod arriving by this step.
    PlaceAllBy(u32),
}

/// `autoglm-sim bound`: the LP bound per seed, its mean, and the optimal mix's most used
/// patterns (mean GPUs over the seeds).
fn bound_cmd(
    nodes: PathBuf,
    pods: PathBuf,
    seeds: String,
    variant: String,
    premise: Premise,
    format: Format,
) -> anyhow::Result<()> {
    let seeds = parse_seeds(&seeds)?;
    let variant = parse_variant(&variant)?;
    let node_list = load_nodes(&nodes)?;
    let base = load_pods_for(&pods, variant)?;
    let cap = gpu_capacity_milli(&node_list);
    if cap == 0 {
        bail!("--nodes: {} lists no GPUs", nodes.display());
    }
    let gpus = cap / 1000;
    // Per seed: its arrivals, the premise's floors and the reference's allocation at 130%.
    let mut inputs = Vec::new();
    for &seed in &seeds {
        let (work, _) = replay_workload(&base, &node_list, variant, seed);
        let arrivals = Arrivals::of(&work, cap);
        let (floors, reference) = match &premise {
            Premise::PlaceAllBy(step) => (Floors::place_all_by(&arrivals, *step), None),
            Premise::KeepUp {
                policy, from_pct, ..
            } => {
                let typical = TypicalPods::from_requests(work.iter(), TYPICAL_POPULARITY);
                let mut pol = policy_by_name(policy, seed, &work)
                    .with_context(|| format!("--keep-up {policy}"))?;
                let r = run(&node_list, &work, pol.as_mut(), policy, &typical, seed);
                (
                    Floors::keep_up(&r.steps, *from_pct),
                    r.steps.last().map(|s| s.allocated_pct),
                )
            }
        };
        inputs.push((seed, arrivals, floors, reference));
    }
    let mut rows = Vec::new();
    let mut mix: BTreeMap<Vec<u32>, f64> = BTreeMap::new();
    let n = seeds.len() as f64;
    if matches!(premise, Premise::KeepUp { means: true, .. }) {
        let mut total = Floors::default();
        for (_, _, f, _) in &inputs {
            for (&q, &m) in &f.0 {
                *total.0.entry(q).or_default() += m;
            }
        }
        let replays: Vec<Arrivals> = inputs.iter().map(|i| i.1.clone()).collect();
        let b = joint_allocation_bound(&replays, &total, gpus).context("all seeds")?;
        for (p, x) in &b.mix {
            *mix.entry(p.clone()).or_default() += x / n;
        }
        let references: Option<Vec<f64>> = inputs.iter().map(|i| i.3).collect();
        rows.push(BoundRow {
            seed: None,
            arrived_shared_pods: replays.iter().map(Arrivals::shared_pods).sum(),
            patterns: b.patterns,
            free_gpus_at_least: b.free_milli / 1000.0 / n,
            allocated_pct_at_most: 100.0 * b.allocated_milli / (cap as f64 * n),
            reference_allocated_pct: references.map(|r| mean_sd(&r).0),
        });
    } else {
        for (seed, arrivals, floors, reference) in &inputs {
            let b =
                allocation_bound(arrivals, floors, gpus).with_context(|| format!("seed {seed}"))?;
            for (p, x) in &b.mix {
                *mix.entry(p.clone()).or_default() += x / n;
            }
            rows.push(BoundRow {
                seed: Some(*seed),
                arrived_shared_pods: arrivals.shared_pods(),
                patterns: b.patterns,
                free_gpus_at_least: b.free_milli / 1000.0,
                allocated_pct_at_most: 100.0 * b.allocated_milli / cap as f64,
                reference_allocated_pct: *reference,
            });
        }
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let (said, reference) = match &premise {
        Premise::PlaceAllBy(step) => (
            format!(
                "placements that place every pod arriving by {step}% (check failed_pods at that step with `placement --format json`)"
            ),
            String::new(),
        ),
        Premise::KeepUp {
            policy,
            from_pct,
            means,
        } => (
            format!(
                "placements that allocate at least as much as `{policy}` {} at every step from {from_pct}% to 130% (compare with `placement --format json`)",
                if *means {
                    "on the mean over the seeds (one LP over all seeds; values are means per seed)"
                } else {
                    "on the same seed"
                }
            ),
            format!(" {policy} at 130% |"),
        ),
    };
    println!(
        "Sharing-pod packing bound at 130% arrived, {gpus} GPUs, variant {}. Valid for {said}.\n",
        variant
    );
    println!(
        "| seed | shared pods arrived | patterns | free GPUs >= | allocation % <= |{reference}"
    );
    println!(
        "|---|---|---|---|---|{}",
        if reference.is_empty() { "" } else { "---|" }
    );
    let cell = |x: Option<f64>| x.map_or(String::new(), |x| format!(" {x:.2} |"));
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.2} |{}",
            r.seed.map_or("all".to_string(), |s| s.to_string()),
            r.arrived_shared_pods,
            r.patterns,
            r.free_gpus_at_least,
            r.allocated_pct_at_most,
            cell(r.reference_allocated_pct)
        );
    }
    if rows.len() > 1 {
        let col = |f: fn(&BoundRow) -> Option<f64>| -> Option<f64> {
            let v: Option<Vec<f64>> = rows.iter().map(f).collect();
            v.map(|v| mean_sd(&v).0)
        };
        println!(
            "| mean | | | {:.1} | {:.2} |{}",
            col(|r| Some(r.free_gpus_at_least)).unwrap_or_default(),
            col(|r| Some(r.allocated_pct_at_most)).unwrap_or_default(),
            cell(col(|r| r.reference_allocated_pct))
        );
    }
    let mut top: Vec<(Vec<u32>, f64)> = mix.into_iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "\nMost used patterns of an optimal mix (LP optima need not be unique; milli-GPU per GPU: mean GPUs, free milli-GPU each):"
    );
    for (p, x) in top.iter().take(10) {
        let used: u32 = p.iter().sum();
        let sizes: Vec<String> = p.iter().map(u32::to_string).collect();
        println!("  {}: {x:.1} GPUs, {} free", sizes.join("+"), 1000 - used);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Placement {
            nodes,
            pods,
            policy,
            seeds,
            variant,
            format,
            all_steps,
            jobs,
        } => placement(nodes, pods, policy, seeds, variant, format, all_steps, jobs),
        Cmd::Bound {
            nodes,
            pods,
            seeds,
            variant,
            keep_up,
            from_pct,
            forced_pct,
            means,
            format,
        } => {
            let premise = match forced_pct {
                Some(step) => Premise::PlaceAllBy(step),
                None => Premise::KeepUp {
                    policy: keep_up,
                    from_pct,
                    means,
                },
            };
            bound_cmd(nodes, pods, seeds, variant, premise, format)
        }
        Cmd::Generate {
            nodes,
            pods,
            variant,
            seed,
        } => generate(nodes, pods, variant, seed),
        Cmd::Serving {
            trace,
            cluster,
            policy,
            rate_scale,
            format,
        } => serving_cmd(trace, cluster, policy, rate_scale, format),
        Cmd::Synthetic {
            nodes,
            pods,
            node_count,
            pod_count,
            policy,
            seed,
            variant,
        } => synthetic(nodes, pods, node_count, pod_count, policy, seed, &variant),
    }
}
