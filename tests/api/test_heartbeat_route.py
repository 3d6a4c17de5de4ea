"""The lean heartbeat route answers exactly as the API does, in batches."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet.api.fastpath import PATH, HeartbeatRoute
from fleet.models import Agent, SpendEvent, Task

from ..conftest import make_task
from .conftest import AgentClient, LeanAgentClient, make_token_agent

pytestmark = pytest.mark.django_db

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def leased(agent: Agent) -> Task:
    task = make_task(status=Task.READY)
    task.assign(agent=agent)
    task.start(by=agent, epoch=task.lease_epoch)
    agent.start_work(task=task)
    task.refresh_from_db()
    return task


def test_the_deployed_app_puts_the_lean_route_in_front_of_django():
    from fleet.asgi import application

    assert isinstance(application.application_mapping["http"], HeartbeatRoute)


def test_a_well_formed_heartbeat_is_answered_by_the_lean_route_like_the_api(client):
    agent, token = make_token_agent()
    task = leased(agent)
    beat = {"context_pct": 12, "cost_usd": 0.01, "epoch": task.lease_epoch}
    lean = LeanAgentClient(client, token).post("heartbeat", beat)
    api = AgentClient(client, token).post("heartbeat", beat)
    assert lean.route == "lean" and lean.status_code == api.status_code == 200
    assert lean["Content-Type"] == api["Content-Type"]
    lean_body, api_body = lean.json(), api.json()
    assert set(lean_body) == set(api_body)
    assert ISO.match(lean_body["lease_expires_at"]) and ISO.match(api_body["lease_expires_at"])
    for key in ("status", "rotate", "stop", "inbox", "epoch", "budget_left_usd"):
        assert lean_body[key] == api_body[key], key
    assert SpendEvent.objects.filter(agent=agent).count() == 2


@pytest.mark.parametrize(
    "raw, headers",
    [
        (b"{not json", {}),
        (b'{"context_pct": 101}', {}),
        (b"[]", {}),
        (b'{"context_pct": 5}', {"HTTP_AUTHORIZATION": "Basic abc"}),
    ],
)
def test_anything_unusual_is_answered_by_django(client, raw, headers):
    agent, token = make_token_agent()
    lean = LeanAgentClient(client, token).call("post", "heartbeat", raw=raw, **headers)
    assert lean.route == "django"
    assert lean.status_code in (400, 401, 422) and "error" in lean.json()
    agent.refresh_from_db()
    assert agent.last_heartbeat_at is None


def test_an_unknown_token_gets_the_apis_401(client):
    make_token_agent()
    lean = LeanAgentClient(client, "flt_nobody").post("heartbeat", {"context_pct": 5})
    api = AgentClient(client, "flt_nobody").post("heartbeat", {"context_pct": 5})
    assert lean.route == "lean"
    assert lean.status_code == api.status_code == 401
    assert lean.json() == api.json()
    assert lean["WWW-Authenticate"] == api["WWW-Authenticate"]


def test_the_lean_route_shares_the_per_agent_rate_limit(client, settings):
    cache.clear()
    settings.FLEET_API_RATE = "3/m"
    _, token = make_token_agent()
    lean = LeanAgentClient(client, token)
    codes = [lean.post("heartbeat", {"context_pct": 1}).status_code for _ in range(2)]
    codes.append(AgentClient(client, token).get("inbox").status_code)  # same window
    refused = lean.post("heartbeat", {"context_pct": 1})
    assert codes == [200, 200, 200] and refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert 0 < int(refused["Retry-After"]) <= 60
    cache.clear()


def _post_all(route, requests):
    async def go():
        communicators = [
            HttpCommunicator(
                route,
                "POST",
                PATH,
                json.dumps(body).encode(),
                [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
            )
            for token, body in requests
        ]
        return await asyncio.gather(*(c.get_response(timeout=10) for c in communicators))

    return async_to_sync(go)()


def test_concurrent_heartbeats_are_recorded_in_batches_and_one_bad_beat_spoils_nothing():
    async def to_django(scope, receive, send):
        raise AssertionError("well-formed heartbeats must not reach Django")

    route = HeartbeatRoute(to_django)
    agents = [make_token_agent() for _ in range(12)]
    tasks = [leased(agent) for agent, _ in agents]
    revoked, revoked_token = make_token_agent()
    revoked.revoke_token(by=None)
    requests = [
        (token, {"context_pct": 20, "cost_usd": 0.5, "tokens_in": 10, "epoch": task.lease_epoch})
        for (_, token), task in zip(agents, tasks, strict=True)
    ]
    requests.append((agents[0][1], {"context_pct": 21, "epoch": tasks[0].lease_epoch + 7}))
    requests.append((revoked_token, {"context_pct": 1}))
    with CaptureQueriesContext(connection) as queries:
        answers = _post_all(route, requests)
    statuses = [a["status"] for a in answers]
    assert statuses == [200] * 12 + [409, 401]
    assert json.loads(answers[12]["body"])["error"] == "stale_lease"
    assert "revoked" in json.loads(answers[13]["body"])["detail"]
    agent_reads = [q for q in queries if 'FROM "fleet_agent"' in q["sql"] and "SELECT" in q["sql"]]
    assert len(agent_reads) < 4, "fourteen beats should need only a batch or two"
    assert SpendEvent.objects.count() == 12
    for (agent, _), task in zip(agents, tasks, strict=True):
        agent.refresh_from_db()
        task.refresh_from_db()
        assert agent.context_pct == 20 and agent.last_heartbeat_at is not None
        assert agent.tokens_used == 10
        assert task.lease_expires_at > agent.last_heartbeat_at
    revoked.refresh_from_db()
    assert revoked.last_heartbeat_at is None


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"[" * 100_000, 400),  # nested too deeply for the JSON parser
        (b'{"context_pct": 5, "status_line": "a\\u0000b"}', 422),  # NUL: PostgreSQL refuses
        (b'{"context_pct": 5, "model": "m\\u0000"}', 422),
    ],
)
def test_hostile_bodies_are_client_errors_on_both_routes(as_agent_any, raw, status):
    agent, token = make_token_agent()
    response = as_agent_any(token).call("post", "heartbeat", raw=raw)
    assert response.status_code == status and "error" in response.json()
    agent.refresh_from_db()
    assert agent.last_heartbeat_at is None


def test_spend_that_would_overflow_the_totals_is_refused(as_agent_any):
    agent, token = make_token_agent()
    Agent.objects.filter(pk=agent.pk).update(spent_usd=Decimal("99999990"))
    response = as_agent_any(token).post("heartbeat", {"context_pct": 1, "cost_usd": 50_000})
    assert response.status_code == 409 and response.json()["error"] == "spend_overflow"
    assert not SpendEvent.objects.filter(agent=agent).exists()
    agent.refresh_from_db()
    assert agent.last_heartbeat_at is None  # a refused beat changes nothing


def test_a_disallowed_host_is_handed_to_django(client):
    agent, token = make_token_agent()
    response = LeanAgentClient(client, token).call(
        "post", "heartbeat", {"context_pct": 1}, HTTP_HOST="evil.example"
    )
    assert response.route == "django" and response.status_code == 400
    agent.refresh_from_db()
    assert agent.last_heartbeat_at is None


def test_the_bearer_header_is_parsed_exactly_as_the_api_does(client):
    agent, token = make_token_agent()
    for header in (f"Bearer  {token}", f"Bearer {token} ", f"bearer {token}"):
        lean = LeanAgentClient(client, token).call(
            "post", "heartbeat", {"context_pct": 1}, HTTP_AUTHORIZATION=header
        )
        api = AgentClient(client, token).call(
            "post", "heartbeat", {"context_pct": 1}, HTTP_AUTHORIZATION=header
        )
        assert lean.status_code == api.status_code, header


def test_plain_http_under_ssl_redirect_goes_to_django(client, settings):
    settings.SECURE_SSL_REDIRECT = True  # before the client's first request loads middleware
    _, token = make_token_agent()
    redirected = LeanAgentClient(client, token).post("heartbeat", {"context_pct": 1})
    assert redirected.route == "django" and redirected.status_code == 301


def test_an_oversized_body_in_one_message_is_a_413(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    _, token = make_token_agent()
    body = json.dumps({"context_pct": 1, "status_line": "x" * 150}).encode()
    response = LeanAgentClient(client, token).call("post", "heartbeat", raw=body)
    assert response.route == "django" and response.status_code == 413


def test_one_failing_beat_does_not_fail_the_others_in_its_batch():
    from fleet.heartbeats import Beat, Pending, Refusal, record_isolated
    from fleet.models import hash_token

    good = [make_token_agent() for _ in range(2)]
    bad, bad_token = make_token_agent()
    pending = [
        Pending(beat=Beat(context_pct=5, cost_usd=0.1), token_hash=hash_token(good[0][1])),
        # Past the schema's checks (negative spend): the database's constraint refuses it.
        Pending(beat=Beat(context_pct=5, cost_usd=-1.0), token_hash=hash_token(bad_token)),
        Pending(beat=Beat(context_pct=5, cost_usd=0.1), token_hash=hash_token(good[1][1])),
    ]
    results = record_isolated(pending)
    assert isinstance(results[1], Refusal) and results[1].status == 503
    assert results[0]["stop"] is False and results[2]["stop"] is False
    assert SpendEvent.objects.count() == 2
    bad.refresh_from_db()
    assert bad.last_heartbeat_at is None


def test_beats_that_waited_past_the_deadline_are_not_recorded(monkeypatch):
    from fleet.api import fastpath

    monkeypatch.setattr(fastpath, "QUEUE_DEADLINE", -1.0)
    agent, token = make_token_agent()
    answers = _post_all(HeartbeatRoute(lambda *a: None), [(token, {"context_pct": 3})])
    assert answers[0]["status"] == 503
    agent.refresh_from_db()
    assert agent.last_heartbeat_at is None


def test_the_lean_route_can_be_switched_off():
    import subprocess
    import sys

    code = (
        "import os; os.environ['FLEET_HEARTBEAT_FASTPATH'] = '0'\n"
        "from fleet.asgi import application\n"
        "print(type(application.application_mapping['http']).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ASGIHandler"
