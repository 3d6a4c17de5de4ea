"""A worker SIGKILLed at any step of a merge: main is the old tip or the tested
commit, never anything else; no git lock is left behind; the queue completes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.models import CheckRun, MergeRequest, Task

from ..agent.conftest import ROOT, database_url
from ..conftest import make_repository, make_user
from .conftest import git, push_from_other
from .test_merge_queue import approved_task, origin_main

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def worker_once(data_dir: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "DJANGO_ALLOW"))}
    env.update(DATABASE_URL=database_url(), FLEET_DATA_DIR=str(data_dir))
    if fault:
        env["FLEET_FAULT_KILL_AT"] = fault
    return subprocess.run(
        [sys.executable, "manage.py", "fleet_worker", "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"FLEET_CHECK_RUN=" in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def git_locks(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*.lock")]


@pytest.mark.parametrize("step", ["candidate", "testing", "before-update", "after-update"])
def test_killing_the_worker_at_each_step_of_a_merge(step, shop, data_dir):
    repository = make_repository(
        path=str(shop["clone"]), slug="shop", check_command="sleep 2; test -e shop/tax.py"
    )
    task = approved_task(repository, shop, "T-1", {"shop/tax.py": "RATE = 0.2\n"}, "Add tax")
    from fleet import merging

    merging.enqueue(task, by=make_user("lea", "lead"))
    old = origin_main(shop)

    killed = worker_once(data_dir, fault=step)
    assert killed.returncode == -9, killed.stderr[-2000:]
    mr = MergeRequest.objects.get(task=task)
    assert origin_main(shop) in {old, mr.candidate_sha}
    if step == "after-update":
        assert origin_main(shop) == mr.candidate_sha
    else:
        assert origin_main(shop) == old
    assert git_locks(shop["clone"] / ".git", shop["origin"]) == []

    if step == "after-update":
        # Main moves on before the worker comes back: still merged once, not twice.
        push_from_other(shop, {"NEWS.md": "news\n"}, "other work")
    done = worker_once(data_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    task.refresh_from_db()
    mr.refresh_from_db()
    assert task.status == Task.MERGED and mr.result == "merged"
    tested = set(
        CheckRun.objects.filter(task=task, status="passed").values_list("commit_sha", flat=True)
    )
    assert mr.candidate_sha in tested  # what landed is what was tested
    subjects = git(shop["origin"], "log", "--format=%s", "main").splitlines()
    assert subjects.count("T-1: Add tax") == 1
    if step == "after-update":
        assert subjects[:2] == ["other work", "T-1: Add tax"]
    else:
        assert subjects[0] == "T-1: Add tax"
        assert git(shop["origin"], "rev-parse", "main^") == old
    assert check_processes() == []  # nothing of a killed check runs on
    assert git_locks(shop["clone"] / ".git", shop["origin"]) == []
    # The check's scratch worktree is reused, and sits at the tested commit, clean.
    listed = git(shop["clone"], "worktree", "list", "--porcelain")
    # The clone itself, the merge check's scratch, and (once the wave merged) the
    # wave verification's scratch.
    assert listed.count("worktree ") - ("/verify\n" in listed + "\n") == 2
    assert "T-1" not in listed  # the merged task's worktree was removed
