"""The lean claim route answers exactly as the API does."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from fleet.api.fastpath import ClaimRoute
from fleet.models import Agent, Event, FileClaim

from .conftest import AgentClient, LeanAgentClient, make_token_agent
from .test_agent_calls import take_task
from .test_heartbeat_route import ISO

pytestmark = pytest.mark.django_db


@pytest.fixture
def builder(client, ready_tasks):
    agent, token = make_token_agent(name="ada")
    key = take_task(lambda t: AgentClient(client, t), token)["task"]["key"]
    return agent, token, key


def both(client, token):
    return LeanAgentClient(client, token), AgentClient(client, token)


def test_the_deployed_app_puts_the_claim_route_in_front_of_django():
    from fleet.asgi import application

    assert isinstance(application.application_mapping["http"].app, ClaimRoute)


def test_a_claim_and_its_release_are_answered_by_the_lean_route_like_the_api(client, builder):
    _, token, key = builder
    lean, api = both(client, token)
    mine = lean.post("claims", {"task": key, "paths": ["src/b.py", "src/a.py"]})
    theirs = api.post("claims", {"task": key, "paths": ["src/c.py"]})
    assert mine.route == "lean" and mine.status_code == theirs.status_code == 201
    assert mine["Content-Type"] == theirs["Content-Type"]
    assert [c["path"] for c in mine.json()] == ["src/b.py", "src/a.py"]
    assert set(mine.json()[0]) == set(theirs.json()[0])
    for field in ("mode", "task", "released_at"):
        assert mine.json()[0][field] == theirs.json()[0][field], field
    assert ISO.match(mine.json()[0]["expires_at"]) and ISO.match(theirs.json()[0]["expires_at"])
    assert mine.json()[0]["task"] == key and mine.json()[0]["released_at"] is None
    released = lean.delete(f"claims/{mine.json()[0]['id']}")
    assert released.route == "lean" and released.status_code == 200
    assert released.json()["released_at"] is not None
    assert FileClaim.objects.filter(released_at__isnull=True).count() == 2
    # Both routes wrote the same events, each under the correlation id it answered with.
    event = Event.objects.filter(kind="claims.claim").order_by("id").first()
    assert event.correlation_id == mine["X-Request-ID"]
    release = Event.objects.get(kind="claims.release")
    assert release.correlation_id == released["X-Request-ID"] != event.correlation_id


@pytest.mark.parametrize(
    "body",
    [
        {"task": "T-100", "paths": ["../outside.py"]},
        {"task": "T-100", "paths": ["src/*.py"]},
        {"task": "T-100", "paths": []},
        "not json",
    ],
)
def test_a_malformed_claim_is_answered_by_django(client, builder, body):
    _, token, _ = builder
    raw = body.encode() if isinstance(body, str) else None
    lean = LeanAgentClient(client, token)
    answer = lean.call("post", "claims", None if raw else body, raw=raw)
    assert answer.route == "django" and answer.status_code in (400, 422)
    assert not FileClaim.objects.exists()


def test_unknown_revoked_and_missing_are_the_apis_answers(client, builder):
    agent, token, key = builder
    lean = LeanAgentClient(client, "flt_nobody").post("claims", {"task": key, "paths": ["a.py"]})
    assert lean.route == "django" and lean.status_code == 401
    unknown_task = LeanAgentClient(client, token).post("claims", {"task": "NOPE", "paths": ["a"]})
    # An unknown task is refused as another agent's would be: which tasks exist is not
    # the caller's to learn.
    assert unknown_task.route == "django" and unknown_task.status_code == 403
    missing = LeanAgentClient(client, token).delete("claims/999999")
    api_missing = AgentClient(client, token).delete("claims/999999")
    assert missing.route == "lean" and missing.status_code == api_missing.status_code == 404
    assert missing.json() == api_missing.json()
    Agent.objects.get(pk=agent.pk).revoke_token(by=None)
    revoked = LeanAgentClient(client, token).post("claims", {"task": key, "paths": ["a.py"]})
    assert revoked.route == "django" and revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]
    assert not FileClaim.objects.exists()


def test_refusals_have_the_apis_status_and_body(client, builder, ready_tasks):
    _, token, key = builder
    _, bob = make_token_agent(name="bob")
    bob_key = take_task(lambda t: AgentClient(client, t), bob)["task"]["key"]
    first = LeanAgentClient(client, token).post("claims", {"task": key, "paths": ["x.py"]})
    assert first.route == "lean" and first.status_code == 201
    lean, api = both(client, bob)
    for body in ({"task": bob_key, "paths": ["x.py"]}, {"task": key, "paths": ["y.py"]}):
        # Held by ada: 409 naming her; ada's task: 403. The same from both routes.
        mine, theirs = lean.post("claims", body), api.post("claims", body)
        assert mine.route == "lean" and mine.status_code == theirs.status_code
        assert mine.json() == theirs.json()
    assert mine.status_code == 403 and mine.json()["error"] == "owner"
    assert theirs.status_code == 403
    reviewer_token = make_token_agent(role=Agent.REVIEWER, name="rex")[1]
    lean = LeanAgentClient(client, reviewer_token).post("claims", {"task": key, "paths": ["z"]})
    api = AgentClient(client, reviewer_token).post("claims", {"task": key, "paths": ["z"]})
    assert lean.route == "lean" and lean.status_code == api.status_code == 403
    assert lean.json() == api.json()
    assert FileClaim.objects.count() == 1


@pytest.fixture
def limited(settings):
    """Three calls an hour per agent (an hour's window: the test does not straddle
    one), counted from nothing."""
    cache.clear()
    settings.FLEET_API_RATE = "3/h"
    yield
    cache.clear()


def test_the_claim_route_shares_the_per_agent_rate_limit(client, builder, limited):
    _, token, key = builder
    lean = LeanAgentClient(client, token)
    codes = [lean.post("claims", {"task": key, "paths": [f"{n}.py"]}).status_code for n in "ab"]
    codes.append(AgentClient(client, token).get("inbox").status_code)  # same window
    refused = lean.post("claims", {"task": key, "paths": ["c.py"]})
    assert codes == [201, 201, 200] and refused.status_code == 429
    assert refused.route == "lean" and refused.json()["error"] == "rate_limited"
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert FileClaim.objects.count() == 2


def test_a_call_handed_to_django_counts_once_against_the_limit(client, builder, limited):
    _, token, key = builder
    lean = LeanAgentClient(client, token)
    unknown = lean.post("claims", {"task": "NOPE", "paths": ["a.py"]})
    assert unknown.route == "django" and unknown.status_code == 403
    codes = [lean.post("claims", {"task": key, "paths": [f"{n}.py"]}).status_code for n in "ab"]
    assert codes == [201, 201]  # 1 + 2 calls: within three
    assert lean.post("claims", {"task": key, "paths": ["c.py"]}).status_code == 429


def test_the_lean_answer_carries_the_apis_headers(client, builder):
    _, token, key = builder
    lean, api = both(client, token)
    mine = lean.post("claims", {"task": key, "paths": ["h.py"]})
    theirs = api.post("claims", {"task": key, "paths": ["i.py"]})
    assert mine.route == "lean"
    for header in (
        "Content-Type",
        "Content-Security-Policy",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
        "Cross-Origin-Opener-Policy",
    ):
        assert mine[header] == theirs[header], header
    assert mine["X-Request-ID"] and theirs["X-Request-ID"]


def test_a_repeated_header_the_route_reads_goes_to_django(client, builder):
    _, token, key = builder
    lean = LeanAgentClient(client, token)
    answer = lean.call(
        "post", "claims", {"task": key, "paths": ["r.py"]}, HTTP_X_REQUEST_ID=["a", "b"]
    )
    assert answer.route == "django" and answer.status_code == 201
