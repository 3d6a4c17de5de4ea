"""Resurrections on the gate, the task page and the merge queue: a branch forked before
main removed lines would bring them back, and a lead is told who removed them."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from fleet import merging
from fleet.models import MergeRequest, Task

from .conftest import git
from .test_gates import red_reasons
from .test_merge_queue import approved_task

pytestmark = pytest.mark.django_db

NO_DEBUG = "def total(items):\n    return sum(i.price for i in items)\n"
DEBUG = NO_DEBUG + "\n\ndef debug(request):\n    return eval(request.body)\n"


@pytest.fixture
def stale(repository, shop, lead):
    """T-8 removed the debug endpoint after T-9 forked; T-9 never touched cart.py."""
    first = approved_task(repository, shop, "T-7", {"shop/cart.py": DEBUG}, "Debug endpoint")
    merging.enqueue(first, by=lead)
    merging.process_queues()
    merging.collect_merged()
    stale = approved_task(repository, shop, "T-9", {"shop/ship.py": "FREE = 50\n"}, "Shipping")
    fix = approved_task(repository, shop, "T-8", {"shop/cart.py": NO_DEBUG}, "No eval")
    merging.enqueue(fix, by=lead)
    merging.process_queues()
    merging.collect_merged()
    return stale


def test_the_gate_says_what_merging_would_bring_back_and_who_removed_it(stale):
    reason = red_reasons(stale)["stale_base"]
    assert reason == "merging would bring back 4 lines main removed in T-8"


def test_the_task_page_shows_the_lines_that_would_come_back(client, stale, lead):
    client.force_login(lead)
    page = client.get(reverse("fleet-task", args=[stale.key])).content.decode()
    section = page.split('id="stale-base"')[1].split("</div>\n\n")[0]
    assert "gate-red" in section[:40] and "brought back" in section
    assert "return eval(request.body)" in section and 'href="/tasks/T-8/"' in section


def test_the_queue_sends_back_a_resurrection_it_cannot_rebase_naming_the_task(stale, shop, lead):
    (Path(stale.worktree_path) / "notes.txt").write_text("still thinking\n")  # dirty
    before = git(shop["origin"], "rev-parse", "main")
    merging.enqueue(stale, by=lead)
    merging.process_queues()
    stale.refresh_from_db()
    assert stale.status == Task.CHANGES_REQUESTED
    log = MergeRequest.objects.get(task=stale).log
    assert "would bring back lines main removed (shop/cart.py:3-6; removed in T-8)" in log
    assert git(shop["origin"], "rev-parse", "main") == before


def test_the_queue_rebases_a_clean_worktree_and_the_lines_stay_removed(stale, shop, lead):
    merging.enqueue(stale, by=lead)
    merging.process_queues()
    merging.collect_merged()
    stale.refresh_from_db()
    assert stale.status == Task.MERGED
    assert "eval" not in git(shop["origin"], "show", "main:shop/cart.py")
