"""``POST /api/v1/runner/sync``: who may call it, what bad input gets, and what Fleet
decides from a report (assignment, crashes, rotation, reviews, nudges, stops)."""

from __future__ import annotations

import pytest

from fleet import runtime
from fleet.models import Agent, AgentSession, Event, Message, Runner, Runtime

from ..api.conftest import AgentClient
from ..conftest import make_agent, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def runner():
    runner = Runner.objects.create(name="box")
    runner.token = runner.issue_token()
    return runner


@pytest.fixture
def api(client, runner):
    return AgentClient(client, runner.token)


def with_runtime(name="ada", role=Agent.BUILDER, **fields) -> Agent:
    agent = make_agent(role=role, name=name)
    Runtime.objects.create(agent=agent, harness="claude", directory=f"/w/{name}", **fields)
    return agent


def session(agent="ada", generation=1, state="ready", **fields) -> dict:
    return {"agent": agent, "generation": generation, "state": state, **fields}


def sync(api, *sessions, **fields):
    response = api.post("runner/sync", {"sessions": list(sessions), **fields})
    assert response.status_code == 200, response.content
    return {a["name"]: a for a in response.json()["agents"]}


def test_only_a_runner_token_syncs(client, runner):
    agent = make_agent(name="ada")
    token = agent.issue_token()
    for header in (None, f"Bearer {token}", "Bearer nope", f"Token {runner.token}"):
        extra = {"HTTP_AUTHORIZATION": header} if header else {}
        response = client.post("/api/v1/runner/sync", "{}", "application/json", **extra)
        assert response.status_code == 401, header
        assert response.json()["error"] == "unauthorized"
    runner.revoke_token(by=None)
    response = AgentClient(client, runner.token).post("runner/sync", {})
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    assert Runner.objects.get().last_seen_at is None  # nothing recorded


@pytest.mark.parametrize(
    "body",
    [
        [],
        "x",
        {"sessions": [{"agent": "ada"}]},
        {"sessions": [session(state="dancing")]},
        {"sessions": [session(agent="Not A Name")]},
        {"sessions": [session(generation=-1)]},
        {"sessions": [session(screen="a\x00b")]},
        {"host": "h" * 201},
        # Past the columns' range (a 500 on PostgreSQL before they were bounded):
        {"pid": 2**31},
        {"sessions": [session(generation=2**31)]},
        {"sessions": [session(exit_code=2**31)]},
    ],
)
def test_bad_reports_get_422_and_change_nothing(api, body):
    with_runtime()
    response = api.post("runner/sync", body)
    assert response.status_code == 422, response.content
    assert response.json()["error"] == "invalid"
    assert Runner.objects.get().last_seen_at is None
    assert Runtime.objects.get().runner is None


def test_a_runner_takes_the_agents_nobody_runs_and_says_what_to_run(api, runner):
    with_runtime("ada", model="opus")
    other = Runner.objects.create(name="elsewhere")
    with_runtime("bo", runner=other)
    wanted = sync(api, host="box1", pid=42, tmux="tmux 3.3a")
    assert list(wanted) == ["ada"]
    ada = wanted["ada"]
    assert (ada["harness"], ada["model"], ada["generation"], ada["run"]) == (
        "claude",
        "opus",
        1,
        True,
    )
    assert "session summary" in ada["prompt"] and ada["nudge"] is None
    runner.refresh_from_db()
    assert (runner.host, runner.pid, runner.tmux, runner.state()) == (
        "box1",
        42,
        "tmux 3.3a",
        "online",
    )


def test_state_and_screen_are_kept_and_cleaned(api):
    with_runtime()
    sync(api, session(state="booting", screen="\x1b[1mhello\x1b[0m\r\n<b>x</b>\x07"))
    found = Runtime.objects.get()
    assert (found.state, found.observed_generation) == ("booting", 1)
    assert found.screen == "hello\n<b>x</b>"
    sync(api, session(state="ready", screen=None))
    found.refresh_from_db()
    assert found.state == "ready" and found.screen == "hello\n<b>x</b>"  # unchanged
    assert Event.objects.filter(kind="agent.runtime").count() == 2


def test_a_crash_restarts_then_fails_past_the_limit(api, settings):
    settings.FLEET_RUNNER_MAX_RESTARTS = 2
    with_runtime()
    for generation in (1, 2, 3):
        wanted = sync(api, session(generation=generation, state="exited", exit_code=1))
    found = Runtime.objects.get()
    assert found.state == "failed" and "3 times in a row" in found.error
    assert wanted["ada"]["run"] is False and found.generation == 3
    assert Event.objects.filter(kind="agent.crashed").count() == 3
    # An exit of an older generation is history, not a crash.
    sync(api, session(generation=1, state="exited", exit_code=1))
    assert Event.objects.filter(kind="agent.crashed").count() == 3


def test_a_rotation_asks_for_a_fresh_session_once(api):
    agent = with_runtime()
    AgentSession.objects.create(agent=agent)
    agent.rotate(by=agent)
    wanted = sync(api, session())
    assert wanted["ada"]["generation"] == 2 and wanted["ada"]["patience"] > 0
    assert sync(api, session())["ada"]["generation"] == 2  # not again for the same session
    # The old session's exit is expected; the new one boots and completes the rotation.
    sync(api, session(generation=1, state="exited", exit_code=0))
    assert not Event.objects.filter(kind="agent.crashed").exists()


