"""A fresh reviewer never shares the builder's blind spots: Fleet refuses the review
to the builder, to any agent that ever held the task, to a session with journal
entries or claims on it, and (for a re-review) to a reviewer who reviewed it before;
the review records the reviewer's provenance."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.models import Agent, AgentSession, FileClaim, JournalEntry, Review, Task

from .conftest import make_token_agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def submitted(as_agent, ready_tasks):
    """T-100 submitted by ada; its review open and untaken."""
    builder, token = make_token_agent(name="ada")
    work = as_agent(token).post("work/next").json()
    key = work["task"]["key"]
    response = as_agent(token).post(
        f"tasks/{key}/submit", {"commit": "ab" * 20, "epoch": work["task"]["lease_epoch"]}
    )
    assert response.status_code == 200
    return Task.objects.get(key=key), Review.objects.get(pk=response.json()["review_id"])


def pull(as_agent, token) -> dict:
    response = as_agent(token).post("work/next")
    assert response.status_code == 200
    return response.json()


def test_the_builder_cannot_take_or_read_its_own_review(as_agent, submitted):
    task, review = submitted
    token = task.assignee.issue_token()
    assert pull(as_agent, token)["kind"] == "task"  # a builder pulls tasks, not reviews
    assert as_agent(token).get(f"reviews/{review.pk}").status_code == 403
    review.refresh_from_db()
    assert review.reviewer is None


def test_an_agent_that_ever_held_the_task_is_refused(as_agent, submitted):
    task, review = submitted
    # A reviewer that once held this task (say, under an earlier role) never reviews it.
    former, token = make_token_agent(Agent.REVIEWER, name="former")
    task.events.create(kind="task.assign", actor="system", payload={"agent": "former"})
    assert pull(as_agent, token)["kind"] == "none"
    review.refresh_from_db()
    assert review.reviewer is None


def test_a_session_with_journal_entries_or_claims_on_the_task_is_refused(as_agent, submitted):
    task, review = submitted
    noted, noted_token = make_token_agent(Agent.REVIEWER, name="noted")
    session = AgentSession.objects.create(agent=noted)
    JournalEntry.objects.create(agent=noted, session=session, task=task, kind="note", body="hm")
    claimer, claimer_token = make_token_agent(Agent.REVIEWER, name="claimer")
    now = timezone.now()
    FileClaim.objects.create(
        repository=task.repository,
        task=task,
        agent=claimer,
        path="x.py",
        mode=FileClaim.READ,
        expires_at=now + timedelta(minutes=5),
        released_at=now,
    )
    assert pull(as_agent, noted_token)["kind"] == "none"
    assert pull(as_agent, claimer_token)["kind"] == "none"
    review.refresh_from_db()
    assert review.reviewer is None

    # A new session of the journalling agent (rotated, no memory of the task) may.
    session.ended_at, session.end_reason = timezone.now(), "rotated"
    session.save()
    assert pull(as_agent, noted_token)["review_id"] == review.pk


def test_a_fresh_reviewer_gets_it_with_its_provenance(as_agent, submitted):
    task, review = submitted
    rex, token = make_token_agent(Agent.REVIEWER, name="rex")
    AgentSession.objects.create(agent=rex, model_name="claude-sonnet-4")
    assert pull(as_agent, token)["review_id"] == review.pk
    review.refresh_from_db()
    assert review.reviewer == rex and review.session.agent == rex
    assert review.provenance == {
        "reviewer": "rex",
        "session": review.session_id,
        "model": "claude-sonnet-4",
        "never_held_task": True,
        "fresh_session": True,
    }
    # A reviewer who reviewed the task before does not get a re-review a lead asked for.
    as_agent(token).post(f"reviews/{review.pk}/findings", {"findings": []})
    again = Review.objects.create(
        task=task, commit_sha=task.head_sha, provenance={"requested_by": "lea"}
    )
    assert pull(as_agent, token)["kind"] == "none"
    _, sam_token = make_token_agent(Agent.REVIEWER, name="sam")
    assert pull(as_agent, sam_token)["review_id"] == again.pk


def test_a_resubmit_moves_an_untaken_review_to_the_new_commit(as_agent, submitted):
    task, review = submitted
    task.refresh_from_db()
    task.request_changes(by=None, reason="send back")
    token = task.assignee.issue_token()
    work = pull(as_agent, token)
    assert work["task"]["key"] == task.key
    as_agent(token).post(
        f"tasks/{task.key}/submit", {"commit": "cd" * 20, "epoch": work["task"]["lease_epoch"]}
    )
    assert list(task.reviews.values_list("pk", "commit_sha")) == [(review.pk, "cd" * 20)]


def test_a_resubmit_after_a_failed_merge_opens_a_new_review(as_agent, submitted):
    """Code that changed after its review is reviewed again (no accepted findings for a
    person to check it against)."""
    task, review = submitted
    rex, rex_token = make_token_agent(Agent.REVIEWER, name="rex")
    pull(as_agent, rex_token)
    as_agent(rex_token).post(f"reviews/{review.pk}/findings", {"findings": []})
    task.refresh_from_db()
    task.request_changes(by=None, reason="the merge check failed")
    token = task.assignee.issue_token()
    work = pull(as_agent, token)
    response = as_agent(token).post(
        f"tasks/{task.key}/submit", {"commit": "cd" * 20, "epoch": work["task"]["lease_epoch"]}
    )
    new = Review.objects.get(pk=response.json()["review_id"])
    assert new.pk != review.pk and new.status == Review.OPEN and new.commit_sha == "cd" * 20
    assert pull(as_agent, rex_token)["review_id"] == new.pk  # the same reviewer may
