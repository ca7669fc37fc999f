#!/usr/bin/env bash
# `make test`: every check CI runs, in the order that fails fastest.
#   1. static checks: rustfmt, clippy -D warnings, generated-file drift (CRDs, chart schema,
#      manifests), helm lint, hadolint, shellcheck;
#   2. the install checks (helm template | kubectl apply --dry-run=server; the rendered RBAC
#      exercised by the real binaries), each on a fresh control plane of its own when none
#      is running, so objects left by other tests cannot mask or break them;
#   3. one local control plane (etcd + kube-apiserver + kube-controller-manager + KWOK) for
#      every integration test, stopped again on exit;
#   4. `cargo test --workspace` (unit, property, and integration tests against that plane;
#      the worker's tests use libtorch from the cached torch venv).
# Needs `make tools` and `make worker-assets` first (.ci/run does both; both are cached).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

start=$(date +%s)
step() { printf '\n== make test: %s (%ds)\n' "$*" "$(($(date +%s) - start))"; }

# libtorch for tch (worker crate) and the Python reference used by the worker's tests.
eval "$(hack/torch-env.sh env)"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "rustfmt"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "generated files are up to date (CRDs, chart schema, manifests)"
make --no-print-directory crds-check manifests-check
step "helm lint, hadolint, shellcheck"
make --no-print-directory helm-lint docker-lint shell-lint

step "install checks (each on its own control plane)"
make --no-print-directory helm-check rbac-check

step "local control plane"
started=false
if ! e2e/cluster.sh status >/dev/null 2>&1; then started=true; fi
cleanup() { if [[ "$started" == true ]]; then e2e/cluster.sh down >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT
e2e/cluster.sh up --with-controller-manager --with-kwok
eval "$(e2e/cluster.sh env)"

step "cargo test --workspace"
# Integration tests share one control plane; each test binary runs on its own (cargo's
# default), and inside a binary the tests use their own namespaces.
cargo test --workspace

step "all checks passed"
