//! Request-serving simulator: Azure LLM inference requests replayed onto heterogeneous GPU
//! servers with continuous (adaptive) batching.
//!
//! # Cost model
//! Each server is one GPU holding one copy of the model.
//! - **Prefill** of a request costs `ctx_tokens * 2 * params / (peak FP16 FLOP/s * mfu)`:
//!   prefill is compute bound (two FLOPs per parameter per token).
//! - **Decode**: each batch step produces one token for every running request and costs
//!   `(weight bytes + KV bytes of all running requests) / (HBM bandwidth * mbu)`: decode is
//!   memory-bandwidth bound (every step reads the weights and the KV cache once).
//! - **KV-cache limit**: a request reserves `(ctx + generated) * kv_bytes_per_token` for its
//!   whole life; the sum over running requests stays within `gpu memory * usable - weights`.
//! - **Adaptive batching**: at every step boundary the server admits queued requests (FIFO)
//!   while the batch is under `max_batch` and their KV reservation fits; the prefill of the
//!   admitted requests is added to that step. The batch therefore grows with the queue and
//!   shrinks as it drains, within the memory bound.
//!
//! Routing at arrival (`--policy`):
//! - `rr`: servers in turn;
//! - `least-loaded`: fewest outstanding requests (queued + running);
//! - `autoglm`: the smallest total latency added: this request's estimated completion time
//!   on the server (queued prompts' prefill, then its decode at the step time of the batch it
//!   joins, plus a wait when the batch is full) plus the delay it imposes on the requests
//!   already there (its prefill stalls each running request once; its KV cache slows their
//!   remaining steps); among servers whose KV cache can ever hold it.
//!
//! Latency is end to end (arrival to last token); the SLO of a request is
//! `slo.base_ms + slo.per_output_token_ms * generated tokens`.
//!
//! # Source
//! Roofline reasoning for LLM inference: Pope et al., "Efficiently Scaling Transformer
//! Inference", MLSys 2023 (prefill compute bound, decode memory bound); continuous batching:
//! Yu et al., "Orca", OSDI 2022; KV reservation: Kwon et al., "vLLM / PagedAttention",
//! SOSP 2023. Parameter values and their sources are in the cluster YAML.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors of the serving simulator.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// A file could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The cluster YAML is malformed.
    #[error("failed to parse cluster file {path}: {source}")]
    Yaml {
        /// Path.
        path: String,
        /// Cause.
        source: serde_yaml::Error,
    },
    /// The trace is malformed.
    #[error("failed to parse trace {path} line {line}: {rule}")]
    Trace {
        /// Path.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        rule: String,
    },
    /// A setting breaks a rule.
    #[error("invalid cluster file: {field} {rule}")]
    Invalid {
        /// Field.
        field: String,
        /// Rule.
        rule: String,
    },
    /// Unknown routing policy.
    #[error("failed to select routing policy {0:?}: known are rr, least-loaded, autoglm")]
    UnknownPolicy(String),
}

/// The served model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Name (informational).
    pub name: String,
    /// Parameters, in billions.
    pub params_billion: f64,
    /// Weight memory in MiB.
    pub weights_mib: f64,
    /// KV cache per token in MiB.
    pub kv_mib_per_token: f64,
}

/// A GPU type's datasheet figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuTypeSpec {
    /// Memory bandwidth in GB/s (10^9 bytes/s).
    pub hbm_gbps: f64,
    /// Dense FP16 tensor throughput in TFLOP/s.
    pub fp16_tflops: f64,
    /// Memory in MiB.
    pub mem_mib: f64,
}

/// Efficiency factors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Efficiency {
    /// Model FLOPs utilisation during prefill (0..1].
    pub mfu: f64,
    /// Memory bandwidth utilisation during decode (0..1].
    pub mbu: f64,
    /// Usable share of GPU memory (0..1].
    pub usable_mem: f64,
}

