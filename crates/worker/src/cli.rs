//! The command line: `run` (what worker Pods execute) and `bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::input::{Fields, Shard};
use crate::model::{Model, Task};
use crate::output::OutputFormat;
use crate::pipeline::{RunConfig, RunReport};
use crate::telemetry::Telemetry;
use crate::tokenize::TextTokenizer;

/// `autoglm-worker`: batched TorchScript inference with exactly-once checkpoints.
#[derive(Debug, Parser)]
#[command(name = "autoglm-worker", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Process this replica's shard (what worker Pods run).
    Run(RunArgs),
    /// Benchmark the worker path against sentence-transformers on a corpus.
    Bench(crate::cli::BenchArgs),
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// CUDA when libtorch sees a GPU, else CPU.
    Auto,
    /// CPU.
    Cpu,
    /// CUDA (fails without a GPU).
    Cuda,
}

/// Model and runtime flags shared by `run` and `bench`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// TorchScript model: `(input_ids [B,L] i64, attention_mask [B,L] i64) -> [B,D] f32`.
    #[arg(long, env = "AUTOGLM_MODEL")]
    pub model: String,
    /// `tokenizer.json` (padding is done by the worker; truncation as the file says).
    #[arg(long, env = "AUTOGLM_TOKENIZER")]
    pub tokenizer: String,
    /// `cpu`, `cuda`, or `auto` (CUDA when visible).
    #[arg(long, env = "AUTOGLM_DEVICE", value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Intra-op CPU threads; 0: the container's CPU limit (cgroup v2 `cpu.max`), else the
    /// available parallelism.
    #[arg(long, env = "AUTOGLM_THREADS", default_value_t = 0)]
    pub threads: usize,
}

/// Batching flags shared by `run` and `bench`.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Rows per batch, at most.
    #[arg(long, env = "AUTOGLM_MAX_BATCH_SIZE", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch_size: u32,
    /// Milliseconds the first item of a window may wait for the window to fill.
    #[arg(long, env = "AUTOGLM_MAX_DELAY_MS", default_value_t = 20)]
    pub max_delay_ms: u64,
    /// Per-batch latency target in ms for the adaptive batch size; 0: fixed at the maximum.
    #[arg(long, env = "AUTOGLM_TARGET_P99_MS", default_value_t = 200)]
    pub target_p99_ms: u64,
    /// `rows x longest row` tokens per batch, at most.
    #[arg(long, env = "AUTOGLM_MAX_BATCH_TOKENS", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch_tokens: u32,
}

/// `run` flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Model and runtime.
    #[command(flatten)]
    pub model: ModelArgs,
    /// `embedding` or `classification`.
    #[arg(long, env = "AUTOGLM_TASK", value_enum)]
    pub task: Task,
    /// Class labels in output order, comma-separated (classification; default: the index).
    #[arg(long, env = "AUTOGLM_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Input JSONL: one item per line.
    #[arg(long, env = "AUTOGLM_INPUT")]
    pub input: String,
    /// JSON field with the text.
    #[arg(long, env = "AUTOGLM_TEXT_FIELD", default_value = "text")]
    pub text_field: String,
    /// JSON field with the item id (a string or number), copied to the output.
    #[arg(long, env = "AUTOGLM_ID_FIELD")]
    pub id_field: Option<String>,
    /// Output folder URI; this replica writes `<output>/replica-<i>/`.
    #[arg(long, env = "AUTOGLM_OUTPUT")]
    pub output: String,
    /// Part file format.
    #[arg(
        long,
        env = "AUTOGLM_OUTPUT_FORMAT",
        value_enum,
        default_value = "parquet"
    )]
    pub output_format: OutputFormat,
    /// This replica, `0..replicas`.
    #[arg(long, env = "AUTOGLM_REPLICA_INDEX", default_value_t = 0)]
    pub replica_index: u32,
    /// Replicas in the job.
    #[arg(long, env = "AUTOGLM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub replicas: u32,
    /// Batching.
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Commit a part once this many items are ready.
    #[arg(long, env = "AUTOGLM_CHECKPOINT_EVERY_ITEMS", default_value_t = 2048)]
    pub checkpoint_every_items: u64,
    /// ... or once this many seconds passed since the last commit.
    #[arg(long, env = "AUTOGLM_CHECKPOINT_EVERY_SECONDS", default_value_t = 30)]
    pub checkpoint_every_seconds: u64,
    /// Failed items (bad JSON, missing field) allowed before the replica fails.
    #[arg(long, env = "AUTOGLM_MAX_FAILED_ITEMS", default_value_t = 0)]
    pub max_failed_items: u64,
    /// Admin server (`/livez`, `/readyz`, `/metrics`); empty: none.
    #[arg(long, env = "AUTOGLM_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: String,
}

