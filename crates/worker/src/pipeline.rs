//! The run: reader -> tokenizer -> model thread (dynamic batching) -> writer (checkpoints).
//!
//! ```text
//! tokio task        std thread          std thread (the model's own)     calling thread
//! read_shard  --->  tokenize    --->    windows, batches, infer   --->   reorder, parts,
//!   (mpsc, 1024)      (sync_channel,       (sync_channel, 8 msgs)         checkpoints,
//!                      2 windows)                                         manifest
//! ```
//! Every channel is bounded, so a slow stage back-pressures the ones before it and reading,
//! tokenizing and writing overlap with compute. The model never runs on a tokio worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use autoglm_api::WorkerState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::mpsc;

use crate::batching::{AdaptiveBatchSize, padding_ratio, plan_batches, window_len};
use crate::checkpoint::{self, Checkpoint, CheckpointError, Identity};
use crate::input::{Fields, InputError, RawItem, Shard, count_shard, read_shard};
use crate::model::{Model, ModelError, ModelInput, Prediction, Task};
use crate::output::{EncodeError, OutputFormat, OutputRecord, encode_part};
use crate::store::{OutputDir, StoreError};
use crate::telemetry::Telemetry;
use crate::tokenize::TextTokenizer;

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Input JSONL URI.
    pub input: String,
    /// Output URI (the replica writes under `<output>/replica-<i>/`).
    pub output: String,
    /// Part file format.
    pub format: OutputFormat,
    /// What to compute.
    pub task: Task,
    /// Class labels for `classification` (index order); empty: the index is the label.
    pub labels: Vec<String>,
    /// JSON fields to read.
    pub fields: Fields,
    /// This replica's shard.
    pub shard: Shard,
    /// Rows per batch, at most.
    pub max_batch_size: usize,
    /// `rows x longest row` tokens per batch, at most (a longer single item runs alone).
    pub max_batch_tokens: usize,
    /// How long the first item of a window may wait for the window to fill.
    pub max_delay: Duration,
    /// Per-batch latency target for the adaptive batch size; `None`: fixed at the maximum.
    pub target_p99: Option<Duration>,
    /// Commit a part once this many items are ready (at the next window end).
    pub checkpoint_every_items: u64,
    /// ... or once this long has passed since the last commit.
    pub checkpoint_every: Duration,
    /// Failed items allowed in the shard before the replica fails.
    pub max_failed_items: u64,
}

/// One model call, for the bench.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchStat {
    /// Rows.
    pub rows: usize,
    /// Longest row (tokens).
    pub seq_len: usize,
    /// Real tokens.
    pub real_tokens: usize,
    /// Wall time of the model call.
    pub latency: Duration,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Items in the shard.
    pub items_total: u64,
    /// Items given a result by this process.
    pub items_processed: u64,
    /// Failed items in the shard (committed ones included).
    pub items_failed: u64,
    /// Where this process started (the checkpoint's next item).
    pub resumed_from: u64,
    /// Files the resume deleted.
    pub removed: Vec<String>,
    /// The manifest already existed: nothing was done.
    pub already_finished: bool,
    /// Wall time from the first item read to the manifest.
    pub wall: Duration,
    /// Every model call.
    pub batches: Vec<BatchStat>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the input failed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Opening the output failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Checkpoint trouble (including a refused checkpoint).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Encoding a part failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// More items failed than `--max-failed-items` allows.
    #[error(
        "failed to process the shard: {failed} items failed, more than --max-failed-items {max} (the last: {last})"
    )]
    TooManyFailures {
        /// Failed items so far.
        failed: u64,
        /// The bound.
        max: u64,
        /// The last failure's message.
        last: String,
    },
    /// A stage stopped without saying why (a panic or a dropped channel).
    #[error("failed to run the pipeline: the {stage} stage stopped unexpectedly")]
    Stage {
        /// The stage.
        stage: &'static str,
    },
}

struct TokItem {
    seq: u64,
    line: u64,
    id: Option<String>,
    ids: Vec<i64>,
}

enum ModelMsg {
    Item(TokItem),
    Failed(u64, OutputRecord),
    End,
}

enum WriterMsg {
    Records(Vec<(u64, OutputRecord)>),
    WindowDone(u64),
    End,
}

/// The replica folder's name.
#[must_use]
pub fn replica_dir(index: u32) -> String {
    format!("replica-{index}")
}

