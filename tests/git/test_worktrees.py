"""Worktrees off fresh main, safe removal, and clear errors."""

from __future__ import annotations

import fcntl
import subprocess
import threading
from pathlib import Path

import pytest

from fleet.git import merge, worktrees
from fleet.git import repo as gitrepo
from fleet.git.errors import (
    DirtyWorktree,
    LockedIndex,
    MissingBranch,
    MissingRemote,
    NotARepository,
)

from .conftest import commit, git, push_from_other


def test_a_worktree_branches_from_freshly_fetched_main_without_tracking(shop):
    moved = push_from_other(shop, {"NEWS.md": "news\n"}, "news on origin")
    wt = shop["root"] / "wt" / "T-1"
    base = worktrees.create(
        shop["clone"], worktree=wt, branch="feat/T-1", remote="origin", default="main"
    )
    assert base == moved  # not Fleet's stale local main
    assert (wt / "NEWS.md").exists()
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD") == "feat/T-1"
    with pytest.raises(subprocess.CalledProcessError):  # --no-track: no upstream
        git(wt, "rev-parse", "--abbrev-ref", "@{upstream}")
    # Asking again keeps the worktree (and the work in it).
    (wt / "work.txt").write_text("in progress\n")
    again = worktrees.create(
        shop["clone"], worktree=wt, branch="feat/T-1", remote="origin", default="main"
    )
    assert again == base and (wt / "work.txt").exists()


def test_a_repository_without_a_remote_branches_from_its_local_main(tmp_path):
    local = tmp_path / "solo"
    git(tmp_path, "init", "-q", "-b", "main", str(local))
    sha = commit(local, {"a.txt": "a\n"}, "one")
    base = worktrees.create(
        local, worktree=tmp_path / "wt", branch="fix/T-2", remote="origin", default="main"
    )
    assert base == sha


def test_forty_concurrent_worktree_creations_all_succeed(shop):
    errors, bases = [], []

    def make(n: int) -> None:
        try:
            bases.append(
                worktrees.create(
                    shop["clone"],
                    worktree=shop["root"] / "wt" / f"T-{n}",
                    branch=f"feat/T-{n}",
                    remote="origin",
                    default="main",
                )
            )
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(bases) == 40 and len(set(bases)) == 1
    listed = git(shop["clone"], "worktree", "list", "--porcelain")
    assert listed.count("branch refs/heads/feat/T-") == 40


def test_removal_never_loses_work(shop):
    clone, wt = shop["clone"], shop["root"] / "wt" / "T-3"
    worktrees.create(clone, worktree=wt, branch="feat/T-3", remote="origin", default="main")
    head = commit(wt, {"shop/tax.py": "RATE = 0.2\n"}, "tax")
    (wt / "scratch.txt").write_text("uncommitted\n")
    kept = worktrees.remove(clone, worktree=wt, branch="feat/T-3", merged_head=head)
    assert not kept.removed_worktree and "uncommitted" in kept.reason and wt.exists()
    (wt / "scratch.txt").unlink()
    commit(wt, {"shop/tax.py": "RATE = 0.21\n"}, "after the merge")
    unmerged = worktrees.remove(clone, worktree=wt, branch="feat/T-3", merged_head=head)
    assert unmerged.removed_worktree and not unmerged.deleted_branch
    assert "not merged" in unmerged.reason
    assert git(clone, "branch", "--list", "feat/T-3")  # the branch is still there


def test_a_merged_clean_worktree_and_its_branch_are_removed(shop):
    clone, wt = shop["clone"], shop["root"] / "wt" / "T-4"
    worktrees.create(clone, worktree=wt, branch="feat/T-4", remote="origin", default="main")
    (wt / ".fleet").mkdir()
    (wt / ".fleet" / "identity.json").write_text("{}")
    gitrepo.exclude_paths(wt, ["/.fleet/"])
    head = commit(wt, {"shop/tax.py": "RATE = 0.2\n"}, "tax")
    assert worktrees.disk_usage(wt) > 0
    done = worktrees.remove(clone, worktree=wt, branch="feat/T-4", merged_head=head)
    assert done.removed_worktree and done.deleted_branch and not wt.exists()
    assert not git(clone, "branch", "--list", "feat/T-4")


def test_rebase_only_in_a_clean_worktree_and_only_when_it_applies(shop):
    clone, wt = shop["clone"], shop["root"] / "wt" / "T-5"
    worktrees.create(clone, worktree=wt, branch="feat/T-5", remote="origin", default="main")
    commit(wt, {"shop/cart.py": "def total(items):\n    return 0\n"}, "mine")
    tip = push_from_other(shop, {"shop/cart.py": "def total(items):\n    return 1\n"}, "theirs")
    merge.tip(clone, remote="origin", branch="main")  # fetch
    before = gitrepo.head_sha(wt)
    (wt / "dirty.txt").write_text("x")
    with pytest.raises(DirtyWorktree):
        worktrees.rebase(wt, onto=tip, branch="feat/T-5")
    (wt / "dirty.txt").unlink()
    assert worktrees.rebase(wt, onto=tip, branch="feat/T-5") == ["shop/cart.py"]
    assert gitrepo.head_sha(wt) == before and worktrees.dirty_files(wt) == []


def test_clear_errors_for_broken_repositories(tmp_path, shop):
    with pytest.raises(NotARepository, match="not a git repository"):
        worktrees.create(
            tmp_path, worktree=tmp_path / "x", branch="b", remote="origin", default="main"
        )
    with pytest.raises(MissingRemote, match="no remote 'upstream'"):
        worktrees.create(
            shop["clone"], worktree=tmp_path / "y", branch="b", remote="upstream", default="main"
        )
    with pytest.raises(MissingBranch):
        worktrees.create(
            shop["clone"], worktree=tmp_path / "z", branch="b", remote="origin", default="trunk"
        )
    lock = Path(shop["clone"]) / ".git" / "index.lock"
    lock.write_text("")
    with pytest.raises(LockedIndex, match="lock"):
        gitrepo.commit_files(path=shop["clone"], files={"a.txt": "a"}, message="blocked")
    lock.unlink()


def test_worktree_lock_serializes(shop):
    # The lock is a flock on a file that stays: held here, a second taker waits.
    with gitrepo.worktree_lock(shop["clone"]):
        flock = Path(shop["clone"]) / ".git" / "fleet-worktrees.flock"
        with open(flock) as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
