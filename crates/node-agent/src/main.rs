//! `autoglm-node-agent`: the Open-AutoGLM node agent (a DaemonSet). See the library docs
//! and README "Node agent".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use autoglm_node_agent::agent::{self, AgentConfig};
use autoglm_node_agent::deviceplugin::DEFAULT_DEVICE_PLUGIN_DIR;
use autoglm_node_agent::inventory::health::DEFAULT_RECOVERY;
use autoglm_node_agent::inventory::nvml::NvmlInventory;
use autoglm_node_agent::inventory::simulated::{SimulatedConfig, SimulatedInventory};
use autoglm_node_agent::inventory::{GpuInventory, InventoryError};
use autoglm_node_agent::publish::{DEFAULT_PUBLISH_INTERVAL_SECS, status};
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InventoryKind {
    /// Real GPUs through NVML (needs the NVIDIA driver).
    Nvml,
    /// GPUs described by --simulated-config; published as `simulated`.
    Simulated,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    /// A table, one row per GPU.
    Table,
    /// The GpuNode status the agent would publish, as JSON.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

/// Open-AutoGLM node agent: GPU inventory (NVML or simulated), GpuNode publishing, kubelet
/// device plugin for autoglm.io/gpu and autoglm.io/gpu-memory-gib.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Name of this node (from the downward API in the DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Where GPU figures come from.
    #[arg(long, env = "AUTOGLM_INVENTORY", value_enum, default_value = "nvml")]
    inventory: InventoryKind,
    /// YAML/JSON description of simulated GPUs (required with --inventory simulated).
    #[arg(long, env = "AUTOGLM_SIMULATED_CONFIG")]
    simulated_config: Option<PathBuf>,
    /// The kubelet's device-plugin directory.
    #[arg(long, env = "AUTOGLM_DEVICE_PLUGIN_DIR", default_value = DEFAULT_DEVICE_PLUGIN_DIR)]
    device_plugin_dir: PathBuf,
    /// Run without the kubelet device plugin (inventory publishing only).
    #[arg(long, env = "AUTOGLM_NO_DEVICE_PLUGIN")]
    no_device_plugin: bool,
    /// Seconds between GpuNode publications (the heartbeat period).
    #[arg(long, env = "AUTOGLM_PUBLISH_INTERVAL", default_value_t = DEFAULT_PUBLISH_INTERVAL_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    publish_interval: u64,
    /// Seconds between inventory readings.
    #[arg(long, env = "AUTOGLM_POLL_INTERVAL", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    poll_interval: u64,
    /// Seconds without XID/ECC errors after which an unhealthy GPU is healthy again.
    #[arg(long, env = "AUTOGLM_HEALTH_RECOVERY", default_value_t = DEFAULT_RECOVERY.as_secs())]
    health_recovery: u64,
    /// Address of the admin port (/livez, /readyz, /metrics).
    #[arg(long, env = "AUTOGLM_ADMIN_ADDR", default_value = "0.0.0.0:9400")]
    admin_addr: SocketAddr,
    /// Read the inventory once, print it and exit (no API server, no device plugin).
    #[arg(long)]
    once: bool,
    /// What --once prints.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Log format.
    #[arg(long, env = "AUTOGLM_LOG_FORMAT", value_enum, default_value = "plain")]
    log_format: LogFormat,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn inventory(cli: &Cli) -> anyhow::Result<Arc<dyn GpuInventory>> {
    match cli.inventory {
        InventoryKind::Nvml => {
            // --once reads a single snapshot: no event thread.
            match NvmlInventory::init(Duration::from_secs(cli.health_recovery), !cli.once) {
                Ok(inv) => Ok(Arc::new(inv)),
                Err(e @ InventoryError::NvmlUnavailable { .. }) => {
                    tracing::error!(error = %e, "NVML is absent on this machine");
                    Err(e.into())
                }
                Err(e) => Err(e.into()),
            }
        }
        InventoryKind::Simulated => {
            let Some(path) = &cli.simulated_config else {
                bail!("--simulated-config is required with --inventory simulated");
            };
            let config = SimulatedConfig::load(path)?;
            Ok(Arc::new(SimulatedInventory::new(&config, &cli.node_name)))
        }
    }
}

fn nvml_absent(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<InventoryError>(),
        Some(InventoryError::NvmlUnavailable { .. })
    )
}

/// Returns on SIGINT or SIGTERM (the kubelet's stop signal).
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "failed to install the SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let inventory = match inventory(&cli) {
        Ok(inventory) => inventory,
        // As a DaemonSet on a node without the driver, stay up and say why instead of
        // crash-looping: /livez answers, /readyz stays 503, nothing is published or advertised.
        Err(e) if !cli.once && nvml_absent(&e) => {
            tracing::error!(
                "NVML is absent: this node's GPUs are not published and no device plugin runs; /readyz stays 503"
            );
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                on_signal.cancel();
            });
            let (_ready, ready) = tokio::sync::watch::channel(false);
            let registry = Arc::new(prometheus_client::registry::Registry::default());
            autoglm_node_agent::admin::serve(cli.admin_addr, registry, ready, cancel).await?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };

    if cli.once {
        let snapshot = inventory
            .snapshot(&[])
            .context("failed to read the GPU inventory")?;
        match cli.output {
            Output::Table => print!(
                "{}",
                autoglm_node_agent::table::render(&cli.node_name, &snapshot)
            ),
            Output::Json => {
                let s = status(
                    &snapshot,
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    ),
                );
                println!("{}", serde_json::to_string_pretty(&s)?);
            }
        }
        return Ok(());
    }

    let client = kube::Client::try_default()
        .await
        .context("failed to create a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        on_signal.cancel();
    });
    let config = AgentConfig {
        node: cli.node_name.clone(),
        publish_interval: Duration::from_secs(cli.publish_interval),
        poll_interval: Duration::from_secs(cli.poll_interval),
        device_plugin_dir: (!cli.no_device_plugin).then(|| cli.device_plugin_dir.clone()),
        admin_addr: Some(cli.admin_addr),
    };
    tracing::info!(node = %config.node, source = ?inventory.source(), "node agent starting");
    agent::run(config, inventory, Some(client), cancel).await?;
    Ok(())
}
