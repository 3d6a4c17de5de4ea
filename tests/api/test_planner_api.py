"""Orchestrator agents draft plans, waves and tasks through the API; people approve."""

from __future__ import annotations

import pytest
from django.test import Client

from fleet.models import Agent, Event, Plan, SharedFile, Task, Wave

from ..conftest import make_repository, make_user
from .conftest import make_token_agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def olly():
    return make_token_agent(Agent.ORCHESTRATOR, name="olly")


def draft_plan(as_agent, token, slug="sprint-9"):
    response = as_agent(token).post("plans", {"name": "Sprint 9", "slug": slug})
    assert response.status_code == 201, response.content
    return response.json()


def test_an_orchestrator_drafts_a_plan_waves_and_tasks(as_agent, olly):
    agent, token = olly
    make_repository(slug="shop")
    plan = draft_plan(as_agent, token)
    assert plan["drafted_by"] == "olly"
    first = as_agent(token).post(f"plans/{plan['id']}/waves", {"name": "Foundation"}).json()
    second = as_agent(token).post(f"plans/{plan['id']}/waves", {}).json()
    assert (first["number"], second["number"]) == (1, 2) and first["status"] == "draft"
    for key in ("T-1", "T-2"):
        response = as_agent(token).post(
            f"waves/{first['id']}/tasks",
            {
                "key": key,
                "title": f"Task {key}",
                "repository": "shop",
                "spec": "Requirements: x. Acceptance: y.",
                "declared_paths": ["config/settings.py", f"src/{key}.py"],
            },
        )
        assert response.status_code == 201, response.content
        assert response.json()["status"] == "draft" and response.json()["spec_version"] == 1
    task = Task.objects.get(key="T-1")
    assert task.drafted_by == agent and task.wave.drafted_by == agent
    # The conflict is waiting for a lead in the wave's matrix.
    assert SharedFile.objects.get(wave_id=first["id"]).path == "config/settings.py"
    assert Event.objects.filter(kind="task.create", actor_agent=agent).count() == 2
    lead = Client()
    lead.force_login(make_user("lea", "lead"))
    html = lead.get("/plans/sprint-9/waves/1/").content.decode()
    assert "drafted by agent olly" in html and "config/settings.py" in html


def test_drafts_are_validated_like_the_forms(as_agent, olly):
    _, token = olly
    make_repository(slug="shop")
    plan = draft_plan(as_agent, token)
    wave = as_agent(token).post(f"plans/{plan['id']}/waves", {}).json()
    bad = {
        "key": "lowercase-1",
        "title": "x",
        "repository": "nowhere",
        "kind": "party",
        "declared_paths": ["../etc/passwd"],
    }
    response = as_agent(token).post(f"waves/{wave['id']}/tasks", bad)
    assert response.status_code == 422 and response.json()["error"] == "invalid"
    named = {item["loc"][-1] for item in response.json()["detail"]}
    assert {"key", "kind"} <= named
    good = {"key": "T-1", "title": "x", "repository": "shop"}
    response = as_agent(token).post(
        f"waves/{wave['id']}/tasks", {**good, "declared_paths": ["../etc/passwd"]}
    )
    assert response.status_code == 422
    assert "outside the repository" in str(response.json()["detail"])
    assert not Task.objects.exists()
    assert as_agent(token).post("plans", {"name": "x", "slug": "Bad Slug"}).status_code == 422
    assert as_agent(token).post("plans", {"name": "  ", "slug": "blank"}).status_code == 422
    assert Plan.objects.count() == 1


def test_what_is_taken_or_missing_is_409_or_404_not_a_shape_error(as_agent, olly):
    """A draft the schema allows is refused only for the state of things: a slug or
    key already taken (409), a repository that does not exist (404)."""
    _, token = olly
    make_repository(slug="shop")
    plan = draft_plan(as_agent, token)
    again = as_agent(token).post("plans", {"name": "Again", "slug": plan["slug"]})
    assert again.status_code == 409 and again.json()["error"] == "exists"
    assert "slug" in again.json()["detail"]
    wave = as_agent(token).post(f"plans/{plan['id']}/waves", {}).json()
    nowhere = {"key": "T-1", "title": "x", "repository": "nowhere"}
    missing = as_agent(token).post(f"waves/{wave['id']}/tasks", nowhere)
    assert missing.status_code == 404 and "repository" in missing.json()["detail"]
    assert Plan.objects.count() == 1 and not Task.objects.exists()


