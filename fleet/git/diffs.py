"""A unified diff (``git diff`` output) parsed into files, hunks and lines with their
old and new line numbers, for the review workspace. Plain data, no Django."""

from __future__ import annotations

import codecs
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import git

from fleet.git.facts import _text
from fleet.git.repo import FLEET_GIT_ENV, open_repo

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
CONTEXT, ADDED, REMOVED = " ", "+", "-"


@dataclass
class Line:
    kind: str  # " ", "+" or "-"
    old: int | None  # its number on the old side (none: an added line)
    new: int | None  # its number on the new side (none: a removed line)
    text: str


@dataclass
class Hunk:
    header: str  # the "@@ -a,b +c,d @@ context" line
    lines: list[Line] = field(default_factory=list)
    # The header's numbers: a pure insertion ("-4,0") goes after old line old_start.
    old_start: int = 0
    old_count: int = 0
    new_count: int = 0

    @property
    def new_range(self) -> tuple[int, int]:
        numbers = [line.new for line in self.lines if line.new is not None]
        return (min(numbers), max(numbers)) if numbers else (0, 0)

    @property
    def old_range(self) -> tuple[int, int]:
        numbers = [line.old for line in self.lines if line.old is not None]
        return (min(numbers), max(numbers)) if numbers else (0, 0)


@dataclass
class DiffFile:
    path: str  # the new path (the old one for a deleted file)
    old_path: str
    status: str  # "modified", "added", "deleted" or "binary"
    hunks: list[Hunk] = field(default_factory=list)
    patch_hash: str = ""  # of the file's whole patch: it changes when the change does

    @property
    def added(self) -> int:
        return sum(line.kind == ADDED for hunk in self.hunks for line in hunk.lines)

    @property
    def removed(self) -> int:
        return sum(line.kind == REMOVED for hunk in self.hunks for line in hunk.lines)

    @property
    def changed(self) -> int:
        return self.added + self.removed

    def touches(self, start: int, end: int, *, side: str = "old") -> bool:
        """Whether this patch adds or removes any line numbered ``start``..``end`` on
        ``side`` (or inserts right after one of them, on the old side)."""
        for hunk in self.hunks:
            for line in hunk.lines:
                if line.kind == CONTEXT:
                    continue
                number = line.old if side == "old" else line.new
                if number is None and side == "old":
                    # an insertion sits after the previous old line
                    number = _old_before(hunk, line)
                if number is not None and start <= number <= end:
                    return True
        return False

    def new_number(self, old: int) -> int:
        """Where old line ``old`` is after this patch, when the patch leaves it alone:
        shifted by what every hunk before it added and removed."""
        shift = 0
        for hunk in self.hunks:
            for line in hunk.lines:
                if line.old == old and line.new is not None:  # a context line: it says
                    return line.new
            last_old = hunk.old_start + max(hunk.old_count - 1, 0)
            if last_old < old:
                shift += hunk.new_count - hunk.old_count
        return old + shift


def _old_before(hunk: Hunk, target: Line) -> int:
    # With no old line before it in the hunk (a pure insertion under -U0, or one at a
    # hunk's top) the line sits after the one the header names.
    last = hunk.old_start if hunk.old_count == 0 else hunk.old_start - 1
    for line in hunk.lines:
        if line is target:
            return last
        if line.old is not None:
            last = line.old
    return last


def _unquote(path: str) -> str:
    """git quotes paths with unusual characters ("a/\\303\\274"); spell them out."""
    if path.startswith('"') and path.endswith('"'):
        raw = codecs.escape_decode(path[1:-1].encode())[0]  # octal escapes are UTF-8 bytes
        return raw.decode("utf-8", "replace")
    return path


