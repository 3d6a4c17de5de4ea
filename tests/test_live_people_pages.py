"""The review queue and the agents page as live pages: registered with the pump,
touched by the events that change them, and rendered in a bounded number of queries
whatever the number of agents or findings (one render serves every viewer)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fleet import live
from fleet.models import Agent, Finding, Review, Task

from .conftest import make_agent, make_task, make_user

pytestmark = pytest.mark.django_db


def grow(n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        builder = make_agent(name=f"b{i}", status_line=f"line {i}")
        task = make_task(key=f"T-{100 + i}", status=Task.IN_REVIEW, assignee=builder)
        review = Review.objects.create(task=task, commit_sha="ab" * 20, status=Review.CLOSED)
        Finding.objects.create(review=review, path="a.py", severity="minor", title=f"F{i}")


def queries(view: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        live.snapshot(view, live.resolve(view, ""))
    return len(captured.captured_queries)


@pytest.mark.parametrize("view", ["agents", "reviews"])
def test_a_snapshot_takes_the_same_queries_for_2_or_8_rows(view):
    grow(2)
    few = queries(view)
    grow(6, start=2)
    assert queries(view) == few
    assert few <= 6


def test_the_pages_are_touched_by_the_events_that_change_them():
    touched = {name: live.PAGES[name].touched for name in ("reviews", "agents")}
    row = {"kind": "", "agent_id": None, "actor_agent_id": None}
    assert touched["reviews"]({**row, "kind": "review.findings"}) == {""}
    assert touched["reviews"]({**row, "kind": "finding.accept"}) == {""}
    assert touched["reviews"]({**row, "kind": "agent.stop", "agent_id": 3}) == set()
    assert touched["agents"]({**row, "kind": "agent.stop", "agent_id": 3}) == {""}
    assert touched["agents"]({**row, "kind": "task.assign", "agent_id": 3}) == {""}
    assert touched["agents"]({**row, "kind": "agent.journal", "agent_id": 3}) == set()
    assert touched["agents"]({**row, "kind": "wave.create"}) == set()


def test_the_pages_answer_the_polling_fallback_and_show_forms_by_role(client):
    grow(1)
    Agent.objects.get().issue_token()
    client.force_login(make_user("mo", "manager"))
    for name in ("fleet-reviews", "fleet-agents"):
        response = client.get(reverse(name), {"live": "1"})
        assert response.status_code == 200 and response["X-Fleet-Live"] == "1"
    page = client.get(reverse("fleet-reviews")).content.decode()
    # Rendered once for everyone: the verdict forms are there, hidden from a manager
    # by the role's class (and refused by the server).
    assert 'class="verdicts adjudicate-only"' in page and "role-manager" in page
    agents = client.get(reverse("fleet-agents")).content.decode()
    assert 'class="inline lead-only"' in agents
