# syntax=docker/dockerfile:1.7
# authz: the ext_authz decision service. Build from the repository root:
#   docker build -f deploy/docker/authz.Dockerfile -t inference-gateway/authz .
# Runtime: distroless (glibc + libstdc++ + CA certificates, no shell, no package manager), uid 65532.

FROM rust:1.95-bookworm AS build
# protoc for tonic-prost-build (build scripts compile the gRPC protos).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p authz \
 && install -D -m 0755 target/release/authz /out/usr/local/bin/authz \
 && rustc --edition 2021 -O -o /out/usr/local/bin/httpprobe deploy/docker/httpprobe.rs \
 && install -d -m 0750 /out/var/lib/authz/audit /out/var/lib/authz/dev /out/var/lib/authz/witness

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/ /usr/local/bin/
# The audit, dev-key and witness directories exist and belong to the runtime user, so fresh named volumes
# mounted there inherit a writable owner.
COPY --from=build --chown=65532:65532 /out/var/lib/authz /var/lib/authz
USER 65532:65532
# 9001 gRPC (ext_authz + grpc.health.v1), 9002 admin HTTP (/healthz, /readyz, /metrics).
EXPOSE 9001 9002
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/httpprobe", "http://127.0.0.1:9002/readyz"]
ENTRYPOINT ["/usr/local/bin/authz"]
CMD ["serve", "--config", "/etc/authz/authz.toml"]
