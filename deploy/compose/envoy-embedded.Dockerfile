# syntax=docker/dockerfile:1.7
# Envoy with authz inside it (the embedded mode, docs/embedded.md): the Envoy image the gateway
# runs, plus libauthz_module.so where ENVOY_DYNAMIC_MODULES_SEARCH_PATH points. Build from the
# repository root:
#   docker build -f deploy/compose/envoy-embedded.Dockerfile -t inference-gateway/envoy-embedded .
# The module is built against the Envoy 1.40 dynamic-module ABI (v0.2.0): keep the two tags in step.

FROM rust:1.95-bookworm AS build
# protoc for tonic-prost-build (authz's build script compiles the gRPC protos).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p envoy-module \
 && install -D -m 0644 target/release/libauthz_module.so /out/libauthz_module.so

FROM envoyproxy/envoy:v1.40.0
COPY --from=build /out/libauthz_module.so /usr/local/lib/envoy/modules/libauthz_module.so
ENV ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib/envoy/modules
# The audit directory exists and belongs to the runtime user, so a fresh named volume mounted
# there inherits a writable owner (the module writes the hash-chained audit log in-process).
RUN install -d -o 65532 -g 65532 -m 0750 /var/lib/authz/audit
USER 65532:65532
# 8080 ingress, 9901 Envoy's stats listener, 9002 authz's admin routes (/metrics, /readyz).
EXPOSE 8080 9901 9002
# Ready when the module's pipeline is (audit log writable, signing keys loaded).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9002 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1.[01] 200' <&3"]
