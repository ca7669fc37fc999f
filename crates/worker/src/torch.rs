//! The libtorch model runtime (feature `libtorch`): a TorchScript module run with `tch`.
//!
//! # Device
//! CUDA device 0 when libtorch sees a GPU (the device plugin exposes only the assigned one)
//! and `--device` is `auto` or `cuda`; else CPU.
//!
//! # GPU memory cap
//! libtorch has no hard per-process memory cap reachable from `tch` (Python's
//! `torch.cuda.set_per_process_memory_fraction` is not exposed), so a slice's cap
//! (`AUTOGLM_GPU_MEMORY_MIB`, set by the device plugin) is *approximated*: the pipeline's
//! token budget is clamped to [`token_budget_for_cap`], and a CUDA out-of-memory error
//! splits the batch in halves and retries (see the pipeline).
//!
//! # CPU threads
//! Intra-op threads = the container's CPU limit (cgroup v2 `cpu.max`, rounded up), else the
//! available parallelism; inter-op threads = 1. Run with `OMP_WAIT_POLICY=passive`: on a
//! shared 2-core machine spinning OpenMP threads cut throughput 10-40x (issue 5).

use std::path::Path;

use tch::{CModule, Device, Kind, Tensor};

use crate::model::{Model, ModelError, ModelInput, ModelOutput};

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA; fails when no GPU is visible.
    Cuda,
}

/// Why the model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// libtorch rejected the file.
    #[error("failed to load TorchScript model {path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// libtorch's message.
        message: String,
    },
    /// `--device cuda` without a GPU.
    #[error("failed to select device cuda: libtorch sees no CUDA device")]
    NoCuda,
}

/// A TorchScript module on a device.
#[derive(Debug)]
pub struct TorchModel {
    module: CModule,
    device: Device,
    threads: usize,
    path: String,
}

impl TorchModel {
    /// Loads `path` (a TorchScript file taking `(input_ids, attention_mask)` as `[B, L]` i64
    /// tensors and returning `[B, D]`), sets CPU threads, evaluation mode.
    ///
    /// # Errors
    /// [`LoadError`] when the file is not TorchScript or the device is unavailable.
    pub fn load(path: &Path, device: DeviceChoice, threads: usize) -> Result<Self, LoadError> {
        let device = match device {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Auto => Device::cuda_if_available(),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Device::Cuda(0),
            DeviceChoice::Cuda => return Err(LoadError::NoCuda),
        };
        let threads = threads.max(1);
        tch::set_num_threads(threads as i32);
        // libtorch refuses a second call (and tch panics on its error): once per process.
        static INTEROP: std::sync::Once = std::sync::Once::new();
        INTEROP.call_once(|| tch::set_num_interop_threads(1));
        let mut module = CModule::load_on_device(path, device).map_err(|e| LoadError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        module.set_eval();
        Ok(Self {
            module,
            device,
            threads,
            path: path.display().to_string(),
        })
    }

    /// Whether the model runs on a GPU.
    #[must_use]
    pub fn on_cuda(&self) -> bool {
        self.device.is_cuda()
    }
}

impl Model for TorchModel {
    fn on_thread_start(&mut self) {
        tch::set_num_threads(self.threads as i32);
    }

    fn infer(&mut self, input: &ModelInput) -> Result<ModelOutput, ModelError> {
        let (b, l) = (input.batch as i64, input.seq_len as i64);
        let fail = |e: tch::TchError| {
            let message = e.to_string();
            if message.contains("out of memory") {
                ModelError::OutOfMemory {
                    batch: input.batch,
                    seq_len: input.seq_len,
                }
            } else {
                ModelError::Forward {
                    batch: input.batch,
                    seq_len: input.seq_len,
                    message,
                }
            }
        };
        let out = tch::no_grad(|| -> Result<Tensor, tch::TchError> {
            let ids = Tensor::from_slice(&input.input_ids)
                .view([b, l])
                .to_device(self.device);
            let mask = Tensor::from_slice(&input.attention_mask)
                .view([b, l])
                .to_device(self.device);
            let out = self.module.forward_ts(&[ids, mask])?;
            Ok(out.to_kind(Kind::Float).to_device(Device::Cpu).contiguous())
        })
        .map_err(fail)?;
        let shape = out.size();
        if shape.len() != 2 || shape[0] != b {
            return Err(ModelError::OutputShape {
                batch: input.batch,
                shape,
            });
        }
        let dim = shape[1] as usize;
        let values = Vec::<f32>::try_from(out.view([-1])).map_err(fail)?;
        Ok(ModelOutput { dim, values })
    }

    fn describe(&self) -> String {
        format!(
            "TorchScript {} on {:?}, {} intra-op threads",
            self.path, self.device, self.threads
        )
    }
}

/// Token budget that keeps one batch's activations inside a GPU memory cap.
///
/// `(cap_mib - params_mib - 512 MiB for the CUDA context and allocator slack) * 1 MiB /
/// 64 KiB per token`, at least 256 tokens.
///
/// # Source
/// A rough per-token activation size for BERT-style encoders up to hidden 768 at sequences of
/// at most 256 tokens: per layer, attention scores `heads x L x 4 B` (12 x 256 x 4 = 12 KiB)
/// plus the feed-forward intermediate `4 x hidden x 4 B` (12 KiB), with a few buffers live at
/// once; 64 KiB is that, rounded up. An approximation, not a measurement: the OOM-split
/// fallback covers a bad guess.
#[must_use]
pub fn token_budget_for_cap(cap_mib: u64, params_mib: u64) -> usize {
    let free_mib = cap_mib.saturating_sub(params_mib + 512);
    ((free_mib * 1024 / 64) as usize).max(256)
}

/// The model file's size in MiB, rounded up (its parameters dominate it).
#[must_use]
pub fn file_mib(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len().div_ceil(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_from_cap() {
        // 2048 MiB slice, 90 MiB model: (2048 - 602) MiB * 16 tokens/MiB = 23136 tokens
        assert_eq!(token_budget_for_cap(2048, 90), 23_136);
        assert_eq!(token_budget_for_cap(100, 90), 256);
    }
}
