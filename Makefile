# Open-AutoGLM developer entry points. Run `make help` for the list.
# Everything heavy (Go-built control plane, libtorch) is cached outside the checkout under
# $(AUTOGLM_CACHE), keyed by pinned versions, so a fresh clone on the same machine reuses it.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
export AUTOGLM_CACHE ?= $(HOME)/.cache/open-autoglm
CARGO ?= cargo

.PHONY: help
help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

## ---- control plane (issue 2) ----
.PHONY: tools cluster-up cluster-down
tools: ## build etcd, kube-apiserver, kubectl, kube-scheduler, kube-controller-manager, kwok, helm (cached)
	e2e/tools/build.sh

cluster-up: tools ## start a local control plane (etcd + kube-apiserver) on loopback
	e2e/cluster.sh up

cluster-down: ## stop the local control plane and remove its state
	e2e/cluster.sh down

## ---- API (issue 3) ----
.PHONY: crds
crds: ## regenerate crds/ (and the chart's copy) from the Rust types
	$(CARGO) run --quiet -p autoglm-api --bin crdgen -- --out crds

## ---- libtorch (issue 5) ----
.PHONY: torch
torch: ## create the cached Python venv with torch 2.13.0 (libtorch for tch) and the model packages
	hack/torch-env.sh setup

## ---- checks and tests ----
.PHONY: fmt lint test
fmt: ## format the code
	$(CARGO) fmt --all

lint: ## rustfmt check, clippy with -D warnings, generated-file drift
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: ## everything CI checks: lint, drift checks, unit, property and integration tests
	$(MAKE) lint
	$(CARGO) test --workspace
