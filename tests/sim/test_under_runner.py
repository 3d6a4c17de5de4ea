"""The living demo as ``make run`` plays it: the simulated agents are CLIs a real
runner starts in tmux (the command harness), woken by typed nudges, rotated by a
fresh session, and the plan still gets merged."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from django.core.management import call_command

from fleet.models import Event, Runner, Runtime, Task
from fleet.runner.tmux import Tmux

from ..runner.test_standalone import ROOT, clean_env
from .conftest import running_fleet

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_demo_runs_its_agents_under_the_runner(data_dir, settings, tmp_path):
    report = tmp_path / "report.json"
    tmux = Tmux(socket=f"fleet-test-{uuid.uuid4().hex[:10]}")
    token = Runner.objects.create(name="local").issue_token()
    log = tmp_path / "runner.log"
    with running_fleet(data_dir) as server:
        settings.FLEET_PUBLIC_URL = server.url
        with log.open("ab") as out:
            runner = subprocess.Popen(
                [sys.executable, "-m", "fleet.runner", "--url", server.url,
                 "--socket", tmux.socket],
                env=clean_env(FLEET_RUNNER_TOKEN=token), cwd=ROOT, stdout=out, stderr=out,
            )  # fmt: skip
        try:
            call_command(
                "fleet_simulate",
                url=server.url,
                builders=2,
                reviewers=1,
                speed=20,
                seed=7,
                patience=1,
                duration=200,
                under_runner=True,
                start="now",
                json_path=str(report),
                stdout=(tmp_path / "sim.log").open("w"),
            )
        finally:
            runner.terminate()
            runner.wait(20)
            tmux._run("kill-server", check=False)
    results = json.loads(report.read_text())
    sim_log = (tmp_path / "sim.log").read_text()[-3000:] + log.read_text()[-3000:]
    tasks = Task.objects.filter(wave__plan__slug=results["plan"])
    assert results["finished"] and all(t.status == Task.MERGED for t in tasks), sim_log
    started = Event.objects.filter(kind="agent.runtime", payload__state="ready")
    assert started.values("agent").distinct().count() == 3, sim_log
    # Rotation is a fresh session started by the runner (the second builder rotates).
    assert Event.objects.filter(
        kind="agent.runtime_generation", payload__reason__in=["rotation", "rotated"]
    ).exists(), sim_log
    assert not Runtime.objects.exists()  # the run's end hands every session back
