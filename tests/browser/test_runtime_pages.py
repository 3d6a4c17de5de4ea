"""The runtime's pages in real Chromium: a lead registers a runner (the token shown
once), then watches an agent's terminal view change on its page."""

from __future__ import annotations

import pytest
from django.utils import timezone

from fleet.models import Runner, Runtime

from ..conftest import make_agent, make_repository, make_user
from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREEN = """\
╭──────────────────────────────────────────╮
│ ✻ Welcome to Claude Code!                │
╰──────────────────────────────────────────╯
> Pull your next task with the fleet work_next tool.
● fleet - work_next (MCP)
  ⎿  T-7: Add the <Checkout> button (claimed src/cart/*)
● Update(src/cart/button.tsx)
  ⎿  Updated with 12 additions
● Bash(pytest -q tests/cart)
  ⎿  14 passed in 0.41s
"""


def test_a_lead_registers_a_runner_and_watches_an_agents_terminal(page, live_server):
    make_user("lena", "lead", password="pw-lena-123")
    runner = Runner.objects.create(
        name="box",
        host="box.lan",
        pid=4242,
        version="0.9",
        tmux="tmux 3.3a",
        last_seen_at=timezone.now(),
    )
    agent = make_agent(name="ada", repository=make_repository(slug="shop"))
    runtime = Runtime.objects.create(
        agent=agent,
        harness="claude",
        model="claude-sonnet-4-5",
        directory="/srv/fleet/worktrees/shop/T-7",
        runner=runner,
        state=Runtime.BUSY,
        screen=SCREEN,
        screen_at=timezone.now(),
    )
    page.goto(f"{live_server.url}/runners/")
    page.fill("#id_username", "lena")
    page.fill("#id_password", "pw-lena-123")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/runners/")
    assert "online" in page.locator("#runner-box").inner_text()
    assert "ada" in page.locator("#runner-box").inner_text()
    screenshot(page, "runners")

    page.fill("#id_name", "laptop")
    page.click("#register-h ~ form button[type=submit]")
    token = page.locator("#runner-token").inner_text()
    assert token.startswith("flr_")
    assert "--token-file" in page.locator("#runner-command").inner_text()
    screenshot(page, "runner-registered")

    page.goto(f"{live_server.url}/agents/ada/")
    screen = page.locator("#agent-screen")
    assert "<Checkout>" in screen.inner_text()  # escaped text, not markup
    assert page.locator("#agent-screen checkout").count() == 0
    assert "attach -t fleet-ada" in page.locator("#agent-attach").inner_text()
    assert page.locator("#agent-controls button", has_text="Kill").count() == 1
    screenshot(page, "agent-runtime")

    # The runner reports a new screen: the page shows it without a reload (polling
    # here: the test server speaks no websocket).
    runtime.screen = SCREEN + "● Bash(git commit -m 'T-7: checkout button')\n"
    runtime.screen_at = timezone.now()
    runtime.save(update_fields=["screen", "screen_at"])
    page.locator("#agent-screen", has_text="git commit").wait_for(timeout=15_000)
    assert page.js_errors == []
    page.set_viewport_size({"width": 1920, "height": 1000})
    screenshot(page, "agent-runtime-1920")
