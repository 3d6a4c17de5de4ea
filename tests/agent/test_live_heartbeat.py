"""Heartbeats through a real daphne serving ``fleet.asgi``: the lean route in front
of Django, and Django behind it for everything else."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from fleet.models import Agent, SpendEvent

from ..api.conftest import make_token_agent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def call(url: str, body: bytes | None, token: str | None, method: str = "POST"):
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers


def test_heartbeats_and_their_errors_through_daphne(live_fleet):
    agent, token = make_token_agent()
    url = f"{live_fleet.url}/api/v1/heartbeat"
    beat = json.dumps({"context_pct": 64, "cost_usd": 0.02, "status_line": "live"}).encode()

    status, body, _ = call(url, beat, token)
    assert status == 200 and body["rotate"] is True and body["stop"] is False
    agent.refresh_from_db()
    assert agent.status_line == "live" and SpendEvent.objects.filter(agent=agent).count() == 1

    status, body, headers = call(url, beat, "flt_nobody")
    assert status == 401 and body["error"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = call(url, b'{"context_pct": 101}', token)
    assert status == 422 and body["error"] == "invalid"
    status, body, _ = call(url, b"{oops", token)
    assert 400 <= status < 500 and "error" in body
    status, body, _ = call(url, None, token, method="GET")
    assert status == 405 and body["error"] == "method_not_allowed"
    assert SpendEvent.objects.filter(agent=agent).count() == 1  # the refused ones left nothing
    assert Agent.objects.get(pk=agent.pk).context_pct == 64
