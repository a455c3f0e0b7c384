# syntax=docker/dockerfile:1.7
# modelserver on ONNX Runtime with the CUDA execution provider. Build from the repository root:
#   docker build -f deploy/docker/modelserver-gpu.Dockerfile -t inference-gateway/modelserver-gpu .
# The `onnxruntime-gpu` wheel's libraries (libonnxruntime plus the CUDA provider) are copied onto an
# NVIDIA CUDA + cuDNN runtime base, whose CUDA major version must be the one the pinned
# onnxruntime-gpu release is built for (see docs/operations.md, "GPU images").
# The Rust build runs on Debian 12 (glibc 2.36); the Ubuntu 24.04 base has glibc 2.39, so the binary runs.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p modelserver \
 && install -D -m 0755 target/release/modelserver /out/usr/local/bin/modelserver \
 && rustc --edition 2021 -O -o /out/usr/local/bin/httpprobe deploy/docker/httpprobe.rs

FROM python:3.12-slim-bookworm AS ort
ARG ORT_VERSION=1.31.1
RUN pip install --no-cache-dir --no-deps --target /wheel "onnxruntime-gpu==${ORT_VERSION}" \
 && mkdir -p /out/opt/onnxruntime/lib \
 && cp -a /wheel/onnxruntime/capi/libonnxruntime*.so* /out/opt/onnxruntime/lib/ \
 && ln -sf "$(cd /out/opt/onnxruntime/lib && ls libonnxruntime.so.* | head -n1)" /out/opt/onnxruntime/lib/libonnxruntime.so

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
# A fixed non-root uid/gid, the same as the distroless images, so volume ownership matches.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
COPY --from=ort /out/opt/onnxruntime /opt/onnxruntime
# The CUDA provider library is found next to libonnxruntime.
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so \
    LD_LIBRARY_PATH=/opt/onnxruntime/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/httpprobe", "http://127.0.0.1:8000/v2/health/ready"]
ENTRYPOINT ["/usr/local/bin/modelserver"]
CMD ["serve", "--model-repository", "/models", "--http-port", "8000", "--grpc-port", "8001", "--metrics-port", "8002"]
