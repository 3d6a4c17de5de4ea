"""The security gate's matrix: every agent route × every kind of caller.

Each route names who may call it; everyone else gets 403 (or 404 for another agent's
message or claim, whose existence is not theirs to learn), never a 5xx, and the call changes
nothing. A route added to the API without a row here fails the first test.
"""

from __future__ import annotations

import pytest

from fleet.api import api
from fleet.models import (
    Agent,
    Event,
    FileClaim,
    Message,
    Plan,
    Review,
    Task,
    Wave,
)

from ..conftest import make_agent, make_repository, make_task, make_wave
from .conftest import LeanAgentClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_agent(client):
    """As deployed: heartbeats and claims through the lean routes, the rest through
    Django (the claims tests run both routes)."""
    return lambda token: LeanAgentClient(client, token)


CALLERS = ("builder", "other_builder", "reviewer", "other_reviewer", "orchestrator")
EVERYONE = set(CALLERS)
SHA = "a" * 40

# (method, path template, body, who may call it)
ROUTES = [
    ("get", "boot", None, EVERYONE),
    ("post", "heartbeat", {"context_pct": 10}, EVERYONE),
    ("post", "spend", {"tokens_in": 10}, EVERYONE),
    ("post", "work/next", {}, EVERYONE - {"orchestrator"}),
    ("post", "claims", {"task": "{task}", "paths": ["src/a.py"]}, {"builder"}),
    ("delete", "claims/{claim}", None, {"builder"}),
    ("post", "tasks/{task}/submit", {"commit": SHA, "epoch": 1}, {"builder"}),
    ("get", "reviews/{review}", None, {"reviewer"}),
    ("post", "reviews/{review}/findings", {"findings": []}, {"reviewer"}),
    ("post", "journal", {"kind": "note", "body": "hello"}, EVERYONE),
    # On a task: only its holder (the entry becomes that task's boot digest).
    ("post", "journal", {"kind": "next", "body": "do x", "task": "{task}"}, {"builder"}),
    ("get", "inbox", None, EVERYONE),
    ("post", "inbox/{message}/ack", {}, {"builder"}),
    ("post", "learnings", {"title": "t", "body": "b"}, EVERYONE),
    (
        "post",
        "checks",
        {"name": "unit", "commit": SHA, "status": "passed", "task": "{task}"},
        {"builder", "orchestrator"},  # its holder, or the fleet's CI
    ),
    (
        "post",
        "checks",
        {"name": "lint", "commit": SHA, "status": "passed"},
        {"builder", "other_builder", "orchestrator"},  # a repository's check, on no task
    ),
    ("post", "plans", {"name": "P", "slug": "p-new"}, {"orchestrator"}),
    ("get", "plans/{plan}", None, {"orchestrator"}),
    ("post", "plans/{plan}/waves", {"name": "w"}, {"orchestrator"}),
    (
        "post",
        "waves/{wave}/tasks",
        {"key": "N-1", "title": "New", "repository": "{repo}"},
        {"orchestrator"},
    ),
    # A runner's route: no agent token opens it (401: not a runner token at all).
    ("post", "runner/sync", {"sessions": []}, set()),
]


def _template(path: str) -> str:
    """``tasks/{key}/submit`` and ``tasks/{task}/submit`` name the same route."""
    import re

    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_route_of_the_api_is_in_the_matrix():
    schema = api.get_openapi_schema()
    served = {
        (method, _template(path.removeprefix("/api/v1/")))
        for path, methods in schema["paths"].items()
        for method in methods
    }
    listed = {(method, _template(path)) for method, path, _, _ in ROUTES}
    assert served == listed


@pytest.fixture
def world():
    repo = make_repository(slug="shop")
    wave = make_wave(status=Wave.RUNNING)
    agents = {
        "builder": make_agent(Agent.BUILDER, name="ada", repository=repo),
        "other_builder": make_agent(Agent.BUILDER, name="bob", repository=repo),
        "reviewer": make_agent(Agent.REVIEWER, name="rex", repository=repo),
        "other_reviewer": make_agent(Agent.REVIEWER, name="sam", repository=repo),
        "orchestrator": make_agent(Agent.ORCHESTRATOR, name="olly", repository=repo),
    }
    task = make_task(wave=wave, repository=repo, key="T-1", status=Task.READY)
    task.assign(agent=agents["builder"])
    task.start(by=agents["builder"], epoch=task.lease_epoch)
    agents["builder"].start_work(task=task)
    claim = FileClaim.objects.create(
        repository=repo,
        task=task,
        agent=agents["builder"],
        path="src/a.py",
        expires_at=task.lease_expires_at,
    )
    reviewed = make_task(
        wave=wave,
        repository=repo,
        key="T-2",
        status=Task.IN_REVIEW,
        assignee=agents["other_builder"],
        head_sha=SHA,
    )
    review = Review.objects.create(task=reviewed, commit_sha=SHA, reviewer=agents["reviewer"])
    message = Message.objects.create(recipient=agents["builder"], subject="hi", body="")
    draft = Plan.objects.create(name="Draft", slug="draft")
    draft_wave = Wave.objects.create(plan=draft, number=1)
    ids = {
        "task": task.key,
        "claim": claim.pk,
        "review": review.pk,
        "message": message.pk,
        "plan": draft.pk,
        "wave": draft_wave.pk,
        "repo": repo.slug,
    }
    return agents, {name: a.issue_token() for name, a in agents.items()}, ids


def _fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
def test_role_and_ownership(world, as_agent, caller, method, path, body, allowed):
    agents, tokens, ids = world
    client = as_agent(tokens[caller])
    url = path.format(**ids)
    kwargs = {"json": _fill(body, ids)} if body is not None else {}
    before = Event.objects.count()
    response = client.call(method, url, **kwargs)
    assert response.status_code < 500, response.content
    if caller in allowed:
        # Let through: done, or refused for the state it is in (a 409 naming why) —
        # never a 4xx about who is asking, nor about the (valid) body.
        assert response.status_code in (200, 201, 409), response.content
    else:
        # Another agent's message or claim, named by its id: not found, for them.
        expected = {404} if path.startswith(("inbox/", "claims/{")) else {403}
        if path.startswith("runner/"):
            expected = {401}
        assert response.status_code in expected, (response.status_code, response.content)
        assert response.json()["error"], response.content
        # A refused call changes nothing (an event would say it did).
        assert Event.objects.count() == before


def test_an_anonymous_or_revoked_caller_is_refused_everywhere(world, as_agent):
    agents, tokens, ids = world
    agents["builder"].revoke_token(by=None)
    for token in (None, tokens["builder"], "not-a-token"):
        client = as_agent(token)
        for method, path, body, _ in ROUTES:
            kwargs = {"json": _fill(body, ids)} if body is not None else {}
            response = client.call(method, path.format(**ids), **kwargs)
            assert response.status_code == 401, (token, path, response.content)


def test_a_token_is_scoped_to_its_agent_and_stored_hashed(world):
    agents, tokens, _ = world
    for name, agent in agents.items():
        agent.refresh_from_db()
        assert tokens[name] not in str(agent.__dict__)  # only the hash is stored
        assert list(Agent.objects.by_token(tokens[name])) == [agent]
