"""scripts/images.sh: the build-and-push path for the images the Kubernetes manifests run.

No container engine runs here, so the real builds are not exercised. What is: the dry run prints
one build and one push per deploy/docker/*.Dockerfile with names derived from REGISTRY and TAG, and
an overlay edit that, applied to a copy of k8s/, renders every built image from the registry
(`kubectl kustomize`); without a reachable engine the script stops before building and says why;
with an engine (a fake `docker` that records its arguments) it builds, pushes and pins the
overlays by the digests the registry reported.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "images.sh"
DOCKERFILES = sorted(p.name.removesuffix(".Dockerfile") for p in (ROOT / "deploy" / "docker").glob("*.Dockerfile"))
OVERLAYS = sorted(p.parent.name for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml"))
# A registry with a port and a nested namespace: the tag must be split at the last colon only.
REGISTRY = "registry.example.com:5000/ml-team"
TAG = "1.2.3-rc.1"

# Records each invocation; `info` fails when FAKE_NO_ENGINE is set (as docker does without a
# daemon); `image inspect` reports a digest per image, as after a push.
FAKE_DOCKER = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
  info) if [ -n "${FAKE_NO_ENGINE:-}" ]; then echo "Cannot connect to the Docker daemon at unix:///fake.sock. Is the docker daemon running?" >&2; exit 1; fi ;;
  image) ref="${@: -1}"; echo "${ref%:*}@sha256:$(printf '%s' "${ref%:*}" | sha256sum | cut -c1-64)" ;;
esac
exit 0
"""


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY", "TAG", "DOCKER")}
    full_env.update(env or {})
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)


def fake_docker(tmp_path: Path) -> tuple[Path, Path]:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    return docker, tmp_path / "docker.log"


def edit_commands(stdout: str) -> dict[str, dict[str, str]]:
    """overlay -> {manifest image name: new reference} from the printed `kustomize edit` lines."""
    out = {}
    for m in re.finditer(r"^\(cd k8s/overlays/(\S+) && kustomize edit set image (.+)\)$", stdout, re.M):
        out[m.group(1)] = dict(arg.split("=", 1) for arg in m.group(2).split())
    return out


def images_blocks(stdout: str) -> dict[str, list[dict]]:
    """overlay -> its printed `images:` list."""
    tail = stdout.split("# Without kustomize", 1)[1]
    out = {}
    for section in re.split(r"^# k8s/overlays/", tail, flags=re.M)[1:]:
        overlay, _, body = section.partition("/kustomization.yaml\n")
        out[overlay] = yaml.safe_load(body)["images"]
    return out


def test_dry_run_prints_a_build_and_push_per_dockerfile_named_from_registry_and_tag():
    r = run_script("--dry-run", env={"REGISTRY": REGISTRY, "TAG": TAG})
    assert r.returncode == 0, r.stderr
    assert DOCKERFILES, "no Dockerfiles found"
    builds = re.findall(r"^env DOCKER_BUILDKIT=1 docker build -f deploy/docker/(\S+)\.Dockerfile -t (\S+) \.$", r.stdout, re.M)
    pushes = re.findall(r"^docker push (\S+)$", r.stdout, re.M)
    assert sorted(builds) == sorted((n, f"{REGISTRY}/{n}:{TAG}") for n in DOCKERFILES)
    assert sorted(pushes) == sorted(f"{REGISTRY}/{n}:{TAG}" for n in DOCKERFILES)


def test_dry_run_overlay_edit_covers_every_overlay_image_and_every_dockerfile():
    r = run_script("--dry-run", env={"REGISTRY": REGISTRY, "TAG": TAG})
    assert r.returncode == 0, r.stderr
    edits = edit_commands(r.stdout)
    assert sorted(edits) == OVERLAYS
    for overlay in OVERLAYS:
        manifest_images = {i["name"] for i in yaml.safe_load((ROOT / "k8s/overlays" / overlay / "kustomization.yaml").read_text())["images"]}
        assert set(edits[overlay]) == manifest_images, overlay
    assert edits["cpu"]["inference-gateway/modelserver"] == f"{REGISTRY}/modelserver:{TAG}"
    assert edits["gpu"]["inference-gateway/modelserver"] == f"{REGISTRY}/modelserver-gpu:{TAG}"
    used = {ref for e in edits.values() for ref in e.values()}
    assert used == {f"{REGISTRY}/{n}:{TAG}" for n in DOCKERFILES}, "every built image is used by an overlay"
    # The `images:` form says the same as the commands.
    for overlay, entries in images_blocks(r.stdout).items():
        assert {e["name"]: f"{e['newName']}:{e['newTag']}" for e in entries} == edits[overlay]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