/// `bench` flags.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Model and runtime.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The same model in bfloat16 (hack/export_model.py writes `model-bf16.pt`).
    #[arg(long, env = "AUTOGLM_MODEL_BF16")]
    pub model_bf16: Option<String>,
    /// Corpus JSONL.
    #[arg(long, env = "AUTOGLM_INPUT")]
    pub input: String,
    /// JSON field with the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Items of the corpus to use (its first lines).
    #[arg(long, default_value_t = 2000)]
    pub limit: usize,
    /// Adaptive batching bounds (the adaptive row of the table).
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Fixed batch sizes to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,16,32,64")]
    pub sweep: Vec<usize>,
    /// Python with sentence-transformers (the venv of hack/torch-env.sh); empty: skip.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The reference script.
    #[arg(long, default_value = "hack/st_reference.py")]
    pub st_script: PathBuf,
    /// The sentence-transformers model folder.
    #[arg(long)]
    pub st_model: Option<String>,
    /// Device for sentence-transformers (`cpu` or `cuda`).
    #[arg(long, default_value = "cpu")]
    pub st_device: String,
    /// sentence-transformers `encode` batch size.
    #[arg(long, default_value_t = 32)]
    pub st_batch_size: usize,
}

/// Resolves `--threads 0` to the container's CPU.
#[must_use]
pub fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        crate::resources::cpu_threads()
    } else {
        threads
    }
}

/// Fetches a model or tokenizer URI to a local file (remote objects go to a temp folder).
///
/// # Errors
/// When the object cannot be read or written locally.
pub fn local_file(
    rt: &tokio::runtime::Runtime,
    uri: &str,
    scratch: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = crate::store::local_path(uri) {
        return Ok(p);
    }
    let bytes = rt.block_on(crate::store::read_all(uri))?;
    std::fs::create_dir_all(scratch)
        .with_context(|| format!("failed to create {}", scratch.display()))?;
    let name = uri
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("model");
    let path = scratch.join(name);
    std::fs::write(&path, &bytes).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path)
}

/// Loads the tokenizer from a local file.
///
/// # Errors
/// When the file cannot be read or is not a tokenizer.
pub fn load_tokenizer(path: &std::path::Path) -> anyhow::Result<TextTokenizer> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("failed to read tokenizer {}", path.display()))?;
    Ok(TextTokenizer::from_bytes(
        &bytes,
        &path.display().to_string(),
    )?)
}

/// Loads the libtorch model; returns it with its size in MiB and whether it is on CUDA.
///
/// # Errors
/// When the file is not TorchScript, the device is unavailable, or the crate was built
/// without the `libtorch` feature.
#[cfg(feature = "libtorch")]
pub fn load_model(
    path: &std::path::Path,
    device: DeviceArg,
    threads: usize,
) -> anyhow::Result<(Box<dyn Model>, bool)> {
    use crate::torch::{DeviceChoice, TorchModel};
    let device = match device {
        DeviceArg::Auto => DeviceChoice::Auto,
        DeviceArg::Cpu => DeviceChoice::Cpu,
        DeviceArg::Cuda => DeviceChoice::Cuda,
    };
    let m = TorchModel::load(path, device, threads)?;
    let cuda = m.on_cuda();
    tracing::info!(model = %m.describe(), "model loaded");
    Ok((Box::new(m), cuda))
}

/// Without libtorch there is no real model.
///
/// # Errors
/// Always.
#[cfg(not(feature = "libtorch"))]
pub fn load_model(
    path: &std::path::Path,
    _device: DeviceArg,
    _threads: usize,
) -> anyhow::Result<(Box<dyn Model>, bool)> {
    bail!(
        "failed to load {}: this autoglm-worker was built without the `libtorch` feature",
        path.display()
    )
}

