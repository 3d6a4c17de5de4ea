"""The living demo in real Chromium: during a simulation a person watching the
overview sees the cards change, a finding waiting for a verdict, and a merge land."""

from __future__ import annotations

import threading
import time

import pytest

from fleet.models import Agent
from fleet.sim import director, runner

from ..conftest import make_user
from ..sim.conftest import running_fleet
from .conftest import screenshot
from .test_live import login

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_person_watches_the_simulation(page, data_dir, settings):
    make_user("lead", "lead", password="pw-lead-123")
    with running_fleet(data_dir) as server:
        settings.FLEET_PUBLIC_URL = server.url
        stage = director.setup(builders=4, reviewers=2)
        stop = threading.Event()
        results: dict = {}
        thread = threading.Thread(
            target=lambda: results.update(
                runner.play(
                    stage,
                    url=server.url,
                    speed=20,
                    seed=5,
                    patience=5,
                    duration=200,
                    say=lambda line: None,
                    stop=stop,
                )
            )
        )
        thread.start()
        try:
            login(page, server.url, "lead", "pw-lead-123")
            page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
            ivy = Agent.objects.get(pk=stage.agent_ids[0])
            card = page.locator(f"#agent-{ivy.pk}")
            first = card.inner_text()
            deadline = time.monotonic() + 30
            while card.inner_text() == first and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert card.inner_text() != first  # changed live, no reload
            screenshot(page, "simulation-overview")

            # A finding waits for a person on the review queue.
            deadline = time.monotonic() + 60
            waiting = page.locator("article.finding.verdict-pending")
            while time.monotonic() < deadline:
                page.goto(f"{server.url}/reviews/")
                if waiting.count():
                    break
                page.wait_for_timeout(300)
            assert waiting.count(), "no finding waited for a verdict"
            assert waiting.first.locator("button", has_text="Accept").is_visible()
            screenshot(page, "simulation-review-queue")

            # A merge lands on the (live) merge queue page.
            page.goto(f"{server.url}/merges/")
            page.locator("#merges-recent .badge.ok", has_text="merged").first.wait_for(
                timeout=90_000
            )
            screenshot(page, "simulation-merges")
            assert page.js_errors == []
        finally:
            stop.set()
            thread.join(timeout=60)
