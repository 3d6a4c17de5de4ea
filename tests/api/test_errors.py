"""Every failure is JSON {error, detail} with the right status; nothing changes."""

from __future__ import annotations

import pytest

from fleet.models import Agent, Event, JournalEntry

from .conftest import make_token_agent

pytestmark = pytest.mark.django_db


def test_no_token_is_401(as_agent):
    response = as_agent(None).get("boot")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_token_is_401(as_agent):
    make_token_agent()
    response = as_agent("flt_not-a-real-token").get("boot")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "detail": "missing or unknown bearer token"}


def test_a_revoked_token_is_401_and_says_so(as_agent_any):
    agent, token = make_token_agent(name="gone")
    agent.revoke_token(by=None)
    response = as_agent_any(token).post("heartbeat", {"context_pct": 5})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    agent.refresh_from_db()
    assert agent.last_heartbeat_at is None


def test_invalid_input_is_422_with_the_field_named(as_agent_any):
    _, token = make_token_agent()
    response = as_agent_any(token).post("heartbeat", {"context_pct": 101})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid"
    assert any("context_pct" in item["loc"] for item in body["detail"])


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'"x"', b"\xff\xfe"])
def test_malformed_bodies_are_client_errors(as_agent, raw):
    _, token = make_token_agent()
    response = as_agent(token).call("post", "journal", raw=raw)
    assert 400 <= response.status_code < 500
    assert "error" in response.json()
    assert not JournalEntry.objects.exists()


