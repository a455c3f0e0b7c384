#!/usr/bin/env python3
"""Runs `authz check-config` on the authz configuration exactly as a Kubernetes pod would see it.

The authz Deployment reads `--config FILE`; that file and every file it names (Cedar schema and
policies, JWKS files, the audit directory) must be on a volume the container mounts, or authz exits
64 in the pod. This script takes the rendered manifests, finds the authz container, and lays out
under a temporary root every volume it mounts: a ConfigMap's keys as files (its `items` and
`subPath` as the kubelet applies them), any other volume as an empty directory. It then rewrites
the absolute mount paths in the config to point into that root and runs `authz check-config` on it.

Problems reported (exit 1):
  * the container has no `--config`, or no mounted volume provides that file;
  * a mounted ConfigMap is not in the render (it would have to exist before the pod starts);
  * a path in the config (policy schema and files, issuers' jwks_file, audit path, redis_ca_file)
    is on no mounted volume: the image has nothing there either;
  * the audit path is on a read-only mount or a ConfigMap (authz could not write evidence);
  * the audit checkpoint signing key is not on a Secret mount, or is on the audit volume; the
    checkpoint witness file is on the audit volume or on a read-only mount;
  * whatever `authz check-config` rejects, in its own words.

Usage:
  check_k8s_authz_config.py [--authz BIN] [--container NAME] (RENDERED.yaml | KUSTOMIZATION_DIR)...
A directory is rendered with `kubectl kustomize`. BIN defaults to $AUTHZ, then target/debug/authz,
then target/release/authz (under $CARGO_TARGET_DIR when set). Needs PyYAML.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def default_authz() -> str | None:
    if os.environ.get("AUTHZ"):
        return os.environ["AUTHZ"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("debug", "release"):
        if (target / profile / "authz").is_file():
            return str(target / profile / "authz")
    return None


def load_docs(source: str) -> list[dict]:
    if Path(source).is_dir():
        text = subprocess.run(["kubectl", "kustomize", source], check=True, capture_output=True, text=True).stdout
    else:
        text = Path(source).read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


class Pod:
    """The authz container's view of its volumes, laid out under `root`."""

    def __init__(self, docs: list[dict], container_name: str, root: Path, problems: list[str]) -> None:
        self.problems = problems
        self.root = root
        deployment = next((d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == container_name), None)
        if deployment is None:
            raise LookupError(f"no Deployment {container_name!r} in the render")
        spec = deployment["spec"]["template"]["spec"]
        self.container = next((c for c in spec["containers"] if c["name"] == container_name), None)
        if self.container is None:
            raise LookupError(f"Deployment {container_name!r} has no container {container_name!r}")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        config_maps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
        # (mountPath, readOnly, what): longest first, so a nested mount wins over its parent.
        self.mounts: list[tuple[str, bool, str]] = []
        for m in self.container.get("volumeMounts", []):
            volume = volumes.get(m["name"])
            if volume is None:
                problems.append(f"volumeMount {m['name']!r} names no volume of the pod")
                continue
            kind = "configMap" if "configMap" in volume else next((k for k in volume if k != "name"), "unknown")
            self.mounts.append((m["mountPath"], bool(m.get("readOnly")), kind))
            target = self.host(m["mountPath"])
            if kind == "configMap":
                name = volume["configMap"]["name"]
                cm = config_maps.get(name)
                if cm is None:
                    problems.append(f"ConfigMap {name!r} (volume {m['name']!r}) is not in the render")
                    continue
                self.lay_out_config_map(cm, volume["configMap"].get("items"), m.get("subPath"), target)
            else:
                target.mkdir(parents=True, exist_ok=True)
        self.mounts.sort(key=lambda t: len(t[0]), reverse=True)

    def host(self, pod_path: str) -> Path:
        return self.root / pod_path.lstrip("/")

    def lay_out_config_map(self, cm: dict, items: list[dict] | None, sub_path: str | None, target: Path) -> None:
        data = dict(cm.get("data", {}))
        # Without `items` every key is a file named after it; with `items` only those, at their paths.
        files = {i["path"]: data[i["key"]] for i in items if i["key"] in data} if items else data
        for i in items or []:
            if i["key"] not in data:
                self.problems.append(f"ConfigMap {cm['metadata']['name']!r} has no key {i['key']!r} (volume items)")
        if sub_path:
            if sub_path not in files:
                self.problems.append(f"ConfigMap {cm['metadata']['name']!r} has no file {sub_path!r} (subPath)")
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(files[sub_path])
            return
        for rel, content in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)

    def mount_of(self, pod_path: str) -> tuple[str, bool, str] | None:
        return next((m for m in self.mounts if under(pod_path, m[0])), None)

    def rewrite(self, text: str) -> str:
        """Every quoted absolute path under a mount now points into the laid-out root."""
        for mount, _, _ in self.mounts:
            m = mount.rstrip("/")
            for quote in ('"', "'"):
                text = text.replace(f"{quote}{m}/", f"{quote}{self.root}{m}/").replace(f"{quote}{m}{quote}", f"{quote}{self.root}{m}{quote}")
        return text


