"""Merge by exception on real repositories: every gate green or red with its reason,
the merge button only when all are green, auto-merge, and the mixed-findings case
from a fresh reviewer's findings to main."""

from __future__ import annotations

import html
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse

from fleet import gates, merging
from fleet.git import worktrees
from fleet.models import (
    Agent,
    Budget,
    CheckRun,
    Event,
    Finding,
    MergeRequest,
    Message,
    Review,
    SpendEvent,
    Task,
    Wave,
)

from ..api.conftest import AgentClient, make_token_agent
from ..conftest import make_agent, make_task, make_user, make_wave
from .conftest import commit, git, near_miss

pytestmark = pytest.mark.django_db

CART = "def total(items):\n    return sum(i.price for i in items)\n"


def line_of(page: str, thread: str) -> str:
    """The text of the diff line (its numbers and code) a thread of the task page
    attaches to."""
    slot = re.search(rf'data-slot="([^"]+)" id="thread-{thread}"', page).group(1)
    slots = rf'data-slots="(?:[^"]* )?{re.escape(slot)}(?: [^"]*)?"'
    row = re.search(rf'<tr class="ln[^"]*" {slots}>(.*?)</tr>', page, re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", row.group(1))).split())


def green_task(repository, shop, key="T-1") -> Task:
    """A submitted task in review whose every gate is green: its own worktree, one
    commit within its paths with a CHANGELOG entry and the key in the message, a
    closed review without findings, the required check passed."""
    repository.dod_items = [{"auto": "changelog"}, {"auto": "task_key"}]
    repository.required_checks = ["unit"]
    repository.save()
    wt = Path(shop["root"]) / "wt" / key
    base = worktrees.create(
        repository.path, worktree=wt, branch=f"feat/{key}", remote="origin", default="main"
    )
    head = commit(
        wt,
        {"shop/tax.py": "RATE = 0.2\n", "CHANGELOG.md": f"- {key}: tax\n"},
        f"{key}: add tax",
    )
    task = make_task(
        wave=make_wave(status=Wave.RUNNING),
        repository=repository,
        key=key,
        title="Add tax",
        status=Task.IN_REVIEW,
        assignee=make_agent(Agent.BUILDER, name=f"b-{key.lower()}"),
        declared_paths=["shop/**", "CHANGELOG.md"],
        base_sha=base,
        head_sha=head,
        worktree_path=str(wt),
        ownership={"ok": True, "outside": [], "owned": [], "changed": 2},
    )
    Review.objects.create(task=task, commit_sha=head, status=Review.CLOSED)
    CheckRun.objects.create(
        repository=repository, task=task, name="unit", commit_sha=head[:12], status="passed"
    )
    return task


def red_reasons(task: Task) -> dict[str, str]:
    task.refresh_from_db()
    return {g.key: g.reason for g in gates.evaluate(task) if not g.ok}


def test_a_task_with_every_gate_green_shows_merge_and_merges(client, repository, shop, lead):
    task = green_task(repository, shop)
    assert red_reasons(task) == {}
    client.force_login(lead)
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    assert 'id="merge-form"' in page and page.count('gate-green" data-gate') == 7
    response = client.post(reverse("fleet-task-merge", args=[task.key]), follow=True)
    assert "queued for merging" in response.content.decode()
    assert merging.process_queues() == 1
    task.refresh_from_db()
    assert task.status == Task.MERGED


@pytest.mark.parametrize(
    "breaks, gate, reason",
    [
        (
            lambda t: Task.objects.filter(pk=t.pk).update(worktree_path=""),
            "isolation",
            "no worktree",
        ),
        (
            lambda t: Task.objects.filter(pk=t.pk).update(
                ownership={"ok": False, "outside": ["setup.py"], "owned": []}
            ),
            "ownership",
            "1 file(s) outside its paths",
        ),
        (
            lambda t: Finding.objects.create(
                review=t.reviews.get(), path="shop/tax.py", severity="major", title="Wrong rate"
            ),
            "review",
            "1 finding(s) waiting for a verdict",
        ),
        (
            lambda t: CheckRun.objects.create(
                repository=t.repository, task=t, name="lint", commit_sha=t.head_sha, status="failed"
            ),
            "checks",
            "lint failed",
        ),
        (
            lambda t: CheckRun.objects.filter(task=t).delete(),
            "checks",
            "waiting for unit",
        ),
        (
            lambda t: t.repository.__class__.objects.filter(pk=t.repository_id).update(
                dod_items=[{"auto": "docs", "when": ["shop/**"], "docs": ["docs/**"]}]
            ),
            "dod",
            "Docs (docs/**) touched when shop/** changed",
        ),
        (
            lambda t: t.repository.__class__.objects.filter(pk=t.repository_id).update(
                dod_items=["Tests cover the change"]
            ),
            "dod",
            "Tests cover the change",
        ),
        (
            lambda t: (
                Budget.objects.create(scope="task", task=t, limit_usd=Decimal("1")),
                SpendEvent.objects.create(agent=t.assignee, task=t, cost_usd=Decimal("1.5")),
            ),
            "budget",
            "the task spent $1.50 of $1.00",
        ),
    ],
    ids=[
        "isolation",
        "ownership",
        "review",
        "check-failed",
        "check-missing",
        "docs",
        "manual",
        "budget",
    ],
)
def test_each_red_gate_blocks_merge_with_its_reason(
    client, repository, shop, lead, breaks, gate, reason
):
    task = green_task(repository, shop)
    breaks(task)
    reds = red_reasons(task)
    assert list(reds) == [gate] and reason in reds[gate]

    client.force_login(lead)
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    assert 'id="merge-form"' not in page and "Merge waits until every gate is green" in page
    response = client.post(reverse("fleet-task-merge", args=[task.key]), follow=True)
    assert reason in response.content.decode()
    task.refresh_from_db()
    assert task.status == Task.IN_REVIEW and not MergeRequest.objects.exists()
    # Auto-merge does not take it either; the red gate is kept for the problems panel.
    task.wave.auto_merge = True
    task.wave.save()
    assert gates.sweep() == 0
    task.refresh_from_db()
    assert [g["key"] for g in task.gates if not g["ok"]] == [gate]


def test_a_stale_base_is_a_red_gate(shop, data_dir):
    repository, _, t2 = near_miss(shop["root"] / "near", data_dir)
    reds = red_reasons(t2)
    assert "merging would delete" in reds["stale_base"]


def test_a_person_ticks_a_manual_item_for_the_submitted_commit(client, repository, shop, lead):
    task = green_task(repository, shop)
    repository.dod_items = ["Tests cover the change"]
    repository.save()
    url = reverse("fleet-task-dod", args=[task.key])
    client.force_login(make_user("mo", "manager"))
    assert client.post(url, {"item": "Tests cover the change"}).status_code == 403
    client.force_login(lead)
    response = client.post(url, {"item": "Not on the list"}, follow=True)
    assert "is not an item" in response.content.decode()
    client.post(url, {"item": "Tests cover the change"})
    assert red_reasons(task) == {}
    assert Event.objects.filter(kind="task.dod_tick").count() == 1
    # A resubmit needs a new tick.
    Task.objects.filter(pk=task.pk).update(
        head_sha=commit(Path(task.worktree_path), {"a": "b"}, "x")
    )
    assert "dod" in red_reasons(task)


def test_agents_of_every_role_get_403_on_the_merge_route(client, repository, shop):
    task = green_task(repository, shop)
    for role in (Agent.BUILDER, Agent.REVIEWER, Agent.ORCHESTRATOR):
        _, token = make_token_agent(role)
        response = client.post(
            reverse("fleet-task-merge", args=[task.key]), HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        assert response.status_code == 403
    reviewer_person = make_user("rita", "reviewer")
    client.force_login(reviewer_person)
    assert client.post(reverse("fleet-task-merge", args=[task.key])).status_code == 403
    task.refresh_from_db()
    assert task.status == Task.IN_REVIEW and not MergeRequest.objects.exists()


def test_the_mixed_findings_case_ends_with_the_fix_on_main_and_no_false_alarm_fixes(
    client, repository, shop, lead
):
    """A reviewer posts one real bug and two false alarms; a person accepts one and
    overrules two with reasons; the builder fixes and resubmits; the gates turn green
    and auto-merge merges it: main holds the fix and none of the 'fixes'."""
    repository.dod_items = [{"auto": "changelog"}, {"auto": "task_key"}]
    repository.required_checks = ["unit"]
    repository.save()
    wave = make_wave(status=Wave.RUNNING, auto_merge=True)
    make_task(
        wave=wave,
        repository=repository,
        key="T-7",
        title="Bulk discount",
        status=Task.READY,
        declared_paths=["shop/**", "CHANGELOG.md"],
    )
    builder, builder_token = make_token_agent(Agent.BUILDER, name="ada")
    reviewer, reviewer_token = make_token_agent(Agent.REVIEWER, name="rex")
    as_builder, as_reviewer = (
        AgentClient(client, builder_token),
        AgentClient(client, reviewer_token),
    )
    as_ci = AgentClient(client, make_token_agent(Agent.ORCHESTRATOR, name="ci")[1])

    # The builder takes the task and hands in a commit with a real bug in it.
    work = as_builder.post("work/next").json()
    worktree = Path(Task.objects.get(key="T-7").worktree_path)
    buggy = CART + "\n\ndef bulk(total, n):\n    return total * 0.9 if n > 10 else total\n"
    head = commit(
        worktree, {"shop/cart.py": buggy, "CHANGELOG.md": "- bulk discount\n"}, "T-7: bulk"
    )
    as_ci.post("checks", {"name": "unit", "commit": head, "status": "passed", "task": "T-7"})
    assert (
        as_builder.post(
            "tasks/T-7/submit", {"commit": head, "epoch": work["task"]["lease_epoch"]}
        ).status_code
        == 200
    )

    # A fresh reviewer reads the diff and posts one real bug and two false alarms.
    review_id = as_reviewer.post("work/next").json()["review_id"]
    assert "def bulk" in as_reviewer.get(f"reviews/{review_id}").json()["diff"]
    posted = as_reviewer.post(
        f"reviews/{review_id}/findings",
        {
            "findings": [
                {
                    "path": "shop/cart.py",
                    "line_start": 6,
                    "severity": "major",
                    "title": "Ten items already qualify",
                    "suggested_fix": "n >= 10",
                },
                {
                    "path": "shop/cart.py",
                    "line_start": 2,
                    "severity": "minor",
                    "title": "Use math.fsum",
                    "suggested_fix": "math.fsum",
                },
                {
                    "path": "CHANGELOG.md",
                    "line_start": 1,
                    "severity": "info",
                    "title": "Say 'Bulk' with a capital",
                    "suggested_fix": "- Bulk discount",
                },
            ]
        },
    )
    assert posted.status_code == 200
    review = Review.objects.get(pk=review_id)
    assert review.provenance["fresh_session"] and review.provenance["reviewer"] == "rex"
    bug, fsum, caps = Finding.objects.order_by("pk")
    assert gates.sweep() == 0  # three findings wait for a person

    # Every finding sits next to its diff lines on the task page.
    rita = make_user("rita", "reviewer")
    client.force_login(rita)
    page = client.get(reverse("fleet-task", args=["T-7"])).content.decode()
    bug, fsum, caps = Finding.objects.order_by("pk")
    assert "n > 10" in line_of(page, f"finding-{bug.pk}")
    assert line_of(page, f"finding-{caps.pk}") == "1 - bulk discount"

    # The person keeps the real one and overrules the false alarms, with reasons.
    verdict = lambda f, v, r="": client.post(  # noqa: E731
        reverse("fleet-finding-verdict", args=[f.pk]), {"verdict": v, "reason": r}
    )
    verdict(bug, "accepted")
    verdict(fsum, "overruled", "prices are Decimals; fsum would turn them into floats")
    verdict(caps, "overruled", "the changelog is lower case throughout")
    task = Task.objects.get(key="T-7")
    assert task.status == Task.CHANGES_REQUESTED
    note = Message.objects.get(recipient=builder)
    assert "Ten items already qualify" in note.subject + note.body

    # The builder gets its task back, fixes the bug (only that) and resubmits.
    work = as_builder.post("work/next").json()
    assert work["task"]["key"] == "T-7" and Task.objects.get(key="T-7").status == Task.WORKING
    fixed = commit(
        worktree, {"shop/cart.py": buggy.replace("n > 10", "n >= 10")}, "T-7: ten counts"
    )
    as_ci.post("checks", {"name": "unit", "commit": fixed, "status": "passed", "task": "T-7"})
    assert (
        as_builder.post(
            "tasks/T-7/submit", {"commit": fixed, "epoch": work["task"]["lease_epoch"]}
        ).status_code
        == 200
    )
    assert Review.objects.filter(task=task).count() == 1  # no new review unless a lead asks

    # The accepted finding is shown against the new diff until a person resolves it.
    assert gates.sweep() == 0
    assert "accepted finding(s) not resolved" in red_reasons(task)["review"]
    page = client.get(reverse("fleet-task", args=["T-7"])).content.decode()
    # Its line changed: it is outdated, shown against the code it was raised on.
    thread = re.search(rf'class="([^"]*)" data-slot="[^"]*" id="thread-finding-{bug.pk}"', page)
    assert "outdated" in thread.group(1)
    snippet = page[thread.end() : page.index("</pre>", thread.end())]
    assert "n &gt; 10" in snippet and "raised on" in page
    client.post(reverse("fleet-finding-resolve", args=[bug.pk]))

    # Every gate is green: auto-merge queues it and the queue merges it.
    assert red_reasons(task) == {}
    assert gates.sweep() == 1
    assert Event.objects.filter(kind="task.auto_merge", task=task).exists()
    assert merging.process_queues() == 1
    task.refresh_from_db()
    assert task.status == Task.MERGED
    main_cart = git(shop["origin"], "show", "main:shop/cart.py")
    assert "n >= 10" in main_cart and "fsum" not in main_cart
    assert git(shop["origin"], "show", "main:CHANGELOG.md") == "- bulk discount"


def test_a_lead_asks_a_new_fresh_reviewer_for_a_re_review(client, repository, shop, lead):
    task = green_task(repository, shop)
    first = make_agent(Agent.REVIEWER, name="first")
    task.reviews.update(reviewer=first)
    finding = Finding.objects.create(
        review=task.reviews.get(), path="shop/tax.py", severity="major", title="Rate"
    )
    from fleet import adjudication

    adjudication.decide(finding.pk, verdict="accepted", by=lead)
    task.refresh_from_db()
    task.resume(by=task.assignee)
    task.submit(commit=task.head_sha, by=task.assignee)

    client.force_login(lead)
    client.post(reverse("fleet-task-rereview", args=[task.key]))
    rereview = task.reviews.get(status=Review.OPEN)
    assert rereview.provenance["requested_by"] == "lea"
    response = client.post(reverse("fleet-task-rereview", args=[task.key]), follow=True)
    assert "already has a review open" in response.content.decode()

    # The first reviewer is not given the re-review; a new one is.
    first_token = first.issue_token()
    assert AgentClient(client, first_token).post("work/next").json().get("review_id") is None
    _, token = make_token_agent(Agent.REVIEWER, name="second")
    second = AgentClient(client, token)
    assert second.post("work/next").json()["review_id"] == rereview.pk
    second.post(f"reviews/{rereview.pk}/findings", {"findings": []})
    finding.refresh_from_db()
    assert finding.resolved_in_commit == task.head_sha
    assert red_reasons(task) == {}


def test_the_sweep_keeps_red_gates_for_the_problems_panel_and_notifies_once(
    repository, shop, settings
):
    from fleet import live
    from fleet.models import WebhookDelivery

    repository.webhook_url = "http://127.0.0.1:9/hook"
    repository.save()
    task = green_task(repository, shop)
    Budget.objects.create(scope="task", task=task, limit_usd=Decimal("1"))
    SpendEvent.objects.create(agent=task.assignee, task=task, cost_usd=Decimal("2"))
    gates.sweep()
    gates.sweep()
    delivery = WebhookDelivery.objects.get()
    assert delivery.kind == "gate_red" and "Budget" in delivery.payload["reasons"][0]
    assert Event.objects.filter(kind="task.gates", task=task).count() == 1
    task.refresh_from_db()
    shown = [p.text for p in live.problems([], [task])]
    assert shown == ["budget gate is red: the task spent $2.00 of $1.00."]


def test_a_lead_turns_auto_merge_on_for_a_wave_or_a_repository(client, repository, lead):
    wave = make_wave()
    wave_url = reverse("fleet-wave-auto-merge", args=[wave.plan.slug, wave.number])
    repo_url = reverse("fleet-repository-auto-merge", args=[repository.slug])
    client.force_login(make_user("mo", "manager"))
    assert client.post(wave_url, {"auto_merge": "1"}).status_code == 403
    client.force_login(lead)
    page = client.get(reverse("fleet-wave", args=[wave.plan.slug, wave.number])).content.decode()
    assert "Turn auto-merge on" in page
    client.post(wave_url, {"auto_merge": "1"})
    client.post(repo_url, {"auto_merge": "1"})
    wave.refresh_from_db()
    repository.refresh_from_db()
    assert wave.auto_merge and repository.auto_merge
    page = client.get(reverse("fleet-repository", args=[repository.slug])).content.decode()
    assert "Turn auto-merge off" in page
    assert Event.objects.filter(kind__endswith=".auto_merge", actor="user:lea").count() == 2
    client.post(wave_url, {"auto_merge": "0"})
    wave.refresh_from_db()
    assert not wave.auto_merge


def test_a_builder_does_not_certify_its_own_checks(client, repository, shop):
    task = green_task(repository, shop)
    CheckRun.objects.filter(task=task).delete()
    token = task.assignee.issue_token()
    body = {"name": "unit", "commit": task.head_sha[:10], "status": "passed", "task": task.key}
    assert AgentClient(client, token).post("checks", body).status_code == 201
    assert "reported by a builder do not count" in red_reasons(task)["checks"]
    _, ci = make_token_agent(Agent.ORCHESTRATOR, name="ci")
    AgentClient(client, ci).post("checks", body)  # an abbreviated sha matches
    assert red_reasons(task) == {}


def test_submit_keeps_the_full_sha_and_refuses_an_unknown_commit(client, repository, shop):
    make_task(
        wave=make_wave(status=Wave.RUNNING),
        repository=repository,
        key="T-5",
        status=Task.READY,
        declared_paths=["shop/**"],
    )
    _, token = make_token_agent(Agent.BUILDER, name="ada")
    builder = AgentClient(client, token)
    work = builder.post("work/next").json()
    epoch = work["task"]["lease_epoch"]
    head = commit(Path(work["task"]["worktree_path"]), {"shop/a.py": "A = 1\n"}, "T-5: a")
    refused = builder.post("tasks/T-5/submit", {"commit": "deadbee", "epoch": epoch})
    assert refused.status_code == 409 and refused.json()["error"] == "unknown_commit"
    assert builder.post("tasks/T-5/submit", {"commit": head[:8], "epoch": epoch}).status_code == 200
    assert Task.objects.get(key="T-5").head_sha == head


@pytest.mark.parametrize(
    "message, ok",
    [("T-1: tax", True), ("fix (T-1)", True), ("T-12: other", False), ("XT-1", False)],
)
def test_the_task_key_item_wants_the_key_itself(repository, shop, message, ok):
    task = green_task(repository, shop)
    Task.objects.filter(pk=task.pk).update(
        head_sha=commit(Path(task.worktree_path), {"CHANGELOG.md": "- more\n"}, message)
    )
    assert ("dod" not in red_reasons(task)) is ok


def test_a_re_review_shows_the_accepted_findings_and_can_be_withdrawn(
    client, repository, shop, lead
):
    from fleet import adjudication

    task = green_task(repository, shop)
    finding = Finding.objects.create(
        review=task.reviews.get(), path="shop/tax.py", line_start=1, severity="major", title="Rate"
    )
    adjudication.decide(finding.pk, verdict="accepted", by=lead)
    task.refresh_from_db()
    task.resume(by=task.assignee)
    task.submit(commit=task.head_sha, by=task.assignee)
    client.force_login(lead)
    client.post(reverse("fleet-task-rereview", args=[task.key]))
    page = client.get(reverse("fleet-task", args=[task.key])).content.decode()
    assert "Withdraw the re-review" in page
    _, token = make_token_agent(Agent.REVIEWER, name="second")
    reviewer = AgentClient(client, token)
    review_id = reviewer.post("work/next").json()["review_id"]
    shown = reviewer.get(f"reviews/{review_id}").json()["accepted_findings"]
    assert [(f["id"], f["title"], f["commit_sha"]) for f in shown] == [
        (finding.pk, "Rate", task.head_sha)
    ]
    # Taken: it can no longer be withdrawn.
    response = client.post(
        reverse("fleet-task-rereview", args=[task.key]), {"action": "withdraw"}, follow=True
    )
    assert "no re-review waiting" in response.content.decode()
    Review.objects.filter(pk=review_id).update(reviewer=None)
    client.post(reverse("fleet-task-rereview", args=[task.key]), {"action": "withdraw"})
    assert not Review.objects.filter(pk=review_id).exists()
    assert Event.objects.filter(kind="review.withdrawn", task=task).exists()
