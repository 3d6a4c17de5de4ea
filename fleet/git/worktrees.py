"""Per-task worktrees: created off freshly fetched main, removed only when safe.

Add, remove and prune are serialized per repository (``worktree_lock``), because
parallel ``git worktree add`` races on ``.git/config.lock``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import git

from fleet.git.errors import DirtyWorktree, GitError
from fleet.git.repo import FLEET_GIT_ENV, fresh_base, open_repo, worktree_lock


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
            with open_repo(worktree, f"reading {worktree}") as tree:
                head = tree.git.rev_parse("HEAD")
                attached = _attached_branch(tree)
            if attached != branch and head != merged_head:
                # Commits on a detached HEAD (or another branch) would become unreachable.
                where = f"on {attached}" if attached else "on a detached HEAD"
                return Removal(False, False, f"the worktree is {where} at {head[:10]}")
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


IN_PROGRESS = ("rebase-merge", "rebase-apply", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD")


def _attached_branch(repo: git.Repo) -> str | None:
    try:
        return repo.git.symbolic_ref("--quiet", "--short", "HEAD")
    except git.GitCommandError:
        return None


def _own_changes_id(cwd: str | Path, base: str, head: str) -> str:
    """An identity of the branch's own changes: a context-free patch id of base..head."""
    diff = subprocess.run(
        ["git", "diff", "-U0", "--no-color", "--no-ext-diff", base, head],
        cwd=cwd,
        capture_output=True,
        check=True,
    ).stdout
    if not diff.strip():
        return ""
    out = subprocess.run(
        ["git", "patch-id", "--stable"], cwd=cwd, input=diff, capture_output=True, check=True
    ).stdout
    return out.split(b" ")[0].decode()


def rebase(
    worktree: str | Path, *, onto: str, branch: str, expect_head: str | None = None
) -> list[str]:
    """Rebase the task's branch in its worktree onto ``onto``, only when nothing can be
    lost or slipped in: the worktree is clean, on ``branch``, with no rebase or merge of
    its own in progress; its HEAD is ``expect_head`` (the approved commit) when given;
    the branch has no merge commits (a rebase would flatten them); and afterwards the
    branch's own changes are exactly what they were. Returns [] on success, else why
    not (conflicting files, or the reason); the branch is then left as it was."""
    dirty = dirty_files(worktree)
    if dirty:
        raise DirtyWorktree(f"{worktree} has uncommitted changes: {', '.join(dirty[:5])}")
    with open_repo(worktree, f"rebasing {worktree}") as repo:
        git_dir = Path(repo.git.rev_parse("--absolute-git-dir"))
        busy = [name for name in IN_PROGRESS if (git_dir / name).exists()]
        if busy:
            return [f"(a {busy[0]} of the builder's own is in progress)"]
        if _attached_branch(repo) != branch:
            return [f"(the worktree is not on {branch})"]
        old_head = repo.git.rev_parse("HEAD")
        if expect_head and old_head != repo.git.rev_parse(f"{expect_head}^{{commit}}"):
            return [f"(the worktree moved past the approved commit {expect_head[:10]})"]
        old_base = repo.git.merge_base(onto, old_head)
        if repo.git.rev_list("--merges", f"{old_base}..{old_head}").strip():
            return ["(the branch has merge commits; rebase it by hand)"]
        before = _own_changes_id(worktree, old_base, old_head)
        try:
            repo.git.rebase(onto, env={"GIT_EDITOR": "true", **FLEET_GIT_ENV})
        except git.GitCommandError:
            conflicts = repo.git.diff("--name-only", "--diff-filter=U").splitlines()
            _abort(repo, worktree)
            return conflicts or ["(the rebase failed)"]
        after = _own_changes_id(worktree, onto, repo.git.rev_parse("HEAD"))
        if after != before:
            repo.git.reset("--hard", old_head)  # HEAD only moved by our rebase
            return ["(the rebased branch would change its own diff; rebase it by hand)"]
    return []


def _abort(repo: git.Repo, worktree) -> None:
    try:
        repo.git.rebase("--abort")
    except git.GitCommandError as exc:
        raise GitError(f"rebase of {worktree} failed and could not be aborted") from exc


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


def branch_and_behind(worktree: str | Path, main: str) -> tuple[str | None, int]:
    """The branch a worktree has checked out (None when detached), and how many
    commits of ``main`` its HEAD lacks."""
    with open_repo(worktree, "reading the worktree") as repo:
        branch = _attached_branch(repo)
        behind = int(repo.git.rev_list("--count", f"HEAD..{main}"))
    return branch, behind


CHECKPOINTS = "refs/fleet/checkpoints"


def checkpoint(worktree: str | Path, *, key: str, message: str) -> tuple[str, str]:
    """Record the worktree as it is — uncommitted and untracked files included, the
    index and the files left untouched — as a commit on top of HEAD under
    ``refs/fleet/checkpoints/<key>/<n>`` (the next free n). Returns (ref, sha)."""
    worktree = Path(worktree)
    with open_repo(worktree, f"checkpointing {worktree}") as repo:
        git_dir = Path(repo.git.rev_parse("--absolute-git-dir"))
        index = git_dir / f"fleet-checkpoint-{os.getpid()}-{uuid.uuid4().hex[:8]}.index"
        env = {**FLEET_GIT_ENV, "GIT_INDEX_FILE": str(index)}
        try:
            # A scratch index: the worktree's own staging is not disturbed.
            repo.git.read_tree("HEAD", env=env)
            repo.git.add("--all", env=env)
            tree = repo.git.write_tree(env=env)
        finally:
            index.unlink(missing_ok=True)
        head = repo.git.rev_parse("HEAD")
        sha = repo.git.commit_tree(tree, "-p", head, "-m", message, env=FLEET_GIT_ENV)
        taken = repo.git.for_each_ref("--format=%(refname)", f"{CHECKPOINTS}/{key}/").split()
        numbers = [int(ref.rsplit("/", 1)[1]) for ref in taken if ref.rsplit("/", 1)[1].isdigit()]
        ref = f"{CHECKPOINTS}/{key}/{max(numbers, default=0) + 1}"
        repo.git.update_ref(ref, sha, "")  # "" as the old value: only if new
    return ref, sha
