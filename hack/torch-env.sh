#!/usr/bin/env bash
# Python venv with torch 2.13.0 (libtorch for the `tch` crate) plus the packages used to export
# the model and compute the sentence-transformers reference.
#
#   hack/torch-env.sh setup   create the venv (idempotent; about 2.7 GB download, 4.7 GB on disk)
#   hack/torch-env.sh env     print `export` lines; use as: eval "$(hack/torch-env.sh env)"
#   hack/torch-env.sh path    print the venv folder
#
# Cached outside the checkout under ${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}/torch-2.13.0,
# keyed by the torch version; the requirements file's SHA-256 is recorded so a changed pin
# reinstalls.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${AUTOGLM_CACHE:-$HOME/.cache/open-autoglm}"
torch_version="2.13.0"
venv="$cache/torch-$torch_version/venv"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

req_hash() { sha256sum "$req" | cut -d' ' -f1; }

site_packages() {
  "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

cmd_setup() {
  local marker="$venv/.autoglm-requirements.sha256"
  if [[ -f "$marker" && "$(cat "$marker")" == "$(req_hash)" ]]; then
    echo "torch-env: $venv is up to date" >&2
    return 0
  fi
  mkdir -p "$(dirname "$venv")"
  if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$req"
  "$venv/bin/python" -c "import torch; assert torch.__version__.startswith('$torch_version'), torch.__version__"
  req_hash >"$marker"
  echo "torch-env: ready at $venv" >&2
}

cmd_env() {
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "torch-env: no venv at $venv; run 'hack/torch-env.sh setup' (or 'make torch') first" >&2
    exit 1
  fi
  local sp torch_lib cuda_libs
  sp="$(site_packages)"
  torch_lib="$sp/torch/lib"
  # The CUDA runtime/CUPTI libraries that libtorch_cpu.so links against even on CPU; their
  # folder depends on the nvidia wheel layout (nvidia/cu13/lib for CUDA 13 wheels).
  cuda_libs="$(find "$sp/nvidia" -name 'libcudart.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -)"
  local cupti
  cupti="$(find "$sp/nvidia" -name 'libcupti.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -)"
  [[ -n "$cupti" && "$cupti" != "$cuda_libs" ]] && cuda_libs="$cuda_libs:$cupti"
  echo "export VIRTUAL_ENV='$venv'"
  echo "export PATH='$venv/bin':\"\$PATH\""
  echo "export LIBTORCH_USE_PYTORCH=1"
  echo "export AUTOGLM_TORCH_LIB='$torch_lib'"
  echo "export AUTOGLM_CUDA_LIBS='$cuda_libs'"
  echo "export LD_LIBRARY_PATH='$torch_lib${cuda_libs:+:$cuda_libs}'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  # Idle OpenMP threads sleep instead of spinning: with spinning, throughput on a shared
  # 2-core machine collapsed 10-40x (issue 5).
  echo "export OMP_WAIT_POLICY=passive"
  echo "export HF_HUB_OFFLINE=1"
  echo "export TRANSFORMERS_OFFLINE=1"
}

case "${1:-}" in
  setup) cmd_setup ;;
  env) cmd_env ;;
  path) echo "$venv" ;;
  *) echo "usage: $0 setup|env|path" >&2; exit 2 ;;
esac
