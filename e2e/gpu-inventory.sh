#!/usr/bin/env bash
# Reads this machine's GPUs once through NVML, as the node agent does, and prints the
# table and the GpuNode status it would publish. For a machine with an NVIDIA GPU and driver
# (e.g. the device machine); without one it stops with the agent's "NVML is absent" error.
#
#   e2e/gpu-inventory.sh            # build (release) and run
#   AGENT_BIN=path/to/autoglm-node-agent e2e/gpu-inventory.sh   # use a prebuilt binary
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "note: nvidia-smi not found; NVML may still be present (the agent will say)." >&2
else
    echo "== nvidia-smi (for comparison)"
    nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu,utilization.memory,compute_cap,mig.mode.current,temperature.gpu,power.draw \
        --format=csv || true
    echo
fi

bin="${AGENT_BIN:-}"
if [[ -z "$bin" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
    cargo build --release -p autoglm-node-agent --bin autoglm-node-agent >&2
    bin="$CARGO_TARGET_DIR/release/autoglm-node-agent"
fi

node="${NODE_NAME:-$(hostname)}"
echo "== autoglm-node-agent --once (table)"
"$bin" --node-name "$node" --inventory nvml --once --output table
echo
echo "== autoglm-node-agent --once (GpuNode status it would publish)"
"$bin" --node-name "$node" --inventory nvml --once --output json
