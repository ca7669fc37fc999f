//! The model runtime seam: a trait the pipeline drives, so batching and checkpointing are
//! tested with [`FakeModel`] and run for real with the libtorch implementation
//! ([`crate::torch::TorchModel`], feature `libtorch`).

use std::fmt;

/// One padded batch as the model sees it: row-major `[batch, seq_len]` tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInput {
    /// Rows (items) in the batch.
    pub batch: usize,
    /// Columns: the longest item's token count; shorter rows are right-padded.
    pub seq_len: usize,
    /// Token ids, `batch * seq_len` values, padding with the tokenizer's pad id.
    pub input_ids: Vec<i64>,
    /// 1 for a real token, 0 for padding, `batch * seq_len` values.
    pub attention_mask: Vec<i64>,
}

impl ModelInput {
    /// Pads `rows` (token ids per item) to the longest row with `pad_id`.
    #[must_use]
    pub fn pad(rows: &[&[i64]], pad_id: i64) -> Self {
        let seq_len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(rows.len() * seq_len);
        let mut attention_mask = Vec::with_capacity(rows.len() * seq_len);
        for row in rows {
            input_ids.extend_from_slice(row);
            attention_mask.extend(std::iter::repeat_n(1, row.len()));
            input_ids.extend(std::iter::repeat_n(pad_id, seq_len - row.len()));
            attention_mask.extend(std::iter::repeat_n(0, seq_len - row.len()));
        }
        Self {
            batch: rows.len(),
            seq_len,
            input_ids,
            attention_mask,
        }
    }

    /// Real (unpadded) tokens in the batch.
    #[must_use]
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }

    /// Padded positions: `batch * seq_len - real_tokens`.
    #[must_use]
    pub fn padded_tokens(&self) -> usize {
        self.batch * self.seq_len - self.real_tokens()
    }
}

/// The model's output for one batch: a row-major `[batch, dim]` f32 matrix (an embedding or
/// the class logits per item).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutput {
    /// Columns per row.
    pub dim: usize,
    /// `batch * dim` values.
    pub values: Vec<f32>,
}

impl ModelOutput {
    /// The row of item `i`.
    #[must_use]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

/// Why a model call failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The runtime rejected the batch or failed while running it.
    #[error("failed to run the model on a batch of {batch}x{seq_len}: {message}")]
    Forward {
        /// Rows in the batch.
        batch: usize,
        /// Columns in the batch.
        seq_len: usize,
        /// The runtime's message.
        message: String,
    },
    /// The device ran out of memory (the pipeline halves the batch and retries).
    #[error("failed to run the model on a batch of {batch}x{seq_len}: out of device memory")]
    OutOfMemory {
        /// Rows in the batch.
        batch: usize,
        /// Columns in the batch.
        seq_len: usize,
    },
    /// The output did not have one row per item.
    #[error("failed to read the model output: expected shape [{batch}, D], got {shape:?}")]
    OutputShape {
        /// Rows expected.
        batch: usize,
        /// What the model returned.
        shape: Vec<i64>,
    },
}

/// A model runtime: runs one padded batch, on whatever device it was loaded on.
///
/// Implementations are driven from one dedicated thread (never a tokio worker), so `&mut self`.
pub trait Model: Send {
    /// Runs `input` and returns one output row per input row.
    ///
    /// # Errors
    /// [`ModelError`] when the runtime fails; [`ModelError::OutOfMemory`] on device OOM.
    fn infer(&mut self, input: &ModelInput) -> Result<ModelOutput, ModelError>;

    /// Called once on the model thread before the first batch (libtorch re-applies its
    /// intra-op thread count there: OpenMP settings are per thread).
    fn on_thread_start(&mut self) {}

    /// A short description for logs (`"TorchScript model.pt on cpu, 2 threads"`).
    fn describe(&self) -> String;
}

/// A deterministic stand-in for tests: the embedding of an item is a function of its own
/// tokens only (so batch composition never changes a row), L2-normalised, `dim` wide:
/// `v[j] = sum over tokens t at position p of ((t * 31 + p * 7 + j * 13) mod 101) - 50`.
#[derive(Debug, Clone)]
pub struct FakeModel {
    /// Output width.
    pub dim: usize,
    /// Batches run so far.
    pub calls: usize,
    /// Fail with [`ModelError::OutOfMemory`] on batches with more rows than this.
    pub oom_above_rows: Option<usize>,
}

