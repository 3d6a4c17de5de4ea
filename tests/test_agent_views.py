"""People spawn agents (token shown once) and revoke tokens; only leads may."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from fleet.models import Agent, Task, Wave

from .conftest import make_agent, make_repository, make_task, make_user, make_wave

pytestmark = pytest.mark.django_db


@pytest.fixture
def lead_client(client):
    client.force_login(make_user("lena", "lead"))
    return client


def test_a_lead_spawns_a_builder_onto_a_task_and_sees_the_token_once(
    lead_client, git_origin, data_dir
):
    _, clone = git_origin
    repository = make_repository(path=str(clone), slug="shop")
    task = make_task(
        wave=make_wave(status=Wave.RUNNING), repository=repository, key="T-3", status=Task.READY
    )
    form = {"repository": repository.pk, "role": "builder", "name": "ada", "task": task.pk}
    response = lead_client.post(reverse("fleet-agent-spawn"), form)
    assert response.status_code == 201
    page = response.content.decode()
    agent = Agent.objects.get(name="ada")
    task.refresh_from_db()
    identity = json.loads((Path(task.worktree_path) / ".fleet/identity.json").read_text())
    assert identity["token"] in page and Agent.objects.by_token(identity["token"]).get() == agent
    assert "-m fleet.agent boot" in page
    assert task.assignee == agent and task.status == Task.WORKING
    # Never again: the list shows only that a token is active.
    listing = lead_client.get(reverse("fleet-agents")).content.decode()
    assert identity["token"] not in listing and "active" in listing


def test_bad_spawns_are_form_errors_and_create_nothing(lead_client, data_dir):
    repository = make_repository()
    make_agent(name="taken")
    for name, error in [("Bad Name", "Use lowercase letters"), ("taken", "already exists")]:
        response = lead_client.post(
            reverse("fleet-agent-spawn"),
            {"repository": repository.pk, "role": "reviewer", "name": name},
        )
        assert response.status_code == 200 and error in response.content.decode()
    task = make_task(repository=repository, status=Task.READY)
    response = lead_client.post(
        reverse("fleet-agent-spawn"),
        {"repository": repository.pk, "role": "reviewer", "name": "rex", "task": task.pk},
    )
    assert "only a builder" in response.content.decode()
    assert list(Agent.objects.values_list("name", flat=True)) == ["taken"]


def test_only_leads_spawn_or_revoke(client):
    client.force_login(make_user("rita", "reviewer"))
    agent = make_agent(name="ada")
    agent.issue_token()
    assert client.get(reverse("fleet-agents")).status_code == 200
    assert client.get(reverse("fleet-agent-spawn")).status_code == 403
    assert client.post(reverse("fleet-agent-revoke", args=["ada"])).status_code == 403
    agent.refresh_from_db()
    assert agent.token_revoked_at is None


def test_a_lead_revokes_a_token(lead_client):
    agent = make_agent(name="ada")
    token = agent.issue_token()
    assert lead_client.get(reverse("fleet-agent-revoke", args=["ada"])).status_code == 405
    response = lead_client.post(reverse("fleet-agent-revoke", args=["ada"]), follow=True)
    assert "revoked" in response.content.decode()
    assert not Agent.objects.by_token(token).exists()
    assert lead_client.post(reverse("fleet-agent-revoke", args=["nobody"])).status_code == 404