/// Runs the replica to the end (or to an error), blocking the calling thread; `handle` runs
/// the input reader and remote storage calls.
///
/// # Errors
/// [`PipelineError`]; a refused checkpoint is [`PipelineError::Checkpoint`] and deletes
/// nothing.
pub fn run(
    cfg: &RunConfig,
    mut model: Box<dyn Model>,
    tokenizer: Arc<TextTokenizer>,
    handle: &tokio::runtime::Handle,
    telemetry: Arc<Telemetry>,
) -> Result<RunReport, PipelineError> {
    let dir = OutputDir::open(&cfg.output, &replica_dir(cfg.shard.index), handle.clone())?;
    let identity = Identity {
        replica_index: cfg.shard.index,
        replicas: cfg.shard.count,
        output_format: cfg.format.ext().to_string(),
    };
    let resumed = checkpoint::resume(&dir, &identity)?;
    if !resumed.removed.is_empty() {
        tracing::info!(removed = ?resumed.removed, "removed files no checkpoint names");
    }
    let mut cp = resumed
        .checkpoint
        .unwrap_or_else(|| checkpoint::empty(identity));
    let mut report = RunReport {
        resumed_from: cp.next_item,
        removed: resumed.removed,
        items_failed: cp.items_failed,
        ..RunReport::default()
    };
    if resumed.finished {
        report.already_finished = true;
        report.items_total = cp.next_item;
        telemetry.update(true, |p| {
            p.items_done = cp.next_item;
            p.items_total = Some(cp.next_item);
            p.items_failed = cp.items_failed;
            p.state = WorkerState::Succeeded;
        });
        return Ok(report);
    }
    tracing::info!(next_item = cp.next_item, parts = cp.parts.len(), "starting");
    telemetry.update(true, |p| {
        p.items_done = cp.next_item;
        p.items_failed = cp.items_failed;
        p.state = WorkerState::Running;
    });
    let started = Instant::now();
    // Count the shard beside the pipeline so `itemsTotal` is known early (the reader, held
    // back by the bounded channels, only reaches the end near the finish).
    // It reads the input a second time (cheap next to inference: tokenizing and the model
    // cost far more per line than streaming it), and is aborted on every way out of here.
    let _counter = AbortOnDrop({
        let (input, shard, telemetry) = (cfg.input.clone(), cfg.shard, telemetry.clone());
        handle.spawn(async move {
            match count_shard(&input, shard).await {
                Ok(n) => telemetry.update(false, |p| {
                    p.items_total.get_or_insert(n);
                }),
                Err(e) => tracing::debug!(error = %e, "could not count the shard"),
            }
        })
    });

    let wl = window_len(cfg.max_batch_size);
    let (raw_tx, raw_rx) = mpsc::channel::<RawItem>(1024);
    let (tok_tx, tok_rx) = sync_channel::<ModelMsg>(2 * wl);
    let (out_tx, out_rx) = sync_channel::<WriterMsg>(8);

    let reader = {
        let (input, shard, skip, fields) = (
            cfg.input.clone(),
            cfg.shard,
            cp.next_item,
            cfg.fields.clone(),
        );
        handle.spawn(async move { read_shard(&input, shard, skip, &fields, raw_tx).await })
    };
    let pad_id = tokenizer.pad_id();
    let tokenizer_thread = std::thread::Builder::new()
        .name("tokenize".into())
        .spawn(move || tokenize_loop(raw_rx, &tok_tx, &tokenizer))
        .map_err(|_| PipelineError::Stage { stage: "tokenizer" })?;
    let model_thread = {
        let (cfg, telemetry) = (cfg.clone(), telemetry.clone());
        std::thread::Builder::new()
            .name("model".into())
            .spawn(move || model_loop(&cfg, model.as_mut(), pad_id, tok_rx, &out_tx, &telemetry))
            .map_err(|_| PipelineError::Stage { stage: "model" })?
    };

    let written = write_loop(cfg, &dir, &mut cp, out_rx, &telemetry, started);
    // Stop the upstream stages if the writer failed, then collect their results.
    let model_result = model_thread
        .join()
        .map_err(|_| PipelineError::Stage { stage: "model" })?;
    let _ = tokenizer_thread.join();
    let total = handle
        .block_on(reader)
        .map_err(|_| PipelineError::Stage { stage: "reader" })?;
    let total = match (written, model_result, total) {
        // A stage that stopped because its neighbour did: report the neighbour's error.
        (Err(PipelineError::Stage { .. }), Err(e), _) | (Err(e), _, _) | (_, Err(e), _) => {
            return Err(e);
        }
        (_, _, Err(e)) => return Err(e.into()),
        (Ok(w), Ok(batches), Ok(total)) => {
            report.items_processed = w.processed;
            report.batches = batches;
            total
        }
    };
    if cp.next_item != total {
        // Cannot happen while every stage ran to its end; refuse to write a manifest.
        return Err(PipelineError::Stage { stage: "writer" });
    }
    checkpoint::write_manifest(&dir, &cp)?;
    report.items_total = total;
    report.items_failed = cp.items_failed;
    report.wall = started.elapsed();
    let rate = report.items_processed as f64 / report.wall.as_secs_f64().max(1e-9);
    telemetry.metrics.items_per_second.set(rate);
    telemetry.update(true, |p| {
        p.items_done = total;
        p.items_total = Some(total);
        p.items_failed = cp.items_failed;
        p.items_per_second = rate;
        p.state = WorkerState::Succeeded;
    });
    tracing::info!(
        items = total,
        failed = cp.items_failed,
        parts = cp.parts.len(),
        "replica complete"
    );
    Ok(report)
}

