"""Fault injection against a real daphne process: the database locked by another
process, Redis gone for a while. Each fault ends with nothing lost or half-written
and Fleet converged again."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.db import OperationalError, connection
from django.test import RequestFactory

from fleet.agent.client import Client, Identity
from fleet.middleware import DatabaseUnavailableMiddleware
from fleet.models import JournalEntry

from .agent.conftest import Server, free_port
from .conftest import make_agent

LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")  # the write lock (WAL: readers carry on)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def post(url: str, token: str, body: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sqlite_locked_by_another_process_for_10_seconds(tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite fault")
    agent = make_agent(name="ada")
    token = agent.issue_token()
    server = Server(free_port(), tmp_path / "web")
    server.env["SQLITE_BUSY_TIMEOUT"] = "1"  # give up on the lock after a second
    server.start()
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, connection.settings_dict["NAME"], "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout.readline().strip() == "locked"
        started = time.monotonic()
        # Without retries: a clear 503 with Retry-After, in JSON, and nothing written.
        for path, body in (
            ("journal", {"kind": "note", "body": "during the lock"}),
            ("heartbeat", {"context_pct": 10, "status_line": "during the lock"}),
        ):
            status, headers, answer = post(f"{server.url}/api/v1/{path}", token, body)
            assert status == 503, (path, answer)
            assert headers.get("Retry-After") and answer["error"] == "unavailable"
        assert time.monotonic() - started < 9  # answered while the lock still held
        # An agent's client backs off (Retry-After) and gets through once it is over.
        client = Client(Identity(url=server.url, token=token), retries=20, backoff=0.5)
        client.post("journal", {"kind": "note", "body": "written once"})
        assert time.monotonic() - started >= 9
    finally:
        locker.wait(timeout=30)
        server.stop()
    bodies = list(JournalEntry.objects.values_list("body", flat=True))
    assert bodies == ["written once"]  # nothing from the lock, nothing twice
    agent.refresh_from_db()
    assert agent.status_line != "during the lock"


def test_people_get_a_503_page_not_a_500_when_the_database_is_out_of_reach():
    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    request = RequestFactory().post("/plans/p/waves/1/approve/")
    response = middleware.process_exception(request, OperationalError("database is locked"))
    assert response.status_code == 503 and response["Retry-After"]
    assert "may not have gone through" in response.content.decode()
    assert middleware.process_exception(request, ValueError("other")) is None
    # A bug is not "busy": it stays a 500, with its traceback in the log.
    assert middleware.process_exception(request, OperationalError("no such table: x")) is None
