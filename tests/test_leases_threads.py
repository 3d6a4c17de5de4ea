"""A Hypothesis state machine over the task / lease / claim machine, each step run by
several threads at once (their own database connections): whatever interleaving the
database allows, a task has at most one holder, a lease epoch never goes back, and a
path has at most one live write claim."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from fleet import dispatch, worker
from fleet.heartbeats import Beat
from fleet.models import Agent, FileClaim, Task, TransitionError, Wave

from .conftest import make_agent, make_repository, make_task, make_wave

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
_runs = itertools.count(1)
PATHS = ("src/a.py", "src/b.py")
EXPECTED = (TransitionError, dispatch.Refused)


def together(*calls) -> list:
    """Run the calls in threads at once; each result, or the exception it raised."""
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i, call):
        try:
            barrier.wait()
            results[i] = call()
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


class Leases(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        n = next(_runs)
        self.repo = make_repository(slug=f"leases-{n}")
        wave = make_wave(status=Wave.RUNNING)
        self.tasks = [
            make_task(wave=wave, repository=self.repo, key=f"L{n}-{i}", status=Task.READY)
            for i in range(3)
        ]
        self.agents = [make_agent(name=f"b{n}-{i}", repository=self.repo) for i in range(3)]
        self.epochs = {t.pk: 0 for t in self.tasks}

    def agent(self, i: int) -> Agent:
        return Agent.objects.get(pk=self.agents[i].pk)

    @rule(who=st.lists(st.integers(0, 2), min_size=2, max_size=3, unique=True))
    def pull_at_once(self, who):
        results = together(*(lambda i=i: dispatch.next_work(self.agent(i)) for i in who))
        for result in results:
            assert isinstance(result, (tuple, *EXPECTED)), result
        taken = [r[1].pk for r in results if isinstance(r, tuple) and r[1] is not None]
        assert len(taken) == len(set(taken))  # never the same task to two agents

    @rule(
        who=st.lists(st.integers(0, 2), min_size=2, max_size=3, unique=True),
        path=st.sampled_from(PATHS),
        both=st.booleans(),
    )
    def claim_at_once(self, who, path, both):
        def claim(i):
            agent = self.agent(i)
            task = dispatch.leased_task(agent)
            if task is None:
                return None
            # Both paths, in opposite orders by different agents: locks must not cross.
            paths = (list(PATHS) if i % 2 else list(reversed(PATHS))) if both else [path]
            result = dispatch.claim(agent, task=task, paths=paths, mode=FileClaim.WRITE)
            assert [c.path for c in result] == paths  # the answer keeps the caller's order
            return result

        for result in together(*(lambda i=i: claim(i) for i in who)):
            assert result is None or isinstance(result, (list, *EXPECTED)), result

    @rule(i=st.integers(0, 2))
    def lease_lapses_while_its_holder_beats(self, i):
        agent = self.agent(i)
        task = dispatch.leased_task(agent)
        if task is None:
            return
        past = timezone.now() - timedelta(seconds=1)
        Task.objects.filter(pk=task.pk).update(lease_expires_at=past)
        beat = Beat(context_pct=10, epoch=task.lease_epoch)
        results = together(
            lambda: worker.expire_leases(timezone.now()),
            lambda: dispatch.heartbeat(self.agent(i), beat),
        )
        for result in results:
            assert isinstance(result, (int, dict, *EXPECTED)), result

    @invariant()
    def one_holder_per_task(self):
        for task in Task.objects.filter(pk__in=[t.pk for t in self.tasks]):
            holders = Agent.objects.filter(current_task=task).count()
            if task.status in Task.LEASED_STATES:
                assert task.assignee_id is not None and holders <= 1
            assert task.lease_epoch >= self.epochs[task.pk]  # never goes back
            self.epochs[task.pk] = task.lease_epoch
        held = [a.current_task_id for a in Agent.objects.filter(pk__in=[a.pk for a in self.agents])]
        held = [t for t in held if t]
        assert len(held) == len(set(held))

    @invariant()
    def one_live_writer_per_path(self):
        now = timezone.now()
        for path in PATHS:
            live = FileClaim.objects.filter(
                repository=self.repo,
                path=path,
                mode=FileClaim.WRITE,
                released_at__isnull=True,
                expires_at__gt=now,
            )
            assert live.count() <= 1, list(live.values("agent__name", "task__key"))


def test_leases_under_threads():
    run_state_machine_as_test(
        Leases,
        settings=settings(
            max_examples=40,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


def test_a_claim_that_waited_for_a_lease_expiry_is_refused():
    """The expiry holds the agent's row; the claim waits for it, then must see the task
    back in ready (read after the wait, not from the snapshot taken before it)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL")
    from django.db import connections, transaction

    task = make_task(status=Task.READY, wave=make_wave(status=Wave.RUNNING))
    agent = make_agent(name="late")
    task.assign(agent=agent)
    task.refresh_from_db()
    holding, waiting = threading.Event(), threading.Event()
    failures: list[Exception] = []

    def expire() -> None:
        try:
            with transaction.atomic():
                Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
                Task.objects.filter(pk=task.pk).update(
                    status=Task.READY, assignee=None, lease_expires_at=None
                )
                holding.set()
                assert waiting.wait(30)
        except Exception as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    def claim():
        holding.wait(30)
        return dispatch.claim(agent, task=task, paths=["src/x.py"], mode=FileClaim.WRITE)

    expiring = threading.Thread(target=expire)
    expiring.start()
    watcher = threading.Thread(target=_tell_when_a_backend_waits_for_a_lock, args=(waiting,))
    watcher.start()
    result = together(claim)[0]
    expiring.join(timeout=30)
    watcher.join(timeout=30)
    assert failures == []
    assert isinstance(result, TransitionError) and result.code == "lease_lost", result
    assert not FileClaim.objects.exists()


def _tell_when_a_backend_waits_for_a_lock(done: threading.Event) -> None:
    try:
        with connection.cursor() as cursor:
            for _ in range(300):
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    break
                time.sleep(0.05)
    finally:
        done.set()
        connection.close()
