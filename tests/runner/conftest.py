"""A live Fleet, a private tmux server and a runner, for the runtime's tests."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.bench import fakecli
from fleet.models import Agent, Runner, Runtime
from fleet.runner.client import Fleet
from fleet.runner.supervisor import Supervisor
from fleet.runner.tmux import Tmux
from fleet.spawn import spawn
from tests.agent.conftest import live_fleet  # noqa: F401 - the session's live Fleet

from ..conftest import make_repository

FAKECLI = Path(fakecli.__file__)


@pytest.fixture
def tmux():
    """tmux on a socket of this test's own: the user's server is never touched."""
    server = Tmux(socket=f"fleet-test-{uuid.uuid4().hex[:10]}")
    yield server
    server._run("kill-server", check=False)


def make_runner(url: str, tmux: Tmux, name: str = "local", **options) -> Supervisor:
    runner = Runner.objects.create(name=name)
    token = runner.issue_token()
    return Supervisor(
        Fleet(url, token), tmux, name=name, grace=options.pop("grace", 2.0), **options
    )


def spawn_fake(name: str = "ada", *, boot: float = 0.3, command: str = "") -> Agent:
    repository = make_repository(slug=f"r-{name}")
    spawned = spawn(
        repository=repository,
        role=Agent.ORCHESTRATOR,
        name=name,
        harness="command",
        command=command or f"env FAKECLI_BOOT={boot} {sys.executable} {FAKECLI}",
    )
    return spawned.agent


def until(
    supervisor: Supervisor, check: Callable[[], object], *, timeout: float = 20, what: str = ""
):
    """Tick the runner until ``check()`` is truthy (its value), or fail saying what."""
    deadline = time.monotonic() + timeout
    while True:
        supervisor.tick()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            states = list(Runtime.objects.values_list("agent__name", "state", "error"))
            pytest.fail(f"timed out waiting for {what or check}; runtimes: {states}")
        time.sleep(0.2)


def runtime_of(name: str) -> Runtime:
    return Runtime.objects.select_related("agent", "runner").get(agent__name=name)


def received(agent: Agent) -> list[str]:
    log = Path(agent.runtime.directory) / "received.log"
    return log.read_text().splitlines() if log.exists() else []