/// Aborts a background task when dropped (on success and on every early return).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A checkpoint's RFC 3339 time as the API's `Time`; `None` if it does not parse.
#[must_use]
pub fn checkpoint_time(rfc3339: &str) -> Option<Time> {
    rfc3339.parse().ok().map(Time)
}

/// Tokenizes on its own thread; failed lines pass through as error records.
fn tokenize_loop(mut rx: mpsc::Receiver<RawItem>, tx: &SyncSender<ModelMsg>, tok: &TextTokenizer) {
    while let Some(item) = rx.blocking_recv() {
        let msg = match item.text.and_then(|t| {
            tok.encode(&t)
                .map_err(|e| format!("line {}: {e}", item.line))
        }) {
            Ok(ids) => ModelMsg::Item(TokItem {
                seq: item.seq,
                line: item.line,
                id: item.id,
                ids,
            }),
            Err(e) => ModelMsg::Failed(
                item.seq,
                OutputRecord {
                    line: item.line,
                    id: item.id,
                    result: Err(e),
                },
            ),
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
    let _ = tx.send(ModelMsg::End);
}

/// Runs on the model's own thread: gathers windows, cuts batches, runs them, adapts.
fn model_loop(
    cfg: &RunConfig,
    model: &mut dyn Model,
    pad_id: i64,
    rx: Receiver<ModelMsg>,
    tx: &SyncSender<WriterMsg>,
    telemetry: &Telemetry,
) -> Result<Vec<BatchStat>, PipelineError> {
    model.on_thread_start();
    let wl = window_len(cfg.max_batch_size);
    let mut controller = AdaptiveBatchSize::new(cfg.max_batch_size, cfg.target_p99);
    let mut window: Vec<TokItem> = Vec::with_capacity(wl);
    let mut deadline: Option<Instant> = None;
    let mut stats = Vec::new();
    let gone = || PipelineError::Stage { stage: "writer" };
    loop {
        let msg = match deadline {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(PipelineError::Stage { stage: "tokenizer" });
                }
            },
            None => Some(
                rx.recv()
                    .map_err(|_| PipelineError::Stage { stage: "tokenizer" })?,
            ),
        };
        let end = match msg {
            Some(ModelMsg::Item(item)) => {
                if window.is_empty() {
                    deadline = Some(Instant::now() + cfg.max_delay);
                }
                window.push(item);
                if window.len() < wl {
                    continue;
                }
                false
            }
            Some(ModelMsg::Failed(seq, rec)) => {
                tx.send(WriterMsg::Records(vec![(seq, rec)]))
                    .map_err(|_| gone())?;
                continue;
            }
            Some(ModelMsg::End) => true,
            None => false,
        };
        if !window.is_empty() {
            let last_seq = window.last().map_or(0, |i| i.seq);
            run_window(
                cfg,
                model,
                pad_id,
                &mut window,
                &mut controller,
                tx,
                telemetry,
                &mut stats,
            )?;
            tx.send(WriterMsg::WindowDone(last_seq + 1))
                .map_err(|_| gone())?;
        }
        deadline = None;
        if end {
            tx.send(WriterMsg::End).map_err(|_| gone())?;
            return Ok(stats);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_window(
    cfg: &RunConfig,
    model: &mut dyn Model,
    pad_id: i64,
    window: &mut Vec<TokItem>,
    controller: &mut AdaptiveBatchSize,
    tx: &SyncSender<WriterMsg>,
    telemetry: &Telemetry,
    stats: &mut Vec<BatchStat>,
) -> Result<(), PipelineError> {
    let lengths: Vec<usize> = window.iter().map(|i| i.ids.len()).collect();
    let size = controller.size();
    let plan = plan_batches(&lengths, size, cfg.max_batch_tokens);
    for batch in plan {
        let rows: Vec<&[i64]> = batch.iter().map(|&i| window[i].ids.as_slice()).collect();
        let input = ModelInput::pad(&rows, pad_id);
        let t0 = Instant::now();
        let out = infer_splitting(model, &rows, &input, pad_id)?;
        let latency = t0.elapsed();
        controller.observe(batch.len(), latency, batch.len() == size);
        let m = &telemetry.metrics;
        m.batch_size.observe(batch.len() as f64);
        m.batch_latency_seconds.observe(latency.as_secs_f64());
        let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        m.padding_ratio.observe(padding_ratio(&lens));
        m.target_batch_size.set(controller.size() as i64);
        stats.push(BatchStat {
            rows: batch.len(),
            seq_len: input.seq_len,
            real_tokens: input.real_tokens(),
            latency,
        });
        let records = batch
            .iter()
            .enumerate()
            .map(|(r, &i)| {
                let item = &window[i];
                (
                    item.seq,
                    OutputRecord {
                        line: item.line,
                        id: item.id.clone(),
                        result: Ok(Prediction::from_row(cfg.task, &out[r], &cfg.labels)),
                    },
                )
            })
            .collect();
        tx.send(WriterMsg::Records(records))
            .map_err(|_| PipelineError::Stage { stage: "writer" })?;
    }
    window.clear();
    Ok(())
}

/// Runs a batch; on device out-of-memory, splits it in halves and retries (down to one row).
fn infer_splitting(
    model: &mut dyn Model,
    rows: &[&[i64]],
    input: &ModelInput,
    pad_id: i64,
) -> Result<Vec<Vec<f32>>, ModelError> {
    match model.infer(input) {
        Ok(out) => {
            if out.values.len() != input.batch * out.dim {
                return Err(ModelError::OutputShape {
                    batch: input.batch,
                    shape: vec![(out.values.len() / out.dim.max(1)) as i64, out.dim as i64],
                });
            }
            Ok((0..input.batch).map(|r| out.row(r).to_vec()).collect())
        }
        Err(ModelError::OutOfMemory { .. }) if rows.len() > 1 => {
            tracing::warn!(
                rows = rows.len(),
                "out of device memory; splitting the batch"
            );
            let (a, b) = rows.split_at(rows.len() / 2);
            let mut out = infer_splitting(model, a, &ModelInput::pad(a, pad_id), pad_id)?;
            out.extend(infer_splitting(
                model,
                b,
                &ModelInput::pad(b, pad_id),
                pad_id,
            )?);
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

struct Written {
    processed: u64,
}

/// Reorders results into shard order and commits parts at window ends.
fn write_loop(
    cfg: &RunConfig,
    dir: &OutputDir,
    cp: &mut Checkpoint,
    rx: Receiver<WriterMsg>,
    telemetry: &Telemetry,
    started: Instant,
) -> Result<Written, PipelineError> {
    let start = cp.next_item;
    let mut pending: BTreeMap<u64, OutputRecord> = BTreeMap::new();
    let mut ready: Vec<OutputRecord> = Vec::new();
    let mut next_expected = cp.next_item;
    let mut failed_total = cp.items_failed;
    let mut last_commit = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let msg = rx
            .recv()
            .map_err(|_| PipelineError::Stage { stage: "model" })?;
        let (boundary, end) = match msg {
            WriterMsg::Records(recs) => {
                for (seq, rec) in recs {
                    if let Err(e) = &rec.result {
                        failed_total += 1;
                        telemetry.metrics.items_failed.inc();
                        if failed_total > cfg.max_failed_items {
                            return Err(PipelineError::TooManyFailures {
                                failed: failed_total,
                                max: cfg.max_failed_items,
                                last: e.clone(),
                            });
                        }
                    }
                    telemetry.metrics.items.inc();
                    pending.insert(seq, rec);
                }
                while let Some(rec) = pending.remove(&next_expected) {
                    ready.push(rec);
                    next_expected += 1;
                }
                if last_report.elapsed() >= Duration::from_millis(500) {
                    last_report = Instant::now();
                    let rate =
                        (next_expected - start) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    telemetry.metrics.items_per_second.set(rate);
                    telemetry.update(false, |p| {
                        p.items_failed = failed_total;
                        p.items_per_second = rate;
                    });
                }
                continue;
            }
            WriterMsg::WindowDone(b) => (b, false),
            WriterMsg::End => (next_expected, true),
        };
        // Every record below `boundary` has arrived (the model thread sends them first).
        let committable = boundary.min(next_expected).saturating_sub(cp.next_item) as usize;
        let due = committable as u64 >= cfg.checkpoint_every_items.max(1)
            || last_commit.elapsed() >= cfg.checkpoint_every
            || end;
        if committable > 0 && due {
            let part: Vec<OutputRecord> = ready.drain(..committable).collect();
            let failed = part.iter().filter(|r| r.result.is_err()).count() as u64;
            let bytes = encode_part(cfg.format, cfg.task, &part)?;
            checkpoint::commit_part(dir, cp, cfg.format.ext(), &bytes, part.len() as u64, failed)?;
            last_commit = Instant::now();
            telemetry.metrics.checkpoints.inc();
            let rate = (next_expected - start) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let (done, time) = (cp.next_item, cp.updated_at.clone());
            telemetry.update(true, |p| {
                p.items_done = done;
                p.items_failed = failed_total;
                p.items_per_second = rate;
                p.last_checkpoint_time = checkpoint_time(&time);
            });
            tracing::debug!(next_item = cp.next_item, "checkpoint");
        }
        if end {
            if !pending.is_empty() {
                return Err(PipelineError::Stage { stage: "model" });
            }
            return Ok(Written {
                processed: next_expected - start,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FakeModel;
    use crate::output::decode_part;
    use std::collections::BTreeSet;

    fn tokenizer() -> Arc<TextTokenizer> {
        Arc::new(
            TextTokenizer::from_bytes(crate::tokenize::tests::TINY.as_bytes(), "tiny").unwrap(),
        )
    }

    fn config(input: &str, output: &str, shard: Shard) -> RunConfig {
        RunConfig {
            input: input.into(),
            output: output.into(),
            format: OutputFormat::Jsonl,
            task: Task::Embedding,
            labels: Vec::new(),
            fields: Fields {
                text: "text".into(),
                id: None,
            },
            shard,
            max_batch_size: 4,
            max_batch_tokens: 1000,
            max_delay: Duration::from_secs(60),
            target_p99: None,
            checkpoint_every_items: 10,
            checkpoint_every: Duration::from_secs(3600),
            max_failed_items: 5,
        }
    }

    /// 40 lines; lines 7 and 23 are bad.
    fn corpus(dir: &std::path::Path) -> String {
        let words = ["hello", "world", "big", "zzz"];
        let mut s = String::new();
        for n in 1..=40 {
            match n {
                7 => s.push_str("{not json\n"),
                23 => s.push_str("{\"title\": \"no text\"}\n"),
                _ => {
                    let text: Vec<&str> = (0..(n % 5 + 1)).map(|k| words[(n + k) % 4]).collect();
                    s.push_str(&serde_json::json!({ "text": text.join(" ") }).to_string());
                    s.push('\n');
                }
            }
        }
        let p = dir.join("in.jsonl");
        std::fs::write(&p, s).unwrap();
        p.display().to_string()
    }

    /// Runs `cfg` with an 8-wide [`FakeModel`], the test tokenizer and fresh telemetry.
    fn run_fake(cfg: &RunConfig, rt: &tokio::runtime::Runtime) -> Result<RunReport, PipelineError> {
        run(
            cfg,
            Box::new(FakeModel::new(8)),
            tokenizer(),
            rt.handle(),
            Arc::new(Telemetry::new()),
        )
    }

    fn read_records(dir: &std::path::Path) -> Vec<OutputRecord> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("part-"))
            .collect();
        names.sort();
        names
            .iter()
            .flat_map(|n| {
                decode_part(
                    OutputFormat::Jsonl,
                    Task::Embedding,
                    &std::fs::read(dir.join(n)).unwrap(),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn three_replicas_cover_every_line_once_with_errors_recorded() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let input = corpus(tmp.path());
        let out = tmp.path().join("out");
        let mut lines = Vec::new();
        for i in 0..3 {
            let cfg = config(&input, out.to_str().unwrap(), Shard { index: i, count: 3 });
            let report = run_fake(&cfg, &rt).unwrap();
            // shard sizes for 40 lines over 3 replicas: 14, 13, 13
            assert_eq!(report.items_total, [14, 13, 13][i as usize]);
            let recs = read_records(&out.join(replica_dir(i)));
            // in shard order within the replica
            assert!(recs.windows(2).all(|w| w[0].line < w[1].line));
            for r in &recs {
                assert_eq!((r.line - 1) % 3, u64::from(i));
                match r.line {
                    7 => assert!(
                        r.result
                            .as_ref()
                            .unwrap_err()
                            .starts_with("line 7: not valid JSON")
                    ),
                    23 => assert_eq!(r.result, Err("line 23: field `text` is missing".into())),
                    _ => assert!(r.result.is_ok()),
                }
            }
            lines.extend(recs.iter().map(|r| r.line));
            assert!(out.join(replica_dir(i)).join("manifest.json").exists());
        }
        lines.sort_unstable();
        assert_eq!(lines, (1..=40).collect::<Vec<u64>>());
    }

    #[test]
    fn vectors_do_not_depend_on_batching() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let input = corpus(tmp.path());
        let mut results = Vec::new();
        for (k, (size, target)) in [(1, None), (4, None), (16, Some(Duration::from_millis(50)))]
            .into_iter()
            .enumerate()
        {
            let out = tmp.path().join(format!("out{k}"));
            let mut cfg = config(&input, out.to_str().unwrap(), Shard { index: 0, count: 1 });
            cfg.max_batch_size = size;
            cfg.target_p99 = target;
            run_fake(&cfg, &rt).unwrap();
            results.push(read_records(&out.join(replica_dir(0))));
        }
        assert_eq!(results[0].len(), 40);
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
        // line 1 is {"text": "world big"} -> [CLS] world big [SEP] = [1, 5, 6, 2]
        assert_eq!(
            results[0][0].result,
            Ok(Prediction::Embedding(FakeModel::expected_row(
                8,
                &[1, 5, 6, 2]
            )))
        );
    }

    #[test]
    fn too_many_failures_fail_the_replica_with_a_clear_error() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let input = corpus(tmp.path());
        let out = tmp.path().join("out");
        let mut cfg = config(&input, out.to_str().unwrap(), Shard { index: 0, count: 1 });
        cfg.max_failed_items = 1;
        let err = run_fake(&cfg, &rt).unwrap_err().to_string();
        assert_eq!(
            err,
            "failed to process the shard: 2 items failed, more than --max-failed-items 1 (the last: line 23: field `text` is missing)"
        );
    }

    #[test]
    fn resume_skips_committed_items_and_out_of_memory_splits() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let input = corpus(tmp.path());
        let out = tmp.path().join("out");
        let cfg = config(&input, out.to_str().unwrap(), Shard { index: 0, count: 1 });
        run_fake(&cfg, &rt).unwrap();
        let full = read_records(&out.join(replica_dir(0)));
        // Pretend the run died after its first part: keep part 0 and a checkpoint naming it.
        let dir =
            OutputDir::open(out.to_str().unwrap(), &replica_dir(0), rt.handle().clone()).unwrap();
        let bytes = std::fs::read(out.join("replica-0/checkpoint.json")).unwrap();
        let mut cp = checkpoint::decode(&bytes, "cp").unwrap();
        let first = cp.parts[0].clone();
        cp.parts.truncate(1);
        cp.next_item = first.items;
        cp.items_failed = 1; // line 7 is in the first part
        dir.put_atomic(
            checkpoint::CHECKPOINT_FILE,
            &checkpoint::encode(&cp).unwrap(),
        )
        .unwrap();
        dir.delete(checkpoint::MANIFEST_FILE).unwrap();
        let mut model = FakeModel::new(8);
        model.oom_above_rows = Some(2);
        let report = run(
            &cfg,
            Box::new(model),
            tokenizer(),
            rt.handle(),
            Arc::new(Telemetry::new()),
        )
        .unwrap();
        assert_eq!(report.resumed_from, first.items);
        assert_eq!(report.items_processed, 40 - first.items);
        assert!(!report.removed.is_empty());
        assert_eq!(read_records(&out.join(replica_dir(0))), full);
        let names: BTreeSet<String> = std::fs::read_dir(out.join("replica-0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")));
    }
}
