"""A task's gates in real Chromium: they update live as a check is reported, a
finding is adjudicated from the keyboard under its diff line, and the Merge
button appears once every gate is green."""

from __future__ import annotations

import pytest

from fleet.models import Agent, CheckRun, Finding, MergeRequest

from ..agent.conftest import Server, free_port
from ..conftest import make_agent, make_repository, make_user
from ..git.conftest import shop  # noqa: F401 (a fixture)
from ..git.test_gates import green_task
from .conftest import screenshot
from .test_live import login, post_json

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_gates_turn_green_live_and_the_merge_button_appears(page, tmp_path, shop):  # noqa: F811
    make_user("lena", "lead", password="pw-lena-123")
    repository = make_repository(path=str(shop["clone"]), slug="shop", check_command="true")
    task = green_task(repository, shop)
    CheckRun.objects.filter(task=task).delete()  # "unit" not reported yet
    finding = Finding.objects.create(
        review=task.reviews.get(),
        path="shop/tax.py",
        line_start=1,
        severity="major",
        title="A flat rate ignores the region",
        body="Some regions tax at 0.1.",
    )
    ci = make_agent(Agent.ORCHESTRATOR, name="ci")  # CI reports checks, not the builder
    token = ci.issue_token()
    server = Server(free_port(), tmp_path / "live").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        login(page, base)
        page.goto(f"{base}/tasks/{task.key}/")
        page.wait_for_selector('#live-indicator[data-state="live"]', timeout=10_000)
        assert page.locator('[data-gate="checks"].gate-red', has_text="waiting for unit").count()
        assert page.locator('[data-gate="review"].gate-red', has_text="1 finding").count()
        assert page.locator("#merge-form").count() == 0
        # The finding sits under the line it names.
        assert (
            page.locator(".diff-file", has_text="RATE = 0.2")
            .locator(f"#finding-{finding.pk}")
            .count()
        )
        screenshot(page, "task-gates-red")

        # CI reports the check through the API: the gate turns green without a reload.
        post_json(
            base,
            token,
            "/api/v1/checks",
            {"name": "unit", "commit": task.head_sha, "status": "passed", "task": task.key},
        )
        page.locator('[data-gate="checks"].gate-green').wait_for(timeout=10_000)

        # Overrule the finding from the keyboard, in the re-rendered (live) region.
        page.keyboard.press("n")
        assert page.evaluate("document.activeElement.id") == f"finding-{finding.pk}"
        page.keyboard.press("o")
        page.keyboard.type("the shop sells in one region")
        page.keyboard.press("Enter")
        page.locator(".messages", has_text="Overruled").wait_for(timeout=10_000)
        finding.refresh_from_db()
        assert finding.verdict == Finding.OVERRULED
        page.locator('[data-gate="review"].gate-green').wait_for(timeout=10_000)
        page.locator("#merge-form button").wait_for(timeout=10_000)
        screenshot(page, "task-gates-green")

        page.click("#merge-form button")
        page.locator(".messages", has_text="queued for merging").wait_for(timeout=10_000)
        assert MergeRequest.objects.filter(task=task).exists()
    finally:
        server.stop()
