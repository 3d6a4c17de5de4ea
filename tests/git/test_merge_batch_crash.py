"""A worker SIGKILLed at each step of a batched merge (building, testing, bisecting,
moving main, after main moved): main is the old tip or a tested chain top, and the
next worker reconciles every task of the batch."""

from __future__ import annotations

import pytest

from fleet.git.merge import is_ancestor
from fleet.models import CheckRun, MergeBatch, MergeRequest, Task

from ..conftest import make_repository, make_user
from .conftest import git, push_from_other
from .test_merge_crash import check_processes, git_locks, worker_once
from .test_merge_queue import approved_task, origin_main

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STEPS = [
    ("red", "candidate"),
    ("red", "testing"),
    ("red", "bisect"),
    ("red", "before-update"),
    ("red", "after-update"),
    ("green", "testing"),
    ("green", "before-update"),
    ("green", "after-update"),
]


@pytest.mark.parametrize(("kind", "step"), STEPS)
def test_killing_the_worker_at_each_step_of_a_batch(kind, step, shop, data_dir):
    from fleet import merging

    repository = make_repository(
        path=str(shop["clone"]),
        slug="shop",
        check_command="sleep 1; test ! -e shop/broken.py",
        merge_batch_size=3,
    )
    specs = [(f"T-{n}", {f"shop/m{n}.py": f"M = {n}\n"}) for n in range(1, 4)]
    if kind == "red":
        specs[1][1]["shop/broken.py"] = "x\n"  # T-2 breaks the check
    tasks = [approved_task(repository, shop, key, files, f"Work {key}") for key, files in specs]
    lead = make_user("lea", "lead")
    for task in tasks:
        merging.enqueue(task, by=lead)
    old = origin_main(shop)

    killed = worker_once(data_dir, fault=step)
    assert killed.returncode == -9, killed.stderr[-2000:]
    batch = MergeBatch.objects.get()
    assert batch.step != "done"  # left open for the next worker
    passed_tops = {t["top"] for t in batch.trials if t["passed"]}
    assert origin_main(shop) in {old} | passed_tops
    if step == "after-update":
        assert origin_main(shop) == batch.target_sha != old
        push_from_other(shop, {"NEWS.md": "news\n"}, "other work")  # main moves on meanwhile
    else:
        assert origin_main(shop) == old
    assert git_locks(shop["clone"] / ".git", shop["origin"]) == []

    for _ in range(4):
        done = worker_once(data_dir)
        assert done.returncode == 0, done.stderr[-2000:]
        if not MergeRequest.objects.filter(result=MergeRequest.PENDING).exists():
            break
    assert not MergeBatch.objects.exclude(step="done").exists()
    expected = {"T-1", "T-3"} if kind == "red" else {"T-1", "T-2", "T-3"}
    subjects = git(shop["origin"], "log", "--format=%s", "main").splitlines()
    for task in tasks:
        task.refresh_from_db()
        if task.key in expected:
            assert task.status == Task.MERGED
            assert subjects.count(f"{task.key}: Work {task.key}") == 1
            mr = MergeRequest.objects.get(task=task, result=MergeRequest.MERGED)
            tops = CheckRun.objects.filter(task=task, status="passed").values_list(
                "commit_sha", flat=True
            )
            # Merged on a check that included it.
            assert any(is_ancestor(shop["clone"], mr.candidate_sha, top) for top in tops)
        else:
            assert task.status == Task.CHANGES_REQUESTED
            assert not any(s.startswith(task.key + ":") for s in subjects)
    # Every commit a batch sent main to was the top of a passed check.
    tested = set(CheckRun.objects.filter(status="passed").values_list("commit_sha", flat=True))
    targets = set(MergeBatch.objects.exclude(target_sha="").values_list("target_sha", flat=True))
    assert targets and targets <= tested
    assert check_processes() == []
    assert git_locks(shop["clone"] / ".git", shop["origin"]) == []


def test_a_serial_merge_killed_after_main_moved_is_not_merged_again_by_a_batch(shop, data_dir):
    """T-1 alone in the queue takes the serial path; its worker dies once main is its
    candidate. T-2 joins before the restart, so the next run would build a batch: T-1
    is merged as it is, not rebuilt on a main that already has it."""
    from fleet import merging

    repository = make_repository(
        path=str(shop["clone"]), slug="shop", check_command="true", merge_batch_size=3
    )
    lead = make_user("lea", "lead")
    first = approved_task(repository, shop, "T-1", {"shop/a.py": "A\n"}, "Work T-1")
    merging.enqueue(first, by=lead)
    killed = worker_once(data_dir, fault="after-update")
    assert killed.returncode == -9, killed.stderr[-2000:]
    mr = MergeRequest.objects.get(task=first)
    assert (mr.step, origin_main(shop)) == ("updating", mr.candidate_sha)
    assert not MergeBatch.objects.exists()  # it was the serial path

    second = approved_task(repository, shop, "T-2", {"shop/b.py": "B\n"}, "Work T-2")
    merging.enqueue(second, by=lead)
    for _ in range(3):
        done = worker_once(data_dir)
        assert done.returncode == 0, done.stderr[-2000:]
        if not MergeRequest.objects.filter(result=MergeRequest.PENDING).exists():
            break
    subjects = git(shop["origin"], "log", "--format=%s", "main").splitlines()
    assert subjects[:3] == ["T-2: Work T-2", "T-1: Work T-1", "initial"]
    for task in (first, second):
        task.refresh_from_db()
        assert task.status == Task.MERGED
    mr.refresh_from_db()
    assert mr.result == MergeRequest.MERGED and mr.candidate_sha == git(
        shop["origin"], "rev-parse", "main~1"
    )
    assert check_processes() == []
    assert git_locks(shop["clone"] / ".git", shop["origin"]) == []
