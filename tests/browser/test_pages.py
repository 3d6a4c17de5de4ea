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
    # Claude Code by default: a runner starts it (none is online in this test).
    assert "No runner is online" in page.locator("#agent-start").inner_text()
    assert Agent.objects.get(name="ui-rev").runtime.harness == "claude"
    screenshot(page, "agent-spawned")
    page.click("text=Back to agents")
    row = page.locator("#agents tr", has_text="ui-rev")
    row.locator("button", has_text="Revoke").click()
    assert "revoked" in page.locator(".messages").inner_text()
    assert not Agent.objects.by_token(token).exists()
    assert page.js_errors == []


MAIN_PAGES = [
    ("overview", "/", "#fleet-agents"),
    ("overview-filtered", "/?role=builder", "#fleet-agents"),
    ("agent", "/agents/ada/", "#agent-journal"),
    ("task", "/tasks/T-2/", "#task-timeline"),
    ("repository", "/repositories/{repo}/", "#repository-board"),
    ("merge-queue", "/merges/", "#merges-queue"),
    ("activity-filtered", "/activity/?kind=task.", "#activity"),
    ("repositories", "/repositories/", "main h1"),
    ("plans", "/plans/", "main h1"),
    ("budget", "/budget/", "#budget-charts svg.chart >> nth=0"),
]


@pytest.mark.parametrize("width", [1280, 390])
def test_every_main_page_loads_wide_and_narrow(browser, live_server, demo_logins, width):
    from fleet.models import Repository

    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        log_in(page, live_server, "lead", demo_logins["lead"])
        repo = Repository.objects.order_by("pk").first().slug
        for name, path, region in MAIN_PAGES:
            page.goto(live_server.url + path.format(repo=repo))
            assert page.locator(region).count() == 1, name
            # Nothing wider than the window: the page reflows on a phone.
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, (name, overflow)
            screenshot(page, f"page-{name}-{width}")
        # Keyboard: the first Tab reaches the skip link, which becomes visible.
        page.goto(live_server.url + "/merges/")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        assert page.evaluate("document.activeElement.getBoundingClientRect().left") >= 0
        # No script refused by the CSP, nothing else broken (the live server has no
        # websocket, so those failures are expected).
        assert [e for e in errors if "WebSocket" not in e and e != "[object Event]"] == []
    finally:
        context.close()
