#!/usr/bin/env bash
# Worker bench on CUDA, for a machine with an NVIDIA GPU (the `device` tool's machine, or any
# Linux host with a driver for CUDA 13). Prints the same table as the CPU bench
# (docs/benchmarks.md, "## Worker"): adaptive vs fixed batch sizes, bf16, and
# sentence-transformers on the same GPU.
#
#   e2e/gpu-worker.sh            # build (if needed), export the model, run the bench on CUDA
#   LIMIT=8000 e2e/gpu-worker.sh # more items (default: the whole 7,957-verse corpus)
#
# Needs: the venv from hack/torch-env.sh (torch 2.13.0 wheels carry CUDA 13 libraries), a
# Rust toolchain, the corpus (hack/corpus.py, Debian package bible-kjv) and the exported
# model (hack/export_model.py). Written without a GPU at hand: checked by reading only.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-worker: no NVIDIA GPU visible (nvidia-smi -L failed)" >&2
  exit 2
fi
nvidia-smi -L

hack/torch-env.sh setup
eval "$(hack/torch-env.sh env)"
python hack/export_model.py
corpus="$(python hack/corpus.py)"
model_dir="${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}/models/all-MiniLM-L6-v2"

python - <<'PY'
import torch
assert torch.cuda.is_available(), "torch in the venv sees no CUDA device"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))
PY

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p autoglm-worker
bin="$CARGO_TARGET_DIR/release/autoglm-worker"

# On a GPU the batches are bigger and the latency target looser than on 2 CPU cores.
"$bin" bench \
  --device cuda \
  --model "$model_dir/model.pt" \
  --model-bf16 "$model_dir/model-bf16.pt" \
  --tokenizer "$model_dir/tokenizer.json" \
  --input "$corpus" \
  --limit "${LIMIT:-7957}" \
  --max-batch-size "${MAX_BATCH:-512}" \
  --max-batch-tokens "${MAX_TOKENS:-131072}" \
  --target-p99-ms "${TARGET_MS:-50}" \
  --sweep "${SWEEP:-32,64,128,256,512}" \
  --python python \
  --st-script hack/st_reference.py \
  --st-model "$model_dir/st-model" \
  --st-device cuda \
  --st-batch-size "${ST_BATCH:-128}"