def test_a_body_over_the_limit_is_413(as_agent, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    _, token = make_token_agent()
    response = as_agent(token).post("journal", {"kind": "note", "body": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert not JournalEntry.objects.exists()


def test_too_many_calls_are_429_with_retry_after(as_agent, settings):
    from django.core.cache import cache

    cache.clear()
    settings.FLEET_API_RATE = "3/m"
    _, token = make_token_agent()
    other, other_token = make_token_agent()
    codes = [as_agent(token).get("inbox").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = as_agent(token).get("inbox")
    assert response.json()["error"] == "rate_limited"
    assert 0 < int(response["Retry-After"]) <= 60
    # The limit is per agent: another agent is not affected.
    assert as_agent(other_token).get("inbox").status_code == 200
    cache.clear()


def test_openapi_schema_lists_every_endpoint_with_its_errors(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in [
        "/api/v1/boot",
        "/api/v1/heartbeat",
        "/api/v1/work/next",
        "/api/v1/claims",
        "/api/v1/claims/{claim_id}",
        "/api/v1/tasks/{key}/submit",
        "/api/v1/reviews/{review_id}",
        "/api/v1/reviews/{review_id}/findings",
        "/api/v1/journal",
        "/api/v1/inbox",
        "/api/v1/inbox/{message_id}/ack",
        "/api/v1/learnings",
        "/api/v1/checks",
    ]:
        assert path in paths, path
        for operation in paths[path].values():
            assert {"401", "403", "409", "422", "429"} <= set(operation["responses"])
    assert client.get("/api/v1/docs").status_code == 200


def test_a_failed_call_records_no_event(as_agent, ready_tasks):
    agent, token = make_token_agent(Agent.REVIEWER)
    before = Event.objects.count()
    response = as_agent(token).post(
        f"tasks/{ready_tasks[0].key}/submit", {"commit": "a" * 40, "epoch": 1}
    )
    assert response.status_code == 403
    assert Event.objects.count() == before


def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(client):
    response = client.get("/api/v1/heartbeat")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response["Allow"] == "POST"


@pytest.mark.django_db
def test_a_path_under_the_api_that_names_no_route_is_a_json_404(client):
    for method, path in (("get", "/api/v1/nope"), ("post", "/api/v1/waves/null,null/tasks")):
        response = getattr(client, method)(path, content_type="application/json")
        assert response.status_code == 404
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["error"] == "not_found"


ID_ROUTES = [
    ("delete", "claims/{}"),
    ("get", "reviews/{}"),
    ("post", "reviews/{}/findings"),
    ("post", "inbox/{}/ack"),
    ("post", "plans/{}/waves"),
    ("post", "waves/{}/tasks"),
]
TOO_LARGE = ["9223372036854775808", "18446744073709551616", "9" * 30]


@pytest.mark.parametrize("role", [Agent.BUILDER, Agent.REVIEWER, Agent.ORCHESTRATOR])
@pytest.mark.parametrize(("method", "path"), ID_ROUTES)
def test_an_id_past_the_databases_range_is_404_for_every_role(as_agent_any, role, method, path):
    """An id no row can have is an unknown route (it reached SQLite as an
    OverflowError: a 500)."""
    _, token = make_token_agent(role)
    for number in TOO_LARGE:
        body = {} if method == "post" else None
        response = as_agent_any(token).call(method, path.format(number), body)
        assert response.status_code == 404, (number, response.content)
        assert response.json()["error"] == "not_found"


def test_an_id_past_the_range_on_a_page_is_404(client):
    from ..conftest import make_user

    client.force_login(make_user("lead-1", "lead"))
    for number in TOO_LARGE:
        response = client.post(f"/findings/{number}/verdict/", {"verdict": "accepted"})
        assert response.status_code == 404


def test_the_schema_bounds_path_ids_as_the_server_does(client):
    schema = client.get("/api/v1/openapi.json").json()
    release = schema["paths"]["/api/v1/claims/{claim_id}"]["delete"]["parameters"][0]
    assert release["schema"]["maximum"] == 2**63 - 1


@pytest.mark.parametrize("raw", [b"[null, null]", b'"x"', b"42", b"null", b"[]", b"true"])
@pytest.mark.parametrize("route", ["spend", "heartbeat"])
def test_a_body_that_is_not_an_object_is_422(as_agent_any, raw, route):
    agent, token = make_token_agent()
    before = Event.objects.count()
    response = as_agent_any(token).call("post", route, raw=raw)
    assert response.status_code == 422, response.content
    assert response.json()["error"] == "invalid"
    agent.refresh_from_db()
    assert agent.last_heartbeat_at is None and agent.tokens_used == 0
    assert Event.objects.count() == before


def _string_schemas(node, where=""):
    """Every string schema under a request body's schema, with where it is."""
    if isinstance(node, dict):
        if node.get("type") == "string":
            yield where, node
        for key, value in node.items():
            yield from _string_schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _string_schemas(value, f"{where}/{i}")


def test_the_schema_says_no_string_an_agent_sends_may_hold_a_nul(client):
    """The server refuses NUL characters in every text field (PostgreSQL cannot store
    them): the schema says so, so a client built from it never sends one."""
    import re

    schema = client.get("/api/v1/openapi.json").json()
    inputs = {
        name: body for name, body in schema["components"]["schemas"].items() if name.endswith("In")
    }
    assert {"JournalIn", "FindingIn", "ClaimIn", "CheckIn", "TaskIn", "PlanIn"} <= set(inputs)
    checked = 0
    for name, body in inputs.items():
        for where, string in _string_schemas(body, name):
            if "enum" in string or string.get("format") == "date-time":
                continue
            pattern = string.get("pattern")
            assert pattern, f"{where} states no pattern"
            assert not re.search(pattern, "a\x00b"), f"{where} allows a NUL"
            checked += 1
    assert checked > 20


def test_every_pattern_the_schema_states_is_one_schema_tools_can_enforce(client):
    """Schema tools validate patterns with Rust's regex engine (jsonschema-rs, which
    schemathesis uses); a pattern it cannot compile is dropped, so the rule would be
    stated and never enforced by them (a class naming lone surrogates did that)."""
    import jsonschema_rs

    schema = client.get("/api/v1/openapi.json").json()
    patterns = {
        string["pattern"]
        for body in schema["components"]["schemas"].values()
        for _, string in _string_schemas(body)
        if "pattern" in string
    }
    assert len(patterns) >= 5
    for pattern in patterns:
        jsonschema_rs.Draft202012Validator({"pattern": pattern})  # raises if it cannot
