"""Done when, in real Chromium: a manager sets a $5 cap on a wave, watches its
burn-down live on the budget page, and sees the wave's agents stopped when it is
spent — by the server, though these agents (plain HTTP calls) ignore every
directive they get."""

from __future__ import annotations

import pytest

from fleet.models import Agent, Task, Wave

from ..agent.conftest import Server, free_port
from ..conftest import make_agent, make_repository, make_task, make_user, make_wave
from .conftest import screenshot
from .test_live import post_json

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_manager_caps_a_wave_and_watches_the_server_stop_its_agents(page, tmp_path):
    make_user("mona", "manager", password="pw-mona-123")
    wave = make_wave(status=Wave.RUNNING)
    repo = make_repository()
    tokens = {}
    for name, key in (("ada", "T-1"), ("bob", "T-2")):
        task = make_task(wave=wave, repository=repo, key=key, status=Task.READY)
        agent = make_agent(name=name)
        task.assign(agent=agent)
        task.start(by=agent)
        agent.start_work(task=task)
        tokens[name] = agent.issue_token()
    server = Server(free_port(), tmp_path / "live").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        page.goto(f"{base}/plans/{wave.plan.slug}/waves/{wave.number}/")
        page.fill("#id_username", "mona")
        page.fill("#id_password", "pw-mona-123")
        page.click("main button[type=submit]")
        page.fill("#id_limit_usd", "5")
        page.click("#budget button[type=submit]")
        page.locator(".messages", has_text="Budget for wave 1 set").wait_for(timeout=10_000)

        page.goto(f"{base}/budget/")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        burndown = page.locator("#budget-caps article", has_text="of $5.00")
        assert "$0.00 of $5.00" in burndown.inner_text()

        beat = {"context_pct": 20, "cost_usd": 3.0}
        post_json(base, tokens["ada"], "/api/v1/heartbeat", beat)
        page.locator("#budget-caps article", has_text="$3.00 of $5.00").wait_for(timeout=15_000)
        screenshot(page, "budget-burndown")

        # bob ignores nothing and knows nothing: the server stops both at the cap.
        post_json(base, tokens["bob"], "/api/v1/heartbeat", beat)
        page.locator("#budget-caps article", has_text="its agents are stopped").wait_for(
            timeout=15_000
        )
        screenshot(page, "budget-spent")
        stopped = Agent.objects.filter(status=Agent.STOPPED, stop_reason="budget")
        assert sorted(stopped.values_list("name", flat=True)) == ["ada", "bob"]
    finally:
        server.stop()