/// A group of identical servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerGroup {
    /// GPU type (key of `gpu_types`).
    pub gpu_type: String,
    /// Number of servers (one GPU each).
    pub count: usize,
}

/// Latency objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Fixed part, in ms (time to first token budget).
    pub base_ms: f64,
    /// Per generated token, in ms.
    pub per_output_token_ms: f64,
}

/// The cluster file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingCluster {
    /// Served model.
    pub model: ModelSpec,
    /// GPU types.
    pub gpu_types: BTreeMap<String, GpuTypeSpec>,
    /// Efficiency factors.
    pub efficiency: Efficiency,
    /// Servers.
    pub servers: Vec<ServerGroup>,
    /// Largest batch per server.
    pub max_batch: usize,
    /// Latency objective.
    pub slo: Slo,
}

impl ServingCluster {
    /// Read and check a cluster YAML.
    ///
    /// # Errors
    /// [`ServingError`] naming the file, or the field and rule broken.
    pub fn load(path: &Path) -> Result<Self, ServingError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let c: Self = serde_yaml::from_str(&text).map_err(|source| ServingError::Yaml {
            path: path.display().to_string(),
            source,
        })?;
        c.validate()?;
        Ok(c)
    }
    /// Check the rules: known GPU types, positive figures, fractions in (0, 1], a batch of
    /// at least 1, weights that fit each GPU.
    ///
    /// # Errors
    /// [`ServingError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ServingError> {
        let bad = |field: String, rule: &str| ServingError::Invalid {
            field,
            rule: rule.to_string(),
        };
        for (f, v) in [
            ("efficiency.mfu", self.efficiency.mfu),
            ("efficiency.mbu", self.efficiency.mbu),
            ("efficiency.usable_mem", self.efficiency.usable_mem),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(bad(f.into(), "must be within (0, 1]"));
            }
        }
        if self.max_batch == 0 {
            return Err(bad("max_batch".into(), "must be at least 1"));
        }
        if self.servers.iter().map(|s| s.count).sum::<usize>() == 0 {
            return Err(bad("servers".into(), "must hold at least one server"));
        }
        for s in &self.servers {
            let Some(g) = self.gpu_types.get(&s.gpu_type) else {
                return Err(bad(
                    format!("servers[].gpu_type {:?}", s.gpu_type),
                    "must name an entry of gpu_types",
                ));
            };
            if !(g.hbm_gbps > 0.0 && g.fp16_tflops > 0.0) {
                return Err(bad(
                    format!("gpu_types.{}", s.gpu_type),
                    "needs positive hbm_gbps and fp16_tflops",
                ));
            }
            if g.mem_mib * self.efficiency.usable_mem <= self.model.weights_mib {
                return Err(bad(
                    format!("gpu_types.{}.mem_mib", s.gpu_type),
                    "must hold the model weights",
                ));
            }
        }
        Ok(())
    }
}

/// One request of the trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Arrival, in ms from the first request.
    pub arrival_ms: f64,
    /// Context (prompt) tokens.
    pub ctx: u32,
    /// Generated tokens.
    pub out_tokens: u32,
}

/// Parse `YYYY-MM-DD HH:MM:SS.fffffff` into seconds since 1970-01-01 (no time zone).
fn parse_ts(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, mi, sec) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + sec)
}

