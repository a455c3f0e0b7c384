# syntax=docker/dockerfile:1.7
# modelserver on ONNX Runtime, CPU. Build from the repository root:
#   docker build -f deploy/docker/modelserver.Dockerfile -t inference-gateway/modelserver .
# libonnxruntime comes from the `onnxruntime` PyPI wheel (the same pinned version the local
# bootstrap uses); the `ort` crate loads it at run time from ORT_DYLIB_PATH.

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
# Only the wheel's shared library is kept; Python is not in the runtime image.
RUN pip install --no-cache-dir --no-deps --target /wheel "onnxruntime==${ORT_VERSION}" \
 && install -D -m 0644 "$(ls /wheel/onnxruntime/capi/libonnxruntime.so.* | head -n1)" /out/opt/onnxruntime/lib/libonnxruntime.so

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
COPY --from=ort /out/opt/onnxruntime /opt/onnxruntime
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so
USER 65532:65532
# Triton's ports: 8000 OIP REST, 8001 OIP gRPC + grpc.health.v1, 8002 /metrics.
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/httpprobe", "http://127.0.0.1:8000/v2/health/ready"]
ENTRYPOINT ["/usr/local/bin/modelserver"]
CMD ["serve", "--model-repository", "/models", "--http-port", "8000", "--grpc-port", "8001", "--metrics-port", "8002"]
