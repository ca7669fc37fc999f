#!/usr/bin/env bash
# Measures control-plane start time on a warm tool cache: N cycles of `make cluster-up` (which
# includes the warm `make tools` check) followed by `make cluster-down`, in a private state dir
# (so a shared plane in .cluster is not disturbed). Prints a table and the median, checks
# /readyz and `kubectl version` on the first cycle, and that no process or port is left.
#
# Usage: e2e/tools/bench-cluster.sh [cycles=5] [extra cluster.sh up flags, e.g. --all]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cycles="${1:-5}"; shift || true
export AUTOGLM_CLUSTER_DIR
AUTOGLM_CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/autoglm-bench-cluster.XXXXXX")"
rmdir "$AUTOGLM_CLUSTER_DIR"
kubectl="$root/.tools/bin/kubectl"
# On any failure, leave nothing behind.
trap '[[ -d "$AUTOGLM_CLUSTER_DIR" ]] && "$root/e2e/cluster.sh" down >/dev/null 2>&1 || true' EXIT
times=()
printf '| cycle | cluster-up (s) | cluster-down (s) |\n|---|---|---|\n'
for ((i = 1; i <= cycles; i++)); do
  t0=$(date +%s.%N)
  if [[ $# -gt 0 ]]; then
    make -s -C "$root" tools >/dev/null 2>&1 && "$root/e2e/cluster.sh" up "$@" 2>/dev/null
  else
    make -s -C "$root" cluster-up >/dev/null 2>&1
  fi
  t1=$(date +%s.%N)
  if (( i == 1 )); then
    readyz="$(KUBECONFIG="$AUTOGLM_CLUSTER_DIR/kubeconfig" "$kubectl" get --raw /readyz)"
    version="$(KUBECONFIG="$AUTOGLM_CLUSTER_DIR/kubeconfig" "$kubectl" version)"
    ports="$(grep -o '[0-9]\+' "$AUTOGLM_CLUSTER_DIR/ports.env" | paste -sd' ')"
    pids="$(cat "$AUTOGLM_CLUSTER_DIR"/pids/*.pid | paste -sd' ')"
  fi
  make -s -C "$root" cluster-down >/dev/null 2>&1
  t2=$(date +%s.%N)
  up=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}'); down=$(awk -v a="$t1" -v b="$t2" 'BEGIN{print b-a}')
  times+=("$up")
  printf '| %d | %.2f | %.2f |\n' "$i" "$up" "$down"
done
median="$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}')"
printf '\nmedian cluster-up: %.2f s over %d cycles (warm tool cache)\n' "$median" "$cycles"
echo "first cycle: kubectl get --raw /readyz -> $readyz"
echo "first cycle: kubectl version ->"; echo "$version" | sed 's/^/  /'
left=0
for p in $pids; do [[ -d /proc/$p ]] && { echo "LEFT: pid $p still running"; left=1; }; done
for port in $ports; do ss -Hltn "sport = :$port" | grep -q . && { echo "LEFT: port $port still listening"; left=1; }; done
[[ -e "$AUTOGLM_CLUSTER_DIR" ]] && { echo "LEFT: state dir $AUTOGLM_CLUSTER_DIR"; left=1; }
(( left )) || echo "after cluster-down: none of the recorded pids ($pids) runs, none of the ports ($ports) listens, state dir removed"
exit "$left"
