"""What a task's branch is, relative to main: the facts a task page and the merge
gates need, and the stale-base report (what merging the branch's tree would delete)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from fleet.git import paths
from fleet.git.repo import open_repo

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
TASK_KEY = re.compile(r"^([A-Z][A-Z0-9]*-\d+): ")
DIFF = ["--no-color", "--no-ext-diff", "--no-renames"]


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
    """``main`` and ``head`` are any revisions; ``allowed`` are the task's path globs."""
    with open_repo(repo_path, "reading the branch") as repo:
        main_sha, head_sha = repo.git.rev_parse(main, head).split()
        base = repo.git.merge_base(main_sha, head_sha)
        behind, ahead = (
            int(n)
            for n in repo.git.rev_list(
                "--left-right", "--count", f"{main_sha}...{head_sha}"
            ).split()
        )
        files = []
        for line in repo.git.diff("--numstat", *DIFF, base, head_sha).splitlines():
            added, removed, path = line.split("\t", 2)
            files.append(
                FileChange(
                    path,
                    None if added == "-" else int(added),
                    None if removed == "-" else int(removed),
                )
            )
        diff = repo.git.diff(*DIFF, base, head_sha)
    changed = [f.path for f in files]
    return BranchFacts(
        main=main_sha,
        head=head_sha,
        merge_base=base,
        ahead=ahead,
        behind=behind,
        files=files,
        diff=diff,
        outside=paths.outside(changed, allowed) if allowed else [],
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
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            path, current, header = None, None, True
        elif header and line.startswith("--- "):
            old = line[4:]
            path = old[2:] if old.startswith("a/") else None
        elif header and line.startswith("+++ "):
            new = line[4:]
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
        for hunk in _hunks(repo.git.diff("-U0", *DIFF, base, main_sha)):
            lines = range(hunk["new_start"], hunk["new_start"] + hunk["new_count"])
            gained.setdefault(hunk["path"], set()).update(lines)
        # The tree diff sees main's version as "old": its removed lines are main's.
        report: list[LostHunk] = []
        for hunk in _hunks(repo.git.diff("-U0", *DIFF, main_sha, head_sha)):
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
        for lost in report:
            lost.commits = _introduced(repo, main_sha, lost)
    return report


def _introduced(repo, main_sha: str, lost: LostHunk) -> list[Introduced]:
    blame = repo.git.blame(
        "--porcelain", "-L", f"{lost.start},{lost.end}", main_sha, "--", lost.path
    )
    seen: dict[str, Introduced] = {}
    subjects: dict[str, str] = {}
    sha = None
    for line in blame.splitlines():
        head = line.split(" ", 1)[0]
        if len(head) == 40 and all(c in "0123456789abcdef" for c in head):
            sha = head
        elif line.startswith("summary ") and sha:
            subjects[sha] = line[len("summary ") :]
        elif line.startswith("\t") and sha and sha not in seen:
            subject = subjects.get(sha, "")
            match = TASK_KEY.match(subject)
            seen[sha] = Introduced(sha, subject, match.group(1) if match else None)
    return list(seen.values())