def config_paths(cfg: dict) -> list[tuple[str, str]]:
    """(field, path) for every file or directory the config names."""
    out = []
    policy = cfg.get("policy", {})
    if "schema" in policy:
        out.append(("policy.schema", policy["schema"]))
    out += [(f"policy.files[{i}]", f) for i, f in enumerate(policy.get("files", []))]
    out += [(f"authn.issuers[{i}].jwks_file", iss["jwks_file"])
            for i, iss in enumerate(cfg.get("authn", {}).get("issuers", [])) if "jwks_file" in iss]
    if "redis_ca_file" in cfg.get("rate_limit", {}):
        out.append(("rate_limit.redis_ca_file", cfg["rate_limit"]["redis_ca_file"]))
    out.append(("audit.path", cfg.get("audit", {}).get("path", "audit/")))  # authz's default
    checkpoint = cfg.get("audit", {}).get("checkpoint", {})
    out += [(f"audit.checkpoint.{key}", checkpoint[key]) for key in ("signing_key", "witness_file") if key in checkpoint]
    return out


def checkpoint_mounts(mounts: dict[str, tuple[str, bool, str] | None]) -> list[str]:
    """Where the checkpoint key and witness file are, against where the audit records are."""
    problems = []
    audit = mounts.get("audit.path")
    key = mounts.get("audit.checkpoint.signing_key")
    if key is not None:
        if key[2] != "secret":
            problems.append(f"audit.checkpoint.signing_key: on a volume of kind {key[2]} ({key[0]}); mount the signing key from a Secret")
        if key == audit:
            problems.append(f"audit.checkpoint.signing_key: on the audit volume ({key[0]}); whoever can rewrite the records could sign them")
    witness = mounts.get("audit.checkpoint.witness_file")
    if witness is not None:
        if witness == audit:
            problems.append(f"audit.checkpoint.witness_file: on the audit volume ({witness[0]}); a witness must be elsewhere")
        elif witness[1] or witness[2] in ("configMap", "secret"):
            problems.append(f"audit.checkpoint.witness_file: on a read-only mount ({witness[0]}); checkpoints could not be witnessed")
    return problems


def check(source: str, authz: str, container: str) -> tuple[list[str], str]:
    """(problems, check-config's own summary line)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="authz-pod-") as tmp:
        root = Path(tmp)
        try:
            pod = Pod(load_docs(source), container, root, problems)
        except subprocess.CalledProcessError as e:
            return [f"kubectl kustomize failed: {e.stderr.strip()}"], ""
        except (LookupError, OSError) as e:
            return [str(e)], ""
        args = pod.container.get("args", []) + pod.container.get("command", [])
        if "--config" not in args[:-1]:
            return problems + ["the authz container has no `--config FILE` argument"], ""
        config = args[args.index("--config") + 1]
        config_file = pod.host(config)
        if pod.mount_of(config) is None or not config_file.is_file():
            return problems + [f"--config {config}: no mounted volume provides this file"], ""
        text = config_file.read_text()
        cfg = tomllib.loads(text)
        config_dir = posixpath.dirname(config)
        mounts = {}
        for field, path in config_paths(cfg):
            # Relative paths are relative to the config file, as authz resolves them.
            pod_path = posixpath.normpath(path if path.startswith("/") else posixpath.join(config_dir, path))
            mount = mounts[field] = pod.mount_of(pod_path)
            if mount is None:
                problems.append(f"{field} = {path!r}: on no volume the authz container mounts "
                                f"(mounts: {', '.join(sorted(m[0] for m in pod.mounts))})")
            elif field == "audit.path" and (mount[1] or mount[2] == "configMap"):
                problems.append(f"audit.path = {path!r}: on a read-only mount ({mount[0]}); audit records could not be written")
        problems += checkpoint_mounts(mounts)
        # The config directory is a read-only ConfigMap in the pod; here the copy is rewritten.
        config_file.unlink()
        config_file.write_text(pod.rewrite(text))
        r = subprocess.run([authz, "check-config", "--config", str(config_file)], capture_output=True, text=True)
        # Report paths as the pod sees them.
        out = (r.stdout + r.stderr).replace(str(root), "").strip()
        if r.returncode != 0:
            problems.append(f"authz check-config (exit {r.returncode}):\n    " + out.replace("\n", "\n    "))
    return problems, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", metavar="RENDERED.yaml|KUSTOMIZATION_DIR")
    parser.add_argument("--authz", default=default_authz(), help="the authz binary (default: $AUTHZ, target/debug/authz)")
    parser.add_argument("--container", default="authz", help="the Deployment and container name (default: authz)")
    args = parser.parse_args()
    if not args.authz or not shutil.which(args.authz):
        print("check_k8s_authz_config: no authz binary; build it (`cargo build -p authz`) or pass --authz / set AUTHZ", file=sys.stderr)
        return 2
    failed = False
    for source in args.sources:
        problems, summary = check(source, args.authz, args.container)
        for p in problems:
            print(f"{source}: {p}")
        if not problems:
            print(f"{source}: authz check-config on the pod's files: {summary}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
