"""What a task's branch is, relative to main: the facts a task page and the merge
gates need; the stale-base report (what merging the branch's tree would undo) lives in
``fleet.git.stale`` and is re-exported here."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fleet.git import paths
from fleet.git.errors import GitError
from fleet.git.repo import FLEET_GIT_ENV, open_repo
from fleet.git.stale import (  # noqa: F401 - the stale-base report's public names
    Introduced,
    LostHunk,
    ResurrectedHunk,
    StaleBase,
    clear_cache,
    stale_base,
)

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
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


def stale_base_report(repo_path: str | Path, *, main: str, head: str) -> list[LostHunk]:
    """The lost half of ``stale_base``: what merging the branch's tree would delete
    that main gained after the fork (the resurrections are ``stale_base(...).resurrected``)."""
    return stale_base(repo_path, main=main, head=head).lost


def changed_paths(repo_path: str | Path, *, main: str, head: str) -> list[str]:
    """The files ``head`` changes since it forked from ``main`` (``main...head``)."""
    with open_repo(repo_path, "listing the changed files") as repo:
        out = repo.git.diff("--name-only", "-z", "--no-renames", f"{main}...{head}")
    return sorted(p for p in out.split("\0") if p)


def commit_message(repo_path: str | Path, sha: str) -> str:
    """The full message of one commit."""
    with open_repo(repo_path, "reading the commit message") as repo:
        return _text(repo.git.log("-1", "--format=%B", sha, "--"))


def patch_id(repo_path: str | Path, *, main: str, head: str) -> str:
    """The patch id of what ``head`` changes since it forked from ``main``
    (``merge-base..head`` as one patch): the same after a rebase that leaves the
    change itself alone, different once a line of it changes (its indentation
    too). '' for no change."""
    with open_repo(repo_path, "working out the patch id") as repo:
        base = repo.git.merge_base(main, head)
        diff = repo.git.diff(
            *DIFF, "--full-index", base, head, env=FLEET_GIT_ENV, stdout_as_string=False
        )
    if not diff.strip():
        return ""
    proc = subprocess.run(
        # --verbatim: whitespace is code. (git 2.39 refuses it with --stable, which
        # only matters across file orders; one ``git diff`` always sorts its files.)
        ["git", "patch-id", "--verbatim"],
        input=diff + b"\n",
        capture_output=True,
        cwd=repo_path,
        env={**os.environ, **FLEET_GIT_ENV},
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git patch-id failed: {proc.stderr.decode(errors='replace')[:200]}")
    out = proc.stdout.decode().split()
    return out[0] if out else ""
