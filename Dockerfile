# syntax=docker/dockerfile:1.7
#
# Open-AutoGLM container images, one multi-stage file (BuildKit). Build one image per target:
#
#   docker build --target controller  -t open-autoglm/autoglm-controller:0.1.0  .
#   docker build --target node-agent  -t open-autoglm/autoglm-node-agent:0.1.0  .
#   docker build --target worker      -t open-autoglm/autoglm-worker:0.1.0      .
#   docker build --target worker-cuda -t open-autoglm/autoglm-worker:0.1.0-cuda .
#
# Stages (docs/install.md, "Images", has the sizes and the reasoning):
#   torch-cpu        libtorch for CPU inference, unpacked from PyPI wheels (no Python kept):
#                    torch/include and torch/lib/{libtorch_cpu,libtorch,libc10,libgomp} from
#                    torch==2.13.0, plus libcudart.so.13 and libcupti.so.13, which
#                    libtorch_cpu.so links even on CPU (two small CUDA runtime wheels).
#   torch-cuda       the full torch==2.13.0 wheel and its nvidia-* dependencies (cuBLAS, cuDNN,
#                    NCCL, ...) installed into a folder, for the CUDA worker.
#   builder          Rust toolchain and the workspace sources (shared by the three builds).
#   build-operator   autoglm-controller and autoglm-node-agent (release, --locked).
#   build-worker     autoglm-worker linked against torch-cpu (tch finds no libtorch_cuda.so
#                    there, so the binary needs no CUDA library beyond the two above).
#   build-worker-cuda autoglm-worker linked against torch-cuda (libtorch_cuda.so and friends).
#   controller       distroless "cc" (glibc, libgcc; no shell, no package manager), uid 65532.
#   node-agent       distroless "cc", uid 65532 by default; the chart runs it as uid 0 (no
#                    capabilities) when the device plugin must create its socket in the
#                    kubelet's root-owned directory. NVML (libnvidia-ml.so.1) is NOT in the
#                    image: it comes from the node's driver, injected by the NVIDIA container
#                    runtime or mounted by the chart, and is loaded at run time.
#   worker           Debian slim (libtorch needs libstdc++) plus the torch-cpu libraries and
#                    the CA roots (copied from the builder) for HTTPS object stores.
#   worker-cuda      Debian slim plus torch-cuda's libraries; the driver (libcuda.so) comes
#                    from the node through the NVIDIA container runtime.
#
# Checked with hadolint (`make docker-lint`); there is no Docker engine on the project's
# development and CI machines, so these images are built by users and by release pipelines.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie
ARG PYTHON_VERSION=3.12
# tch 0.26 is built for libtorch 2.13.0: keep these in step with hack/requirements.txt.
ARG TORCH_VERSION=2.13.0
ARG CUDA_RUNTIME_VERSION=13.0.96
ARG CUDA_CUPTI_VERSION=13.0.85

# ---- libtorch, CPU: only the libraries the worker links --------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS torch-cpu
ARG TORCH_VERSION
ARG CUDA_RUNTIME_VERSION
ARG CUDA_CUPTI_VERSION
WORKDIR /wheels
RUN pip download --no-cache-dir --no-deps --only-binary=:all: --dest /wheels \
        "torch==${TORCH_VERSION}" \
        "nvidia-cuda-runtime==${CUDA_RUNTIME_VERSION}" \
        "nvidia-cuda-cupti==${CUDA_CUPTI_VERSION}"