impl FakeModel {
    /// A fake model with `dim` outputs.
    #[must_use]
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            calls: 0,
            oom_above_rows: None,
        }
    }

    /// The row [`FakeModel`] computes for `tokens` (for tests to compare against).
    #[must_use]
    pub fn expected_row(dim: usize, tokens: &[i64]) -> Vec<f32> {
        let mut v = vec![0f32; dim];
        for (p, &t) in tokens.iter().enumerate() {
            for (j, x) in v.iter_mut().enumerate() {
                let h = (t * 31 + p as i64 * 7 + j as i64 * 13).rem_euclid(101) - 50;
                *x += h as f32;
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Model for FakeModel {
    fn infer(&mut self, input: &ModelInput) -> Result<ModelOutput, ModelError> {
        self.calls += 1;
        if self.oom_above_rows.is_some_and(|max| input.batch > max) {
            return Err(ModelError::OutOfMemory {
                batch: input.batch,
                seq_len: input.seq_len,
            });
        }
        let mut values = Vec::with_capacity(input.batch * self.dim);
        for r in 0..input.batch {
            let row = &input.input_ids[r * input.seq_len..(r + 1) * input.seq_len];
            let mask = &input.attention_mask[r * input.seq_len..(r + 1) * input.seq_len];
            let real: Vec<i64> = row
                .iter()
                .zip(mask)
                .filter(|(_, m)| **m != 0)
                .map(|(t, _)| *t)
                .collect();
            values.extend(Self::expected_row(self.dim, &real));
        }
        Ok(ModelOutput {
            dim: self.dim,
            values,
        })
    }

    fn describe(&self) -> String {
        format!("fake model, dim {}", self.dim)
    }
}

/// What the worker computes per item.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// The model's output row is the item's vector (written as is).
    Embedding,
    /// The model's output row is class logits; the worker writes the softmax scores and the
    /// label of the highest score.
    Classification,
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Embedding => "embedding",
            Self::Classification => "classification",
        })
    }
}

/// An item's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    /// Task `embedding`: the vector.
    Embedding(Vec<f32>),
    /// Task `classification`: softmax scores over classes and the best class's label.
    Classification {
        /// The label of the highest score (from `--labels`, else the class index).
        label: String,
        /// Softmax of the logits, one per class, summing to 1.
        scores: Vec<f32>,
    },
}

impl Prediction {
    /// Turns one output row into the task's prediction.
    #[must_use]
    pub fn from_row(task: Task, row: &[f32], labels: &[String]) -> Self {
        match task {
            Task::Embedding => Self::Embedding(row.to_vec()),
            Task::Classification => {
                let scores = softmax(row);
                let best = scores
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |acc, (i, &s)| if s > acc.1 { (i, s) } else { acc },
                    )
                    .0;
                let label = labels
                    .get(best)
                    .cloned()
                    .unwrap_or_else(|| best.to_string());
                Self::Classification { label, scores }
            }
        }
    }
}

/// Numerically stable softmax: `exp(x_i - max) / sum_j exp(x_j - max)`.
#[must_use]
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_longest_row_with_mask() {
        let a = [101, 7, 102];
        let b = [101, 102];
        let input = ModelInput::pad(&[&a, &b], 0);
        assert_eq!(input.seq_len, 3);
        assert_eq!(input.input_ids, vec![101, 7, 102, 101, 102, 0]);
        assert_eq!(input.attention_mask, vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(input.real_tokens(), 5);
        assert_eq!(input.padded_tokens(), 1);
    }

    #[test]
    fn softmax_of_ln2_and_0_is_two_thirds_one_third() {
        let s = softmax(&[std::f32::consts::LN_2, 0.0]);
        assert!((s[0] - 2.0 / 3.0).abs() < 1e-6);
        assert!((s[1] - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn classification_picks_the_best_label() {
        let labels = vec!["neg".to_string(), "pos".to_string()];
        let p = Prediction::from_row(Task::Classification, &[0.0, 2.0], &labels);
        let Prediction::Classification { label, scores } = p else {
            panic!("expected a classification");
        };
        assert_eq!(label, "pos");
        // 1 / (1 + e^2) = 0.11920292
        assert!((scores[0] - 0.119_202_92).abs() < 1e-6);
        // without labels the class index is the label
        let p = Prediction::from_row(Task::Classification, &[3.0, 2.0, 1.0], &[]);
        assert!(matches!(p, Prediction::Classification { label, .. } if label == "0"));
    }

    #[test]
    fn fake_model_rows_ignore_padding_and_batch_mates() {
        let mut m = FakeModel::new(4);
        let a = [101, 7, 102];
        let b = [101, 102];
        let together = m.infer(&ModelInput::pad(&[&a, &b], 0)).unwrap();
        let alone = m.infer(&ModelInput::pad(&[&b], 0)).unwrap();
        assert_eq!(together.row(1), alone.row(0));
        let norm: f32 = together.row(0).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
