"""The worker's sweeps, its --once mode, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from fleet.models import Agent, Event, Task
from fleet.worker import Worker

from .conftest import make_agent, make_task

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_a_tick_expires_lapsed_leases_and_marks_silent_agents_stale(settings):
    now = timezone.now()
    task = make_task(status=Task.READY)
    agent = make_agent(last_heartbeat_at=now)
    task.assign(agent=agent, ttl=30)
    agent.start_work(task=task)
    fresh = make_agent(last_heartbeat_at=now)

    later = now + timedelta(seconds=settings.FLEET_HEARTBEAT_TTL + 60)
    results = Worker().tick(now=later)

    assert results == {
        "expired_leases": 1,
        "stale_agents": 2,
        "checkpoints": 0,
        "expired_claims": 0,
        "budgets": 0,
        "gates": 0,
        "merges": 0,
        "merged_worktrees": 0,
        "waves": 0,
        "webhooks": 0,
        "replays": 0,
    }
    task.refresh_from_db()
    agent.refresh_from_db()
    fresh.refresh_from_db()
    assert task.status == Task.READY and task.assignee is None
    assert agent.status == Agent.STALE and agent.current_task is None
    assert fresh.status == Agent.STALE
    assert Event.objects.filter(kind="task.expire_lease", task=task).count() == 1
    # Nothing left to do: a second tick changes nothing.
    assert Worker().tick(now=later) == {
        "expired_leases": 0,
        "stale_agents": 0,
        "checkpoints": 0,
        "expired_claims": 0,
        "budgets": 0,
        "gates": 0,
        "merges": 0,
        "merged_worktrees": 0,
        "waves": 0,
        "webhooks": 0,
        "replays": 0,
    }


@pytest.mark.django_db
def test_live_agents_and_leases_are_left_alone():
    task = make_task(status=Task.READY)
    agent = make_agent(last_heartbeat_at=timezone.now())
    task.assign(agent=agent, ttl=600)
    assert Worker().tick() == {
        "expired_leases": 0,
        "stale_agents": 0,
        "checkpoints": 0,
        "expired_claims": 0,
        "budgets": 0,
        "gates": 0,
        "merges": 0,
        "merged_worktrees": 0,
        "waves": 0,
        "webhooks": 0,
        "replays": 0,
    }
    task.refresh_from_db()
    assert task.status == Task.ASSIGNED


@pytest.mark.django_db
def test_once_runs_a_single_tick():
    out = StringIO()
    call_command("fleet_worker", "--once", stdout=out)
    assert "stopped after 1 tick(s)" in out.getvalue()


@pytest.mark.django_db
def test_a_worker_can_run_only_some_sweeps(settings):
    task = make_task(status=Task.READY)
    agent = make_agent(last_heartbeat_at=timezone.now())
    task.assign(agent=agent, ttl=1)
    later = timezone.now() + timedelta(seconds=settings.FLEET_HEARTBEAT_TTL + 60)
    # A merge-only worker leaves leases and liveness to the other worker.
    assert Worker(sweeps=("merges", "merged_worktrees")).tick(now=later) == {
        "merges": 0,
        "merged_worktrees": 0,
    }
    task.refresh_from_db()
    assert task.status == Task.ASSIGNED
    assert Worker(sweeps=("expired_leases",)).tick(now=later) == {"expired_leases": 1}
    task.refresh_from_db()
    assert task.status == Task.READY
    with pytest.raises(SystemExit):
        call_command("fleet_worker", "--once", "--only", "merges", "--skip", "merges")
    out = StringIO()  # last: the command closes the test's connection when it ends
    call_command("fleet_worker", "--once", "--skip", "merges", stdout=out)
    assert (
        "sweeps: stale_agents, checkpoints, expired_leases, expired_claims, budgets, "
        "gates, merged_worktrees, waves, webhooks" in out.getvalue()
    )


@pytest.mark.slow
def test_sigterm_stops_the_worker_cleanly(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "FLEET_DATA_DIR": str(tmp_path),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "fleet_worker", "--interval", "30"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "started" in proc.stdout.readline()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        # It is asleep for 30 s between ticks; a clean stop must not wait for that.
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped after 1 tick(s)" in out
