"""The living demo survives people: a lead signs in (the story starts then, not
before), decides the shared file and approves wave 1 in Chromium before the simulated
lead would, adds a task and sequences it into a new wave with no budget, rules on
findings against the script, ticks a checklist, presses Merge and raises the spent
cap. The story still finishes, the cap stop included, and the run's summary says
what happened."""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client

from fleet.models import Agent, Budget, Event, Finding, MergeRequest, Plan, Task, Wave
from fleet.sim import director, script

from ..conftest import make_user
from ..sim.conftest import running_fleet
from .conftest import screenshot
from .test_live import login

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PATIENCE = 15  # real seconds the simulated lead leaves each decision to people


def wait_for(find, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("waited in vain")


class Person:
    """The interventions a lead makes through the pages' own views, each once, as
    soon as the story offers it (before the simulated lead's patience runs out)."""

    def __init__(self, plan: Plan, client: Client) -> None:
        self.plan, self.client, self.done = plan, client, set()

    def post(self, url: str, data: dict) -> None:
        response = self.client.post(url, data)
        assert response.status_code in (200, 302), (url, response.status_code)

    def act(self) -> None:
        tasks = Task.objects.filter(wave__plan=self.plan)
        wave2 = self.plan.waves.get(number=2)
        wave1 = self.plan.waves.get(number=1)
        if (
            "sequence" not in self.done
            and wave1.status != Wave.DRAFT
            and wave2.status == Wave.DRAFT
        ):
            # A task of the person's own, then sequenced into a wave that does not
            # exist yet (and so has no budget).
            docs = tasks.get(title=script.DOCS.title)
            self.post(
                f"/plans/{self.plan.slug}/waves/2/tasks/",
                {
                    "key": "P-1",
                    "kind": "docs",
                    "title": "Sitemap",
                    "repository": docs.repository.slug,
                    "spec": "A sitemap.",
                    "declared_paths": f"docs/api.md\n{script.changelog_path('P-1')}",
                },
            )
            shared = wave2.shared_files.get(path="docs/api.md")
            self.post(
                f"/plans/{self.plan.slug}/waves/2/shared/{shared.pk}/",
                {"strategy": "sequence", "task": docs.key},
            )
            self.done.add("sequence")
        for finding in Finding.objects.filter(verdict=Finding.PENDING, review__task__in=tasks):
            # Against the script: the tax false alarm accepted (its builder must come
            # back), the cart one overruled by a person, each the first time it is
            # raised; the real one, and any re-raised on a re-review, left to the lead.
            if finding.title in self.done:
                continue
            if finding.title.startswith("Tax rate"):
                self.post(f"/findings/{finding.pk}/verdict/", {"verdict": "accepted"})
            elif finding.title.startswith("Cart lines"):
                self.post(
                    f"/findings/{finding.pk}/verdict/",
                    {"verdict": "overruled", "reason": "A person's call: fine as it is."},
                )
            else:
                continue
            self.done.add(finding.title)
        waiting = tasks.filter(status__in=[Task.IN_REVIEW, Task.APPROVED]).exclude(head_sha="")
        if "tick" not in self.done and waiting.exists():
            task = waiting.first()
            self.post(f"/tasks/{task.key}/dod/", {"item": director.DOD_TEXT, "ticked": "1"})
            self.done.add("tick")
        if "merge" not in self.done and waiting.exists():
            # Merge pressed early: queued, or refused with the red gates named.
            self.client.post(f"/tasks/{waiting.last().key}/merge/")
            self.done.add("merge")
        if "cap" not in self.done and Event.objects.filter(
            kind="agent.stop", payload__reason="budget", agent__name__in=self.agent_names()
        ):
            self.post(f"/plans/{self.plan.slug}/waves/2/budget/", {"limit_usd": "3"})
            self.done.add("cap")

    def agent_names(self) -> list[str]:
        return list(Agent.objects.filter(repository__tasks__wave__plan=self.plan).values_list(
            "name", flat=True
        ).distinct())  # fmt: skip


def test_the_story_finishes_whatever_a_person_does(page, data_dir, settings, tmp_path):
    person = make_user("lea", "lead", password="pw-lea-12345")
    report, log = tmp_path / "report.json", tmp_path / "sim.log"
    with running_fleet(data_dir) as server:
        settings.FLEET_PUBLIC_URL = server.url
        simulation = threading.Thread(
            target=call_command,
            args=("fleet_simulate",),
            kwargs={
                "url": server.url,
                "speed": 20,
                "seed": 7,
                "patience": PATIENCE,
                "duration": 600,
                "start": "sign-in",
                "json_path": str(report),
                "stdout": log.open("w"),
            },
        )
        simulation.start()
        try:
            plan = wait_for(lambda: Plan.objects.filter(slug__startswith="live-sprint-").first())
            # The stage is set and its agents are up, but nobody has signed in: the
            # simulated lead (patience 6 s) has not moved in three times that.
            time.sleep(1.5 * PATIENCE)
            assert not Event.objects.filter(plan=plan, kind__startswith="wave.").exists()
            assert plan.waves.get(number=1).status == Wave.DRAFT

            login(page, server.url, "lea", "pw-lea-12345")  # the story starts
            page.goto(f"{server.url}/plans/{plan.slug}/waves/1/")
            keeper = Task.objects.get(wave__plan=plan, title=script.ORDERS.title)
            page.click(f"button:has-text('Sequence: keep {keeper.key}')")
            page.wait_for_selector("text=moved")
            page.click("#approve")
            page.wait_for_selector("text=Wave 1 approved")
            screenshot(page, "demo-person-approved-wave-1")

            client = Client()
            client.force_login(person)
            acting = Person(plan, client)
            deadline = time.monotonic() + 600
            while simulation.is_alive() and time.monotonic() < deadline:
                acting.act()
                time.sleep(0.3)
            page.goto(f"{server.url}/")
            screenshot(page, "demo-person-overview-after")
        finally:
            simulation.join(timeout=120)
    sim_log = log.read_text()[-5000:]
    results = json.loads(report.read_text())
    assert {"sequence", "tick", "merge", "cap"} <= acting.done, (acting.done, sim_log)

    # The person's moves were theirs, not the simulated lead's.
    by_lea = Event.objects.filter(plan=plan, actor="user:lea")
    assert by_lea.filter(kind="wave.shared_file", wave__number=1).exists()
    assert by_lea.filter(kind="wave.approve", wave__number=1).exists()
    assert by_lea.filter(kind="budget.set").exists()
    # The new wave got its budget from the simulated lead, and ran.
    wave3 = plan.waves.get(number=3)
    assert Budget.objects.get(scope="wave", wave=wave3).limit_usd == director.LATER_CAP
    assert Task.objects.get(key="P-1").status == Task.MERGED

    # The story finished, every step of it.
    missing = {k: v for k, v in results["steps"].items() if not v["ok"]}
    states = list(Task.objects.filter(wave__plan=plan).values_list("key", "wave__number", "status"))
    assert results["finished"] and not missing, (missing, states, sim_log)
    assert set(results["timeline"]) >= set(director.STEPS) | {"finished"}

    # The summary's counts are what happened.
    steps = results["steps"]
    stops = Event.objects.filter(
        kind="agent.stop", payload__reason="budget", agent__name__in=acting.agent_names()
    ).count()
    assert stops >= 1 and steps["budget_stop"]["detail"] == f"{stops} agent(s) stopped"
    findings = Finding.objects.filter(review__task__wave__plan=plan)
    accepted = findings.filter(verdict=Finding.ACCEPTED).exclude(resolved_in_commit="").count()
    overruled = findings.filter(verdict=Finding.OVERRULED).count()
    assert accepted >= 2 and overruled >= 1  # the person's and the lead's
    assert steps["findings"]["detail"] == (
        f"{accepted} accepted and resolved, {overruled} overruled"
    )
    merged = Task.objects.filter(wave__plan=plan, status=Task.MERGED).count()
    assert (
        merged == 7 and steps["merged"]["detail"] == f"{merged} of {merged} merged task(s) on main"
    )
    assert (
        MergeRequest.objects.filter(task__wave__plan=plan, result=MergeRequest.PENDING).count() == 0
    )
    wave2 = Budget.objects.get(scope="wave", wave__plan=plan, wave__number=2)
    assert wave2.limit_usd == Decimal("3")  # the person's cap stayed theirs
    assert re.search(r"at \d", (tmp_path / "sim.log").read_text())  # the timeline printed
