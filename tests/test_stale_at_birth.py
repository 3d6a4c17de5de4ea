"""An agent goes stale only ``FLEET_HEARTBEAT_TTL`` after its last sign of life: its
spawn, its boot and its heartbeats each count as one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet import dispatch
from fleet.heartbeats import Beat
from fleet.models import Agent, AgentSession, Task, TransitionError
from fleet.spawn import spawn
from fleet.worker import mark_stale_agents

from .api.conftest import AgentClient
from .conftest import make_agent, make_repository, make_task

pytestmark = pytest.mark.django_db


def test_a_spawned_agent_is_not_stale_before_its_first_boot(client, data_dir, settings):
    repository = make_repository()
    task = make_task(repository=repository, status=Task.READY)
    spawned = spawn(
        repository=repository, role=Agent.BUILDER, name="newborn", directory=data_dir / "newborn"
    )
    born = spawned.agent.created_at
    ttl = timedelta(seconds=settings.FLEET_HEARTBEAT_TTL)

    assert mark_stale_agents(born + timedelta(seconds=3)) == 0
    assert mark_stale_agents(born + ttl - timedelta(seconds=1)) == 0
    spawned.agent.refresh_from_db()
    assert spawned.agent.status == Agent.IDLE and spawned.agent.last_heartbeat_at is None

    # Its first call, before any boot or heartbeat, is served.
    answer = AgentClient(client, spawned.token).post("work/next")
    assert answer.status_code == 200, answer.content
    assert answer.json()["task"]["key"] == task.key

    # Silent a whole TTL after its spawn (its last sign of life): stale.
    assert mark_stale_agents(born + ttl + timedelta(seconds=1)) == 1
    spawned.agent.refresh_from_db()
    assert spawned.agent.status == Agent.STALE


def test_a_boot_is_a_sign_of_life(settings):
    ttl = timedelta(seconds=settings.FLEET_HEARTBEAT_TTL)
    long_ago = timezone.now() - 3 * ttl
    agent = make_agent(created_at=long_ago, last_heartbeat_at=long_ago)
    AgentSession.objects.create(agent=agent, started_at=long_ago)
    assert mark_stale_agents(timezone.now()) == 1

    agent.refresh_from_db()
    dispatch.boot(agent)
    agent.refresh_from_db()
    booted = agent.sessions.get(ended_at__isnull=True).started_at
    assert agent.status == Agent.IDLE
    assert mark_stale_agents(booted + timedelta(seconds=3)) == 0
    assert mark_stale_agents(booted + ttl + timedelta(seconds=1)) == 1


def test_a_heartbeat_keeps_an_agent_fresh_for_one_ttl(settings):
    ttl = timedelta(seconds=settings.FLEET_HEARTBEAT_TTL)
    long_ago = timezone.now() - 3 * ttl
    agent = make_agent(created_at=long_ago)
    AgentSession.objects.create(agent=agent, started_at=long_ago)
    dispatch.heartbeat(agent, Beat(context_pct=5))
    agent.refresh_from_db()
    beat = agent.last_heartbeat_at

    assert mark_stale_agents(beat + ttl - timedelta(seconds=1)) == 0
    assert mark_stale_agents(beat + ttl + timedelta(seconds=1)) == 1


def test_an_agent_silent_since_long_before_is_stale_at_once(settings):
    long_ago = timezone.now() - timedelta(seconds=3 * settings.FLEET_HEARTBEAT_TTL)
    never = make_agent(created_at=long_ago)
    silent = make_agent(created_at=long_ago, last_heartbeat_at=long_ago)
    stopped = make_agent(created_at=long_ago, status=Agent.STOPPED, stop_reason="person")
    assert mark_stale_agents(timezone.now()) == 2
    assert set(Agent.objects.filter(status=Agent.STALE)) == {never, silent}
    stopped.refresh_from_db()
    assert stopped.status == Agent.STOPPED


def test_a_sign_of_life_after_the_sweep_read_keeps_the_agent_fresh(settings):
    long_ago = timezone.now() - timedelta(seconds=3 * settings.FLEET_HEARTBEAT_TTL)
    agent = make_agent(created_at=long_ago, last_heartbeat_at=long_ago)
    now = timezone.now()
    [seen] = Agent.objects.stale(now)
    dispatch.boot(agent)  # lands between the sweep's read and its write

    with pytest.raises(TransitionError) as refused:
        seen.mark_stale(now=now)
    assert refused.value.code == "alive"
    agent.refresh_from_db()
    assert agent.status == Agent.IDLE
