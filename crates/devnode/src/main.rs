//! `autoglm-devnode`: development node (test and demo tool, never a production kubelet).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use autoglm_devnode::image::{ImageMap, ImageRule};
use autoglm_devnode::node::{self, NodeSpec};
use autoglm_devnode::plugins::DevicePlugins;
use autoglm_devnode::pods::{PodRunner, RunnerConfig};
use clap::Parser;
use tokio::sync::watch;
use tracing::{info, warn};

/// Development node for Open-AutoGLM — a TEST AND DEMO TOOL, NEVER A PRODUCTION KUBELET.
///
/// Registers a Node, plays the kubelet toward the node agent's device plugin (serves
/// kubelet.sock, ListAndWatch, Allocate), and runs the containers of pods bound to the node as
/// plain local processes: no isolation, no image pulls, no probes. Only images mapped with
/// --image are run; any other image fails its pod with ErrImageNeverPull.
#[derive(Debug, Parser)]
#[command(name = "autoglm-devnode", version)]
struct Cli {
    /// Node name to register.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    /// Directory for per-pod volumes and logs [default: $TMPDIR/autoglm-devnode/<node>].
    #[arg(long)]
    state_dir: Option<PathBuf>,

    /// Device-plugin directory where kubelet.sock is served; give the same one to the node
    /// agent [default: <state-dir>/device-plugins].
    #[arg(long)]
    device_plugin_dir: Option<PathBuf>,

    /// Image rule PATTERN=PROGRAM (`*` matches anything); first match wins. Repeatable.
    /// [default: *open-autoglm/*worker*=<this binary's directory>/autoglm-worker]
    #[arg(long = "image", value_name = "PATTERN=PROGRAM")]
    images: Vec<String>,

    /// CPU capacity (Kubernetes quantity) [default: the CPUs of this machine].
    #[arg(long)]
    cpu: Option<String>,

    /// Memory capacity (Kubernetes quantity) [default: MemTotal of this machine].
    #[arg(long)]
    memory: Option<String>,

    /// Pod capacity.
    #[arg(long, default_value_t = 110)]
    pods: u32,

    /// Extra node label KEY=VALUE. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,

    /// Address reported as the node's InternalIP and every pod's IP.
    #[arg(long, default_value = "127.0.0.1")]
    host_ip: String,

    /// Environment variables passed from this process to every container (besides PATH,
    /// HOME, LANG, TMPDIR, KUBECONFIG, LD_LIBRARY_PATH, RUST_LOG, RUST_BACKTRACE and every
    /// OMP_*, MKL_*, LIBTORCH* variable). Repeatable.
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,

    /// Environment variable KEY=VALUE set in every container (after the passed-through ones,
    /// before the device plugin's and the container's own). `{free-port}` in VALUE becomes
    /// a free loopback TCP port, chosen anew at each container start: containers share the
    /// host network, so two workers must not both listen on their default port. Repeatable.
    #[arg(long = "container-env", value_name = "KEY=VALUE")]
    container_env: Vec<String>,

    /// Extended resources that only a device plugin may provide: a pod asking for one waits
    /// for the plugin to register (up to --plugin-wait-s) instead of ignoring it. Repeatable.
    #[arg(long = "device-resource", default_values_t = ["autoglm.io/gpu".to_owned(), "autoglm.io/gpu-memory-gib".to_owned()])]
    device_resources: Vec<String>,

    /// Seconds a pod waits for a needed device plugin to register.
    #[arg(long, default_value_t = 60)]
    plugin_wait_s: u64,

    /// First restart back-off in milliseconds (doubles per restart). The kubelet uses 10 s;
    /// shorter suits tests and demos.
    #[arg(long, default_value_t = 1000)]
    restart_backoff_ms: u64,

    /// Longest restart back-off in milliseconds (the kubelet's is 300 s).
    #[arg(long, default_value_t = 30_000)]
    restart_backoff_max_ms: u64,

    /// Upper bound on a pod's termination grace period, in seconds.
    #[arg(long, default_value_t = 30)]
    max_grace_s: u64,

    /// Start this node agent as a child process pointed at this node (it is stopped with
    /// the node). Its arguments come from --node-agent-arg.
    #[arg(long, value_name = "PROGRAM")]
    node_agent: Option<PathBuf>,

    /// Argument for --node-agent; `{node}`, `{device-plugin-dir}` and `{state-dir}` are
    /// replaced. Repeatable.
    #[arg(
        long = "node-agent-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    node_agent_args: Vec<String>,

    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn default_worker() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("failed to locate this executable")?;
    Ok(exe
        .parent()
        .map(|d| d.join("autoglm-worker"))
        .unwrap_or_else(|| PathBuf::from("autoglm-worker")))
}

fn machine_memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .map(|kb| format!("{}Ki", kb.trim()))
        })
        .unwrap_or_else(|| "8Gi".to_owned())
}

