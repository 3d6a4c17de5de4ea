"""Expected refusals (403, 404, 409, from pages and the API) are one log line each in
the terminal, not a traceback; a server error keeps its traceback."""

from __future__ import annotations

import io
import logging

import pytest

from fleet.refusal_logs import ExpectedRefusals

from .conftest import make_agent, make_user, make_working_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def terminal():
    """What Fleet's console handler writes, as the terminal would show it."""
    handler = next(
        h
        for h in logging.getLogger("django").handlers
        if any(isinstance(f, ExpectedRefusals) for f in h.filters)
    )
    out = io.StringIO()
    previous = handler.setStream(out)
    yield out
    handler.setStream(previous)


def test_refusals_from_pages_and_the_api_are_one_line_each(client, terminal):
    client.force_login(make_user("rita", "reviewer"))
    assert client.get("/agents/spawn/").status_code == 403  # a lead's page
    assert client.get("/agents/nobody/").status_code == 404
    agent = make_agent(name="ada")
    token = agent.issue_token()
    task = make_working_task(agent)
    other_token = make_agent(name="bob").issue_token()
    refused = client.post(  # bob submits ada's task
        f"/api/v1/tasks/{task.key}/submit",
        {"commit": "0" * 40, "epoch": task.lease_epoch},
        content_type="application/json",
        headers={"authorization": f"Bearer {other_token}"},
    )
    assert refused.status_code in (403, 409)
    assert (
        client.get("/api/v1/boot", headers={"authorization": f"Bearer {token}x"}).status_code == 401
    )
    lines = terminal.getvalue().splitlines()
    assert "Traceback" not in terminal.getvalue()
    assert any("Forbidden (Permission denied): /agents/spawn/" in line for line in lines)
    assert any("Not Found: /agents/nobody/" in line for line in lines)
    assert any(f"/api/v1/tasks/{task.key}/submit" in line for line in lines)
    assert len(lines) == 4, lines


def test_a_server_error_keeps_its_traceback(terminal):
    log = logging.getLogger("django.request")
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        log.error("Internal Server Error: /x/", exc_info=exc, extra={"status_code": 500})
    assert "Traceback" in terminal.getvalue() and "RuntimeError: a bug" in terminal.getvalue()
