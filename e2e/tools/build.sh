#!/usr/bin/env bash
# Builds the pinned control-plane tools (called by `make tools`):
#   kube-apiserver, kubectl, kube-scheduler, kube-controller-manager  (k8s.io/kubernetes)
#   etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok), helm (helm.sh/helm/v3)
# from the wrapper Go modules next to this script (versions in versions.env), with
# CGO_ENABLED=0 and the version ldflags, into a cache OUTSIDE the checkout:
#   ${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}/tools/<component>-<version>-<hash>/bin
# where <hash> covers the wrapper go.mod/go.sum, the Go version and the build recipe; then
# symlinks every binary into <checkout>/.tools/bin/. Idempotent: a warm run only checks
# the cache and relinks (seconds). Safe to run concurrently (flock per component).
#
# Usage: e2e/tools/build.sh [component...]   (kubernetes etcd kwok helm; default all)
# Env:   AUTOGLM_CACHE  cache root;  AUTOGLM_TOOLS_NICE  nice level of the Go build (10)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}/tools"
bindir="$root/.tools/bin"
nice_level="${AUTOGLM_TOOLS_NICE:-10}"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# A fresh shell may lack Go's default install dir on PATH.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then export PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null || { echo "tools: 'go' not found on PATH (need Go >= 1.26; see README 'Control plane')" >&2; exit 1; }
go_version="$(go env GOVERSION)"
mkdir -p "$cache" "$bindir"

log() { printf 'tools: %s\n' "$*" >&2; }

# Time of the upstream tag as served by the module proxy: used as buildDate (reproducible).
tag_time() {
  local info
  info="$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p')"
  sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info"
}

# recipe_<component>: sets `pkgs` (package=output-name pairs) and `ldflags`.
recipe_kubernetes() {
  local minor date pkg
  IFS=. read -r _ minor _ <<<"${KUBERNETES_VERSION#v}"
  date="$(tag_time "k8s.io/kubernetes@$KUBERNETES_VERSION")"
  ldflags="-s -w"
  # Both packages carry the version: component-base for the servers' /version, client-go's for
  # clients built on it (kubectl prints its client version from component-base too).
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=archive -X $pkg.buildDate=$date"
  done
  pkgs=(k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver k8s.io/kubernetes/cmd/kubectl=kubectl
        k8s.io/kubernetes/cmd/kube-scheduler=kube-scheduler
        k8s.io/kubernetes/cmd/kube-controller-manager=kube-controller-manager)
  version="$KUBERNETES_VERSION"
}
recipe_etcd() {
  ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-proxy-$ETCD_VERSION"
  pkgs=(go.etcd.io/etcd/server/v3=etcd)
  version="$ETCD_VERSION"
}
recipe_kwok() {
  ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}"
  pkgs=(sigs.k8s.io/kwok/cmd/kwok=kwok)
  extra_key="stages: node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete"
  version="$KWOK_VERSION"
}
recipe_helm() {
  # Helm's default .Capabilities.KubeVersion comes from these (its Makefile derives them from
  # the client-go it is built with).
  local cg minor
  cg="$(cd "$here/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)"
  IFS=. read -r _ minor _ <<<"${cg#v}"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  pkgs=(helm.sh/helm/v3/cmd/helm=helm)
  version="$HELM_VERSION"
}

build_component() { # <component>
  local c="$1" pkgs=() ldflags="" version="" extra_key="" key dest tmp start p
  "recipe_$c"
  key="$c-$version-$( { echo "$go_version"; echo "$ldflags"; [[ -z "$extra_key" ]] || echo "$extra_key"; printf '%s\n' "${pkgs[@]}"; cat "$here/$c/go.mod" "$here/$c/go.sum"; } | sha256sum | cut -c1-12)"
  dest="$cache/$key"
  if [[ ! -f "$dest/.complete" ]]; then
    exec 9>"$cache/.$c.lock"
    flock 9
    if [[ ! -f "$dest/.complete" ]]; then
      log "building $c $version -> $dest (cold build: minutes; log below)"
      start=$(date +%s)
      rm -rf "$dest"
      tmp="$(mktemp -d "$cache/.tmp-$key.XXXXXX")"
      mkdir -p "$tmp/bin"
      for p in "${pkgs[@]}"; do
        local t0=$(date +%s)
        (cd "$here/$c" && nice -n "$nice_level" go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/${p#*=}" "${p%%=*}")
        log "  built ${p#*=} in $(( $(date +%s) - t0 )) s"
      done
      if [[ "$c" == kwok ]]; then
        # The kwok binary embeds no stages (kwokctl passes them); ship the ones kwokctl uses
        # by default (node initialize + heartbeat with lease, pod ready/complete/delete).
        local src
        src="$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
        mkdir -p "$tmp/share/kwok"
        for p in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
                 pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
          echo "---"; cat "$src/$p"
        done >"$tmp/share/kwok/stages.yaml"
      fi
      { echo "component=$c"; echo "version=$version"; echo "go=$go_version"; echo "ldflags=$ldflags"; } >"$tmp/BUILDINFO"
      touch "$tmp/.complete"
      mv -T "$tmp" "$dest"
      log "built $c in $(( $(date +%s) - start )) s"
    fi
    flock -u 9
    exec 9>&-
  else
    log "$c $version cached ($dest)"
  fi
  for p in "$dest"/bin/*; do
    ln -sfn "$p" "$bindir/$(basename "$p")"
  done
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(etcd kubernetes kwok helm)
all_start=$(date +%s)
for c in "${components[@]}"; do
  case "$c" in
    kubernetes|etcd|kwok|helm) build_component "$c" ;;
    *) log "unknown component '$c' (kubernetes|etcd|kwok|helm)"; exit 2 ;;
  esac
done
log "done in $(( $(date +%s) - all_start )) s; binaries linked into $bindir"
