"""The merge queue in the worker: main only ever moves to a tested commit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet import merging
from fleet.git import repo as gitrepo
from fleet.git import worktrees
from fleet.models import Agent, CheckRun, Event, MergeRequest, Message, Task, Wave

from ..conftest import make_agent, make_task, make_wave
from .conftest import commit, git, push_from_other

pytestmark = pytest.mark.django_db


def approved_task(repository, shop, key: str, files: dict[str, str], title: str = "") -> Task:
    """A task with a worktree and one commit, reviewed and approved."""
    wt = Path(shop["root"]) / "wt" / key
    worktrees.create(
        repository.path, worktree=wt, branch=f"feat/{key}", remote="origin", default="main"
    )
    head = commit(wt, files, f"work on {key}")
    builder = make_agent(Agent.BUILDER, name=f"b-{key.lower()}")
    return make_task(
        wave=make_wave(status=Wave.RUNNING),
        repository=repository,
        key=key,
        title=title or f"Task {key}",
        status=Task.APPROVED,
        assignee=builder,
        head_sha=head,
        worktree_path=str(wt),
    )


def origin_main(shop) -> str:
    return git(shop["origin"], "rev-parse", "refs/heads/main")


def test_a_passing_check_moves_main_to_exactly_the_tested_commit(repository, shop, lead):
    task = approved_task(repository, shop, "T-1", {"shop/tax.py": "RATE = 0.2\n"}, "Add tax")
    old = origin_main(shop)
    merging.enqueue(task, by=lead)
    assert merging.process_queues() == 1
    assert merging.collect_merged() == 1
    run = CheckRun.objects.get(task=task)
    new = origin_main(shop)
    assert run.status == "passed" and run.commit_sha == new != old
    assert git(shop["origin"], "log", "--format=%s", "-1", new) == "T-1: Add tax"
    assert git(shop["origin"], "rev-parse", f"{new}^") == old  # squashed on the old tip
    assert gitrepo.head_sha(repository.path, "refs/heads/main") == new  # local follows
    task.refresh_from_db()
    mr = MergeRequest.objects.get(task=task)
    assert task.status == Task.MERGED and (mr.result, mr.step) == ("merged", "done")
    assert not Path(task.worktree_path).exists()
    assert not git(repository.path, "branch", "--list", "feat/T-1")


def test_a_failing_check_leaves_main_alone_and_returns_the_task_with_the_log(
    repository, shop, lead
):
    repository.check_command = "echo 'tests: 1 failed (test_tax)'; exit 3"
    repository.save()
    task = approved_task(repository, shop, "T-2", {"shop/tax.py": "RATE = 2\n"})
    old = origin_main(shop)
    merging.enqueue(task, by=lead)
    merging.process_queues()
    merging.collect_merged()
    assert origin_main(shop) == old
    task.refresh_from_db()
    assert task.status == Task.CHANGES_REQUESTED
    run = CheckRun.objects.get(task=task)
    assert run.status == "failed" and "1 failed (test_tax)" in run.log
    note = Message.objects.get(recipient=task.assignee)
    assert "merge check failed" in note.body and "test_tax" in note.body
    assert Path(task.worktree_path).exists()  # the builder's work stays


def test_two_queued_tasks_merge_in_queue_order(repository, shop, lead):
    first = approved_task(repository, shop, "T-3", {"shop/a.py": "A = 1\n"}, "First")
    second = approved_task(repository, shop, "T-4", {"shop/b.py": "B = 1\n"}, "Second")
    merging.enqueue(second, by=lead)
    merging.enqueue(first, by=lead)
    merging.process_queues()
    merging.collect_merged()
    merging.process_queues()
    merging.collect_merged()
    log = git(shop["origin"], "log", "--format=%s", "-2", "main").splitlines()
    assert log == ["T-3: First", "T-4: Second"]
    for name in ("shop/a.py", "shop/b.py"):
        assert git(shop["origin"], "show", f"main:{name}")
    # Every step of a merge is an event, and one merge's events share a correlation id.
    mr = MergeRequest.objects.get(task=first)
    steps = Event.objects.filter(correlation_id=f"merge-{mr.pk}").order_by("id")
    kinds = [e.kind for e in steps]
    assert kinds[0] == "merge.candidate" and "merge.testing" in kinds
    assert "task.mark_merged" in kinds and all(e.task_id == first.pk for e in steps)


def test_a_conflict_returns_the_task_naming_the_files(repository, shop, lead):
    task = approved_task(
        repository, shop, "T-5", {"shop/cart.py": "def total(items):\n    return 0\n"}
    )
    push_from_other(shop, {"shop/cart.py": "def total(items):\n    return 1\n"}, "someone else")
    old = origin_main(shop)
    merging.enqueue(task, by=lead)
    merging.process_queues()
    merging.collect_merged()
    assert origin_main(shop) == old
    task.refresh_from_db()
    assert task.status == Task.CHANGES_REQUESTED
    assert "shop/cart.py" in MergeRequest.objects.get(task=task).log
    assert "shop/cart.py" in Message.objects.get(recipient=task.assignee).body


def test_a_stale_base_is_rebased_in_a_clean_worktree_and_never_deletes_the_feature(
    repository, shop, lead
):
    stale = approved_task(repository, shop, "T-7", {"shop/ship.py": "FREE = 50\n"}, "Shipping")
    feature = approved_task(repository, shop, "T-6", {"shop/gift.py": "GIFT = True\n"}, "Gifts")
    merging.enqueue(feature, by=lead)
    merging.process_queues()
    merging.collect_merged()
    # T-7 forked before T-6 landed; merging its tree would delete shop/gift.py.
    merging.enqueue(stale, by=lead)
    merging.process_queues()
    merging.collect_merged()
    stale.refresh_from_db()
    assert stale.status == Task.MERGED
    assert git(shop["origin"], "show", "main:shop/gift.py") == "GIFT = True"
    assert git(shop["origin"], "show", "main:shop/ship.py") == "FREE = 50"


def test_a_stale_base_in_a_dirty_worktree_is_sent_back_naming_the_feature(repository, shop, lead):
    stale = approved_task(repository, shop, "T-9", {"shop/ship.py": "FREE = 50\n"}, "Shipping")
    feature = approved_task(repository, shop, "T-8", {"shop/gift.py": "GIFT = True\n"}, "Gifts")
    merging.enqueue(feature, by=lead)
    merging.process_queues()
    merging.collect_merged()
    (Path(stale.worktree_path) / "notes.txt").write_text("still thinking\n")
    merging.enqueue(stale, by=lead)
    merging.process_queues()
    merging.collect_merged()
    stale.refresh_from_db()
    assert stale.status == Task.CHANGES_REQUESTED
    reason = MergeRequest.objects.get(task=stale).log
    assert "stale base" in reason and "shop/gift.py" in reason and "T-8" in reason


def test_main_moving_during_the_check_rebuilds_on_the_new_tip(repository, shop, lead, tmp_path):
    marker = tmp_path / "pushed-once"
    other = shop["other"]
    repository.check_command = (
        f"test -e {marker} || (touch {marker} && cd {other} && git pull -q --ff-only origin main"
        f" && echo late > late.txt && git add late.txt && git -c user.name=o -c user.email=o@x"
        f" commit -qm late && git push -q origin main)"
    )
    repository.save()
    task = approved_task(repository, shop, "T-10", {"shop/c.py": "C = 1\n"}, "Late")
    merging.enqueue(task, by=lead)
    merging.process_queues()
    merging.collect_merged()
    assert CheckRun.objects.filter(task=task).count() == 2  # the rebuilt candidate is tested
    log = git(shop["origin"], "log", "--format=%s", "-2", "main").splitlines()
    assert log == ["T-10: Late", "late"]
    assert CheckRun.objects.filter(task=task).first().commit_sha == origin_main(shop)


def test_a_commit_git_does_not_know_sends_the_task_back(repository, shop, lead):
    task = approved_task(repository, shop, "T-11", {"shop/d.py": "D = 1\n"})
    task.head_sha = "0123456789abcdef0123456789abcdef01234567"
    task.save(update_fields=["head_sha"])
    merging.enqueue(task, by=lead)
    merging.process_queues()
    task.refresh_from_db()
    assert task.status == Task.CHANGES_REQUESTED
    assert "cannot be merged" in MergeRequest.objects.get(task=task).log


def test_one_merging_worker_per_repository_across_machines(repository, shop, lead):
    """On PostgreSQL the queue is serialized by an advisory lock per repository: while
    another session (another machine's worker) holds it, this worker leaves the queue
    alone; when that session dies, the next tick takes the queue over."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's (SQLite runs one machine: the flock)")
    import psycopg

    db = connection.settings_dict

    def session():
        return psycopg.connect(
            host=db["HOST"] or "127.0.0.1",
            port=db["PORT"] or 5432,
            user=db["USER"] or "postgres",
            dbname=db["NAME"],
            autocommit=True,
        )

    other = session()
    task = approved_task(repository, shop, "T-1", {"shop/tax.py": "RATE = 0.2\n"}, "Add tax")
    old = origin_main(shop)
    merging.enqueue(task, by=lead)
    taken = other.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", [merging.ADVISORY_NAMESPACE, repository.pk]
    ).fetchone()[0]
    assert taken
    assert merging.process_queues() == 0  # the other worker holds this repository
    assert not merging.still_holding(repository.pk)
    assert origin_main(shop) == old and MergeRequest.objects.get(task=task).step == "queued"
    pid = other.info.backend_pid
    other.close()  # that worker died: its session, and its lock, are gone
    with connection.cursor() as cursor:  # (the server ends the backend a moment later)
        for _ in range(100):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.1)
    assert merging.process_queues() == 1
    task.refresh_from_db()
    assert task.status == Task.MERGED and origin_main(shop) != old
    with merging.advisory_lock(repository.pk) as taken:
        assert taken and merging.still_holding(repository.pk)
    assert not merging.still_holding(repository.pk)
    # And this worker let go of the lock when done: another session can take it.
    again = session()
    assert again.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", [merging.ADVISORY_NAMESPACE, repository.pk]
    ).fetchone()[0]
    again.close()
