"""The task page shows the branch facts and the stale-base gate; leads rebase and
queue merges from it; the repositories page shows worktrees and their disk use."""

from __future__ import annotations

import pytest

from fleet.models import MergeRequest, Review, Task

from ..conftest import make_user
from .conftest import near_miss

pytestmark = pytest.mark.django_db


@pytest.fixture
def scenario(tmp_path, data_dir):
    return near_miss(tmp_path, data_dir)


@pytest.fixture
def lead_client(client):
    client.force_login(make_user("lena", "lead"))
    return client


def test_the_stale_task_shows_the_lost_lines_and_who_shipped_them(lead_client, scenario):
    _, t1, t2 = scenario
    page = lead_client.get(f"/tasks/{t2.key}/").content.decode()
    assert "gate-red" in page and "shop/cart.py" in page and "def discount(total, code):" in page
    assert f'href="/tasks/{t1.key}/"' in page  # the task that introduced the lines
    assert "docs/x.md" in page and "outside" in page  # outside the declared shop/**
    assert "Rebase onto fresh main now" in page
    merged = lead_client.get(f"/tasks/{t1.key}/").content.decode()
    assert "merged" in merged and "gate-red" not in merged


def test_a_lead_rebases_and_the_gate_clears_then_the_merge_keeps_the_feature(lead_client, scenario):
    repository, _, t2 = scenario
    response = lead_client.post(f"/tasks/{t2.key}/rebase/", follow=True)
    assert "Rebased feat/T-2" in response.content.decode()
    page = lead_client.get(f"/tasks/{t2.key}/").content.decode()
    assert 'data-gate="stale_base"' in page
    assert "gate-green" in page.split('id="stale-base"')[1][:80]
    # Still red: docs/x.md is outside its paths and nobody reviewed it. Merge refuses.
    response = lead_client.post(f"/tasks/{t2.key}/merge/", follow=True).content.decode()
    assert "Not queued" in response and "Ownership" in response and "not reviewed yet" in response
    t2.refresh_from_db()
    assert t2.status == Task.IN_REVIEW
    # A lead widens its paths; a fresh review finds nothing: every gate is green.
    Task.objects.filter(pk=t2.pk).update(declared_paths=["shop/**", "docs/**"])
    Review.objects.create(task=t2, commit_sha=t2.head_sha, status=Review.CLOSED)
    lead_client.post(f"/tasks/{t2.key}/merge/")
    t2.refresh_from_db()
    assert t2.status == Task.MERGING
    from fleet import merging

    merging.process_queues()
    merging.collect_merged()
    t2.refresh_from_db()
    assert t2.status == Task.MERGED
    from fleet.git.repo import open_repo

    with open_repo(repository.path) as repo:
        cart = repo.git.show("origin/main:shop/cart.py")
    assert "def discount" in cart


def test_only_leads_act_and_errors_are_messages(client, scenario):
    _, _, t2 = scenario
    client.force_login(make_user("rita", "reviewer"))
    assert client.get(f"/tasks/{t2.key}/").status_code == 200
    assert client.post(f"/tasks/{t2.key}/rebase/").status_code == 403
    assert client.post(f"/tasks/{t2.key}/merge/").status_code == 403
    assert client.get("/tasks/NOPE-1/").status_code == 404
    client.force_login(make_user("lena", "lead"))
    done = client.post("/tasks/T-1/merge/", follow=True).content.decode()
    assert "Not queued" in done  # T-1 is merged already
    assert MergeRequest.objects.filter(task__key="T-1").count() == 1


def test_a_broken_repository_is_a_message_not_a_traceback(lead_client, scenario):
    repository, _, t2 = scenario
    repository.path = "/nonexistent/repo"
    repository.save()
    page = lead_client.get(f"/tasks/{t2.key}/")
    assert page.status_code == 200 and "is not a git repository" in page.content.decode()


def test_repositories_page_shows_worktrees_and_disk_use(lead_client, scenario):
    _, t1, t2 = scenario
    page = lead_client.get("/repositories/").content.decode()
    assert t2.worktree_path in page and t1.worktree_path not in page  # merged: removed
    assert "1 worktree" in page and "Shop" in page
