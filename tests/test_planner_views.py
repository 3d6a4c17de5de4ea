"""The planner pages: plans, waves, tasks, the matrix, the preflight and approval."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from fleet.git import repo as gitrepo
from fleet.models import Budget, Event, FileClaim, Message, Plan, SharedFile, Task, Wave

from .conftest import make_agent, make_repository, make_task, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(tmp_path: Path, data_dir):
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    gitrepo.create_with_origin(
        origin=origin,
        clone=clone,
        files={"config/settings.py": "X = 1\n", "src/a.py": "", "README.md": ""},
        message="initial",
    )
    return make_repository(path=str(clone), slug="app", name="App")


@pytest.fixture
def lead_client(client):
    client.force_login(make_user("lea", "lead"))
    return client


def new_plan(client) -> Plan:
    response = client.post("/plans/", {"name": "Sprint", "slug": "sprint"})
    assert response.status_code == 302 and response["Location"] == "/plans/sprint/"
    return Plan.objects.get(slug="sprint")


def add_task(client, key, paths, number=1, **extra):
    data = {
        "key": key,
        "kind": "feat",
        "title": f"Task {key}",
        "repository": "app",
        "spec": "Requirements. Acceptance.",
        "declared_paths": "\n".join(paths),
        **extra,
    }
    return client.post(f"/plans/sprint/waves/{number}/tasks/", data)


def test_a_lead_plans_resolves_and_approves_a_wave(lead_client, app):
    plan = new_plan(lead_client)
    assert plan.waves.get().number == 1
    assert add_task(lead_client, "T-1", ["config/settings.py"]).status_code == 302
    assert add_task(lead_client, "T-2", ["config/*.py", "src/a.py"]).status_code == 302
    page = lead_client.get("/plans/sprint/waves/1/").content.decode()
    assert "config/settings.py" in page and "1 unresolved" in page
    assert "has no strategy yet" in page and 'id="announcement"' in page
    shared = SharedFile.objects.get()
    response = lead_client.post(
        f"/plans/sprint/waves/1/shared/{shared.pk}/", {"strategy": "sequence", "task": "T-1"}
    )
    assert response.status_code == 302
    assert Task.objects.get(key="T-2").wave.number == 2
    page = lead_client.get("/plans/sprint/waves/1/").content.decode()
    assert "no budget is set" in page
    response = lead_client.post("/plans/sprint/waves/1/approve/", {})
    assert response.status_code == 400
    assert "Preflight: no budget is set for this wave" in response.content.decode()
    assert lead_client.post("/plans/sprint/waves/1/budget/", {"limit_usd": "25"}).status_code == 302
    assert Budget.objects.get(wave__number=1).limit_usd == 25
    response = lead_client.post("/plans/sprint/waves/1/approve/", {}, follow=True)
    html = response.content.decode()
    assert "Isolation: not applicable because N=1" in html
    wave = Wave.objects.get(number=1)
    assert wave.status == Wave.APPROVED and Task.objects.get(key="T-1").status == Task.READY
    # Wave 2 waits for wave 1 to be verified; the page says so.
    page = lead_client.get("/plans/sprint/waves/2/").content.decode()
    assert "wave 1 is approved, not verified" in page


def test_bad_input_is_a_form_error_and_changes_nothing(lead_client, app):
    new_plan(lead_client)
    response = add_task(lead_client, "T-1", ["/etc/passwd"])
    assert response.status_code == 400
    assert "reaches outside the repository" in response.content.decode()
    assert add_task(lead_client, "bad", ["a.py"]).status_code == 400
    assert not Task.objects.exists()
    response = lead_client.post("/plans/", {"name": "Dup", "slug": "sprint"})
    assert response.status_code == 400 and Plan.objects.count() == 1
    response = lead_client.post("/plans/sprint/waves/1/budget/", {})
    assert response.status_code == 400 and not Budget.objects.exists()
    response = lead_client.post("/plans/sprint/waves/1/shared/999/", {"strategy": "owner"})
    assert response.status_code == 404


def test_moving_and_editing_tasks(lead_client, app):
    plan = new_plan(lead_client)
    lead_client.post("/plans/sprint/", {"name": "Features"})
    add_task(lead_client, "T-1", ["README.md"])
    response = lead_client.post("/tasks/T-1/move/", {"wave": 2})
    assert response.status_code == 302 and Task.objects.get(key="T-1").wave.number == 2
    assert Event.objects.filter(kind="task.moved").count() == 1
    response = lead_client.post("/tasks/T-1/move/", {"wave": 7})
    assert Task.objects.get(key="T-1").wave.number == 2
    response = lead_client.post(
        "/tasks/T-1/edit/",
        {
            "kind": "fix",
            "title": "Renamed",
            "repository": "app",
            "spec": "s",
            "declared_paths": "docs/",
        },
    )
    assert response.status_code == 302
    task = Task.objects.get(key="T-1")
    assert (task.title, task.kind, task.declared_paths, task.spec_version) == (
        "Renamed",
        "fix",
        ["docs/"],
        1,
    )
    # Once its wave is approved and an agent holds it, a spec edit is a new version.
    Wave.objects.filter(plan=plan).update(status=Wave.RUNNING)
    Task.objects.filter(pk=task.pk).update(status=Task.READY)
    agent = make_agent(name="ada")
    task.refresh_from_db()
    task.assign(agent=agent)
    response = lead_client.post(
        "/tasks/T-1/edit/", {"title": "Renamed", "spec": "now with gift cards"}, follow=True
    )
    assert "spec v2" in response.content.decode() and "ada was told" in response.content.decode()
    assert Message.objects.get(recipient=agent).subject == "Spec T-1 is now v2"
    assert Task.objects.get(pk=task.pk).declared_paths == ["docs/"]


def test_people_without_the_lead_role_look_but_do_not_change(client, app):
    plan = Plan.objects.create(name="P", slug="p")
    wave = Wave.objects.create(plan=plan, number=1)
    client.force_login(make_user("mo", "manager"))
    assert client.get("/plans/").status_code == 200
    assert client.get("/plans/p/waves/1/").status_code == 200
    assert client.post("/plans/p/waves/1/approve/", {}).status_code == 403
    assert client.post("/plans/p/waves/1/tasks/", {"key": "T-1"}).status_code == 403
    client.post("/plans/", {"name": "Mine", "slug": "mine"})
    assert Plan.objects.count() == 1
    # A manager sets budgets.
    assert client.post("/plans/p/waves/1/budget/", {"limit_tokens": "1000"}).status_code == 302
    assert Budget.objects.get(wave=wave).limit_tokens == 1000
    client.logout()
    assert client.get("/plans/").status_code == 302


def test_the_repositories_page_lists_live_claims_as_a_tree(client, app):
    agent = make_agent(name="ada")
    task = make_task(repository=app, key="T-5")
    now = timezone.now()
    for path in ("src/api/routes.py", "src/api/models.py", "README.md"):
        FileClaim.objects.create(
            repository=app, task=task, agent=agent, path=path, expires_at=now + timedelta(minutes=1)
        )
    FileClaim.objects.create(
        repository=app,
        task=task,
        agent=agent,
        path="old.py",
        created_at=now - timedelta(hours=1),
        expires_at=now - timedelta(minutes=1),
    )
    client.force_login(make_user("lea", "lead"))
    html = client.get("/repositories/").content.decode()
    assert "<code>src/api/routes.py</code>" in html and "old.py" not in html
    assert html.count('class="depth-1"') == 1  # api/ under src/
    assert html.count('class="depth-2"') == 2  # the two files in it
    assert "ada · T-5 · write" in html
