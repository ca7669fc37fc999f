#!/usr/bin/env bash
# The rendered install's identities, exercised by the real binaries (`make rbac-check`):
#
#   1. applies manifests/open-autoglm.yaml (the chart with default values) to the local
#      control plane: CRDs, service accounts, RBAC, admission policies;
#   2. gives each identity a TokenRequest token the way the kubelet would: the controller's
#      and, bound to a placeholder Pod on a test Node, the node agent's and a worker's (so the
#      tokens carry the pod-name and node-name claims the admission policies check);
#   3. runs autoglm-controller and autoglm-node-agent as local processes with the args and
#      env of the rendered Deployment and DaemonSet, authenticated only by those tokens.
#      Substitutions, all printed: the admin port moves to a free loopback port; the node
#      agent's device-plugin dir is a temporary folder (no kubelet here) and its inventory is
#      simulated (no GPU here); fieldRef env gets the placeholder pod's values;
#   4. shows they do their job: the controller becomes ready, takes the leader Lease, and
#      places and binds a replica pod of a real InferenceJob on a GPU node; the node agent
#      publishes its node's GpuNode and GPU labels; a worker patches its own pod's progress;
#   5. shows everything else is refused: reading Secrets, writing GpuNodes (controller),
#      another node's objects (node agent), another pod or field (worker), and more.
# Prints one line per check and "N passed, M failed"; exits 1 on any failure.
#
# Binaries: $AUTOGLM_CONTROLLER_BIN / $AUTOGLM_NODE_AGENT_BIN, else $AUTOGLM_BIN_DIR/<name>, else
# built with `cargo build` (honours CARGO_TARGET_DIR).
# Control plane: $KUBECONFIG when it answers, else e2e/cluster.sh up (and down at the end).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
manifests="${AUTOGLM_MANIFESTS:-$root/manifests/open-autoglm.yaml}"
ns=autoglm-system
release=open-autoglm
export PATH="$root/.tools/bin:$PATH"
tmp="$(mktemp -d)"
started_cluster=false
pids=()
passed=0
failed=0
node_a=rbac-gpu-node-a
node_b=rbac-gpu-node-b
# Names of their own per run: without a kubelet, pods bound to a node never finish a graceful
# delete, and without kube-controller-manager a deleted namespace stays Terminating, so a
# second run on the same control plane must not reuse them.
run="r$$"
job_ns="rbac-jobs-$run"
agent_pod="agent-probe-$run"
worker_a="worker-a-$run"
worker_b="worker-b-$run"

