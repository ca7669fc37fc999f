#!/usr/bin/env bash
# The chart against a real API server (`make helm-check`, run by CI):
#   1. helm lint --strict, with default values and with ci/all-on-values.yaml (every option on);
#      values that break the schema (replicas 0, a misspelt key) must be refused
#   2. helm template | kubectl apply --dry-run=server, on the local control plane, for
#        a. default values (+ the CRDs)
#        b. every option on, on a cluster WITHOUT the Prometheus operator: no ServiceMonitor
#           is rendered
#        c. every option on, WITH the ServiceMonitor CRD installed (a stand-in declaring the
#           fields the chart sets, e2e/install/testdata/): helm discovers it through
#           `--validate` (live capabilities) and renders 2 ServiceMonitors, which the API
#           server's strict field validation accepts
#        d. manifests/open-autoglm.yaml as committed
#   3. PodSecurity: the controller's pod template is admitted by a namespace enforcing
#      "restricted"; the node agent's is refused by "baseline" (hostPath) and admitted by
#      "privileged", as docs/install.md says
#
# Uses $KUBECONFIG when it points at a live API server; otherwise starts the local control
# plane (e2e/cluster.sh up) and stops it at the end. Needs `make tools` (helm, kubectl).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
chart="$root/charts/open-autoglm"
allon="$chart/ci/all-on-values.yaml"
here="$root/e2e/install"
export PATH="$root/.tools/bin:$PATH"
tmp="$(mktemp -d)"
run_id="hc$$"
started_cluster=false
created=()

