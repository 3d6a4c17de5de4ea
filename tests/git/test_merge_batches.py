"""The merge queue in batches: one check for a green batch, a bisection that finds
the task that broke a red one, and main only ever at a commit whose check passed."""

from __future__ import annotations

import pytest

from fleet import merging
from fleet.models import CheckRun, MergeBatch, MergeRequest, Message, Task

from .conftest import git
from .test_merge_queue import approved_task, origin_main

pytestmark = pytest.mark.django_db

BREAKS = "test ! -e shop/broken.py"


def queue(repository, shop, lead, specs: list[tuple[str, dict[str, str]]]) -> list[Task]:
    tasks = [approved_task(repository, shop, key, files, f"Work {key}") for key, files in specs]
    for task in tasks:
        merging.enqueue(task, by=lead)
    return tasks


def drain(limit: int = 10) -> None:
    for _ in range(limit):
        if not MergeRequest.objects.filter(result=MergeRequest.PENDING).exists():
            return
        merging.process_queues()
        merging.collect_merged()
    raise AssertionError("the queue did not drain")


def main_subjects(shop) -> list[str]:
    return git(shop["origin"], "log", "--format=%s", "main").splitlines()


def assert_tested_when_merged(repository, tasks: list[Task]) -> None:
    """Every merged task has a passed check on a commit that includes it."""
    for task in tasks:
        task.refresh_from_db()
        if task.status != Task.MERGED:
            continue
        mr = MergeRequest.objects.get(task=task, result=MergeRequest.MERGED)
        tops = CheckRun.objects.filter(task=task, status="passed").values_list(
            "commit_sha", flat=True
        )
        assert any(merging.merge.is_ancestor(repository.path, mr.candidate_sha, t) for t in tops)


def test_batch_size_one_is_the_serial_queue(repository, shop, lead):
    assert repository.merge_batch_size == 1
    queue(repository, shop, lead, [("T-1", {"shop/a.py": "A\n"}), ("T-2", {"shop/b.py": "B\n"})])
    assert merging.process_queues() == 1  # one task per run, as always
    drain()
    assert MergeBatch.objects.count() == 0
    assert main_subjects(shop)[:2] == ["T-2: Work T-2", "T-1: Work T-1"]


def test_a_green_batch_lands_every_task_as_its_own_commit_on_one_check(
    repository, shop, lead, tmp_path
):
    counter = tmp_path / "checks"
    repository.merge_batch_size = 5
    repository.check_command = f"echo run >> {counter}"
    repository.save()
    old = origin_main(shop)
    tasks = queue(
        repository,
        shop,
        lead,
        [(f"T-{n}", {f"shop/m{n}.py": f"M = {n}\n"}) for n in range(1, 4)],
    )
    assert merging.process_queues() == 1
    assert counter.read_text().count("run") == 1  # one check for the three tasks
    assert main_subjects(shop)[:4] == [
        "T-3: Work T-3",
        "T-2: Work T-2",
        "T-1: Work T-1",
        "initial",
    ]
    assert git(shop["origin"], "rev-parse", "main~3") == old
    assert git(repository.path, "rev-parse", "refs/heads/main") == origin_main(shop)  # follows
    batch = MergeBatch.objects.get()
    assert batch.step == "done" and batch.landed == 3
    assert batch.trials == [
        {"tasks": ["T-1", "T-2", "T-3"], "top": origin_main(shop), "passed": True}
    ]
    for task in tasks:
        task.refresh_from_db()
        assert task.status == Task.MERGED
        assert CheckRun.objects.get(task=task).commit_sha == origin_main(shop)
    assert_tested_when_merged(repository, tasks)