log() { printf 'rbac-check: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
ok() { passed=$((passed + 1)); printf 'PASS  %s\n' "$1"; }
bad() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$1"; [[ -z "${2:-}" ]] || printf '      %s\n' "$2"; }

cleanup() {
  local rc=$? pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ "$started_cluster" == true ]]; then
    "$root/e2e/cluster.sh" down >/dev/null 2>&1 || true
  elif [[ -n "${admin_kubeconfig:-}" ]]; then
    # Best effort on a shared control plane: force-delete what no kubelet will ever finish.
    KUBECONFIG="$admin_kubeconfig" kubectl -n "$job_ns" patch ij rbac-embed --type=merge \
      -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    KUBECONFIG="$admin_kubeconfig" kubectl -n "$job_ns" delete ij,pods --all --force --grace-period=0 >/dev/null 2>&1 || true
    KUBECONFIG="$admin_kubeconfig" kubectl -n "$ns" delete pod "$agent_pod" "$worker_a" "$worker_b" \
      --force --grace-period=0 >/dev/null 2>&1 || true
    KUBECONFIG="$admin_kubeconfig" kubectl delete namespace "$job_ns" --wait=false >/dev/null 2>&1 || true
  fi
  if [[ $rc -ne 0 || $failed -ne 0 ]]; then
    for f in "$tmp"/*.log; do
      [[ -f "$f" ]] || continue
      log "---- last lines of $(basename "$f")"
      tail -n 25 "$f" >&2
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # <seconds> <description> <command...>
  local deadline=$((SECONDS + $1)) what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { log "timed out after waiting for: $what"; return 1; }
    sleep 0.5
  done
}

# expect_ok <description> <command...>
expect_ok() {
  local what="$1" out
  shift
  if out="$("$@" 2>&1)"; then ok "$what"; else bad "$what" "$(tail -n 2 <<<"$out")"; fi
}
# expect_refused <description> <substring of the refusal> <command...>
expect_refused() {
  local what="$1" want="$2" out
  shift 2
  if out="$("$@" 2>&1)"; then
    bad "$what" "was allowed: $(tail -n 1 <<<"$out")"
  elif grep -qiF -- "$want" <<<"$out"; then
    ok "$what -> $(grep -oiF -- "$want" <<<"$out" | head -1)"
  else
    bad "$what" "refused, but not with '$want': $(tail -n 1 <<<"$out")"
  fi
}

[[ -f "$manifests" ]] || die "$manifests missing: run 'make manifests'"
command -v kubectl >/dev/null || die "kubectl not found: run 'make tools'"

# ---- binaries ------------------------------------------------------------------------------
if [[ -n "${AUTOGLM_BIN_DIR:-}" ]]; then
  bin="$AUTOGLM_BIN_DIR"
elif [[ -z "${AUTOGLM_CONTROLLER_BIN:-}" || -z "${AUTOGLM_NODE_AGENT_BIN:-}" ]]; then
  log "building autoglm-controller and autoglm-node-agent (cargo build)"
  (cd "$root" && cargo build --quiet -p autoglm-controller -p autoglm-node-agent)
  bin="${CARGO_TARGET_DIR:-$root/target}/debug"
fi
controller_bin="${AUTOGLM_CONTROLLER_BIN:-$bin/autoglm-controller}"
agent_bin="${AUTOGLM_NODE_AGENT_BIN:-$bin/autoglm-node-agent}"
for b in "$controller_bin" "$agent_bin"; do
  [[ -x "$b" ]] || die "$b missing"
done

# ---- control plane -------------------------------------------------------------------------
if [[ -z "${KUBECONFIG:-}" ]] || ! kubectl get --raw /readyz >/dev/null 2>&1; then
  "$root/e2e/cluster.sh" status >/dev/null 2>&1 || started_cluster=true
  "$root/e2e/cluster.sh" up >&2
  eval "$("$root/e2e/cluster.sh" env)"
fi
admin_kubeconfig="$KUBECONFIG"
admin() { KUBECONFIG="$admin_kubeconfig" kubectl "$@"; }

# ---- 1. the rendered install ---------------------------------------------------------------
log "applying manifests/open-autoglm.yaml (server-side)"
admin apply --server-side --force-conflicts -f "$manifests" >"$tmp/apply.out"
# The chart's crds/ is filled by `make crds`; until then take the CRDs the cluster already
# serves, the repository's crds/, or crdgen's output.
if ! grep -q '^kind: CustomResourceDefinition' "$manifests" \
  && ! admin get crd inferencejobs.autoglm.io gpunodes.autoglm.io >/dev/null 2>&1; then
  if compgen -G "$root/crds/*.yaml" >/dev/null; then
    log "manifests carry no CRDs yet; applying crds/ instead"
    admin apply --server-side --force-conflicts -f "$root/crds/" >>"$tmp/apply.out"
  else
    log "manifests and crds/ carry no CRDs yet; applying crdgen's output"
    (cd "$root" && cargo run --quiet -p autoglm-api --bin crdgen) >"$tmp/crds.yaml"
    admin apply --server-side --force-conflicts -f "$tmp/crds.yaml" >>"$tmp/apply.out"
  fi
fi
admin wait --for=condition=Established crd/inferencejobs.autoglm.io crd/gpunodes.autoglm.io --timeout=60s >/dev/null
ok "manifests/open-autoglm.yaml applied: $(grep -c '^kind:' "$manifests") objects"

sa_of() { admin -n "$ns" get "$1" "$2" -o jsonpath='{.spec.template.spec.serviceAccountName}'; }
controller_sa="$(sa_of deploy "$release-controller")"
agent_sa="$(sa_of ds "$release-node-agent")"
worker_sa="$release-worker"

# ---- fixtures: two GPU nodes and placeholder pods carrying the identities -----------------
admin create namespace "$job_ns" --dry-run=client -o yaml | admin apply -f - >/dev/null
for n in "$node_a" "$node_b"; do
  admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels: {kubernetes.io/hostname: $n, rbac-check: "true"}
EOF
  admin patch node "$n" --subresource=status --type=merge -p "$(cat <<EOF
{"status":{"capacity":{"cpu":"16","memory":"64Gi","pods":"110","autoglm.io/gpu":"2","autoglm.io/gpu-memory-gib":"80"},
 "allocatable":{"cpu":"16","memory":"64Gi","pods":"110","autoglm.io/gpu":"2","autoglm.io/gpu-memory-gib":"80"},
 "conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"rbac-check fixture",
   "lastHeartbeatTime":"$(date -u +%Y-%m-%dT%H:%M:%SZ)","lastTransitionTime":"$(date -u +%Y-%m-%dT%H:%M:%SZ)"}]}}
EOF
)" >/dev/null
  # The API server taints new Nodes not-ready; the node lifecycle controller (not running
  # here) would lift it once the kubelet reports Ready.
  admin patch node "$n" --type=merge -p '{"spec":{"taints":null}}' >/dev/null
done
placeholder_pod() { # <name> <service account> <node>
  admin -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  labels: {rbac-check: "true"}
  annotations: {example.com/note: "placeholder for a token; never runs"}
spec:
  serviceAccountName: $2
  nodeName: $3
  containers: [{name: c, image: registry.invalid/none:0}]
EOF
}
placeholder_pod "$agent_pod" "$agent_sa" "$node_a"
placeholder_pod "$worker_a" "$worker_sa" "$node_a"
placeholder_pod "$worker_b" "$worker_sa" "$node_a"

# ---- 2. tokens and kubeconfigs -------------------------------------------------------------
server="$(admin config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
admin config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$tmp/ca.crt"
kubeconfig_for() { # <name> <token>
  local f="$tmp/$1.kubeconfig"
  KUBECONFIG="$f" kubectl config set-cluster local --server="$server" --certificate-authority="$tmp/ca.crt" --embed-certs >/dev/null
  KUBECONFIG="$f" kubectl config set-credentials "$1" --token="$2" >/dev/null
  KUBECONFIG="$f" kubectl config set-context "$1" --cluster=local --user="$1" >/dev/null
  KUBECONFIG="$f" kubectl config use-context "$1" >/dev/null
  echo "$f"
}
pod_token() { # <service account> <pod>
  admin -n "$ns" create token "$1" --duration=1h --bound-object-kind=Pod --bound-object-name="$2" \
    --bound-object-uid="$(admin -n "$ns" get pod "$2" -o jsonpath='{.metadata.uid}')"
}
controller_kc="$(kubeconfig_for controller "$(admin -n "$ns" create token "$controller_sa" --duration=1h)")"
agent_kc="$(kubeconfig_for node-agent "$(pod_token "$agent_sa" "$agent_pod")")"
worker_kc="$(kubeconfig_for worker "$(pod_token "$worker_sa" "$worker_a")")"
as_controller() { KUBECONFIG="$controller_kc" kubectl "$@"; }
as_agent() { KUBECONFIG="$agent_kc" kubectl "$@"; }
as_worker() { KUBECONFIG="$worker_kc" kubectl "$@"; }
claims="$(as_agent auth whoami -o jsonpath='{.status.userInfo.extra}')"
if grep -q "$node_a" <<<"$claims"; then
  ok "node agent token carries the node-name claim ($node_a)"
else
  bad "node agent token carries the node-name claim" "extra: $claims"
fi

# ---- 3. processes with the rendered args and env ------------------------------------------
# command_of <kind> <name> <pod name> <node name> [sed expressions...]: the container's args
# as one per line, $(VAR) references expanded, after the given substitutions.
command_of() {
  local kind="$1" name="$2" pod="$3" node="$4"
  shift 4
  admin -n "$ns" get "$kind" "$name" -o json | python3 -c '
import json, re, sys
pod, node, ns = sys.argv[1:4]
spec = json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]
field = {"metadata.name": pod, "metadata.namespace": ns, "spec.nodeName": node}
env = {}
for e in spec.get("env", []):
    if "value" in e:
        env[e["name"]] = e["value"]
    elif "fieldRef" in e.get("valueFrom", {}):
        env[e["name"]] = field[e["valueFrom"]["fieldRef"]["fieldPath"]]
with open(sys.argv[4], "w") as f:
    for k, v in env.items():
        f.write(f"{k}={v}\n")
for a in spec.get("args", []):
    print(re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a))
' "$pod" "$node" "$ns" "$tmp/$name.env" | sed "$@"
}
run_component() { # <binary path> <kubeconfig> <log> <env file> <args file>
  local -a args envs
  mapfile -t args <"$5"
  mapfile -t envs <"$4"
  log "running $(basename "$1") as $(basename "$2" .kubeconfig):"
  printf '    %s\n' "${envs[@]}" "$1" "${args[@]}" >&2
  env "${envs[@]}" KUBECONFIG="$2" "$1" "${args[@]}" >"$3" 2>&1 &
  pids+=($!)
}

controller_port="$(free_port)"
command_of deploy "$release-controller" "$release-controller-rbac-check" "" \
  -e "s|^--admin-addr=.*|--admin-addr=127.0.0.1:$controller_port|" >"$tmp/controller.args"
run_component "$controller_bin" "$controller_kc" "$tmp/controller.log" "$tmp/$release-controller.env" "$tmp/controller.args"

cat >"$tmp/gpus.yaml" <<EOF
gpus:
  - {product: NVIDIA A100-SXM4-40GB, memoryMiB: 40960, count: 2, computeCapability: "8.0"}
EOF
mkdir -p "$tmp/device-plugins"
agent_port="$(free_port)"
command_of ds "$release-node-agent" "$agent_pod" "$node_a" \
  -e "s|^--admin-addr=.*|--admin-addr=127.0.0.1:$agent_port|" \
  -e "s|^--device-plugin-dir=.*|--device-plugin-dir=$tmp/device-plugins|" \
  -e "s|^--inventory=nvml\$|--inventory=simulated\n--simulated-config=$tmp/gpus.yaml|" >"$tmp/node-agent.args"
run_component "$agent_bin" "$agent_kc" "$tmp/node-agent.log" "$tmp/$release-node-agent.env" "$tmp/node-agent.args"

# ---- 4. they do their job ------------------------------------------------------------------
if wait_for 90 "controller /readyz" curl -fsS "http://127.0.0.1:$controller_port/readyz"; then
  ok "controller ready (caches of InferenceJobs, Pods, Nodes, GpuNodes synced) with its token only"
else
  bad "controller ready with its token only"
fi
lease="$(admin -n "$ns" get deploy "$release-controller" -o json | grep -o -- '--lease-name=[^"]*' | cut -d= -f2)"
holder() { [[ "$(admin -n "$ns" get lease "$lease" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" == "$release-controller-rbac-check" ]]; }
if wait_for 30 "lease holder" holder; then ok "controller holds the leader Lease $ns/$lease"; else bad "controller holds the leader Lease $ns/$lease"; fi

published() { [[ -n "$(admin get gpunode "$node_a" -o jsonpath='{.status.gpus[0].uuid}' 2>/dev/null)" ]]; }
if wait_for 30 "GpuNode $node_a" published; then
  ok "node agent published GpuNode $node_a ($(admin get gpunode "$node_a" -o jsonpath='{.status.gpus[*].productName}'))"
else
  bad "node agent published GpuNode $node_a"
fi
labelled() { [[ -n "$(admin get node "$node_a" -o jsonpath='{.metadata.labels.autoglm\.io/gpu\.count}')" ]]; }
if wait_for 30 "node labels" labelled; then
  ok "node agent labelled its node (autoglm.io/gpu.count=$(admin get node "$node_a" -o jsonpath='{.metadata.labels.autoglm\.io/gpu\.count}'))"
else
  bad "node agent labelled its node"
fi
# Node b's GpuNode, written by the administrator, for the placement and the refusals below.
admin apply --server-side -f - >/dev/null <<EOF
apiVersion: autoglm.io/v1alpha1
kind: GpuNode
metadata:
  name: $node_b
spec: {}
EOF

admin -n "$job_ns" apply -f - >/dev/null <<EOF
apiVersion: autoglm.io/v1alpha1
kind: InferenceJob
metadata:
  name: rbac-embed
spec:
  model: {uri: "file:///models/model.pt", tokenizerUri: "file:///models/tokenizer.json", task: embedding}
  input: {uri: "file:///data/in.jsonl", format: jsonl, textField: text}
  output: {uri: "file:///data/out", format: parquet}
  replicas: 1
  resources: {gpu: {count: 1}, cpu: "1", memory: 1Gi}
EOF
bound() { [[ -n "$(admin -n "$job_ns" get pods -l autoglm.io/job=rbac-embed -o jsonpath='{.items[0].spec.nodeName}' 2>/dev/null)" ]]; }
if wait_for 60 "replica pod bound" bound; then
  ok "controller created and bound the replica pod to $(admin -n "$job_ns" get pods -l autoglm.io/job=rbac-embed -o jsonpath='{.items[0].spec.nodeName}')"
else
  bad "controller created and bound the replica pod"
fi
job_phase() { admin -n "$job_ns" get ij rbac-embed -o jsonpath='{.status.phase}' 2>/dev/null; }
has_phase() { [[ -n "$(job_phase)" ]]; }
if wait_for 30 "job status" has_phase; then
  ok "controller wrote the job's status (phase $(job_phase))"
else
  bad "controller wrote the job's status"
fi
# RBAC's refusal reads 'is forbidden: User "system:serviceaccount:..." cannot <verb> ...';
# admission refusals name the policy.
refusal='forbidden: User \\?"system:serviceaccount|ValidatingAdmissionPolicy'
if grep -qE "$refusal" "$tmp/controller.log" "$tmp/node-agent.log"; then
  bad "no RBAC refusal in the controller's and node agent's logs" "$(grep -hE "$refusal" "$tmp/controller.log" "$tmp/node-agent.log" | head -2)"
else
  ok "no RBAC refusal in the controller's and node agent's logs"
fi
expect_ok "worker patches its own pod's autoglm.io/progress annotation" \
  as_worker -n "$ns" annotate pod "$worker_a" --overwrite 'autoglm.io/progress={"itemsDone":1}'

# ---- 5. and nothing more -------------------------------------------------------------------
expect_refused "controller reads Secrets" "forbidden" as_controller -n "$ns" get secrets
expect_refused "controller creates a GpuNode (read-only for it)" "forbidden" \
  as_controller create -f - <<<'{"apiVersion":"autoglm.io/v1alpha1","kind":"GpuNode","metadata":{"name":"rbac-forged"}}'
expect_refused "controller deletes a Node" "forbidden" as_controller delete node "$node_b"
expect_refused "controller creates a Deployment" "forbidden" \
  as_controller -n "$ns" create deployment rbac-forged --image=registry.invalid/x:0
expect_refused "controller reads another Lease than its own" "forbidden" as_controller -n "$ns" get lease kube-scheduler
expect_refused "controller reads ConfigMaps" "forbidden" as_controller -n kube-system get configmaps
expect_refused "node agent reads Secrets" "forbidden" as_agent -n "$ns" get secrets
expect_refused "node agent writes another node's GpuNode" "may only write its own node" \
  as_agent label gpunode "$node_b" autoglm.io/forged=1
expect_refused "node agent labels another node" "may only write its own node" \
  as_agent label node "$node_b" autoglm.io/gpu.count=9
expect_refused "node agent sets a non-autoglm.io label on its own node" "may only change autoglm.io/ labels" \
  as_agent label node "$node_a" node-role.kubernetes.io/forged=
expect_refused "node agent creates pods" "forbidden" \
  as_agent -n "$ns" run rbac-forged --image=registry.invalid/x:0 --restart=Never
expect_refused "worker patches another pod" "may only patch its own pod" \
  as_worker -n "$ns" annotate pod "$worker_b" --overwrite 'autoglm.io/progress={"itemsDone":1}'
expect_refused "worker changes another annotation of its own pod" "may only change the autoglm.io/progress annotation" \
  as_worker -n "$ns" annotate pod "$worker_a" --overwrite example.com/note=forged
expect_refused "worker labels its own pod" "may not change its pod's labels" \
  as_worker -n "$ns" label pod "$worker_a" forged=1
expect_refused "worker deletes its own pod" "forbidden" as_worker -n "$ns" delete pod "$worker_a" --wait=false
expect_refused "worker reads Secrets" "forbidden" as_worker -n "$ns" get secrets

printf '%d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