/// On CUDA with `AUTOGLM_GPU_MEMORY_MIB` set, lowers the token budget to what the cap allows
/// (see `torch::token_budget_for_cap`); otherwise returns `max_tokens`.
#[must_use]
pub fn clamp_tokens_to_gpu_cap(
    cuda: bool,
    model_path: &std::path::Path,
    max_tokens: usize,
) -> usize {
    #[cfg(feature = "libtorch")]
    if let (true, Some(cap)) = (cuda, crate::resources::gpu_memory_cap_mib()) {
        let budget = crate::torch::token_budget_for_cap(cap, crate::torch::file_mib(model_path));
        if budget < max_tokens {
            tracing::info!(
                cap_mib = cap,
                max_batch_tokens = budget,
                "token budget clamped to the GPU memory cap"
            );
            return budget;
        }
    }
    let _ = (cuda, model_path);
    max_tokens
}

/// The pipeline config for `run`, with the token budget clamped for a GPU memory cap.
#[must_use]
pub fn run_config(a: &RunArgs, max_batch_tokens: usize) -> RunConfig {
    RunConfig {
        input: a.input.clone(),
        output: a.output.clone(),
        format: a.output_format,
        task: a.task,
        labels: a.labels.clone(),
        fields: Fields {
            text: a.text_field.clone(),
            id: a.id_field.clone(),
        },
        shard: Shard {
            index: a.replica_index,
            count: a.replicas,
        },
        max_batch_size: a.batch.max_batch_size as usize,
        max_batch_tokens,
        max_delay: Duration::from_millis(a.batch.max_delay_ms),
        target_p99: (a.batch.target_p99_ms > 0)
            .then(|| Duration::from_millis(a.batch.target_p99_ms)),
        checkpoint_every_items: a.checkpoint_every_items,
        checkpoint_every: Duration::from_secs(a.checkpoint_every_seconds),
        max_failed_items: a.max_failed_items,
    }
}

/// `autoglm-worker run`.
///
/// # Errors
/// Anything that stops the replica: bad flags, unreadable model/input, a refused checkpoint,
/// too many failed items.
pub fn cmd_run(a: &RunArgs) -> anyhow::Result<RunReport> {
    if a.replica_index >= a.replicas {
        bail!(
            "invalid --replica-index {}: must be below --replicas {}",
            a.replica_index,
            a.replicas
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let telemetry = Arc::new(Telemetry::new());
    if !a.admin_addr.is_empty() {
        let addr: SocketAddr = a.admin_addr.parse().with_context(|| {
            format!(
                "invalid --admin-addr {:?}: expected host:port",
                a.admin_addr
            )
        })?;
        let t = telemetry.clone();
        rt.spawn(async move {
            if let Err(e) = crate::telemetry::serve_admin(addr, t).await {
                tracing::error!(%addr, error = %e, "admin server failed");
            }
        });
    }
    let reporter = rt.spawn(crate::progress::run_reporter(telemetry.clone()));
    let scratch = std::env::temp_dir().join(format!("autoglm-worker-{}", std::process::id()));
    let threads = resolve_threads(a.model.threads);
    let model_path = local_file(&rt, &a.model.model, &scratch)?;
    let tok_path = local_file(&rt, &a.model.tokenizer, &scratch)?;
    let tokenizer = Arc::new(load_tokenizer(&tok_path)?);
    let (model, cuda) = load_model(&model_path, a.model.device, threads)?;
    let max_tokens = clamp_tokens_to_gpu_cap(cuda, &model_path, a.batch.max_batch_tokens as usize);
    telemetry.set_ready();
    let cfg = run_config(a, max_tokens);
    let result = crate::pipeline::run(&cfg, model, tokenizer, rt.handle(), telemetry.clone());
    if result.is_err() {
        telemetry.update(true, |p| p.state = autoglm_api::WorkerState::Failed);
    }
    reporter.abort();
    rt.block_on(crate::progress::report_once(&telemetry));
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(result?)
}