def test_a_duplicate_task_key_and_an_approved_wave_are_refused(as_agent, olly):
    _, token = olly
    make_repository(slug="shop")
    plan = draft_plan(as_agent, token)
    wave = as_agent(token).post(f"plans/{plan['id']}/waves", {}).json()
    task = {"key": "T-1", "title": "x", "repository": "shop"}
    assert as_agent(token).post(f"waves/{wave['id']}/tasks", task).status_code == 201
    response = as_agent(token).post(f"waves/{wave['id']}/tasks", task)
    assert response.status_code == 409 and "key" in response.json()["detail"]
    Wave.objects.filter(pk=wave["id"]).update(status=Wave.APPROVED)
    response = as_agent(token).post(f"waves/{wave['id']}/tasks", {**task, "key": "T-2"})
    assert response.status_code == 409 and response.json()["error"] == "wave_not_draft"
    assert Task.objects.count() == 1


@pytest.mark.parametrize("role", [Agent.BUILDER, Agent.REVIEWER])
def test_only_orchestrators_draft(as_agent, role):
    _, token = make_token_agent(role)
    response = as_agent(token).post("plans", {"name": "x", "slug": "x"})
    assert response.status_code == 403 and response.json()["error"] == "role"
    assert not Plan.objects.exists()


def test_missing_plans_and_waves_are_404(as_agent, olly):
    _, token = olly
    assert as_agent(token).post("plans/999/waves", {}).status_code == 404
    response = as_agent(token).post(
        "waves/999/tasks", {"key": "T-1", "title": "x", "repository": "r"}
    )
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_no_agent_approves_a_wave(as_agent, olly):
    """There is no approve route for agents at all: approval is a person's, on the page."""
    from fleet.api import api

    paths = api.get_openapi_schema()["paths"]
    assert not [p for p in paths if "approve" in p]


def test_an_orchestrator_reads_a_plan_with_its_waves_tasks_and_shared_file_matrix(as_agent, olly):
    _, token = olly
    make_repository(slug="shop")
    plan = draft_plan(as_agent, token)
    first = as_agent(token).post(f"plans/{plan['id']}/waves", {"name": "Foundation"}).json()
    as_agent(token).post(f"plans/{plan['id']}/waves", {"name": "Polish"})
    for key in ("T-1", "T-2"):
        as_agent(token).post(
            f"waves/{first['id']}/tasks",
            {
                "key": key,
                "title": f"Task {key}",
                "repository": "shop",
                "declared_paths": ["config/settings.py", f"src/{key}.py"],
            },
        )
    response = as_agent(token).get(f"plans/{plan['id']}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["slug"], body["drafted_by"]) == (plan["id"], "sprint-9", "olly")
    one, two = body["waves"]
    assert (one["number"], one["name"], two["name"]) == (1, "Foundation", "Polish")
    assert [t["key"] for t in one["tasks"]] == ["T-1", "T-2"] and two["tasks"] == []
    assert one["tasks"][0]["declared_paths"] == ["config/settings.py", "src/T-1.py"]
    matrix = one["matrix"]
    assert matrix["columns"] == ["T-1", "T-2"] and matrix["unresolved"] == 1
    (row,) = matrix["rows"]
    assert row == {
        "path": "config/settings.py",
        "repository": "shop",
        "strategy": "",
        "owner_task": None,
        "tasks": ["T-1", "T-2"],
        "cells": ["declares", "declares"],
    }
    assert two["matrix"] == {"columns": [], "rows": [], "unresolved": 0}


@pytest.mark.parametrize("role", [Agent.BUILDER, Agent.REVIEWER])
def test_only_orchestrators_read_plans(as_agent, role):
    plan = Plan.objects.create(name="P", slug="p")
    _, token = make_token_agent(role)
    response = as_agent(token).get(f"plans/{plan.pk}")
    assert response.status_code == 403 and response.json()["error"] == "role"


def test_an_unknown_plan_is_404(as_agent, olly):
    _, token = olly
    response = as_agent(token).get("plans/999")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