# Unzip only what tch needs (about 490 MB instead of the wheel's 4.7 GB installed).
COPY hack/extract-libtorch.py /usr/local/bin/extract-libtorch.py
RUN python /usr/local/bin/extract-libtorch.py /opt/libtorch && rm -f /wheels/*.whl

# ---- libtorch, CUDA: the whole wheel and its CUDA libraries ----------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS torch-cuda
ARG TORCH_VERSION
RUN pip install --no-cache-dir --only-binary=:all: --target /opt/pytorch "torch==${TORCH_VERSION}" \
 && mkdir -p /opt/cuda-libs \
 && cp -a /opt/pytorch/nvidia/*/lib/*.so* /opt/cuda-libs/

# ---- Rust builder -----------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates

FROM builder AS build-operator
# protoc comes from the protoc-bin-vendored crate (node agent's build.rs): no apt packages.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-operator \
    cargo build --release --locked -p autoglm-controller -p autoglm-node-agent \
 && mkdir -p /out \
 && cp target/release/autoglm-controller target/release/autoglm-node-agent /out/

FROM builder AS build-worker
COPY --from=torch-cpu /opt/libtorch /opt/libtorch
ENV LIBTORCH=/opt/libtorch \
    LD_LIBRARY_PATH=/opt/libtorch/lib
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-worker \
    cargo build --release --locked -p autoglm-worker \
 && mkdir -p /out \
 && cp target/release/autoglm-worker /out/

FROM builder AS build-worker-cuda
COPY --from=torch-cuda /opt/pytorch/torch/include /opt/libtorch/include
COPY --from=torch-cuda /opt/pytorch/torch/lib /opt/libtorch/lib
COPY --from=torch-cuda /opt/cuda-libs /opt/cuda-libs
ENV LIBTORCH=/opt/libtorch \
    LD_LIBRARY_PATH=/opt/libtorch/lib:/opt/cuda-libs
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-worker-cuda \
    cargo build --release --locked -p autoglm-worker \
 && mkdir -p /out \
 && cp target/release/autoglm-worker /out/

# ---- runtime images ---------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian13:nonroot AS controller
LABEL org.opencontainers.image.title="autoglm-controller" \
      org.opencontainers.image.description="Open-AutoGLM controller: InferenceJob reconciler and GPU-aware secondary scheduler" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-operator /out/autoglm-controller /usr/local/bin/autoglm-controller
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/autoglm-controller"]

FROM gcr.io/distroless/cc-debian13:nonroot AS node-agent
LABEL org.opencontainers.image.title="autoglm-node-agent" \
      org.opencontainers.image.description="Open-AutoGLM node agent: NVML GPU inventory and kubelet device plugin" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build-operator /out/autoglm-node-agent /usr/local/bin/autoglm-node-agent
USER 65532:65532
EXPOSE 9400
ENTRYPOINT ["/usr/local/bin/autoglm-node-agent"]

FROM debian:${DEBIAN_RELEASE}-slim AS worker
LABEL org.opencontainers.image.title="autoglm-worker" \
      org.opencontainers.image.description="Open-AutoGLM inference worker (libtorch, CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# CA roots for HTTPS object stores (S3, GCS, Azure); slim Debian ships none.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=torch-cpu /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build-worker /out/autoglm-worker /usr/local/bin/autoglm-worker
# Idle OpenMP threads sleep instead of spinning (throughput collapsed 10-40x on shared CPUs
# with spinning, issue 5).
ENV LD_LIBRARY_PATH=/opt/libtorch/lib \
    OMP_WAIT_POLICY=passive
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/autoglm-worker"]

FROM debian:${DEBIAN_RELEASE}-slim AS worker-cuda
LABEL org.opencontainers.image.title="autoglm-worker" \
      org.opencontainers.image.description="Open-AutoGLM inference worker (libtorch, CUDA 13)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=torch-cuda /opt/pytorch/torch/lib /opt/libtorch/lib
COPY --from=torch-cuda /opt/cuda-libs /opt/cuda-libs
COPY --from=build-worker-cuda /out/autoglm-worker /usr/local/bin/autoglm-worker
# The NVIDIA container runtime adds the driver (libcuda.so) and device nodes for the GPUs the
# device plugin allocated; these variables ask it for compute only.
ENV LD_LIBRARY_PATH=/opt/libtorch/lib:/opt/cuda-libs \
    OMP_WAIT_POLICY=passive \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/autoglm-worker"]
