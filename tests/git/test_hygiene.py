"""GitPython hygiene: hundreds of operations leave no git helper processes and no
growing file-descriptor count (one Repo per operation, always closed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.git import facts, merge, worktrees
from fleet.git import repo as gitrepo

from .conftest import commit

pytestmark = pytest.mark.slow


def git_children() -> list[int]:
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and name.startswith("git"):
            found.append(int(entry.name))
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_five_hundred_git_operations_leak_nothing(shop):
    clone = shop["clone"]
    wt = shop["root"] / "wt" / "T-1"
    worktrees.create(clone, worktree=wt, branch="feat/T-1", remote="origin", default="main")
    commit(wt, {"shop/tax.py": "RATE = 0.2\n"}, "tax")

    counter = iter(range(10_000))
    scratch_dir = shop["root"] / "scratch" / "check"

    def operations():
        # commit_files reads objects through GitPython (its cat-file helpers).
        yield lambda: commit(wt, {"shop/n.py": f"N = {next(counter)}\n"}, "n")
        yield lambda: gitrepo.head_sha(clone)
        yield lambda: facts.branch_facts(clone, main="main", head="feat/T-1", allowed=["shop/**"])
        yield lambda: facts.stale_base_report(clone, main="main", head="feat/T-1")
        yield lambda: merge.build_candidate(clone, main="main", head="feat/T-1", message="T-1: x")
        yield lambda: worktrees.dirty_files(wt)
        yield lambda: merge.run_check(
            clone, commit="main", command="true", workdir=scratch_dir, timeout=30
        )

    for op in operations():  # warm up: imports, caches
        op()
    fds_before = open_fds()
    done = 0
    while done < 500:
        for op in operations():
            op()
            done += 1
    assert git_children() == []
    assert open_fds() <= fds_before + 2