def parse(diff: str) -> list[DiffFile]:
    """Every file of ``diff`` with its hunks; a line the format does not expect (the
    "\\ No newline at end of file" marker) is skipped, never a failure."""
    files: list[DiffFile] = []
    for chunk in re.split(r"(?m)^(?=diff --git )", diff):
        if not chunk.startswith("diff --git "):
            continue
        head, *_ = chunk.split("\n", 1)
        match = re.match(r"diff --git (\"?a/.*?\"?) (\"?b/.*\"?)$", head)
        old_path = new_path = ""
        if match:
            old_path, new_path = (_unquote(p)[2:] for p in match.groups())
        status = "modified"
        current: Hunk | None = None
        file = DiffFile(
            path=new_path,
            old_path=old_path,
            status=status,
            patch_hash=hashlib.sha1(chunk.encode(), usedforsecurity=False).hexdigest()[:16],
        )
        old = new = 0
        for raw in chunk.split("\n")[1:]:
            if current is None:
                if raw.startswith("new file mode"):
                    file.status = "added"
                elif raw.startswith("deleted file mode"):
                    file.status = "deleted"
                    file.path = file.old_path
                elif raw.startswith("Binary files") or raw.startswith("GIT binary patch"):
                    file.status = "binary"
                elif raw.startswith(("+++ ", "--- ")):
                    # git ends a path holding a space with a tab
                    name = raw[4:].rstrip("\t")
                    if name != "/dev/null" and raw[0] == "+":
                        file.path = _unquote(name)[2:]
                    elif name != "/dev/null":
                        file.old_path = _unquote(name)[2:]
            hunk = HUNK.match(raw)
            if hunk:
                current = Hunk(
                    header=raw,
                    old_start=int(hunk.group(1)),
                    old_count=int(hunk.group(2) if hunk.group(2) is not None else 1),
                    new_count=int(hunk.group(4) if hunk.group(4) is not None else 1),
                )
                file.hunks.append(current)
                old, new = int(hunk.group(1)), int(hunk.group(3))
                continue
            if current is None or not raw or raw[0] not in (CONTEXT, ADDED, REMOVED):
                continue
            kind, text = raw[0], raw[1:]
            if kind == CONTEXT:
                current.lines.append(Line(kind, old, new, text))
                old, new = old + 1, new + 1
            elif kind == ADDED:
                current.lines.append(Line(kind, None, new, text))
                new += 1
            else:
                current.lines.append(Line(kind, old, None, text))
                old += 1
        files.append(file)
    return files


def split_rows(hunk: Hunk) -> list[tuple[Line | None, Line | None]]:
    """A hunk as side-by-side rows: context on both sides, each run of removed lines
    paired with the run of added lines that follows it."""
    rows: list[tuple[Line | None, Line | None]] = []
    removed: list[Line] = []
    added: list[Line] = []

    def flush() -> None:
        for i in range(max(len(removed), len(added))):
            rows.append(
                (removed[i] if i < len(removed) else None, added[i] if i < len(added) else None)
            )
        removed.clear()
        added.clear()

    for line in hunk.lines:
        if line.kind == REMOVED:
            if added:
                flush()
            removed.append(line)
        elif line.kind == ADDED:
            added.append(line)
        else:
            flush()
            rows.append((line, line))
    flush()
    return rows


DIFF_ARGS = ["--no-color", "--no-ext-diff", "--no-renames", "--src-prefix=a/", "--dst-prefix=b/"]


def file_diff(repo_path: str | Path, *, base: str, head: str, path: str) -> str:
    """The diff of one file between two commits."""
    with open_repo(repo_path, "reading a file's diff") as repo:
        return _text(repo.git.diff(*DIFF_ARGS, base, head, "--", path, env=FLEET_GIT_ENV))


def commit_diff(repo_path: str | Path, sha: str) -> tuple[str, str]:
    """A commit's parent and its diff against it (what a squash commit landed)."""
    with open_repo(repo_path, "reading a commit") as repo:
        parent = repo.git.rev_parse(f"{sha}^")
        return parent, _text(repo.git.diff(*DIFF_ARGS, parent, sha, env=FLEET_GIT_ENV))


def changes_between(repo_path: str | Path, *, old: str, new: str) -> dict[str, DiffFile]:
    """What changed from ``old`` to ``new``, per path (a comment or finding raised on
    ``old`` is outdated when its lines are among them)."""
    with open_repo(repo_path, "comparing two commits") as repo:
        text = _text(repo.git.diff(*DIFF_ARGS, "-U0", old, new, env=FLEET_GIT_ENV))
    return {f.old_path or f.path: f for f in parse(text)}


def file_lines(repo_path: str | Path, *, sha: str, path: str) -> list[str]:
    """A file's lines at a commit (empty when it did not exist there)."""
    with open_repo(repo_path, "reading a file") as repo:
        try:
            return _text(repo.git.show(f"{sha}:{path}", env=FLEET_GIT_ENV)).split("\n")
        except git.GitCommandError:  # no such file at that commit
            return []
