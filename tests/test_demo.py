"""fleet_demo builds a real repository and a populated fleet, and is idempotent."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command

from fleet.git import repo as gitrepo
from fleet.models import (
    Agent,
    Budget,
    CheckRun,
    Event,
    Finding,
    Learning,
    MergeRequest,
    Plan,
    Repository,
    Task,
)

pytestmark = pytest.mark.django_db


def fleet_state() -> dict:
    """Every Fleet row (minus timestamps) plus users, for comparing two runs."""
    state = {}
    for model in apps.get_app_config("fleet").get_models():
        rows = model.objects.order_by("pk").values()
        state[model.__name__] = [
            {k: v for k, v in row.items() if not k.endswith("_at")} for row in rows
        ]
    state["users"] = list(User.objects.order_by("pk").values("username", "password", "is_staff"))
    return state


def test_demo_twice_leaves_the_same_data(data_dir):
    out = StringIO()
    call_command("fleet_demo", stdout=out)
    assert "Demo fleet created" in out.getvalue()
    first = fleet_state()
    out = StringIO()
    call_command("fleet_demo", stdout=out)
    assert "nothing changed" in out.getvalue()
    assert fleet_state() == first


def test_demo_reseeds_a_fresh_database_over_an_existing_data_dir(data_dir):
    call_command("fleet_demo", stdout=StringIO())
    clone = Repository.objects.get(slug="demo-shop").path
    main_before = gitrepo.head_sha(clone, "main")
    # A new database (another DATABASE_URL, a deleted SQLite file) over the same data dir.
    Agent.objects.update(current_task=None, status="idle", stop_reason="")
    Task.objects.update(assignee=None, lease_expires_at=None, status="draft")
    for model in (Plan, Agent, Repository, Event, Learning, Budget, User):
        model.objects.all().delete()
    assert not any(m.objects.exists() for m in apps.get_app_config("fleet").get_models())
    out = StringIO()
    call_command("fleet_demo", stdout=out)
    assert "Demo fleet created" in out.getvalue()
    assert gitrepo.head_sha(clone, "main") == main_before  # T-1's commit reused, not redone
    assert Task.objects.get(key="T-1").status == "merged"
    assert Agent.objects.count() == 8


def test_the_demo_lead_can_use_the_admin(data_dir, client):
    call_command("fleet_demo", stdout=StringIO())
    password = json.loads((data_dir / "demo-logins.json").read_text())["lead"]
    assert client.login(username="lead", password=password)
    assert client.get("/admin/fleet/task/").status_code == 200
    assert client.get("/admin/fleet/event/").status_code == 200
    assert client.get("/admin/fleet/event/add/").status_code == 403


def test_an_existing_account_keeps_its_password(data_dir):
    User.objects.create_user("reviewer", password="chosen-by-a-person")
    out = StringIO()
    call_command("fleet_demo", stdout=out)
    assert User.objects.get(username="reviewer").check_password("chosen-by-a-person")
    assert "existing account, unchanged" in out.getvalue()


def test_demo_builds_a_real_repository_and_a_fleet_in_several_states(data_dir):
    out = StringIO()
    call_command("fleet_demo", stdout=out)
    repo = Repository.objects.get(slug="demo-shop")
    clone = Path(repo.path)
    assert clone.is_relative_to(data_dir)
    # main was pushed to the bare origin and carries T-1's squashed commit.
    origin = data_dir / "origins" / "demo-shop.git"
    assert gitrepo.head_sha(origin, "main") == gitrepo.head_sha(clone, "main")
    assert gitrepo.log_subjects(clone, "main")[0] == "T-1: Product catalogue"
    # ada works on T-2 in a real worktree on its own branch, off that main.
    t2 = Task.objects.get(key="T-2")
    assert Path(t2.worktree_path, "README.md").exists()
    assert gitrepo.head_sha(t2.worktree_path) == t2.base_sha == gitrepo.head_sha(clone, "main")
    with gitrepo.open_repo(t2.worktree_path) as wt:
        assert wt.active_branch.name == "feat/T-2"

    statuses = set(Agent.objects.values_list("status", flat=True))
    assert {"working", "stale", "rotating", "reviewing", "stopped", "idle"} <= statuses
    assert set(Finding.objects.values_list("verdict", flat=True)) == {
        "pending",
        "accepted",
        "overruled",
    }
    # Logins are printed and kept out of the source tree, readable only by the owner.
    logins = json.loads((data_dir / "demo-logins.json").read_text())
    assert set(logins) == {"lead", "reviewer", "manager"}
    assert (data_dir / "demo-logins.json").stat().st_mode & 0o077 == 0
    for username, password in logins.items():
        assert f"{username:<9} {password}" in out.getvalue()
        assert User.objects.get(username=username).check_password(password)
        assert User.objects.get(username=username).groups.filter(name=username).exists()


def test_the_demo_shows_a_stale_base_that_the_merge_queue_rebases_and_merges(data_dir, client):
    from fleet import merging
    from fleet.git import facts

    call_command("fleet_demo", verbosity=0)
    t3 = Task.objects.get(key="T-3")
    repo = t3.repository
    lost = facts.stale_base_report(repo.path, main="origin/main", head=t3.head_sha)
    assert [c.task_key for h in lost for c in h.commits] == ["T-1"]
    lead = User.objects.get(username="lead")
    client.force_login(lead)
    assert "gate-red" in client.get("/tasks/T-3/").content.decode()
    # Its gates are red, each with its reason, so a lead's Merge is refused...
    refused = client.post("/tasks/T-3/merge/", follow=True).content.decode()
    for reason in ("Stale base", "waiting for a verdict", "waiting for unit", "CHANGELOG"):
        assert reason in refused
    assert t3.merge_requests.count() == 0

    # ... and the merge queue, given it anyway, rebases the clean worktree and merges.
    t3.approve(by=lead)
    merging.enqueue(t3, by=lead)
    merging.process_queues()
    t3.refresh_from_db()
    assert t3.status == Task.MERGED, MergeRequest.objects.get(task=t3).log
    run = CheckRun.objects.filter(task=t3).first()
    assert run.status == "passed" and "passed" in run.log  # the demo's own pytest ran
    main = gitrepo.head_sha(repo.path, "origin/main")
    assert run.commit_sha == main
    with gitrepo.open_repo(repo.path) as git:
        assert "gross_cents" in git.git.show("origin/main:shop/models.py")
        assert git.git.show("origin/main:shop/catalogue.py")  # T-1's work survived


def test_the_demo_shows_an_approved_wave_and_a_shared_file_to_resolve(client, data_dir):
    from .conftest import make_user

    call_command("fleet_demo", stdout=StringIO())
    approval = Event.objects.get(kind="wave.approve")
    assert approval.payload["announcement"] == (
        "All 4 dispatches use isolation: worktree — verified"
    )
    client.force_login(make_user("lea", "lead"))
    wave2 = client.get("/plans/demo-sprint/waves/2/").content.decode()
    assert "shop/routes.py" in wave2 and "1 unresolved" in wave2
    assert "wave 1 is running, not verified" in wave2


def test_make_runs_living_demo_gets_the_logins_and_no_static_fleet(data_dir):
    """With the living demo (``make run``) only the people are seeded: no static
    fleet beside it whose agents go stale with nothing animating them."""
    out = StringIO()
    call_command("fleet_demo", logins_only=True, stdout=out)
    assert set(User.objects.values_list("username", flat=True)) == {"lead", "reviewer", "manager"}
    assert not Agent.objects.exists() and not Plan.objects.exists()
    assert not Repository.objects.exists()
    assert "lead " in out.getvalue()  # the logins are printed all the same
    call_command("fleet_demo", stdout=StringIO())  # FLEET_DEMO=0: the static seed
    assert Plan.objects.filter(slug="demo-sprint").exists()
