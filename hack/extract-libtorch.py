#!/usr/bin/env python3
"""Unpack the libtorch pieces the worker links from PyPI wheels (used by the Dockerfile).

    extract-libtorch.py OUT_DIR [WHEEL...]   (default: every *.whl in the current folder)

Writes OUT_DIR/include (torch's C++ headers, for building tch) and OUT_DIR/lib with
libtorch_cpu.so, libtorch.so, libc10.so, libgomp.so.1 from the torch wheel and libcudart.so.13,
libcupti.so.13 from the nvidia-cuda-runtime and nvidia-cuda-cupti wheels: libtorch_cpu.so
links those two even for CPU inference. About 490 MB instead of 4.7 GB for the installed
wheel. Exits non-zero, naming them, when a library is missing.
"""
import pathlib, shutil, sys, zipfile

out = pathlib.Path(sys.argv[1])
(out / "lib").mkdir(parents=True, exist_ok=True)
torch_libs = {"libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1"}
cuda_libs = {"libcudart.so.13", "libcupti.so.13"}
found = set()
wheels = [pathlib.Path(p) for p in sys.argv[2:]] or sorted(pathlib.Path(".").glob("*.whl"))
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = name.rsplit("/", 1)[-1]
            if name.startswith("torch/include/") and not name.endswith("/"):
                dest = out / name[len("torch/"):]
            elif (name.startswith("torch/lib/") and base in torch_libs) or base in cuda_libs:
                dest = out / "lib" / base
                found.add(base)
            else:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
missing = (torch_libs | cuda_libs) - found
if missing:
    sys.exit(f"failed to find {sorted(missing)} in the downloaded wheels")
