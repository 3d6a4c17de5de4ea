"""Pages in real Chromium: log in as each demo person and see the populated fleet."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from fleet.models import Agent

from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo_logins(data_dir):
    call_command("fleet_demo", verbosity=0)
    return json.loads((data_dir / "demo-logins.json").read_text())


def log_in(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def test_lead_sees_the_populated_fleet(page, live_server, demo_logins):
    log_in(page, live_server, "lead", demo_logins["lead"])
    assert page.locator("h1").inner_text() == "Fleet overview"
    cards = page.locator("#fleet-agents article.agent")
    assert cards.count() == Agent.objects.count() >= 6
    assert page.locator("#agent-{} .badge.warn".format(Agent.objects.get(name="bob").pk)).count()
    assert "stopped: budget" in page.locator("#fleet-agents").inner_text()
    assert "feat/T-2" in page.locator("#fleet-agents").inner_text()
    assert page.locator("#fleet-waves tbody tr").count() == 2
    assert page.locator("#fleet-problems .problem").count() >= 2
    # The stylesheet loaded and htmx arrived through {% htmx_script %}.
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).display") == "flex"
    assert page.evaluate("typeof window.htmx") == "object"
    assert page.js_errors == []
    screenshot(page, "overview-lead")

    page.click("nav >> text=Activity")
    page.wait_for_url(f"{live_server.url}/activity/")
    assert page.locator("#activity tbody tr").count() > 10
    screenshot(page, "activity")


@pytest.mark.parametrize("username", ["reviewer", "manager"])
def test_every_role_can_open_the_overview(page, live_server, demo_logins, username):
    log_in(page, live_server, username, demo_logins[username])
    assert page.locator(f".who .role-{username}").inner_text() == username
    assert page.locator("#fleet-agents article.agent").count() >= 6
    assert page.js_errors == []


def test_a_wrong_password_shows_a_form_error(page, live_server, demo_logins):
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "lead")
    page.fill("#id_password", "not-the-password")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text().startswith("That username and password")
    screenshot(page, "login-error")


def test_a_lead_spawns_an_agent_from_the_ui_and_revokes_it(page, live_server, demo_logins):
    log_in(page, live_server, "lead", demo_logins["lead"])
    page.click("nav >> text=Agents")
    page.click("text=Spawn agent")
    page.select_option("#id_role", "reviewer")
    page.fill("#id_name", "ui-rev")
    screenshot(page, "agent-spawn-form")
    page.click("main button[type=submit]")
    token = page.locator("#agent-token").inner_text()
    assert token.startswith("flt_") and Agent.objects.by_token(token).get().name == "ui-rev"
    assert "-m fleet.agent boot" in page.locator("#agent-command").inner_text()
    screenshot(page, "agent-spawned")
    page.click("text=Back to agents")
    row = page.locator("#agents tr", has_text="ui-rev")
    row.locator("button", has_text="Revoke").click()
    assert "revoked" in page.locator(".messages").inner_text()
    assert not Agent.objects.by_token(token).exists()
    assert page.js_errors == []
