"""A Fleet restart is invisible to agents: tokens, leases, inbox and journal live in the DB."""

from __future__ import annotations

import json

import pytest

from fleet.models import Agent, Message, Task, Wave
from fleet.spawn import spawn

from ..conftest import make_repository, make_task, make_wave
from .conftest import Server, free_port, run_agent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_kill_and_restart_the_web_process(git_origin, settings, data_dir, tmp_path):
    server = Server(free_port(), tmp_path / "live").start()
    try:
        settings.FLEET_PUBLIC_URL = server.url
        _, clone = git_origin
        repository = make_repository(path=str(clone), slug="shop")
        task = make_task(
            wave=make_wave(status=Wave.RUNNING), repository=repository, key="T-1", status=Task.READY
        )
        spawned = spawn(repository=repository, role=Agent.BUILDER, name="ada", task=task)
        cwd = spawned.directory
        assert run_agent("journal", "next", "write totals", cwd=cwd).returncode == 0
        Message.objects.create(recipient=Agent.objects.get(name="ada"), subject="rebase")

        server.kill()  # kill -9: no graceful shutdown
        down = run_agent("--retries", "0", "inbox", cwd=cwd)
        assert down.returncode == 1 and "unreachable" in down.stderr
        server.start()

        beat = run_agent("--json", "heartbeat", "--context", "30", cwd=cwd)
        assert beat.returncode == 0, beat.stderr
        assert json.loads(beat.stdout)["epoch"] == 1  # the same lease, still held
        boot = json.loads(run_agent("--json", "boot", cwd=cwd).stdout)
        assert boot["task"]["key"] == "T-1" and boot["task"]["lease_epoch"] == 1
        assert [e["body"] for e in boot["journal"]] == ["write totals"]
        assert [m["subject"] for m in boot["inbox"]] == ["rebase"]
    finally:
        server.stop()
