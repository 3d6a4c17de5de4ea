"""What a task's branch is, relative to main: the facts a task page and the merge
gates need, and the stale-base report (what merging the branch's tree would delete)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from fleet.git import paths
from fleet.git.repo import FLEET_GIT_ENV, open_repo

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
TASK_KEY = re.compile(r"^([A-Z][A-Z0-9]*-\d+): ")
# Explicit prefixes and unquoted paths whatever the user's configuration says.
DIFF = ["--no-color", "--no-ext-diff", "--no-renames", "--src-prefix=a/", "--dst-prefix=b/"]


def _text(value: str) -> str:
    """Git output as text a page can show: undecodable bytes become U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _numstat(repo, a: str, b: str) -> dict[str, tuple[int | None, int | None]]:
    """path → (added, removed), None for a binary file (``--numstat -z``: any path)."""
    out = repo.git.diff("--numstat", "-z", *DIFF, a, b, env=FLEET_GIT_ENV)
    result: dict[str, tuple[int | None, int | None]] = {}
    for record in out.split("\0"):
        if record.count("\t") < 2:
            continue
        added, removed, path = record.split("\t", 2)
        result[_text(path)] = (
            None if added == "-" else int(added),
            None if removed == "-" else int(removed),
        )
    return result


@dataclass
class FileChange:
    path: str
    added: int | None  # None: binary
    removed: int | None


@dataclass
class BranchFacts:
    main: str
    head: str
    merge_base: str
    ahead: int
    behind: int
    files: list[FileChange]
    diff: str
    outside: list[str]  # changed files no declared or claimed path covers

    @property
    def single_commit(self) -> bool:
        return self.ahead == 1

    @property
    def main_moved(self) -> bool:
        return self.merge_base != self.main


def branch_facts(
    repo_path: str | Path, *, main: str, head: str, allowed: list[str] | None = None
) -> BranchFacts:
    """``main`` and ``head`` are any revisions; ``allowed`` are the task's path globs
    (none declared: every changed file is outside; ``None``: not checked)."""
    with open_repo(repo_path, "reading the branch") as repo:
        main_sha, head_sha = repo.git.rev_parse(main, head).split()
        base = repo.git.merge_base(main_sha, head_sha)
        behind, ahead = (
            int(n)
            for n in repo.git.rev_list(
                "--left-right", "--count", f"{main_sha}...{head_sha}"
            ).split()
        )
        files = [
            FileChange(path, added, removed)
            for path, (added, removed) in _numstat(repo, base, head_sha).items()
        ]
        diff = _text(repo.git.diff(*DIFF, base, head_sha, env=FLEET_GIT_ENV))
    changed = [f.path for f in files]
    return BranchFacts(
        main=main_sha,
        head=head_sha,
        merge_base=base,
        ahead=ahead,
        behind=behind,
        files=files,
        diff=diff,
        outside=paths.outside(changed, allowed) if allowed is not None else [],
    )


@dataclass
class Introduced:
    sha: str
    subject: str
    task_key: str | None


@dataclass
class LostHunk:
    """Lines main has (gained after the branch forked) that the branch's tree lacks."""

    path: str
    start: int  # first line number in main
    lines: list[str]
    commits: list[Introduced] = field(default_factory=list)
    whole_file: bool = False  # binary or empty: no lines to show

    @property
    def end(self) -> int:
        return self.start + len(self.lines) - 1


def _hunks(diff: str) -> list[dict]:
    """(path, old_start, old_lines, new_start, new_lines) per ``-U0`` hunk, with the
    removed lines' text."""
    hunks: list[dict] = []
    path = None
    current = None
    header = False  # between "diff --git" and the first "@@": where "--- a/x" is a header
    for line in diff.split("\n"):  # not splitlines(): \x0c or \u2028 are inside lines
        if line.startswith("diff --git "):
            path, current, header = None, None, True
        elif header and line.startswith("--- "):
            old = line[4:].rstrip("\t")  # git appends a TAB to paths with spaces
            path = old[2:] if old.startswith("a/") else None
        elif header and line.startswith("+++ "):
            new = line[4:].rstrip("\t")
            if new.startswith("b/"):
                path = new[2:]
        elif line.startswith("@@"):
            header = False
            match = HUNK.match(line)
            current = None
            if match and path is not None:
                old_start, old_count, new_start, new_count = match.groups()
                current = {
                    "path": path,
                    "old_start": int(old_start),
                    "old_count": 1 if old_count is None else int(old_count),
                    "new_start": int(new_start),
                    "new_count": 1 if new_count is None else int(new_count),
                    "removed": [],
                }
                hunks.append(current)
        elif current is not None and line.startswith("-"):
            current["removed"].append(line[1:])
    return hunks