/// Load the Azure LLM trace (`TIMESTAMP,ContextTokens,GeneratedTokens`, CRLF or LF).
///
/// # Errors
/// [`ServingError`] naming the file and line.
pub fn load_trace(path: &Path) -> Result<Vec<Request>, ServingError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ServingError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut out = Vec::new();
    let mut t0 = None;
    for (i, line) in text.lines().enumerate().skip(1) {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let err = |rule: &str| ServingError::Trace {
            path: shown.clone(),
            line: i + 1,
            rule: rule.to_string(),
        };
        let mut f = line.split(',');
        let ts = parse_ts(f.next().unwrap_or(""))
            .ok_or_else(|| err("TIMESTAMP must be YYYY-MM-DD HH:MM:SS.fffffff"))?;
        let ctx = f
            .next()
            .and_then(|x| x.trim().parse::<u32>().ok())
            .ok_or_else(|| err("ContextTokens must be a non-negative integer"))?;
        let out_tokens = f
            .next()
            .and_then(|x| x.trim().parse::<u32>().ok())
            .ok_or_else(|| err("GeneratedTokens must be a non-negative integer"))?;
        let base = *t0.get_or_insert(ts);
        out.push(Request {
            arrival_ms: (ts - base) * 1000.0,
            ctx,
            out_tokens: out_tokens.max(1),
        });
    }
    Ok(out)
}

/// Routing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Round robin.
    RoundRobin,
    /// Fewest outstanding requests.
    LeastLoaded,
    /// Smallest estimated completion time.
    AutoGlm,
}

impl Routing {
    /// Parse `rr`, `least-loaded` or `autoglm`.
    ///
    /// # Errors
    /// [`ServingError::UnknownPolicy`].
    pub fn parse(s: &str) -> Result<Self, ServingError> {
        match s {
            "rr" | "round-robin" => Ok(Routing::RoundRobin),
            "least-loaded" => Ok(Routing::LeastLoaded),
            "autoglm" => Ok(Routing::AutoGlm),
            other => Err(ServingError::UnknownPolicy(other.to_string())),
        }
    }
}

/// Per-server constants derived from the cost model.
#[derive(Debug, Clone)]
struct ServerModel {
    prefill_ms_per_token: f64,
    weights_ms: f64,
    kv_ms_per_token: f64,
    kv_capacity_tokens: f64,
}

#[derive(Debug, Clone)]
struct Running {
    id: usize,
    left: u32,
    kv_tokens: f64,
}

#[derive(Debug, Clone)]
struct Server {
    m: ServerModel,
    queue: VecDeque<usize>,
    running: Vec<Running>,
    kv_used: f64,
    step_end: Option<f64>,
    busy_ms: f64,
}

/// Results of one serving run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServingReport {
    /// Routing policy.
    pub policy: String,
    /// Arrival rate multiplier.
    pub rate_scale: f64,
    /// Requests completed.
    pub requests: usize,
    /// Requests no server could ever hold (KV larger than every server's cache).
    pub rejected: usize,
    /// Mean end-to-end latency, ms.
    pub mean_ms: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Completed requests per second over the run (first arrival to last completion).
    pub throughput_rps: f64,
    /// Generated tokens per second.
    pub tokens_per_s: f64,
    /// Requests within their SLO per second ("throughput at the SLO").
    pub goodput_rps: f64,
    /// Busy GPU time over total GPU time, percent.
    pub gpu_busy_pct: f64,
    /// Requests within their SLO, percent.
    pub slo_pct: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Replay `trace` (arrivals divided by `rate_scale`) on `cluster` with `routing`.
