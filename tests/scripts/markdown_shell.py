"""Shell commands as Markdown documents show them, for tests/scripts/test_documented_commands.py.

Commands come from fenced ```sh / bash / shell / console blocks (console: the `$ ` lines), from
untagged blocks whose first line is a command (usage synopses), and from inline `code` spans that
are commands. A block's lines become logical lines (continuations and multi-line quotes joined,
heredoc bodies dropped), then simple commands: split at `;`, `&&`, `||`, `|`, `&`, `(`, `)` and
`$(`, without env assignments, shell keywords, redirections or comments. This is a reader of the
shell the docs use, not a full shell parser: it never expands anything.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("authz", "modelserver")
# Programs whose command lines are commands when they appear in a span or start an untagged block.
PROGRAMS = {*BINARIES, "make", "cargo", "docker", "docker-compose", "python", "python3", "kubectl",
            "istioctl", "source"}
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w-]*)")  # indent (blocks in list items), fence, language
SHELL_LANGS = {"sh", "bash", "shell", "console"}
# Words that start a simple command without being its program.
SHELL_WORDS = {"!", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "time",
               "{", "}", "export"}
# Operators whose next word is a file, not an argument (the fd before them is dropped too).
REDIRECTS = {">", ">>", "<", "<<", "<<<", "<<-", ">&", "&>", "&>>", ">|", "<&"}
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Command:
    """One simple command as a document shows it."""

    doc: str  # repository-relative path of the document
    line: int  # line of the command in it
    words: list[str]  # program and arguments, after env assignments and redirections
    block: int | None  # first line of its fenced block; None for an inline span
    created: set[str] = field(default_factory=set)  # paths made earlier in the same block

    def __str__(self) -> str:
        return " ".join(self.words)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def strip_comment(text: str) -> str:
    """Cuts a shell comment: `#` at the start of a word, outside quotes."""
    quote = None
    for i, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i]
    return text


def tokens(text: str) -> list[str] | None:
    """Shell words and operators; None while a quote is still open."""
    lexer = shlex.shlex(strip_comment(text), posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    try:
        return list(lexer)
    except ValueError:
        return None


def logical_lines(lines: list[tuple[int, str]], console: bool) -> list[tuple[int, list[str], str]]:
    """Joins continuations and multi-line quotes, drops heredoc bodies and console output."""
    out, i = [], 0
    while i < len(lines):
        start, text = lines[i]
        if console:
            if not text.startswith("$ "):
                i += 1
                continue
            text = text[2:]
        while True:
            toks = tokens(text) if not text.rstrip().endswith("\\") else None
            if toks is not None or i + 1 >= len(lines):
                break
            i += 1
            text = (text.rstrip()[:-1] + " " if text.rstrip().endswith("\\") else text + "\n") + lines[i][1]
        for delim in [m.group(2) for m in HEREDOC.finditer(text)]:  # bodies follow the line
            while i + 1 < len(lines) and lines[i + 1][1].strip() != delim:
                i += 1
            i += 1
        if toks:
            out.append((start, toks, text))
        i += 1
    return out


def simple_commands(toks: list[str]) -> list[tuple[list[str], set[str]]]:
    """Splits at ; && || | & ( ) and $( ), strips env assignments, shell keywords and
    redirections; returns each command's words and the files it writes by redirection."""
    commands, words, written, i = [], [], set(), 0
    while i < len(toks):
        t = toks[i]
        if t in REDIRECTS:
            if words and words[-1].isdigit():  # the fd of 2> / 2>&1
                words.pop()
            if i + 1 < len(toks) and t in {">", ">>", "&>", "&>>", ">|"}:
                written.add(toks[i + 1])
            i += 2
            continue
        if set(t) <= set("();<>|&"):
            commands.append((words, written))
            words, written = [], set()
        elif not words and (ASSIGNMENT.match(t) or t in SHELL_WORDS):
            pass
        else:
            words.append(t.removeprefix("[").removesuffix("]") or t)  # [--optional FLAG] in synopses
        i += 1
    commands.append((words, written))
    return [(w, f) for w, f in commands if w]


def creates(words: list[str]) -> set[str]:
    """Paths a command makes, which later commands of its block may use."""
    made = {words[i + 1] for i, w in enumerate(words[:-1]) if w in {"--out", "-o", "--output"}}
    if words[0] in {"mkdir", "touch", "tee"}:
        made |= {w for w in words[1:] if not w.startswith("-")}
    if words[0] in {"cp", "mv", "ln"} and len(words) > 2:
        made.add(words[-1])
    return made


def is_command(words: list[str], inline: bool) -> bool:
    """Whether words (from a span or an untagged block) are a command rather than a name or output."""
    prog = words[0]
    if re.fullmatch(r"[\w.-]*/[\w./-]+\.(py|sh)|scripts/[\w.-]+", prog):  # a bare `x.py` names a file
        return True
    return Path(prog).name in PROGRAMS and (len(words) > 1 or not inline)


def commands_of(doc: Path, root: Path) -> list[Command]:
    """The commands of one Markdown document (named relative to root)."""
    rel = doc.relative_to(root).as_posix()
    lines = doc.read_text().splitlines()
    found: list[Command] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            for span in re.finditer(r"(`+)(.+?)\1", lines[i]):
                for words, _ in simple_commands(tokens(span.group(2)) or []):
                    if is_command(words, inline=True):
                        found.append(Command(rel, i + 1, words, None))
            i += 1
            continue
        indent, fence, lang = m.groups()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), len(lines))
        body = [(n + 1, lines[n][len(indent):] if lines[n].startswith(indent) else lines[n].lstrip())
                for n in range(i + 1, end)]
        found += block_commands(rel, i + 2, lang, body)
        i = end + 1
    return found


def block_commands(rel: str, first: int, lang: str, body: list[tuple[int, str]]) -> list[Command]:
    """The commands of one fenced block (body: its numbered lines), each with the paths that the
    commands before it in the block create."""
    if lang not in SHELL_LANGS and lang != "":
        return []
    out, created = [], set()
    for line, toks, _ in logical_lines(body, console=lang == "console"):
        for words, written in simple_commands(toks):
            if lang == "" and not out and not is_command(words, inline=False):
                return []  # an untagged block that is output or a diagram, not commands
            out.append(Command(rel, line, words, first, set(created)))
            created |= written | creates(words)
    return out
