# The two commands of the README: `make up` runs the whole stack locally, `make test` runs every
# test. Everything else here is a step of those two.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := source .tools/env

.PHONY: up test bootstrap build build-release lint test-rust test-conformance test-scripts validate-deploy images bench clean-tools

up: bootstrap build-release
	$(ENV) && scripts/up.sh

test: bootstrap lint build test-rust test-conformance test-scripts validate-deploy
	@echo "make test: all suites passed"

bootstrap:
	@scripts/bootstrap.sh

# The binaries, and libauthz_module.so (a cdylib, which `--bins` does not build) for the
# embedded mode and its tests.
build:
	$(ENV) && cargo build --workspace --locked --bins && cargo build --locked -p envoy-module --lib

build-release:
	$(ENV) && cargo build --workspace --locked --release --bins \
		&& cargo build --locked --release -p envoy-module --lib

lint:
	cargo fmt --all -- --check
	$(ENV) && cargo clippy --workspace --locked --all-targets -- -D warnings
	$(ENV) && RUSTDOCFLAGS="-D warnings" cargo doc --workspace --locked --no-deps

test-rust:
	$(ENV) && cargo test --workspace --locked

test-conformance:
	$(ENV) && pytest -q tests/conformance

test-scripts:
	$(ENV) && pytest -q tests/scripts

validate-deploy:
	scripts/validate-deploy.sh

# Build and push the images the Kubernetes manifests run, then print the overlay edit:
#   REGISTRY=ghcr.io/you TAG=0.1.0 make images      (IMAGES_FLAGS=--dry-run prints the commands only)
# Needs a container engine; not part of `make test` (tests/scripts covers the script's dry run).
images:
	scripts/images.sh $(IMAGES_FLAGS)

bench: bootstrap build-release
	$(ENV) && cargo build --locked --release -p authz --example ext_authz_floor && scripts/bench.sh

clean-tools:
	rm -rf .tools
