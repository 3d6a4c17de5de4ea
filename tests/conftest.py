"""Shared fixtures and small ``make_*`` helpers. Git is real, never mocked."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from fleet.git import repo as gitrepo
from fleet.models import Agent, Plan, Repository, Task, Wave

_seq = itertools.count(1)


def make_user(username: str | None = None, *roles: str, password: str = "pw-for-tests") -> User:
    user = User.objects.create_user(username or f"user{next(_seq)}", password=password)
    for role in roles:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def make_repository(path: str = "/nonexistent", **fields) -> Repository:
    n = next(_seq)
    return Repository.objects.create(
        name=fields.pop("name", f"Repo {n}"),
        slug=fields.pop("slug", f"repo-{n}"),
        path=path,
        **fields,
    )


def make_plan(**fields) -> Plan:
    n = next(_seq)
    return Plan.objects.create(name=f"Plan {n}", slug=f"plan-{n}", **fields)


def make_wave(plan: Plan | None = None, number: int = 1, **fields) -> Wave:
    return Wave.objects.create(plan=plan or make_plan(), number=number, **fields)


def make_task(wave: Wave | None = None, repository: Repository | None = None, **fields) -> Task:
    """A task in a running wave unless told otherwise (tasks are worked on there)."""
    n = next(_seq)
    return Task.objects.create(
        key=fields.pop("key", f"T-{n}"),
        wave=wave or make_wave(status=Wave.RUNNING),
        repository=repository or make_repository(),
        title=fields.pop("title", f"Task {n}"),
        **fields,
    )


def make_agent(role: str = Agent.BUILDER, **fields) -> Agent:
    return Agent.objects.create(name=fields.pop("name", f"agent-{next(_seq)}"), role=role, **fields)


def make_working_task(agent: Agent, **fields) -> Task:
    """A task leased to ``agent`` and being worked on (assigned, started, held)."""
    task = make_task(status=Task.READY, **fields)
    task.assign(agent=agent)
    task.start(by=agent, epoch=task.lease_epoch)
    agent.start_work(task=task)
    return task


@pytest.fixture
def data_dir(tmp_path: Path, settings) -> Path:
    """Point FLEET_DATA_DIR at a fresh temporary directory for this test."""
    path = tmp_path / "data"
    path.mkdir()
    settings.FLEET_DATA_DIR = path
    return path


@pytest.fixture
def git_origin(tmp_path: Path) -> tuple[Path, Path]:
    """A real bare "origin" and a clone of it with one commit on main."""
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    gitrepo.create_with_origin(
        origin=origin, clone=clone, files={"README.md": "hello\n"}, message="initial"
    )
    return origin, clone


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test gets its own channel layer: every async test runs on a new event loop,
    and channels_redis's layer keeps asyncio locks bound to the loop that first used
    them (several consumers of one test contend for them)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fresh_heartbeat_caches():
    """The heartbeat path remembers waves' plans and repositories' rotation lines per
    process; a test's rows (and their reused ids) must not see an earlier test's."""
    from fleet import heartbeats

    heartbeats._PLAN_OF_WAVE.clear()
    heartbeats._LINES.clear()
    yield
