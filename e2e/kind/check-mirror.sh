#!/usr/bin/env bash
# Checks that e2e/kind/run.sh takes every step of `make demo` (hack/demo.sh): the step names
# (the words before the colon in their `say "<step>: ..."` lines) of the demo must all appear
# in the kind script. Run by `make shell-lint`; prints both lists on failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
steps() { sed -n 's/^[[:space:]]*say "\([^":$]*\)[:"].*/\1/p' "$1" | sort -u; }

demo="$(steps "$root/hack/demo.sh")"
kind="$(steps "$root/e2e/kind/run.sh")"
[[ -n "$demo" ]] || { echo "check-mirror: no steps found in hack/demo.sh" >&2; exit 1; }
missing="$(comm -23 <(echo "$demo") <(echo "$kind"))"
if [[ -n "$missing" ]]; then
  echo "check-mirror: e2e/kind/run.sh lacks these steps of hack/demo.sh:" >&2
  while read -r step; do echo "  $step" >&2; done <<<"$missing"
  exit 1
fi
echo "check-mirror: e2e/kind/run.sh takes all $(wc -l <<<"$demo") steps of hack/demo.sh: $(paste -sd, <<<"$demo")" >&2
