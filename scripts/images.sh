#!/usr/bin/env bash
# Builds the service images from deploy/docker/*.Dockerfile, pushes them to your registry, and
# prints the edit that points the Kubernetes overlays at what was pushed.
#
#   REGISTRY=ghcr.io/you TAG=0.1.0 scripts/images.sh            # or: REGISTRY=ghcr.io/you make images
#   REGISTRY=ghcr.io/you scripts/images.sh --dry-run            # print the commands, run nothing
#
# REGISTRY  required: where the images go (`ghcr.io/you`, `registry.example.com/ml`); no default,
#           because the manifests' `inference-gateway/...` names are published nowhere.
# TAG       default: the workspace version in Cargo.toml.
# DOCKER    default `docker`; `podman` speaks the same commands.
#
# Every deploy/docker/NAME.Dockerfile becomes $REGISTRY/NAME:$TAG, built from the repository root
# (the Dockerfiles COPY the workspace; .dockerignore keeps the context small). The manifests call
# the same image `inference-gateway/NAME`, so the overlay edit is derived from each overlay's
# `images:` list; an overlay image without a Dockerfile here is an error rather than a silent skip.
# After a real push the edit pins each image by the digest the registry returned (what
# docs/operations.md, "Releasing images", recommends: a tag can be moved, a digest cannot); a dry
# run cannot know digests and prints the tag form.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { printf 'images.sh: %s\n' "$*" >&2; exit 1; }

dry_run=false
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=true ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $arg" ;;
  esac
done

DOCKER="${DOCKER:-docker}"
REGISTRY="${REGISTRY:-}"
REGISTRY="${REGISTRY%/}"
workspace_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
TAG="${TAG:-$workspace_version}"

[[ -n "$REGISTRY" ]] || die "REGISTRY is required, e.g. REGISTRY=ghcr.io/you TAG=${TAG:-0.1.0} make images"
# Registries reject upper case in repository names; a scheme is a common slip (`https://ghcr.io/...`).
[[ "$REGISTRY" =~ ^[a-z0-9]([a-z0-9._:-]*[a-z0-9])?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$ ]] \
  || die "REGISTRY '$REGISTRY' is not a registry/namespace (lower case, no scheme), e.g. ghcr.io/you"
[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "TAG '$TAG' is not a valid image tag"

# The images this repository builds: one per Dockerfile, named after it.
mapfile -t dockerfiles < <(ls deploy/docker/*.Dockerfile)
((${#dockerfiles[@]})) || die "no Dockerfiles in deploy/docker"
declare -A built=()  # NAME -> $REGISTRY/NAME:$TAG
names=()
for f in "${dockerfiles[@]}"; do
  name="$(basename "$f" .Dockerfile)"
  names+=("$name")
  built[$name]="$REGISTRY/$name:$TAG"
done

# Prints "NAME NEWNAME" for each entry of an overlay's `images:` list (NEWNAME = NAME when the
# entry does not rename). The overlays keep the block form `- name:` / `newName:`; anything else
# is reported below as an image without a Dockerfile.
overlay_images() {
  awk '
    /^images:/ { in_images = 1; next }
    /^[^ #-]/ { if (in_images && name != "") print name, (new != "" ? new : name); in_images = 0; name = "" }
    in_images && /^ *- *name:/ { if (name != "") print name, (new != "" ? new : name); sub(/^ *- *name: */, ""); name = $0; new = ""; next }
    in_images && /^ *newName:/ { sub(/^ *newName: */, ""); new = $0; next }
    END { if (in_images && name != "") print name, (new != "" ? new : name) }
  ' "$1"
}

run() {
  # Shell-quoted, so a dry run prints lines that can be pasted as they are.
  local quoted
  printf -v quoted '%q ' "$@"
  if $dry_run; then
    printf '%s\n' "${quoted% }"
  else
    printf '+ %s\n' "${quoted% }" >&2
    "$@"
  fi
}

if ! $dry_run; then
  command -v "$DOCKER" >/dev/null 2>&1 \
    || die "'$DOCKER' not found: install Docker (or set DOCKER=podman); --dry-run prints the commands without an engine"
  # `docker build` needs a running engine; say so before the first build rather than after it.
  if ! engine_error="$("$DOCKER" info 2>&1 >/dev/null)"; then
    die "cannot reach a container engine ('$DOCKER info' failed: ${engine_error##*$'\n'}). Start Docker or Podman, or point DOCKER_HOST at one; --dry-run prints the commands without an engine"
  fi
fi

$dry_run && echo "# build and push (from the repository root):"
for name in "${names[@]}"; do
  # BuildKit: the Dockerfiles use cache mounts (`RUN --mount=type=cache`).
  if ! run env DOCKER_BUILDKIT=1 "$DOCKER" build -f "deploy/docker/$name.Dockerfile" -t "${built[$name]}" .; then
    die "building deploy/docker/$name.Dockerfile failed (output above)"
  fi
done
declare -A pinned=()  # NAME -> the reference the overlays should use
for name in "${names[@]}"; do
  run "$DOCKER" push "${built[$name]}" || die "pushing ${built[$name]} failed (logged in to $REGISTRY?)"
  pinned[$name]="${built[$name]}"
  if ! $dry_run; then
    # RepoDigests lists REGISTRY/NAME@sha256:... once the registry has answered the push.
    digest="$("$DOCKER" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "${built[$name]}" \
      | grep -m1 "^$REGISTRY/$name@sha256:" || true)"
    if [[ -n "$digest" ]]; then
      pinned[$name]="$digest"
    else
      printf 'images.sh: no digest reported for %s; the overlay edit below uses the tag\n' "${built[$name]}" >&2
    fi
  fi
done

echo
echo "# Point the overlays at the pushed images (kustomize v5, https://kubectl.docs.kubernetes.io):"
declare -A used=()
edits_yaml=""
for kustomization in k8s/overlays/*/kustomization.yaml; do
  overlay="$(dirname "$kustomization")"
  args=()
  edits_yaml+=$'\n'"# $kustomization"$'\n'"images:"$'\n'
  while read -r image new_name; do
    name="${new_name##*/}"
    [[ -n "${built[$name]:-}" ]] \
      || die "$kustomization: image $image ($new_name) has no deploy/docker/$name.Dockerfile to build it from"
    used[$name]=1
    args+=("$image=${pinned[$name]}")
    ref="${pinned[$name]}"
    edits_yaml+="  - name: $image"$'\n'
    if [[ "$ref" == *@sha256:* ]]; then
      edits_yaml+="    newName: ${ref%@*}"$'\n'"    digest: ${ref#*@}"$'\n'
    else
      edits_yaml+="    newName: ${ref%:*}"$'\n'"    newTag: ${ref##*:}"$'\n'
    fi
  done < <(overlay_images "$kustomization")
  ((${#args[@]})) || die "$kustomization has no images: list to edit"
  printf '(cd %q && kustomize edit set image %s)\n' "$overlay" "${args[*]}"
done
echo
echo "# Without kustomize: the same edit, as each overlay's images: list."
printf '%s' "${edits_yaml#$'\n'}"
for name in "${names[@]}"; do
  [[ -n "${used[$name]:-}" ]] || printf 'images.sh: note: %s is built but no overlay uses it\n' "${built[$name]}" >&2
done
