"""The living demo, end to end: simulated agents on the real API and real git, a
real worker and merge queue; every scenario step checked from what Fleet recorded,
and main checked with git itself."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from fleet.models import Agent, AgentSession, MergeRequest, Task
from fleet.sim import director

from .conftest import running_fleet

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def test_a_seeded_simulation_plays_every_step(data_dir, settings, tmp_path):
    report = tmp_path / "report.json"
    with running_fleet(data_dir) as server:
        settings.FLEET_PUBLIC_URL = server.url
        call_command(
            "fleet_simulate",
            url=server.url,
            speed=20,
            seed=7,
            patience=1,
            duration=240,
            start="now",
            json_path=str(report),
            stdout=(tmp_path / "sim.log").open("w"),
        )
    results = json.loads(report.read_text())
    missing = {k: v for k, v in results["steps"].items() if not v["ok"]}
    assert not missing, (missing, (tmp_path / "sim.log").read_text()[-4000:])
    assert results["finished"]
    # Six agents, each in its own process, none crashed, and none had Django loaded.
    assert results["agents_reported"] == 6
    assert not [n for n, a in results["agents"].items() if a["crashed"] or a["django_loaded"]]

    # Independently of the report: origin's main holds every merged task's commit...
    stage_repo = Task.objects.filter(wave__plan__slug=results["plan"]).first().repository
    origin = Path(stage_repo.path).parent.parent / "origins" / f"{stage_repo.slug}.git"
    tasks = Task.objects.filter(wave__plan__slug=results["plan"])
    assert tasks.count() == 6 and all(t.status == Task.MERGED for t in tasks)
    for mr in MergeRequest.objects.filter(task__in=tasks, result=MergeRequest.MERGED):
        assert (
            subprocess.run(
                ["git", "merge-base", "--is-ancestor", mr.candidate_sha, "main"], cwd=origin
            ).returncode
            == 0
        )
    # ... and its tests pass (main is green), with each task's work in them.
    checkout = tmp_path / "main"
    subprocess.run(["git", "clone", "-q", str(origin), str(checkout)], check=True)
    for name in ("shop/tax.py", "shop/cart.py", "shop/shipping.py", "docs/api.md"):
        assert (checkout / name).exists(), name
    assert ">= FREE_SHIPPING_CENTS" in (checkout / "shop/shipping.py").read_text()  # the fix
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=checkout,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "DJANGO"))},
    )
    assert tests.returncode == 0, tests.stdout[-2000:]
    # The rotated session ended as "rotated" and the next one booted.
    rotated = AgentSession.objects.filter(end_reason="rotated").first()
    assert rotated is not None
    assert rotated.agent.sessions.filter(started_at__gte=rotated.ended_at).exists()
    assert Agent.objects.filter(status=Agent.STALE, name="kai").exists()  # the silent one


def test_agent_code_has_no_django():
    """The agents cannot cheat: their modules import no Django (directly or not)."""
    for module in ("agents", "script"):
        tree = ast.parse((ROOT / "fleet" / "sim" / f"{module}.py").read_text())
        names = [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.startswith(("django", "fleet.models"))], names
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, fleet.sim.agents; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('django', 'ninja', 'channels')))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_report_reads_what_fleet_recorded(data_dir):
    """A stage nobody played reaches no step: the report is not self-declared."""
    stage = director.setup(builders=3, reviewers=1)
    steps = director.report(stage)
    assert set(steps) == set(director.STEPS)
    assert not [k for k, v in steps.items() if v["ok"]]
    assert not director.finished(stage)
    # The stage: two waves, a shared file to decide, agents with their own tokens.
    assert stage.plan.waves.count() == 2
    assert stage.plan.waves.get(number=1).shared_files.filter(path="shop/routes.py").exists()
    assert len({p.token for p in stage.personas}) == 4
    assert director.setup(builders=1, reviewers=1).run == stage.run + 1


def test_bad_options_are_refused():
    from django.core.management.base import CommandError

    for options in ({"speed": 0}, {"builders": 9}, {"duration": 0}):
        with pytest.raises(CommandError):
            call_command("fleet_simulate", url="http://127.0.0.1:9", wait=0, **options)


def test_only_people_at_work_on_the_stage_hold_the_lead_back(data_dir):
    """A manager capping the fleet or editing another repository every few seconds
    does not hold the demo's lead back; a person acting on the stage's plan does."""
    from fleet.models import Event

    from ..conftest import make_repository, make_user

    stage = director.setup(builders=1, reviewers=1)
    lead = director.Lead(stage, patience=100, say=lambda line: None)
    person = make_user("someone", "manager")
    elsewhere = make_repository()
    Event.objects.record("repository.edit", by=person, repository=elsewhere)
    lead.watch_people()  # the first look only notes where the log is
    Event.objects.record("budget.set", by=person, payload={"scope": "fleet"})
    Event.objects.record("repository.edit", by=person, repository=elsewhere)
    lead.watch_people()
    assert lead.person_at == 0  # nothing on the stage
    Event.objects.record("wave.budget", by=person, wave=stage.plan.waves.get(number=2))
    lead.watch_people()
    assert lead.person_at > 0
