//! Open-AutoGLM inference worker: runs a TorchScript model (libtorch through `tch`) over its
//! shard of a JSONL input in adaptive batches, writes one record per item to Parquet or
//! JSONL part files, and checkpoints so a killed pod resumes with no item lost or written
//! twice.
//!
//! # Command line (the controller creates worker Pods with exactly these; keep it stable)
//! ```text
//! autoglm-worker run \
//!   --model <uri> --tokenizer <uri> --task embedding|classification [--labels a,b,...] \
//!   --input <uri> --text-field text [--id-field id] \
//!   --output <uri> --output-format parquet|jsonl \
//!   --replica-index N --replicas M \
//!   --max-batch-size 64 --max-delay-ms 20 --target-p99-ms 200 --max-batch-tokens 16384 \
//!   --checkpoint-every-items 2048 --checkpoint-every-seconds 30 --max-failed-items 0 \
//!   --admin-addr 0.0.0.0:9090 [--device auto|cpu|cuda] [--threads 0]
//! autoglm-worker bench --model <file> --tokenizer <file> --input <corpus.jsonl> ...
//! ```
//! Every flag can also come from an environment variable `AUTOGLM_<FLAG>` (upper case,
//! dashes as underscores: `AUTOGLM_MAX_BATCH_SIZE`); a flag wins over its variable.
//! URIs: a path, `file://`, `s3://`, `gs://` or `az://` (see [`store`]).
//! `--target-p99-ms 0` turns adaptation off (batch size fixed at `--max-batch-size`).
//!
//! # Pieces
//! [`input`] (shard: line `n` belongs to replica `(n - 1) mod M`), [`tokenize`],
//! [`batching`] (length-sorted windows, the adaptive controller), [`model`] (the runtime
//! trait) and `torch` (libtorch), [`output`] (records), [`checkpoint`] (layout and
//! exactly-once), [`pipeline`] (threads and channels), [`telemetry`] and [`progress`].
//!
//! # Environment
//! `POD_NAME`, `POD_NAMESPACE` (progress annotation), `AUTOGLM_GPU_MEMORY_MIB` (a GPU slice's
//! cap), `OMP_WAIT_POLICY=passive` (advised on shared CPUs), `RUST_LOG`.

pub mod batching;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod input;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod resources;
pub mod store;
pub mod telemetry;
pub mod tokenize;
#[cfg(feature = "libtorch")]
pub mod torch;
