"""Liveness: missed heartbeats → stale → the task back to ready (branch kept) →
another agent resumes it with attempt + 1; the attempt limit fails a task instead of
retrying forever; a stale agent that comes back is told who holds its task now."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet import dispatch, live
from fleet.heartbeats import Beat
from fleet.models import Agent, FileClaim, Task, TransitionError, Wave
from fleet.worker import Worker

from .conftest import make_agent, make_repository, make_task, make_wave

pytestmark = pytest.mark.django_db


def test_a_silent_agent_loses_its_task_to_the_next_one_and_is_told_so(settings):
    settings.FLEET_TASK_MAX_ATTEMPTS = 2
    task = make_task(
        wave=make_wave(status=Wave.RUNNING), repository=make_repository(), status=Task.READY
    )
    ada = make_agent(name="ada", last_heartbeat_at=timezone.now())
    _, held = dispatch.next_work(ada)
    assert held.pk == task.pk and held.attempt == 1 and held.lease_epoch == 1
    dispatch.claim(ada, task=held, paths=["shop/cart.py"], mode="write")

    # ada goes silent past its lease: the sweep marks it stale and frees the task.
    later = timezone.now() + timedelta(seconds=settings.FLEET_LEASE_TTL + 60)
    results = Worker().tick(now=later)
    assert results["expired_leases"] == 1 and results["stale_agents"] == 1
    task.refresh_from_db()
    ada.refresh_from_db()
    assert task.status == Task.READY and task.assignee is None
    assert ada.status == Agent.STALE and ada.current_task is None
    assert not FileClaim.objects.filter(released_at__isnull=True).exists()
    assert any("is silent" in p.text for p in live.problems([live._agents(ids=[ada.pk])[0]], []))

    # bob resumes it: the same task and branch, attempt 2, a new lease epoch.
    bob = make_agent(name="bob", last_heartbeat_at=timezone.now())
    _, resumed = dispatch.next_work(bob)
    assert (resumed.pk, resumed.branch, resumed.attempt) == (task.pk, held.branch, 2)
    assert resumed.lease_epoch == 2

    # ada comes back with its old epoch: refused, and told who holds the task now.
    with pytest.raises(TransitionError) as beat:
        dispatch.heartbeat(ada, Beat(context_pct=20, epoch=1))
    assert beat.value.code == "stale_lease" and "now held by bob" in beat.value.message
    with pytest.raises(TransitionError) as late:
        dispatch.submit(ada, task=resumed, commit="ab" * 20, epoch=1)
    assert late.value.code == "lease_lost" and "now held by bob" in late.value.message

    # bob goes silent too: two attempts were allowed, so the task fails for a person.
    bob.last_heartbeat_at = later
    bob.save()
    Worker().tick(now=later + timedelta(seconds=settings.FLEET_LEASE_TTL + 60))
    task.refresh_from_db()
    assert task.status == Task.FAILED and task.assignee_id == bob.pk
    assert "attempt 2 of 2" in task.events.get(kind="task.fail").payload["reason"]
