"""Redis gone for 30 s under load: the API keeps answering (the database is the source
of truth, the rate limit counts per process meanwhile), dashboards fall back to polling
and are live again soon after Redis returns; no 5xx anywhere."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from fleet.models import JournalEntry

from ..agent.conftest import Server, free_port
from ..conftest import make_agent, make_user
from .conftest import screenshot
from .test_live import login

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
OUTAGE = 30  # seconds


def start_redis(port: int, workdir) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(50):
        ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
        if ping.stdout.strip() == b"PONG":
            return proc
        time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


def call(base: str, token: str, path: str, body: dict) -> int:
    request = urllib.request.Request(
        f"{base}/api/v1/{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_redis_stopped_for_30_seconds(page, tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    port = free_port()
    redis = start_redis(port, tmp_path)
    make_user("lena", "lead", password="pw-lena-123")
    agent = make_agent(name="ada", status_line="booting")
    token = agent.issue_token()
    server = Server(free_port(), tmp_path / "web")
    server.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    server.start()
    statuses: list[int] = []
    try:
        login(page, server.url)
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        card = page.locator(f"#agent-{agent.pk}")

        redis.kill()
        redis.wait()
        ends = time.monotonic() + OUTAGE
        n = 0
        while time.monotonic() < ends:
            n += 1
            line = f"outage beat {n}"
            statuses.append(
                call(server.url, token, "heartbeat", {"context_pct": 20, "status_line": line})
            )
            statuses.append(call(server.url, token, "journal", {"kind": "note", "body": line}))
            time.sleep(0.5)
        # The page noticed and polls; it shows what happened during the outage.
        # (Within 30 s: noticing a dead socket takes the websocket's own timeouts, and
        # one CI run on a busy machine took longer than 10 s.)
        page.wait_for_selector('#live-indicator[data-state="polling"]', timeout=30_000)
        card.filter(has_text="outage beat").wait_for(timeout=10_000)
        screenshot(page, "redis-outage-polling")

        redis = start_redis(port, tmp_path)
        back = time.monotonic()
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=15_000)
        print(f"live again {time.monotonic() - back:.1f} s after Redis returned")
        assert (
            call(server.url, token, "heartbeat", {"context_pct": 20, "status_line": "after redis"})
            == 200
        )
        card.filter(has_text="after redis").wait_for(timeout=10_000)
    finally:
        server.stop()
        redis.kill()
    assert statuses and set(statuses) <= {200, 201}, sorted(set(statuses))
    assert JournalEntry.objects.filter(body__startswith="outage beat").count() == n