def stale_base_report(repo_path: str | Path, *, main: str, head: str) -> list[LostHunk]:
    """Every hunk that merging the branch's *tree* over ``main`` would delete although
    the task never touched it: lines main gained after the fork (base..main) that the
    tree diff main..head removes. Empty when main has not moved since the fork.

    Lines are matched by their line number in ``main``, so a common line such as ``}``
    is reported only where it really was added on main."""
    with open_repo(repo_path, "building the stale-base report") as repo:
        main_sha, head_sha = repo.git.rev_parse(main, head).split()
        base = repo.git.merge_base(main_sha, head_sha)
        if base == main_sha:
            return []
        gained: dict[str, set[int]] = {}
        for hunk in _hunks(_text(repo.git.diff("-U0", *DIFF, base, main_sha, env=FLEET_GIT_ENV))):
            lines = range(hunk["new_start"], hunk["new_start"] + hunk["new_count"])
            gained.setdefault(hunk["path"], set()).update(lines)
        # The tree diff sees main's version as "old": its removed lines are main's.
        report: list[LostHunk] = []
        tree_diff = _text(repo.git.diff("-U0", *DIFF, main_sha, head_sha, env=FLEET_GIT_ENV))
        for hunk in _hunks(tree_diff):
            mine = gained.get(hunk["path"])
            if not mine:
                continue
            # git names the old side of a file deleted by the tree diff "a/<path>" too.
            current: LostHunk | None = None
            for offset, text in enumerate(hunk["removed"]):
                number = hunk["old_start"] + offset
                if number in mine:
                    if current is not None and current.end == number - 1:
                        current.lines.append(text)
                    else:
                        current = LostHunk(hunk["path"], number, [text])
                        report.append(current)
                else:
                    current = None
        report += _whole_files(repo, base, main_sha, head_sha, {h.path for h in report})
        _attribute(repo, base, main_sha, report)
    return report


def _whole_files(repo, base: str, main: str, head: str, seen: set[str]) -> list[LostHunk]:
    """What has no lines to compare: binary files and empty files that main gained or
    changed after the fork, which the branch's tree would undo though the task never
    touched them."""
    gained = _numstat(repo, base, main)
    undone = _numstat(repo, main, head)
    own = _numstat(repo, base, head)
    lost = []
    for path, (added, removed) in undone.items():
        if path in seen or path not in gained or path in own:
            continue
        binary = added is None or gained[path][0] is None
        empty = (added, removed) == (0, 0) or gained[path] == (0, 0)
        if binary or empty:
            label = "(binary file)" if binary else "(empty file)"
            lost.append(LostHunk(path, 1, [label], whole_file=True))
    return lost


def _attribute(repo, base: str, main_sha: str, report: list[LostHunk]) -> None:
    """Name the main commits that introduced each lost hunk. One ``git log`` finds the
    commits after the fork per path; a path only one of them touched needs nothing
    more, others get a single ``git blame`` over all their lost ranges."""
    if not report:
        return
    touched: dict[str, list[Introduced]] = {}
    current: Introduced | None = None
    log = _text(
        repo.git.log(
            "--format=%x00%H %s",
            "--name-only",
            "--no-renames",
            f"{base}..{main_sha}",
            env=FLEET_GIT_ENV,
        )
    )
    for line in log.split("\n"):
        if line.startswith("\0"):
            sha, _, subject = line[1:].partition(" ")
            match = TASK_KEY.match(subject)
            current = Introduced(sha, subject, match.group(1) if match else None)
        elif line.strip() and current is not None:
            touched.setdefault(line.strip(), []).append(current)
    by_path: dict[str, list[LostHunk]] = {}
    for lost in report:
        by_path.setdefault(lost.path, []).append(lost)
    for path, hunks in by_path.items():
        candidates = touched.get(path, [])
        if len(candidates) == 1 or all(h.whole_file for h in hunks):
            for lost in hunks:
                lost.commits = list(candidates)
            continue
        known = {c.sha: c for c in candidates}
        ranges = [arg for h in hunks for arg in ("-L", f"{h.start},{h.end}")]
        line_commit = _blame_lines(
            _text(repo.git.blame("--porcelain", *ranges, main_sha, "--", path, env=FLEET_GIT_ENV))
        )
        for lost in hunks:
            found: dict[str, Introduced] = {}
            for number in range(lost.start, lost.end + 1):
                sha, subject = line_commit.get(number, (None, ""))
                if sha and sha not in found:
                    match = TASK_KEY.match(subject)
                    found[sha] = known.get(sha) or Introduced(
                        sha, subject, match.group(1) if match else None
                    )
            lost.commits = list(found.values())


def _blame_lines(porcelain: str) -> dict[int, tuple[str, str]]:
    """Final line number → (commit, subject) from ``git blame --porcelain``."""
    subjects: dict[str, str] = {}
    lines: dict[int, tuple[str, str]] = {}
    sha, final = None, 0
    for line in porcelain.split("\n"):
        parts = line.split(" ")
        if (
            len(parts[0]) == 40
            and len(parts) >= 3
            and all(c in "0123456789abcdef" for c in parts[0])
        ):
            sha, final = parts[0], int(parts[2])
        elif line.startswith("summary ") and sha:
            subjects[sha] = line[len("summary ") :]
        elif line.startswith("\t") and sha:
            lines[final] = (sha, subjects.get(sha, ""))
    return lines


def changed_paths(repo_path: str | Path, *, main: str, head: str) -> list[str]:
    """The files ``head`` changes since it forked from ``main`` (``main...head``)."""
    with open_repo(repo_path, "listing the changed files") as repo:
        out = repo.git.diff("--name-only", "-z", "--no-renames", f"{main}...{head}")
    return sorted(p for p in out.split("\0") if p)


def commit_message(repo_path: str | Path, sha: str) -> str:
    """The full message of one commit."""
    with open_repo(repo_path, "reading the commit message") as repo:
        return _text(repo.git.log("-1", "--format=%B", sha, "--"))