def test_a_red_batch_bisects_to_the_task_that_broke_it_and_merges_the_others(
    repository, shop, lead
):
    repository.merge_batch_size = 5
    repository.check_command = f"echo checking; {BREAKS} || {{ echo 'broken.py is here'; exit 1; }}"
    repository.save()
    old = origin_main(shop)
    specs = [(f"T-{n}", {f"shop/m{n}.py": f"M = {n}\n"}) for n in range(1, 6)]
    specs[3][1]["shop/broken.py"] = "raise SystemExit\n"  # T-4 breaks the check
    tasks = queue(repository, shop, lead, specs)

    merging.process_queues()
    batch = MergeBatch.objects.get()
    # The whole chain (red), the first half (green: lands), then T-4 on top (red).
    assert [(t["tasks"][-1], t["passed"]) for t in batch.trials] == [
        ("T-5", False),
        ("T-3", True),
        ("T-4", False),
    ]
    assert batch.step == "done" and batch.landed == 3
    assert main_subjects(shop)[:4] == ["T-3: Work T-3", "T-2: Work T-2", "T-1: Work T-1", "initial"]
    assert git(shop["origin"], "rev-parse", "main~3") == old
    breaker, above = tasks[3], tasks[4]
    breaker.refresh_from_db()
    assert breaker.status == Task.CHANGES_REQUESTED
    note = Message.objects.get(recipient=breaker.assignee)
    assert "T-4 breaks it" in note.body and "broken.py is here" in note.body
    # T-5 was chained on T-4 and never tested without it: it waits for the next batch.
    mr = MergeRequest.objects.get(task=above)
    assert (mr.result, mr.step, mr.batch, mr.candidate_sha) == ("pending", "queued", None, "")

    drain()
    above.refresh_from_db()
    assert above.status == Task.MERGED
    subjects = main_subjects(shop)
    assert subjects[0] == "T-5: Work T-5" and not any(s.startswith("T-4") for s in subjects)
    assert sorted(s for s in subjects if s.startswith("T-")) == [
        f"T-{n}: Work T-{n}" for n in (1, 2, 3, 5)
    ]
    assert_tested_when_merged(repository, tasks)


def test_the_first_task_breaking_the_check_lands_nothing_on_its_checks(repository, shop, lead):
    repository.merge_batch_size = 3
    repository.check_command = BREAKS
    repository.save()
    old = origin_main(shop)
    specs = [(f"T-{n}", {f"shop/m{n}.py": f"M = {n}\n"}) for n in range(1, 4)]
    specs[0][1]["shop/broken.py"] = "x\n"
    tasks = queue(repository, shop, lead, specs)
    merging.process_queues()
    batch = MergeBatch.objects.get()
    assert [(len(t["tasks"]), t["passed"]) for t in batch.trials] == [
        (3, False),
        (2, False),
        (1, False),
    ]
    assert origin_main(shop) == old and batch.landed == 0
    tasks[0].refresh_from_db()
    assert tasks[0].status == Task.CHANGES_REQUESTED
    drain()
    assert main_subjects(shop)[:3] == ["T-3: Work T-3", "T-2: Work T-2", "initial"]
    assert_tested_when_merged(repository, tasks)


def test_a_task_conflicting_with_the_chain_below_is_sent_back_and_the_rest_chained(
    repository, shop, lead, tmp_path
):
    counter = tmp_path / "checks"
    repository.merge_batch_size = 3
    repository.check_command = f"echo run >> {counter}"
    repository.save()
    tasks = queue(
        repository,
        shop,
        lead,
        [
            ("T-1", {"shop/cart.py": "def total(items):\n    return 1\n"}),
            ("T-2", {"shop/cart.py": "def total(items):\n    return 2\n"}),
            ("T-3", {"shop/tax.py": "RATE = 0.2\n"}),
        ],
    )
    merging.process_queues()
    second = tasks[1]
    second.refresh_from_db()
    assert second.status == Task.CHANGES_REQUESTED
    reason = MergeRequest.objects.get(task=second).log
    assert "T-1 (queued before it)" in reason and "shop/cart.py" in reason
    assert counter.read_text().count("run") == 1
    assert main_subjects(shop)[:3] == ["T-3: Work T-3", "T-1: Work T-1", "initial"]
    assert MergeBatch.objects.get().trials[0]["tasks"] == ["T-1", "T-3"]


