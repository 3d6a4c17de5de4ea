"""``Idempotency-Key``: a retried POST whose answer was lost gets the first answer
again and changes nothing; without a key a retry repeats the call."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from fleet import worker
from fleet.models import (
    Agent,
    CheckRun,
    Event,
    Finding,
    JournalEntry,
    Learning,
    Replay,
    Review,
    Task,
    Wave,
)

from ..conftest import make_repository, make_task, make_wave, make_working_task
from .conftest import AgentClient, make_token_agent

pytestmark = pytest.mark.django_db

SHA = "c" * 40


@pytest.fixture
def world():
    """ada holds T-1 (working); rex holds a review of T-2."""
    repo = make_repository(slug="shop")
    wave = make_wave(status=Wave.RUNNING)
    ada, ada_token = make_token_agent(Agent.BUILDER, name="ada", repository=repo)
    task = make_working_task(ada, wave=wave, repository=repo, key="T-1")
    rex, rex_token = make_token_agent(Agent.REVIEWER, name="rex", repository=repo)
    reviewed = make_task(wave=wave, repository=repo, key="T-2", status=Task.IN_REVIEW)
    review = Review.objects.create(task=reviewed, commit_sha=SHA, reviewer=rex)
    return {"ada": ada_token, "rex": rex_token, "task": task, "review": review}


def calls(world):
    finding = {"path": "a.py", "line_start": 3, "severity": "major", "title": "off by one"}
    return {
        "journal": (
            "ada",
            "journal",
            {"kind": "done", "body": "cart", "task": "T-1"},
            JournalEntry.objects.count,
        ),
        "learnings": ("ada", "learnings", {"title": "t", "body": "b"}, Learning.objects.count),
        "checks": (
            "ada",
            "checks",
            {"name": "unit", "commit": SHA, "status": "passed", "task": "T-1"},
            CheckRun.objects.count,
        ),
        "findings": (
            "rex",
            f"reviews/{world['review'].pk}/findings",
            {"findings": [finding]},
            Finding.objects.count,
        ),
        "submit": (
            "ada",
            "tasks/T-1/submit",
            {"commit": SHA, "epoch": world["task"].lease_epoch},
            Review.objects.count,
        ),
        "spend": (
            "ada",
            "spend",
            {"tokens_in": 10, "cost_usd": 0.5},
            lambda: Agent.objects.get(name="ada").tokens_used,
        ),
    }


@pytest.mark.parametrize("name", ["journal", "learnings", "checks", "findings", "submit", "spend"])
def test_a_retry_with_the_same_key_replays_the_first_answer(client, world, name):
    who, path, body, measure = calls(world)[name]
    agent = AgentClient(client, world[who])
    first = agent.post(path, body, HTTP_IDEMPOTENCY_KEY=f"call-{name}-1")
    assert first.status_code in (200, 201), first.content
    after_first, events = measure(), Event.objects.count()
    retry = agent.post(path, body, HTTP_IDEMPOTENCY_KEY=f"call-{name}-1")
    assert (retry.status_code, retry.json()) == (first.status_code, first.json())
    assert retry["Idempotent-Replayed"] == "true"
    assert measure() == after_first and Event.objects.count() == events


@pytest.mark.parametrize("name", ["journal", "submit"])
def test_without_a_key_a_retry_repeats_the_call(client, world, name):
    """What the key protects against: a second journal entry, a 409 for a submit
    that did go through."""
    who, path, body, measure = calls(world)[name]
    agent = AgentClient(client, world[who])
    first = agent.post(path, body)
    again = agent.post(path, body)
    assert first.status_code in (200, 201)
    assert again.status_code == 409 or measure() == 2


def test_a_key_reused_for_another_call_is_refused_and_changes_nothing(client, world):
    agent = AgentClient(client, world["ada"])
    agent.post("journal", {"kind": "note", "body": "one"}, HTTP_IDEMPOTENCY_KEY="k1")
    other = agent.post("journal", {"kind": "note", "body": "two"}, HTTP_IDEMPOTENCY_KEY="k1")
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    assert list(JournalEntry.objects.values_list("body", flat=True)) == ["one"]


def test_keys_belong_to_their_agent(client, world):
    """Another agent's key is not a replay of this one's call."""
    ada, rex = AgentClient(client, world["ada"]), AgentClient(client, world["rex"])
    ada.post("learnings", {"title": "a", "body": "b"}, HTTP_IDEMPOTENCY_KEY="same")
    theirs = rex.post("learnings", {"title": "a", "body": "b"}, HTTP_IDEMPOTENCY_KEY="same")
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs
    assert Learning.objects.count() == 2


@pytest.mark.parametrize("key", ["", "x" * 201, "has space", "é"])
def test_a_malformed_key_is_400(client, world, key):
    agent = AgentClient(client, world["ada"])
    response = agent.post("learnings", {"title": "a", "body": "b"}, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400 and response.json()["error"] == "bad_request"
    assert not Learning.objects.exists()


def test_a_refusal_is_replayed_too(client, world):
    """The first answer, whatever it was: a retry never turns a refusal into a change
    made behind the agent's back."""
    agent = AgentClient(client, world["rex"])
    body = {"kind": "next", "body": "x", "task": "T-1"}
    first = agent.post("journal", body, HTTP_IDEMPOTENCY_KEY="r1")
    retry = agent.post("journal", body, HTTP_IDEMPOTENCY_KEY="r1")
    assert first.status_code == retry.status_code == 403
    assert retry["Idempotent-Replayed"] == "true" and not JournalEntry.objects.exists()


