"""A merged task's page says what landed (its squashed commit on main and that
commit's diff), not a stale-base gate or how far behind main its old branch is."""

from __future__ import annotations

import pytest
from django.urls import reverse

from fleet import gates, merging
from fleet.models import Task

from .conftest import git, push_from_other
from .test_gates import green_task

pytestmark = pytest.mark.django_db


def test_a_merged_task_shows_the_commit_it_landed_as(client, repository, shop, lead):
    task = green_task(repository, shop)
    client.force_login(lead)
    client.post(reverse("fleet-task-merge", args=[task.key]))
    assert merging.process_queues() == 1
    task.refresh_from_db()
    assert task.status == Task.MERGED
    landed = git(shop["origin"], "rev-parse", "main")
    # Main moves on: the old branch is now behind it, which no longer matters.
    for n in range(3):
        push_from_other(shop, {"README.md": f"# shop {n}\n"}, f"docs {n}")
    git(shop["clone"], "fetch", "-q", "origin")
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    assert 'id="task-landed"' in page and landed[:10] in page
    assert "T-1: Add tax" in page  # the squashed commit's subject
    # The files changed are that commit's (highlighted: RATE and 0.2 are tokens apart).
    assert f"What landed: <code>{landed[:10]}</code> on main" in page
    files = page[page.index('id="files"') : page.index('id="task-threads"')]
    assert "RATE" in files and "0.2" in files
    assert "behind main" not in page and "Stale-base gate" not in page
    assert "gate-red" not in page and "the gates no longer apply" not in page
    state = gates.branch_state(task, fetch=False)
    assert state["landed"]["sha"] == landed and state["facts"].behind == 0


def test_a_merged_task_without_a_recorded_commit_says_so(client, repository, shop, lead):
    task = green_task(repository, shop)
    Task.objects.filter(pk=task.pk).update(status=Task.MERGED)
    client.force_login(lead)
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    assert "the commit it landed as is not recorded" in page
    assert "behind main" not in page and "Stale-base gate" not in page
