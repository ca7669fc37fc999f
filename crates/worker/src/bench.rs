//! `autoglm-worker bench`: the worker path against sentence-transformers on one corpus.
//!
//! Runs, in this order, on the first `--limit` items of the corpus with the same intra-op
//! threads everywhere: a warm-up; the worker with adaptive batching; the worker at each fixed
//! batch size of `--sweep`; the bf16 model (adaptive), if given; and sentence-transformers'
//! `encode` through `hack/st_reference.py` (same model, same threads). Items/s is items over
//! the wall time from the first item read to the manifest written (model loading excluded;
//! for sentence-transformers, the `encode` call). Prints a Markdown table and the ratios.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::batching::percentile;
use crate::cli::{BenchArgs, load_model, load_tokenizer, resolve_threads};
use crate::input::{Fields, Shard};
use crate::model::{Prediction, Task};
use crate::output::{OutputFormat, decode_part};
use crate::pipeline::{RunConfig, RunReport, replica_dir};
use crate::telemetry::Telemetry;
use crate::tokenize::TextTokenizer;

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What ran.
    pub name: String,
    /// Items/s.
    pub items_per_second: f64,
    /// Median model-call latency (worker rows only).
    pub p50: Option<Duration>,
    /// 99th percentile model-call latency (worker rows only).
    pub p99: Option<Duration>,
    /// Mean rows per batch (worker rows only).
    pub mean_batch: Option<f64>,
    /// Padded share of all batch cells (worker rows only).
    pub padding: Option<f64>,
    /// Worst cosine against the fp32 adaptive worker's vectors.
    pub worst_cosine: Option<f64>,
}

/// Cosine similarity of two vectors (0 when either is zero).
#[must_use]
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The smallest cosine over lines present in both maps (1 when none).
#[must_use]
pub fn worst_cosine(a: &BTreeMap<u64, Vec<f32>>, b: &BTreeMap<u64, Vec<f32>>) -> f64 {
    a.iter()
        .filter_map(|(k, v)| b.get(k).map(|w| cosine(v, w)))
        .fold(1.0, f64::min)
}

