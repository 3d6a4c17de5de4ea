"""The agent API end to end: boot, heartbeat, work, claims, submit, review, journal, inbox."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from fleet.models import (
    Agent,
    AgentSession,
    Budget,
    CheckRun,
    Event,
    FileClaim,
    Finding,
    JournalEntry,
    Learning,
    Message,
    Review,
    SpendEvent,
    Task,
)

from ..conftest import make_agent
from .conftest import make_token_agent

pytestmark = pytest.mark.django_db


def take_task(as_agent, token) -> dict:
    response = as_agent(token).post("work/next")
    assert response.status_code == 200, response.content
    return response.json()


# --- boot and heartbeat ---------------------------------------------------


def test_boot_returns_identity_task_journal_inbox_learnings_and_budget(as_agent, ready_tasks):
    agent, token = make_token_agent(name="ada", repository=ready_tasks[0].repository)
    key = take_task(as_agent, token)["task"]["key"]
    JournalEntry.objects.create(agent=agent, kind="next", body="write the totals test")
    Message.objects.create(recipient=agent, subject="spec v2")
    Message.objects.create(recipient=agent, subject="old", acked_at=timezone.now())
    Learning.objects.create(repository=ready_tasks[0].repository, title="use -p no:cache", body=".")
    bob = make_agent(name="bob", repository=ready_tasks[0].repository)
    Learning.objects.create(
        repository=ready_tasks[0].repository, agent=bob, title="from bob", body="."
    )
    Budget.objects.create(scope="agent", agent=agent, limit_usd=Decimal("5"), spent_usd=2)

    body = as_agent(token).get("boot").json()

    assert body["agent"]["name"] == "ada" and body["agent"]["role"] == "builder"
    assert "submit" in body["agent"]["capabilities"]
    assert body["task"]["key"] == key and body["task"]["branch"] == f"feat/{key}"
    assert body["journal"][0]["body"] == "write the totals test"
    assert [m["subject"] for m in body["inbox"]] == ["spec v2"]
    # Who shared each, so a model weighs another agent's note as that (none: a person).
    assert [(item["title"], item["by"]) for item in body["learnings"]] == [
        ("from bob", "bob"),
        ("use -p no:cache", None),
    ]
    assert body["budget_left_usd"] == 3.0


def test_each_boot_starts_a_new_session_and_completes_a_rotation(as_agent):
    agent, token = make_token_agent()
    first = as_agent(token).get("boot").json()["session_id"]
    agent.rotate()
    second = as_agent(token).get("boot").json()["session_id"]
    assert first != second
    assert AgentSession.objects.get(pk=first).end_reason == "rotated"
    agent.refresh_from_db()
    assert agent.status == Agent.IDLE


def test_heartbeat_records_liveness_and_spend_and_answers_directives(as_agent_any):
    agent, token = make_token_agent()
    Message.objects.create(recipient=agent, subject="hello")
    response = as_agent_any(token).post(
        "heartbeat",
        {
            "context_pct": 62,
            "status_line": "testing",
            "tokens_in": 1000,
            "tokens_out": 50,
            "cost_usd": 0.1234,
            "model": "m1",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["rotate"] is True and body["stop"] is False and body["inbox"] == 1
    agent.refresh_from_db()
    assert agent.context_pct == 62 and agent.status_line == "testing"
    assert agent.last_heartbeat_at is not None
    assert agent.spent_usd == Decimal("0.1234") and agent.tokens_used == 1050
    assert SpendEvent.objects.get().model_name == "m1"


def test_heartbeat_revives_a_stale_agent_but_tells_a_stopped_one_to_stop(as_agent_any):
    stale, stale_token = make_token_agent(status=Agent.STALE)
    assert (
        as_agent_any(stale_token).post("heartbeat", {"context_pct": 1}).json()["status"] == "idle"
    )
    stopped, token = make_token_agent(status=Agent.STOPPED, stop_reason="person")
    body = as_agent_any(token).post("heartbeat", {"context_pct": 1}).json()
    assert body["stop"] is True and body["status"] == "stopped"


def test_heartbeat_renews_the_lease_and_fences_a_stale_epoch(as_agent_any, ready_tasks):
    agent, token = make_token_agent()
    task_json = take_task(as_agent_any, token)["task"]
    task = Task.objects.get(key=task_json["key"])
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=5))
    body = as_agent_any(token).post("heartbeat", {"context_pct": 3, "epoch": 1}).json()
    task.refresh_from_db()
    assert body["epoch"] == 1 and task.lease_expires_at > timezone.now() + timedelta(seconds=60)
    response = as_agent_any(token).post("heartbeat", {"context_pct": 3, "epoch": 0})
    assert response.status_code == 409 and response.json()["error"] == "stale_lease"


# --- work -----------------------------------------------------------------


def test_a_builder_pulls_a_ready_task_and_gets_the_same_one_again(as_agent, ready_tasks):
    agent, token = make_token_agent()
    first = take_task(as_agent, token)
    assert first["kind"] == "task" and first["task"]["status"] == "working"
    assert first["task"]["lease_epoch"] == 1
    assert take_task(as_agent, token)["task"]["key"] == first["task"]["key"]
    agent.refresh_from_db()
    assert agent.status == Agent.WORKING and agent.current_task.key == first["task"]["key"]


def test_nothing_to_do_is_kind_none(as_agent):
    _, token = make_token_agent()
    assert take_task(as_agent, token) == {
        "kind": "none",
        "task": None,
        "review_id": None,
        "review_comments": [],
    }


def test_an_orchestrator_does_not_take_work(as_agent, ready_tasks):
    _, token = make_token_agent(Agent.ORCHESTRATOR)
    response = as_agent(token).post("work/next")
    assert response.status_code == 403 and "orchestrator" in response.json()["detail"]
    assert Task.objects.filter(status=Task.READY).count() == 3


def test_a_stopped_builder_gets_no_work(as_agent, ready_tasks):
    _, token = make_token_agent(status=Agent.STOPPED, stop_reason="budget")
    assert as_agent(token).post("work/next").status_code == 409


# --- claims ---------------------------------------------------------------


def test_claims_conflict_name_the_holder_and_release_frees_the_path(as_agent, ready_tasks):
    ada, ada_token = make_token_agent(name="ada")
    bob, bob_token = make_token_agent(name="bob")
    ada_key = take_task(as_agent, ada_token)["task"]["key"]
    bob_key = take_task(as_agent, bob_token)["task"]["key"]

    response = as_agent(ada_token).post("claims", {"task": ada_key, "paths": ["src/routes.py"]})
    assert response.status_code == 201
    claim_id = response.json()[0]["id"]

    response = as_agent(bob_token).post("claims", {"task": bob_key, "paths": ["src/routes.py"]})
    assert response.status_code == 409
    assert "ada" in response.json()["detail"] and ada_key in response.json()["detail"]

    assert as_agent(bob_token).delete(f"claims/{claim_id}").status_code == 404  # not bob's
    assert as_agent(ada_token).delete(f"claims/{claim_id}").status_code == 200
    response = as_agent(bob_token).post("claims", {"task": bob_key, "paths": ["src/routes.py"]})
    assert response.status_code == 201


def test_an_expired_claim_is_taken_over(as_agent, ready_tasks):
    _, ada_token = make_token_agent()
    _, bob_token = make_token_agent()
    ada_key = take_task(as_agent, ada_token)["task"]["key"]
    bob_key = take_task(as_agent, bob_token)["task"]["key"]
    as_agent(ada_token).post("claims", {"task": ada_key, "paths": ["a.py"]})
    past = timezone.now() - timedelta(seconds=60)
    FileClaim.objects.update(created_at=past, expires_at=past + timedelta(seconds=30))
    assert (
        as_agent(bob_token).post("claims", {"task": bob_key, "paths": ["a.py"]}).status_code == 201
    )
    assert FileClaim.objects.filter(released_at__isnull=True).get().task.key == bob_key


@pytest.mark.parametrize("path", ["/etc/passwd", "../up.py", "a/../../b", ""])
def test_claims_refuse_paths_outside_the_repository(as_agent, ready_tasks, path):
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    assert as_agent(token).post("claims", {"task": key, "paths": [path]}).status_code == 422
    assert not FileClaim.objects.exists()


def test_a_builder_cannot_claim_for_another_agents_task(as_agent, ready_tasks):
    _, ada_token = make_token_agent()
    _, bob_token = make_token_agent()
    ada_key = take_task(as_agent, ada_token)["task"]["key"]
    response = as_agent(bob_token).post("claims", {"task": ada_key, "paths": ["x.py"]})
    assert response.status_code == 403 and response.json()["error"] == "owner"


# --- submit and review ----------------------------------------------------


def submit(as_agent, token, key, epoch=1, commit="ab" * 20):
    return as_agent(token).post(f"tasks/{key}/submit", {"commit": commit, "epoch": epoch})


def test_submit_opens_a_review_that_only_a_fresh_reviewer_gets(as_agent, ready_tasks):
    builder, token = make_token_agent(name="ada")
    key = take_task(as_agent, token)["task"]["key"]
    response = submit(as_agent, token, key)
    assert response.status_code == 200
    review_id = response.json()["review_id"]
    task = Task.objects.get(key=key)
    assert task.status == Task.IN_REVIEW and task.head_sha == "ab" * 20
    builder.refresh_from_db()
    assert builder.status == Agent.IDLE

    # The builder is not a reviewer; a reviewer gets the review.
    assert as_agent(token).get(f"reviews/{review_id}").status_code == 403
    reviewer, reviewer_token = make_token_agent(Agent.REVIEWER, name="rex")
    work = take_task(as_agent, reviewer_token)
    assert work["kind"] == "review" and work["review_id"] == review_id
    review = Review.objects.get(pk=review_id)
    assert review.reviewer == reviewer and review.provenance["never_held_task"] is True


def test_a_stale_epoch_or_a_reviewer_cannot_submit(as_agent, ready_tasks):
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    response = submit(as_agent, token, key, epoch=7)
    assert response.status_code == 409 and response.json()["error"] == "stale_lease"
    _, reviewer_token = make_token_agent(Agent.REVIEWER)
    assert submit(as_agent, reviewer_token, key).status_code == 403
    assert Task.objects.get(key=key).status == Task.WORKING
    assert not Review.objects.exists()


def test_findings_close_the_review_and_only_its_reviewer_may_post(as_agent, ready_tasks):
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    review_id = submit(as_agent, token, key).json()["review_id"]
    _, rex_token = make_token_agent(Agent.REVIEWER)
    _, sam_token = make_token_agent(Agent.REVIEWER)
    take_task(as_agent, rex_token)
    findings = {
        "findings": [
            {"path": "a.py", "line_start": 3, "severity": "major", "title": "off by one"},
            {"path": "b.py", "severity": "info", "title": "naming"},
        ]
    }
    assert as_agent(sam_token).post(f"reviews/{review_id}/findings", findings).status_code == 403
    assert as_agent(token).post(f"reviews/{review_id}/findings", findings).status_code == 403
    bad = {"findings": [{"path": "a", "line_start": 0, "severity": "minor", "title": "t"}]}
    assert as_agent(rex_token).post(f"reviews/{review_id}/findings", bad).status_code == 422
    response = as_agent(rex_token).post(f"reviews/{review_id}/findings", findings)
    assert response.status_code == 200
    assert Finding.objects.filter(review_id=review_id).count() == 2
    assert Review.objects.get(pk=review_id).status == Review.CLOSED
    again = as_agent(rex_token).post(f"reviews/{review_id}/findings", findings)
    assert again.status_code == 409 and Finding.objects.count() == 2


# --- journal, inbox, learnings, checks ------------------------------------


def test_journal_inbox_ack_learning_and_checks(as_agent, ready_tasks):
    agent, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    client = as_agent(token)
    assert client.post("journal", {"kind": "done", "body": "cart", "task": key}).status_code == 201
    assert JournalEntry.objects.get().task.key == key

    message = Message.objects.create(recipient=agent, subject="please rebase")
    other = Message.objects.create(recipient=make_token_agent()[0], subject="not yours")
    assert [m["subject"] for m in client.get("inbox").json()] == ["please rebase"]
    assert client.post(f"inbox/{other.pk}/ack").status_code == 404
    assert client.post(f"inbox/{message.pk}/ack").json()["acked_at"] is not None
    assert client.get("inbox").json() == []
    assert len(client.get("inbox?all=true").json()) == 1

    assert client.post("learnings", {"title": "t", "body": "b"}).status_code == 201
    check = {"name": "tests", "commit": "cd" * 20, "status": "passed", "task": key}
    assert client.post("checks", check).status_code == 201
    assert CheckRun.objects.get().task.key == key
    _, reviewer_token = make_token_agent(Agent.REVIEWER)
    assert as_agent(reviewer_token).post("checks", check).status_code == 403


def test_spend_counts_against_the_agent_cap_and_then_says_stop(as_agent_any):
    agent, token = make_token_agent()
    Budget.objects.create(scope="agent", agent=agent, limit_usd=Decimal("1"))
    first = as_agent_any(token).post("heartbeat", {"context_pct": 1, "cost_usd": 0.6}).json()
    assert first["stop"] is False and first["budget_left_usd"] == pytest.approx(0.4)
    second = as_agent_any(token).post("heartbeat", {"context_pct": 1, "cost_usd": 0.6}).json()
    assert second["stop"] is True and second["budget_left_usd"] == 0
    assert Budget.objects.get(agent=agent).spent_usd == Decimal("1")  # capped, never above
    assert SpendEvent.objects.filter(agent=agent).count() == 2


def test_a_reviewer_heartbeats_without_a_lease_and_stays_in_its_repository(
    as_agent_any, ready_tasks
):
    _, builder_token = make_token_agent()
    key = take_task(as_agent_any, builder_token)["task"]["key"]
    submit(as_agent_any, builder_token, key)
    from ..conftest import make_repository

    _, stranger = make_token_agent(Agent.REVIEWER, repository=make_repository())
    assert take_task(as_agent_any, stranger)["kind"] == "none"  # another repository's review
    _, rex = make_token_agent(Agent.REVIEWER, repository=ready_tasks[0].repository)
    assert take_task(as_agent_any, rex)["kind"] == "review"
    for _ in range(3):
        response = as_agent_any(rex).post("heartbeat", {"context_pct": 2, "cost_usd": 0.5})
        assert response.status_code == 200 and response.json()["epoch"] is None


def test_a_heartbeat_past_the_rotation_line_rotates_and_the_next_boot_completes_it(
    as_agent_any, ready_tasks
):
    agent, token = make_token_agent()
    task_key = take_task(as_agent_any, token)["task"]["key"]
    first = as_agent_any(token).get("boot").json()["session_id"]
    body = as_agent_any(token).post("heartbeat", {"context_pct": 61}).json()
    assert body["rotate"] is True and body["status"] == "rotating"
    again = as_agent_any(token).post("heartbeat", {"context_pct": 63}).json()
    assert again["status"] == "rotating" and again["epoch"] is not None  # lease kept
    assert Event.objects.filter(kind="agent.rotate", agent=agent).count() == 1
    boot = as_agent_any(token).get("boot").json()
    assert boot["task"]["key"] == task_key
    assert AgentSession.objects.get(pk=first).end_reason == "rotated"
    agent.refresh_from_db()
    assert agent.status == Agent.WORKING


@pytest.mark.parametrize(
    ("lines", "stored"),
    [
        ({"line_start": 4}, (4, None)),
        ({"line_end": 7}, (7, 7)),
        ({"line_start": 9, "line_end": 2}, (2, 9)),
    ],
)
def test_every_pair_of_lines_a_schema_allows_is_a_range(as_agent, ready_tasks, lines, stored):
    """The schema cannot say "line_end after line_start", so the server refuses no
    pair: an end alone is that line, a reversed range is turned round."""
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    review_id = submit(as_agent, token, key).json()["review_id"]
    _, rex_token = make_token_agent(Agent.REVIEWER)
    take_task(as_agent, rex_token)
    finding = {"path": "a.py", "severity": "minor", "title": "t", **lines}
    response = as_agent(rex_token).post(f"reviews/{review_id}/findings", {"findings": [finding]})
    assert response.status_code == 200, response.content
    found = Finding.objects.get(review_id=review_id)
    assert (found.line_start, found.line_end) == stored
