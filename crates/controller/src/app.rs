//! Process wiring: CLI, logging, admin server, leader election, watches, the job
//! controller and the binder. This is the binary's edge, so it reports errors with `anyhow`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use autoglm_api::wellknown::CONTROLLER_FIELD_MANAGER;
use autoglm_api::{GpuNode, InferenceJob};
use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::context::{Context, Settings};
use crate::leader::{LeaderConfig, LeaderOutcome, run_as_leader};
use crate::metrics::Metrics;
use crate::{binder, reconcile};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Command line of `autoglm-controller`.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "autoglm-controller",
    version,
    about = "Reconciles InferenceJobs into scored, bound worker pods"
)]
pub struct Args {
    /// Address of the admin server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "AUTOGLM_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// Elect a leader through a coordination.k8s.io Lease (needed when more than one
    /// controller replica runs).
    #[arg(long, env = "AUTOGLM_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "AUTOGLM_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "AUTOGLM_LEASE_NAME", default_value = "autoglm-controller")]
    pub lease_name: String,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_s: u64,
    /// Seconds before expiry at which the holder renews (also the tolerated clock skew).
    #[arg(long, default_value_t = 5)]
    pub lease_grace_s: u64,
    /// Identity in the Lease (default: POD_NAME, else hostname-pid).
    #[arg(long, env = "AUTOGLM_IDENTITY")]
    pub identity: Option<String>,
    /// Log format.
    #[arg(long, env = "AUTOGLM_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// GpuNode heartbeats older than this many seconds make a node's GPUs unavailable
    /// (0 disables the check, e.g. for simulated inventories that never refresh).
    #[arg(long, default_value_t = 0)]
    pub max_heartbeat_age_s: i64,
    /// Seconds a Node may stay NotReady before its replicas are rescheduled elsewhere
    /// (1 to 31,536,000, one year).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
    pub node_lost_after_s: i64,
    /// Worker image for every replica pod (overrides spec.workerImage).
    #[arg(long, env = "AUTOGLM_WORKER_IMAGE")]
    pub worker_image: Option<String>,
    /// Bind calls in flight at once.
    #[arg(long, default_value_t = 32)]
    pub bind_concurrency: usize,
    /// Only reconcile InferenceJobs (and watch pods) in this namespace (default: all).
    #[arg(long, env = "AUTOGLM_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only place replicas on Nodes (and read GpuNodes) matching this label selector, e.g.
    /// `pool=gpu-a`. Lets several controllers share a cluster with disjoint GPU pools.
    #[arg(long, env = "AUTOGLM_NODE_SELECTOR")]
    pub node_selector: Option<String>,
}

/// Installs the tracing subscriber (`RUST_LOG` filter, default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_lease_manager=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn identity(args: &Args) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
}

/// Runs the controller until SIGINT/SIGTERM (or loss of leadership, which is an error so
/// that the process restarts with fresh state).
///
/// # Errors
/// No kubeconfig/in-cluster config, the admin port cannot be bound, the Lease cannot be
/// used, or leadership was lost.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("failed to create a Kubernetes client")?;
    run_with_client(args, client).await
}

/// [`run`] with a given client (benchmarks and tests that run the controller in-process).
///
/// # Errors
/// As [`run`], except the client creation.
pub async fn run_with_client(args: Args, client: Client) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let admin_state = Arc::new(AdminState::new(registry));
    let shutdown = CancellationToken::new();

    let admin_addr = args.admin_addr;
    let admin = {
        let token = shutdown.clone();
        let state = admin_state.clone();
        let listener = tokio::net::TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("failed to bind admin address {admin_addr}"))?;
        tokio::spawn(async move {
            admin::serve_on(listener, state, async move { token.cancelled().await }).await
        })
    };
    {
        let token = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining");
            token.cancel();
        });
    }

    let work = {
        let client = client.clone();
        let metrics = metrics.clone();
        let admin_state = admin_state.clone();
        let token = shutdown.clone();
        let args = args.clone();
        move || controller_main(client, args, metrics, admin_state, token)
    };
    if args.leader_election {
        // A standby has nothing to sync: it is ready while it waits for the Lease.
        admin_state.set_ready(true);
        let cfg = LeaderConfig {
            lease_name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
            identity: identity(&args),
            duration_s: args.lease_duration_s,
            grace_s: args.lease_grace_s,
        };
        let m = metrics.clone();
        let a = admin_state.clone();
        let outcome = run_as_leader(
            client,
            &cfg,
            &shutdown,
            move |l| {
                m.leader.set(i64::from(l));
                if l {
                    a.set_ready(false);
                }
            },
            work,
        )
        .await
        .context("failed to run leader election")?;
        if outcome == LeaderOutcome::Lost {
            anyhow::bail!(
                "lost the leader Lease {}; exiting so a restart rebuilds state",
                cfg.lease_name
            );
        }
    } else {
        metrics.leader.set(1);
        work().await;
    }
    shutdown.cancel();
    let _ = admin.await;
    Ok(())
}

