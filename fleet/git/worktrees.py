"""Per-task worktrees: created off freshly fetched main, removed only when safe.

Add, remove and prune are serialized per repository (``worktree_lock``), because
parallel ``git worktree add`` races on ``.git/config.lock``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import git

from fleet.git.errors import DirtyWorktree, GitError
from fleet.git.repo import AUTHOR_ENV, fresh_base, open_repo, worktree_lock


def create(repo_path: str | Path, *, worktree: Path, branch: str, remote: str, default: str) -> str:
    """The task's worktree at ``worktree`` on ``branch``, branched (``--no-track``) from
    freshly fetched ``<remote>/<default>``; returns the base sha. An existing worktree
    is kept, and an existing branch (its worktree removed earlier) is checked out again."""
    with worktree_lock(repo_path):
        base = fresh_base(repo_path, remote=remote, branch=default)
        with open_repo(repo_path, f"creating the worktree {worktree}") as repo:
            if worktree.exists() and (worktree / ".git").exists():
                return repo.git.merge_base(base, f"refs/heads/{branch}")
            worktree.parent.mkdir(parents=True, exist_ok=True)
            repo.git.worktree("prune")
            if _branch_exists(repo, branch):
                repo.git.worktree("add", str(worktree), branch)
                return repo.git.merge_base(base, f"refs/heads/{branch}")
            repo.git.worktree("add", "--no-track", "-b", branch, str(worktree), base)
    return base


def _branch_exists(repo: git.Repo, branch: str) -> bool:
    try:
        repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{branch}")
    except git.GitCommandError:
        return False
    return True


def dirty_files(worktree: str | Path) -> list[str]:
    """Uncommitted changes and untracked files (ignored and excluded ones do not count)."""
    with open_repo(worktree, f"reading {worktree}") as repo:
        lines = repo.git.status("--porcelain", "--untracked-files=all").splitlines()
    return [line[3:] for line in lines if line.strip()]


@dataclass
class Removal:
    removed_worktree: bool
    deleted_branch: bool
    reason: str = ""


def remove(
    repo_path: str | Path, *, worktree: Path, branch: str, merged_head: str | None
) -> Removal:
    """Remove a merged task's worktree and branch, but only when nothing would be lost:
    a worktree with uncommitted changes stays, and the branch is deleted only when its
    tip is exactly the commit that was merged (``merged_head``)."""
    with worktree_lock(repo_path), open_repo(repo_path, f"removing {worktree}") as repo:
        removed = False
        if worktree.exists():
            dirty = dirty_files(worktree)
            if dirty:
                return Removal(False, False, f"uncommitted changes: {', '.join(dirty[:5])}")
            # Ignored files (the identity layer) go with it; git refuses otherwise.
            repo.git.worktree("remove", "--force", str(worktree))
            removed = True
        repo.git.worktree("prune")
        if not _branch_exists(repo, branch):
            return Removal(removed, False, "")
        tip = repo.git.rev_parse(f"refs/heads/{branch}")
        if merged_head is None or tip != merged_head:
            return Removal(removed, False, f"{branch} has commits that were not merged")
        repo.git.branch("-D", branch)
        return Removal(removed, True)


def rebase(worktree: str | Path, *, onto: str) -> list[str]:
    """Rebase the worktree's branch onto ``onto`` if it is clean and the rebase applies
    cleanly; returns [] on success, else the conflicting files (the rebase is aborted
    and the branch left exactly as it was)."""
    dirty = dirty_files(worktree)
    if dirty:
        raise DirtyWorktree(f"{worktree} has uncommitted changes: {', '.join(dirty[:5])}")
    with open_repo(worktree, f"rebasing {worktree}") as repo:
        try:
            repo.git.rebase(onto, env={"GIT_EDITOR": "true", **AUTHOR_ENV})
        except git.GitCommandError:
            conflicts = repo.git.diff("--name-only", "--diff-filter=U").splitlines()
            try:
                repo.git.rebase("--abort")
            except git.GitCommandError as exc:
                raise GitError(f"rebase of {worktree} failed and could not be aborted") from exc
            return conflicts or ["(the rebase failed)"]
    return []


def disk_usage(path: str | Path) -> int:
    """Bytes used by the files under ``path`` (worktrees: their checked-out files)."""
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def scratch(repo_path: str | Path, *, path: Path, commit: str) -> Path:
    """A detached throwaway worktree at ``commit`` (for running a check), pristine:
    reused between checks (moving it costs only the files that differ, which matters
    in a large repository), forced to ``commit`` and cleaned of everything untracked."""
    with worktree_lock(repo_path), open_repo(repo_path, "preparing the check worktree") as repo:
        if (path / ".git").exists():
            try:
                with open_repo(path, "resetting the check worktree") as tree:
                    tree.git.checkout("--detach", "--force", commit)
                    tree.git.clean("-ffdxq")
                return path
            except GitError:
                shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            shutil.rmtree(path)
        repo.git.worktree("prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        repo.git.worktree("add", "--detach", str(path), commit)
    return path