def test_a_reviewer_gets_a_fresh_session_per_review(api):
    from ..conftest import make_task

    agent = with_runtime("rev", role=Agent.REVIEWER)
    task = make_task(key="T-1")
    agent.start_review(task=task)
    assert sync(api, session("rev"))["rev"]["generation"] == 1
    agent.finish()
    assert sync(api, session("rev"))["rev"]["generation"] == 2


def test_a_review_taken_and_finished_between_two_syncs_still_ends_the_session(api):
    from fleet.models import Review

    from ..conftest import make_task

    agent = with_runtime("rev", role=Agent.REVIEWER)
    assert sync(api, session("rev"))["rev"]["generation"] == 1
    task = make_task(key="T-1")
    Review.objects.create(task=task, commit_sha="a" * 40, reviewer=agent, status=Review.CLOSED)
    assert sync(api, session("rev"))["rev"]["generation"] == 2
    assert sync(api, session("rev", generation=2))["rev"]["generation"] == 2  # once


def test_the_next_review_taken_between_two_syncs_starts_fresh(api):
    from fleet.models import Review

    from ..conftest import make_task

    agent = with_runtime("rev", role=Agent.REVIEWER)
    first, second = make_task(key="T-1"), make_task(key="T-2")
    agent.start_review(task=first)
    assert sync(api, session("rev"))["rev"]["generation"] == 1
    # Between two syncs: review 1 closed, review 2 taken (in the same session).
    Review.objects.create(task=first, commit_sha="a" * 40, reviewer=agent, status=Review.CLOSED)
    agent.finish()
    agent.start_review(task=second)
    assert sync(api, session("rev"))["rev"]["generation"] == 2
    assert sync(api, session("rev", generation=2))["rev"]["generation"] == 2  # once


def test_kill_holds_only_while_stopped(api, runner):
    lead = make_user("lee", "lead")
    agent = with_runtime("ada")
    runtime.stop(agent, by=lead, kill=True)
    assert sync(api, session("ada"))["ada"]["kill"] is True
    agent.refresh_from_db()
    agent.resume(by=lead)
    wanted = sync(api)["ada"]
    assert wanted["run"] is True and wanted["kill"] is False  # not started and killed again


def test_a_runner_that_cannot_start_agents_leaves_them_to_one_that_can(client, runner):
    from django.utils import timezone

    healthy = Runner.objects.create(name="ok", last_seen_at=timezone.now())
    with_runtime("ada")
    broken = AgentClient(client, runner.token)
    sync(broken, error="tmux is not installed on box")
    assert Runtime.objects.get(agent__name="ada").runner is None
    sync(AgentClient(client, healthy.issue_token()))
    assert Runtime.objects.get(agent__name="ada").runner == healthy


def test_messages_are_nudged_once(api):
    agent = with_runtime()
    first = Message.objects.create(recipient=agent, subject="a")
    Message.objects.create(recipient=agent, subject="b")
    nudge = sync(api, session())["ada"]["nudge"]
    assert nudge["through"] > first.pk and "2 new Fleet messages" in nudge["text"]
    assert sync(api, session(nudged_through=nudge["through"]))["ada"]["nudge"] is None
    assert Event.objects.filter(kind="agent.woken").count() == 1


def test_people_stop_kill_and_restart(api, runner):
    lead = make_user("lee", "lead")
    agent = with_runtime()
    runtime.stop(agent, by=lead)
    assert sync(api, session())["ada"]["run"] is False
    runtime.restart(agent, by=lead)
    wanted = sync(api, session())["ada"]
    assert wanted["run"] is True and wanted["generation"] == 2
    runtime.stop(agent, by=lead, kill=True)
    assert sync(api, session(generation=2))["ada"]["kill"] is True
    plain = make_agent(name="hand")
    with pytest.raises(runtime.RuntimeRefused):
        runtime.restart(plain, by=lead)


def test_sessions_the_runner_ended_are_recorded(api):
    sync(api, ended=[{"session": "fleet-ghost", "reason": "no agent wants it"}])
    event = Event.objects.get(kind="runner.session_ended")
    assert event.payload == {
        "runner": "box",
        "session": "fleet-ghost",
        "reason": "no agent wants it",
    }


def test_a_silent_runners_agent_keeps_its_task(api, runner, settings):
    from datetime import timedelta

    from django.utils import timezone

    from fleet import worker
    from fleet.models import Task

    from ..conftest import make_working_task

    agent = with_runtime()
    task = make_working_task(agent, key="T-7")
    sync(api, session(state="busy"))
    later = timezone.now() + timedelta(seconds=settings.FLEET_LEASE_TTL + 60)
    assert Runtime.objects.get().shown_state(later) == "unknown"
    assert worker.expire_leases(later) == 0
    task.refresh_from_db()
    assert task.status in Task.LEASED_STATES and task.assignee == agent
    # Once its runner reports again without the session, the lease may lapse as usual.
    sync(api)
    assert worker.expire_leases(later) == 1