def test_main_moving_during_a_batch_check_rebuilds_the_batch_on_the_new_tip(
    repository, shop, lead, tmp_path
):
    marker = tmp_path / "pushed-once"
    other = shop["other"]
    repository.merge_batch_size = 2
    repository.check_command = (
        f"test -e {marker} || (touch {marker} && cd {other} && git pull -q --ff-only origin main"
        f" && echo late > late.txt && git add late.txt && git -c user.name=o -c user.email=o@x"
        f" commit -qm late && git push -q origin main)"
    )
    repository.save()
    tasks = queue(
        repository, shop, lead, [("T-1", {"shop/a.py": "A\n"}), ("T-2", {"shop/b.py": "B\n"})]
    )
    merging.process_queues()
    assert main_subjects(shop)[:3] == ["T-2: Work T-2", "T-1: Work T-1", "late"]
    first, second = MergeBatch.objects.order_by("pk")
    assert first.landed == 0 and "main moved" in first.note
    assert second.landed == 2 and second.trials[0]["top"] == origin_main(shop)
    assert_tested_when_merged(repository, tasks)


def test_a_batch_left_open_after_its_tasks_merged_is_closed_by_the_next_run(repository, shop, lead):
    """The worker died after merging the batch's last task but before closing it:
    nothing waits in the queue, and the next run still settles the batch."""
    repository.merge_batch_size = 2
    repository.save()
    queue(repository, shop, lead, [("T-1", {"shop/a.py": "A\n"}), ("T-2", {"shop/b.py": "B\n"})])
    merging.process_queues()
    batch = MergeBatch.objects.get()
    MergeBatch.objects.filter(pk=batch.pk).update(step="updating")
    tip = origin_main(shop)
    merging.process_queues()
    batch.refresh_from_db()
    assert batch.step == "done" and "restarted" in batch.note
    assert origin_main(shop) == tip
    assert set(MergeRequest.objects.values_list("result", flat=True)) == {"merged"}


def drop_connection_after_update(origin) -> None:
    """The origin's receive-pack dies once right after it updates a ref: the push
    reports an error (the remote hung up) although the remote took it."""
    hook = origin / "hooks" / "reference-transaction"
    hook.write_text('#!/bin/sh\nif [ "$1" = committed ]; then rm -f "$0"; kill -9 $PPID; fi\n')
    hook.chmod(0o755)


@pytest.mark.parametrize("size", [1, 2])
def test_a_push_that_fails_after_the_remote_took_it_merges_the_tasks(repository, shop, lead, size):
    repository.merge_batch_size = size
    repository.save()
    tasks = queue(
        repository, shop, lead, [("T-1", {"shop/a.py": "A\n"}), ("T-2", {"shop/b.py": "B\n"})]
    )
    drop_connection_after_update(shop["origin"])
    merging.process_queues()
    assert not (shop["origin"] / "hooks" / "reference-transaction").exists()  # it fired
    drain()
    subjects = main_subjects(shop)
    assert subjects[:3] == ["T-2: Work T-2", "T-1: Work T-1", "initial"]
    for task in tasks:
        task.refresh_from_db()
        assert task.status == Task.MERGED
    assert not Message.objects.exists()  # nobody was told their task came back
    assert_tested_when_merged(repository, tasks)


def test_a_batch_errors_the_merge_check_a_killed_serial_run_left_running(repository, shop, lead):
    repository.merge_batch_size = 2
    repository.save()
    first, second = queue(
        repository, shop, lead, [("T-1", {"shop/a.py": "A\n"}), ("T-2", {"shop/b.py": "B\n"})]
    )
    left = CheckRun.objects.create(
        repository=repository,
        task=first,
        name="merge check",
        commit_sha=origin_main(shop),
        status="running",
    )
    merging.process_queues()
    left.refresh_from_db()
    assert left.status == "error" and "stopped" in left.log and left.finished_at
    assert CheckRun.objects.filter(status="running").count() == 0