log() { printf 'helm-check: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
pass() { log "ok: $*"; }

cleanup() {
  local rc=$? i
  for ((i = ${#created[@]} - 1; i >= 0; i--)); do
    # shellcheck disable=SC2086 # "kind name" pairs
    kubectl delete ${created[i]} --ignore-not-found --wait=false >/dev/null 2>&1 || true
  done
  if [[ "$started_cluster" == true ]]; then
    "$root/e2e/cluster.sh" down >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

for tool in helm kubectl; do
  command -v "$tool" >/dev/null || die "'$tool' not found: run 'make tools'"
done

# ---- 1. lint -------------------------------------------------------------------------------
helm lint --strict "$chart" >"$tmp/lint.log" 2>&1 || { cat "$tmp/lint.log" >&2; die "helm lint (defaults)"; }
helm lint --strict "$chart" -f "$allon" >"$tmp/lint.log" 2>&1 || { cat "$tmp/lint.log" >&2; die "helm lint (all options on)"; }
pass "helm lint --strict: defaults and ci/all-on-values.yaml"
if helm template t "$chart" --set controller.replicas=0 >/dev/null 2>"$tmp/err"; then
  die "the schema accepted controller.replicas=0"
fi
grep -q "/controller/replicas" "$tmp/err" || die "schema error does not name controller.replicas: $(cat "$tmp/err")"
if helm template t "$chart" --set nodeAgent.invetory=nvml >/dev/null 2>"$tmp/err"; then
  die "the schema accepted a misspelt key (nodeAgent.invetory)"
fi
grep -q "invetory" "$tmp/err" || die "schema error does not name the misspelt key: $(cat "$tmp/err")"
if helm template t "$chart" --set controller.nodeLostAfterSeconds=99999999999 >/dev/null 2>"$tmp/err"; then
  die "the schema accepted controller.nodeLostAfterSeconds beyond the controller's range"
fi
grep -q "nodeLostAfterSeconds" "$tmp/err" || die "schema error does not name controller.nodeLostAfterSeconds: $(cat "$tmp/err")"
pass "values.schema.json refuses controller.replicas=0, nodeLostAfterSeconds past a year and a misspelt key, naming them"

# ---- control plane -------------------------------------------------------------------------
if [[ -z "${KUBECONFIG:-}" ]] || ! kubectl get --raw /readyz >/dev/null 2>&1; then
  if ! "$root/e2e/cluster.sh" status >/dev/null 2>&1; then
    started_cluster=true
  fi
  "$root/e2e/cluster.sh" up >&2
  eval "$("$root/e2e/cluster.sh" env)"
fi
log "API server $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1) at $(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"

ns="autoglm-$run_id"
# A release name of its own: helm --validate refuses objects that exist outside the release.
release="open-autoglm-$run_id"
jobs_a=autoglm-jobs-a
jobs_b=autoglm-jobs-b
for n in "$ns" "$jobs_a" "$jobs_b" autoglm-system; do
  if ! kubectl get namespace "$n" >/dev/null 2>&1; then
    kubectl create namespace "$n" >/dev/null
    created+=("namespace $n")
  fi
done

dry_run() { # <label> <file>
  if ! kubectl apply --dry-run=server -f "$2" >"$tmp/apply.log" 2>&1; then
    cat "$tmp/apply.log" >&2
    die "$1: server-side dry run refused the manifests"
  fi
  pass "$1: $(grep -c '^kind:' "$2") objects accepted by kubectl apply --dry-run=server"
}
count_kind() { grep -c "^kind: $1\$" "$2" || true; }

# ---- 2a. defaults --------------------------------------------------------------------------
helm template "$release" "$chart" -n "$ns" --include-crds >"$tmp/defaults.yaml"
dry_run "defaults" "$tmp/defaults.yaml"

# ---- 2b. all on, no Prometheus operator ----------------------------------------------------
if kubectl get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
  die "this API server already has a ServiceMonitor CRD; run against a fresh control plane"
fi
helm template "$release" "$chart" -n "$ns" -f "$allon" --include-crds --validate >"$tmp/allon-nocrd.yaml"
[[ "$(count_kind ServiceMonitor "$tmp/allon-nocrd.yaml")" == 0 ]] \
  || die "ServiceMonitor rendered although the cluster does not serve monitoring.coreos.com/v1"
dry_run "all options on, no Prometheus operator (0 ServiceMonitors)" "$tmp/allon-nocrd.yaml"

# ---- 2c. all on, with the ServiceMonitor CRD ----------------------------------------------
kubectl apply -f "$here/testdata/servicemonitor-crd.yaml" >/dev/null
created+=("crd servicemonitors.monitoring.coreos.com")
kubectl wait --for=condition=Established crd/servicemonitors.monitoring.coreos.com --timeout=30s >/dev/null
# Discovery caches can lag the new CRD by a moment; --validate reads live capabilities.
for _ in $(seq 20); do
  kubectl api-resources --api-group=monitoring.coreos.com 2>/dev/null | grep -q ServiceMonitor && break
  sleep 0.5
done
helm template "$release" "$chart" -n "$ns" -f "$allon" --include-crds --validate >"$tmp/allon.yaml"
[[ "$(count_kind ServiceMonitor "$tmp/allon.yaml")" == 2 ]] \
  || die "expected 2 ServiceMonitors with the CRD served, got $(count_kind ServiceMonitor "$tmp/allon.yaml")"
dry_run "all options on, with the ServiceMonitor CRD (2 ServiceMonitors)" "$tmp/allon.yaml"
# `helm template` without a cluster takes the capability from --api-versions instead.
helm template "$release" "$chart" -n "$ns" -f "$allon" --api-versions monitoring.coreos.com/v1/ServiceMonitor \
  >"$tmp/allon-offline.yaml"
[[ "$(count_kind ServiceMonitor "$tmp/allon-offline.yaml")" == 2 ]] || die "--api-versions did not enable the ServiceMonitors"
pass "offline render with --api-versions monitoring.coreos.com/v1/ServiceMonitor: 2 ServiceMonitors"

# ---- 2d. manifests/ ------------------------------------------------------------------------
dry_run "manifests/open-autoglm.yaml" "$root/manifests/open-autoglm.yaml"

# ---- 3. PodSecurity ------------------------------------------------------------------------
# A Pod made of a workload's pod template, to let PodSecurity admission judge it (it only
# warns on Deployments and DaemonSets; it enforces on Pods).
pod_from_template() { # <kind> <name> <file> -> Pod JSON on stdout
  kubectl create --dry-run=client -o json -f "$3" 2>/dev/null | python3 -c '
import json, sys
kind, name = sys.argv[1], sys.argv[2]
text, docs, pos = sys.stdin.read(), [], 0
dec = json.JSONDecoder()
while pos < len(text):
    if text[pos].isspace():
        pos += 1
        continue
    obj, pos = dec.raw_decode(text, pos)
    docs.extend(obj.get("items", [obj]))
for item in docs:
    if item["kind"] == kind and item["metadata"]["name"] == name:
        tpl = item["spec"]["template"]
        print(json.dumps({"apiVersion": "v1", "kind": "Pod",
                          "metadata": {"name": "psa-" + kind.lower(), "labels": tpl["metadata"].get("labels", {})},
                          "spec": tpl["spec"]}))
        break
else:
    sys.exit(f"no {kind} {name} in the rendered chart")
' "$1" "$2"
}
for level in restricted baseline privileged; do
  kubectl create namespace "psa-$level-$run_id" >/dev/null
  created+=("namespace psa-$level-$run_id")
  kubectl label namespace "psa-$level-$run_id" "pod-security.kubernetes.io/enforce=$level" >/dev/null
done
pod_from_template Deployment "$release-controller" "$tmp/defaults.yaml" >"$tmp/controller-pod.json"
pod_from_template DaemonSet "$release-node-agent" "$tmp/defaults.yaml" >"$tmp/agent-pod.json"
kubectl -n "psa-restricted-$run_id" apply --dry-run=server -f "$tmp/controller-pod.json" >/dev/null 2>"$tmp/err" \
  || die "the controller pod violates PodSecurity restricted: $(cat "$tmp/err")"
pass "controller pod admitted under PodSecurity 'restricted'"
if kubectl -n "psa-baseline-$run_id" apply --dry-run=server -f "$tmp/agent-pod.json" >/dev/null 2>"$tmp/err"; then
  die "the node agent pod was admitted under 'baseline'; docs/install.md says it needs 'privileged'"
fi
grep -q "hostPath" "$tmp/err" || die "baseline refused the node agent for another reason than hostPath: $(cat "$tmp/err")"
pass "node agent pod refused under 'baseline' for: $(grep -o 'hostPath volumes ([^)]*)' "$tmp/err" | head -1)"
kubectl -n "psa-privileged-$run_id" apply --dry-run=server -f "$tmp/agent-pod.json" >/dev/null 2>"$tmp/err" \
  || die "the node agent pod was refused under 'privileged': $(cat "$tmp/err")"
pass "node agent pod admitted under 'privileged'"
# The node agent without the device plugin needs no hostPath and no root: restricted.
helm template "$release" "$chart" -n "$ns" --set nodeAgent.devicePlugin.enabled=false >"$tmp/nodp.yaml"
pod_from_template DaemonSet "$release-node-agent" "$tmp/nodp.yaml" >"$tmp/agent-nodp-pod.json"
kubectl -n "psa-restricted-$run_id" apply --dry-run=server -f "$tmp/agent-nodp-pod.json" >/dev/null 2>"$tmp/err" \
  || die "the node agent without device plugin violates restricted: $(cat "$tmp/err")"
pass "node agent pod without the device plugin admitted under 'restricted'"

log "all checks passed"