def test_a_rate_limited_call_is_not_kept(client, world, settings):
    """429: the call did not happen, so the retry with the same key runs."""
    from django.core.cache import cache

    cache.clear()
    settings.FLEET_API_RATE = "1/m"
    agent = AgentClient(client, world["ada"])
    agent.get("inbox")
    limited = agent.post("learnings", {"title": "a", "body": "b"}, HTTP_IDEMPOTENCY_KEY="l1")
    assert limited.status_code == 429 and not Replay.objects.exists()
    cache.clear()
    settings.FLEET_API_RATE = "100/m"
    done = agent.post("learnings", {"title": "a", "body": "b"}, HTTP_IDEMPOTENCY_KEY="l1")
    assert done.status_code == 201 and Learning.objects.count() == 1


def test_a_keyed_heartbeat_skips_the_lean_route_and_counts_once(client, world):
    from .conftest import LeanAgentClient

    agent = LeanAgentClient(client, world["ada"])
    body = {"context_pct": 10, "tokens_in": 100, "cost_usd": 0.25}
    first = agent.post("heartbeat", body, HTTP_IDEMPOTENCY_KEY="hb-1")
    retry = agent.post("heartbeat", body, HTTP_IDEMPOTENCY_KEY="hb-1")
    assert first.route == "django" and first.status_code == 200
    assert retry["Idempotent-Replayed"] == "true"
    assert Agent.objects.get(name="ada").tokens_used == 100


def test_the_worker_forgets_answers_past_their_ttl(world, settings):
    ada = Agent.objects.get(name="ada")
    now = timezone.now()
    Replay.objects.create(agent=ada, key="old", fingerprint="f", created_at=now - timedelta(days=2))
    Replay.objects.create(agent=ada, key="new", fingerprint="f", created_at=now)
    assert worker.Worker().tick(now)["replays"] == 1
    assert list(Replay.objects.values_list("key", flat=True)) == ["new"]


@pytest.mark.django_db(transaction=True)
def test_two_calls_with_one_key_at_once_make_one_change():
    """One runs; the others get its answer, or are told it is still running (503 with
    Retry-After: the client retries, and gets the answer)."""
    repo = make_repository(slug="shop")
    _, token = make_token_agent(Agent.BUILDER, name="ada", repository=repo)
    barrier, answers = threading.Barrier(4), []

    def call():
        barrier.wait()
        try:
            response = AgentClient(Client(), token).post(
                "learnings", {"title": "t", "body": "b"}, HTTP_IDEMPOTENCY_KEY="race"
            )
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert Learning.objects.count() == 1
    done = [a for a in answers if a[0] == 201]
    assert len(answers) == 4 and done and len({str(a) for a in done}) == 1, answers
    assert all(a[0] == 503 and a[1]["error"] == "in_progress" for a in answers if a[0] != 201)