def test_printed_overlay_edit_renders_every_service_image_from_the_registry(tmp_path):
    r = run_script("--dry-run", env={"REGISTRY": REGISTRY, "TAG": TAG})
    assert r.returncode == 0, r.stderr
    k8s = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", k8s)
    expected_modelserver = {"cpu": "modelserver", "gpu": "modelserver-gpu"}
    for overlay, entries in images_blocks(r.stdout).items():
        path = k8s / "overlays" / overlay / "kustomization.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["images"] = entries
        path.write_text(yaml.safe_dump(doc))
        rendered = subprocess.run(["kubectl", "kustomize", str(path.parent)], capture_output=True, text=True, check=True).stdout
        images = {d["metadata"]["name"]: [c["image"] for c in d["spec"]["template"]["spec"]["containers"]]
                  for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"}
        assert images["authz"] == [f"{REGISTRY}/authz:{TAG}"]
        assert images["modelserver"] == [f"{REGISTRY}/{expected_modelserver[overlay]}:{TAG}"]
        assert not [i for imgs in images.values() for i in imgs if i.startswith("inference-gateway/")], \
            f"{overlay}: an image still points at the unpublished inference-gateway/ names"


def test_tag_defaults_to_the_workspace_version():
    version = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M | re.S).group(1)
    r = run_script("--dry-run", env={"REGISTRY": "ghcr.io/you"})
    assert r.returncode == 0, r.stderr
    assert f"docker push ghcr.io/you/authz:{version}" in r.stdout


@pytest.mark.parametrize("registry", ["", "https://ghcr.io/you", "GHCR.io/You"])
def test_a_missing_or_malformed_registry_is_refused(registry):
    r = run_script("--dry-run", env={"REGISTRY": registry})
    assert r.returncode != 0
    assert "REGISTRY" in r.stderr
    assert "docker build" not in r.stdout


def test_without_an_engine_it_stops_before_building_and_says_why(tmp_path):
    docker, log = fake_docker(tmp_path)
    r = run_script(env={"REGISTRY": REGISTRY, "TAG": TAG, "DOCKER": str(docker),
                        "FAKE_DOCKER_LOG": str(log), "FAKE_NO_ENGINE": "1"})
    assert r.returncode != 0
    assert "cannot reach a container engine" in r.stderr and "Cannot connect to the Docker daemon" in r.stderr
    assert "--dry-run" in r.stderr
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["info"], "nothing is built without an engine"


def test_without_a_docker_cli_it_says_so(tmp_path):
    r = run_script(env={"REGISTRY": REGISTRY, "DOCKER": str(tmp_path / "no-such-docker")})
    assert r.returncode != 0
    assert "not found" in r.stderr


def test_with_an_engine_it_builds_pushes_and_pins_the_overlays_by_digest(tmp_path):
    docker, log = fake_docker(tmp_path)
    r = run_script(env={"REGISTRY": REGISTRY, "TAG": TAG, "DOCKER": str(docker), "FAKE_DOCKER_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "info"
    assert sorted(c for c in calls if c.startswith("build ")) == \
        sorted(f"build -f deploy/docker/{n}.Dockerfile -t {REGISTRY}/{n}:{TAG} ." for n in DOCKERFILES)
    assert sorted(c for c in calls if c.startswith("push ")) == sorted(f"push {REGISTRY}/{n}:{TAG}" for n in DOCKERFILES)
    # Every build before the first push: a failed build must not leave a half-published release.
    assert max(i for i, c in enumerate(calls) if c.startswith("build ")) < min(i for i, c in enumerate(calls) if c.startswith("push "))
    edits = edit_commands(r.stdout)
    assert sorted(edits) == OVERLAYS
    for refs in edits.values():
        for ref in refs.values():
            assert re.fullmatch(re.escape(REGISTRY) + r"/[a-z-]+@sha256:[0-9a-f]{64}", ref), ref
    assert edits["gpu"]["inference-gateway/modelserver"].startswith(f"{REGISTRY}/modelserver-gpu@sha256:")
    for entries in images_blocks(r.stdout).values():
        assert all("digest" in e and "newTag" not in e for e in entries)
