"""The live overview in real Chromium: a heartbeat posted through the API changes
the agent's card without a reload; the indicator follows a server restart; without a
websocket the page polls."""

from __future__ import annotations

import json
import urllib.request

import pytest

from fleet import dispatch
from fleet.heartbeats import Beat

from ..agent.conftest import Server, free_port
from ..conftest import make_agent, make_user
from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def login(page, base: str, username: str = "lena", password: str = "pw-lena-123") -> None:
    page.goto(f"{base}/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")


def post_json(base: str, token: str, path: str, body: dict) -> None:
    request = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


def post_heartbeat(base: str, token: str, line: str) -> None:
    post_json(base, token, "/api/v1/heartbeat", {"context_pct": 30, "status_line": line})


def test_a_heartbeat_changes_the_card_live_and_the_page_survives_a_restart(page, tmp_path):
    make_user("lena", "lead", password="pw-lena-123")
    agent = make_agent(name="ada", status_line="booting")
    token = agent.issue_token()
    server = Server(free_port(), tmp_path / "live").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        login(page, base)
        indicator = page.locator("#live-indicator")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        card = page.locator(f"#agent-{agent.pk}")
        assert "booting" in card.inner_text()

        post_heartbeat(base, token, "writing the cart tests")
        page.locator(f"#agent-{agent.pk}", has_text="writing the cart").wait_for(timeout=10_000)
        screenshot(page, "overview-live")

        server.stop()
        page.wait_for_selector('#live-indicator:not([data-state="live"])', timeout=10_000)
        assert indicator.get_attribute("data-state") in {"reconnecting", "polling", "stale"}
        server.start()
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=20_000)
        post_heartbeat(base, token, "back after the restart")
        page.locator(f"#agent-{agent.pk}", has_text="after the restart").wait_for(timeout=10_000)

        # The agent's own page is live too: its journal and its pulse.
        page.click(f"#agent-{agent.pk} h3 a")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        post_json(base, token, "/api/v1/journal", {"kind": "learned", "body": "prices in cents"})
        page.locator("#agent-journal", has_text="prices in cents").wait_for(timeout=10_000)
        post_heartbeat(base, token, "on the agent page")
        page.locator(f"#agent-{agent.pk}-pulse", has_text="on the agent page").wait_for(
            timeout=10_000
        )
        screenshot(page, "agent-live")
        # Only the expected complaints of the downtime (refused sockets and polls).
        downtime = ("ERR_CONNECTION", "Failed to load resource")
        assert [e for e in page.js_errors if not any(d in e for d in downtime)] == []
    finally:
        server.stop()


def test_without_a_websocket_the_overview_polls(page, live_server):
    # pytest-django's live server speaks plain HTTP only: every websocket fails.
    make_user("lena", "lead", password="pw-lena-123")
    agent = make_agent(name="bob", status_line="first")
    login(page, live_server.url)
    page.wait_for_selector('#live-indicator[data-state="polling"]', timeout=15_000)
    dispatch.heartbeat(agent, Beat(context_pct=40, status_line="seen by polling"))
    page.locator(f"#agent-{agent.pk}", has_text="seen by polling").wait_for(timeout=10_000)
    screenshot(page, "overview-polling")


def test_heartbeat_ages_move_on_in_the_browser_without_frames(page, tmp_path):
    import time
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from fleet.models import Agent, Event

    make_user("lena", "lead", password="pw-lena-123")
    ttl = settings.FLEET_HEARTBEAT_TTL
    agent = make_agent(name="ada", last_heartbeat_at=timezone.now())
    server = Server(free_port(), tmp_path / "ages").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        login(page, base)
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        age = page.locator(f"#agent-{agent.pk}-pulse .hb")
        assert age.get_attribute("data-ttl") == str(ttl)
        # Its last beat five seconds short of half the lease, and an event that shows
        # the card again: amber is due while the page is open, with no frame for it.
        last = timezone.now() - timedelta(seconds=ttl / 2 - 5)
        Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=last)
        Event.objects.record("agent.note", agent=agent, payload={"note": "look again"})
        deadline = time.monotonic() + 10
        while float(age.get_attribute("data-age") or 0) < ttl / 2 - 6:
            assert time.monotonic() < deadline, "the beat's pulse did not arrive"
            time.sleep(0.1)
        before = age.inner_text()
        assert "hb-ok" in age.get_attribute("class") and before.endswith("s ago"), before
        page.wait_for_selector(f"#agent-{agent.pk}-pulse .hb.hb-amber", timeout=15_000)
        after = age.inner_text()
        assert after != before, (before, after)
        screenshot(page, "overview-ages")
    finally:
        server.stop()