def test_a_retry_while_the_first_call_runs_is_told_to_come_back(client, world):
    ada = Agent.objects.get(name="ada")
    body = {"title": "t", "body": "b"}
    agent = AgentClient(client, world["ada"])
    agent.post("learnings", body, HTTP_IDEMPOTENCY_KEY="probe")  # the fingerprint to copy
    running = Replay.objects.get(agent=ada, key="probe")
    Replay.objects.create(agent=ada, key="busy", fingerprint=running.fingerprint, status=0)
    # (the same call under another key: same method, path and body)
    response = agent.post("learnings", body, HTTP_IDEMPOTENCY_KEY="busy")
    assert response.status_code == 503 and response.json()["error"] == "in_progress"
    assert response["Retry-After"] == "1" and Learning.objects.count() == 1


def test_a_call_whose_process_died_runs_again_on_a_later_retry(client, world):
    from fleet.api.idempotency import ABANDONED

    ada = Agent.objects.get(name="ada")
    body = {"title": "t", "body": "b"}
    agent = AgentClient(client, world["ada"])
    agent.post("learnings", body, HTTP_IDEMPOTENCY_KEY="probe")
    fingerprint = Replay.objects.get(key="probe").fingerprint
    long_ago = timezone.now() - timedelta(seconds=ABANDONED + 5)
    Replay.objects.create(
        agent=ada, key="dead", fingerprint=fingerprint, status=0, created_at=long_ago
    )
    response = agent.post("learnings", body, HTTP_IDEMPOTENCY_KEY="dead")
    assert response.status_code == 201 and Learning.objects.count() == 2
    assert Replay.objects.get(key="dead").status == 201


def test_a_call_whose_process_died_on_this_host_runs_again_at_once(client, world):
    """A web process killed mid-call (kill -9, a crash) left its reservation without an
    answer; it names that process, so a retry on this host runs the call at once
    rather than waiting out ``ABANDONED``."""
    from fleet.api.idempotency import owner

    ada = Agent.objects.get(name="ada")
    body = {"title": "t", "body": "b"}
    agent = AgentClient(client, world["ada"])
    agent.post("learnings", body, HTTP_IDEMPOTENCY_KEY="probe")
    fingerprint = Replay.objects.get(key="probe").fingerprint
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host, _, _ = owner().split(":")
    Replay.objects.create(
        agent=ada,
        key="died",
        fingerprint=fingerprint,
        status=0,
        owner=f"{host}:{gone.stdout.strip()}:1",
    )
    live = Replay.objects.create(
        agent=ada, key="alive", fingerprint=fingerprint, status=0, owner=owner()
    )
    assert agent.post("learnings", body, HTTP_IDEMPOTENCY_KEY="died").status_code == 201
    assert agent.post("learnings", body, HTTP_IDEMPOTENCY_KEY="alive").status_code == 503
    assert Learning.objects.count() == 2 and Replay.objects.get(pk=live.pk).status == 0


def test_replays_count_against_the_rate_limit(client, world, settings):
    from django.core.cache import cache

    cache.clear()
    settings.FLEET_API_RATE = "3/m"
    agent = AgentClient(client, world["ada"])
    codes = [
        agent.post("learnings", {"title": "t", "body": "b"}, HTTP_IDEMPOTENCY_KEY="rl").status_code
        for _ in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    assert Learning.objects.count() == 1
    cache.clear()


@pytest.mark.django_db(transaction=True)
def test_a_keyed_call_does_its_git_work_outside_any_transaction(monkeypatch, git_origin):
    """A key must not hold the database's write lock (SQLite has one for the whole
    fleet) across a submit's git work."""
    from fleet import planning

    _, clone = git_origin
    repo = make_repository(path=str(clone), slug="shop")
    wave = make_wave(status=Wave.RUNNING)
    ada, token = make_token_agent(Agent.BUILDER, name="ada", repository=repo)
    task = make_working_task(ada, wave=wave, repository=repo, key="T-1")
    seen, ownership = [], planning.ownership

    def watched(*args, **kwargs):
        seen.append(connection.in_atomic_block)
        return ownership(*args, **kwargs)

    monkeypatch.setattr(planning, "ownership", watched)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    response = AgentClient(Client(), token).post(
        "tasks/T-1/submit", {"commit": head, "epoch": task.lease_epoch}, HTTP_IDEMPOTENCY_KEY="s"
    )
    assert response.status_code == 200, response.content
    assert seen == [False]