/// Resolves once `store` has seen its initial list (or its writer is gone).
fn wait_ready<K>(
    store: &reflector::Store<K>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    Box::pin(async move {
        loop {
            match tokio::time::timeout(
                std::time::Duration::from_millis(100),
                store.wait_until_ready(),
            )
            .await
            {
                Ok(_) => return,
                Err(_) => continue,
            }
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Watches, the job controller and the binder; returns after `shutdown` once both drained.
async fn controller_main(
    client: Client,
    args: Args,
    metrics: Arc<Metrics>,
    admin_state: Arc<AdminState>,
    shutdown: CancellationToken,
) {
    let wake = Arc::new(Notify::new());
    let cfg = watcher::Config::default();
    let node_cfg = match &args.node_selector {
        Some(sel) => watcher::Config::default().labels(sel),
        None => watcher::Config::default(),
    };
    let (job_api, pod_api): (Api<InferenceJob>, Api<Pod>) = match &args.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (jobs, jobs_w) = reflector::store::<InferenceJob>();
    let (pods, pods_w) = reflector::store::<Pod>();
    let (nodes, nodes_w) = reflector::store::<Node>();
    let (gpu_nodes, gpu_nodes_w) = reflector::store::<GpuNode>();
    let w = wake.clone();
    let status_memo = Arc::new(crate::context::StatusMemo::default());
    let memo = status_memo.clone();
    let job_stream = watcher(job_api, cfg.clone())
        .default_backoff()
        .reflect(jobs_w)
        .inspect(move |e| {
            // A job deleted without the finalizer's cleanup (finalizer removed by hand)
            // would otherwise keep its memo entry.
            if let Ok(watcher::Event::Delete(job)) = e {
                memo.forget(&job.uid().unwrap_or_default());
            }
        })
        .applied_objects()
        .inspect(move |e| {
            tracing::trace!(ok = e.is_ok(), "job event");
            w.notify_one();
        });
    let w = wake.clone();
    let pod_stream = watcher(pod_api, cfg.clone())
        .default_backoff()
        .reflect(pods_w)
        .touched_objects()
        .inspect(move |_| w.notify_one());
    let w = wake.clone();
    let node_stream = watcher(Api::<Node>::all(client.clone()), node_cfg.clone())
        .default_backoff()
        .reflect(nodes_w)
        .touched_objects()
        .inspect(move |_| w.notify_one());
    let w = wake.clone();
    let gpu_node_stream = watcher(Api::<GpuNode>::all(client.clone()), node_cfg)
        .default_backoff()
        .reflect(gpu_nodes_w)
        .touched_objects()
        .inspect(move |_| w.notify_one());

    let reporter = Reporter {
        controller: CONTROLLER_FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        pods: pods.clone(),
        nodes: nodes.clone(),
        gpu_nodes: gpu_nodes.clone(),
        jobs: jobs.clone(),
        wake_binder: wake,
        synced: Arc::default(),
        status_memo,
        settings: Settings {
            max_heartbeat_age_s: (args.max_heartbeat_age_s > 0).then_some(args.max_heartbeat_age_s),
            node_lost_after_s: args.node_lost_after_s,
            worker_image: args.worker_image.clone(),
            bind_concurrency: args.bind_concurrency,
        },
    };

    // Jobs with a pod on a node: what a Node or GpuNode change (NotReady, removed) affects.
    let pods_for_nodes = pods.clone();
    let jobs_on_node = move |node_name: String| {
        pods_for_nodes
            .state()
            .iter()
            .filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name.as_str())
            })
            .filter_map(|p| {
                let job = p.labels().get(autoglm_api::wellknown::labels::JOB)?;
                Some(ObjectRef::<InferenceJob>::new(job).within(&p.namespace()?))
            })
            .collect::<Vec<_>>()
    };
    let j2 = jobs_on_node.clone();
    let controller = Controller::for_stream(job_stream, jobs.clone())
        .owns_stream(pod_stream)
        .watches_stream(node_stream, move |n: Node| jobs_on_node(n.name_any()))
        .watches_stream(gpu_node_stream, move |g: GpuNode| j2(g.name_any()))
        .graceful_shutdown_on({
            let t = shutdown.clone();
            async move { t.cancelled().await }
        });

    let binder_task = {
        let ctx = ctx.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            tracing::debug!("binder task started");
            // Act only on a complete picture: every cache listed once.
            // `Store::wait_until_ready` keeps one waker per store and the Controller waits on
            // the job store too, so poll with a short timeout instead of waiting once.
            let synced = async {
                for (name, ready) in [
                    ("InferenceJob", wait_ready(&jobs)),
                    ("Pod", wait_ready(&pods)),
                    ("Node", wait_ready(&nodes)),
                    ("GpuNode", wait_ready(&gpu_nodes)),
                ] {
                    ready.await;
                    tracing::debug!(kind = name, "cache synced");
                }
            };
            tokio::select! {
                () = synced => {}
                () = token.cancelled() => return,
            }
            ctx.synced.store(true, std::sync::atomic::Ordering::Release);
            admin_state.set_ready(true);
            tracing::info!("caches synced; placing replicas");
            binder::run(ctx, token).await;
        })
    };
    controller
        .run(reconcile::reconcile, reconcile::error_policy, Arc::new(ctx))
        .for_each(|r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
            future::ready(())
        })
        .await;
    let _ = binder_task.await;
    tracing::info!("controller stopped");
}