/// Reads a replica folder's parts (JSONL, embedding task) into line -> vector.
///
/// # Errors
/// When the folder or a part cannot be read.
pub fn read_vectors(replica: &Path) -> anyhow::Result<BTreeMap<u64, Vec<f32>>> {
    let mut out = BTreeMap::new();
    let mut names: Vec<_> = std::fs::read_dir(replica)
        .with_context(|| format!("failed to list {}", replica.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
        })
        .collect();
    names.sort();
    for p in names {
        let bytes = std::fs::read(&p).with_context(|| format!("failed to read {}", p.display()))?;
        for r in
            decode_part(OutputFormat::Jsonl, Task::Embedding, &bytes).map_err(anyhow::Error::msg)?
        {
            if let Ok(Prediction::Embedding(v)) = r.result {
                out.insert(r.line, v);
            }
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    rt: &'a tokio::runtime::Runtime,
    corpus: String,
    scratch: &'a Path,
    tokenizer: Arc<TextTokenizer>,
    threads: usize,
    a: &'a BenchArgs,
    runs: usize,
}

impl Ctx<'_> {
    fn run(
        &mut self,
        model: &str,
        batch: usize,
        target: Option<Duration>,
    ) -> anyhow::Result<(RunReport, BTreeMap<u64, Vec<f32>>)> {
        self.runs += 1;
        let out = self.scratch.join(format!("run-{}", self.runs));
        let cfg = RunConfig {
            input: self.corpus.clone(),
            output: out.display().to_string(),
            format: OutputFormat::Jsonl,
            task: Task::Embedding,
            labels: Vec::new(),
            fields: Fields {
                text: "text".into(),
                id: None,
            },
            shard: Shard { index: 0, count: 1 },
            max_batch_size: batch,
            max_batch_tokens: self.a.batch.max_batch_tokens as usize,
            max_delay: Duration::from_millis(self.a.batch.max_delay_ms),
            target_p99: target,
            checkpoint_every_items: u64::MAX,
            checkpoint_every: Duration::from_secs(3600),
            max_failed_items: 0,
        };
        let (m, _) = load_model(Path::new(model), self.a.model.device, self.threads)?;
        let report = crate::pipeline::run(
            &cfg,
            m,
            self.tokenizer.clone(),
            self.rt.handle(),
            Arc::new(Telemetry::new()),
        )?;
        let vectors = read_vectors(&out.join(replica_dir(0)))?;
        Ok((report, vectors))
    }
}

fn worker_row(name: String, r: &RunReport) -> Row {
    let mut lat: Vec<Duration> = r.batches.iter().map(|b| b.latency).collect();
    lat.sort();
    let cells: usize = r.batches.iter().map(|b| b.rows * b.seq_len).sum();
    let real: usize = r.batches.iter().map(|b| b.real_tokens).sum();
    let rows: usize = r.batches.iter().map(|b| b.rows).sum();
    Row {
        name,
        items_per_second: r.items_processed as f64 / r.wall.as_secs_f64().max(1e-9),
        p50: Some(percentile(&lat, 0.5)),
        p99: Some(percentile(&lat, 0.99)),
        mean_batch: Some(rows as f64 / r.batches.len().max(1) as f64),
        padding: Some(if cells == 0 {
            0.0
        } else {
            1.0 - real as f64 / cells as f64
        }),
        worst_cosine: None,
    }
}

/// `autoglm-worker bench`.
///
/// # Errors
/// When a run or the reference fails.
pub fn cmd_bench(a: &BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let threads = resolve_threads(a.model.threads);
    let scratch = std::env::temp_dir().join(format!("autoglm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // The corpus head: the first --limit non-blank lines, renumbered from line 1.
    let text =
        std::fs::read_to_string(&a.input).with_context(|| format!("failed to read {}", a.input))?;
    let mut head = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(a.limit) {
        let v: serde_json::Value = serde_json::from_str(line).context("corpus line is not JSON")?;
        let t = v[&a.text_field]
            .as_str()
            .context("corpus line without the text field")?;
        head.push_str(&serde_json::json!({ "text": t }).to_string());
        head.push('\n');
    }
    let corpus = scratch.join("corpus.jsonl");
    std::fs::write(&corpus, head)?;
    let items = a.limit.min(text.lines().count());
    let tokenizer = Arc::new(load_tokenizer(Path::new(&a.model.tokenizer))?);
    let mut ctx = Ctx {
        rt: &rt,
        corpus: corpus.display().to_string(),
        scratch: &scratch,
        tokenizer,
        threads,
        a,
        runs: 0,
    };
    let max = a.batch.max_batch_size as usize;
    let target = (a.batch.target_p99_ms > 0).then(|| Duration::from_millis(a.batch.target_p99_ms));
    eprintln!(
        "bench: {items} items, {threads} intra-op threads, device {:?}",
        a.model.device
    );
    ctx.run(&a.model.model, 16, None)?; // warm-up
    let mut rows = Vec::new();
    let (adaptive, reference) = ctx.run(&a.model.model, max, target)?;
    let mut row = worker_row(
        format!(
            "worker fp32, adaptive (max {max}, target {} ms)",
            a.batch.target_p99_ms
        ),
        &adaptive,
    );
    row.worst_cosine = Some(1.0);
    rows.push(row);
    let mut best_fixed: Option<(usize, f64)> = None;
    for &b in &a.sweep {
        let (r, v) = ctx.run(&a.model.model, b, None)?;
        let mut row = worker_row(format!("worker fp32, fixed batch {b}"), &r);
        row.worst_cosine = Some(worst_cosine(&reference, &v));
        if best_fixed.is_none_or(|(_, s)| row.items_per_second > s) {
            best_fixed = Some((b, row.items_per_second));
        }
        rows.push(row);
    }
    let mut bf16_speedup = None;
    if let Some(bf16) = &a.model_bf16 {
        let (r, v) = ctx.run(bf16, max, target)?;
        let mut row = worker_row(format!("worker bf16, adaptive (max {max})"), &r);
        row.worst_cosine = Some(worst_cosine(&reference, &v));
        bf16_speedup = Some((
            row.items_per_second / rows[0].items_per_second,
            row.worst_cosine.unwrap_or(0.0),
        ));
        rows.push(row);
    }
    let mut st_ratio = None;
    if let (false, Some(st_model)) = (a.python.is_empty(), &a.st_model) {
        let st_out = scratch.join("st.jsonl");
        let out = Process::new(&a.python)
            .arg(&a.st_script)
            .args(["--model", st_model, "--input"])
            .arg(&corpus)
            .args([
                "--threads",
                &threads.to_string(),
                "--batch-size",
                &a.st_batch_size.to_string(),
            ])
            .args(["--device", &a.st_device, "--out"])
            .arg(&st_out)
            .output()
            .with_context(|| format!("failed to run {} {}", a.python, a.st_script.display()))?;
        if !out.status.success() {
            bail!(
                "sentence-transformers reference failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("reference printed no JSON summary")?;
        let st_vectors = read_st(&st_out)?;
        let ips = summary["itemsPerSecond"].as_f64().unwrap_or(0.0);
        st_ratio = Some(rows[0].items_per_second / ips.max(1e-9));
        rows.push(Row {
            name: format!("sentence-transformers encode (batch {})", a.st_batch_size),
            items_per_second: ips,
            p50: None,
            p99: None,
            mean_batch: None,
            padding: None,
            worst_cosine: Some(worst_cosine(&reference, &st_vectors)),
        });
    }
    print_table(&rows);
    if let Some(r) = st_ratio {
        println!("\nworker adaptive / sentence-transformers: {r:.2}x");
    }
    if let Some((b, s)) = best_fixed {
        println!(
            "worker adaptive / best fixed batch ({b}, {s:.0} items/s): {:.0}%",
            100.0 * rows[0].items_per_second / s
        );
    }
    if let Some((x, c)) = bf16_speedup {
        println!("bf16 speed-up over fp32 (adaptive): {x:.2}x, worst cosine vs fp32 {c:.6}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn read_st(path: &Path) -> anyhow::Result<BTreeMap<u64, Vec<f32>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let l = v["line"]
            .as_u64()
            .context("reference line without `line`")?;
        let e = v["embedding"]
            .as_array()
            .context("reference line without `embedding`")?
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .map(|x| x as f32)
            .collect();
        out.insert(l, e);
    }
    Ok(out)
}

fn print_table(rows: &[Row]) {
    let ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
    println!(
        "| run | items/s | p50 batch ms | p99 batch ms | mean batch | padding | worst cosine vs fp32 adaptive |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} |",
            r.name,
            r.items_per_second,
            ms(r.p50),
            ms(r.p99),
            r.mean_batch.map_or("-".into(), |m| format!("{m:.1}")),
            r.padding
                .map_or("-".into(), |p| format!("{:.1}%", p * 100.0)),
            r.worst_cosine.map_or("-".into(), |c| format!("{c:.6}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-12);
        // (1,1)·(1,0) / (sqrt2 * 1) = 0.70710678
        assert!((cosine(&[1.0, 1.0], &[1.0, 0.0]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        let a = BTreeMap::from([(1, vec![1.0, 0.0]), (2, vec![1.0, 1.0])]);
        let b = BTreeMap::from([(1, vec![2.0, 0.0]), (2, vec![1.0, 0.0])]);
        assert!((worst_cosine(&a, &b) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
    }
}
