#!/usr/bin/env bash
# Installs what the local control plane needs on a fresh machine, then builds the tools.
# Meant to be called by .ci/run (as root, like CI) before `make test`:
#   bash e2e/tools/ci-install.sh
# - Debian packages: openssl (certificates), curl (health checks), iproute2 (ss: free ports),
#   util-linux (flock, setsid). Installed only when a command is missing.
# - Go >= 1.26 must already be on PATH (it is on this project's machines: /usr/local/go).
# - `make tools` (cold: builds etcd, Kubernetes, kwok and helm from the Go module proxy; warm:
#   seconds). The binaries are cached under ${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}/tools.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

missing=()
for pair in openssl:openssl curl:curl ss:iproute2 flock:util-linux setsid:util-linux; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "ci-install: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [[ -x /usr/local/go/bin/go && ":$PATH:" != *":/usr/local/go/bin:"* ]]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null || { echo "ci-install: Go >= 1.26 is required (not found)" >&2; exit 1; }
make -C "$root" tools
