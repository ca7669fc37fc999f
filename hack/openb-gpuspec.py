#!/usr/bin/env python3
"""Rebuild the FGD paper's `openb_pod_list_gpuspec<NN>.csv` lists from the default list.

The published gpuspec lists (alibaba/clusterdata, cluster-trace-gpu-v2023/csv) are the
default list, row for row, with the `gpu_spec` column filled in for NN% of the GPU pods.
`crates/scheduler/data/openb-gpuspec/gpuspec<NN>.csv` keeps only those filled-in rows
(name, num_gpu, gpu_milli, gpu_spec); this script puts them back into the default list and
checks the result against the published file's size in characters.

Usage: hack/openb-gpuspec.py [OUT_DIR] (default: target/openb-gpuspec). Needs
../shared/data/alibaba-openb/openb_pod_list_default.csv next to the checkout.
"""
import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "..", "shared", "data", "alibaba-openb", "openb_pod_list_default.csv")
SPECS = os.path.join(ROOT, "crates", "scheduler", "data", "openb-gpuspec")
# Characters of each published file (read_file of the GitHub copy, 2026-11-30).
PUBLISHED_CHARS = {"05": 577176, "10": 579461, "20": 582612, "25": 584915, "33": 587467}


def main() -> int:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "openb-gpuspec")
    os.makedirs(out_dir, exist_ok=True)
    with open(DEFAULT, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0].keys())
    by_name = {r["name"]: r for r in rows}
    for pct, chars in PUBLISHED_CHARS.items():
        spec = {}
        with open(os.path.join(SPECS, f"gpuspec{pct}.csv"), newline="") as f:
            for r in csv.DictReader(f):
                base = by_name.get(r["name"])
                if base is None or (base["num_gpu"], base["gpu_milli"]) != (r["num_gpu"], r["gpu_milli"]):
                    print(f"gpuspec{pct}: {r['name']} does not match the default list", file=sys.stderr)
                    return 1
                if r["name"] in spec:
                    print(f"gpuspec{pct}: {r['name']} is listed twice", file=sys.stderr)
                    return 1
                spec[r["name"]] = r["gpu_spec"]
        path = os.path.join(out_dir, f"openb_pod_list_gpuspec{pct}.csv")
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({**r, "gpu_spec": spec.get(r["name"], "")})
        size = os.path.getsize(path)  # bytes; the lists are ASCII, so also characters
        status = "matches the published size" if size == chars else f"differs from the published {chars}"
        print(f"{path}: {len(spec)} of {len(rows)} pods name GPU types; {size} characters, {status}")
        if size != chars:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
