"""A definition-of-done tick belongs to the task's change, not to one commit: a rebase
that leaves the task's own patch alone keeps it; a change to the patch needs a new one."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from fleet import gates
from fleet.git import facts
from fleet.models import Task

from .conftest import commit, git, push_from_other
from .test_gates import green_task, red_reasons

pytestmark = pytest.mark.django_db

ITEM = "Tests cover the change"


def ticked_task(client, repository, shop, lead) -> Task:
    task = green_task(repository, shop)
    repository.dod_items = [ITEM]
    repository.save()
    client.force_login(lead)
    client.post(reverse("fleet-task-dod", args=[task.key]), {"item": ITEM})
    assert red_reasons(task) == {}
    return task


def test_a_tick_survives_a_rebase_that_leaves_the_patch_unchanged(client, repository, shop, lead):
    task = ticked_task(client, repository, shop, lead)
    before = task.head_sha
    # Main moves on files the task never touched; the lead rebases the task onto it.
    push_from_other(shop, {"README.md": "# shop, now with docs\n"}, "docs")
    done, message = gates.rebase(task, by=None)
    assert done, message
    task.refresh_from_db()
    assert task.head_sha != before
    assert task.dod_ticks[ITEM]["commit"] == before  # nobody ticked it again
    assert "dod" not in red_reasons(task)  # (the checks run again on the new commit)
    dod = next(g for g in gates.evaluate(task) if g.key == "dod")
    assert "the same change before a rebase" in dod.items[0]["why"]
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    assert "Untick" in page and f"Tick for {task.head_sha[:10]}" not in page


def test_a_change_to_the_patch_needs_a_new_tick(client, repository, shop, lead):
    task = ticked_task(client, repository, shop, lead)
    worktree = Path(task.worktree_path)
    (worktree / "shop" / "tax.py").write_text("RATE = 0.25\n")
    git(worktree, "commit", "-q", "--amend", "-a", "--no-edit")
    Task.objects.filter(pk=task.pk).update(head_sha=git(worktree, "rev-parse", "HEAD"))
    reasons = red_reasons(task)
    assert "dod" in reasons and ITEM in reasons["dod"]


def test_a_tick_without_a_patch_id_holds_for_its_commit_only(client, repository, shop, lead):
    """Ticks recorded before patch ids (or where git could not tell) keep the old rule."""
    task = ticked_task(client, repository, shop, lead)
    ticks = dict(task.dod_ticks)
    ticks[ITEM] = {k: v for k, v in ticks[ITEM].items() if k != "patch"}
    Task.objects.filter(pk=task.pk).update(dod_ticks=ticks)
    push_from_other(shop, {"README.md": "# shop 2\n"}, "docs")
    assert gates.rebase(Task.objects.get(pk=task.pk), by=None)[0]
    assert "dod" in red_reasons(task)


def test_the_patch_id_is_of_the_change_since_the_fork(shop):
    clone = Path(shop["clone"])
    git(clone, "checkout", "-q", "-b", "feat/x")
    one = commit(clone, {"shop/tax.py": "RATE = 0.2\n"}, "tax")
    git(clone, "checkout", "-q", "main")
    commit(clone, {"README.md": "# moved\n"}, "main moves")
    git(clone, "checkout", "-q", "-b", "feat/y")
    two = commit(clone, {"shop/tax.py": "RATE = 0.2\n"}, "tax again")
    three = commit(clone, {"shop/tax.py": "RATE = 0.3\n"}, "tax changed")
    same = facts.patch_id(clone, main="main", head=one)
    assert same and same == facts.patch_id(clone, main="main", head=two)
    assert facts.patch_id(clone, main="main", head=three) != same
    assert facts.patch_id(clone, main="main", head="main") == ""


def test_a_change_in_indentation_only_is_a_different_patch(shop):
    """Whitespace is code (Python's blocks, YAML's nesting): re-indenting needs a new tick."""
    clone = Path(shop["clone"])
    git(clone, "checkout", "-q", "-b", "feat/x")
    flat = commit(clone, {"shop/tax.py": "if True:\n    RATE = 0.2\nRATE = 0.3\n"}, "tax")
    nested = commit(clone, {"shop/tax.py": "if True:\n    RATE = 0.2\n    RATE = 0.3\n"}, "indent")
    assert facts.patch_id(clone, main="main", head=flat) != facts.patch_id(
        clone, main="main", head=nested
    )
