"""scripts/check_k8s_authz_config.py: `authz check-config` on the authz ConfigMap as the pod mounts it.

Each case renders a copy of k8s/ with one thing broken the way a deployment breaks in practice
(a path the pod does not have, a file missing from the ConfigMap, the audit directory on the
read-only config volume, the compose config shipped to Kubernetes) and expects the check to name it.
Needs the authz binary (`make test` builds it first) and kubectl with kustomize.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_k8s_authz_config.py"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
AUTHZ = os.environ.get("AUTHZ") or next(
    (str(p) for p in (TARGET / "debug" / "authz", TARGET / "release" / "authz") if p.is_file()), None)
CONFIG = Path("k8s/base/authz/config/authz.toml")

pytestmark = [
    pytest.mark.skipif(AUTHZ is None, reason="no authz binary: `cargo build -p authz` (make test builds it)"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed"),
]


def check(k8s_root: Path, overlay: str = "cpu") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--authz", AUTHZ, str(k8s_root / "k8s/overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    return tmp_path


def edit(tree: Path, rel: Path | str, old: str, new: str) -> None:
    path = tree / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}: the test no longer breaks what it means to"
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_the_shipped_config_passes_as_mounted(tree, overlay):
    r = check(tree, overlay)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok (3 models, 1 issuers, 0 API keys" in r.stdout


def test_a_policy_path_the_pod_does_not_have_fails(tree):
    edit(tree, CONFIG, 'files = ["/etc/authz/gateway.cedar"]', 'files = ["/etc/authz/policies/gateway.cedar"]')
    r = check(tree)
    assert r.returncode == 1
    assert "/etc/authz/policies/gateway.cedar: cannot read" in r.stdout


def test_a_jwks_file_left_out_of_the_config_map_fails(tree):
    edit(tree, "k8s/base/kustomization.yaml", "      - jwks.json=authz/config/jwks.json\n", "")
    r = check(tree)
    assert r.returncode == 1
    assert "reading /etc/authz/jwks.json" in r.stdout


def test_the_compose_config_fails_in_the_pod(tree):
    # What docs/operations.md once called a working example for Kubernetes.
    shutil.copy(ROOT / "deploy/compose/authz.toml", tree / CONFIG)
    r = check(tree)
    assert r.returncode == 1
    assert "jwks_file = '/var/lib/authz/dev/jwks.json': on no volume the authz container mounts" in r.stdout
    assert "/etc/authz/policies/schema.cedarschema: cannot read" in r.stdout


def test_audit_on_the_read_only_config_volume_fails(tree):
    edit(tree, CONFIG, 'path = "/var/lib/authz/audit/"', 'path = "/etc/authz/audit/"')
    r = check(tree)
    assert r.returncode == 1
    assert "audit.path = '/etc/authz/audit/': on a read-only mount (/etc/authz)" in r.stdout


def test_config_not_mounted_where_the_container_reads_it_fails(tree):
    edit(tree, "k8s/base/authz/deployment.yaml", "mountPath: /etc/authz\n", "mountPath: /etc/authz-config\n")
    r = check(tree)
    assert r.returncode == 1
    assert "--config /etc/authz/authz.toml: no mounted volume provides this file" in r.stdout


def test_items_lay_files_out_where_the_kubelet_would(tree):
    # A ConfigMap volume with `items` puts only those keys, at their paths: moving the policies to a
    # subdirectory works when config and volume agree, and only then.
    edit(tree, CONFIG, 'schema = "/etc/authz/schema.cedarschema"\nfiles = ["/etc/authz/gateway.cedar"]',
         'schema = "/etc/authz/policies/schema.cedarschema"\nfiles = ["/etc/authz/policies/gateway.cedar"]')
    edit(tree, "k8s/base/authz/deployment.yaml", "            name: authz-config\n",
         "            name: authz-config\n"
         "            items:\n"
         "              - {key: authz.toml, path: authz.toml}\n"
         "              - {key: jwks.json, path: jwks.json}\n"
         "              - {key: schema.cedarschema, path: policies/schema.cedarschema}\n"
         "              - {key: gateway.cedar, path: policies/gateway.cedar}\n")
    r = check(tree)
    assert r.returncode == 0, r.stdout + r.stderr
    edit(tree, "k8s/base/authz/deployment.yaml", "              - {key: gateway.cedar, path: policies/gateway.cedar}\n", "")
    r = check(tree)
    assert r.returncode == 1
    assert "/etc/authz/policies/gateway.cedar: cannot read" in r.stdout