pub fn simulate(
    cluster: &ServingCluster,
    trace: &[Request],
    routing: Routing,
    rate_scale: f64,
) -> ServingReport {
    let model = &cluster.model;
    let eff = &cluster.efficiency;
    let mut servers: Vec<Server> = Vec::new();
    for g in &cluster.servers {
        let t = &cluster.gpu_types[&g.gpu_type]; // checked by validate()
        let bytes_per_ms = t.hbm_gbps * 1e9 * eff.mbu / 1000.0;
        let m = ServerModel {
            prefill_ms_per_token: 2.0 * model.params_billion * 1e9
                / (t.fp16_tflops * 1e12 * eff.mfu)
                * 1000.0,
            weights_ms: model.weights_mib * 1_048_576.0 / bytes_per_ms,
            kv_ms_per_token: model.kv_mib_per_token * 1_048_576.0 / bytes_per_ms,
            kv_capacity_tokens: (t.mem_mib * eff.usable_mem - model.weights_mib)
                / model.kv_mib_per_token,
        };
        for _ in 0..g.count {
            servers.push(Server {
                m: m.clone(),
                queue: VecDeque::new(),
                running: Vec::new(),
                kv_used: 0.0,
                step_end: None,
                busy_ms: 0.0,
            });
        }
    }
    let scale = if rate_scale > 0.0 { rate_scale } else { 1.0 };
    let arrivals: Vec<f64> = trace.iter().map(|r| r.arrival_ms / scale).collect();
    let mut finish = vec![f64::NAN; trace.len()];
    let mut rejected = 0usize;
    let mut rr = 0usize;
    let mut next = 0usize;
    let max_batch = cluster.max_batch;

    // Start a step on server `s` at time `now` if it is idle and has work.
    let start_step = |s: &mut Server, now: f64, trace: &[Request]| {
        if s.step_end.is_some() {
            return;
        }
        let mut prefill_tokens = 0.0;
        while s.running.len() < max_batch {
            let Some(&id) = s.queue.front() else { break };
            let need = f64::from(trace[id].ctx + trace[id].out_tokens);
            if s.kv_used + need > s.m.kv_capacity_tokens {
                break;
            }
            s.queue.pop_front();
            s.kv_used += need;
            prefill_tokens += f64::from(trace[id].ctx);
            s.running.push(Running {
                id,
                left: trace[id].out_tokens,
                kv_tokens: f64::from(trace[id].ctx),
            });
        }
        if s.running.is_empty() {
            return;
        }
        let kv: f64 = s.running.iter().map(|r| r.kv_tokens).sum();
        let dur =
            prefill_tokens * s.m.prefill_ms_per_token + s.m.weights_ms + kv * s.m.kv_ms_per_token;
        s.busy_ms += dur;
        s.step_end = Some(now + dur);
    };

    loop {
        let next_step = servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.step_end.map(|t| (t, i)))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let arrival = arrivals.get(next).copied();
        match (arrival, next_step) {
            (None, None) => break,
            (Some(a), step) if step.is_none_or(|(t, _)| a <= t) => {
                let id = next;
                next += 1;
                let r = trace[id];
                let need = f64::from(r.ctx + r.out_tokens);
                let fits: Vec<usize> = (0..servers.len())
                    .filter(|&i| servers[i].m.kv_capacity_tokens >= need)
                    .collect();
                if fits.is_empty() {
                    rejected += 1;
                    continue;
                }
                let target = match routing {
                    Routing::RoundRobin => {
                        let pick = fits
                            .iter()
                            .copied()
                            .find(|&i| i >= rr % servers.len())
                            .unwrap_or(fits[0]);
                        rr = pick + 1;
                        pick
                    }
                    Routing::LeastLoaded => *fits
                        .iter()
                        .min_by_key(|&&i| servers[i].queue.len() + servers[i].running.len())
                        .unwrap_or(&fits[0]),
                    Routing::AutoGlm => {
                        let est = |s: &Server| -> f64 {
                            // Continuous batching: the request joins at the next step if
                            // the batch has room, and then decodes at the step time of the
                            // batch it joins; queued prompts are prefilled first.
                            let mut prefill = f64::from(r.ctx);
                            let mut kv = f64::from(r.ctx) + f64::from(r.out_tokens) / 2.0;
                            let mut left = 0.0;
                            for &q in &s.queue {
                                prefill += f64::from(trace[q].ctx);
                                kv +=
                                    f64::from(trace[q].ctx) + f64::from(trace[q].out_tokens) / 2.0;
                                left += f64::from(trace[q].out_tokens);
                            }
                            for run in &s.running {
                                kv += run.kv_tokens + f64::from(run.left) / 2.0;
                                left += f64::from(run.left);
                            }
                            let n = (s.queue.len() + s.running.len() + 1) as f64;
                            let batch = n.min(max_batch as f64);
                            let step = s.m.weights_ms + kv / n * batch * s.m.kv_ms_per_token;
                            // Over a full batch, wait for the excess to drain: the
                            // outstanding tokens of the requests ahead, a batch at a time.
                            let wait_steps = if n > max_batch as f64 {
                                left / max_batch as f64 * (n - max_batch as f64) / n
                            } else {
                                0.0
                            };
                            let own = prefill * s.m.prefill_ms_per_token
                                + (wait_steps + f64::from(r.out_tokens)) * step;
                            // Delay this request adds to the others: its prefill stalls every
                            // running request once, and its KV slows each of their
                            // remaining steps.
                            let stall = s.running.len() as f64
                                * f64::from(r.ctx)
                                * s.m.prefill_ms_per_token;
                            let slow = left.min(f64::from(r.out_tokens) * n)
                                * (f64::from(r.ctx) + f64::from(r.out_tokens) / 2.0)
                                * s.m.kv_ms_per_token;
                            own + stall + slow
                        };
                        *fits
                            .iter()
                            .min_by(|&&a, &&b| est(&servers[a]).total_cmp(&est(&servers[b])))
                            .unwrap_or(&fits[0])
                    }
                };
                servers[target].queue.push_back(id);
                start_step(&mut servers[target], a, trace);
            }
            (_, Some((t, i))) => {
                let s = &mut servers[i];
                s.step_end = None;
                let mut k = 0;
                while k < s.running.len() {
                    s.running[k].left -= 1;
                    s.running[k].kv_tokens += 1.0;
                    if s.running[k].left == 0 {
                        let done = s.running.swap_remove(k);
                        finish[done.id] = t;
                        s.kv_used -= f64::from(trace[done.id].ctx + trace[done.id].out_tokens);
                    } else {
                        k += 1;
                    }
                }
                start_step(s, t, trace);
            }
            (Some(_), None) => unreachable!("handled by the arrival arm"),
        }
    }

    let mut lat = Vec::with_capacity(trace.len());
    let mut ok = 0usize;
    let mut tokens = 0u64;
    let mut last = 0.0f64;
    for (i, r) in trace.iter().enumerate() {
        if finish[i].is_nan() {
            continue;
        }
        let l = finish[i] - arrivals[i];
        lat.push(l);
        tokens += u64::from(r.out_tokens);
        last = last.max(finish[i]);
        if l <= cluster.slo.base_ms + cluster.slo.per_output_token_ms * f64::from(r.out_tokens) {
            ok += 1;
        }
    }
    lat.sort_by(f64::total_cmp);
    let first = arrivals.first().copied().unwrap_or(0.0);
    let span_s = ((last - first) / 1000.0).max(1e-9);
    let busy: f64 = servers.iter().map(|s| s.busy_ms).sum();
    let n = lat.len().max(1) as f64;
    ServingReport {
        policy: match routing {
            Routing::RoundRobin => "rr",
            Routing::LeastLoaded => "least-loaded",
            Routing::AutoGlm => "autoglm",
        }
        .to_string(),
        rate_scale: scale,
        requests: lat.len(),
        rejected,
        mean_ms: lat.iter().sum::<f64>() / n,
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
        throughput_rps: lat.len() as f64 / span_s,
        tokens_per_s: tokens as f64 / span_s,
        goodput_rps: ok as f64 / span_s,
        gpu_busy_pct: 100.0 * busy / (servers.len() as f64 * (last - first).max(1e-9)),
        slo_pct: 100.0 * ok as f64 / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ServingCluster {
        ServingCluster {
            model: ModelSpec {
                name: "toy".into(),
                params_billion: 1.0,
                weights_mib: 1000.0,
                kv_mib_per_token: 1.0,
            },
            gpu_types: [(
                "g".to_string(),
                GpuTypeSpec {
                    hbm_gbps: 1.048_576,
                    fp16_tflops: 2.0,
                    mem_mib: 2000.0,
                },
            )]
            .into(),
            efficiency: Efficiency {
                mfu: 1.0,
                mbu: 1.0,
                usable_mem: 1.0,
            },
            servers: vec![ServerGroup {
                gpu_type: "g".into(),
                count: 1,
            }],
            max_batch: 4,
            slo: Slo {
                base_ms: 2000.0,
                per_output_token_ms: 1000.0,
            },
        }
    }

    #[test]
    fn one_request_by_hand() {
        // Bandwidth 1.048576 GB/s = 1 MiB/ms: weights 1000 MiB -> 1000 ms per step, KV 1 ms
        // per token. Prefill: 2 * 1e9 / 2e12 = 1 ms per token.
        // Request: 10 ctx, 2 out_tokens. Step 1: 10 (prefill) + 1000 + 10 (KV) = 1020 ms; step 2:
        // 1000 + 11 = 1011 ms. Latency 2031 ms; SLO 2000 + 2 * 1000 = 4000 -> met.
        let c = cluster();
        c.validate().unwrap();
        let r = simulate(
            &c,
            &[Request {
                arrival_ms: 0.0,
                ctx: 10,
                out_tokens: 2,
            }],
            Routing::AutoGlm,
            1.0,
        );
        assert_eq!(r.requests, 1);
        assert!((r.mean_ms - 2031.0).abs() < 1e-6, "{}", r.mean_ms);
        assert!((r.slo_pct - 100.0).abs() < 1e-9);
        assert!((r.gpu_busy_pct - 100.0).abs() < 1e-9);
    }

    #[test]
    fn kv_limit_rejects_and_batches() {
        // KV capacity 2000 - 1000 = 1000 tokens: a 1200-token request can never run.
        let c = cluster();
        let r = simulate(
            &c,
            &[Request {
                arrival_ms: 0.0,
                ctx: 1100,
                out_tokens: 100,
            }],
            Routing::RoundRobin,
            1.0,
        );
        assert_eq!((r.requests, r.rejected), (0, 1));
        // A (10 ctx, 3 out_tokens) starts alone at 0: step 1 = 10 + 1000 + 10 = 1020 ms. B and C
        // (10 ctx, 1 out_tokens) arrive at 1 and 2 ms and join at 1020: step 2 = 20 prefill + 1000
        // + KV (11 + 10 + 10) = 1051 ms, ending at 2071: B waited 2070 ms, C 2069 ms.
        // Step 3 (A alone, KV 12): 1012 ms, A ends at 3083.
        let reqs = [
            Request {
                arrival_ms: 0.0,
                ctx: 10,
                out_tokens: 3,
            },
            Request {
                arrival_ms: 1.0,
                ctx: 10,
                out_tokens: 1,
            },
            Request {
                arrival_ms: 2.0,
                ctx: 10,
                out_tokens: 1,
            },
        ];
        let r = simulate(&c, &reqs, Routing::RoundRobin, 1.0);
        assert_eq!(r.requests, 3);
        assert!(
            (r.mean_ms - (3083.0 + 2070.0 + 2069.0) / 3.0).abs() < 1e-6,
            "{}",
            r.mean_ms
        );
        assert!((r.p50_ms - 2070.0).abs() < 1e-6);
    }

    #[test]
    fn timestamps() {
        let a = parse_ts("2023-11-16 18:15:46.6805900").unwrap();
        let b = parse_ts("2023-11-16 19:14:08.4000000").unwrap();
        assert!((b - a - 3501.7194100).abs() < 1e-6);
        // 2023-11-16 00:00:00 is 19,677 days after 1970-01-01.
        assert!((parse_ts("2023-11-16 00:00:00.0").unwrap() - 19_677.0 * 86_400.0).abs() < 1e-6);
    }
}