fn base_env(extra: &[String]) -> BTreeMap<String, String> {
    const NAMES: [&str; 8] = [
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "KUBECONFIG",
        "LD_LIBRARY_PATH",
        "RUST_LOG",
        "RUST_BACKTRACE",
    ];
    // Not AUTOGLM_*: the worker reads AUTOGLM_<FLAG> as flags, so the devnode's own
    // environment must not leak into them (pass such variables with --container-env).
    const PREFIXES: [&str; 3] = ["OMP_", "MKL_", "LIBTORCH"];
    std::env::vars()
        .filter(|(k, _)| {
            NAMES.contains(&k.as_str())
                || PREFIXES.iter().any(|p| k.starts_with(p))
                || extra.contains(k)
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let state_dir = cli.state_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("autoglm-devnode")
            .join(&cli.node_name)
    });
    let plugin_dir = cli
        .device_plugin_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("device-plugins"));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("failed to create state dir {}", state_dir.display()))?;

    let rules = if cli.images.is_empty() {
        vec![ImageRule {
            pattern: "*open-autoglm/*worker*".to_owned(),
            program: default_worker()?,
        }]
    } else {
        cli.images
            .iter()
            .map(|r| ImageRule::parse(r))
            .collect::<Result<Vec<_>, _>>()?
    };
    for r in &rules {
        if !r.program.is_file() {
            warn!(pattern = %r.pattern, program = %r.program.display(), "image rule points at a missing program; pods with this image will fail to start");
        }
    }
    let mut labels = BTreeMap::new();
    for l in &cli.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?}: expected KEY=VALUE");
        };
        labels.insert(k.to_owned(), v.to_owned());
    }

    let mut env = base_env(&cli.pass_env);
    for kv in &cli.container_env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--container-env {kv:?}: expected KEY=VALUE");
        };
        env.insert(k.to_owned(), v.to_owned());
    }

    let client = kube::Client::try_default()
        .await
        .context("failed to build a Kubernetes client (set KUBECONFIG)")?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    // Registration socket first, so a node agent started right after finds kubelet.sock.
    let plugins = DevicePlugins::new(plugin_dir.clone());
    let serve = {
        let plugins = plugins.clone();
        let mut rx = shutdown_rx.clone();
        tokio::spawn(async move {
            plugins
                .serve(async move {
                    let _ = rx.changed().await;
                })
                .await
        })
    };

    let spec = NodeSpec {
        name: cli.node_name.clone(),
        cpu: cli.cpu.clone().unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .to_string()
        }),
        memory: cli.memory.clone().unwrap_or_else(machine_memory),
        pods: cli.pods,
        labels,
        host_ip: cli.host_ip.clone(),
        started: chrono::Utc::now(),
    };
    node::register(&client, &spec, &plugins.subscribe().borrow()).await?;
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        spec.clone(),
        plugins.subscribe(),
        shutdown_rx.clone(),
    ));

    let mut agent = match &cli.node_agent {
        None => None,
        Some(program) => {
            let subst = |a: &str| {
                a.replace("{node}", &cli.node_name)
                    .replace("{device-plugin-dir}", &plugin_dir.to_string_lossy())
                    .replace("{state-dir}", &state_dir.to_string_lossy())
            };
            let args: Vec<String> = cli.node_agent_args.iter().map(|a| subst(a)).collect();
            let child = tokio::process::Command::new(program)
                .args(&args)
                .env("NODE_NAME", &cli.node_name)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("failed to start node agent {}", program.display()))?;
            info!(program = %program.display(), ?args, pid = child.id(), "node agent started");
            Some(child)
        }
    };

    let runner = PodRunner::new(
        client.clone(),
        RunnerConfig {
            node_name: cli.node_name.clone(),
            state_dir: state_dir.clone(),
            images: ImageMap::new(rules),
            base_env: env,
            host_ip: cli.host_ip.clone(),
            device_resources: cli
                .device_resources
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            plugin_wait: Duration::from_secs(cli.plugin_wait_s),
            backoff_base: Duration::from_millis(cli.restart_backoff_ms),
            backoff_max: Duration::from_millis(cli.restart_backoff_max_ms),
            max_grace: Duration::from_secs(cli.max_grace_s),
        },
        plugins.clone(),
    );
    let pods = tokio::spawn(runner.run(shutdown_rx.clone()));
    info!(node = %cli.node_name, state_dir = %state_dir.display(), kubelet_sock = %plugins.socket_path().display(), "development node running (test and demo tool, not a kubelet)");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to install SIGTERM handler")?;
    let agent_exit = async {
        match agent.as_mut() {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = sigterm.recv() => info!("SIGTERM: shutting down"),
        status = agent_exit => warn!(?status, "node agent exited; shutting down"),
    }
    let _ = shutdown_tx.send(true);
    let _ = pods.await;
    if let Some(mut c) = agent {
        if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .is_err()
        {
            let _ = c.kill().await;
        }
    }
    let gpus = plugins.subscribe().borrow().clone();
    if let Err(e) = node::patch_status(&client, &spec, &gpus, false, "stopped").await {
        warn!(error = %autoglm_devnode::display_chain(&e), "failed to mark the node not ready");
    }
    let _ = heartbeat.await;
    if let Ok(Err(e)) = serve.await {
        warn!(error = %autoglm_devnode::display_chain(&e), "registration server failed");
    }
    info!("development node stopped");
    Ok(())
}
