"""Every command in README.md and docs/ runs as written (issue 16).

Reads every *.md of the repository (README.md, docs/, the folders' READMEs) and takes its
commands from fenced ```sh / bash / shell / console blocks, from untagged blocks that start with a
command (usage synopses), and from inline `code` spans that are commands. Then checks, without
containers, a cluster or a running stack:

* `authz ...` and `modelserver ...` (also written as target/release/authz, ./authz,
  `cargo run -p authz --`, or inside `docker compose run|exec SERVICE`): the subcommand exists and
  every flag is accepted, against that subcommand's `--help` from the binary `make test` built;
* flags of the repository's argparse scripts (envoy/render.py, ...) against their `--help`;
* `make TARGET` names a Makefile target; `cargo ... -p PKG --test|--bench|--example NAME` names a
  workspace package and one of its targets;
* paths into the repository exist (see `repo_paths` for what is skipped and why);
* offline commands (`runnable`) are run in a temporary working copy and exit 0, and the
  walk-through of docs/guide.md runs block after block as its reader runs it, with the exit
  statuses and results it states.

Each failure names the document and line. A command that is documented correctly but cannot work
because of a bug in the code is listed in KNOWN_BUGS instead of being fixed here.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from markdown_shell import ASSIGNMENT, BINARIES, Command, block_commands, commands_of

ROOT = Path(__file__).resolve().parents[2]
# Folders that .gitignore names as generated: dev keys (`authz dev-init`), `make up`'s run
# directory, the bootstrap's tools, cargo's output, benchmark results, the demo audit directory.
# Docs refer to files in them that exist only after those commands ran, so they are not checked.
GENERATED = (".dev", ".run", ".tools", "target", "bench-results", "config/audit")
# compose.yaml services that run the authz / modelserver images (ENTRYPOINT is the binary, so
# `docker compose run SERVICE ARGS` runs `BINARY ARGS`).
COMPOSE_SERVICES = {"authz": "authz", "authz-dev-init": "authz",
                    "modelserver": "modelserver", "modelserver-gpu": "modelserver"}
# Files the docs name as the reader's own, which the repository deliberately does not ship.
READERS_FILES = {
    "modelserver.toml": "modelserver/README.md's synopsis; its 'Configuration' section describes it",
}
# Commands that are documented correctly but fail because of a bug in the code; each names the bug.
# Key: (document, the command as its words are joined by spaces).
KNOWN_BUGS: dict[tuple[str, str], str] = {}

PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(?::[A-Z_]+)?(?:\.\.\.)?$")  # FILE, CASES..., HOST:PORT


# --- the documents ---------------------------------------------------------------------------

def documents() -> list[Path]:
    """Every *.md of the repository (the top two levels and tests/conformance/README.md), without
    generated and hidden folders."""
    docs = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in GENERATED]
        docs += [Path(folder) / f for f in files if f.endswith(".md")]
    return sorted(docs)


ALL = [c for doc in documents() for c in commands_of(doc, ROOT)]


# --- what the documents refer to ---------------------------------------------------------------

@functools.cache
def binary(name: str) -> Path:
    """The binary as the e2e harness finds it: E2E_<NAME>_BIN, else $CARGO_TARGET_DIR/debug
    (relative to the repository root), else target/debug."""
    override = os.environ.get(f"E2E_{name.upper()}_BIN")
    path = Path(override) if override else Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "debug" / name
    path = ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"binary `{name}` not found at {path}; build it with `cargo build -p {name}` "
                    "(`make test` does this first)", pytrace=False)
    return path


@dataclass
class Help:
    commands: set[str]
    options: set[str]


def parse_help(text: str) -> Help:
    commands, section = set(), None
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            section = line
        elif section == "Commands:" and (m := re.match(r"^  (\S+)", line)):
            commands.add(m.group(1))
    options = set(re.findall(r"^\s+(?:(-\w), )?(--[\w-]+)", text, re.M))
    return Help(commands - {"help"}, {o for pair in options for o in pair if o} | {"-h", "--help"})


@functools.cache
def help_of(program: tuple[str, ...]) -> Help:
    r = subprocess.run([*program, "--help"], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0, f"{' '.join(program)} --help: {r.stderr}"
    return parse_help(r.stdout)


def invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """(binary, arguments) when words run authz or modelserver, in any documented form."""
    prog, rest = words[0], words[1:]
    if Path(prog).name in BINARIES:
        return Path(prog).name, rest
    if prog == "cargo" and rest[:1] == ["run"]:
        pkg = next((rest[i + 1] for i, w in enumerate(rest[:-1]) if w in {"-p", "--package", "--bin"}), None)
        if pkg in BINARIES:
            return pkg, rest[rest.index("--") + 1:] if "--" in rest else []
    if prog == "docker" and rest[:1] == ["compose"]:
        prog, rest = "docker-compose", rest[1:]
    if prog == "docker-compose":
        while rest and rest[0].startswith("-"):  # global options: --profile P, -f FILE, -p NAME
            rest = rest[2:] if rest[0] in {"--profile", "-f", "--file", "-p", "--project-name"} else rest[1:]
        if rest[:1] not in (["run"], ["exec"]):
            return None
        sub, rest = rest[0], rest[1:]
        while rest and rest[0].startswith("-"):
            if rest[0] == "--entrypoint":
                return None
            valued = {"-e", "--env", "-u", "--user", "-w", "--workdir", "-v", "--volume", "-p",
                      "--publish", "--name", "-l", "--label", "--index"}
            rest = rest[2:] if rest[0] in valued else rest[1:]
        if not rest or rest[0] not in COMPOSE_SERVICES:
            return None
        name, args = COMPOSE_SERVICES[rest[0]], rest[1:]
        if sub == "exec":  # exec runs a program, not the entrypoint
            return (name, args[1:]) if args and Path(args[0]).name == name else None
        return (name, args) if args else None
    return None


def cli_problems(name: str, args: list[str]) -> list[str]:
    path: list[str] = []
    while (h := help_of((str(binary(name)), *path))).commands:
        if not args or args[0].startswith("-"):
            if args and args[0] in h.options:
                return []
            return [f"`{name} {' '.join(path)}` needs a subcommand: {', '.join(sorted(h.commands))}"]
        if args[0] not in h.commands:
            return [f"`{name} {' '.join(path)}` has no subcommand `{args[0]}` "
                    f"(it has {', '.join(sorted(h.commands))})"]
        path.append(args.pop(0))
    sub = " ".join([name, *path])
    flags = [a.split("=")[0] for a in args[:args.index("--") if "--" in args else None]
             if a.startswith("-") and a != "-"]
    return [f"`{sub}` has no option `{f}` (it has {', '.join(sorted(h.options))})"
            for f in flags if f not in h.options]


def script_of(words: list[str]) -> tuple[str, list[str]] | None:
    """(repository script, arguments) for `python3 x.py ...`, `dir/x.py ...`, `scripts/x ...`."""
    orig = words
    if Path(words[0]).name in {"python", "python3"}:
        words = words[1:]
        if not words or words[0].startswith("-"):  # python3 -c CODE, python3 -m MODULE
            return None
    if "/" in words[0] or words[0] != orig[0]:  # run by path, or by python3
        return words[0].removeprefix("./"), words[1:]
    return None


def script_problems(script: str, args: list[str]) -> list[str]:
    path = ROOT / script
    # Only argparse scripts: their --help prints the options and does nothing else.
    if path.suffix != ".py" or not path.is_file() or "argparse" not in path.read_text():
        return []
    h = help_of((sys.executable, str(path)))
    return [f"`{script}` has no option `{a.split('=')[0]}`" for a in args
            if a.startswith("--") and a.split("=")[0] not in h.options]


@functools.cache
def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for m in re.finditer(r"^([^\s#:=][^:=]*?)\s*::?(?!=)", text, re.M) for t in m.group(1).split()}


def make_problems(args: list[str]) -> list[str]:
    targets, skip = [], False
    for a in args:
        if skip or ASSIGNMENT.match(a):
            skip = False
        elif a in {"-C", "-f", "-j", "-o", "-W"}:
            skip = True
        elif not a.startswith("-"):
            targets.append(a)
    return [f"the Makefile has no target `{t}`" for t in targets if t not in make_targets()]


@functools.cache
def cargo_packages() -> dict[str, dict[str, set[str]]]:
    """Workspace package name -> target kind (`test`, `bench`, `example`, `bin`) -> names."""
    packages = {}
    for member in tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        targets = {}
        for kind, folder in (("test", "tests"), ("bench", "benches"), ("example", "examples"), ("bin", "src/bin")):
            auto = {p.stem for p in (ROOT / member / folder).glob("*.rs")}
            auto |= {p.parent.name for p in (ROOT / member / folder).glob("*/main.rs")}
            targets[kind] = auto | {t["name"] for t in manifest.get(kind, [])}
        if (ROOT / member / "src/main.rs").is_file():
            targets["bin"].add(manifest["package"]["name"])
        packages[manifest["package"]["name"]] = targets
    return packages


def cargo_problems(args: list[str]) -> list[str]:
    args = args[:args.index("--")] if "--" in args else args
    opts = dict(zip(args, args[1:]))
    pkg = opts.get("-p", opts.get("--package"))
    packages = cargo_packages()
    if pkg is not None and pkg not in packages:
        return [f"no workspace package `{pkg}` (there are {', '.join(sorted(packages))})"]
    problems = []
    for kind in ("test", "bench", "example", "bin"):
        name = opts.get(f"--{kind}")
        names = set().union(*(t[kind] for p, t in packages.items() if pkg in (None, p)))
        if name is not None and name not in names:
            problems.append(f"no {kind} target `{name}` in {pkg or 'the workspace'}")
    return problems


def unresolved(word: str) -> bool:
    """A word the shell or the reader fills in: variables, globs, placeholders (FILE, …)."""
    return any(c in word for c in "$~*?<>…") or any(PLACEHOLDER.match(p) for p in word.split("/") if p)


def repo_paths(cmd: Command) -> list[str]:
    """The words of cmd that name a file inside the repository and must exist.

    Checked: a script run by path (`scripts/x.sh`, `python3 envoy/render.py`), the values of
    `--config`, `--template`, `--model-repository`, `--key`, `-f`/`--file`/`--filename`, `-k`
    (kustomize) and `-d @FILE`, and any other word that starts with a top-level folder of the
    repository and a `/` (`cp models/x/1/model.onnx ...`). Not checked, because they are not
    repository files the reader is expected to have: words with variables, globs or placeholders
    (`$GW/authz.toml`, `FILE`), absolute paths (/tmp, and container paths such as /etc/authz),
    `-` (stdin), the GENERATED folders, the READERS_FILES, paths an earlier command of the same
    block creates (`--out`, `-o`, `>`, `mkdir`, `touch`, `tee`, the target of `cp`/`mv`/`ln`),
    and the binaries themselves (where the build puts them is the build's business).
    """
    words, out = cmd.words, []
    script = script_of(words)
    if script and Path(script[0]).name not in BINARIES:
        out.append(script[0])
    path_options = {"--config", "--template", "--model-repository", "--key", "-f", "--file", "--filename", "-k"}
    for i, w in enumerate(words[1:], 1):
        value = w.split("=", 1)[1] if w.startswith("--") and "=" in w else None
        if words[i - 1] in path_options or (words[i - 1] in {"-d", "--data", "--data-binary"} and w.startswith("@")):
            out.append(w.removeprefix("@"))
        elif value and w.split("=")[0] in path_options:
            out.append(value)
        elif "/" in w and w.split("/")[0] in top_level_folders():
            out.append(w)
    return [p for p in dict.fromkeys(out) if checkable(p, cmd.created)]


@functools.cache
def top_level_folders() -> frozenset[str]:
    return frozenset(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in GENERATED)


def checkable(path: str, created: set[str]) -> bool:
    p = path.removeprefix("./").rstrip("/")
    if not p or p == "-" or unresolved(p) or Path(p).is_absolute() or p in READERS_FILES:
        return False
    if any(p == g or p.startswith(g + "/") for g in GENERATED):
        return False
    return not any(p == c.rstrip("/") or p.startswith(c.rstrip("/") + "/") for c in created)


def problems(cmd: Command) -> list[str]:
    """Everything wrong with cmd that can be told without running it."""
    found = []
    if inv := invocation(cmd.words):
        found += cli_problems(inv[0], list(inv[1]))
    elif cmd.words[0] == "make":
        found += make_problems(cmd.words[1:])
    elif cmd.words[0] == "cargo":
        found += cargo_problems(cmd.words[1:])
    elif script := script_of(cmd.words):
        found += script_problems(*script)
    found += [f"`{p}` does not exist in the repository" for p in repo_paths(cmd) if not (ROOT / p).exists()]
    return found


def checked(cmd: Command) -> bool:
    """Whether problems() has anything to look at for cmd."""
    return bool(invocation(cmd.words) or cmd.words[0] in {"make", "cargo"} or script_of(cmd.words)
                or repo_paths(cmd))


# --- what is run ----------------------------------------------------------------------------

# authz subcommands that need no network, no listener and no time: they read the config and write
# only where --out says (inside the working copy).
OFFLINE_AUTHZ = {("check-config",), ("policy", "test"), ("dev-init",), ("token",)}
# Repository scripts and the arguments with which they only read and (re)write committed files.
OFFLINE_SCRIPTS = {"envoy/render.py": {"--check", "--all"}, "deploy/render_monitoring.py": {"--check", "--all"}}


def runnable(cmd: Command) -> list[str] | None:
    """The argv to run for cmd in the working copy, or None when it is not run here.

    Run: OFFLINE_AUTHZ and OFFLINE_SCRIPTS commands written with literal relative paths (in any
    form of `invocation`, with the located binary; not `docker compose`, whose paths are the
    container's), and `--help` of repository scripts. Not run: anything with a variable or
    placeholder, anything that starts servers, builds, needs a container, a cluster, the network
    or minutes (make, cargo, serve, bench, kubectl, curl against a stack).
    """
    words = cmd.words
    if any(unresolved(w) or w.startswith("/") for w in words) or words[0] in {"docker", "docker-compose"}:
        return None
    if inv := invocation(words):
        name, args = inv
        sub = tuple(a for a in args[:2] if not a.startswith("-"))
        if cmd.block is None and all(not a.startswith("-") for a in args):
            return None  # a span that only names a subcommand (`authz token`) refers to it
        if name == "authz" and (sub[:1] in OFFLINE_AUTHZ or sub in OFFLINE_AUTHZ):
            return [name, *args]  # the test puts the located binary in its place
        return None
    script = script_of(words)
    if script and (ROOT / script[0]).is_file():
        name, args = script
        if args == ["--help"]:
            return words
        if args and set(args) <= OFFLINE_SCRIPTS.get(name, set()):
            return [sys.executable, name, *args]
    return None


def working_copy(dest: Path) -> Path:
    """A copy of the repository's files (no .git, no generated folders) with the dev issuer key
    and .dev/authz.toml that `make up` creates and the README's commands assume."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(ROOT).as_posix()
        return {n for n in names if n in {".git", "__pycache__"} or (f"{rel}/{n}".removeprefix("./") in GENERATED)}
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True)
    r = subprocess.run([binary("authz"), "dev-init", "--out", ".dev"], cwd=dest, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return dest


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return working_copy(tmp_path_factory.mktemp("docs") / "repo")


# --- the tests ------------------------------------------------------------------------------

def test_the_documents_with_commands_are_read():
    docs = {c.doc for c in ALL}
    for doc in ("README.md", "config/README.md", "models/README.md", "modelserver/README.md",
                "docs/guide.md", "docs/operations.md", "docs/configuration.md"):
        assert doc in docs, f"no commands found in {doc}: has the extraction stopped seeing them?"
    assert sum(1 for c in ALL if invocation(c.words)) >= 30, "fewer authz/modelserver commands than documented"


def test_a_wrong_command_is_reported():
    """The checks fail on the mistakes they exist for (a bogus flag, target, subcommand, path)."""
    doc = ["```sh", "authz check-config --config config/authz.toml --bogus",
           "docker compose run --rm authz tokn --sub x", "make nosuchtarget",
           "python3 scripts/nosuch.py", "cargo bench -p modelserver --bench nosuch", "```"]
    body = [(n, line) for n, line in enumerate(doc[1:-1], 2)]
    found = [problems(c) for c in block_commands("x.md", 2, "sh", body)]
    assert [len(p) for p in found] == [1, 1, 1, 1, 1], found
    assert "has no option `--bogus`" in found[0][0] and "no subcommand `tokn`" in found[1][0]


CHECKED = [c for c in ALL if checked(c)]


@pytest.mark.parametrize("cmd", CHECKED, ids=[f"{c.where} {' '.join(c.words[:3])}" for c in CHECKED])
def test_documented_command_is_valid(cmd: Command):
    found = problems(cmd)
    assert not found, f"{cmd.where}: `{cmd}`:\n  " + "\n  ".join(found)


RUN = [c for c in ALL if runnable(c) is not None]


@pytest.mark.parametrize("cmd", RUN, ids=[f"{c.where} {' '.join(c.words[:3])}" for c in RUN])
def test_documented_command_runs(cmd: Command, workdir: Path):
    if bug := KNOWN_BUGS.get((cmd.doc, str(cmd))):
        pytest.skip(f"known bug: {bug}")
    argv = runnable(cmd)
    if argv[0] in BINARIES:
        argv[0] = str(binary(argv[0]))
    r = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{cmd.where}: `{cmd}` exited {r.returncode}:\n{r.stdout}{r.stderr}"


# --- docs/guide.md, the walk-through ----------------------------------------------------------

GUIDE = ROOT / "docs/guide.md"
# The guide heads the blocks that need its stack or a system this machine lacks: **stack**,
# **Start the stack**, **IdP**, **compose**, **Kubernetes**. Everything else "runs on its own".
HEADED = re.compile(r"^\*\*[^*]*\b(stack|IdP|compose|Kubernetes)\b[^*]*\*\*")
# The guide's step 0 installs the tools and builds release binaries; the test provides both
# (`make test` sourced .tools/env; the located debug binaries are first on PATH).
SETUP_MARK = "scripts/bootstrap.sh"
# Commands the guide runs to show a failure, and the exit status it documents for them:
# (text unique to the block, the command as written) -> status.
EXPECTED_FAILURES = {
    # task 5 writes the test first: "It fails, as it should before the policy exists (exit status 1)"
    ('name = "a contractor who is also an analyst',
     'authz policy test --config "$GW/authz.toml" "$GW/policy-cases.toml"'): 1,
    # task 6's typo: the output block under it ends with "exit 64"
    ("s/resource.sensitivity/resource.sensitivty/", 'authz check-config --config "$GW/authz.toml"'): 64,
}
# Results the guide states inline (`24 cases, 24 passed, 0 failed`, `…/authz.toml: ok (...)`,
# `FAIL ...`): each must appear in what the walk-through printed (… stands for a path).
STATED_RESULT = re.compile(r"`(\d+ cases, \d+ passed, \d+ failed|…/\S+: ok \([^`]*\)|FAIL [^`]+)`")


def guide_blocks() -> list[tuple[int, str]]:
    """(first line, text) of each guide block that runs on its own, in order."""
    lines, blocks, i = GUIDE.read_text().splitlines(), [], 0
    while i < len(lines):
        if not lines[i].startswith("```sh"):
            i += 1
            continue
        end = lines.index("```", i + 1)
        para = i - 1
        while para > 0 and not lines[para].strip():
            para -= 1
        while para > 0 and lines[para - 1].strip():
            para -= 1
        text = "\n".join(lines[i + 1:end]) + "\n"
        if not HEADED.match(lines[para]) and SETUP_MARK not in text:
            blocks.append((i + 2, text))
        i = end + 1
    return blocks


GUIDE_BLOCKS = guide_blocks()


@dataclass
class Walkthrough:
    failed: dict[int, list[tuple[int, int, str]]]  # block -> (line, status, command) of each failure
    output: dict[int, str]  # block -> what it printed (stdout and stderr); only blocks that finished
    printed: str  # everything, for a walk-through that stopped


@pytest.fixture(scope="module")
def guide_run(tmp_path_factory) -> Walkthrough:
    """Runs the guide's blocks in one bash, in a working copy with HOME in a temporary folder."""
    tmp = tmp_path_factory.mktemp("guide")
    repo = working_copy(tmp / "repo")
    errors = tmp / "errors.tsv"
    # Every failed command (not the tests of if/while/until/&&/||) is recorded with its block,
    # its line in the block, its status and its text; the walk-through goes on, as a reader's would.
    script = [f"__failed() {{ printf '%s\\t%s\\t%s\\t%s\\n' \"$__block\" \"$2\" \"$1\" \"${{3//$'\\n'/ }}\" "
              f">> {shlex.quote(str(errors))}; }}",
              "trap '__failed $? $LINENO \"$BASH_COMMAND\"' ERR"]
    for first, text in GUIDE_BLOCKS:
        (tmp / f"block-{first}.sh").write_text(text + ":\n")  # `source` itself then succeeds
        script += [f"__block={first}; echo '@@block {first}'", f"source {tmp / f'block-{first}.sh'}",
                   f"echo '@@done {first}'"]
    env = {**os.environ, "HOME": str(tmp / "home"),  # the guide's workspace is "$HOME/gateway"
           "PATH": f"{binary('authz').parent}:{binary('modelserver').parent}:{os.environ['PATH']}"}
    (tmp / "home").mkdir()
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    failed: dict[int, list[tuple[int, int, str]]] = {first: [] for first, _ in GUIDE_BLOCKS}
    for row in errors.read_text().splitlines() if errors.exists() else []:
        block, line, rc, command = row.split("\t", 3)
        failed[int(block)].append((int(block) + int(line) - 1, int(rc), command))
    output = {int(m.group(1)): m.group(2) for m in re.finditer(r"@@block (\d+)\n(.*?)@@done \1\n", r.stdout, re.S)}
    return Walkthrough(failed, output, r.stdout)


@pytest.mark.parametrize("first,text", GUIDE_BLOCKS, ids=[f"docs/guide.md:{f}" for f, _ in GUIDE_BLOCKS])
def test_guide_block_runs_as_written(guide_run: Walkthrough, first: int, text: str):
    assert first in guide_run.output, (f"docs/guide.md:{first}: the walk-through stopped before this block "
                                       f"finished:\n{guide_run.printed}")
    failed = guide_run.failed[first]
    expected = {(cmd, rc) for (mark, cmd), rc in EXPECTED_FAILURES.items() if mark in text}
    assert {(cmd, rc) for _, rc, cmd in failed} == expected, (
        f"docs/guide.md:{first}: failed: {'; '.join(f'line {n}: `{c}` exited {rc}' for n, rc, c in failed) or 'none'}"
        f"; the guide says: {'; '.join(f'`{c}` exits {rc}' for c, rc in expected) or 'all succeed'}\n"
        f"{guide_run.output[first]}")


def test_guide_states_the_results_it_gets(guide_run: Walkthrough):
    text = GUIDE.read_text()
    stated = STATED_RESULT.findall(text)
    assert len(stated) >= 4, "the guide's stated results are no longer found"
    # Untagged blocks in the guide are printed output (commands are ```sh); the ```sh blocks are
    # cut first, so that their closing fences are not taken for openings.
    untagged = re.findall(r"^```\n(.*?)^```$", re.sub(r"^```\w.*?^```$", "", text, flags=re.M | re.S), re.M | re.S)
    stated += [line for block in untagged for line in block.splitlines()]
    missing = [s for s in stated if not re.search(".*".join(map(re.escape, s.split("…"))), guide_run.printed)]
    assert not missing, (f"docs/guide.md states results the walk-through did not print: {missing}\n"
                         f"{guide_run.printed}")
